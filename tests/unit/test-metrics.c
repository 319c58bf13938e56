/*
 * test-metrics.c - the Prometheus writer and endpoint (src/common/metrics*).
 *
 * The writer: exact text for counters, gauges, labelled families and
 * histograms from kt_hist; escaping of help and label values (and invalid
 * UTF-8); number formatting; every misuse refused with a sticky error; the
 * size limit; allocation failure. The parser: the request head's end
 * found without rescanning, and a table of good and bad requests. The
 * endpoint, over real loopback sockets on the loop: 200/HEAD/404/405/400/
 * 431/505/500, the read and write timeouts, the connection limit, and
 * closing the server with connections open.
 *
 * Waits run the loop until an event, bounded by a deadline that fails the
 * test.
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <cmocka.h>
#include <kettle/kettle.h>
#include "metrics.h"
#include "metrics-int.h"

/* ---- writer ------------------------------------------------------------------ */

static const char *text(kt_metrics *m)
{
    /* NUL-terminate a copy's worth: the buffer may have no room to spare */
    static char buf[65536];
    size_t n = m->out.len < sizeof(buf) - 1 ? m->out.len : sizeof(buf) - 1;
    memcpy(buf, m->out.data ? m->out.data : "", n);
    buf[n] = '\0';
    return buf;
}

/* The exposition m holds is want to the byte; m is freed. */
static void expect_text(kt_metrics *m, const char *want)
{
    assert_string_equal(text(m), want);
    kt_metrics_free(m);
}

static void test_counter_gauge(void **state)
{
    (void)state;
    kt_metrics m;
    kt_metrics_init(&m, 0);
    assert_int_equal(kt_metrics_counter(&m, "kettled_", "fetches_total", "Fetches sent.", 42), 0);
    assert_int_equal(kt_metrics_gauge(&m, NULL, "kettled_clients", "Connected clients.", 3), 0);
    expect_text(&m, "# HELP kettled_fetches_total Fetches sent.\n"
                    "# TYPE kettled_fetches_total counter\n"
                    "kettled_fetches_total 42\n"
                    "# HELP kettled_clients Connected clients.\n"
                    "# TYPE kettled_clients gauge\n"
                    "kettled_clients 3\n");
}

static void test_labels_escaped(void **state)
{
    (void)state;
    kt_metrics m;
    kt_metrics_init(&m, 0);
    assert_int_equal(kt_metrics_family(&m, NULL, "x_total", KT_METRIC_COUNTER,
                                       "Help with \\ and\nnewline \"quoted\"."), 0);
    kt_label l[2] = { { "cmd", "a\"b\\c\nd" }, { "who", "caf\xc3\xa9 \xff\xc3 \xed\xa0\x80!" } };
    assert_int_equal(kt_metrics_sample_u64(&m, l, 2, 7), 0);
    kt_label e[1] = { { "cmd", "" } };
    assert_int_equal(kt_metrics_sample_u64(&m, e, 1, 0), 0);
    expect_text(&m, "# HELP x_total Help with \\\\ and\\nnewline \"quoted\".\n"
                    "# TYPE x_total counter\n"
                    "x_total{cmd=\"a\\\"b\\\\c\\nd\",who=\"caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd "
                    "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd!\"} 7\n"
                    "x_total{cmd=\"\"} 0\n");
}

static void test_numbers(void **state)
{
    (void)state;
    kt_metrics m;
    kt_metrics_init(&m, 0);
    kt_metrics_family(&m, NULL, "g", KT_METRIC_GAUGE, "A gauge.");
    const double v[] = { 0.1, 1e-7, 42.0, -3.5, 1.0 / 3.0, 1e300, -0.0, NAN, INFINITY, -INFINITY };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        assert_int_equal(kt_metrics_sample(&m, NULL, 0, v[i]), 0);
    kt_metrics_family(&m, NULL, "big_total", KT_METRIC_COUNTER, "A big counter.");
    assert_int_equal(kt_metrics_sample_u64(&m, NULL, 0, UINT64_MAX), 0);
    const char *t = strstr(text(&m), "g 0.1\n");
    assert_non_null(t);
    assert_string_equal(t, "g 0.1\ng 1e-07\ng 42\ng -3.5\ng 0.3333333333333333\ng 1e+300\n"
                           "g 0\ng NaN\ng +Inf\ng -Inf\n"
                           "# HELP big_total A big counter.\n# TYPE big_total counter\n"
                           "big_total 18446744073709551615\n");
    kt_metrics_free(&m);
}

