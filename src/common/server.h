/*
 * server.h - the RESP server core of kettled and kettle-db (prefix ks_).
 *
 * Both daemons are this core plus a command table, their own state and a
 * few hooks (ks_daemon). The core owns everything a client touches:
 *
 *   listener ─accept─▶ ks_conn ─bytes─▶ parser (per connection, with the
 *      │ maxclients      │               limits) ─argv─▶ command table:
 *      │                 │                               unknown, arity, auth
 *      │                 ▼                                     │
 *      │   FIFO of replies owed, in request order:             ▼
 *      │   head [deferred: daemon fills it][bytes ✓][deferred ✓] tail
 *      │     an immediate reply goes straight to the stream when nothing
 *      │     is owed before it, else it waits in a bytes slot; a deferred
 *      │     slot is written (by the daemon's emit hook) once it is ready
 *      │     and everything before it has left
 *      ▼
 *   idle sweep, drain on SIGTERM, client list, INFO/CONFIG/CLIENT/COMMAND
 *
 * Every byte a client can make the server hold has a limit (ks_config):
 * what it sent and is not parsed yet (max-query-buffer), what the daemon
 * holds for its requests in flight (max-pending, max-pending-bytes: reading
 * pauses), and what waits for it to read (max-output-buffer: closed past
 * it; reading pauses above the high-water mark). Replies parked in the
 * FIFO count toward the output limit as they are written.
 *
 * A daemon: embed a ks_config in its config struct and list the shared
 * options with the KS_OPT_* macros; fill a static ks_daemon (name, command
 * table, hooks); ks_server_init(), then ks_server_listen(). A command
 * answers what it knows at once with ks_reply()/ks_error(), or appends a
 * slot of its own with ks_defer() and marks it ks_slot_ready() later (the
 * emit hook writes it when it is due). On SIGTERM, ks_server_shutdown().
 *
 * Everything runs on the loop's thread. Files: server.c (life, listeners,
 * accept, cron, drain), server-conn.c (a connection: read path, FIFO,
 * output), server-cmd.c (dispatch and the connection commands),
 * server-command.c (COMMAND), server-config.c (CONFIG), server-info.c
 * (INFO helpers).
 */
#ifndef KETTLE_SERVER_H
#define KETTLE_SERVER_H

#include <stddef.h>
#include <time.h>
#include <kettle/kettle.h>
#include "opt.h"

typedef struct ks_server ks_server;
typedef struct ks_conn ks_conn;
typedef struct ks_slot ks_slot;
struct kt_metrics;         /* metrics.h */
struct kt_metrics_server;

/* Exit status of a daemon whose drain ended (shutdown-timeout, second
 * signal) with requests that were sent and not answered. */
#define KS_EXIT_UNANSWERED 3

/* ---- configuration: the options every server has --------------------------- */

/* Embedded in each daemon's config struct; the KS_OPT_* entries below put
 * its fields in the daemon's option table, so a shared option is declared
 * once, with the daemon's default. */
typedef struct ks_config {
    kt_opt_list listen;          /* ADDR:PORT or unix:PATH, repeatable */
    char *io;                    /* auto, io_uring, epoll, libevent */
    uint64_t io_batch_wait;      /* ns a busy loop's wait may gather completions (0: off) */
    char *log_level;
    int64_t backlog;
    bool reuseport;              /* SO_REUSEPORT on the listening sockets */
    int64_t maxclients;
    uint64_t max_inline;         /* parser: one inline command line */
    uint64_t max_bulk;           /* parser: one bulk argument */
    int64_t max_args;            /* parser: arguments of one command */
    uint64_t max_query_buffer;   /* unparsed input kept for one client */
    uint64_t max_output_buffer;  /* unsent replies of one client: closed past it */
    int64_t max_pending;         /* requests awaiting their reply: reading pauses */
    uint64_t max_pending_bytes;  /* bytes held for requests in flight (0: none) */
    uint64_t max_clients_memory; /* all clients together: the largest closed past it */
    uint64_t idle_timeout;       /* 0: never */
    uint64_t shutdown_timeout;   /* drain bound (0: none) */
    char *password;              /* requirepass (kettled), admin-password (kettle-db) */
    bool admin;                  /* KS_AUTH_ADMIN: admin commands allowed at all */
    char *metrics_listen;        /* Prometheus endpoint ADDR:PORT (NULL or "": off) */
} ks_config;

