/*
 * pool.h - the backend pool: groups of database replicas on a
 * consistent-hash ring, pipelined connections, a future per fetch.
 *
 * kd_pool_fetch(key) returns a future that settles with the database's
 * answer to GET key:
 *   resolved   an integer (kt_future_i64) when the reply was a bulk string
 *              holding a canonical decimal integer (the common case: no
 *              allocation), otherwise a kd_blob (kt_future_value);
 *   failed     -ENOENT      the database answered nil (no such key);
 *              -EREMOTEIO   the database answered an error: its text,
 *                           followed by "(backend ADDR)";
 *              -EIO         the connection failed (reset, closed, stalled,
 *                           garbage): "ERR backend ADDR: what happened";
 *              -EHOSTDOWN   the server is down or ejected: fails at once;
 *              -EAGAIN      the server's queue is full (backend-queue-limit,
 *                           backend-queue-bytes);
 *              -EPROTO      a reply of the wrong type;
 *              -ESHUTDOWN   the pool is closing or the server was removed.
 * Every failure message is a whole Redis error text (code first) naming
 * the server, ready to be sent to a client. Cancelling the future unhooks
 * it from the pool: a fetch nobody else waits for is dropped if not yet
 * sent, and a sent one's reply is read and discarded.
 *
 * Fetches of one loop iteration bound for one server leave together as
 * one MGET (backend-batch); a fetch of a key already on its way joins it
 * (singleflight); in a group of replicas a slow fetch is sent again to a
 * second replica (hedge-after), the first answer winning.
 */
#ifndef KD_POOL_H
#define KD_POOL_H

#include <kettle/kettle.h>

typedef struct kd_pool kd_pool;

/* A non-integer value (kt_future_value of a resolved fetch). */
typedef struct kd_blob {
    size_t len;
    char data[];
} kd_blob;

typedef struct kd_pool_params {
    uint32_t connections;     /* per server */
    uint32_t pipeline;        /* outstanding commands per connection */
    uint32_t queue_limit;     /* fetches waiting for room, per server */
    uint32_t eject_after;     /* consecutive failures; 0: never */
    uint32_t points;          /* virtual nodes per group on the hash ring */
    uint32_t batch;           /* keys per backend command (1: no batching) */
    bool singleflight;        /* a fetch of a key on its way joins it */
    uint64_t connect_timeout; /* ns */
    uint64_t backend_timeout; /* ns: the stall threshold's ceiling; 0: never */
    uint64_t retry_min, retry_max; /* reconnect backoff, ns */
    uint64_t eject_time;      /* ns, the first ejection's length */
    uint64_t eject_time_max;  /* ns, the longest (it doubles each time) */
    double eject_rate;        /* failure share over the window that ejects; 0: never */
    uint32_t eject_min_requests; /* requests in the window before the rate counts */
    uint64_t window;          /* ns: the health window (latency, rates, budget) */
    double stall_factor;      /* oldest reply late by this x the recent p99: stalled */
    uint64_t stall_floor;     /* ns: never below this */
    double hedge_pct;         /* hedge at this percentile of recent latency (0: fixed) */
    uint64_t hedge_after;     /* ns: fixed hedge delay (with hedge_pct 0; both 0: off) */
    double hedge_max_extra;   /* hedges at most this share of fetches over the window */
    uint64_t queue_bytes;     /* bytes of fetches held per server (queued or sent) */
    uint64_t output_limit;    /* unsent bytes per connection before it takes no more */
} kd_pool_params;

/* Totals over every server, for INFO stats. */
typedef struct kd_pool_totals {
    uint64_t fetches;    /* asked for */
    uint64_t replies;    /* replies read (including discarded ones) */
    uint64_t nils;       /* nil replies */
    uint64_t errors;     /* error replies from the databases */
    uint64_t failed;     /* fetches failed by the pool (connection, down, queue full) */
    uint64_t cancelled;  /* fetches cancelled by their requester */
    uint64_t conn_failures;
    uint64_t ejections;
    uint64_t queued;     /* waiting for room now */
    uint64_t outstanding; /* queued or sent and unanswered now */
    uint64_t batches;    /* commands sent (GET or MGET) */
    uint64_t keys_sent;  /* keys in them */
    uint64_t joins;      /* fetches that joined one on its way (singleflight) */
    uint64_t hedges, hedges_won, retries;
} kd_pool_totals;

/* Parse a hedge-after value ("off", "p95", "p99.9", "20ms") into
 * prm->hedge_pct and prm->hedge_after. 0 or -EINVAL with *why set. */
int kd_pool_parse_hedge(const char *v, kd_pool_params *prm, const char **why);
/* Parse a share: "5%" or "0.05". 0 or -EINVAL with *why set. */
int kd_pool_parse_share(const char *v, double *out, const char **why);
/* Option checkers (kt_opt.check) for a backend line ("ADDR" or
 * "ADDR,ADDR,..."), hedge-after and a share. */
int kd_pool_check_backend(const char *v, const char **why);
int kd_pool_check_hedge(const char *v, const char **why);
int kd_pool_check_share(const char *v, const char **why);

/* An empty pool on loop. 0 or -ENOMEM. */
int kd_pool_new(kt_loop *loop, kd_pool **out);

/*
 * Set the groups and the parameters. Each of the n lines is one group:
 * "ADDR:PORT", or replicas holding the same keys separated by commas. A
 * group listed again under the same line keeps its connections (unless
 * `connections` changed); a group no longer listed is retired: it takes no
 * new fetches, answers those it has, then closes. New groups start
 * connecting at once. 0, or -EINVAL with *why set (nothing changed), or
 * -ENOMEM.
 */
int kd_pool_configure(kd_pool *p, const kd_pool_params *prm, const char *const *lines, size_t n,
                      const char **why);

/* Fetch key (len bytes, copied when it must wait). The caller owns the
 * returned reference. NULL only when out of memory. */
kt_future *kd_pool_fetch(kd_pool *p, const char *key, size_t len);

/* Append the "# Backend" section's lines (Redis INFO format) to out. */
void kd_pool_info(kd_pool *p, kt_buf *out);
void kd_pool_totals_get(const kd_pool *p, kd_pool_totals *out);
/* Zero the counters and latency histograms (CONFIG RESETSTAT). */
void kd_pool_reset_stats(kd_pool *p);

/* Fail every fetch still waiting with -ESHUTDOWN, close the connections and
 * free the pool. The streams finish closing in the loop's next iteration.
 * NULL is harmless. */
void kd_pool_free(kd_pool *p);

#endif