/* The bucket line of le in t, or -1. */
static long long bucket(const char *t, const char *labels, const char *le)
{
    char key[160];
    snprintf(key, sizeof(key), "lat_seconds_bucket{%s%sle=\"%s\"} ", labels,
             labels[0] ? "," : "", le);
    const char *p = strstr(t, key);
    return p ? atoll(p + strlen(key)) : -1;
}

static void test_histogram(void **state)
{
    (void)state;
    kt_hist h;
    kt_hist_init(&h);
    kt_hist_record_n(&h, KT_USEC(30), 2); /* under 50 us */
    kt_hist_record(&h, KT_USEC(990));     /* its bucket ends at 991231 ns: under 1 ms */
    kt_hist_record(&h, KT_MSEC(1));       /* its bucket ends at 1003519 ns: under 2.5 ms */
    kt_hist_record(&h, KT_MSEC(7));
    kt_hist_record(&h, KT_SEC(20));       /* past the last bound: +Inf only */
    kt_metrics m;
    kt_metrics_init(&m, 0);
    assert_int_equal(kt_metrics_family(&m, NULL, "lat_seconds", KT_METRIC_HISTOGRAM,
                                       "Latency."), 0);
    kt_label l[1] = { { "backend", "10.0.0.1:7380" } };
    assert_int_equal(kt_metrics_hist_ns(&m, l, 1, &h), 0);
    kt_hist empty;
    kt_hist_init(&empty);
    assert_int_equal(kt_metrics_hist_ns(&m, NULL, 0, &empty), 0);
    const char *t = text(&m);
    const char *lb = "backend=\"10.0.0.1:7380\"";
    assert_int_equal(bucket(t, lb, "0.00005"), 2);
    assert_int_equal(bucket(t, lb, "0.0005"), 2);
    assert_int_equal(bucket(t, lb, "0.001"), 3);
    assert_int_equal(bucket(t, lb, "0.0025"), 4);
    assert_int_equal(bucket(t, lb, "0.005"), 4);
    assert_int_equal(bucket(t, lb, "0.01"), 5);
    assert_int_equal(bucket(t, lb, "10"), 5);
    assert_int_equal(bucket(t, lb, "+Inf"), 6);
    assert_non_null(strstr(t, "lat_seconds_sum{backend=\"10.0.0.1:7380\"} 20.00905\n"));
    assert_non_null(strstr(t, "lat_seconds_count{backend=\"10.0.0.1:7380\"} 6\n"));
    assert_int_equal(bucket(t, "", "+Inf"), 0);
    assert_non_null(strstr(t, "lat_seconds_sum 0\nlat_seconds_count 0\n"));
    /* every bound in order, cumulative, then +Inf, _sum, _count */
    long long prev = 0;
    for (size_t b = 0; b < KT_METRICS_BOUNDS; b++) {
        long long c = bucket(t, lb, kt_metrics_bound_text[b]);
        assert_true(c >= prev);
        prev = c;
        if (b > 0) {
            assert_true(kt_metrics_bound_ns[b] > kt_metrics_bound_ns[b - 1]);
            char cur[32], prv[32];
            snprintf(cur, sizeof(cur), "le=\"%s\"", kt_metrics_bound_text[b]);
            snprintf(prv, sizeof(prv), "le=\"%s\"", kt_metrics_bound_text[b - 1]);
            assert_true(strstr(t, cur) > strstr(t, prv));
        }
        assert_int_equal((uint64_t)(strtod(kt_metrics_bound_text[b], NULL) * 1e9 + 0.5),
                         kt_metrics_bound_ns[b]);
    }
    kt_metrics_free(&m);
}

