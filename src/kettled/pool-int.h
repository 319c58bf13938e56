/*
 * pool-int.h - the backend pool's private structures. Module map:
 *
 *   pool.c    groups and replicas: configuration, reload, retiring, the
 *             end-of-iteration flush, freeing
 *   fetch.c   flights: kd_pool_fetch, singleflight, waiters, settling,
 *             retries, hedged reads and their budget
 *   conn.c    one replica's pipelined connections (src/common/pconn.h):
 *             connect and backoff, batches out as GET/MGET, replies in
 *   health.c  one notion of a replica's health: a windowed latency
 *             histogram and failure counts, from which the stall threshold,
 *             the hedge delay, ejection and probing are all decided
 *   poolinfo.c  INFO lines, totals, CONFIG RESETSTAT
 *
 * The objects, from the caller's future down to the bytes on a connection:
 *
 *   waiter (a caller's future) ──▶ flight (one key in one group: the
 *        waiters sharing it, up to two attempts, the retry and hedge state)
 *                                     │ att[0], att[1]
 *                                     ▼
 *   attempt (that key on one replica) ── queued on the replica ──▶ sent in a
 *        command (GET k or MGET k1..kn: a kd_cmd slot on a connection),
 *        whose reply settles each of its attempts in key order
 */
#ifndef KD_POOL_INT_H
#define KD_POOL_INT_H

#include <stdarg.h>
#include <kettle/kettle.h>
#include "hash.h"
#include "pconn.h"
#include "pool.h"
#include "rng.h"

typedef struct kd_group kd_group;
typedef struct kd_replica kd_replica;
typedef struct kd_conn kd_conn;
typedef struct kd_flight kd_flight;
typedef struct kd_att kd_att;
typedef struct kd_waiter kd_waiter;

/* Bytes charged per fetch on top of its key (flight, attempt, waiter): what
 * backend-queue-bytes counts, so that tiny keys are bounded too. */
#define KD_FETCH_COST 160u
/* Keys stored inside the flight; longer ones are allocated. */
#define KD_KEY_INLINE 40u

/* ---- a log-linear histogram over a sliding window --------------------------- */

/* Values in microseconds: exact below 16, then 16 buckets per power of two
 * (within 6%), up to 2^40 us. */
#define KD_LH_SUB 16u
#define KD_LH_N (KD_LH_SUB + KD_LH_SUB * 36u)
/* The window is cut into this many slices; the oldest is dropped as time
 * moves on, so "recent" means the last window, give or take a slice. */
#define KD_WIN_SLICES 8u
/* Fewer samples than this in the window: percentiles are not trusted (the
 * stall threshold stays at backend-timeout, no hedging at pNN). */
#define KD_WIN_MIN_SAMPLES 32u

typedef struct kd_lh {
    uint64_t n;
    uint32_t c[KD_LH_N];
} kd_lh;

typedef struct kd_slice {
    uint32_t ok, fail;      /* replica: commands answered / failed */
    uint32_t fetches, hedges; /* group: flights started / hedges sent */
} kd_slice;

typedef struct kd_window {
    uint64_t slice_ns;      /* window / KD_WIN_SLICES */
    uint64_t cur;           /* index of the current slice (time / slice_ns) */
    kd_slice s[KD_WIN_SLICES];
    kd_lh lat[KD_WIN_SLICES];
    kd_lh sum;              /* the live slices' histograms added up */
    kd_slice tot;           /* the live slices' counters added up */
} kd_window;

/* ---- waiters, flights, attempts ------------------------------------------------- */

struct kd_waiter {
    kt_future *f;           /* the caller's future (our reference) */
    kd_flight *fl;
    kd_waiter *prev, *next; /* the flight's waiters */
};

enum kd_att_state { KD_ATT_QUEUED = 1, KD_ATT_SENT };

struct kd_att {
    kd_flight *fl;          /* NULL once nobody wants it (cancelled, lost the race) */
    kd_replica *r;
    kd_att *prev, *next;    /* QUEUED: the replica's queue; SENT: next in its command */
    kd_conn *conn;          /* SENT: the connection and the command's id on it */
    uint64_t seq;
    uint32_t cost;          /* bytes charged to r */
    uint8_t state;          /* enum kd_att_state */
    bool hedge;             /* sent by the hedge timer */
};

