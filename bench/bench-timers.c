/*
 * bench-timers.c - a million one-shot timers, kettle's heap against
 * libevent's, in one invocation.
 *
 * Workload: N timers (default 1,000,000) with timeouts drawn uniformly over
 * SPAN (default 1 s), then the loop runs until the last one has fired. Two
 * ways of arming, each reported:
 *   burst        all N armed before the loop runs: every timer whose
 *                deadline passes while the rest are being armed is late by
 *                up to the arming time, which therefore sets the p99; the
 *                library's timer array grows (and faults in) on the clock
 *   warm         the same burst after the library has held N timers once
 *                (all armed and stopped, off the clock): its array is
 *                already grown, as in a server that has seen this load
 *   inter        armed in chunks of CHUNK (default 4096) with one
 *                non-blocking loop iteration between chunks, as a server
 *                arms timers a batch per iteration (cold array)
 * Reported per run: time from the first arm to the last fire ("wall"), how
 * long arming took, lateness of each callback against its own deadline
 * (p50, p99, max), the share that fired early (coarse clocks), and peak
 * RSS. Each run is a forked child so that peak RSS is its own.
 *
 * Fairness: both read the clock while arming (kettle: kt_loop_update_time
 * every 64 timers; libevent reads it in each event_add outside its loop),
 * libevent runs with EVENT_BASE_FLAG_PRECISE_TIMER so that it uses the same
 * CLOCK_MONOTONIC rather than the coarse clock, and both keep their timer
 * structures in one preallocated array whose pages are touched before the
 * clock starts (in a server the timers live in connection objects that
 * already exist; faulting in the caller's array is not the library's cost,
 * while the libraries' own heap arrays grow on the clock). Lateness is
 * taken in the callback with clock_gettime(CLOCK_MONOTONIC).
 *
 *   bench-timers [-n COUNT] [-s SPAN_MS] [-c CHUNK] [--seed N] [--only kettle|libevent]
 *
 * This is a benchmark, not a test: it asserts nothing.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <kettle/kettle.h>
#include "rng.h"
#ifdef HAVE_LIBEVENT
#include <event2/event.h>
#endif

struct result {
    int ok;
    char name[32];
    double wall_s;     /* first arm to last fire */
    double arm_s;      /* arming all timers */
    double p50_ms, p99_ms, max_ms;
    double early_frac; /* fired before their deadline (coarse clocks) */
    long rss_mb;
};

static size_t n_timers = 1000000;
static uint64_t span_ns = 1000000000ull;
static uint64_t seed = 42;
static const char *only; /* run just this implementation */
static size_t chunk_size = 4096;
static size_t chunk;      /* 0: burst; else arm this many per iteration */
static bool warm;         /* hold N timers once before the clock starts */
static const char *const mode_names[] = { "burst", "warm", "inter" };
static int mode;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The tree's one PRNG, seeded alike for every implementation: the same
 * timeouts for each. */
static kt_rng rng;

/* Uniform in [0, span_ns) without a division. */
static uint64_t random_timeout(void)
{
    return (uint64_t)(((unsigned __int128)kt_rng_next(&rng) * span_ns) >> 64);
}

/* Fault in every page of p (a plain memset of fresh memory may be turned
 * into calloc and touch nothing). */
static void prefault(void *p, size_t len)
{
    volatile char *c = p;
    for (size_t i = 0; i < len; i += 4096)
        c[i] = 1;
}

/* Shared by both runs (each in its own child): due[i] holds timer i's
 * deadline until it fires, then its lateness (signed ns). */
static int64_t *due;
static size_t fired;
static uint64_t last_fire;

