/*
 * bench-future.c - the cost of one future's life: create, then(), resolve,
 * its continuation run from the ready queue, unref back to the free list.
 *
 * Three ways to drive it, reported side by side because they answer
 * different questions:
 *   direct   one future at a time, the ready queue drained by
 *            kt__futures_run() (the call the loop makes each iteration):
 *            the futures module alone
 *   loop     one future per kt_loop_run(KT_RUN_NOWAIT): adds a whole loop
 *            iteration (clock reads, a zero-timeout poll of the backend)
 *   batched  BATCH futures created and resolved, then one
 *            kt_loop_run(KT_RUN_NOWAIT) runs every continuation: the loop's
 *            cost shared, as in a server answering many requests at once
 * Each figure is the median of ROUNDS rounds of COUNT cycles.
 *
 *   bench-future [-n COUNT] [-b BATCH] [-r ROUNDS]
 *
 * This is a benchmark, not a test: it asserts nothing.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <kettle/kettle.h>
#include "internal.h"

static size_t count = 2000000;
static size_t batch = 1024;
static int rounds = 7;

static uint64_t sink; /* continuations write here so nothing is elided */

static void cont_cb(kt_future *f, void *arg)
{
    *(uint64_t *)arg += (uint64_t)kt_future_i64(f);
}

/* How a round runs the continuations it made ready: 0, or -1 on failure. */
static int settle_direct(kt_loop *loop)
{
    kt__futures_run(loop);
    return 0;
}

static int settle_loop(kt_loop *loop)
{
    return kt_loop_run(loop, KT_RUN_NOWAIT) < 0 ? -1 : 0;
}

/* n cycles one at a time, settled each time; ns per cycle, or -1 on
 * failure. Inlined into each caller, so that settle is a direct call. */
static inline __attribute__((always_inline)) double round_single(kt_loop *loop, size_t n,
                                                                 int (*settle)(kt_loop *))
{
    uint64_t t0 = kt_clock_ns();
    for (size_t i = 0; i < n; i++) {
        kt_future *f = kt_future_new(loop);
        if (f == NULL || kt_future_then(f, cont_cb, &sink) < 0)
            return -1;
        kt_future_resolve_i64(f, (int64_t)i);
        if (settle(loop) < 0)
            return -1;
        kt_future_unref(f);
    }
    return (double)(kt_clock_ns() - t0) / (double)n;
}

static double round_direct(kt_loop *loop)
{
    return round_single(loop, count, settle_direct);
}

static double round_loop(kt_loop *loop)
{
    return round_single(loop, count / 8, settle_loop); /* an iteration is slower: fewer */
}

static kt_future **fs;

static double round_batched(kt_loop *loop)
{
    size_t done = 0;
    uint64_t t0 = kt_clock_ns();
    while (done < count) {
        for (size_t i = 0; i < batch; i++) {
            fs[i] = kt_future_new(loop);
            if (fs[i] == NULL || kt_future_then(fs[i], cont_cb, &sink) < 0)
                return -1;
        }
        for (size_t i = 0; i < batch; i++)
            kt_future_resolve_i64(fs[i], (int64_t)i);
        if (kt_loop_run(loop, KT_RUN_NOWAIT) < 0)
            return -1;
        for (size_t i = 0; i < batch; i++)
            kt_future_unref(fs[i]);
        done += batch;
    }
    return (double)(kt_clock_ns() - t0) / (double)done;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median and minimum over the rounds (one warm-up round first, to fill the
 * free lists and the caches). */
static void measure(const char *name, double (*fn)(kt_loop *), kt_loop *loop)
{
    double r[64];
    if (fn(loop) < 0) {
        printf("| %-8s | failed |\n", name);
        return;
    }
    for (int i = 0; i < rounds; i++)
        if ((r[i] = fn(loop)) < 0) {
            printf("| %-8s | failed |\n", name);
            return;
        }
    qsort(r, (size_t)rounds, sizeof(r[0]), cmp_double);
    printf("| %-8s | %9.1f | %9.1f |\n", name, r[rounds / 2], r[0]);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc)
            count = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-b") && i + 1 < argc)
            batch = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [-n COUNT] [-b BATCH] [-r ROUNDS]\n", argv[0]);
            return 2;
        }
    }
    if (count < 8 || batch == 0 || rounds < 1 || rounds > 64) {
        fprintf(stderr, "need COUNT >= 8, BATCH >= 1, 1 <= ROUNDS <= 64\n");
        return 2;
    }
    kt_loop *loop;
    int rc = kt_loop_new(&loop, NULL);
    if (rc < 0) {
        fprintf(stderr, "kt_loop_new: %s\n", strerror(-rc));
        return 1;
    }
    fs = calloc(batch, sizeof(*fs));
    if (fs == NULL)
        return 1;
    printf("create -> then -> resolve -> continuation -> unref, backend %s\n", kt_loop_backend(loop));
    printf("%zu cycles per round, %d rounds, batch %zu\n\n", count, rounds, batch);
    printf("| %-8s | %9s | %9s |\n", "mode", "median ns", "best ns");
    printf("|----------|-----------|-----------|\n");
    measure("direct", round_direct, loop);
    measure("loop", round_loop, loop);
    measure("batched", round_batched, loop);
    printf("\n(sink %llu, live futures at end %llu)\n", (unsigned long long)sink,
           (unsigned long long)kt__futures_live(loop));
    free(fs);
    kt_loop_free(loop);
    return 0;
}
