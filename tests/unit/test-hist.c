/*
 * test-hist.c - the latency histogram: relative error against an exact
 * sorted array across 1 us..100 s, merge, edge values, bucket layout.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <kettle/hist.h>
#include "unit.h"

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static uint64_t rnd(void)
{
    return unit_xorshift64(&rng_state);
}

/* Log-uniform in [lo, hi): every decade gets its share. */
static uint64_t rnd_log(double lo, double hi)
{
    double u = (double)(rnd() >> 11) / 9007199254740992.0;
    return (uint64_t)exp(log(lo) + u * (log(hi) - log(lo)));
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The value of rank ceil(p/100 * n) in sorted v, as kt_hist defines it. */
static uint64_t exact_percentile(const uint64_t *v, size_t n, double p)
{
    double r = p / 100.0 * (double)n;
    size_t rank = (size_t)r;
    if ((double)rank < r)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

static void check_error_bound(const kt_hist *h, uint64_t *v, size_t n)
{
    static const double ps[] = { 0, 0.1, 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99, 100 };
    qsort(v, n, sizeof(*v), cmp_u64);
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        uint64_t want = exact_percentile(v, n, ps[i]);
        uint64_t got = kt_hist_percentile(h, ps[i]);
        double rel = fabs((double)got - (double)want) / (double)want;
        if (rel > 0.01)
            fail_msg("p%g: got %llu want %llu (%.3f%%)", ps[i], (unsigned long long)got,
                     (unsigned long long)want, rel * 100);
    }
    /* Every value, not only the listed percentiles. */
    for (size_t i = 0; i < n; i += 97) {
        double p = 100.0 * (double)(i + 1) / (double)n;
        uint64_t want = exact_percentile(v, n, p);
        uint64_t got = kt_hist_percentile(h, p);
        assert_true(fabs((double)got - (double)want) <= 0.01 * (double)want);
    }
}

static void test_relative_error(void **state)
{
    enum { N = 200000 };
    uint64_t *v = malloc(N * sizeof(*v));
    kt_hist *h = malloc(sizeof(*h));
    double sum = 0;
    (void)state;

    assert_non_null(v);
    assert_non_null(h);
    /* Across the whole range at once. */
    kt_hist_init(h);
    for (size_t i = 0; i < N; i++) {
        v[i] = rnd_log(1e3, 1e11);
        sum += (double)v[i];
        kt_hist_record(h, v[i]);
    }
    assert_int_equal(kt_hist_count(h), N);
    assert_true(fabs(kt_hist_mean(h) - sum / N) <= 1e-9 * (sum / N));
    check_error_bound(h, v, N);

    /* And decade by decade, so that every part of the range sets the
     * percentiles somewhere. */
    for (double lo = 1e3; lo < 1e11; lo *= 10) {
        kt_hist_reset(h);
        for (size_t i = 0; i < N / 20; i++) {
            v[i] = rnd_log(lo, lo * 10);
            kt_hist_record(h, v[i]);
        }
        check_error_bound(h, v, N / 20);
    }
    free(v);
    free(h);
}

static void test_bucket_bounds(void **state)
{
    kt_hist *h = malloc(sizeof(*h));
    uint64_t prev_hi = 0, lo, hi, c;
    (void)state;

    assert_non_null(h);
    kt_hist_init(h);
    assert_int_equal(kt_hist_nbuckets(), KT_HIST_NBUCKETS);
    assert_true(sizeof(kt_hist) <= 32 * 1024);
    /* Contiguous, each at most 1/128 of its values wide from 1024 ns (1%
     * from 1 us), and a
     * value at either edge lands in its bucket. */
    for (size_t i = 0; i < kt_hist_nbuckets(); i++) {
        kt_hist_bucket(h, i, &lo, &hi, &c);
        assert_int_equal(c, 0);
        if (i > 0)
            assert_int_equal(lo, prev_hi + 1);
        assert_true(hi >= lo);
        if (lo >= 1024)
            assert_true((double)(hi - lo + 1) <= (double)lo / 128.0);
        else if (lo >= 1000)
            assert_true((double)(hi - lo + 1) <= (double)lo / 100.0);
        prev_hi = hi;
        kt_hist_record(h, lo);
        kt_hist_record(h, hi);
        kt_hist_bucket(h, i, NULL, NULL, &c);
        assert_int_equal(c, 2);
    }
    assert_true(prev_hi + 1 == KT_HIST_MAX_TRACKABLE);
    assert_true(KT_HIST_MAX_TRACKABLE >= 100ull * 1000000000ull);
    kt_hist_bucket(h, kt_hist_nbuckets(), &lo, &hi, &c);
    assert_true(lo == 0 && hi == 0 && c == 0);
    free(h);
}

static void test_merge(void **state)
{
    kt_hist *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b)), *both = malloc(sizeof(*both));
    (void)state;

    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(both);
    kt_hist_init(a);
    kt_hist_init(b);
    kt_hist_init(both);
    for (int i = 0; i < 50000; i++) {
        uint64_t v = rnd_log(1, 1e12);
        if (rnd() % 3) {
            kt_hist_record(a, v);
        } else {
            uint64_t n = 1 + rnd() % 5;
            kt_hist_record_n(b, v, n);
            kt_hist_record_n(both, v, n);
            continue;
        }
        kt_hist_record(both, v);
    }
    kt_hist_record(b, UINT64_MAX); /* the sums carry past 64 bits */
    kt_hist_record(both, UINT64_MAX);
    assert_int_equal(kt_hist_merge(a, b), 0);
    assert_memory_equal(a, both, sizeof(*a));
    /* Merging an empty histogram changes nothing (min stays exact). */
    kt_hist_reset(b);
    assert_int_equal(kt_hist_merge(a, b), 0);
    assert_memory_equal(a, both, sizeof(*a));
    assert_int_equal(kt_hist_merge(NULL, b), -EINVAL);
    assert_int_equal(kt_hist_merge(a, NULL), -EINVAL);
    free(a);
    free(b);
    free(both);
}

