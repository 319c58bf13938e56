/*
 * pool-int.h - the backend pool's private structures, shared by pool.c
 * (servers, the hash ring, the wait queue, configuration, INFO) and
 * conn.c (one pipelined connection: connect, send, read replies, fail).
 */
#ifndef KD_POOL_INT_H
#define KD_POOL_INT_H

#include <stdarg.h>
#include <kettle/kettle.h>
#include "hash.h"
#include "pool.h"

typedef struct kd_backend kd_backend;
typedef struct kd_conn kd_conn;

/* A fetch sent on a connection, awaiting its reply (ring slot). */
typedef struct kd_wait {
    kt_future *f;   /* our reference; NULL once cancelled: the reply is read and dropped */
    kd_conn *conn;  /* for the cancel hook */
    uint64_t sent;  /* loop time it was written */
} kd_wait;

enum kd_conn_state {
    KD_CONN_BACKOFF = 0, /* closed; the timer reconnects */
    KD_CONN_CONNECTING,
    KD_CONN_UP,
};

struct kd_conn {
    kd_backend *b;
    kt_stream *s;        /* NULL unless connecting or up */
    kd_wait *ring;       /* outstanding fetches in send order (FIFO) */
    uint32_t cap;        /* ring size: grows by doubling up to backend-pipeline */
    uint32_t head;       /* oldest outstanding */
    uint32_t count;      /* outstanding (cancelled ones included) */
    uint32_t fails;      /* consecutive failed attempts: the backoff exponent */
    uint8_t state;       /* enum kd_conn_state */
    bool served;         /* a reply arrived on this connection since it connected */
    kt_timer timer;      /* BACKOFF: reconnect; UP: stall watchdog */
    kt_resp_reply reply; /* this connection's reply parser */
};

/* A fetch waiting for room on the server's connections. */
typedef struct kd_qitem {
    struct kd_qitem *prev, *next;
    kd_backend *b;
    kt_future *f;        /* our reference */
    uint32_t len;
    char *key;           /* inl, or kt_malloc'd when longer */
    char inl[48];
} kd_qitem;

struct kd_backend {
    kd_pool *pool;
    char name[128];      /* "127.0.0.1:7380": hashing and messages */
    kt_addr addr;
    kd_conn *conns;
    uint32_t nconns;
    uint32_t up;         /* connections UP */
    uint32_t connecting; /* connections CONNECTING */
    kd_qitem *qhead, *qtail;
    uint32_t qlen;
    uint32_t fails;      /* consecutive failures over all connections (ejection) */
    bool ejected;
    bool retiring;       /* removed by a reconfiguration: drains, then freed */
    bool warned;         /* a failure was logged since it was last healthy */
    uint64_t eject_until;
    uint64_t outstanding; /* sent, reply not yet read */
    char last_error[160];
    struct {
        uint64_t fetches, replies, nils, errors, failed, cancelled;
        uint64_t conn_failures, stalls, ejections, connects;
    } st;
    kt_hist hist;        /* send -> reply, ns */
    kd_backend *next_retired;
};

struct kd_pool {
    kt_loop *loop;
    kd_pool_params prm;
    kd_backend **srv;    /* the live servers, ring indexes into it */
    size_t nsrv;
    kd_ring ring;
    kd_backend *retired; /* draining before they are freed */
    kt_timer reaper;     /* frees drained retired servers */
    kt_resp_limits lim;  /* replies: bulk, array and depth bounds */
    kd_qitem *free_q;    /* free list of queue items */
    size_t nfree_q;
    uint64_t rng;        /* xorshift state for the reconnect jitter */
    uint64_t retired_failed; /* counters of freed servers, kept for totals */
};

/* conn.c */
void kd_conn_init(kd_conn *c, kd_backend *b);
/* Start connecting (state CONNECTING). Failure to even start counts as
 * a failed attempt and schedules the next one. */
void kd_conn_start(kd_conn *c);
/* Send GET key on c (UP, count < pipeline). The slot takes a reference
 * on f. 0 or -ENOMEM. */
int kd_conn_send(kd_conn *c, const char *key, size_t len, kt_future *f);
/* Fail c: every waiter fails with -EIO and "ERR backend NAME: <what>",
 * the stream closes, a reconnect is scheduled (not for a retiring server). */
void kd_conn_fail(kd_conn *c, bool counts, const char *fmt, ...) KT_PRINTF(3, 4);
/* Close without failing anybody (c must have nothing outstanding) or
 * failing them with -ESHUTDOWN (pool closing); stops the timer. */
void kd_conn_close(kd_conn *c, const char *msg);

/* pool.c, for conn.c */
/* The least-loaded UP connection with room, or NULL. */
kd_conn *kd_backend_pick(kd_backend *b);
/* Move queued fetches onto connections with room. */
void kd_backend_drain_queue(kd_backend *b);
/* Fail every queued fetch with err and msg. */
void kd_backend_fail_queue(kd_backend *b, int err, const char *msg);
/* A connection failed (counts: toward ejection): account and maybe eject. */
void kd_backend_failed(kd_backend *b, bool counts, const char *what);
/* A connection came up / a reply arrived: the server is healthy. */
void kd_backend_healthy(kd_backend *b);
/* Reconnect delay for a connection after `fails` failures in a row. */
uint64_t kd_pool_backoff(kd_pool *p, uint32_t fails);

#endif
