/*
 * kd.h - kettled's shared state: the server (one per process, one loop),
 * its clients and their requests, and the counters INFO reports.
 *
 * Module map:
 *   main.c    command line, start-up, exit
 *   config.c  the option table (conf.h)
 *   server.c  listeners, accepting, limits, idle sweep, reload, drain
 *   client.c  one client: parsing, the FIFO of requests, ordered replies
 *   cmd.c     the command table and the fetch commands (GET, MGET, ...)
 *   cmdinfo.c COMMAND, CLIENT, HELLO, AUTH, CONFIG
 *   info.c    INFO
 *   pool.c, conn.c, hash.c   the backend pool (pool.h)
 *   notify.c  service-manager notifications and inherited sockets
 */
#ifndef KD_KD_H
#define KD_KD_H

#include <time.h>
#include <kettle/kettle.h>
#include "conf.h"
#include "pool.h"

typedef struct kd_server kd_server;
typedef struct kd_client kd_client;
typedef struct kd_req kd_req;
struct kdb_server;

/* Counters for INFO stats (zeroed by CONFIG RESETSTAT). */
typedef struct kd_stats {
    uint64_t connections;    /* accepted */
    uint64_t rejected;       /* refused: maxclients, or while draining */
    uint64_t commands;       /* commands processed */
    uint64_t err_protocol;   /* protocol errors (the client was closed) */
    uint64_t err_unknown;    /* unknown command */
    uint64_t err_arity;      /* wrong number of arguments */
    uint64_t err_auth;       /* NOAUTH and WRONGPASS */
    uint64_t err_other;      /* syntax, limits (too many keys), ... */
    uint64_t err_backend;    /* values answered with a backend error */
    uint64_t nil_values;     /* values answered with nil (no such key) */
    uint64_t timeouts;       /* requests that hit request-timeout */
    uint64_t closed_idle;    /* idle-timeout */
    uint64_t closed_output;  /* max-output-buffer */
    uint64_t closed_query;   /* max-query-buffer */
    uint64_t paused;         /* times reading from a client paused (backpressure) */
} kd_stats;

struct kd_server {
    kt_loop *loop;
    kd_config cfg;             /* in force */
    int argc;                  /* the command line, for reloads */
    char **argv;
    kt_resp_limits lim;        /* from cfg: the request parser's limits */

    kt_listener **ls;
    size_t nls;
    kd_client *head, *tail;    /* every client, least recently active first */
    size_t nclients;
    size_t nclosing;           /* closed clients whose streams have not finished closing */
    uint64_t next_id;

    kd_pool *pool;
    struct kdb_server *embedded; /* the simulated database, when no backend is set */
    char embedded_addr[64];

    kt_future **fs;            /* scratch for the futures of one MGET (max-keys) */
    size_t fs_cap;
    kt_out out;                /* scratch sink handed out by kd_client_out() */
    kd_req *out_req;           /* the request kd_client_out() just parked a reply in */

    kt_timer cron;             /* idle sweep */
    kt_timer drain_timer;      /* shutdown-timeout */
    bool draining;
    uint64_t started_ns;
    time_t started;
    kd_stats st;
};

/* The one server of the process (signal handlers and commands reach it). */
extern kd_server *kd_srv;

/* ---- server.c ---------------------------------------------------------------- */

/* Create the loop, the pool (or the embedded database) and the listeners
 * from srv->cfg. 0 or negative errno (logged). */
int kd_server_start(kd_server *srv);
/* Undo kd_server_start: close everything, run the loop until the streams
 * have closed, free the loop. */
void kd_server_stop(kd_server *srv);
/* Put cfg in force (reload, CONFIG SET): limits, log level, backends.
 * On success srv->cfg is replaced by cfg (ownership moves) and 0 is
 * returned; on failure nothing changed and *why says why. */
int kd_server_apply(kd_server *srv, kd_config *cfg, const char **why);
/* Re-read the config file and the command line (SIGHUP). */
void kd_server_reload(kd_server *srv);
/* Begin the drain (first SIGTERM/SIGINT) or end it now (second one). */
void kd_server_shutdown(kd_server *srv);
/* A client's stream finished closing: when draining, the last one ends
 * the loop. */
void kd_server_client_gone(kd_server *srv);

/* ---- client.c ------------------------------------------------------------------- */

/* A connection accepted by a listener: becomes a client (or is refused). */
void kd_client_accept(kd_server *srv, kt_stream *s);
/* The sink for one immediate reply, keeping request order: the stream
 * itself when no earlier request is pending, else a new request holding
 * the reply. NULL when out of memory (then the client is closed). */
kt_out *kd_client_out(kd_client *c);
/* Send an error reply (printf format, the code first: "ERR ..."). */
void kd_client_error(kd_client *c, const char *fmt, ...) KT_PRINTF(2, 3);
/* Stop reading and close once every pending reply has been sent (QUIT,
 * protocol error, EOF, drain). */