static void test_misuse(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        kt_metric_type type;
        const char *help;
    } bad[] = {
        { "1abc", KT_METRIC_GAUGE, "h" },    { "a-b", KT_METRIC_GAUGE, "h" },
        { "a:b", KT_METRIC_GAUGE, "h" },     { "", KT_METRIC_GAUGE, "h" },
        { "fetches", KT_METRIC_COUNTER, "h" }, { "_total", KT_METRIC_COUNTER, "h" },
        { "ok", KT_METRIC_GAUGE, "" },       { "ok", KT_METRIC_GAUGE, NULL },
        { "ok", KT_METRIC_NONE, "h" },
    };
    kt_metrics m;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        kt_metrics_init(&m, 0);
        assert_int_equal(kt_metrics_family(&m, NULL, bad[i].name, bad[i].type, bad[i].help),
                         -EINVAL);
        assert_int_equal(m.out.len, 0);
        kt_metrics_free(&m);
    }

    /* a sample before any family, a plain sample in a histogram family, a
     * histogram in a gauge family, a repeated family */
    kt_hist h;
    kt_hist_init(&h);
    kt_metrics_init(&m, 0);
    assert_int_equal(kt_metrics_sample(&m, NULL, 0, 1), -EINVAL);
    kt_metrics_reset(&m);
    kt_metrics_family(&m, NULL, "h_seconds", KT_METRIC_HISTOGRAM, "h");
    assert_int_equal(kt_metrics_sample(&m, NULL, 0, 1), -EINVAL);
    kt_metrics_reset(&m);
    kt_metrics_family(&m, NULL, "g", KT_METRIC_GAUGE, "h");
    assert_int_equal(kt_metrics_hist_ns(&m, NULL, 0, &h), -EINVAL);
    kt_metrics_reset(&m);
    kt_metrics_gauge(&m, "a_", "g", "h", 1);
    assert_int_equal(kt_metrics_gauge(&m, NULL, "a_g", "h", 2), -EINVAL);
    assert_string_equal(m.what, "a_g");

    /* bad label names: syntax, reserved, repeated, "le" in a histogram */
    const kt_label l1[] = { { "1x", "v" } }, l2[] = { { "__x", "v" } },
                   l3[] = { { "a", "1" }, { "a", "2" } }, l4[] = { { "le", "1" } };
    const kt_label *ls[] = { l1, l2, l3 };
    const size_t ns[] = { 1, 1, 2 };
    for (size_t i = 0; i < 3; i++) {
        kt_metrics_reset(&m);
        kt_metrics_family(&m, NULL, "g", KT_METRIC_GAUGE, "h");
        assert_int_equal(kt_metrics_sample(&m, ls[i], ns[i], 1), -EINVAL);
    }
    kt_metrics_reset(&m);
    kt_metrics_family(&m, NULL, "g", KT_METRIC_GAUGE, "h");
    assert_int_equal(kt_metrics_sample(&m, l4, 1, 1), 0); /* fine in a gauge */
    kt_metrics_family(&m, NULL, "h_seconds", KT_METRIC_HISTOGRAM, "h");
    assert_int_equal(kt_metrics_hist_ns(&m, l4, 1, &h), -EINVAL);

    /* the error sticks: nothing more is written */
    size_t len = m.out.len;
    assert_int_equal(kt_metrics_gauge(&m, NULL, "fine", "h", 1), -EINVAL);
    assert_int_equal(m.out.len, len);
    assert_int_equal(kt_metrics_error(&m), -EINVAL);
    kt_metrics_reset(&m);
    assert_int_equal(kt_metrics_error(&m), 0);
    assert_int_equal(kt_metrics_gauge(&m, NULL, "fine", "h", 1), 0);
    kt_metrics_free(&m);
}

static void test_limit(void **state)
{
    (void)state;
    kt_metrics m;
    kt_metrics_init(&m, 200);
    int r = 0;
    char name[32];
    for (int i = 0; i < 100 && r == 0; i++) {
        snprintf(name, sizeof(name), "g%d", i);
        r = kt_metrics_gauge(&m, NULL, name, "A gauge of some length.", i);
    }
    assert_int_equal(r, -E2BIG);
    assert_true(m.out.len <= 200);
    kt_metrics_free(&m);
}

static int fail_allocs;
static void *failing_malloc(size_t n) { return fail_allocs ? NULL : malloc(n); }
static void *failing_realloc(void *p, size_t n) { return fail_allocs ? NULL : realloc(p, n); }

static void test_out_of_memory(void **state)
{
    (void)state;
    kt_allocator a = { failing_malloc, failing_realloc, free };
    kt_set_allocator(&a);
    kt_metrics m;
    kt_metrics_init(&m, 0);
    fail_allocs = 1;
    assert_int_equal(kt_metrics_gauge(&m, NULL, "g", "h", 1), -ENOMEM);
    fail_allocs = 0;
    kt_metrics_free(&m);
    kt_set_allocator(NULL);
}

