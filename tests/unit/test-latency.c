/*
 * test-latency.c - kettle-db's latency models and random generator: the
 * SPEC grammar, and each model's sample statistics against its parameters
 * (seeded, so the run is reproducible; bounds tolerant enough never to
 * flake, tight enough to catch a wrong formula).
 */
#include "config.h"
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <kettle/kettle.h>
#include "latency.h"
#include "fault.h"
#include "rng.h"

#define N 200000
#define MS 1e6

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct stats {
    double mean, sd, min, max, median, p90, p99;
    double logmean, logsd; /* of the positive samples */
};

static struct stats sample(const char *spec, uint64_t seed, int64_t key, uint64_t max_ns)
{
    kdb_latency m;
    const char *why = NULL;
    kt_rng r;
    struct stats st = { .min = INFINITY, .max = 0 };
    double *v = malloc(N * sizeof *v);
    double sum = 0, sum2 = 0, lsum = 0, lsum2 = 0;
    size_t npos = 0;

    assert_non_null(v);
    assert_int_equal(kdb_latency_parse(spec, &m, &why), 0);
    kt_rng_seed(&r, seed);
    for (size_t i = 0; i < N; i++) {
        double d = (double)kdb_latency_sample(&m, &r, key, max_ns);
        v[i] = d;
        sum += d;
        sum2 += d * d;
        if (d < st.min)
            st.min = d;
        if (d > st.max)
            st.max = d;
        if (d > 0) {
            lsum += log(d);
            lsum2 += log(d) * log(d);
            npos++;
        }
    }
    st.mean = sum / N;
    st.sd = sqrt(sum2 / N - st.mean * st.mean);
    if (npos) {
        st.logmean = lsum / (double)npos;
        st.logsd = sqrt(lsum2 / (double)npos - st.logmean * st.logmean);
    }
    qsort(v, N, sizeof *v, cmp_double);
    st.median = v[N / 2];
    st.p90 = v[N * 9 / 10];
    st.p99 = v[N * 99 / 100];
    free(v);
    return st;
}

static void assert_near(double got, double want, double rel)
{
    if (fabs(got - want) > rel * fabs(want)) {
        print_error("got %g, want %g within %g%%\n", got, want, rel * 100);
        fail();
    }
}

static void test_parse(void **state)
{
    (void)state;
    kdb_latency m;
    const char *why = NULL;
    static const char *const good[][2] = {
        { "none", "none" },
        { "fixed 50ms", "fixed 50ms" },
        { "  fixed   1.5s ", "fixed 1500ms" },
        { "50", "fixed 50ms" },
        { "200us", "fixed 200us" },
        { "uniform 10ms 50ms", "uniform 10ms 50ms" },
        { "normal 50ms 10ms", "normal 50ms 10ms" },
        { "exponential 20ms", "exponential 20ms" },
        { "lognormal 20ms 0.5", "lognormal 20ms 0.5" },
        { "pareto 10ms 1.5", "pareto 10ms 1.5" },
        { "proportional 100ms", "proportional 100ms" },
        { "FIXED 2s", "fixed 2s" },
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(kdb_latency_parse(good[i][0], &m, &why), 0);
        assert_string_equal(m.text, good[i][1]);
    }
    static const char *const bad[] = {
        "", "fixed", "fixed 1ms 2ms", "uniform 10ms", "uniform 50ms 10ms", "normal 1ms x",
        "lognormal 1ms 0", "pareto 0 1.5", "pareto 1ms -1", "exponential -1ms", "bogus 1ms",
        "fixed 5 parsecs", "proportional", "none 1", "fixed 1ms 2ms 3ms 4ms 5ms",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        m.kind = KDB_LAT_FIXED;
        assert_int_equal(kdb_latency_parse(bad[i], &m, &why), -EINVAL);
        assert_non_null(why);
        assert_int_equal(m.kind, KDB_LAT_FIXED); /* untouched on error */
    }
}

static void test_fixed_and_none(void **state)
{
    (void)state;
    struct stats s = sample("fixed 50ms", 1, 7, KT_SEC(60));
    assert_true(s.min == 50 * MS && s.max == 50 * MS);
    s = sample("none", 1, 7, KT_SEC(60));
    assert_true(s.max == 0);
}