struct kd_flight {
    kd_group *g;
    kd_flight *hnext;       /* singleflight bucket chain */
    kd_flight *prev, *next; /* the group's flights, oldest first */
    kd_waiter w0;           /* the first waiter, inline */
    kd_waiter *waiters;     /* every waiter (w0 included while it waits) */
    uint32_t nwaiters;
    kd_att *att[2];         /* attempts in progress: [0] first or retry, [1] hedge */
    uint64_t hash;
    uint64_t started;       /* loop time of the first attempt */
    bool in_table;          /* in the singleflight table */
    bool retried;           /* the one retry was used */
    uint32_t len;
    char *key;              /* inl or allocated */
    char inl[KD_KEY_INLINE];
};

/* The slot a command holds on a connection (the kt_pconn user area). */
typedef struct kd_cmd {
    kd_att *head;           /* its attempts in key order (NULL: a probe) */
    uint32_t n;             /* keys (0: a probe) */
    uint32_t live;          /* attempts someone still wants; a probe: its round */
} kd_cmd;

/* A free list of objects of one size: a free object's first bytes link it. */
typedef struct kd_freelist {
    void *head;
    size_t n;
} kd_freelist;

/* ---- connections, replicas, groups ----------------------------------------------- */

struct kd_conn {
    kt_pconn pc;
    kd_replica *r;
    uint32_t fails;         /* failed attempts in a row: the backoff exponent */
    bool served;            /* a reply arrived since it connected */
    uint64_t stalled_at;    /* loop time the watchdog last failed it (0: it has
                               served a reply since, or never stalled) */
    bool up;                /* counted in its replica's `up` */
    uint32_t lost;          /* commands abandoned by the failure being handled */
    const char *close_msg;  /* kd_conn_close: what the abandoned fetches are told */
    kt_timer retry;         /* reconnect after a backoff */
};

enum kd_rep_state {
    KD_REP_LIVE = 0,        /* takes fetches */
    KD_REP_EJECTED,         /* out until eject_until */
    KD_REP_PROBING,         /* out; probes decide whether it comes back */
};

struct kd_replica {
    kd_pool *pool;
    kd_group *g;
    char name[128];         /* "127.0.0.1:7380": messages and INFO */
    kt_addr addr;
    kd_conn *conns;
    uint32_t nconns;
    uint32_t up, connecting;
    kd_att *qhead, *qtail;  /* attempts waiting to go out (this iteration's batch, or no room) */
    uint32_t qlen;
    uint64_t held;          /* bytes charged for its attempts, queued or sent */
    uint32_t load;          /* attempts queued or sent, not yet answered */
    bool dirty;             /* on the pool's flush list */
    bool retiring;          /* removed by a reconfiguration: drains, then freed */
    bool warned;            /* a failure was logged since it was last healthy */
    uint8_t state;          /* enum kd_rep_state */
    uint32_t probes_ok;     /* PROBING: probes of this round answered */
    uint32_t probe_out;     /* PROBING: probes of this round outstanding */
    uint32_t probe_round;   /* bumped at each ejection and probing round */
    kd_replica *next_dirty;
    uint32_t fails;         /* failures in a row (eject-after) */
    uint32_t ejected_in_row; /* ejections without a healthy spell: the time doubles */
    uint64_t eject_until;
    kt_timer eject_timer;   /* EJECTED: start probing */
    uint64_t stall_ns;      /* the watchdog timeout its connections use now */
    uint64_t p99_ns;        /* recent p99 latency (0: not known yet) */
    uint64_t last_reply;    /* loop time of its last reply, on any connection */
    bool silent;            /* the failure being reported is a stall of a server
                               that answers nothing on any connection */
    bool stuck;             /* ... or of a server whose every connection is stuck */
    uint64_t stall_slice;   /* window slice stall_ns and p99_ns were computed in */
    char last_error[160];
    char eject_cause[96];
    kd_window win;          /* recent latency and outcomes of its commands */
    kt_hist hist;           /* latency since start or RESETSTAT (INFO) */
    kd_lh batch_keys;       /* keys per command since start (INFO) */
    struct {
        uint64_t fetches, replies, nils, errors, failed, cancelled;
        uint64_t conn_failures, stalls, connects, batches, keys;
        uint64_t hedges, hedges_won, retries, probes;
        uint64_t ejections, ej_consecutive, ej_rate, ej_probe;
    } st;
};