void kd_client_finish(kd_client *c);
void kd_client_close(kd_client *c, kt_close_mode mode);
/* Close every client now (second signal, shutdown-timeout). */
void kd_clients_close_all(kd_server *srv);
/* Drain: stop reading from every client; each closes once answered. */
void kd_clients_finish_all(kd_server *srv);
/* Idle sweep (idle-timeout), run from the server's cron. */
void kd_clients_sweep(kd_server *srv);
/* Clients waiting on the database now (INFO blocked_clients). */
size_t kd_clients_blocked(const kd_server *srv);
/* Free the request free list (exit). */
void kd_reqs_free_all(void);

/* Accessors for other modules. */
uint64_t kd_client_id(const kd_client *c);
const char *kd_client_name(const kd_client *c);
/* Take ownership of name (kt_malloc'd or NULL). */
void kd_client_set_name(kd_client *c, char *name);
bool kd_client_authed(const kd_client *c);
void kd_client_set_authed(kd_client *c, bool yes);
/* One "id=.. addr=.. name=.. age=.. idle=.. pending=.." line into buf. */
void kd_client_describe(const kd_client *c, kt_buf *out);
/* The same for every client (CLIENT LIST). */
void kd_clients_describe_all(const kd_server *srv, kt_buf *out);

/* ---- requests: a client's pending work ---------------------------------------- */

enum kd_req_kind {
    KD_R_BYTES = 0, /* an immediate reply kept in order behind earlier requests */
    KD_R_GET,       /* f: one fetch */
    KD_R_MGET,      /* inner: kt_all over the fetches */
    KD_R_SEQ,       /* inner: kt_sequence; keys copied in out */
    KD_R_ANY,       /* f: kt_race over the fetches */
};

struct kd_req {
    kd_req *next;        /* the client's FIFO, or the free list */
    kd_client *c;        /* NULL once the client has gone (then nobody is answered) */
    kt_future *f;        /* what is awaited: the work, under kt_timeout if request-timeout */
    kt_future *inner;    /* MGET/SEQ: the gather whose items are the per-key results */
    uint32_t n;          /* keys */
    uint8_t kind;        /* enum kd_req_kind */
    bool done;           /* f has settled and its continuation has run */
    kt_buf out;          /* BYTES: the reply; SEQ: the keys, back to back */
    uint32_t *koff;      /* SEQ: n + 1 offsets of the keys in out */
};

/* A request for c from the free list. NULL on ENOMEM. */
kd_req *kd_req_new(kd_client *c, enum kd_req_kind kind);
/* Await f (reference taken over) for r, then append r to its client's
 * FIFO. With request-timeout, f is wrapped in kt_timeout. On ENOMEM r is
 * freed and an error reply sent instead. */
void kd_req_submit(kd_req *r, kt_future *f);
/* Release r and its futures (back to the free list). */
void kd_req_free(kd_req *r);

/* ---- cmd.c / cmdinfo.c -------------------------------------------------------- */

typedef void (*kd_cmd_fn)(kd_client *c, const kt_resp_arg *argv, size_t argc);

typedef struct kd_cmd_arg {
    const char *name;
    const char *type;   /* COMMAND DOCS: key, string, integer, pure-token */
    unsigned flags;     /* KD_ARG_* */
} kd_cmd_arg;
#define KD_ARG_OPTIONAL 0x1u
#define KD_ARG_MULTIPLE 0x2u

typedef struct kd_cmd {
    const char *name;     /* lower case */
    int arity;            /* Redis's convention: n exact, -n at least n (name included) */
    unsigned flags;       /* KD_CMD_* */
    kd_cmd_fn fn;
    const char *group;    /* COMMAND DOCS */
    const char *since;
    const char *summary;
    const kd_cmd_arg *args; /* ends with { NULL } */
    int first_key, last_key, key_step;
    uint64_t calls;       /* INFO commandstats */
} kd_cmd;
#define KD_CMD_NOAUTH  0x1u /* allowed before AUTH */
#define KD_CMD_FETCH   0x2u /* reads from the database */
#define KD_CMD_FAST    0x4u

extern kd_cmd kd_cmds[];
extern const size_t kd_ncmds;

/* Run one parsed request for c. */
void kd_cmd_dispatch(kd_client *c, const kt_resp_req *req);
/* Encode the reply of a settled fetch request into o. */
void kd_cmd_reply(kd_req *r, kt_out *o);
/* The command named (case-insensitive) name, or NULL. */
kd_cmd *kd_cmd_find(const char *name, size_t len);

/* cmdinfo.c */
void kd_cmd_command(kd_client *c, const kt_resp_arg *argv, size_t argc);
void kd_cmd_client(kd_client *c, const kt_resp_arg *argv, size_t argc);
void kd_cmd_hello(kd_client *c, const kt_resp_arg *argv, size_t argc);
void kd_cmd_auth(kd_client *c, const kt_resp_arg *argv, size_t argc);
void kd_cmd_config(kd_client *c, const kt_resp_arg *argv, size_t argc);
/* "ERR wrong number of arguments for 'name' command" */
void kd_reply_arity(kd_client *c, const char *name);

/* ---- info.c ----------------------------------------------------------------------- */

/* INFO [section ...]: the text into out (Redis format). */
void kd_info(kd_server *srv, const kt_resp_arg *sections, size_t n, kt_buf *out);
/* Resident set size in bytes (/proc/self/statm), 0 if unknown. */
uint64_t kd_rss_bytes(void);

#endif
