/*
 * config.c - kettled's option table. Each option has the same name on the
 * command line (--name) and in the config file (name = value); the table
 * also renders --help and conf/kettled.conf (kettled --write-conf), so the
 * documentation cannot drift from the code. Options marked reloadable take
 * effect on SIGHUP and through CONFIG SET; the others need a restart.
 */
#include "config.h"
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <kettle/kettle.h>
#include "conf.h"
#include "latency.h"
#include "pool.h"

#define O(f) offsetof(kd_config, f)
#define RT KT_OPT_RUNTIME

static int check_name_value(const char *v, const char **why)
{
    const char *sp = strchr(v, ' ');
    if (sp == NULL || sp == v || sp[1] == '\0') {
        *why = "expected NAME VALUE (a kettle-db option and its value)";
        return -EINVAL;
    }
    return 0;
}

const kt_opt kd_options[] = {
    { "config", KT_OPT_STR, O(config), NULL, "read options from this file first (-c)",
      0, 0, 0, NULL, KT_OPT_NOFILE },
    { "check-config", KT_OPT_BOOL, O(check_config), "no",
      "validate the configuration, print the result and exit (0 valid, 1 invalid)",
      0, 0, 0, NULL, KT_OPT_NOFILE },
    { "write-conf", KT_OPT_BOOL, O(write_conf), "no",
      "print a config file documenting every option with its default, and exit",
      0, 0, 0, NULL, KT_OPT_NOFILE },

    KS_OPT_LISTEN(kd_config, srv, "127.0.0.1:7379"),
    KS_OPT_IO(kd_config, srv),
    KS_OPT_IO_BATCH_WAIT(kd_config, srv, "0"),
    KS_OPT_LOG_LEVEL(kd_config, srv),
    KS_OPT_BACKLOG(kd_config, srv),
    KS_OPT_REUSEPORT(kd_config, srv),
    KS_OPT_METRICS_LISTEN(kd_config, srv, "127.0.0.1:9379"),

    KS_OPT_LIMITS(kd_config, srv, "20000", "32mb", "1024"),
    KS_OPT_MAX_PENDING_BYTES(kd_config, srv, "4mb",
      "bytes of keys one client's requests in flight hold (sent to or queued for the "
      "database); past it reading from the client pauses. A single request larger than it is "
      "still served when it is the client's only one; 0: no bound"),
    { "max-keys", KT_OPT_INT, O(max_keys), "1024",
      "keys in one MGET, MGETSEQ or MGETANY; more get an error", 1, 1 << 20, 0, NULL, RT },
    KS_OPT_IDLE_TIMEOUT(kd_config, srv, "300s"),
    { "request-timeout", KT_OPT_DURATION, O(request_timeout), "5s",
      "deadline of a request: what is still out is cancelled and answered with an error "
      "(MGET: the parts that arrived, errors for the rest); 0: none",
      0, 0, KT_MSEC(1), NULL, RT },
    { "requirepass", KT_OPT_STR, KS_OFF(kd_config, srv, password), NULL,
      "when set, clients must AUTH with this password (or HELLO 2 AUTH default PASSWORD) first",
      0, 0, 0, NULL, RT | KT_OPT_SECRET },

    { "backend", KT_OPT_LIST, O(backend), NULL,
      "database server ADDR:PORT (kettle-db, redis-server), or replicas holding the same keys "
      "as ADDR:PORT,ADDR:PORT,...; several lines: keys spread by consistent hashing; none: the "
      "embedded database",
      0, 0, 0, kd_pool_check_backend, RT },
    { "backend-connections", KT_OPT_INT, O(backend_connections), "2",
      "connections to each database server, a command to the one with the fewest outstanding "
      "(more: less head-of-line blocking; 1: fewest commands with redis-server)",
      1, 1024, 0, NULL, RT },
    { "backend-pipeline", KT_OPT_INT, O(backend_pipeline), "65536",
      "commands outstanding at once on one backend connection", 1, 1 << 24, 0, NULL, RT },
    { "backend-queue-limit", KT_OPT_INT, O(backend_queue_limit), "65536",
      "fetches waiting for room on a server's connections; past it a fetch fails at once",
      0, 1 << 28, 0, NULL, RT },
    { "backend-queue-bytes", KT_OPT_SIZE, O(backend_queue_bytes), "32mb",
      "memory held for one server's fetches, queued or sent (keys plus about 160 bytes each); "
      "past it a fetch fails at once", 0, 0, 0, NULL, RT },
    { "backend-output-limit", KT_OPT_SIZE, O(backend_output_limit), "1mb",
      "unsent bytes on one backend connection past which it takes no more commands until the "
      "server reads (fetches wait in the queue meanwhile)", 0, 0, 0, NULL, RT },
    { "backend-batch", KT_OPT_INT, O(backend_batch), "32",
      "fetches for one server in one loop pass go out as one MGET of up to this many keys "
      "(a batch answers when its slowest key does); 1: one GET per key",
      1, 1024, 0, NULL, RT },
    { "singleflight", KT_OPT_BOOL, O(singleflight), "yes",
      "a fetch of a key already on its way to the same group joins it instead of asking again "
      "(no: every client's fetch goes to the database)", 0, 0, 0, NULL, RT },
    { "hedge-after", KT_OPT_STR, O(hedge_after), "p95",
      "in a group of replicas, a fetch unanswered after this is also sent to another replica, "
      "the first answer winning: pNN (that percentile of the group's recent latency), a "
      "duration, or off", 0, 0, 0, kd_pool_check_hedge, RT },
    { "hedge-max-extra", KT_OPT_STR, O(hedge_max_extra), "5%",
      "hedges stay under this share of a group's fetches over the health window",
      0, 0, 0, kd_pool_check_share, RT },
    { "connect-timeout", KT_OPT_DURATION, O(connect_timeout), "1s",
      "bound on connecting to a database server", 0, 0, KT_MSEC(1), NULL, RT },
    { "backend-timeout", KT_OPT_DURATION, O(backend_timeout), "5s",
      "longest a connection's oldest reply may be late before the connection is failed and "
      "reconnected (the stall threshold's ceiling, and its value until latency is known); "
      "0: never", 0, 0, KT_MSEC(1), NULL, RT },
    { "stall-factor", KT_OPT_DOUBLE, O(stall_factor), "10",
      "a connection whose oldest reply waits this many times the server's recent p99 latency "
      "has stalled: it is failed early (raise it for a database with a heavy tail)",
      0, 0, 0, NULL, RT },
    { "stall-floor", KT_OPT_DURATION, O(stall_floor), "200ms",
      "the stall threshold is never below this", 0, 0, KT_MSEC(1), NULL, RT },
    { "backend-retry-min", KT_OPT_DURATION, O(backend_retry_min), "100ms",
      "first reconnect delay after a failure; doubles with each failure in a row (with jitter)",
      0, 0, KT_MSEC(1), NULL, RT },
    { "backend-retry-max", KT_OPT_DURATION, O(backend_retry_max), "5s",
      "longest reconnect delay", 0, 0, KT_MSEC(1), NULL, RT },
    { "eject-after", KT_OPT_INT, O(eject_after), "3",
      "connection failures in a row after which a server is ejected, its keys going to its "
      "replicas or the next servers on the ring (never the last one); a stall while the server "
      "answers nothing on any connection, another waiting too, or while every other connection "
      "is stuck too (its oldest reply waiting half the stall threshold, or stalled less than a "
      "threshold ago), ejects it at once; 0: never",
      0, 1000000, 0, NULL, RT },
    { "eject-failure-rate", KT_OPT_STR, O(eject_failure_rate), "5%",
      "a server whose requests failed at this rate over the health window is ejected "
      "(a lost connection counts once, and once more for each request it failed; an error "
      "reply is an answer, not a failure); 0: never",
      0, 0, 0, kd_pool_check_share, RT },
    { "eject-min-requests", KT_OPT_INT, O(eject_min_requests), "50",
      "requests a server must have had in the health window before its failure rate counts",
      1, 1 << 30, 0, NULL, RT },
    { "eject-time", KT_OPT_DURATION, O(eject_time), "5s",
      "how long an ejected server stays out before it is probed; doubles while it keeps failing",
      0, 0, KT_MSEC(1), NULL, RT },
    { "eject-time-max", KT_OPT_DURATION, O(eject_time_max), "60s",
      "the longest ejection", 0, 0, KT_MSEC(1), NULL, RT },
    { "health-window", KT_OPT_DURATION, O(health_window), "1s",
      "the recent past a server's latency percentiles, failure rate and hedge budget are "
      "measured over", 0, 0, KT_MSEC(1), NULL, RT },
    { "hash-points", KT_OPT_INT, O(hash_points), "160",
      "virtual nodes of each backend line on the consistent-hash ring", 1, 10000, 0, NULL, RT },
    { "embedded-latency", KT_OPT_STR, O(embedded_latency), "fixed 1ms",
      "delay model of the embedded simulated database: " KDB_LATENCY_SYNTAX,
      0, 0, 0, NULL, 0 },
    { "embedded-option", KT_OPT_LIST, O(embedded_option), NULL,
      "another option for the embedded database, as 'NAME VALUE' (e.g. 'workers 8')",
      0, 0, 0, check_name_value, 0 },

    KS_OPT_SHUTDOWN_TIMEOUT(kd_config, srv, "10s"),
    KT_OPT_END,
};

