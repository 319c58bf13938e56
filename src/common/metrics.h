/*
 * metrics.h - Prometheus metrics for the kettle daemons: a writer for the
 * text exposition format 0.0.4 and a small HTTP endpoint that serves it.
 *
 * The writer builds the whole response into one buffer per scrape. A
 * daemon renders its metrics in one callback: it starts each family (name,
 * type, help) and adds that family's samples, which keeps every family's
 * lines together as the format requires. Errors are sticky: the first bad
 * name, misplaced sample or failed allocation is kept in the writer, later
 * calls do nothing, and the endpoint answers 500 for that scrape (so a
 * daemon's render function need not check each call).
 *
 * The endpoint (metrics-http.c) runs on the daemon's own loop with
 * libkettle's public API only: `GET /metrics` answers 200 with the text,
 * HEAD the same headers, any other path 404, any other method on /metrics
 * 405 with `Allow: GET, HEAD`, malformed requests 400, a request head past
 * max_request 431, an HTTP version other than 1.x 505. One request per
 * connection (`Connection: close`). What a scraper can make it hold is
 * bounded: max_clients connections (past it accepting pauses and new
 * connections wait in the kernel's backlog; one the kernel had already
 * accepted in the same burst is closed at once), max_request bytes of
 * request each, read_timeout to send the request and write_timeout to take
 * the response.
 */
#ifndef KETTLE_METRICS_H
#define KETTLE_METRICS_H

#include <kettle/kettle.h>

/* ---- the writer --------------------------------------------------------- */

typedef enum kt_metric_type {
    KT_METRIC_NONE = 0, /* no family started yet */
    KT_METRIC_COUNTER,  /* name must end in _total */
    KT_METRIC_GAUGE,
    KT_METRIC_HISTOGRAM,
    KT_METRIC_UNTYPED,
} kt_metric_type;

/* One label: a name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with "__") and
 * any UTF-8 value (backslash, double quote and newline are escaped). */
typedef struct kt_label {
    const char *name;
    const char *value;
} kt_label;

/* Writer state. Zero-initialise or kt_metrics_init(); the text is
 * out.data[0..out.len). */
typedef struct kt_metrics {
    kt_buf out;          /* the exposition text so far */
    size_t limit;        /* out may not grow past this many bytes (-E2BIG) */
    int err;             /* the first error: 0 or a negative errno */
    char what[96];       /* what caused err (a family or label name) */
    kt_metric_type type; /* the current family's type */
    size_t name_off;     /* the current family's name: out.data + name_off */
    size_t name_len;
    size_t *names;       /* (offset, length) of every family name so far */
    size_t nnames, capnames;
} kt_metrics;

/* The histogram bucket bounds, in seconds, shared by every latency
 * histogram (KT_METRICS_BOUNDS entries, then +Inf): 50 us to 10 s. */
#define KT_METRICS_BOUNDS 17
extern const char *const kt_metrics_bound_text[KT_METRICS_BOUNDS];
extern const uint64_t kt_metrics_bound_ns[KT_METRICS_BOUNDS];

/* Set m up empty; the text may grow to limit bytes (0: 64 MiB). */
void kt_metrics_init(kt_metrics *m, size_t limit);
/* Empty m for a new rendering, keeping its memory and limit. */
void kt_metrics_reset(kt_metrics *m);
/* Free m's memory (m may be reused after kt_metrics_init). */
void kt_metrics_free(kt_metrics *m);
/* The first error so far (0 or negative errno): -EINVAL for a bad name,
 * a sample outside a family of its type, a repeated family or a counter
 * not named *_total; -ENOMEM; -E2BIG past the limit. */
int kt_metrics_error(const kt_metrics *m);

/*
 * Start a family named prefix+name (prefix may be NULL): its # HELP and
 * # TYPE lines. help is one line of text (backslash and newline escaped);
 * it must not be empty. The names of all families rendered together must
 * differ. Returns m's error so far.
 */
int kt_metrics_family(kt_metrics *m, const char *prefix, const char *name,
                      kt_metric_type type, const char *help);
