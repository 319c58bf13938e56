/*
 * metrics.c - the writer of Prometheus's text exposition format 0.0.4.
 *
 * Everything goes into one growable buffer (kt_buf). A family is its
 * # HELP and # TYPE lines followed by its samples; the writer remembers the
 * current family's name (as an offset into the buffer, where it was just
 * written) so a sample only names its labels, and the names of all
 * families so far to refuse a repeated one. The first error sticks and
 * turns every later call into a no-op, so the endpoint can answer 500
 * instead of serving half a page. Histograms come from kt_hist in one pass
 * over its buckets per histogram.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "metrics.h"

#define DEFAULT_LIMIT ((size_t)64 << 20)

const char *const kt_metrics_bound_text[KT_METRICS_BOUNDS] = {
    "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
};
const uint64_t kt_metrics_bound_ns[KT_METRICS_BOUNDS] = {
    KT_USEC(50), KT_USEC(100), KT_USEC(250), KT_USEC(500), KT_MSEC(1), KT_USEC(2500),
    KT_MSEC(5), KT_MSEC(10), KT_MSEC(25), KT_MSEC(50), KT_MSEC(100), KT_MSEC(250),
    KT_MSEC(500), KT_SEC(1), KT_MSEC(2500), KT_SEC(5), KT_SEC(10),
};

void kt_metrics_init(kt_metrics *m, size_t limit)
{
    memset(m, 0, sizeof(*m));
    m->limit = limit ? limit : DEFAULT_LIMIT;
}

void kt_metrics_reset(kt_metrics *m)
{
    m->out.len = 0;
    m->err = 0;
    m->what[0] = '\0';
    m->type = KT_METRIC_NONE;
    m->name_off = m->name_len = 0;
    m->nnames = 0;
}

void kt_metrics_free(kt_metrics *m)
{
    kt_buf_free(&m->out);
    kt_free(m->names);
    m->names = NULL;
    m->nnames = m->capnames = 0;
    kt_metrics_reset(m);
}

int kt_metrics_error(const kt_metrics *m)
{
    return m->err;
}

/* Record the first error, with what caused it (a name, cut to fit). */
static int fail(kt_metrics *m, int err, const char *what, size_t len)
{
    if (m->err == 0) {
        m->err = err;
        if (len >= sizeof(m->what))
            len = sizeof(m->what) - 1;
        memcpy(m->what, what ? what : "", what ? len : 0);
        m->what[what ? len : 0] = '\0';
    }
    return m->err;
}

static void put(kt_metrics *m, const void *p, size_t n)
{
    if (m->err)
        return;
    if (m->limit - m->out.len < n) {
        fail(m, -E2BIG, "response size limit", 19);
        return;
    }
    if (kt_buf_append(&m->out, p, n) < 0)
        fail(m, -ENOMEM, "out of memory", 13);
}

static void puts_(kt_metrics *m, const char *s)
{
    put(m, s, strlen(s));
}

/* Write s with backslash, newline and (in label values) double quote
 * escaped; bytes that are not UTF-8 become U+FFFD, which the format
 * requires of label values and help text alike. */
static void put_escaped(kt_metrics *m, const char *s, bool quote)
{
    const unsigned char *p = (const unsigned char *)s, *run = p;
    while (*p && !m->err) {
        unsigned c = *p;
        const char *esc = NULL;
        size_t skip = 1;
        if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '"' && quote)
            esc = "\\\"";
        else if (c >= 0x80) {
            /* the length of a valid sequence, or 0 */
            size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
                       : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
            for (size_t i = 1; i < n; i++)
                if ((p[i] & 0xc0) != 0x80)
                    n = 0;
            /* overlong 3- and 4-byte forms, surrogates, past U+10FFFF */
            if ((n == 3 && ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0))) ||
                (n == 4 && ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90))))
                n = 0;
            if (n == 0)
                esc = "\xef\xbf\xbd";
            else
                skip = n;
        }
        if (esc) {
            put(m, run, (size_t)(p - run));
            puts_(m, esc);
            run = p + 1;
        }
        p += skip;
    }
    put(m, run, (size_t)(p - run));
}

