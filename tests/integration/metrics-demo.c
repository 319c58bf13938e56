/*
 * metrics-demo.c - a tiny program that serves a few metrics through the
 * metrics endpoint, for tests/integration/test-ops-metrics.py.
 *
 *   metrics-demo [--listen ADDR] [--max-clients N] [--read-timeout MS]
 *                [--write-timeout MS] [--filler N]
 *
 * It prints "listening on ADDR" once the endpoint listens, "page N: B
 * bytes" for each page rendered, and exits 0 on SIGTERM or SIGINT. Each scrape counts itself and records a latency; the
 * families cover every kind the writer makes: a counter, a labelled
 * counter with awkward label values, gauges, labelled histograms, the
 * endpoint's own counters, the process metrics, and on the first page
 * only --filler N more gauge samples (a long page for one slow scraper,
 * short ones for the others).
 */
#include "config.h"
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <kettle/kettle.h>
#include "metrics.h"

typedef struct demo {
    kt_loop *loop;
    kt_metrics_server *srv;
    uint64_t scrapes;
    long filler;
    kt_hist lat[2];
} demo;

static int render_cb(kt_metrics *m, void *arg)
{
    demo *d = arg;
    d->scrapes++;
    kt_hist_record(&d->lat[0], KT_USEC(40) * d->scrapes);
    kt_hist_record(&d->lat[1], KT_MSEC(3));

    kt_metrics_counter(m, "demo_", "scrapes_total", "Scrapes of this page.", d->scrapes);
    kt_metrics_family(m, "demo_", "commands_total", KT_METRIC_COUNTER,
                      "Commands by name (label values with \\, \" and a newline).");
    static const char *const names[] = { "get", "mget", "odd \"quoted\" \\ name\nline2",
                                         "caf\xc3\xa9" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        kt_label l[1] = { { "cmd", names[i] } };
        kt_metrics_sample_u64(m, l, 1, 10 * (i + 1));
    }
    kt_metrics_gauge(m, "demo_", "temperature_celsius", "A gauge with a fraction.", -3.25);
    kt_metrics_family(m, "demo_", "backend_up", KT_METRIC_GAUGE, "1 if the backend is up.");
    kt_label b1[1] = { { "backend", "127.0.0.1:7380" } }, b2[1] = { { "backend", "[::1]:7380" } };
    kt_metrics_sample(m, b1, 1, 1);
    kt_metrics_sample(m, b2, 1, 0);
    kt_metrics_family(m, "demo_", "fetch_duration_seconds", KT_METRIC_HISTOGRAM,
                      "Fetch latency per backend.");
    kt_metrics_hist_ns(m, b1, 1, &d->lat[0]);
    kt_metrics_hist_ns(m, b2, 1, &d->lat[1]);

    kt_metrics_stats st;
    kt_metrics_server_stats(d->srv, &st);
    kt_metrics_counter(m, "demo_", "metrics_requests_total", "HTTP requests answered.",
                       st.requests);
    kt_metrics_counter(m, "demo_", "metrics_errors_total", "HTTP error answers.", st.errors);
    kt_metrics_counter(m, "demo_", "metrics_timeouts_total", "Connections timed out.",
                       st.timeouts);
    kt_metrics_gauge(m, "demo_", "metrics_clients", "Open metrics connections.", st.clients);
    kt_metrics_process(m);

    if (d->filler > 0 && d->scrapes == 1) {
        kt_metrics_family(m, "demo_", "filler", KT_METRIC_GAUGE, "Filler samples.");
        char v[24];
        for (long i = 0; i < d->filler; i++) {
            snprintf(v, sizeof(v), "%ld", i);
            kt_label l[1] = { { "i", v } };
            kt_metrics_sample(m, l, 1, (double)i);
        }
    }
    printf("page %" PRIu64 ": %zu bytes\n", d->scrapes, m->out.len);
    fflush(stdout);
    return 0;
}

static void signal_cb(kt_loop *loop, int signo, void *arg)
{
    (void)signo;
    demo *d = arg;
    kt_metrics_server_close(d->srv);
    kt_loop_signal(loop, SIGTERM, NULL, NULL);
    kt_loop_signal(loop, SIGINT, NULL, NULL);
    kt_loop_stop(loop);
}

static long arg_num(const char *opt, const char *v)
{
    char *end;
    long n = v ? strtol(v, &end, 10) : -1;
    if (v == NULL || *end || n < 0) {
        fprintf(stderr, "metrics-demo: %s wants a number\n", opt);
        exit(2);
    }
    return n;
}

int main(int argc, char **argv)
{
    static demo d;
    const char *listen = "127.0.0.1:0";
    kt_metrics_options o = { 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--listen") == 0 && v)
            listen = v;
        else if (strcmp(a, "--max-clients") == 0)
            o.max_clients = (unsigned)arg_num(a, v);
        else if (strcmp(a, "--read-timeout") == 0)
            o.read_timeout = KT_MSEC(arg_num(a, v));
        else if (strcmp(a, "--write-timeout") == 0)
            o.write_timeout = KT_MSEC(arg_num(a, v));
        else if (strcmp(a, "--filler") == 0)
            d.filler = arg_num(a, v);
        else {
            fprintf(stderr, "usage: metrics-demo [--listen ADDR] [--max-clients N] "
                            "[--read-timeout MS] [--write-timeout MS] [--filler N]\n");
            return 2;
        }
        i++;
    }
    kt_hist_init(&d.lat[0]);
    kt_hist_init(&d.lat[1]);
    int r = kt_loop_new(&d.loop, NULL);
    if (r == 0)
        r = kt_metrics_listen(d.loop, listen, &o, render_cb, &d, &d.srv);
    if (r < 0) {
        fprintf(stderr, "metrics-demo: %s: %s\n", listen, strerror(-r));
        return 1;
    }
    kt_addr a;
    char buf[80];
    kt_metrics_server_addr(d.srv, &a);
    printf("listening on %s\n", kt_addr_format(&a, buf, sizeof(buf)));
    fflush(stdout);
    kt_loop_signal(d.loop, SIGTERM, signal_cb, &d);
    kt_loop_signal(d.loop, SIGINT, signal_cb, &d);
    r = kt_loop_run(d.loop, KT_RUN_DEFAULT);
    /* let the closes finish */
    kt_loop_run(d.loop, KT_RUN_NOWAIT);
    kt_loop_free(d.loop);
    return r < 0 ? 1 : 0;
}