static void test_uniform(void **state)
{
    (void)state;
    struct stats s = sample("uniform 10ms 50ms", 2, 0, KT_SEC(60));
    assert_true(s.min >= 10 * MS && s.max <= 50 * MS);
    assert_near(s.mean, 30 * MS, 0.01);
    assert_near(s.sd, 40 * MS / sqrt(12), 0.02);
    assert_near(s.p90, 46 * MS, 0.01);
}

static void test_normal(void **state)
{
    (void)state;
    struct stats s = sample("normal 50ms 10ms", 3, 0, KT_SEC(60));
    assert_near(s.mean, 50 * MS, 0.01);
    assert_near(s.sd, 10 * MS, 0.02);
    assert_near(s.median, 50 * MS, 0.01);
    /* 90th percentile of N(50, 10) is 50 + 1.2816 x 10 */
    assert_near(s.p90, 62.816 * MS, 0.01);
    /* floored at 0: mean 1ms, sd 10ms puts ~46% of the mass at exactly 0 */
    s = sample("normal 1ms 10ms", 4, 0, KT_SEC(60));
    assert_true(s.min == 0);
    assert_true(s.median < 1 * MS);
}

static void test_exponential(void **state)
{
    (void)state;
    struct stats s = sample("exponential 20ms", 5, 0, KT_SEC(60));
    assert_near(s.mean, 20 * MS, 0.015);
    assert_near(s.sd, 20 * MS, 0.03);
    assert_near(s.median, 20 * MS * log(2.0), 0.02);
    assert_near(s.p99, 20 * MS * log(100.0), 0.03);
}

static void test_lognormal(void **state)
{
    (void)state;
    struct stats s = sample("lognormal 20ms 0.5", 6, 0, KT_SEC(60));
    assert_near(s.median, 20 * MS, 0.015);
    assert_near(s.logmean, log(20 * MS), 0.001);
    assert_near(s.logsd, 0.5, 0.02);
    assert_near(s.mean, 20 * MS * exp(0.125), 0.02);
}

static void test_pareto(void **state)
{
    (void)state;
    struct stats s = sample("pareto 10ms 1.5", 7, 0, KT_SEC(3600));
    assert_true(s.min >= 10 * MS);
    assert_near(s.min, 10 * MS, 0.001);
    /* quantile q: scale x (1 - q)^(-1/shape) */
    assert_near(s.median, 10 * MS * pow(0.5, -1 / 1.5), 0.02);
    assert_near(s.p90, 10 * MS * pow(0.1, -1 / 1.5), 0.03);
    assert_near(s.p99, 10 * MS * pow(0.01, -1 / 1.5), 0.08);
    /* shape 3: finite mean scale x shape / (shape - 1) */
    s = sample("pareto 10ms 3", 8, 0, KT_SEC(3600));
    assert_near(s.mean, 15 * MS, 0.02);
    /* the heavy tail is capped by max-delay */
    s = sample("pareto 10ms 0.5", 9, 0, KT_SEC(1));
    assert_true(s.max == 1e9);
}

static void test_proportional(void **state)
{
    (void)state;
    kdb_latency m;
    const char *why;
    kt_rng r;
    kt_rng_seed(&r, 1);
    assert_int_equal(kdb_latency_parse("proportional 100ms", &m, &why), 0);
    assert_true(kdb_latency_sample(&m, &r, 0, KT_SEC(60)) == 0);
    assert_true(kdb_latency_sample(&m, &r, 1, KT_SEC(60)) == KT_MSEC(100));
    assert_true(kdb_latency_sample(&m, &r, 3, KT_SEC(60)) == KT_MSEC(300));
    assert_true(kdb_latency_sample(&m, &r, -5, KT_SEC(60)) == 0);
    assert_true(kdb_latency_sample(&m, &r, INT64_MAX, KT_SEC(60)) == KT_SEC(60));
    assert_true(kdb_latency_sample(&m, &r, 1000, KT_SEC(60)) == KT_SEC(60));
}