static bool name_ok(const char *s, size_t len, bool metric)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return metric || len < 2 || s[0] != '_' || s[1] != '_';
}

static const char *type_name(kt_metric_type t)
{
    switch (t) {
    case KT_METRIC_COUNTER: return "counter";
    case KT_METRIC_GAUGE: return "gauge";
    case KT_METRIC_HISTOGRAM: return "histogram";
    case KT_METRIC_UNTYPED: return "untyped";
    default: return NULL;
    }
}

int kt_metrics_family(kt_metrics *m, const char *prefix, const char *name,
                      kt_metric_type type, const char *help)
{
    if (m->err)
        return m->err;
    const char *tn = type_name(type);
    size_t plen = prefix ? strlen(prefix) : 0, nlen = name ? strlen(name) : 0;
    char full[256];
    if (plen + nlen >= sizeof(full))
        return fail(m, -EINVAL, name ? name : "", nlen);
    memcpy(full, prefix ? prefix : "", plen);
    memcpy(full + plen, name ? name : "", nlen);
    full[plen + nlen] = '\0';
    size_t len = plen + nlen;
    if (tn == NULL || !name_ok(full, len, true) || help == NULL || help[0] == '\0')
        return fail(m, -EINVAL, full, len);
    if (type == KT_METRIC_COUNTER && (len < 7 || strcmp(full + len - 6, "_total") != 0))
        return fail(m, -EINVAL, full, len);
    for (size_t i = 0; i < m->nnames; i++) {
        if (m->names[2 * i + 1] == len && memcmp(m->out.data + m->names[2 * i], full, len) == 0)
            return fail(m, -EINVAL, full, len);
    }
    if (m->nnames == m->capnames) {
        size_t cap = m->capnames ? 2 * m->capnames : 32;
        size_t *nn = kt_realloc(m->names, cap * 2 * sizeof(*nn));
        if (nn == NULL)
            return fail(m, -ENOMEM, "out of memory", 13);
        m->names = nn;
        m->capnames = cap;
    }

    puts_(m, "# HELP ");
    size_t off = m->out.len;
    put(m, full, len);
    put(m, " ", 1);
    put_escaped(m, help, false);
    puts_(m, "\n# TYPE ");
    put(m, full, len);
    put(m, " ", 1);
    puts_(m, tn);
    put(m, "\n", 1);
    if (m->err)
        return m->err;
    m->names[2 * m->nnames] = off;
    m->names[2 * m->nnames + 1] = len;
    m->nnames++;
    m->type = type;
    m->name_off = off;
    m->name_len = len;
    return 0;
}

/* name + suffix + {labels[, le="..."]} + space: everything before a value. */
static void put_series(kt_metrics *m, const char *suffix, const kt_label *labels, size_t nlabels,
                       const char *le)
{
    if (m->err)
        return;
    /* the name is copied out first: appending may move the buffer */
    char name[256];
    memcpy(name, m->out.data + m->name_off, m->name_len);
    put(m, name, m->name_len);
    if (suffix)
        puts_(m, suffix);
    if (nlabels == 0 && le == NULL) {
        put(m, " ", 1);
        return;
    }
    put(m, "{", 1);
    for (size_t i = 0; i < nlabels; i++) {
        const char *ln = labels[i].name ? labels[i].name : "";
        size_t len = strlen(ln);
        if (!name_ok(ln, len, false) || (m->type == KT_METRIC_HISTOGRAM && strcmp(ln, "le") == 0)) {
            fail(m, -EINVAL, ln, len);
            return;
        }
        for (size_t j = 0; j < i; j++) {
            if (labels[j].name && strcmp(labels[j].name, ln) == 0) {
                fail(m, -EINVAL, ln, len);
                return;
            }
        }
        if (i > 0)
            put(m, ",", 1);
        put(m, ln, len);
        put(m, "=\"", 2);
        put_escaped(m, labels[i].value ? labels[i].value : "", true);
        put(m, "\"", 1);
    }
    if (le) {
        if (nlabels > 0)
            put(m, ",", 1);
        puts_(m, "le=\"");
        puts_(m, le);
        put(m, "\"", 1);
    }
    put(m, "} ", 2);
}

