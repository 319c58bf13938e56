/*
 * cfg.h - kettle-db's options: one table (cfg.c) drives the command line,
 * the config file (conf/kettle-db.conf is generated from it), CONFIG SET /
 * CONFIG GET and --help.
 */
#ifndef KDB_CFG_H
#define KDB_CFG_H

#include <stdbool.h>
#include <stdint.h>
#include "opt.h"

typedef struct kdb_cfg {
    char *config;               /* -c FILE (command line only) */
    kt_opt_list listen;         /* ADDR:PORT, repeatable */
    char *io;                   /* auto | io_uring | epoll | libevent */
    char *log_level;
    char *latency;              /* SPEC, see latency.h */
    int64_t seed;               /* 0: drawn from the clock, shown in INFO */
    int64_t workers;            /* K requests in service at once; 0 unlimited */
    int64_t keyspace;           /* keys 0..keyspace-1 exist */
    uint64_t max_delay;         /* cap on any delay, ns */
    kt_opt_list fault;          /* "name probability [args]", repeatable */
    bool admin;                 /* CONFIG and FAULT allowed */
    char *admin_password;       /* AUTH needed first for admin commands */
    int64_t maxclients;
    uint64_t max_inline;        /* bytes of one inline command */
    uint64_t max_bulk;          /* bytes of one bulk argument */
    int64_t max_args;           /* arguments of one command */
    uint64_t max_query_buffer;  /* unparsed input kept per connection */
    uint64_t max_output_buffer; /* unsent output per connection */
    int64_t max_pending;        /* requests awaiting their reply per connection */
    int64_t backlog;            /* listen(2) backlog */
} kdb_cfg;

/* The option table (KT_OPT_END terminated). */
extern const kt_opt kdb_options[];

/* The short options of the command line ("c:config", ...). */
extern const char *const kdb_shorts[];

#endif
