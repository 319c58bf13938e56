/*
 * stat.c - kettle-cli --stat: the server's INFO read once per interval,
 * one line of figures each time, a header every 20 lines (redis-cli's
 * --stat, with the columns of the server at the other end):
 *
 *   kettled    requests (total) and per second, clients, blocked clients,
 *              fetches/s, fetch failures/s, request timeouts/s, p99 fetch
 *              latency (the worst backend's recent_p99_us), backends
 *              up/total, loop lag (loop_lag_us)
 *   kettle-db  requests (total, per second), requests in service, queued,
 *              faults fired/s, clients
 *   others     requests (total, per second), clients, blocked, memory,
 *              keys, connections/s
 *
 * Every figure is read by its INFO field name; a field the server does not
 * give shows as "-". Rates are the change over the interval; requests/s
 * leaves out --stat's own INFO.
 *
 * Also the stop flag and the pause the refreshing views share.
 */
#include "config.h"
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <kettle/common.h>
#include "cli.h"

#define HEADER_EVERY 20

volatile sig_atomic_t kc_stop;

static void stop_handler(int sig)
{
    (void)sig;
    kc_stop = 1;
}

void kc_catch_stop(void)
{
    struct sigaction sa = { .sa_handler = stop_handler };
    sigemptyset(&sa.sa_mask);
    /* no SA_RESTART: a blocked poll() returns at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int kc_pause_until(uint64_t deadline)
{
    for (;;) {
        if (kc_stop)
            return -EINTR;
        uint64_t now = kt_clock_ns();
        if (now >= deadline)
            return 0;
        uint64_t ms = (deadline - now + 999999) / 1000000;
        poll(NULL, 0, ms > 60000 ? 60000 : (int)ms);
    }
}

/* One INFO reply's text. */
typedef struct info {
    char *text;
    bool ok;
} info;

/* The value of field name (up to the end of its line), or NULL. */
static const char *field(const info *in, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (const char *p = in->ok ? in->text : NULL; p != NULL && *p;) {
        const char *eol = strchr(p, '\n');
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        if (ll > n && memcmp(p, name, n) == 0 && p[n] == ':') {
            *len = ll - n - 1;
            while (*len > 0 && (p[n + 1 + *len - 1] == '\r'))
                (*len)--;
            return p + n + 1;
        }
        p = eol ? eol + 1 : NULL;
    }
    return NULL;
}

static bool number(const info *in, const char *name, double *out)
{
    size_t len;
    const char *v = field(in, name, &len);
    if (v == NULL || len == 0 || len > 40)
        return false;
    char buf[48], *end;
    memcpy(buf, v, len);
    buf[len] = '\0';
    *out = strtod(buf, &end);
    return end != buf;
}

/* In the line's "a=1,b=2" list, the value of key. */
static bool sub_text(const char *v, size_t len, const char *key, const char **out, size_t *olen)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl < len; i++) {
        if ((i == 0 || v[i - 1] == ',') && memcmp(v + i, key, kl) == 0 && v[i + kl] == '=') {
            const char *p = v + i + kl + 1, *end = memchr(p, ',', len - i - kl - 1);
            *out = p;
            *olen = end ? (size_t)(end - p) : len - i - kl - 1;
            return true;
        }
    }
    return false;
}

static bool sub_number(const char *v, size_t len, const char *key, double *out)
{
    const char *p;
    size_t n;
    char buf[48];
    if (!sub_text(v, len, key, &p, &n) || n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, p, n);
    buf[n] = '\0';
    *out = strtod(buf, NULL);
    return true;
}

/* Visit every line "<prefix><digits>:value" (backend0:, db0:). */
typedef void (*line_cb)(const char *v, size_t len, void *arg);

static void each_numbered(const info *in, const char *prefix, line_cb cb, void *arg)
{
    size_t pl = strlen(prefix);
    for (const char *p = in->ok ? in->text : NULL; p != NULL && *p;) {
        const char *eol = strchr(p, '\n');
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        if (ll > pl && memcmp(p, prefix, pl) == 0) {
            size_t i = pl;
            while (i < ll && p[i] >= '0' && p[i] <= '9')
                i++;
            if (i > pl && i < ll && p[i] == ':') {
                size_t vl = ll - i - 1;
                if (vl > 0 && p[i + vl] == '\r')
                    vl--;
                cb(p + i + 1, vl, arg);
            }
        }
        p = eol ? eol + 1 : NULL;
    }
}

/* ---- columns -------------------------------------------------------------------- */

typedef struct sample {
    info prev, cur;
    double dt;  /* seconds between them */
} sample;

typedef struct column {
    const char *title;
    void (*cell)(const sample *s, const char *field_name, char *out, size_t size);
    const char *field;
} column;

