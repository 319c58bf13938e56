/*
 * kdb.h - kettle-db's private structures, shared by its modules. kettle-db
 * is the server core (server.h: connections, parsing, the reply FIFO,
 * limits, the shared commands) plus:
 *
 *   db.c     server life cycle, the accept hooks and whole-server faults
 *            (refuse, stop-reading, slow-accept), configuration
 *   req.c    requests: pool, delays (timers), worker slots, submitting
 *   reply.c  the reply path: encoding, per-request faults acted out when
 *            a reply is due, dropping the requests of a closed connection
 *   cmd.c    the command table: GET, MGET, DBSIZE, INFO, FAULT
 *   info.c   the INFO sections
 *
 * One connection's replies leave in request order (RESP has no ids); the
 * core's FIFO keeps them:
 *
 *   FIFO ─▶ [GET 9: in service] ─▶ [GET 1: ready] ─▶ [PING: bytes] ─▶ NULL
 *            timer pending          waits behind GET 9 (head-of-line)
 *
 * A request is "in service" while its delay runs; with `workers K` at most
 * K are, the others wait in the server's FIFO (srv->wq_*) before their
 * delay starts. Each request carries its delay in its own kt_timer.
 */
#ifndef KDB_KDB_H
#define KDB_KDB_H

#include <kettle/kettle.h>
#include "server.h"
#include "cfg.h"
#include "db.h"
#include "fault.h"
#include "latency.h"
#include "rng.h"

typedef struct kdb_conn kdb_conn;
typedef struct kdb_req kdb_req;

enum kdb_req_kind {
    KDB_REQ_GET = 1,  /* one key, delayed */
    KDB_REQ_MGET,     /* parent of one KDB_REQ_KEY per key; ready when all are */
    KDB_REQ_KEY,      /* one key of an MGET */
};

enum kdb_req_state {
    KDB_RS_NEW = 0,
    KDB_RS_QUEUED,    /* waiting for a worker slot */
    KDB_RS_SERVICE,   /* delay timer running */
    KDB_RS_READY,     /* reply can be written */
    KDB_RS_STALLED,   /* fault "stall": never ready */
};

#define KDB_RF_BADKEY     0x04 /* GET/KEY: not a decimal integer: error reply */
#define KDB_RF_CHAINED    0x08 /* GET: timer armed when the GET before it completes (req.c) */

struct kdb_req {
    ks_slot slot;             /* GET, MGET: the reply owed on the connection */
    kt_timer timer;           /* the delay */
    kdb_req *next;            /* MGET keys, or free list */
    kdb_req *qnext;           /* worker FIFO */
    kdb_req *parent;          /* KEY: its MGET (NULL once the MGET is gone) */
    kdb_server *srv;
    int64_t key;
    uint64_t sched;           /* when the delay is due (loop time, ns) */
    uint64_t delay;           /* scheduled delay, ns */
    kdb_req *keys;            /* MGET: first key, linked by next */
    uint32_t len;             /* MGET: keys */
    uint32_t remaining;       /* MGET: keys not ready */
    uint8_t kind;             /* enum kdb_req_kind */
    uint8_t state;            /* enum kdb_req_state */
    uint8_t fault;            /* kdb_fault_kind rolled on arrival */
    uint8_t flags;            /* KDB_RF_* */
};

#define KDB_CF_OUT_DEAD  0x01 /* cut: no more output ever */
#define KDB_CF_TRICKLE   0x02 /* a reply is being trickled out */
#define KDB_CF_RESETTING 0x04 /* RST once queued output has left */
#define KDB_CF_PARKED    0x08 /* slow-accept: handed over during a pause, not yet taken */

/* A client connection: the core's, plus what the faults need. */
struct kdb_conn {
    ks_conn core;             /* first: the core allocates kdb_conn */
    kdb_conn *pnext;          /* srv->parked */
    kt_timer timer;           /* trickle slices, deferred reset */
    char *tbuf;               /* trickle: the reply being sent */
    uint32_t tlen, toff;
    uint32_t reset_polls;     /* reset: waits so far for earlier replies to leave */
    uint32_t nstalled;        /* requests stalled by the fault: never answered */
    uint8_t flags;            /* KDB_CF_* */
};

typedef struct kdb_stats {
    uint64_t refused;         /* fault refuse (accepted then reset) */
    uint64_t served;          /* keys answered after their delay */
    uint64_t replies;
    uint64_t faults[KDB_F_COUNT];
} kdb_stats;