const char *const kd_shorts[] = { "c:config", "l:listen", "b:backend", NULL };

int kd_config_load(kd_config *cfg, int argc, char **argv)
{
    memset(cfg, 0, sizeof *cfg);
    if (kt_opt_defaults(kd_options, cfg) < 0)
        return -EINVAL;
    return kt_opt_parse_argv(kd_options, cfg, argc, argv, kd_shorts, NULL);
}

int kd_config_validate(const kd_config *c, const char **why)
{
    if (c->srv.listen.n == 0) {
        *why = "no listen address";
        return -EINVAL;
    }
    if (c->max_keys + 1 > c->srv.max_args) {
        *why = "max-keys must be below max-args";
        return -EINVAL;
    }
    if (c->srv.max_inline < 16 || c->srv.max_bulk < 16) {
        *why = "max-inline and max-bulk must be at least 16 bytes";
        return -EINVAL;
    }
    if (c->srv.max_query_buffer < c->srv.max_inline) {
        *why = "max-query-buffer must be at least max-inline";
        return -EINVAL;
    }
    if (c->srv.max_output_buffer < 4096) {
        *why = "max-output-buffer must be at least 4kb";
        return -EINVAL;
    }
    if (c->backend_retry_min > c->backend_retry_max) {
        *why = "backend-retry-min must not exceed backend-retry-max";
        return -EINVAL;
    }
    for (size_t i = 0; i < c->backend.n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->backend.items[i], c->backend.items[j]) == 0) {
                *why = "the same backend is listed twice";
                return -EINVAL;
            }
    return 0;
}