static void record(size_t i)
{
    uint64_t t = now_ns();
    due[i] = (int64_t)(t - (uint64_t)due[i]);
    fired++;
    last_fire = t;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Percentiles from the sorted lateness array, and peak RSS. */
static void summarize(struct result *r, uint64_t t0, uint64_t armed)
{
    size_t early = 0;
    qsort(due, n_timers, sizeof(*due), cmp_i64);
    for (size_t i = 0; i < n_timers && due[i] < 0; i++)
        early++;
    r->wall_s = (double)(last_fire - t0) / 1e9;
    r->arm_s = (double)(armed - t0) / 1e9;
    r->p50_ms = (double)due[n_timers / 2] / 1e6;
    r->p99_ms = (double)due[(size_t)((double)n_timers * 0.99)] / 1e6;
    r->max_ms = (double)due[n_timers - 1] / 1e6;
    r->early_frac = (double)early / (double)n_timers;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    r->rss_mb = ru.ru_maxrss / 1024;
    r->ok = fired == n_timers;
}

/* ---- kettle ----------------------------------------------------------------- */

static kt_timer *kt_timers;

static void kettle_cb(kt_timer *t, void *arg)
{
    record((size_t)(t - kt_timers));
    if (fired == n_timers)
        kt_loop_stop(arg);
}

static void run_kettle(struct result *r)
{
    kt_loop *loop;
    int rc = kt_loop_new(&loop, NULL);
    snprintf(r->name, sizeof(r->name), "kettle");
    if (rc < 0) {
        fprintf(stderr, "kt_loop_new: %s\n", strerror(-rc));
        return;
    }
    kt_timers = malloc(n_timers * sizeof(*kt_timers));
    if (kt_timers == NULL)
        return;
    prefault(kt_timers, n_timers * sizeof(*kt_timers));
    if (warm) {
        for (size_t i = 0; i < n_timers; i++) {
            kt_timer_init(loop, &kt_timers[i], kettle_cb, loop);
            if (kt_timer_start(&kt_timers[i], KT_SEC(3600), 0) < 0)
                return;
        }
        for (size_t i = 0; i < n_timers; i++)
            kt_timer_stop(&kt_timers[i]);
    }
    kt_rng_seed(&rng, seed);
    uint64_t t0 = now_ns();
    kt_loop_update_time(loop);
    for (size_t i = 0; i < n_timers; i++) {
        if (chunk && i % chunk == 0 && i > 0)
            (void)kt_loop_run(loop, KT_RUN_NOWAIT); /* also reads the clock */
        else if ((i & 63) == 0)
            kt_loop_update_time(loop);
        uint64_t timeout = random_timeout();
        due[i] = (int64_t)(kt_loop_now(loop) + timeout);
        kt_timer_init(loop, &kt_timers[i], kettle_cb, loop);
        if (kt_timer_start(&kt_timers[i], timeout, 0) < 0) {
            fprintf(stderr, "kt_timer_start failed\n");
            return;
        }
    }
    uint64_t armed = now_ns();
    rc = fired < n_timers ? kt_loop_run(loop, KT_RUN_DEFAULT) : 0;
    if (rc < 0)
        fprintf(stderr, "kt_loop_run: %s\n", strerror(-rc));
    summarize(r, t0, armed);
    snprintf(r->name, sizeof(r->name), "kettle/%s %s", kt_loop_backend(loop), mode_names[mode]);
    kt_loop_free(loop);
    free(kt_timers);
}

/* ---- libevent ------------------------------------------------------------------ */

#ifdef HAVE_LIBEVENT
static void levent_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    record((size_t)(uintptr_t)arg);
}