struct kd_group {
    kd_pool *pool;
    char name[512];         /* the backend line: "ADDR" or "ADDR1,ADDR2,..." */
    kd_replica **reps;
    uint32_t nreps;
    kd_flight **tab;        /* singleflight: buckets by key hash */
    uint32_t tab_mask;      /* buckets - 1 */
    uint32_t ntab;          /* flights in the table */
    uint32_t nflights;      /* flights alive (in the table or not) */
    kd_flight *fhead, *ftail; /* every flight, oldest first */
    kd_flight *hcursor;     /* the oldest flight the hedge timer has not looked at */
    kt_timer hedge_timer;
    uint64_t hedge_ns;      /* cached hedge delay and the slice it was computed in */
    uint64_t hedge_slice;
    bool retiring;
    kd_group *next_retired;
    kd_window win;          /* per-key latency of its replicas, fetches and hedges */
    struct {
        uint64_t fetches, joins, failed, cancelled;
        uint64_t hedges, hedges_won, budget_exhausted, retries;
    } st;
};

struct kd_pool {
    kt_loop *loop;
    kd_pool_params prm;
    kd_group **groups;      /* the live groups; the ring indexes into it */
    size_t ngroups;
    size_t nreplicas;
    kd_ring ring;
    kd_group *retired;      /* draining before they are freed */
    kt_timer reaper;
    kt_resp_limits lim;     /* replies: bulk, array and depth bounds */
    kd_replica *dirty;      /* replicas with attempts to send at the end of this iteration */
    kt_defer flush;         /* sends the dirty replicas' queues at the end of the iteration */
    kd_freelist free_fl, free_w, free_att; /* flights, waiters, attempts */
    kt_rng rng;             /* jitter, power of two choices */
    uint64_t retired_failed; /* counters of freed groups, kept for totals */
};

/* ---- pool.c ---------------------------------------------------------------------- */

/* r has attempts to send: flush it at the end of this loop iteration. */
void kd_pool_mark(kd_replica *r);
/* A random number in [0, n) (jitter, power of two choices). */
uint64_t kd_pool_rand(kd_pool *p, uint64_t n);
/* Reconnect delay after `fails` failures in a row (exponential, jittered). */
uint64_t kd_pool_backoff(kd_pool *p, uint32_t fails);

/* ---- fetch.c ---------------------------------------------------------------------- */

/* Attempt a answered: settle its flight with node n (from replica a->r). */
void kd_att_answer(kd_att *a, const kt_resp_node *n);
/* Attempt a failed (err, whole Redis error text msg); retryable: a
 * connection error, which may be retried on another replica. */
void kd_att_failed(kd_att *a, int err, const char *msg, bool retryable);
/* Give a's bytes and load back to its replica and free it (a->fl must be
 * NULL or a already taken off its flight). */
void kd_att_free(kd_att *a);
/* Unlink a queued attempt from its replica's queue. */
void kd_queue_unlink(kd_replica *r, kd_att *a);
/* Fail every queued attempt of r (retryable as given). */
void kd_queue_fail(kd_replica *r, int err, const char *msg, bool retryable);
/* Fail every flight of g and its waiters (pool closing). */
void kd_group_fail_all(kd_group *g, int err, const char *msg);
void kd_group_init_fetch(kd_group *g);
void kd_group_free_fetch(kd_group *g);
/* Free the pool's free lists. */
void kd_fetch_free_lists(kd_pool *p);

/* ---- conn.c ------------------------------------------------------------------------ */

