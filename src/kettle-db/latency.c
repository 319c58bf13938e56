/*
 * latency.c - parsing and sampling of the latency models (see latency.h).
 * Sampling costs a few ns and never allocates: it runs once per key.
 */
#include "config.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <kettle/common.h>
#include "latency.h"
#include "opt.h"

static const struct {
    const char *name;
    kdb_lat_kind kind;
    int nparams;
    bool second_is_duration;
} models[] = {
    { "none", KDB_LAT_NONE, 0, false },
    { "fixed", KDB_LAT_FIXED, 1, false },
    { "uniform", KDB_LAT_UNIFORM, 2, true },
    { "normal", KDB_LAT_NORMAL, 2, true },
    { "exponential", KDB_LAT_EXPONENTIAL, 1, false },
    { "lognormal", KDB_LAT_LOGNORMAL, 2, false },
    { "pareto", KDB_LAT_PARETO, 2, false },
    { "proportional", KDB_LAT_PROPORTIONAL, 1, false },
};

#define NMODELS (sizeof models / sizeof models[0])
#define MAX_WORDS 4
#define WORD_LEN 48

const char *kdb_latency_kind_name(kdb_lat_kind kind)
{
    for (size_t i = 0; i < NMODELS; i++)
        if (models[i].kind == kind)
            return models[i].name;
    return "unknown";
}

const char *kdb_format_duration(uint64_t ns, char *buf, size_t size)
{
    if (ns != 0 && ns % 1000000000ull == 0)
        snprintf(buf, size, "%llus", (unsigned long long)(ns / 1000000000ull));
    else if (ns != 0 && ns % 1000000ull == 0)
        snprintf(buf, size, "%llums", (unsigned long long)(ns / 1000000ull));
    else if (ns != 0 && ns % 1000ull == 0)
        snprintf(buf, size, "%lluus", (unsigned long long)(ns / 1000ull));
    else
        snprintf(buf, size, "%lluns", (unsigned long long)ns);
    return buf;
}

/* Split spec into at most MAX_WORDS blank-separated words. Returns the
 * count, or -1 when there are too many or one is too long. */
static int split_words(const char *spec, char words[MAX_WORDS][WORD_LEN])
{
    int n = 0;
    const char *p = spec;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            return n;
        const char *start = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        size_t len = (size_t)(p - start);
        if (n == MAX_WORDS || len >= WORD_LEN)
            return -1;
        memcpy(words[n], start, len);
        words[n][len] = '\0';
        n++;
    }
}

static int parse_dur(const char *w, double *out)
{
    uint64_t ns;
    if (kt_parse_duration(w, KT_MSEC(1), &ns) < 0)
        return -EINVAL;
    *out = (double)ns;
    return 0;
}