#define KS_OFF(T, m, f) (offsetof(T, m) + offsetof(ks_config, f))

#define KS_OPT_LISTEN(T, m, def)                                                              \
    { "listen", KT_OPT_LIST, KS_OFF(T, m, listen), def,                                       \
      "address to serve clients on: ADDR:PORT, [IPV6]:PORT or unix:PATH (port 0: ephemeral)", \
      0, 0, 0, kt_opt_check_addr, 0 }
#define KS_OPT_IO(T, m)                                                                        \
    { "io", KT_OPT_STR, KS_OFF(T, m, io), "auto",                                              \
      "I/O backend: auto (io_uring, else epoll), io_uring, epoll, libevent", 0, 0, 0,          \
      kt_opt_check_io, 0 }
/* Completions a batch wait gathers at most (kt_loop_set_batch_wait). */
#define KS_BATCH_EVENTS 32
#define KS_OPT_IO_BATCH_WAIT(T, m, def)                                                        \
    { "io-batch-wait", KT_OPT_DURATION, KS_OFF(T, m, io_batch_wait), def,                      \
      "while the loop is busy, let the kernel gather up to 32 completions for at most this "  \
      "long (10ms at most, and never past the next timer) before waking it: fewer wake-ups, " \
      "more work per wake-up (in kettled, larger batches to the database), for up to this "   \
      "much more latency per wake-up under load (an idle loop wakes at once; while waits "     \
      "gather little, most are skipped). For many clients and a fast database when CPU is "   \
      "short (100us); io_uring on Linux 6.12 or later, elsewhere ignored; 0: off", 0, 0,       \
      KT_USEC(1), kt_opt_check_batch_wait, KT_OPT_RUNTIME }
#define KS_OPT_LOG_LEVEL(T, m)                                                                 \
    { "log-level", KT_OPT_STR, KS_OFF(T, m, log_level), "notice",                              \
      "log level: error, warning, notice, info, debug", 0, 0, 0, kt_opt_check_level,           \
      KT_OPT_RUNTIME }
#define KS_OPT_BACKLOG(T, m)                                                                   \
    { "backlog", KT_OPT_INT, KS_OFF(T, m, backlog), "4096", "listen(2) backlog of each listener", \
      1, 1 << 20, 0, NULL, 0 }
#define KS_OPT_REUSEPORT(T, m)                                                                 \
    { "reuseport", KT_OPT_BOOL, KS_OFF(T, m, reuseport), "no",                                 \
      "set SO_REUSEPORT on the listening TCP sockets, so that several instances can share "   \
      "a port (the kernel spreads connections over them)", 0, 0, 0, NULL, 0 }
#define KS_OPT_METRICS_LISTEN(T, m, example)                                                   \
    { "metrics-listen", KT_OPT_STR, KS_OFF(T, m, metrics_listen), NULL,                        \
      "serve Prometheus metrics (GET /metrics, HTTP) on this ADDR:PORT, e.g. " example ", "    \
      "on the daemon's own loop: at most 16 scrapers at once, 5 s to send the request and "    \
      "10 s to take the answer; a change moves the endpoint (the old one stays when the new "  \
      "address cannot be bound); empty: off", 0, 0, 0, ks_check_metrics_addr, KT_OPT_RUNTIME }