int kd_conn_init(kd_conn *c, kd_replica *r);
/* Start connecting (a failure to even start counts as a failed attempt). */
void kd_conn_start(kd_conn *c);
/* Send the first n queued attempts of c's replica as one command. 0, or
 * -ENOMEM (then nothing was sent, or c was failed). */
int kd_conn_send_batch(kd_conn *c, uint32_t n);
/* Send a probe (GET 0) of probing round `round`. 0 or negative errno. */
int kd_conn_send_probe(kd_conn *c, uint32_t round);
/* May c take another command now? */
bool kd_conn_has_room(const kd_conn *c);
/* Close, failing what is outstanding with -ESHUTDOWN msg (NULL: nothing
 * may be outstanding). No reconnect follows. */
void kd_conn_close(kd_conn *c, const char *msg);
/* Release a closed connection's memory. */
void kd_conn_free(kd_conn *c);
/* Reconnect now if backing off (the ejection is over). */
void kd_conn_kick(kd_conn *c);
/* Apply the pool's parameters that a live connection follows. */
void kd_conn_apply_params(kd_conn *c);

/* ---- health.c ------------------------------------------------------------------------ */

void kd_lh_add(kd_lh *h, uint64_t v, uint32_t n);
/* The value (same unit as added) below which pct percent lie - the lower
 * bound of its bucket, within 6% - or 0 if empty. */
uint64_t kd_lh_percentile(const kd_lh *h, double pct);
double kd_lh_mean(const kd_lh *h);

int kd_window_init(kd_window *w, uint64_t window_ns);
/* Move the window to `now`, dropping slices that fell out of it. */
void kd_window_advance(kd_window *w, uint64_t now);
/* The current slice (after advancing to now). */
kd_slice *kd_window_slice(kd_window *w, uint64_t now);
void kd_window_latency(kd_window *w, uint64_t now, uint64_t ns, uint32_t n);
/* Percentile (ns) over the window, 0 when it holds too few samples. */
uint64_t kd_window_percentile(kd_window *w, uint64_t now, double pct);

/* A command on r answered after `ns` carrying n keys (n 0: a probe). */
void kd_health_reply(kd_replica *r, uint64_t ns, uint32_t n);
/* `events` failures of r (a lost connection and the commands lost with
 * it), what says how; one more failure in a row when consecutive. May
 * eject r, or eject it again while it is being probed. */
void kd_health_failure(kd_replica *r, uint32_t events, bool consecutive, const char *what);
/* The oldest reply on c is late beyond r's stall threshold. */
void kd_health_overdue(kd_conn *c, uint64_t waited);
/* A probe of round `round` was answered (ok) or lost. */
void kd_health_probe_done(kd_replica *r, uint32_t round, bool ok);
/* A connection of r came up: send a probe if r is probing. */
void kd_health_conn_up(kd_replica *r, kd_conn *c);
/* r's watchdog timeout now (recomputed once per window slice). */
uint64_t kd_health_stall_ns(kd_replica *r);
/* The group's hedge delay now (0: no hedging, or not enough samples). */
uint64_t kd_health_hedge_ns(kd_group *g);
/* May g send a hedge now (hedge-max-extra over the window)? */
bool kd_health_hedge_budget(kd_group *g);
/* Would the pool keep another replica taking fetches if r left? */
bool kd_health_others_live(const kd_pool *p, const kd_replica *r);
/* Is r taking fetches (live and with a connection up or coming up)? */
bool kd_replica_usable(const kd_replica *r);
/* Power of two choices among g's usable replicas other than `not`
 * (NULL: any): the one with the smaller load. NULL when none. */
kd_replica *kd_group_pick(kd_group *g, const kd_replica *not);
/* Does g have a replica taking fetches (ring lookups skip groups that do not)? */
bool kd_group_live(const kd_group *g);
void kd_replica_init_health(kd_replica *r);
void kd_replica_stop_health(kd_replica *r);

/* ---- poolinfo.c -------------------------------------------------------------------- */

const char *kd_replica_state_name(const kd_replica *r);

#endif