/* The shortest decimal text that reads back as v (Go's ParseFloat and
 * strtod agree on it), or Prometheus's spelling of NaN and infinity. */
static size_t fmt_double(char *buf, size_t size, double v)
{
    int n;
    if (isnan(v))
        n = snprintf(buf, size, "NaN");
    else if (isinf(v))
        n = snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
    else if (fabs(v) < 9007199254740992.0 && v == floor(v))
        n = snprintf(buf, size, "%" PRId64, (int64_t)v);
    else {
        n = 0;
        for (int prec = 15; prec <= 17; prec++) {
            n = snprintf(buf, size, "%.*g", prec, v);
            if (strtod(buf, NULL) == v)
                break;
        }
    }
    return n > 0 ? (size_t)n : 0;
}

static bool sample_allowed(kt_metrics *m)
{
    if (m->err)
        return false;
    const char *why = m->type == KT_METRIC_NONE ? "sample outside a family"
                      : m->type == KT_METRIC_HISTOGRAM ? "plain sample in a histogram family"
                      : NULL;
    if (why)
        fail(m, -EINVAL, why, strlen(why));
    return why == NULL;
}

int kt_metrics_sample(kt_metrics *m, const kt_label *labels, size_t nlabels, double v)
{
    if (!sample_allowed(m))
        return m->err;
    char num[40];
    size_t n = fmt_double(num, sizeof(num), v);
    put_series(m, NULL, labels, nlabels, NULL);
    put(m, num, n);
    put(m, "\n", 1);
    return m->err;
}

int kt_metrics_sample_u64(kt_metrics *m, const kt_label *labels, size_t nlabels, uint64_t v)
{
    if (!sample_allowed(m))
        return m->err;
    char num[24];
    int n = snprintf(num, sizeof(num), "%" PRIu64 "\n", v);
    put_series(m, NULL, labels, nlabels, NULL);
    put(m, num, (size_t)n);
    return m->err;
}

int kt_metrics_hist_ns(kt_metrics *m, const kt_label *labels, size_t nlabels, const kt_hist *h)
{
    if (m->err)
        return m->err;
    if (m->type != KT_METRIC_HISTOGRAM) {
        const char *why = "histogram outside a histogram family";
        return fail(m, -EINVAL, why, strlen(why));
    }
    /* One pass: each non-empty bucket counts under the first bound at or
     * above its upper end; the bounds' counts then add up. */
    uint64_t per[KT_METRICS_BOUNDS] = { 0 };
    size_t b = 0;
    size_t nb = kt_hist_nbuckets();
    for (size_t i = 0; i < nb && b < KT_METRICS_BOUNDS; i++) {
        if (h->counts[i] == 0)
            continue;
        uint64_t hi;
        kt_hist_bucket(h, i, NULL, &hi, NULL);
        while (b < KT_METRICS_BOUNDS && hi > kt_metrics_bound_ns[b])
            b++;
        if (b < KT_METRICS_BOUNDS)
            per[b] += h->counts[i];
    }
    uint64_t cum = 0;
    char num[64];
    for (b = 0; b < KT_METRICS_BOUNDS; b++) {
        cum += per[b];
        put_series(m, "_bucket", labels, nlabels, kt_metrics_bound_text[b]);
        put(m, num, (size_t)snprintf(num, sizeof(num), "%" PRIu64 "\n", cum));
    }
    put_series(m, "_bucket", labels, nlabels, "+Inf");
    put(m, num, (size_t)snprintf(num, sizeof(num), "%" PRIu64 "\n", h->count));
    double sum = ((double)h->sum_hi * 18446744073709551616.0 + (double)h->sum_lo) / 1e9;
    put_series(m, "_sum", labels, nlabels, NULL);
    put(m, num, fmt_double(num, sizeof(num), sum));
    put(m, "\n", 1);
    put_series(m, "_count", labels, nlabels, NULL);
    put(m, num, (size_t)snprintf(num, sizeof(num), "%" PRIu64 "\n", h->count));
    return m->err;
}

