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
    { "listen", KT_OPT_LIST, O(listen), "127.0.0.1:7380",
      "address to listen on: ADDR:PORT, [IPV6]:PORT or unix:PATH (port 0: ephemeral)",
      0, 0, 0, kt_opt_check_addr, 0 },
    { "io", KT_OPT_STR, O(io), "auto", "I/O backend: auto (io_uring, else epoll), io_uring, epoll, libevent",
      0, 0, 0, kt_opt_check_io, 0 },
    { "log-level", KT_OPT_STR, O(log_level), "notice", "log level: error, warning, notice, info, debug",
      0, 0, 0, kt_opt_check_level, RT },
    { "latency", KT_OPT_STR, O(latency), "fixed 1ms",
      "delay model: none | fixed D | uniform LO HI | normal MEAN SD | exponential MEAN | "
      "lognormal MEDIAN SIGMA | pareto SCALE SHAPE | proportional UNIT (key n waits n x UNIT); "
      "a bare number is in ms",
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
    { "admin", KT_OPT_BOOL, O(admin), "yes", "allow the admin commands CONFIG and FAULT",
      0, 0, 0, NULL, 0 },
    { "admin-password", KT_OPT_STR, O(admin_password), NULL,
      "when set, admin commands need AUTH with this password first on the connection",
      0, 0, 0, NULL, RT | KT_OPT_SECRET },
    { "maxclients", KT_OPT_INT, O(maxclients), "10000",
      "connections at once; one more gets '-ERR max number of clients reached' and is closed",
      1, 10000000, 0, NULL, RT },
    { "max-inline", KT_OPT_SIZE, O(max_inline), "64kb",
      "longest inline command ('Protocol error: too big inline request')", 0, 0, 0, NULL, RT },
    { "max-bulk", KT_OPT_SIZE, O(max_bulk), "1mb",
      "longest bulk argument ('Protocol error: invalid bulk length')", 0, 0, 0, NULL, RT },
    { "max-args", KT_OPT_INT, O(max_args), "65536",
      "arguments in one command ('Protocol error: invalid multibulk length')",
      1, 1048576, 0, NULL, RT },
    { "max-query-buffer", KT_OPT_SIZE, O(max_query_buffer), "8mb",
      "unparsed input kept for one connection; past it the connection is closed", 0, 0, 0, NULL, RT },
    { "max-output-buffer", KT_OPT_SIZE, O(max_output_buffer), "64mb",
      "unsent replies kept for a connection that does not read; past it the connection is closed",
      0, 0, 0, NULL, RT },
    { "max-pending", KT_OPT_INT, O(max_pending), "100000",
      "requests awaiting their reply on one connection; past it reading pauses (backpressure)",
      1, 100000000, 0, NULL, RT },
    { "backlog", KT_OPT_INT, O(backlog), "4096", "listen(2) backlog of each listener",
      1, 1000000, 0, NULL, 0 },
    KT_OPT_END
};

const char *const kdb_shorts[] = { "c:config", "l:listen", NULL };