static void dash(char *out, size_t size)
{
    snprintf(out, size, "-");
}

/* The change of a counter, per second. */
static void rate(const sample *s, const char *f, char *out, size_t size)
{
    double a, b;
    if (number(&s->prev, f, &a) && number(&s->cur, f, &b) && s->dt > 0)
        snprintf(out, size, "%.0f", b >= a ? (b - a) / s->dt : 0.0);
    else
        dash(out, size);
}

/* Requests per second without --stat's own INFO. */
static void requests(const sample *s, const char *f, char *out, size_t size)
{
    double a, b;
    if (number(&s->prev, f, &a) && number(&s->cur, f, &b) && s->dt > 0)
        snprintf(out, size, "%.0f", b - a >= 1 ? (b - a - 1) / s->dt : 0.0);
    else
        dash(out, size);
}

static void value(const sample *s, const char *f, char *out, size_t size)
{
    size_t len;
    const char *v = field(&s->cur, f, &len);
    if (v != NULL && len > 0)
        snprintf(out, size, "%.*s", (int)(len < 20 ? len : 20), v);
    else
        dash(out, size);
}

struct backends {
    unsigned total, up, with_p99;
    double p99_us; /* the worst backend's */
};

static void backend_line(const char *v, size_t len, void *arg)
{
    struct backends *b = arg;
    double p99;
    b->total++;
    const char *st = NULL;
    size_t sl = 0;
    if (sub_text(v, len, "state", &st, &sl) && sl == 2 && memcmp(st, "up", 2) == 0)
        b->up++;
    if (sub_number(v, len, "recent_p99_us", &p99)) {
        b->with_p99++;
        if (p99 > b->p99_us)
            b->p99_us = p99;
    }
}

static void backends_up(const sample *s, const char *f, char *out, size_t size)
{
    struct backends b = { 0 };
    each_numbered(&s->cur, "backend", backend_line, &b);
    if (b.total > 0)
        snprintf(out, size, "%u/%u", b.up, b.total);
    else
        dash(out, size);
}

static void fetch_p99(const sample *s, const char *f, char *out, size_t size)
{
    struct backends b = { 0 };
    each_numbered(&s->cur, "backend", backend_line, &b);
    if (b.with_p99 > 0)
        snprintf(out, size, "%.1f", b.p99_us / 1000);
    else
        dash(out, size);
}

/* A field in microseconds, shown in milliseconds. */
static void micros(const sample *s, const char *f, char *out, size_t size)
{
    double v;
    if (number(&s->cur, f, &v))
        snprintf(out, size, "%.1f", v / 1000);
    else
        dash(out, size);
}

/* The sum of every fault_*_count: faults fired per second. */
static double fault_sum(const info *in, bool *found)
{
    double sum = 0;
    for (const char *p = in->ok ? in->text : NULL; p != NULL && *p;) {
        const char *eol = strchr(p, '\n');
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        const char *colon = memchr(p, ':', ll);
        if (colon != NULL && ll > 6 && memcmp(p, "fault_", 6) == 0 && colon - p > 12 &&
            memcmp(colon - 6, "_count", 6) == 0) {
            sum += strtod(colon + 1, NULL);
            *found = true;
        }
        p = eol ? eol + 1 : NULL;
    }
    return sum;
}

static void faults(const sample *s, const char *f, char *out, size_t size)
{
    bool fa = false, fb = false;
    double a = fault_sum(&s->prev, &fa), b = fault_sum(&s->cur, &fb);
    if (fa && fb && s->dt > 0)
        snprintf(out, size, "%.0f", b >= a ? (b - a) / s->dt : 0.0);
    else
        dash(out, size);
}

static void key_line(const char *v, size_t len, void *arg)
{
    double k;
    if (sub_number(v, len, "keys", &k))
        *(double *)arg += k;
}

static void keys(const sample *s, const char *f, char *out, size_t size)
{
    double total = 0;
    each_numbered(&s->cur, "db", key_line, &total);
    snprintf(out, size, "%.0f", total);
}

static const column kettled_cols[] = {
    { "requests", value, "total_commands_processed" },
    { "requests/s", requests, "total_commands_processed" },
    { "clients", value, "connected_clients" },
    { "blocked", value, "blocked_clients" },
    { "fetches/s", rate, "fetches" },
    { "fetch-fail/s", rate, "fetch_failures" },
    { "timeouts/s", rate, "request_timeouts" },
    { "fetch-p99-ms", fetch_p99, NULL },
    { "backends", backends_up, NULL },
    { "loop-lag-ms", micros, "loop_lag_us" },
    { NULL, NULL, NULL },
};