static void test_process(void **state)
{
    (void)state;
    kt_metrics m;
    kt_metrics_init(&m, 0);
    assert_int_equal(kt_metrics_process(&m), 0);
    const char *t = text(&m);
    const char *rss = strstr(t, "\nprocess_resident_memory_bytes ");
    assert_non_null(rss);
    assert_true(atof(rss + 31) > 100000);
    assert_non_null(strstr(t, "\nprocess_cpu_seconds_total "));
    assert_non_null(strstr(t, "\nprocess_max_fds "));
    const char *st = strstr(t, "\nprocess_start_time_seconds ");
    assert_non_null(st);
    assert_true(atof(st + 28) > 1.5e9);
    kt_metrics_free(&m);
}

/* ---- request parser ---------------------------------------------------------- */

static void test_head_end(void **state)
{
    (void)state;
    const char *reqs[] = { "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
                           "GET /metrics HTTP/1.1\nHost: a\n\n", "GET / HTTP/1.0\r\n\r\n" };
    for (size_t r = 0; r < 3; r++) {
        size_t len = strlen(reqs[r]), scanned = 0, prev = 0;
        /* fed one byte at a time: found at the end, never before */
        for (size_t n = 1; n < len; n++) {
            assert_int_equal(kt__http_head_end(reqs[r], n, &scanned), 0);
            assert_true(scanned >= prev && scanned <= n && scanned + 2 >= n);
            prev = scanned;
        }
        assert_int_equal(kt__http_head_end(reqs[r], len, &scanned), len);
        scanned = 0;
        assert_int_equal(kt__http_head_end(reqs[r], len, &scanned), len);
    }
    /* bytes after the head are not part of it */
    size_t scanned = 0;
    assert_int_equal(kt__http_head_end("GET / HTTP/1.1\r\n\r\nBODY", 22, &scanned), 18);
}