bool kd_config_differs(const kd_config *a, const kd_config *b, const char *name)
{
    char x[4096], y[4096];
    const char *p = kt_opt_get(kd_options, a, name, x, sizeof x);
    const char *q = kt_opt_get(kd_options, b, name, y, sizeof y);
    if (p == NULL || q == NULL)
        return false;
    return strcmp(p, q) != 0;
}

void kd_config_free(kd_config *cfg)
{
    kt_opt_free(kd_options, cfg);
}

void kd_config_usage(FILE *out)
{
    fprintf(out,
        "usage: kettled [-c FILE] [--listen ADDR:PORT]... [--backend ADDR:PORT]... [OPTION VALUE]...\n"
        "\n"
        "Answers requests for numbers over the Redis protocol by fetching each number\n"
        "from a database server (kettle-db or redis-server), concurrently, on one thread.\n"
        "With no backend it starts a simulated database inside its own process.\n"
        "\n"
        "commands:\n"
        "  GET n                  the number n from the database\n"
        "  MGET n1 n2 ...         all of them, fetched at once; an item that failed is an error\n"
        "  MGETSEQ n1 n2 ...      the same, fetched one after another (each awaited before the next)\n"
        "  MGETANY n1 n2 ...      the first number to arrive; the other fetches are cancelled\n"
        "  PING, ECHO, QUIT, INFO [section], COMMAND [COUNT|INFO|DOCS|LIST], AUTH, HELLO 2,\n"
        "  CLIENT ID|GETNAME|SETNAME|SETINFO|LIST|INFO, CONFIG GET|SET|RESETSTAT, SELECT 0\n"
        "\n"
        "signals: SIGTERM/SIGINT drain and exit (a second one ends the drain; exit status 3\n"
        "when requests were left unanswered), SIGHUP reloads\n"
        "\n"
        "options (each also settable in the config file as `name = value`):\n"
        "  -h, --help                       this text\n"
        "  -v, --version                    the version\n");
    kt_opt_usage(kd_options, out);
}