/* maxclients through max-pending, in this order, with the daemon's defaults. */
#define KS_OPT_LIMITS(T, m, clients_def, output_def, pending_def)                                       \
    { "maxclients", KT_OPT_INT, KS_OFF(T, m, maxclients), clients_def,                          \
      "clients at once; one more gets '-ERR max number of clients reached' and is closed",     \
      1, 10000000, 0, NULL, KT_OPT_RUNTIME },                                                  \
    { "max-inline", KT_OPT_SIZE, KS_OFF(T, m, max_inline), "64kb",                             \
      "longest inline command line ('Protocol error: too big inline request')", 0, 0, 0,       \
      NULL, KT_OPT_RUNTIME },                                                                  \
    { "max-bulk", KT_OPT_SIZE, KS_OFF(T, m, max_bulk), "1mb",                                  \
      "longest bulk argument ('Protocol error: invalid bulk length')", 0, 0, 0, NULL,          \
      KT_OPT_RUNTIME },                                                                        \
    { "max-args", KT_OPT_INT, KS_OFF(T, m, max_args), "65536",                                 \
      "arguments in one command ('Protocol error: invalid multibulk length')", 1, 1 << 24, 0,  \
      NULL, KT_OPT_RUNTIME },                                                                  \
    { "max-query-buffer", KT_OPT_SIZE, KS_OFF(T, m, max_query_buffer), "8mb",                  \
      "unparsed input kept for one client (a request in the making); past it the client is "   \
      "closed", 0, 0, 0, NULL, KT_OPT_RUNTIME },                                               \
    { "max-output-buffer", KT_OPT_SIZE, KS_OFF(T, m, max_output_buffer), output_def,               \
      "unsent replies kept for a client that does not read, replies waiting behind a slower "  \
      "one included; past it the client is closed", 0, 0, 0, NULL, KT_OPT_RUNTIME },           \
    { "max-pending", KT_OPT_INT, KS_OFF(T, m, max_pending), pending_def,                           \
      "requests of one client awaiting their reply; past it reading from the client pauses",   \
      1, 100000000, 0, NULL, KT_OPT_RUNTIME },                                                 \
    { "max-clients-memory", KT_OPT_SIZE, KS_OFF(T, m, max_clients_memory), "512mb",            \
      "bytes all clients together make the server hold (unparsed input, unsent replies, "     \
      "requests in flight); past it, checked every 100 ms, the clients holding the most are "  \
      "closed until the rest fit; 0: no bound", 0, 0, 0, NULL, KT_OPT_RUNTIME }
#define KS_OPT_MAX_PENDING_BYTES(T, m, def, help)                                              \
    { "max-pending-bytes", KT_OPT_SIZE, KS_OFF(T, m, max_pending_bytes), def, help, 0, 0, 0,   \
      NULL, KT_OPT_RUNTIME }
#define KS_OPT_IDLE_TIMEOUT(T, m, def)                                                         \
    { "idle-timeout", KT_OPT_DURATION, KS_OFF(T, m, idle_timeout), def,                        \
      "close a client that completed no request for this long and has none in flight "        \
      "(a bare number: seconds); 0: never", 0, 0, KT_SEC(1), NULL, KT_OPT_RUNTIME }
#define KS_OPT_SHUTDOWN_TIMEOUT(T, m, def)                                                     \
    { "shutdown-timeout", KT_OPT_DURATION, KS_OFF(T, m, shutdown_timeout), def,                \
      "on SIGTERM/SIGINT: how long the requests clients have sent may take to be answered "   \
      "before the exit (then exit status 3 if some were not); 0: no bound", 0, 0, KT_MSEC(1),  \
      NULL, KT_OPT_RUNTIME }

/* ---- commands ---------------------------------------------------------------- */

typedef void (*ks_cmd_fn)(ks_conn *c, const kt_resp_arg *argv, size_t argc);

typedef struct ks_arg {
    const char *name;
    const char *type;   /* COMMAND DOCS: key, string, integer, pure-token */
    unsigned flags;     /* KS_ARG_* */
} ks_arg;
#define KS_ARG_OPTIONAL 0x1u
#define KS_ARG_MULTIPLE 0x2u

typedef struct ks_cmd {
    const char *name;     /* lower case */
    int arity;            /* Redis's convention: n exact, -n at least n (name included) */
    unsigned flags;       /* KS_CMD_* */
    ks_cmd_fn fn;         /* runs after the arity and auth checks */
    const char *group;    /* COMMAND DOCS */
    const char *since;
    const char *summary;
    const ks_arg *args;   /* ends with { NULL } */
    int first_key, last_key, key_step;
} ks_cmd;
#define KS_CMD_NOAUTH   0x1u /* allowed before AUTH */
#define KS_CMD_READONLY 0x2u /* reads data (COMMAND INFO flag) */
#define KS_CMD_FAST     0x4u
#define KS_CMD_ADMIN    0x8u /* KS_AUTH_ADMIN: needs the password (and admin on) */