static void test_parse(void **state)
{
    (void)state;
    static const struct {
        const char *req;
        int status;
        bool head;
    } cases[] = {
        { "GET /metrics HTTP/1.1\r\nHost: localhost:9379\r\nAccept: */*\r\n\r\n", 200, false },
        { "HEAD /metrics HTTP/1.0\r\n\r\n", 200, true },
        { "GET /metrics?name[]=x HTTP/1.1\r\n\r\n", 200, false },
        { "GET http://localhost:9379/metrics HTTP/1.1\r\n\r\n", 200, false },
        { "\r\nGET /metrics HTTP/1.1\r\n\r\n", 200, false },
        { "GET /metrics HTTP/1.1\nX-Empty:\n\n", 200, false },
        { "GET /metrics HTTP/1.1\r\nX:\tvalue with tab\r\n\r\n", 200, false },
        { "GET / HTTP/1.1\r\n\r\n", 404, false },
        { "GET /metricsx HTTP/1.1\r\n\r\n", 404, false },
        { "GET /metrics/ HTTP/1.1\r\n\r\n", 404, false },
        { "GET http://localhost HTTP/1.1\r\n\r\n", 404, false },
        { "OPTIONS * HTTP/1.1\r\n\r\n", 404, false },
        { "POST /other HTTP/1.1\r\n\r\n", 404, false },
        { "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\n", 405, false },
        { "DELETE /metrics HTTP/1.1\r\n\r\n", 405, false },
        { "get /metrics HTTP/1.1\r\n\r\n", 405, false },
        { "GET /metrics HTTP/2.0\r\n\r\n", 505, false },
        { "GET /metrics HTTP/0.9\r\n\r\n", 505, false },
        { "GET /metrics\r\n\r\n", 400, false },
        { "GET /metrics HTTP/1.1 x\r\n\r\n", 400, false },
        { "GET  /metrics HTTP/1.1\r\n\r\n", 400, false },
        { " GET /metrics HTTP/1.1\r\n\r\n", 400, false },
        { "G(T /metrics HTTP/1.1\r\n\r\n", 400, false },
        { "GET metrics HTTP/1.1\r\n\r\n", 400, false },
        { "GET /metrics HTTP/1.x\r\n\r\n", 400, false },
        { "GET /metrics http/1.1\r\n\r\n", 400, false },
        { "GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n", 400, false },
        { "GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n", 400, false },
        { "GET /metrics HTTP/1.1\r\n: novalue\r\n\r\n", 400, false },
        { "GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400, false },
        { "GET /metrics HTTP/1.1\r\nA: b\rc\r\n\r\n", 400, false },
        { "GET /metrics HTTP/1.1\r\nA: b\x01\r\n\r\n", 400, false },
        { "GET /met\x01rics HTTP/1.1\r\n\r\n", 400, false },
        { "\x16\x03\x01\x02\x01\x01\x02\x01\xfc\x03\x03\n\n", 400, false }, /* TLS-like */
        { "*1\r\n$4\r\nPING\r\n\r\n", 400, false },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kt__http_req req;
        size_t len = strlen(cases[i].req), scanned = 0;
        size_t end = kt__http_head_end(cases[i].req, len, &scanned);
        assert_int_equal(end, len);
        kt__http_parse(cases[i].req, end, &req);
        if (req.status != cases[i].status || req.head != cases[i].head)
            fail_msg("case %zu %s: status %d head %d", i, cases[i].req, req.status, req.head);
    }
}

/* ---- endpoint ---------------------------------------------------------------- */

static int render_calls, render_result;
static size_t render_size;

static int render_cb(kt_metrics *m, void *arg)
{
    (void)arg;
    render_calls++;
    kt_metrics_counter(m, "demo_", "requests_total", "Requests.", 5);
    if (render_size) { /* a long page */
        kt_metrics_family(m, "demo_", "filler", KT_METRIC_GAUGE, "Filler.");
        char v[32];
        for (size_t i = 0; m->out.len < render_size; i++) {
            snprintf(v, sizeof(v), "%zu", i);
            kt_label l[1] = { { "i", v } };
            kt_metrics_sample(m, l, 1, (double)i);
        }
    }
    return render_result;
}

typedef struct fixture {
    kt_loop *loop;
    kt_metrics_server *srv;
    uint16_t port;
} fixture;

static void start(fixture *f, const kt_metrics_options *opts)
{
    render_calls = render_result = 0;
    render_size = 0;
    assert_int_equal(kt_loop_new(&f->loop, NULL), 0);
    assert_int_equal(kt_metrics_listen(f->loop, "127.0.0.1:0", opts, render_cb, NULL, &f->srv), 0);
    kt_addr a;
    assert_int_equal(kt_metrics_server_addr(f->srv, &a), 0);
    f->port = ntohs(((struct sockaddr_in *)&a.ss)->sin_port);
}

static void finish(fixture *f)
{
    kt_metrics_server_close(f->srv);
    assert_int_equal(kt_loop_run(f->loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(kt_loop_run(f->loop, KT_RUN_NOWAIT), 0);
    kt_loop_stats st;
    kt_loop_get_stats(f->loop, &st);
    assert_int_equal(st.streams, 0);
    assert_int_equal(st.timers_pending, 0);
    kt_loop_free(f->loop);
}

static kt_metrics_stats stats(fixture *f)
{
    kt_metrics_stats st;
    kt_metrics_server_stats(f->srv, &st);
    return st;
}

static int client(fixture *f)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(f->port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    return fd;
}

/* Run the loop without blocking, and look at fd, until pred holds; fail
 * after 20 s. */
typedef struct reader {
    int fd;
    char buf[1 << 16];
    size_t len;
    bool eof, reset;
} reader;

static void pump(fixture *f, reader *r)
{
    assert_int_equal(kt_loop_run(f->loop, KT_RUN_NOWAIT), 0);
    if (r == NULL || r->eof)
        return;
    struct pollfd p = { .fd = r->fd, .events = POLLIN };
    if (poll(&p, 1, 1) <= 0)
        return;
    ssize_t n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - 1 - r->len, 0);
    if (n > 0) {
        r->len += (size_t)n;
        r->buf[r->len] = '\0';
    } else if (n == 0 || errno == ECONNRESET) {
        r->eof = true;
        r->reset = n < 0;
    }
}

#define WAIT(f, r, cond)                                                          \
    do {                                                                          \
        uint64_t dl_ = kt_clock_ns() + KT_SEC(20);                                \
        while (!(cond)) {                                                         \
            if (kt_clock_ns() > dl_)                                              \
                fail_msg("deadline passed waiting for %s", #cond);                \
            pump(f, r);                                                           \
        }                                                                         \
    } while (0)

static int status_of(const reader *r);

static void send_str(int fd, const char *s)
{
    assert_int_equal(send(fd, s, strlen(s), 0), (ssize_t)strlen(s));
}

/* The server counted requests, scrapes and errors (-1: any); then finish. */
static void finish_counted(fixture *f, int requests, int scrapes, int errors)
{
    kt_metrics_stats st = stats(f);
    if (requests >= 0)
        assert_int_equal(st.requests, requests);
    assert_int_equal(st.scrapes, scrapes);
    assert_int_equal(st.errors, errors);
    finish(f);
}

/* Send req (and FIN when shut), read the answer to EOF; its status. */
static int exchange(fixture *f, const char *req, size_t len, bool shut, reader *r)
{
    memset(r, 0, sizeof(*r));
    r->fd = client(f);
    assert_int_equal(send(r->fd, req, len, MSG_NOSIGNAL), (ssize_t)len);
    if (shut)
        shutdown(r->fd, SHUT_WR);
    WAIT(f, r, r->eof);
    close(r->fd);
    WAIT(f, NULL, stats(f).clients == 0);
    return status_of(r);
}

static int status_of(const reader *r)
{
    int st = 0;
    return sscanf(r->buf, "HTTP/1.1 %d ", &st) == 1 ? st : -1;
}

static const char *body_of(const reader *r)
{
    const char *b = strstr(r->buf, "\r\n\r\n");
    return b ? b + 4 : NULL;
}

static void test_http_get_head(void **state)
{
    (void)state;
    fixture f;
    start(&f, NULL);
    reader r;
    const char *get = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(exchange(&f, get, strlen(get), false, &r), 200);
    assert_non_null(strstr(r.buf, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    assert_non_null(strstr(r.buf, "\r\nConnection: close\r\n"));
    assert_non_null(strstr(r.buf, "\r\nDate: "));
    const char *body = body_of(&r);
    assert_non_null(body);
    const char *expect = "# HELP demo_requests_total Requests.\n"
                         "# TYPE demo_requests_total counter\ndemo_requests_total 5\n";
    assert_string_equal(body, expect);
    char cl[64];
    snprintf(cl, sizeof(cl), "\r\nContent-Length: %zu\r\n", strlen(expect));
    assert_non_null(strstr(r.buf, cl));

    const char *head = "HEAD /metrics HTTP/1.1\r\n\r\n";
    assert_int_equal(exchange(&f, head, strlen(head), true, &r), 200);
    assert_non_null(strstr(r.buf, cl));
    assert_string_equal(body_of(&r), "");
    assert_int_equal(render_calls, 2);
    finish_counted(&f, 2, 2, 0);
}

static void test_http_errors(void **state)
{
    (void)state;
    fixture f;
    start(&f, NULL);
    static const struct {
        const char *req;
        int status;
    } cases[] = {
        { "GET / HTTP/1.1\r\n\r\n", 404 },
        { "POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 405 },
        { "GET /metrics HTTP/3.0\r\n\r\n", 505 },
        { "GARBAGE\r\n\r\n", 400 },
        { "GET /metrics HTTP/1.1\r\nHost", 400 }, /* cut short by FIN */
    };
    reader r;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (exchange(&f, cases[i].req, strlen(cases[i].req), true, &r) != cases[i].status)
            fail_msg("%s: got %s", cases[i].req, r.buf);
        assert_non_null(strstr(r.buf, "\r\nConnection: close\r\n"));
        if (cases[i].status == 405)
            assert_non_null(strstr(r.buf, "\r\nAllow: GET, HEAD\r\n"));
    }
    assert_int_equal(render_calls, 0);

    /* a head past max_request: 431, without waiting for its end */
    char big[10000];
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET /metrics HTTP/1.1\r\nX: ", 26);
    assert_int_equal(exchange(&f, big, sizeof(big), false, &r), 431);
    assert_false(r.reset);

    /* the renderer fails: 500 */
    render_result = -EIO;
    const char *get = "GET /metrics HTTP/1.1\r\n\r\n";
    assert_int_equal(exchange(&f, get, strlen(get), false, &r), 500);
    render_result = 0;
    finish_counted(&f, -1, 0, 7);
}

static void test_http_timeouts(void **state)
{
    (void)state;
    fixture f;
    kt_metrics_options o = { .read_timeout = KT_MSEC(50), .write_timeout = KT_SEC(2) };
    start(&f, &o);

    /* a request trickled in and never finished: reset at read_timeout */
    reader r = { .fd = client(&f) };
    assert_int_equal(send(r.fd, "GET /met", 8, 0), 8);
    WAIT(&f, &r, r.eof);
    close(r.fd);
    WAIT(&f, NULL, stats(&f).clients == 0);
    assert_int_equal(stats(&f).timeouts, 1);

    /* a scraper that never reads a 4 MiB answer: reset at write_timeout,
     * and the loop serves others meanwhile */
    render_size = 4 << 20;
    int slow = client(&f);
    int small = 4096;
    setsockopt(slow, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    const char *get = "GET /metrics HTTP/1.1\r\n\r\n";
    send_str(slow, get);
    WAIT(&f, NULL, stats(&f).scrapes == 1);
    render_size = 0;
    assert_int_equal(exchange(&f, get, strlen(get), false, &r), 200);
    WAIT(&f, NULL, stats(&f).timeouts == 2);
    close(slow);
    WAIT(&f, NULL, stats(&f).clients == 0);
    finish(&f);
}

static void test_http_limit(void **state)
{
    (void)state;
    fixture f;
    kt_metrics_options o = { .max_clients = 2 };
    start(&f, &o);
    int a = client(&f), b = client(&f);
    WAIT(&f, NULL, stats(&f).clients == 2);
    for (int i = 0; i < 5; i++)
        pump(&f, NULL); /* the pause takes effect */
    assert_int_equal(stats(&f).paused, 1);

    /* a third waits in the backlog, unanswered, while two are open */
    reader r = { .fd = client(&f) };
    const char *get = "GET /metrics HTTP/1.1\r\n\r\n";
    send_str(r.fd, get);
    for (int i = 0; i < 50; i++) {
        pump(&f, &r);
        assert_true(stats(&f).clients <= 2);
    }
    assert_int_equal(r.len, 0);
    assert_int_equal(stats(&f).rejected, 0);

    /* one leaves: the third is served */
    close(a);
    WAIT(&f, &r, r.eof);
    assert_int_equal(status_of(&r), 200);
    close(r.fd);
    close(b);
    WAIT(&f, NULL, stats(&f).clients == 0);
    finish(&f);
}

static void test_http_close_with_clients(void **state)
{
    (void)state;
    fixture f;
    start(&f, NULL);
    int a = client(&f), b = client(&f);
    WAIT(&f, NULL, stats(&f).clients == 2);
    finish(&f); /* closes both, frees everything: ASan and the loop check */
    close(a);
    close(b);
}

static void test_listen_errors(void **state)
{
    (void)state;
    kt_loop *loop;
    kt_metrics_server *srv = NULL;
    assert_int_equal(kt_loop_new(&loop, NULL), 0);
    assert_int_equal(kt_metrics_listen(loop, "nonsense", NULL, render_cb, NULL, &srv), -EINVAL);
    assert_int_equal(kt_metrics_listen(loop, "127.0.0.1:0", NULL, NULL, NULL, &srv), -EINVAL);
    assert_null(srv);
    assert_int_equal(kt_metrics_listen(loop, "127.0.0.1:0", NULL, render_cb, NULL, &srv), 0);
    kt_addr a;
    assert_int_equal(kt_metrics_server_addr(srv, &a), 0);
    char spec[64];
    kt_addr_format(&a, spec, sizeof(spec));
    kt_metrics_server *dup = NULL;
    assert_int_equal(kt_metrics_listen(loop, spec, NULL, render_cb, NULL, &dup), -EADDRINUSE);
    kt_metrics_server_close(srv);
    kt_metrics_server_close(NULL);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    kt_loop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_gauge),
        cmocka_unit_test(test_labels_escaped),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_misuse),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_process),
        cmocka_unit_test(test_head_end),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_http_get_head),
        cmocka_unit_test(test_http_errors),
        cmocka_unit_test(test_http_timeouts),
        cmocka_unit_test(test_http_limit),
        cmocka_unit_test(test_http_close_with_clients),
        cmocka_unit_test(test_listen_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
