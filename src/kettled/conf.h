/*
 * conf.h - kettled's configuration: one struct, one option table (opt.h)
 * that drives the command line, the config file, CONFIG GET/SET, --help
 * and conf/kettled.conf, and the checks that span several options.
 */
#ifndef KD_CONF_H
#define KD_CONF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "opt.h"
#include "server.h"

typedef struct kd_config {
    char *config;               /* -c FILE (command line only) */
    bool check_config;          /* --check-config: validate and exit */
    bool write_conf;            /* --write-conf: print the documented config file */

    /* listen, io, log-level, backlog, reuseport, the client limits
     * (maxclients ... max-pending-bytes), idle-timeout, requirepass and
     * shutdown-timeout: the options every kettle server has */
    ks_config srv;
    int64_t max_keys;           /* keys of one MGET, MGETSEQ or MGETANY */
    uint64_t request_timeout;   /* 0: none */

    /* backends */
    kt_opt_list backend;        /* ADDR:PORT[,ADDR:PORT...], repeatable; none: the embedded database */
    int64_t backend_connections;
    int64_t backend_pipeline;
    int64_t backend_queue_limit;
    uint64_t backend_queue_bytes; /* fetches held per server, in bytes */
    uint64_t backend_output_limit; /* unsent bytes per backend connection */
    int64_t backend_batch;      /* keys per backend command; 1: no batching */
    bool singleflight;
    char *hedge_after;          /* off, pNN, or a duration */
    char *hedge_max_extra;      /* a share: "5%" */
    uint64_t connect_timeout;
    uint64_t backend_timeout;   /* ceiling of the stall threshold */
    double stall_factor;        /* x recent p99 */
    uint64_t stall_floor;
    uint64_t backend_retry_min, backend_retry_max;
    int64_t eject_after;        /* consecutive failures; 0: never eject */
    char *eject_failure_rate;   /* a share; 0: off */
    int64_t eject_min_requests;
    uint64_t eject_time, eject_time_max;
    uint64_t health_window;
    int64_t hash_points;        /* virtual nodes per group */
    char *embedded_latency;
    kt_opt_list embedded_option; /* "NAME VALUE" passed to the embedded database */
} kd_config;

extern const kt_opt kd_options[];
/* One-letter options for kt_opt_parse_argv. */
extern const char *const kd_shorts[];

/* Defaults, then the config file (-c) and the command line over it.
 * 0 or -EINVAL (errors logged). cfg is initialised even on failure:
 * release it with kd_config_free(). */
int kd_config_load(kd_config *cfg, int argc, char **argv);
/* Checks that span options (max-keys below max-args, retry-min <=
 * retry-max, ...). 0 or -EINVAL with *why set to static text. */
int kd_config_validate(const kd_config *cfg, const char **why);
/* True if option `name` differs between a and b (rendered as text). */
bool kd_config_differs(const kd_config *a, const kd_config *b, const char *name);
void kd_config_free(kd_config *cfg);
/* --help text: usage, commands, options. */
void kd_config_usage(FILE *out);

#endif