/* Whose commands the password guards. */
enum ks_auth {
    KS_AUTH_ALL = 0, /* every command but the NOAUTH ones (Redis's requirepass) */
    KS_AUTH_ADMIN,   /* only the ADMIN ones; `admin no` refuses them outright */
};

/* ---- the daemon's side ------------------------------------------------------- */

/* What a daemon brings. Hooks may be NULL unless said otherwise. */
typedef struct ks_daemon {
    const char *name;          /* "kettled": HELLO, INFO server_name */
    const ks_cmd *cmds;        /* its commands, ending with { NULL } (the shared ones
                                  are the core's) */
    enum ks_auth auth;
    size_t conn_size;          /* sizeof its connection struct, ks_conn first */
    const kt_opt *options;     /* CONFIG GET/SET over the daemon's live config */
    size_t cfg_size;
    /* Reading from a client pauses once its unsent output passes
     * max-output-buffer / pause_divisor (at most 1 MiB): 4 leaves room for
     * what is in flight, so a slow reader is paused, not closed; 1 lets a
     * client that does not read reach the limit and be closed. 0 means 1. */
    unsigned pause_divisor;
    /* Before a connection is accepted: false refuses it (reset at once). */
    bool (*pre_accept)(ks_server *srv);
    /* A new connection: false means do not start reading yet (the daemon
     * calls ks_conn_start later). */
    bool (*on_accept)(ks_conn *c);
    /* The connection is closing (no more callbacks for it): release the
     * daemon's per-connection state. */
    void (*on_close)(ks_conn *c);
    /* Required with deferred slots: s is due; write its reply into o (the
     * stream) or act on it (a fault may close c or hold its output), then
     * free s (the core is done with it). */
    void (*emit)(ks_conn *c, ks_slot *s, kt_out *o);
    /* Required with deferred slots: c is gone and s was never emitted; s->c
     * is NULL. Cancel the work behind it and free s, now or when the work
     * ends. */
    void (*drop)(ks_slot *s);
    /* True when some reply owed to c will never be sent (a fault): c is
     * closed at once on EOF and at the drain, not counted as lost. */
    bool (*stuck)(ks_conn *c);
    /* CONFIG SET: next is a full copy of the config with the new values.
     * Validate and put it in force: on 0 its contents are the daemon's
     * (the core frees only the shell); on error *why says why and the
     * core frees it. */
    int (*config_apply)(ks_server *srv, void *next, const char **why);
    /* CONFIG RESETSTAT: zero the daemon's own counters. */
    void (*resetstat)(ks_server *srv);
    /* The drain is over: no client is left. NULL: stop the loop. */
    void (*drained)(ks_server *srv);
    /* metrics-listen: add the daemon's own families to m after the core's,
     * their names starting with prefix ("kettled_"). */
    void (*metrics)(ks_server *srv, struct kt_metrics *m, const char *prefix);
} ks_daemon;

/* ---- counters (INFO, and the metrics built from the same struct) --------------- */

typedef struct ks_stats {
    uint64_t connections;    /* accepted */
    uint64_t rejected;       /* refused: maxclients, or while draining */
    uint64_t commands;       /* commands processed */
    uint64_t err_protocol;   /* protocol errors (then the client is closed) */
    uint64_t err_unknown;    /* unknown command */
    uint64_t err_arity;      /* wrong number of arguments */
    uint64_t err_noauth;     /* NOAUTH */
    uint64_t err_wrongpass;  /* WRONGPASS */
    uint64_t err_other;      /* other error replies of commands */
    uint64_t closed_idle;    /* idle-timeout */
    uint64_t closed_output;  /* max-output-buffer */
    uint64_t closed_query;   /* max-query-buffer */
    uint64_t closed_memory;  /* max-clients-memory */
    uint64_t paused;         /* times reading from a client paused (backpressure) */
    uint64_t trims;          /* times memory was given back to the system */
    uint64_t yields;         /* times a client used its slice of an iteration and
                                waited for the next (KS_CONN_SLICE) */
} ks_stats;

