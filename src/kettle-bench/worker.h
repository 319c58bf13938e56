/*
 * worker.h - one kettle-bench thread: a kt_loop driving its share of the
 * connections (worker.c: the thread, its timers and the end of the run;
 * conn.c: one connection's requests and replies).
 *
 *   main thread                     worker thread (one kt_loop)
 *   -----------                     ---------------------------------------
 *   kb_worker_start  ──creates──▶   loop; barrier; connect (over --ramp)
 *   (all settled)   ◀──SIGUSR1───   every connection up (or dead)
 *   kb_worker_go   ──kt_loop_post─▶ the plan: open loop starts its schedule,
 *                                   closed loop starts (or, with --ramp, goes on)
 *   progress line  ◀──publish───    every 100 ms: interval latencies, counts
 *   kb_worker_stop ──kt_loop_post─▶ close everything, leave the loop
 *   kb_worker_join ◀────────────    stats (merged by main)
 *
 * Each connection keeps a FIFO of its requests in flight (replies come in
 * order). Closed loop: a connection refills its pipeline as replies come.
 * Open loop (--rate R): connection c of C sends the requests of global
 * schedule index g = c + j*C at t_start + g/R; one that is due while the
 * pipeline is full waits, and its latency still counts from that time.
 */
#ifndef KB_WORKER_H
#define KB_WORKER_H

#include "bench.h"
#include "pconn.h"

typedef struct kb_worker kb_worker;

/* A request in flight (its keys follow it in the slot). */
typedef struct kb_req {
    uint64_t origin;          /* latency counts from here: intended time (open) or send time */
    uint64_t sent;            /* when it was written (for --timeout) */
    const kb_template *t;
    bool measured;
} kb_req;

enum kb_conn_state {
    KB_C_IDLE = 0,   /* waiting for its connect time (ramp, backoff) */
    KB_C_CONNECTING,
    KB_C_UP,
    KB_C_CLOSING,    /* kt_stream_close called, on_close pending */
    KB_C_DEAD,       /* given up */
};

typedef struct kb_conn {
    kb_worker *w;
    kt_pconn pc;              /* the stream, the FIFO of requests in flight, the reply parser */
    unsigned id;              /* global index 0..conns-1 */
    int state;                /* enum kb_conn_state */
    bool ever_up;             /* has connected at least once */
    bool retry;               /* CLOSING: reconnect after on_close */
    bool exhausted;           /* open loop: its schedule is over */
    unsigned attempts;        /* consecutive failed connects */
    uint32_t abandoned;       /* requests handed back by the failure being reported */
    uint64_t next_j;          /* open loop: its next schedule index */
    kt_timer timer;           /* connect time, or the next due send (open loop) */
} kb_conn;

struct kb_worker {
    kb_config *cfg;           /* shared, read-only once running */
    unsigned index;
    pthread_t thread;
    pthread_barrier_t *ready; /* loops up -> plan set -> go */
    kb_progress *progress;
    pthread_t main_thread;    /* gets SIGUSR1 when this worker ends */
    int err;                  /* loop creation failed: negative errno */
    bool ended;               /* the thread is done (atomic) */
    const char *backend;      /* the loop's I/O backend */

    pthread_mutex_t lock;     /* guards loop_alive against kb_worker_stop */
    bool loop_alive;
    kt_loop *loop;

    kb_conn *conns;
    unsigned nconns;
    unsigned live;            /* connections not dead */
    unsigned active;          /* open loop: not dead and schedule not over */
    unsigned open_streams;    /* streams whose on_close has not run */
    uint64_t quota;           /* closed loop -n: measured requests this thread sends */
    uint64_t inflight;
    uint64_t now;             /* clock read once per callback */
    bool finishing;           /* closing everything */
    bool sched_over;          /* -d: t_end passed */
    bool go;                  /* the plan below is set (go_cb has run) */
    uint64_t t_start, t_measure, t_end; /* this thread's copy of the plan, UINT64_MAX before */
    unsigned nsettled;        /* connections that have connected once or died */
    bool settled_all;         /* all of them (atomic, read by main) */
    kt_rng rng;               /* keys and mix picks: seeded from --seed and the index */
    uint64_t seq_k;           /* __seq_int__: this thread's next is index + seq_k * threads */
    unsigned logged_mismatch, logged_fail;
    kt_timer sweep;           /* timeouts, end of -d, progress */
    uint64_t last_publish;

    char *scratch;            /* rendering of one request's arguments */
    kt_resp_arg *argv;

    kb_stats stats;           /* measured totals */
    kt_hist ihist;            /* since the last publish */
    uint64_t idone, ierrors;
};

/* worker.c */
/* Allocate worker index of cfg->threads with its connections. 0 or -ENOMEM. */
int kb_worker_new(kb_worker **out, kb_config *cfg, unsigned index, pthread_barrier_t *ready,
                  kb_progress *progress);
/* Start its thread. 0 or negative errno. */
int kb_worker_start(kb_worker *w);
/* Ask it to finish now (any thread; harmless once it has ended). */
void kb_worker_stop(kb_worker *w);
void kb_worker_join(kb_worker *w);
void kb_worker_free(kb_worker *w);
/* Start sending on the plan in cfg (any thread; after every connection
 * has settled). */
void kb_worker_go(kb_worker *w);
/* A connection has connected for the first time, or died never having:
 * tells main once all have. */
void kb_worker_settled(kb_worker *w);
/* End the run if nothing more is to be sent or received. */
void kb_worker_maybe_done(kb_worker *w);
/* Close every connection and leave the loop once they are closed. */
void kb_worker_finish(kb_worker *w);

/* conn.c */
/* Prepare c's pipelined client on its worker's loop. 0 or -ENOMEM. */
int kb_conn_init(kb_conn *c);
/* Open the connection now (from its timer). */
void kb_conn_connect(kb_conn *c);
/* Send what is due and fits: the pipeline's free slots (closed loop) or
 * the due schedule (open loop; arms the timer for the next). */
void kb_conn_pump(kb_conn *c);
/* Drop the connection: in-flight requests become timeouts (timed_out) or
 * lost (with one connection failure counted); reconnect if retry. */
void kb_conn_fail(kb_conn *c, bool timed_out, bool retry, const char *why);
/* Open loop: measured requests of c that were due by `until` but not sent. */
uint64_t kb_conn_unsent(const kb_conn *c, uint64_t until);

#endif
