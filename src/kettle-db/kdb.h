/*
 * kdb.h - kettle-db's private structures, shared by its modules:
 *
 *   db.c     server life cycle, listeners, whole-server faults, connections,
 *            the read path (RESP parsing, protocol limits)
 *   req.c    requests: pool, delays (timers), worker slots, the reply path
 *            (in-order output per connection, per-request faults)
 *   cmd.c    command table: GET, MGET, PING, ECHO, DBSIZE, QUIT, INFO,
 *            AUTH, CONFIG, FAULT, COMMAND, CLIENT, SELECT
 *   info.c   the INFO text
 *
 * One connection's replies leave in request order (RESP has no ids):
 *
 *   conn->head ─▶ [GET 9: in service] ─▶ [GET 1: ready] ─▶ [PING: ready] ─▶ NULL
 *                  timer pending          waits behind GET 9 (head-of-line)
 *
 * A request is "in service" while its delay runs; with `workers K` at most
 * K are, the others wait in the server's FIFO (srv->wq_*) before their
 * delay starts. Each request carries its delay in its own kt_timer.
 */
#ifndef KDB_KDB_H
#define KDB_KDB_H

#include <kettle/kettle.h>
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
    KDB_REQ_TEXT,     /* a reply known at once, waiting behind earlier ones */
};

enum kdb_req_state {
    KDB_RS_NEW = 0,
    KDB_RS_QUEUED,    /* waiting for a worker slot */
    KDB_RS_SERVICE,   /* delay timer running */
    KDB_RS_READY,     /* reply can be written */
    KDB_RS_STALLED,   /* fault "stall": never ready */
};

#define KDB_RF_FREE_TEXT  0x01 /* u.text was kt_malloc'd */
#define KDB_RF_CLOSE      0x02 /* close the connection after this reply (QUIT, protocol error) */
#define KDB_RF_BADKEY     0x04 /* GET/KEY: not a decimal integer: error reply */
#define KDB_RF_CHAINED    0x08 /* GET: timer armed when the GET before it completes (req.c) */

struct kdb_req {
    kt_timer timer;           /* the delay */
    kdb_req *next;            /* connection FIFO, MGET keys, or free list */
    kdb_req *qnext;           /* worker FIFO */
    union {
        kdb_conn *conn;       /* GET, MGET, TEXT */
        kdb_req *parent;      /* KEY: its MGET */
    } up;
    int64_t key;
    uint64_t sched;           /* when the delay is due (loop time, ns) */
    uint64_t delay;           /* scheduled delay, ns */
    union {
        const char *text;     /* TEXT: the encoded reply */
        kdb_req *keys;        /* MGET: first key, linked by next */
    } u;
    uint32_t len;             /* TEXT: bytes; MGET: keys */
    uint32_t remaining;       /* MGET: keys not ready */
    uint8_t kind;             /* enum kdb_req_kind */
    uint8_t state;            /* enum kdb_req_state */
    uint8_t fault;            /* kdb_fault_kind rolled on arrival */
    uint8_t flags;            /* KDB_RF_* */
};

#define KDB_CF_AUTHED    0x01 /* AUTH succeeded: admin commands allowed */
#define KDB_CF_FROZEN    0x02 /* fault stop-reading */
#define KDB_CF_OUT_DEAD  0x04 /* cut: no more output ever */
#define KDB_CF_CLOSING   0x08 /* close requested */
#define KDB_CF_PAUSED    0x10 /* reading paused for backpressure */
#define KDB_CF_TRICKLE   0x20 /* a reply is being trickled out */
#define KDB_CF_RESETTING 0x40 /* RST once queued output has left */
#define KDB_CF_NOREAD    0x80 /* input no longer parsed (closing after a reply) */
#define KDB_CF_PARKED    0x100 /* slow-accept: handed over during a pause, not yet taken */

struct kdb_conn {
    kdb_server *srv;          /* NULL once the server is gone */
    kt_stream *s;
    kdb_conn *prev, *next;    /* srv->conns */
    kdb_conn *pnext;          /* srv->parked */
    kdb_req *head, *tail;     /* replies owed, in request order */
    uint32_t npending;        /* requests in head..tail */
    uint32_t flags;           /* KDB_CF_* */
    uint64_t id;
    kt_timer timer;           /* trickle slices, deferred reset */
    char *tbuf;               /* trickle: the reply being sent */
    uint32_t tlen, toff;
    uint32_t reset_polls;     /* reset: waits so far for earlier replies to leave */
    kt_resp_req req;          /* this connection's request parser */
};

typedef struct kdb_listener {
    kdb_server *srv;
    kt_listener *l;           /* NULL while refusing */
    kt_addr addr;             /* bound address (the port chosen for :0) */
} kdb_listener;