/* What the drain could not finish (shutdown-timeout, second signal). */
typedef struct ks_lost {
    uint64_t clients;        /* clients closed with requests unanswered or unread */
    uint64_t requests;       /* requests parsed and not answered */
    uint64_t unread_bytes;   /* input received and not read, or not parsed */
} ks_lost;

enum ks_state { KS_RUNNING = 0, KS_DRAINING, KS_DRAINED };

typedef struct ks_listener {
    ks_server *srv;
    kt_listener *l;            /* NULL while closed */
    kt_addr addr;              /* bound address (the port chosen for :0) */
} ks_listener;

/* A byte slot: an immediate reply waiting behind earlier ones. */
typedef struct ks_bslot ks_bslot;

/* Loop lag: how late the server's cron tick runs (server-lag.c). */
typedef struct ks_lag {
    uint64_t due;              /* loop time the armed tick is due */
    uint64_t last_ns;          /* the last tick's lateness */
    uint64_t avg_ns;           /* smoothed (exponential, about 1 s) */
    uint64_t max_ns[2];        /* the largest in this window and the last one */
    uint64_t window_start;     /* loop time the current window began */
    uint64_t ticks;            /* ticks so far */
} ks_lag;

/* One server. Fields are for reading by the daemon (INFO, metrics). */
struct ks_server {
    kt_loop *loop;
    const ks_daemon *d;
    void *data;                /* the daemon's server object */
    void *cfg;                 /* the daemon's live config (d->options) */
    const ks_config *sc;       /* its shared part */
    const char *listen_note;   /* log line per listener: "listening on" */
    kt_resp_limits lim;        /* the parser's, from sc */
    size_t high_water;         /* output mark above which reading pauses */

    ks_listener *ls;
    size_t nls;
    bool accept_paused;

    ks_conn *head, *tail;      /* every client, least recently active first */
    size_t nclients;
    ks_conn *closing;          /* closed, stream not yet finished closing */
    size_t nclosing;
    uint64_t next_id;
    size_t ncmds;              /* the daemon's commands */
    uint64_t *calls;           /* per command: the daemon's, then the shared ones */

    ks_bslot *free_bslots;     /* byte slots for reuse */
    size_t nfree_bslots;
    kt_out out;                /* the sink ks_reply() hands out */

    ks_conn *yielded;          /* clients that used their slice in this iteration */
    kt_defer resume;           /* end of the iteration: they read again */
    kt_timer cron;             /* loop lag; idle sweep, memory trim */
    kt_timer drain_tick;       /* drain: closes clients that are done */
    kt_timer drain_timer;      /* shutdown-timeout */
    enum ks_state state;
    ks_lost lost;
    uint64_t rss_base;         /* resident size after the last trim (or at start) */
    bool trim_quiet;           /* the clients held next to nothing at the last cron tick */
    uint64_t batch_wait;       /* io-batch-wait in effect (0: off or not supported) */
    bool batch_wait_noted;     /* "not supported" logged */
    uint64_t started_ns;       /* loop time at start */
    time_t started;
    ks_stats st;
    ks_lag lag;                /* loop lag (server-lag.c) */
    struct kt_metrics_server *metrics; /* metrics-listen endpoint, or NULL */
    char *metrics_addr;        /* the address it listens on (as configured) */
};

/* Connection flags (c->flags). */
#define KS_C_AUTHED   0x001u /* AUTH passed (or no password) */
#define KS_C_FINISH   0x002u /* close once every reply owed has left */
#define KS_C_PAUSED   0x004u /* reading stopped for backpressure */
#define KS_C_FROZEN   0x008u /* reading stopped by the daemon (ks_conn_freeze) */
#define KS_C_HOLD     0x010u /* output held by the daemon (ks_conn_hold) */
#define KS_C_NOREAD   0x020u /* input read and dropped (closing after replies) */
#define KS_C_CLOSED   0x040u /* ks_conn_close called */
#define KS_C_IDLE     0x080u /* not reading yet (on_accept said later) */
#define KS_C_PARTIAL  0x100u /* the input kept is the start of a request */
#define KS_C_YIELD    0x200u /* used its slice: reads again next iteration */