static void test_edges(void **state)
{
    kt_hist *h = malloc(sizeof(*h));
    uint64_t lo, hi, c;
    (void)state;

    assert_non_null(h);
    kt_hist_init(h);
    /* Empty. */
    assert_int_equal(kt_hist_count(h), 0);
    assert_int_equal(kt_hist_min(h), 0);
    assert_int_equal(kt_hist_max(h), 0);
    assert_int_equal(kt_hist_percentile(h, 50), 0);
    assert_true(kt_hist_mean(h) == 0.0);

    /* 0, 1 and UINT64_MAX: the extremes are exact, the top clamps. */
    kt_hist_record(h, 0);
    kt_hist_record(h, 1);
    kt_hist_record(h, UINT64_MAX);
    assert_int_equal(kt_hist_count(h), 3);
    assert_true(kt_hist_min(h) == 0);
    assert_true(kt_hist_max(h) == UINT64_MAX);
    assert_true(kt_hist_percentile(h, 0) == 0);
    assert_true(kt_hist_percentile(h, 100) == UINT64_MAX);
    assert_true(kt_hist_percentile(h, 50) <= 8); /* in the lowest bucket */
    assert_true(fabs(kt_hist_mean(h) - (double)UINT64_MAX / 3) < 1e6);
    kt_hist_bucket(h, 0, &lo, &hi, &c);
    assert_true(lo == 0 && hi == 7 && c == 2);
    kt_hist_bucket(h, kt_hist_nbuckets() - 1, &lo, &hi, &c);
    assert_int_equal(c, 1);
    assert_true(kt_hist_percentile(h, 99) >= lo);

    /* One value: every percentile is that value. */
    kt_hist_reset(h);
    kt_hist_record(h, 123456789);
    assert_true(kt_hist_percentile(h, 0) == 123456789);
    assert_true(kt_hist_percentile(h, 50) == 123456789);
    assert_true(kt_hist_percentile(h, 100) == 123456789);
    assert_true(kt_hist_percentile(h, -5) == 123456789);
    assert_true(kt_hist_percentile(h, 250) == 123456789);
    assert_true(kt_hist_percentile(h, NAN) == 123456789);

    /* 1..100 ms: p0 = min, p50 ~ 50 ms, p100 = max. */
    kt_hist_reset(h);
    for (uint64_t ms = 1; ms <= 100; ms++)
        kt_hist_record(h, ms * 1000000);
    assert_true(kt_hist_percentile(h, 0) == 1000000);
    assert_true(fabs((double)kt_hist_percentile(h, 50) - 50e6) <= 0.01 * 50e6);
    assert_true(kt_hist_percentile(h, 100) == 100000000);
    assert_true(kt_hist_mean(h) == 50.5e6);

    /* record_n(v, 0) records nothing. */
    kt_hist_reset(h);
    kt_hist_record_n(h, 5, 0);
    assert_int_equal(kt_hist_count(h), 0);
    assert_int_equal(kt_hist_min(h), 0);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relative_error),
        cmocka_unit_test(test_bucket_bounds),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