int kt_metrics_counter(kt_metrics *m, const char *prefix, const char *name, const char *help,
                       uint64_t v)
{
    if (kt_metrics_family(m, prefix, name, KT_METRIC_COUNTER, help) == 0)
        kt_metrics_sample_u64(m, NULL, 0, v);
    return m->err;
}

int kt_metrics_gauge(kt_metrics *m, const char *prefix, const char *name, const char *help,
                     double v)
{
    if (kt_metrics_family(m, prefix, name, KT_METRIC_GAUGE, help) == 0)
        kt_metrics_sample(m, NULL, 0, v);
    return m->err;
}

/* ---- process metrics ------------------------------------------------------------------- */

/* Read a small /proc file whole into buf (NUL-terminated). Length or -1. */
static ssize_t read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got < size - 1) {
        ssize_t n = read(fd, buf + got, size - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    return (ssize_t)got;
}

/* The boot time (seconds since the epoch) from /proc/stat's btime line,
 * read line by line: the interrupt line before it can be long. 0 if not
 * found. */
static double boot_time(void)
{
    FILE *f = fopen("/proc/stat", "re");
    if (f == NULL)
        return 0;
    char line[256];
    bool at_start = true;
    double bt = 0;
    while (fgets(line, sizeof(line), f)) {
        if (at_start && strncmp(line, "btime ", 6) == 0) {
            bt = (double)strtoull(line + 6, NULL, 10);
            break;
        }
        at_start = strchr(line, '\n') != NULL;
    }
    fclose(f);
    return bt;
}

int kt_metrics_process(kt_metrics *m)
{
    char buf[1024];
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    if (read_small("/proc/self/stat", buf, sizeof(buf)) > 0 && tck > 0 && page > 0) {
        /* fields after the ")" that ends the command name: state is field
         * 3; utime 14, stime 15, starttime 22, vsize 23, rss 24 */
        char *p = strrchr(buf, ')');
        unsigned long long f[24] = { 0 };
        int n = 0;
        if (p) {
            p += 2;
            for (int field = 3; field <= 24 && *p; field++) {
                char *end;
                if (field >= 14) {
                    f[n++] = strtoull(p, &end, 10);
                } else {
                    end = strchr(p, ' ');
                    if (end == NULL)
                        break;
                }
                p = end;
                while (*p == ' ')
                    p++;
            }
        }
        if (n == 11) { /* fields 14..24 */
            double cpu = (double)(f[0] + f[1]) / (double)tck;
            kt_metrics_family(m, NULL, "process_cpu_seconds_total", KT_METRIC_COUNTER,
                              "Total user and system CPU time spent in seconds.");
            kt_metrics_sample(m, NULL, 0, cpu);
            kt_metrics_gauge(m, NULL, "process_virtual_memory_bytes",
                             "Virtual memory size in bytes.", (double)f[9]);
            kt_metrics_gauge(m, NULL, "process_resident_memory_bytes",
                             "Resident memory size in bytes.", (double)f[10] * (double)page);
            double boot = boot_time();
            if (boot > 0)
                kt_metrics_gauge(m, NULL, "process_start_time_seconds",
                                 "Start time of the process since unix epoch in seconds.",
                                 boot + (double)(f[8] / (unsigned long long)tck));
        }
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        kt_metrics_gauge(m, NULL, "process_max_fds", "Maximum number of open file descriptors.",
                         (double)rl.rlim_cur);
    return m->err;
}