/*
 * Fairness: request bytes one client may have dispatched in one loop
 * iteration. Past it the client yields: its reading stops until the end of
 * the iteration and what it sent waits in its stream for the next one, so
 * a client pipelining large requests holds the loop for one slice (and one
 * request: the first of an iteration always goes), not for all it sent.
 */
#define KS_CONN_SLICE (64u << 10)

/* One client connection. The daemon's struct starts with it. */
struct ks_conn {
    ks_server *srv;            /* NULL once the server is gone */
    kt_stream *s;
    ks_conn *prev, *next;      /* srv's list, least recently active first */
    ks_slot *head, *tail;      /* replies owed, in request order */
    uint32_t pending;          /* slots in the FIFO */
    uint16_t flags;            /* KS_C_* */
    uint8_t quiet;             /* drain: ticks in a row with nothing to do */
    size_t held;               /* bytes of immediate replies parked in the FIFO */
    size_t pending_bytes;      /* bytes held for requests in flight (ks_slot_hold) */
    uint64_t id;
    uint64_t created;          /* loop time */
    uint64_t last;             /* loop time of the last complete request */
    char *name;                /* CLIENT SETNAME */
    kt_resp_req *req;          /* this connection's parser state, from its first
                                  byte on (an idle client holds none) */
    ks_conn *ynext;            /* srv->yielded */
    uint32_t slice_iter;       /* the loop iteration slice_used counts in (low bits) */
    uint32_t slice_used;       /* request bytes dispatched in it (< 2 slices) */
};

/* A reply owed, in the FIFO. A daemon's deferred request starts with it. */
struct ks_slot {
    ks_slot *next;
    ks_conn *c;                /* NULL once the connection has gone */
    size_t hold;               /* bytes counted in c->pending_bytes */
    bool ready;                /* the reply can be written when due */
    bool bytes;                /* a core byte slot (an immediate reply) */
};

/* ---- the server (server.c) ------------------------------------------------------- */

/* Set up srv on loop for daemon d. data: the daemon's object; cfg: its live
 * config, sc: the ks_config inside it (both must stay at their address).
 * Nothing listens yet. 0 or -ENOMEM. */
int ks_server_init(ks_server *srv, kt_loop *loop, const ks_daemon *d, void *data, void *cfg,
                   const ks_config *sc);
/* The shared options changed (reload, CONFIG SET): parser limits,
 * watermarks, paused clients that may read again. */
void ks_server_apply(ks_server *srv);
/* Listen on the inherited sockets fds (socket activation; the server owns
 * them from then on), or when nfds is 0 on every `listen` address. Logs
 * "<listen_note> ADDR" per listener. 0 or negative errno (logged). */
int ks_server_listen(ks_server *srv, const int *fds, size_t nfds);
/* Close every listener (their addresses are kept). */
void ks_server_close_listeners(ks_server *srv);
/* Listen again on the addresses of the closed listeners (not while
 * draining). 0 or the first error. */
int ks_server_reopen_listeners(ks_server *srv);
/* Stop or resume accepting (connections wait in the kernel's backlog). */
void ks_server_pause_accept(ks_server *srv, bool pause);
/* The bound address of listener i. 0 or -ENOENT. */
int ks_server_addr(const ks_server *srv, size_t i, kt_addr *out);
/* Take s as a client, as a listener does (tests use it directly). */
void ks_server_adopt(ks_server *srv, kt_stream *s);
/*
 * Shutdown. The first call starts the drain: listeners close; each client
 * goes on being read (with backpressure) and answered until it has sent
 * nothing more and every reply has left, then it is closed; when none is
 * left, d->drained runs. A second call (second signal), or
 * shutdown-timeout, closes the clients left and counts what they lose in
 * srv->lost (logged), then d->drained runs.
 */
void ks_server_shutdown(ks_server *srv);
/* Close everything now (listeners, clients with KT_CLOSE_NOW, timers) and
 * release srv's memory. Streams finish closing in later iterations; they
 * no longer refer to srv. */