static void test_seed_reproducible(void **state)
{
    (void)state;
    kt_rng a, b, c;
    kt_rng_seed(&a, 42);
    kt_rng_seed(&b, 42);
    kt_rng_seed(&c, 43);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = kt_rng_next(&a), y = kt_rng_next(&b), z = kt_rng_next(&c);
        assert_true(x == y);
        differ += x != z;
    }
    assert_true(differ > 990);
    /* seed 0 is a valid seed, not a degenerate state */
    kt_rng_seed(&a, 0);
    assert_true(kt_rng_next(&a) != kt_rng_next(&a));
    /* uniform bits: each of 64 bits set about half the time */
    kt_rng_seed(&a, 7);
    int ones[64] = { 0 };
    for (int i = 0; i < 20000; i++) {
        uint64_t x = kt_rng_next(&a);
        for (int k = 0; k < 64; k++)
            ones[k] += (int)((x >> k) & 1);
    }
    for (int k = 0; k < 64; k++)
        assert_true(ones[k] > 9500 && ones[k] < 10500);
}

static void test_fault_parse_and_roll(void **state)
{
    (void)state;
    kdb_faults fs;
    kdb_fault f;
    kdb_fault_kind k;
    const char *why;
    char buf[200];
    kt_rng r;

    kdb_faults_init(&fs);
    assert_int_equal(kdb_fault_parse_line("cut 0.5 7", &k, &f, &why), 0);
    assert_int_equal(k, KDB_F_CUT);
    assert_int_equal(f.n, 7);
    assert_string_equal(kdb_fault_describe(k, &f, buf, sizeof buf), "cut 0.5 7");
    assert_int_equal(kdb_fault_parse_line("trickle 1 2 5ms", &k, &f, &why), 0);
    assert_true(f.n == 2 && f.ns == KT_MSEC(5));
    assert_int_equal(kdb_fault_parse_line("error 1 ERR boom now", &k, &f, &why), 0);
    assert_string_equal(f.msg, "ERR boom now");
    assert_int_equal(kdb_fault_parse_line("stall 1.5", &k, &f, &why), -EINVAL);
    assert_int_equal(kdb_fault_parse_line("stall", &k, &f, &why), -EINVAL);
    assert_int_equal(kdb_fault_parse_line("stall 0.1 x", &k, &f, &why), -EINVAL);
    assert_int_equal(kdb_fault_parse_line("melt 0.1", &k, &f, &why), -EINVAL);
    assert_int_equal(kdb_fault_parse_line("garbage 1 0", &k, &f, &why), -EINVAL);

    /* error 0.2 + stall 0.3: shares of one draw */
    assert_int_equal(kdb_fault_parse_line("error 0.2", &k, &f, &why), 0);
    kdb_faults_set(&fs, k, &f);
    assert_int_equal(kdb_fault_parse_line("stall 0.3", &k, &f, &why), 0);
    kdb_faults_set(&fs, k, &f);
    kt_rng_seed(&r, 11);
    int n_err = 0, n_stall = 0, n_none = 0;
    for (int i = 0; i < N; i++) {
        switch (kdb_faults_roll(&fs, &r)) {
        case KDB_F_ERROR: n_err++; break;
        case KDB_F_STALL: n_stall++; break;
        case KDB_F_NONE: n_none++; break;
        default: fail();
        }
    }
    assert_near(n_err, 0.2 * N, 0.02);
    assert_near(n_stall, 0.3 * N, 0.02);
    assert_near(n_none, 0.5 * N, 0.02);
    /* whole-server faults never come out of the per-request roll */
    kdb_faults_init(&fs);
    assert_int_equal(kdb_fault_parse_line("refuse 1", &k, &f, &why), 0);
    kdb_faults_set(&fs, k, &f);
    assert_int_equal(kdb_faults_roll(&fs, &r), KDB_F_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_fixed_and_none),
        cmocka_unit_test(test_uniform),
        cmocka_unit_test(test_normal),
        cmocka_unit_test(test_exponential),
        cmocka_unit_test(test_lognormal),
        cmocka_unit_test(test_pareto),
        cmocka_unit_test(test_proportional),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_fault_parse_and_roll),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