static void run_libevent(struct result *r)
{
    snprintf(r->name, sizeof(r->name), "libevent %s", mode_names[mode]);
    struct event_config *cfg = event_config_new();
    if (cfg == NULL)
        return;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (base == NULL)
        return;
    size_t evsize = event_get_struct_event_size();
    char *evs = malloc(n_timers * evsize);
    if (evs == NULL)
        return;
    prefault(evs, n_timers * evsize);
    if (warm) {
        struct timeval hour = { 3600, 0 };
        for (size_t i = 0; i < n_timers; i++) {
            struct event *ev = (struct event *)(evs + i * evsize);
            evtimer_assign(ev, base, levent_cb, (void *)(uintptr_t)i);
            if (evtimer_add(ev, &hour) < 0)
                return;
        }
        for (size_t i = 0; i < n_timers; i++)
            evtimer_del((struct event *)(evs + i * evsize));
    }
    kt_rng_seed(&rng, seed);
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < n_timers; i++) {
        if (chunk && i % chunk == 0 && i > 0)
            (void)event_base_loop(base, EVLOOP_NONBLOCK);
        uint64_t timeout = random_timeout();
        struct event *ev = (struct event *)(evs + i * evsize);
        struct timeval tv = { (time_t)(timeout / 1000000000ull), (suseconds_t)(timeout % 1000000000ull / 1000) };
        /* libevent works in microseconds: the deadline it will use */
        due[i] = (int64_t)(now_ns() + (uint64_t)tv.tv_sec * 1000000000ull + (uint64_t)tv.tv_usec * 1000ull);
        evtimer_assign(ev, base, levent_cb, (void *)(uintptr_t)i);
        if (evtimer_add(ev, &tv) < 0) {
            fprintf(stderr, "evtimer_add failed\n");
            return;
        }
    }
    uint64_t armed = now_ns();
    event_base_dispatch(base);
    summarize(r, t0, armed);
    event_base_free(base);
    free(evs);
}
#endif

/* Run fn in a child and read its result back through a pipe. */
static void in_child(void (*fn)(struct result *), struct result *out)
{
    int p[2];
    memset(out, 0, sizeof(*out));
    if (pipe(p) < 0)
        return;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        struct result r;
        memset(&r, 0, sizeof(r));
        close(p[0]);
        due = malloc(n_timers * sizeof(*due));
        if (due) {
            prefault(due, n_timers * sizeof(*due));
            fn(&r);
        }
        ssize_t w = write(p[1], &r, sizeof(r));
        _exit(w == (ssize_t)sizeof(r) ? 0 : 1);
    }
    close(p[1]);
    if (pid > 0) {
        ssize_t got = read(p[0], out, sizeof(*out));
        if (got != (ssize_t)sizeof(*out))
            out->ok = 0;
        waitpid(pid, NULL, 0);
    }
    close(p[0]);
}

static void print_row(const struct result *r)
{
    if (!r->ok) {
        printf("| %-22s | failed |\n", r->name[0] ? r->name : "?");
        return;
    }
    printf("| %-22s | %8.3f | %7.3f | %7.3f | %7.3f | %8.3f | %6.2f%% | %7ld |\n", r->name, r->wall_s,
           r->arm_s, r->p50_ms, r->p99_ms, r->max_ms, 100.0 * r->early_frac, r->rss_mb);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc)
            n_timers = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-s") && i + 1 < argc)
            span_ns = strtoull(argv[++i], NULL, 10) * 1000000ull;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "-c") && i + 1 < argc)
            chunk_size = strtoull(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [-n COUNT] [-s SPAN_MS] [-c CHUNK] [--seed N] [--only kettle|libevent]\n",
                    argv[0]);
            return 2;
        }
    }
    if (n_timers == 0 || span_ns == 0 || seed == 0 || chunk_size == 0) {
        fprintf(stderr, "count, span, chunk and seed must be non-zero\n");
        return 2;
    }
    printf("%zu one-shot timers, deadlines uniform over %.0f ms; inter = armed %zu per loop iteration\n\n",
           n_timers, (double)span_ns / 1e6, chunk_size);
    printf("| %-22s | %8s | %7s | %7s | %7s | %8s | %7s | %7s |\n", "implementation", "wall s", "arm s",
           "p50 ms", "p99 ms", "max ms", "early", "RSS MB");
    printf("|------------------------|----------|---------|---------|---------|----------|---------|---------|\n");
    struct result r;
    for (mode = 0; mode < 3; mode++) {
        chunk = mode == 2 ? chunk_size : 0;
        warm = mode == 1;
        if (only == NULL || !strcmp(only, "kettle")) {
            in_child(run_kettle, &r);
            print_row(&r);
        }
#ifdef HAVE_LIBEVENT
        if (only == NULL || !strcmp(only, "libevent")) {
            in_child(run_libevent, &r);
            print_row(&r);
        }
#else
        printf("| libevent               | not built (no libevent_core) |\n");
#endif
    }
    printf("\nwall: first arm to last fire; lateness: callback time minus its own deadline\n");
    return 0;
}