void ks_server_free(ks_server *srv);
/* Clients waiting on a deferred reply at the head of their FIFO. */
size_t ks_server_blocked(const ks_server *srv);
/* Bytes clients make the server hold now: unparsed input, unsent output
 * (parked replies included), bytes held for requests in flight. */
void ks_server_client_bytes(const ks_server *srv, uint64_t *query, uint64_t *output,
                            uint64_t *pending);
/* Give freed memory back to the system (malloc_trim) when the process has
 * grown well past its size after the last trim and the clients have held
 * next to nothing for two cron ticks (run by the cron every 500 ms). True
 * if it did. */
bool ks_server_trim(ks_server *srv);
/* Bytes client c makes the server hold (as ks_server_client_bytes counts). */
uint64_t ks_conn_bytes(const ks_conn *c);
/* max-clients-memory: while the clients together hold more, close the one
 * holding the most (logged, counted). Run by the cron at every tick. The
 * number of clients closed. */
size_t ks_server_evict(ks_server *srv);

/* ---- loop lag and metrics (server-lag.c, server-metrics.c) --------------------------- */

/* Loop lag in ns: smoothed, and the largest over the last 10 to 20 s. */
uint64_t ks_lag_avg(const ks_server *srv);
uint64_t ks_lag_max(const ks_server *srv);
/* kt_opt check of metrics-listen: empty or ADDR:PORT. */
int ks_check_metrics_addr(const char *v, const char **why);
/*
 * metrics-listen, in two steps so that a daemon can apply a new config
 * all or nothing: ks_metrics_prepare opens the endpoint at addr when it
 * differs from the one in force (NULL or "": none) into *next, logging and
 * setting *why on failure (then nothing changed); ks_metrics_commit puts
 * it in force (closing the old one), ks_metrics_abort drops it. At start,
 * prepare then commit. ks_server_free closes the endpoint.
 */
typedef struct ks_metrics_change {
    bool change;               /* addr differs from the one in force */
    struct kt_metrics_server *ms; /* the new endpoint (NULL: off) */
    char *addr;
} ks_metrics_change;
int ks_metrics_prepare(ks_server *srv, const char *addr, ks_metrics_change *next,
                       const char **why);
void ks_metrics_commit(ks_server *srv, ks_metrics_change *next);
void ks_metrics_abort(ks_metrics_change *next);

/* ---- a connection (server-conn.c) ------------------------------------------------- */

/* The sink for an immediate reply, keeping request order: the stream when
 * nothing is owed before it, else a byte slot in the FIFO (its bytes count
 * toward max-output-buffer as they are written). NULL when c is closed or
 * out of memory (then c is closed). Valid until the next ks_reply call. */
kt_out *ks_reply(ks_conn *c);
/* An error reply (printf format, the code first: "ERR ..."), counted in
 * the server's err_other. */
void ks_error(ks_conn *c, const char *fmt, ...) KT_PRINTF(2, 3);
/* The same, not counted (the caller counts it). */
void ks_error_quiet(ks_conn *c, const char *fmt, ...) KT_PRINTF(2, 3);
/* Common immediate replies. */
void ks_reply_ok(ks_conn *c);
void ks_reply_int(ks_conn *c, int64_t v);
void ks_reply_bulk(ks_conn *c, const void *p, size_t n);
/* An array of simple strings (HELP texts), NULL-terminated. */
void ks_reply_lines(ks_conn *c, const char *const *lines);

/* Append the daemon's slot s to c's FIFO (not ready yet). */
void ks_defer(ks_conn *c, ks_slot *s);
/* s holds bytes on its client's behalf (keys sent to a database):
 * counted toward max-pending-bytes until s is emitted or dropped. */
void ks_slot_hold(ks_slot *s, size_t bytes);
/* s's reply can be written: now if s is at the head of the FIFO (then the
 * settled slots behind it follow), else when everything before it has
 * left. The daemon must not touch s after this call if s->c is set. */
void ks_slot_ready(ks_slot *s);

