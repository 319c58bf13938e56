/*
 * pool.h - the backend pool: pipelined connections to the database
 * servers, a future per fetch.
 *
 * kd_pool_fetch(key) returns a future that settles with the database's
 * answer to GET key:
 *   resolved   an integer (kt_future_i64) when the reply was a bulk string
 *              holding a canonical decimal integer (the common case: no
 *              allocation), otherwise a kd_blob (kt_future_value);
 *   failed     -ENOENT      the database answered nil (no such key);
 *              -EREMOTEIO   the database answered an error: the message is
 *                           its text ("ERR ...");
 *              -EIO         the connection failed (reset, closed, stalled,
 *                           garbage): "ERR backend ADDR: what happened";
 *              -EHOSTDOWN   the server is down or ejected: fails at once;
 *              -EAGAIN      the server's queue is full (backend-queue-limit);
 *              -EPROTO      a reply of the wrong type;
 *              -ESHUTDOWN   the pool is closing or the server was removed.
 * Every failure message is a whole Redis error text (code first), ready to
 * be sent to a client. Cancelling the future unhooks it from the pool: a
 * queued fetch is dropped, a sent one's reply is read and discarded.
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
    uint32_t pipeline;        /* outstanding requests per connection */
    uint32_t queue_limit;     /* fetches waiting for room, per server */
    uint32_t eject_after;     /* consecutive failures; 0: never */
    uint32_t points;          /* virtual nodes per server on the hash ring */
    uint64_t connect_timeout; /* ns */
    uint64_t backend_timeout; /* ns: oldest reply this late = stalled; 0: never */
    uint64_t retry_min, retry_max; /* reconnect backoff, ns */
    uint64_t eject_time;      /* ns */
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
    uint64_t outstanding; /* sent and unanswered now */
} kd_pool_totals;

/* An empty pool on loop. 0 or -ENOMEM. */
int kd_pool_new(kt_loop *loop, kd_pool **out);

/*
 * Set the servers ("ADDR:PORT", at least one) and the parameters. A server
 * already in the pool under the same address keeps its connections (unless
 * `connections` changed); a server no longer listed is retired: it takes no
 * new fetches, answers those it has, then closes. New servers start
 * connecting at once. 0, or -EINVAL with *why set (nothing changed), or
 * -ENOMEM.
 */
int kd_pool_configure(kd_pool *p, const kd_pool_params *prm, const char *const *addrs, size_t n,
                      const char **why);

/* Fetch key (len bytes, copied when it must wait). The caller owns the
 * returned reference. NULL only when out of memory. */
kt_future *kd_pool_fetch(kd_pool *p, const char *key, size_t len);

/* Append the "# Backend" section's lines (Redis INFO format) to out. */
void kd_pool_info(const kd_pool *p, kt_buf *out);
void kd_pool_totals_get(const kd_pool *p, kd_pool_totals *out);
/* Zero the counters and latency histograms (CONFIG RESETSTAT). */
void kd_pool_reset_stats(kd_pool *p);

/* Fail every fetch still waiting with -ESHUTDOWN, close the connections and
 * free the pool. The loop must run an iteration or two afterwards for the
 * streams to finish closing. NULL is harmless. */
void kd_pool_free(kd_pool *p);

#endif