/* One sample of the current counter, gauge or untyped family, with
 * nlabels labels (labels may be NULL when nlabels is 0). NaN and the
 * infinities are written as Prometheus spells them. Returns m's error. */
int kt_metrics_sample(kt_metrics *m, const kt_label *labels, size_t nlabels, double v);
/* The same for an integer value (exact, however large). */
int kt_metrics_sample_u64(kt_metrics *m, const kt_label *labels, size_t nlabels, uint64_t v);
/*
 * One histogram of the current histogram family from h (values in
 * nanoseconds), exported in seconds: cumulative name_bucket{le="..."} for
 * each of kt_metrics_bound_text and +Inf, then name_sum and name_count.
 * kt_hist keeps values in buckets at most 1/128 of their value wide; a
 * bucket counts under the first bound at or above its upper end, so a
 * value may count under the next bound when it lies within 0.8% below
 * one. _sum is exact (to a double's precision). Returns m's error.
 */
int kt_metrics_hist_ns(kt_metrics *m, const kt_label *labels, size_t nlabels, const kt_hist *h);

/* A family of one unlabelled sample. Return m's error. */
int kt_metrics_counter(kt_metrics *m, const char *prefix, const char *name, const char *help,
                       uint64_t v);
int kt_metrics_gauge(kt_metrics *m, const char *prefix, const char *name, const char *help,
                     double v);

/* The process metrics every Prometheus client library exports, from
 * /proc/self: process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_max_fds and
 * process_start_time_seconds. A value that cannot be read is left out.
 * Returns m's error. */
int kt_metrics_process(kt_metrics *m);

/* ---- the endpoint ------------------------------------------------------- */

typedef struct kt_metrics_server kt_metrics_server;

/* Render the daemon's metrics into m. Return 0, or a negative errno to
 * answer 500 (the writer's own error does the same). */
typedef int (*kt_metrics_render_cb)(kt_metrics *m, void *arg);

typedef struct kt_metrics_options {
    unsigned max_clients;   /* connections at once; 0: 16 */
    uint64_t read_timeout;  /* ns from accept to a whole request head; 0: 5 s */
    uint64_t write_timeout; /* ns for the scraper to take the response; 0: 10 s */
    size_t max_request;     /* bytes of request head; 0: 8 KiB */
    size_t max_response;    /* bytes of metrics text; 0: 64 MiB */
} kt_metrics_options;

typedef struct kt_metrics_stats {
    uint64_t requests;      /* requests answered, any status */
    uint64_t scrapes;       /* 200 answers */
    uint64_t errors;        /* 4xx and 5xx answers */
    uint64_t timeouts;      /* connections reset by a read or write timeout */
    uint64_t paused;        /* times accepting paused at max_clients */
    uint64_t rejected;      /* connections closed at once: accepted while
                               max_clients were open, or out of memory */
    unsigned clients;       /* connections open now */
} kt_metrics_stats;

/*
 * Listen on addr ("127.0.0.1:9379", see kt_addr_parse) on loop and serve
 * the metrics cb renders (cb is called once per scrape; scrapes answered
 * in one loop iteration share one rendering). opts may be NULL. The
 * server is the caller's until kt_metrics_server_close(). 0, -EINVAL for
 * a bad address, or the errno of socket, bind or listen.
 */
int kt_metrics_listen(kt_loop *loop, const char *addr, const kt_metrics_options *opts,
                      kt_metrics_render_cb cb, void *arg, kt_metrics_server **out);
/* Stop listening and close every connection at once; cb is not called
 * again. The memory goes when the last connection's close has finished,
 * within the loop's next iteration. NULL is ignored. */
void kt_metrics_server_close(kt_metrics_server *srv);
/* The bound address (the real port when port 0 was asked). 0 or errno. */
int kt_metrics_server_addr(const kt_metrics_server *srv, kt_addr *out);
/* The endpoint's own counters. */
void kt_metrics_server_stats(const kt_metrics_server *srv, kt_metrics_stats *out);

#endif
