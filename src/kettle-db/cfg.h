/*
 * cfg.h - kettle-db's options: one table (cfg.c) drives the command line,
 * the config file (conf/kettle-db.conf is generated from it), CONFIG SET /
 * CONFIG GET and --help. The options every server has (listen, limits,
 * admin-password, ...) live in the server core's ks_config.
 */
#ifndef KDB_CFG_H
#define KDB_CFG_H

#include <stdbool.h>
#include <stdint.h>
#include "opt.h"
#include "server.h"

typedef struct kdb_cfg {
    char *config;               /* -c FILE (command line only) */
    int64_t print_delays;       /* N: print N delays of the model and exit (command line only) */
    ks_config srv;              /* listen, io, limits, admin, admin-password, ... */
    char *latency;              /* SPEC, see latency.h */
    int64_t seed;               /* 0: drawn from the clock, shown in INFO */
    int64_t workers;            /* K requests in service at once; 0 unlimited */
    int64_t keyspace;           /* keys 0..keyspace-1 exist */
    uint64_t max_delay;         /* cap on any delay, ns */
    kt_opt_list fault;          /* "name probability [args]", repeatable */
} kdb_cfg;

/* The option table (KT_OPT_END terminated). */
extern const kt_opt kdb_options[];

/* The short options of the command line ("c:config", ...). */
extern const char *const kdb_shorts[];

#endif
