/*
 * kd.h - kettled's shared state: the server (one per process, one loop,
 * handed to each module), its requests, and the counters INFO reports.
 * kettled is the server core (server.h: clients, parsing, the reply FIFO,
 * limits, the shared commands, the drain) plus the backend pool and the
 * commands that fetch from it.
 *
 * Module map:
 *   main.c    command line, start-up, exit
 *   config.c  the option table (conf.h)
 *   server.c  start and stop, the embedded database, reload (SIGHUP,
 *             CONFIG SET), signals
 *   cmd.c     the command table and the fetch commands (GET, MGET, ...):
 *             requests as deferred replies in the client's FIFO
 *   info.c    INFO
 *   pool.c, fetch.c, conn.c, health.c, poolinfo.c, hash.c   the backend
 *             pool (pool.h; its map is at the top of pool-int.h)
 *   notify.c  service-manager notifications and inherited sockets
 */
#ifndef KD_KD_H
#define KD_KD_H

#include <time.h>
#include <kettle/kettle.h>
#include "conf.h"
#include "pool.h"
#include "server.h"

typedef struct kd_server kd_server;
typedef struct kd_req kd_req;
struct kdb_server;

/* kettled's own counters for INFO stats (zeroed by CONFIG RESETSTAT); the
 * clients' are in the core's ks_stats. */
typedef struct kd_stats {
    uint64_t err_backend;    /* values answered with a backend error */
    uint64_t nil_values;     /* values answered with nil (no such key) */
    uint64_t timeouts;       /* requests that hit request-timeout */
    uint64_t reloads;        /* SIGHUP reloads put in force */
    uint64_t reload_failures; /* SIGHUP reloads refused (running config kept) */
} kd_stats;

/* Fetch commands (enum kd_req_kind), for their latency histograms. */
#define KD_REQ_KINDS 4

struct kd_server {
    ks_server core;            /* clients, limits, shared commands, drain */
    kt_loop *loop;
    kd_config cfg;             /* in force */
    int argc;                  /* the command line, for reloads */
    char **argv;

    kd_pool *pool;
    struct kdb_server *embedded; /* the simulated database, when started without backend */
    char embedded_addr[64];

    kt_future **fs;            /* scratch for the futures of one MGET (max-keys) */
    size_t fs_cap;
    kd_req *free_reqs;         /* requests for reuse */
    size_t nfree_reqs;
    kd_stats st;
    kt_hist req_hist[KD_REQ_KINDS]; /* request latency by kind (metrics.c) */
};

/* ---- server.c ---------------------------------------------------------------- */

/* Create the loop, the pool (or the embedded database) and the listeners
 * from srv->cfg. 0 or negative errno (logged). */
int kd_server_start(kd_server *srv);
/* Undo kd_server_start: close everything, run the loop until the streams
 * have closed, free the loop. */
void kd_server_stop(kd_server *srv);
/* Put cfg in force (reload, CONFIG SET): limits, log level, backends.
 * On success srv->cfg is replaced by cfg (ownership moves) and 0 is
 * returned; on failure nothing changed and *why says why. Switching
 * between the embedded database and configured backends is refused: the
 * embedded one is for a kettled started without any backend. */
int kd_server_apply(kd_server *srv, kd_config *cfg, const char **why);
/* Re-read the config file and the command line (SIGHUP). */
void kd_server_reload(kd_server *srv);

/* ---- requests: a client's fetches (cmd.c) ------------------------------------- */

enum kd_req_kind {
    KD_R_GET = 1,   /* f: one fetch */
    KD_R_MGET,      /* inner: kt_all over the fetches */
    KD_R_SEQ,       /* inner: kt_sequence; keys copied in keys */
    KD_R_ANY,       /* f: kt_race over the fetches */
};

struct kd_req {
    ks_slot slot;        /* the reply owed in the client's FIFO (slot.c NULL: client gone) */
    kd_req *next;        /* the free list */
    kd_server *srv;
    kt_future *f;        /* what is awaited: the work, under kt_timeout if request-timeout */
    kt_future *inner;    /* MGET/SEQ: the gather whose items are the per-key results */
    uint32_t n;          /* keys */
    uint8_t kind;        /* enum kd_req_kind */
    bool done;           /* f has settled and its continuation has run */
    kt_buf keys;         /* SEQ: the keys, back to back */
    uint32_t *koff;      /* SEQ: n + 1 offsets of the keys in keys */
    uint64_t started;    /* loop time it was parsed */
};

/* The command table (ends with { NULL }); the shared commands are the core's. */
extern const ks_cmd kd_cmds[];
/* The core's hooks for kettled's deferred replies. */
void kd_emit(ks_conn *c, ks_slot *s, kt_out *o);
void kd_drop(ks_slot *s);
/* Free the request free list (exit). */
void kd_reqs_free_all(kd_server *srv);

/* The kettled server of a client. */
static inline kd_server *kd_of(const ks_conn *c)
{
    return (kd_server *)c->srv->data;
}

/* ---- metrics.c (metrics-listen) -------------------------------------------------------- */

/* Empty the request latency histograms (start, CONFIG RESETSTAT). */
void kd_metrics_init(kd_server *srv);
/* r's reply is ready: record its latency. */
void kd_metrics_request_done(kd_req *r);
/* The core's hook: kettled's families. */
void kd_metrics(ks_server *core, struct kt_metrics *m, const char *prefix);

/* ---- info.c ----------------------------------------------------------------------- */

extern const ks_info_section kd_info_sections[];

#endif