struct kdb_server {
    ks_server core;           /* connections, limits, shared commands */
    kt_loop *loop;
    kdb_cfg cfg;
    kdb_latency lat;
    kdb_faults faults;
    kt_rng lat_rng;           /* latency draws */
    kt_rng fault_rng;         /* fault dice, separate so faults do not shift delays */
    uint64_t seed;            /* the seed in use (cfg seed, or drawn) */

    bool stopping;            /* kdb_server_stop() running */
    bool embedded;            /* started by kdb_server_start() inside another program */
    bool refusing;            /* listeners closed by fault refuse */
    bool accept_paused;       /* slow-accept pause running */
    kdb_conn *parked, *parked_tail; /* accepted during the pause, waiting their turn */
    kt_timer accept_timer;    /* slow-accept pause; re-listen retries */

    kdb_req *free_reqs;       /* pool: requests come from slabs */
    void **slabs;
    size_t nslabs;
    size_t reqs_total, reqs_free;

    kdb_req *wq_head, *wq_tail; /* waiting for a worker slot */
    uint64_t nqueued, in_service, stalled;
    int64_t applied_seed;     /* cfg.seed when the generators were last seeded */

    kdb_stats st;
    kt_hist h_sched;          /* scheduled delays */
    kt_hist h_actual;         /* actual delays (timer fire - service start) */
    kt_hist h_late;           /* actual - scheduled */
    uint64_t clock_cache;     /* last clock read (req.c clock_now) */
    unsigned clock_uses;
};

/* The kettle-db server of a connection. */
static inline kdb_server *kdb_of(const ks_conn *c)
{
    return (kdb_server *)c->srv->data;
}

/* ---- db.c ---- */
/* Start from a complete configuration (copied), as the kettle-db
 * program (logs "listening on ADDR"). 0 or negative errno. */
int kdb_server_start_cfg(kt_loop *loop, const kdb_cfg *cfg, kdb_server **out);
/* Begin the drain (SIGTERM, SIGINT) or end it (second signal); the loop
 * stops when it is over. */
void kdb_server_shutdown(kdb_server *srv);
/* Apply a changed runtime option (after CONFIG SET) to the live state. */
void kdb_server_apply(kdb_server *srv);
/* Install or clear a fault, with its whole-server effects; from: the
 * connection that asked (spared by stop-reading all), or NULL. */
void kdb_server_set_fault(kdb_server *srv, kdb_fault_kind kind, const kdb_fault *f, ks_conn *from);
void kdb_server_clear_faults(kdb_server *srv);

/* ---- req.c ---- */
kdb_req *kdb_req_get(kdb_server *srv);
void kdb_req_put(kdb_server *srv, kdb_req *r);
void kdb_reqs_destroy(kdb_server *srv);
/* Queue a delayed GET of key (bad: the key was not a decimal integer). */
int kdb_submit_get(ks_conn *c, int64_t key, bool bad);
/* Queue an MGET of the n keys (each parsed here; a key that is not a
 * decimal integer becomes an error element). */
int kdb_submit_mget(ks_conn *c, const kt_resp_arg *keys, size_t n);
/* Start queued requests while worker slots are free. */
void kdb_workers_kick(kdb_server *srv);
/* Stop r's delay if it runs, release its worker slot (not r itself). */
void kdb_req_abandon(kdb_server *srv, kdb_req *r);

/* ---- reply.c (the core's hooks) ---- */
/* Encode r's normal reply into o. */
void kdb_encode(kdb_server *srv, kt_out *o, const kdb_req *r);
void kdb_emit(ks_conn *c, ks_slot *s, kt_out *o);
void kdb_drop(ks_slot *s);
bool kdb_stuck(ks_conn *c);
/* Set up and tear down a connection's fault state. */
void kdb_conn_init(kdb_server *srv, kdb_conn *c);
void kdb_conn_release(kdb_conn *c);

/* ---- cmd.c ---- */
extern const ks_cmd kdb_cmds[]; /* ends with { NULL } */

/* ---- metrics.c ---- */
/* The core's hook (metrics-listen): kettle-db's families. */
void kdb_metrics(ks_server *core, struct kt_metrics *m, const char *prefix);

/* ---- info.c ---- */
extern const ks_info_section kdb_info_sections[];

#endif
