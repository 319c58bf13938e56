/*
 * hist.c - the latency histogram (see kettle/hist.h for the scheme).
 *
 * Index of a value u (in 8 ns units): below 256 it is u itself (one unit
 * per bucket); above, with e the position of u's top bit, the top eight
 * bits of u pick one of 128 buckets in the e-th power of two:
 *
 *     s = e - 7,  index = s * 128 + (u >> s)        (u >> s is in 128..255)
 *
 * and taking e from (u | 255) makes the same formula give u below 256, so
 * recording is a clz, two shifts and an add, without branches.
 */
#include "config.h"
#include <errno.h>
#include <string.h>
#include <kettle/hist.h>

#define SUB_COUNT ((uint64_t)1 << KT_HIST_SUB_BITS)
#define TOP_UNITS ((uint64_t)1 << KT_HIST_TOP_BITS)

static inline size_t bucket_of(uint64_t v)
{
    uint64_t u = v >> KT_HIST_UNIT_SHIFT;
    unsigned e, s;

    u = u < TOP_UNITS ? u : TOP_UNITS - 1; /* past the top: the top bucket */
    e = 63u - (unsigned)__builtin_clzll(u | (2 * SUB_COUNT - 1));
    s = e - KT_HIST_SUB_BITS;
    return ((size_t)s << KT_HIST_SUB_BITS) + (size_t)(u >> s);
}

/* The units bucket i spans: [*lo_u, *hi_u]. */
static void bucket_units(size_t i, uint64_t *lo_u, uint64_t *hi_u)
{
    if (i < SUB_COUNT) {
        *lo_u = *hi_u = i;
    } else {
        unsigned s = (unsigned)(i >> KT_HIST_SUB_BITS) - 1;
        uint64_t m = (i & (SUB_COUNT - 1)) + SUB_COUNT;
        *lo_u = m << s;
        *hi_u = ((m + 1) << s) - 1;
    }
}

/* 128-bit sum += a * b, without relying on a 128-bit type. */
static void sum_add(kt_hist *h, uint64_t a, uint64_t b)
{
    uint64_t a0 = a & 0xffffffffu, a1 = a >> 32, b0 = b & 0xffffffffu, b1 = b >> 32;
    uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    uint64_t mid = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);
    uint64_t lo = (mid << 32) | (p00 & 0xffffffffu);
    uint64_t hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);

    h->sum_lo += lo;
    h->sum_hi += hi + (h->sum_lo < lo);
}

void kt_hist_init(kt_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void kt_hist_reset(kt_hist *h)
{
    kt_hist_init(h);
}

void kt_hist_record(kt_hist *h, uint64_t v)
{
    h->counts[bucket_of(v)]++;
    h->count++;
    h->sum_lo += v;
    h->sum_hi += h->sum_lo < v;
    h->min = v < h->min ? v : h->min;
    h->max = v > h->max ? v : h->max;
}

void kt_hist_record_n(kt_hist *h, uint64_t v, uint64_t n)
{
    if (n == 0)
        return;
    h->counts[bucket_of(v)] += n;
    h->count += n;
    sum_add(h, v, n);
    h->min = v < h->min ? v : h->min;
    h->max = v > h->max ? v : h->max;
}

int kt_hist_merge(kt_hist *dst, const kt_hist *src)
{
    if (dst == NULL || src == NULL)
        return -EINVAL;
    if (src->count == 0)
        return 0;
    for (size_t i = 0; i < KT_HIST_NBUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->count += src->count;
    dst->sum_lo += src->sum_lo;
    dst->sum_hi += src->sum_hi + (dst->sum_lo < src->sum_lo);
    dst->min = src->min < dst->min ? src->min : dst->min;
    dst->max = src->max > dst->max ? src->max : dst->max;
    return 0;
}

uint64_t kt_hist_percentile(const kt_hist *h, double p)
{
    uint64_t rank, seen = 0;
    double r;

    if (h->count == 0)
        return 0;
    if (!(p > 0)) /* NaN too */
        return h->min;
    if (p >= 100)
        return h->max;
    r = p / 100.0 * (double)h->count;
    rank = (uint64_t)r;
    if ((double)rank < r)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;

    for (size_t i = 0; i < KT_HIST_NBUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t lo, hi, mid;
            kt_hist_bucket(h, i, &lo, &hi, NULL);
            mid = lo + (hi - lo) / 2;
            if (mid < h->min)
                mid = h->min;
            if (mid > h->max)
                mid = h->max;
            return mid;
        }
    }
    return h->max; /* not reached: the counts add up to count */
}

double kt_hist_mean(const kt_hist *h)
{
    if (h->count == 0)
        return 0.0;
    return ((double)h->sum_hi * 18446744073709551616.0 + (double)h->sum_lo) / (double)h->count;
}

uint64_t kt_hist_min(const kt_hist *h)
{
    return h->count ? h->min : 0;
}

uint64_t kt_hist_max(const kt_hist *h)
{
    return h->count ? h->max : 0;
}

uint64_t kt_hist_count(const kt_hist *h)
{
    return h->count;
}

size_t kt_hist_nbuckets(void)
{
    return KT_HIST_NBUCKETS;
}

void kt_hist_bucket(const kt_hist *h, size_t i, uint64_t *lo, uint64_t *hi, uint64_t *count)
{
    uint64_t lo_u = 0, hi_u = 0, c = 0;
    bool ok = i < KT_HIST_NBUCKETS;

    if (ok) {
        bucket_units(i, &lo_u, &hi_u);
        c = h->counts[i];
    }
    if (lo)
        *lo = ok ? lo_u << KT_HIST_UNIT_SHIFT : 0;
    if (hi)
        *hi = ok ? ((hi_u + 1) << KT_HIST_UNIT_SHIFT) - 1 : 0;
    if (count)
        *count = c;
}