static const column db_cols[] = {
    { "requests", value, "requests_served" },
    { "requests/s", rate, "requests_served" },
    { "in-service", value, "requests_in_service" },
    { "queued", value, "requests_queued" },
    { "faults/s", faults, NULL },
    { "clients", value, "connected_clients" },
    { NULL, NULL, NULL },
};

static const column other_cols[] = {
    { "requests", value, "total_commands_processed" },
    { "requests/s", requests, "total_commands_processed" },
    { "clients", value, "connected_clients" },
    { "blocked", value, "blocked_clients" },
    { "memory", value, "used_memory_human" },
    { "keys", keys, NULL },
    { "connections/s", rate, "total_connections_received" },
    { NULL, NULL, NULL },
};

/* ---- the loop ------------------------------------------------------------------- */

/* INFO into in; false (with the reason printed) when the connection failed. */
static bool fetch_info(kc_conn *c, const kc_opts *o, info *in)
{
    static const kt_resp_arg cmd[1] = { { "INFO", 4 } };
    kt_resp_reply r = { 0 };
    const char *why = NULL;
    kt_free(in->text);
    in->text = NULL;
    in->ok = false;
    if (c->fd < 0 && kc_open(c, o) < 0)
        return false;
    int rc = kc_send(c, 1, cmd);
    if (rc == 0)
        rc = kc_read_reply(c, &r, &why);
    if (rc == 0 && (r.nodes[0].type == KT_RESP_BULK || r.nodes[0].type == KT_RESP_STRING)) {
        in->text = kt_strndup(r.nodes[0].p, r.nodes[0].len);
        in->ok = in->text != NULL;
    } else if (rc == 0) {
        fprintf(stderr, "INFO: %.*s\n", (int)r.nodes[0].len, r.nodes[0].p ? r.nodes[0].p : "");
    } else if (rc != -EINTR) {
        fprintf(stderr, "Error: %s (trying again)\n",
                rc == -ECONNRESET ? "Server closed the connection" : why ? why : strerror(-rc));
        kc_close(c);
    }
    kt_resp_reply_free(&r);
    return in->ok;
}

/* The server at the other end, by INFO's server_name (or, from older
 * kettle-db, kettle_db_version; from redis, redis_version). */
static const column *columns_for(const info *in, const char **kind)
{
    size_t len;
    const char *v = field(in, "server_name", &len);
    if (v != NULL && len == 7 && memcmp(v, "kettled", 7) == 0) {
        *kind = "kettled";
        return kettled_cols;
    }
    if ((v != NULL && len == 9 && memcmp(v, "kettle-db", 9) == 0) ||
        field(in, "kettle_db_version", &len) != NULL) {
        *kind = "kettle-db";
        return db_cols;
    }
    *kind = field(in, "redis_version", &len) ? "redis-server" : "server";
    return other_cols;
}

static void print_row(const column *cols, char cells[][24], bool header)
{
    for (size_t i = 0; cols[i].title; i++) {
        int w = (int)strlen(cols[i].title);
        if (w < 7)
            w = 7;
        printf("%s%*s", i ? "  " : "", w, header ? cols[i].title : cells[i]);
    }
    putchar('\n');
    fflush(stdout);
}

int kc_stat(kc_conn *c, const kc_opts *o)
{
    uint64_t interval = o->interval_ns ? o->interval_ns : KT_SEC(1);
    sample s = { { NULL, false }, { NULL, false }, 0 };
    const column *cols = NULL;
    const char *kind = NULL;
    char cells[16][24];
    unsigned lines = 0;
    uint64_t last = 0;

    kc_catch_stop();
    c->stop = &kc_stop;
    uint64_t next = kt_clock_ns();
    while (!kc_stop) {
        info tmp = s.prev;
        s.prev = s.cur;
        s.cur = tmp;
        uint64_t now = kt_clock_ns();
        if (fetch_info(c, o, &s.cur)) {
            if (cols == NULL) {
                cols = columns_for(&s.cur, &kind);
                printf("%s at %s, every %.3g s (Ctrl-C stops)\n", kind, c->name, interval / 1e9);
            }
            if (s.prev.ok) {
                s.dt = (now - last) / 1e9;
                size_t n = 0;
                for (; cols[n].title && n < 16; n++)
                    cols[n].cell(&s, cols[n].field, cells[n], sizeof(cells[n]));
                if (lines++ % HEADER_EVERY == 0)
                    print_row(cols, cells, true);
                print_row(cols, cells, false);
            }
            last = now;
        }
        next += interval;
        if (next < kt_clock_ns())
            next = kt_clock_ns() + interval; /* fell behind: no burst */
        kc_pause_until(next);
    }
    kt_free(s.prev.text);
    kt_free(s.cur.text);
    c->stop = NULL;
    return 0;
}