typedef struct kdb_stats {
    uint64_t connections;     /* accepted */
    uint64_t rejected;        /* maxclients */
    uint64_t refused;         /* fault refuse (accepted then reset) */
    uint64_t commands;
    uint64_t served;          /* keys answered after their delay */
    uint64_t replies;
    uint64_t protocol_errors;
    uint64_t closed_query_buffer;
    uint64_t closed_output_buffer;
    uint64_t faults[KDB_F_COUNT];
    uint64_t auth_failures;
} kdb_stats;

struct kdb_server {
    kt_loop *loop;
    kdb_cfg cfg;
    kdb_latency lat;
    kdb_faults faults;
    kdb_rng lat_rng;          /* latency draws */
    kdb_rng fault_rng;        /* fault dice, separate so faults do not shift delays */
    uint64_t seed;            /* the seed in use (cfg seed, or drawn) */

    kdb_listener *ls;
    size_t nls;
    bool stopping;            /* kdb_server_stop() running */
    bool embedded;            /* started by kdb_server_start() inside another program */
    bool refusing;            /* listeners closed by fault refuse */
    bool accept_paused;       /* slow-accept pause running */
    kdb_conn *parked, *parked_tail; /* accepted during the pause, waiting their turn */
    kt_timer accept_timer;    /* slow-accept pause; re-listen retries */

    kdb_conn *conns;
    size_t nconns;
    uint64_t next_conn_id;

    kdb_req *free_reqs;       /* pool: requests come from slabs */
    void **slabs;
    size_t nslabs;
    size_t reqs_total, reqs_free;

    kdb_req *wq_head, *wq_tail; /* waiting for a worker slot */
    uint64_t nqueued, in_service, stalled;

    kt_resp_limits limits;    /* from max-inline, max-bulk, max-args */
    int64_t applied_seed;     /* cfg.seed when the generators were last seeded */

    kdb_stats st;
    kt_hist h_sched;          /* scheduled delays */
    kt_hist h_actual;         /* actual delays (timer fire - service start) */
    kt_hist h_late;           /* actual - scheduled */
    uint64_t clock_cache;     /* last clock read (req.c clock_now) */
    unsigned clock_uses;
    uint64_t started;         /* loop time at start */
};

/* ---- db.c ---- */
/* Start from a complete configuration (copied), as the kettle-db
 * program (logs "listening on ADDR"). 0 or negative errno. */
int kdb_server_start_cfg(kt_loop *loop, const kdb_cfg *cfg, kdb_server **out);
/* Apply a changed runtime option (after CONFIG SET) to the live state. */
void kdb_server_apply(kdb_server *srv);
/* Install or clear a fault, with its whole-server effects; from: the
 * connection that asked (spared by stop-reading all), or NULL. */
void kdb_server_set_fault(kdb_server *srv, kdb_fault_kind kind, const kdb_fault *f, kdb_conn *from);
void kdb_server_clear_faults(kdb_server *srv);
/* Close conn (mode as kt_stream_close); its requests are dropped. */
void kdb_conn_close(kdb_conn *c, kt_close_mode mode);
/* Pause or resume reading as the backpressure state of c says. */
void kdb_conn_update_reading(kdb_conn *c);

/* ---- req.c ---- */
kdb_req *kdb_req_get(kdb_server *srv);
void kdb_req_put(kdb_server *srv, kdb_req *r);
void kdb_reqs_destroy(kdb_server *srv);
/* Queue a delayed GET of key (bad: the key was not a decimal integer). */
int kdb_submit_get(kdb_conn *c, int64_t key, bool bad);
/* Queue an MGET of the n keys (each parsed here; a key that is not a
 * decimal integer becomes an error element). */
int kdb_submit_mget(kdb_conn *c, const kt_resp_arg *keys, size_t n);
/* Reply with len bytes (copied if they must wait); flags KDB_RF_CLOSE. */
int kdb_reply(kdb_conn *c, const char *data, size_t len, unsigned flags);
/* A static reply (not copied). */
int kdb_reply_static(kdb_conn *c, const char *text, unsigned flags);
/* Close c if its unsent output passed max-output-buffer; true if c is
 * closed (or closing). */
bool kdb_conn_check_output(kdb_conn *c);
/* Write every reply that is due at the head of c's FIFO. */
void kdb_conn_flush(kdb_conn *c);
/* Set up c's own timer (trickle slices, deferred reset). */
void kdb_conn_init_timer(kdb_conn *c);
/* Drop every request of c (timers stopped, worker slots released). */
void kdb_conn_drop_reqs(kdb_conn *c);
/* Start queued requests while worker slots are free. */
void kdb_workers_kick(kdb_server *srv);

/* ---- cmd.c ---- */
/* Execute one command (argc >= 1). argv points into the input. */
void kdb_dispatch(kdb_conn *c, size_t argc, const kt_resp_arg *argv);

/* ---- info.c ---- */
/* The INFO text for section (NULL/"default"/"all"/"everything" or a name),
 * kt_malloc'd in *out. 0 or -ENOMEM. */
int kdb_info(kdb_server *srv, const char *section, size_t seclen, char **out, size_t *outlen);

#endif