/* Stop reading; close once every reply owed has left (QUIT). */
void ks_conn_finish(ks_conn *c);
/* Close now (mode as kt_stream_close); the FIFO is dropped. Idempotent. */
void ks_conn_close(ks_conn *c, kt_close_mode mode);
/* Parse nothing more from c: its input is read and dropped. */
void ks_conn_noread(ks_conn *c);
/* Stop or resume reading c regardless of backpressure (its input waits in
 * the kernel). */
void ks_conn_freeze(ks_conn *c, bool on);
/* Hold or release c's output: while held, nothing from the FIFO is
 * written and immediate replies wait in it. Releasing writes what is due. */
void ks_conn_hold(ks_conn *c, bool on);
/* Start reading a connection on_accept did not start. */
void ks_conn_start(ks_conn *c);
/* Write the settled replies at the head of c's FIFO (after a release). */
void ks_conn_flush(ks_conn *c);
/* Pause or resume reading as c's backpressure state says. */
void ks_conn_update_reading(ks_conn *c);
/* One "id=.. addr=.. name=.. age=.. idle=.. ..." line (CLIENT LIST). */
void ks_conn_describe(const ks_conn *c, kt_buf *out);

/* ---- commands (server-cmd.c, server-command.c, server-config.c) ---------------------- */

/* Run one parsed request: lookup (unknown command), arity, auth, then the
 * command. Called by the read path. */
void ks_dispatch(ks_conn *c, const kt_resp_arg *argv, size_t argc);
/* The command named name (any case), or NULL; *index (may be NULL) gets
 * its position in srv->calls. */
const ks_cmd *ks_cmd_find(const ks_server *srv, const char *name, size_t len, size_t *index);
/* Commands in all (the daemon's and the shared ones), and the i-th. */
size_t ks_cmd_count(const ks_server *srv);
const ks_cmd *ks_cmd_at(const ks_server *srv, size_t i);
/* "ERR wrong number of arguments for 'name' command", counted. */
void ks_reply_arity(ks_conn *c, const char *name);
/* Case-insensitive comparison of an argument with s. */
bool ks_arg_is(const kt_resp_arg *a, const char *s);

/* Shared commands a daemon's table does not list (the core's own). */
void ks_cmd_command(ks_conn *c, const kt_resp_arg *argv, size_t argc);
void ks_cmd_config(ks_conn *c, const kt_resp_arg *argv, size_t argc);

/* ---- INFO (server-info.c) ---------------------------------------------------------------- */

/* One INFO section: "# title" then fn's lines. */
typedef struct ks_info_section {
    const char *name;          /* lower case: INFO name */
    const char *title;         /* "Server" */
    void (*fn)(ks_server *srv, kt_buf *out);
} ks_info_section;

/* INFO [section ...] over the daemon's sections (ending with { NULL }):
 * none, "default", "all" or "everything" give them all; unknown ones give
 * nothing. Replies with the text. */
void ks_info(ks_conn *c, const kt_resp_arg *argv, size_t argc, const ks_info_section *secs);
/* Append one formatted "key:value\r\n" line (or any text, up to 2047
 * bytes) to out. */
void ks_info_add(kt_buf *out, const char *fmt, ...) KT_PRINTF(2, 3);
/* The common lines of the sections (no title): */
void ks_info_server(ks_server *srv, kt_buf *out);   /* server_name, version, io_backend, pid, listening, uptime */
void ks_info_clients(ks_server *srv, kt_buf *out);  /* connected, maxclients, blocked, paused, rejected, ... */
void ks_info_memory(ks_server *srv, kt_buf *out);   /* used_memory_rss, client buffers, trims */
void ks_info_stats(ks_server *srv, kt_buf *out);    /* connections, commands, errors, limits */
void ks_info_commandstats(ks_server *srv, kt_buf *out);
void ks_info_loop(ks_server *srv, kt_buf *out);     /* io_backend, iterations, timers, streams */
/* "cmd_NAME:calls" for every command. */
void ks_info_calls(ks_server *srv, kt_buf *out);
/* Resident set size in bytes (/proc/self/statm), 0 if unknown. */
uint64_t ks_rss_bytes(void);

#endif