int kdb_latency_parse(const char *spec, kdb_latency *out, const char **why)
{
    static const char *const usage =
        "expected none | fixed D | uniform LO HI | normal MEAN SD | exponential MEAN | "
        "lognormal MEDIAN SIGMA | pareto SCALE SHAPE | proportional UNIT";
    char w[MAX_WORDS][WORD_LEN];
    kdb_latency m = { .kind = KDB_LAT_NONE };
    int n = split_words(spec ? spec : "", w);
    if (n <= 0) {
        *why = usage;
        return -EINVAL;
    }
    size_t i;
    for (i = 0; i < NMODELS; i++)
        if (strcasecmp(w[0], models[i].name) == 0)
            break;
    if (i == NMODELS) {
        /* a bare duration means "fixed D" */
        if (n == 1 && parse_dur(w[0], &m.a) == 0) {
            i = 1;
        } else {
            *why = usage;
            return -EINVAL;
        }
    } else if (n - 1 != models[i].nparams) {
        *why = usage;
        return -EINVAL;
    } else {
        if (n > 1 && parse_dur(w[1], &m.a) < 0) {
            *why = "expected a duration such as 50ms, 1.5s or 200us";
            return -EINVAL;
        }
        if (n > 2) {
            int r = models[i].second_is_duration ? parse_dur(w[2], &m.b) : kt_opt_parse_double(w[2], &m.b);
            if (r < 0) {
                *why = models[i].second_is_duration ? "expected a duration such as 50ms, 1.5s or 200us"
                                                    : "expected a number";
                return -EINVAL;
            }
        }
    }
    m.kind = models[i].kind;

    char d1[32], d2[32];
    switch (m.kind) {
    case KDB_LAT_NONE:
        snprintf(m.text, sizeof m.text, "none");
        break;
    case KDB_LAT_FIXED:
    case KDB_LAT_EXPONENTIAL:
    case KDB_LAT_PROPORTIONAL:
        snprintf(m.text, sizeof m.text, "%s %s", models[i].name,
                 kdb_format_duration((uint64_t)m.a, d1, sizeof d1));
        break;
    case KDB_LAT_UNIFORM:
        if (m.b < m.a) {
            *why = "uniform: HI must not be below LO";
            return -EINVAL;
        }
        /* fall through */
    case KDB_LAT_NORMAL:
        snprintf(m.text, sizeof m.text, "%s %s %s", models[i].name,
                 kdb_format_duration((uint64_t)m.a, d1, sizeof d1),
                 kdb_format_duration((uint64_t)m.b, d2, sizeof d2));
        break;
    case KDB_LAT_LOGNORMAL:
    case KDB_LAT_PARETO:
        if (m.b <= 0 || m.b > 1000) {
            *why = m.kind == KDB_LAT_PARETO ? "pareto: SHAPE must be in (0, 1000]"
                                            : "lognormal: SIGMA must be in (0, 1000]";
            return -EINVAL;
        }
        if (m.kind == KDB_LAT_PARETO && m.a <= 0) {
            *why = "pareto: SCALE must be positive";
            return -EINVAL;
        }
        snprintf(m.text, sizeof m.text, "%s %s %g", models[i].name,
                 kdb_format_duration((uint64_t)m.a, d1, sizeof d1), m.b);
        break;
    }
    *out = m;
    return 0;
}

uint64_t kdb_latency_sample(const kdb_latency *m, kt_rng *r, int64_t key, uint64_t max_ns)
{
    double d;
    switch (m->kind) {
    case KDB_LAT_NONE: d = 0; break;
    case KDB_LAT_FIXED: d = m->a; break;
    case KDB_LAT_UNIFORM: d = m->a + (m->b - m->a) * kt_rng_uniform(r); break;
    case KDB_LAT_NORMAL: d = m->a + m->b * kt_rng_normal(r); break;
    case KDB_LAT_EXPONENTIAL: d = -m->a * log(kt_rng_uniform_pos(r)); break;
    case KDB_LAT_LOGNORMAL: d = m->a * exp(m->b * kt_rng_normal(r)); break;
    case KDB_LAT_PARETO: d = m->a / pow(kt_rng_uniform_pos(r), 1.0 / m->b); break;
    case KDB_LAT_PROPORTIONAL: d = key > 0 ? (double)key * m->a : 0; break;
    default: d = 0; break;
    }
    /* !(d > 0) also catches NaN */
    if (!(d > 0))
        return 0;
    if (d >= (double)max_ns)
        return max_ns;
    return (uint64_t)(d + 0.5);
}

int kdb_latency_print(const char *spec, uint64_t seed, int64_t n, uint64_t max_ns, FILE *out)
{
    kdb_latency m;
    const char *why;
    kt_rng r;
    char d[32];
    if (kdb_latency_parse(spec, &m, &why) < 0) {
        fprintf(stderr, "kettle-db: latency '%s': %s\n", spec ? spec : "", why);
        return -EINVAL;
    }
    if (seed == 0)
        seed = kt_rng_seed_random(&r);
    else
        kt_rng_seed(&r, seed);
    fprintf(out, "# latency %s, seed %llu, max-delay %s, delays in us\n", m.text,
            (unsigned long long)seed, kdb_format_duration(max_ns, d, sizeof d));
    for (int64_t k = 1; k <= n; k++) {
        uint64_t ns = kdb_latency_sample(&m, &r, k, max_ns);
        fprintf(out, "%llu.%03llu\n", (unsigned long long)(ns / 1000), (unsigned long long)(ns % 1000));
    }
    return fflush(out) == 0 ? 0 : -EIO;
}
