/*
 * cfg.c - the table of kettle-db's options (see cfg.h). Each entry is the
 * single source of the option's name, type, default, bounds and help line.
 */
#include "config.h"
#include <errno.h>
#include <stddef.h>
#include <kettle/kettle.h>
#include "cfg.h"
#include "fault.h"
#include "latency.h"

static int check_latency(const char *v, const char **why)
{
    kdb_latency m;
    return kdb_latency_parse(v, &m, why);
}

static int check_fault(const char *v, const char **why)
{
    kdb_fault_kind k;
    kdb_fault f;
    return kdb_fault_parse_line(v, &k, &f, why);
}

#define O(field) offsetof(kdb_cfg, field)
#define RT KT_OPT_RUNTIME

const kt_opt kdb_options[] = {
    { "config", KT_OPT_STR, O(config), NULL, "read options from this file first (-c)",
      0, 0, 0, NULL, KT_OPT_NOFILE },
    { "print-delays", KT_OPT_INT, O(print_delays), "0",
      "print the first N delays the latency model draws with the seed (the k-th for key k), "
      "in microseconds, one a line, and exit",
      0, 100000000, 0, NULL, KT_OPT_NOFILE },
    KS_OPT_LISTEN(kdb_cfg, srv, "127.0.0.1:7380"),
    KS_OPT_IO(kdb_cfg, srv),
    KS_OPT_IO_BATCH_WAIT(kdb_cfg, srv, "0"),
    KS_OPT_LOG_LEVEL(kdb_cfg, srv),
    { "latency", KT_OPT_STR, O(latency), "fixed 1ms", "delay model: " KDB_LATENCY_SYNTAX,
      0, 0, 0, check_latency, RT },
    { "seed", KT_OPT_INT, O(seed), "0",
      "random seed of the latency models and fault dice (0: from the clock; INFO shows it)",
      0, INT64_MAX, 0, NULL, RT },
    { "workers", KT_OPT_INT, O(workers), "0",
      "requests in service at once (each key of an MGET counts); the rest wait in FIFO order; 0 unlimited",
      0, 100000000, 0, NULL, RT },
    { "keyspace", KT_OPT_INT, O(keyspace), "9223372036854775807",
      "size of the number space: GET n answers n for 0 <= n < keyspace, nil otherwise (DBSIZE)",
      1, INT64_MAX, 0, NULL, RT },
    { "max-delay", KT_OPT_DURATION, O(max_delay), "60s", "cap on any single delay (tails, proportional)",
      0, 0, 0, NULL, RT },
    { "fault", KT_OPT_LIST, O(fault), NULL,
      "fault at start, as FAULT SET takes it: NAME PROBABILITY [ARGS]; names: " KDB_FAULT_USAGE,
      0, 0, 0, check_fault, 0 },
    { "admin", KT_OPT_BOOL, KS_OFF(kdb_cfg, srv, admin), "yes",
      "allow the admin commands CONFIG and FAULT", 0, 0, 0, NULL, 0 },
    { "admin-password", KT_OPT_STR, KS_OFF(kdb_cfg, srv, password), NULL,
      "when set, admin commands need AUTH with this password first on the connection",
      0, 0, 0, NULL, RT | KT_OPT_SECRET },
    KS_OPT_LIMITS(kdb_cfg, srv, "10000", "64mb", "100000"),
    KS_OPT_BACKLOG(kdb_cfg, srv),
    KS_OPT_REUSEPORT(kdb_cfg, srv),
    KS_OPT_METRICS_LISTEN(kdb_cfg, srv, "127.0.0.1:9380"),
    KS_OPT_SHUTDOWN_TIMEOUT(kdb_cfg, srv, "10s"),
    KT_OPT_END
};

const char *const kdb_shorts[] = { "c:config", "l:listen", NULL };
