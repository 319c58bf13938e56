/*
 * bench.h - kettle-bench's configuration, run plan and counters, shared by
 * its modules: args.c (command line), worker.c and conn.c (one reactor per
 * thread driving the connections), validate.c (reply checks), stats.c
 * (counters and their merge), report.c (text, JSON, CSV, progress) and
 * main.c (threads, signals, exit status).
 *
 * Time: every instant is CLOCK_MONOTONIC nanoseconds (kt_clock_ns). The
 * run goes: t0 (launch) -> connections opened over --ramp -> t_start, once
 * the ramp is over and every connection is up (or has failed): the start
 * of sending (closed loop without --ramp) and the open-loop schedule's
 * origin -> --warmup -> t_measure (what is sent from here on is measured)
 * -> t_end (-d) or the -n requests done.
 */
#ifndef KB_BENCH_H
#define KB_BENCH_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <kettle/kettle.h>
#include "rng.h"
#include "template.h"
#include "spectrum.h"
#include "zipf.h"

#define KB_DEFAULT_PORT 7379
#define KB_DEFAULT_CONNS 50
#define KB_DEFAULT_COUNT 100000
#define KB_DEFAULT_KEYSPACE 1000
#define KB_DEFAULT_TIMEOUT KT_SEC(10)
#define KB_MAX_CONNS 1000000
#define KB_MAX_PIPELINE 65536
#define KB_MAX_THREADS 256
#define KB_MAX_RECONNECTS 5      /* consecutive failed reconnects before a connection is given up */
#define KB_MAX_ERRTEXTS 32       /* distinct error reply texts kept; more count as "other" */
#define KB_ERRTEXT_MAX 160       /* bytes of an error text kept */
#define KB_LOG_FIRST 3           /* mismatches and failures logged per thread, then counted only */

typedef struct kb_config {
    /* target */
    const char *host;          /* -h */
    int port;                  /* -p */
    const char *path;          /* -s: unix socket */
    kt_addr addr;              /* resolved */
    char addr_text[300];       /* for reports */
    /* load */
    unsigned conns;            /* -c */
    unsigned pipeline;         /* -P: requests in flight per connection */
    unsigned threads;          /* -t: one reactor each */
    uint64_t count;            /* -n: measured requests (0 when -d) */
    uint64_t duration_ns;      /* -d: measured time (0 when -n) */
    double rate;               /* --rate: requests/s over all connections; 0 = closed loop */
    uint64_t warmup_ns;        /* --warmup */
    uint64_t ramp_ns;          /* --ramp */
    uint64_t timeout_ns;       /* --timeout: per request, and per connect; 0 = none */
    uint64_t keyspace;         /* -r: placeholders take values in [0, keyspace) */
    kb_zipf zipf;              /* __zipf_int__ over the keyspace, exponent --zipf */
    uint64_t seed;             /* --seed */
    uint64_t max_errors;       /* --max-errors */
    bool validate;             /* not --no-validate */
    bool quiet;                /* --quiet */
    bool csv;                  /* --csv: the report as CSV on stdout */
    bool progress;             /* a progress line each second (stderr is a terminal, not --quiet) */
    const char *json_path;     /* --json FILE ("-" = stdout) */
    const char *hgrm_path;     /* --hgrm FILE ("-" = stdout) */
    const char *svg_path;      /* --svg FILE ("-" = stdout) */
    char **plot;               /* --plot: the JSON reports to draw (argv), NULL to run */
    size_t nplot;
    kt_io_kind io;             /* --io */
    kb_mix mix;                /* the command(s) */

    /* the run plan: t0 set by main.c once every thread's loop is up, the
     * rest at the start (each worker copies them in its go callback) */
    uint64_t t0, t_start, t_measure, t_end; /* t_end UINT64_MAX without -d */
    uint64_t warm_index;       /* open loop: schedule indexes below it are warm-up */
    double ns_per_req;         /* open loop: 1e9 / rate */
    bool abort;                /* a thread could not start: the others leave at once */
} kb_config;

/* One distinct error text and how often it came. */
typedef struct kb_errtext {
    char *text;
    uint64_t count;
} kb_errtext;

/* Error texts by count: the first KB_MAX_ERRTEXTS distinct ones, the rest
 * counted together. */
typedef struct kb_texts {
    kb_errtext t[KB_MAX_ERRTEXTS];
    size_t n;
    uint64_t other;            /* occurrences of texts past the first KB_MAX_ERRTEXTS */
} kb_texts;

/* What one thread counted (merged over threads at the end). */
typedef struct kb_stats {
    kt_hist hist;              /* latency of measured replies, ns */
    uint64_t done;             /* measured replies (whatever their verdict) */
    uint64_t warm;             /* replies to warm-up requests */
    uint64_t sent;             /* measured requests sent */
    uint64_t unsent;           /* open loop: measured requests due but never sent */
    uint64_t lost;             /* requests in flight on a connection that failed */
    uint64_t last_ns;          /* when the last measured reply came */
    uint64_t connects;         /* connections established */
    uint64_t mismatch;         /* replies with a wrong value (or the wrong shape) */
    uint64_t error_replies;    /* replies that are an error (by text in texts) */
    uint64_t partial;          /* arrays holding error elements, the rest right (one error each) */
    uint64_t error_elements;   /* error elements in any reply (by text in etexts) */
    uint64_t timeouts;         /* requests not answered within --timeout */
    uint64_t conn_failures;    /* refused, reset, closed by the peer, garbage */
    kb_texts texts;            /* error replies */
    kb_texts etexts;           /* error elements */
    uint64_t *slots;           /* the timeline: measured replies per KB_SLOT_NS from t_measure */
    size_t nslots, slots_cap;
} kb_stats;

/* Latencies and counts since the last progress line, fed by every thread. */
typedef struct kb_progress {
    pthread_mutex_t lock;
    kt_hist hist;
    uint64_t done, errors;
} kb_progress;

/* stats.c */
void kb_stats_init(kb_stats *s);
void kb_stats_free(kb_stats *s);
/* Count one error reply with its text (truncated to KB_ERRTEXT_MAX). */
void kb_stats_error_text(kb_stats *s, const char *text, size_t len);
/* Count the error elements of reply r (at any depth), each with its text:
 * those of a partial reply, and of a mismatched one. */
void kb_stats_error_elements(kb_stats *s, const kt_resp_reply *r);
/* Count a measured reply in the timeline, `since` ns after measuring
 * began (dropped past KB_MAX_SLOTS, or when memory runs out). */
void kb_stats_slot(kb_stats *s, uint64_t since);
/* Add src's counts into dst. */
void kb_stats_merge(kb_stats *dst, const kb_stats *src);
/* Errors counted per request: mismatches + error replies + partial
 * replies + timeouts + connection failures. */
uint64_t kb_stats_errors(const kb_stats *s);

/* args.c: parse the command line into cfg (defaults first). 0 to run,
 * 1 when --help or --version was printed, -1 on a usage error (printed). */
int kb_parse_args(kb_config *cfg, int argc, char **argv);
void kb_config_free(kb_config *cfg);

#endif
