/*
 * kettle/hist.h - a latency histogram in HdrHistogram's log-linear scheme.
 *
 * Values are nanoseconds. From 1024 ns up each power of two is cut into
 * 128 equal buckets, so a bucket is at most 1/128 of its values wide;
 * below, buckets are 8 ns wide. A percentile (the middle of its bucket) is
 * thus within 0.4% of the true value from 1 us up to KT_HIST_MAX_TRACKABLE
 * (2^37 ns, about 137 s). Values past the top count in the top bucket,
 * while min, max and the mean stay exact.
 *
 * A kt_hist is one fixed-size struct (28 KiB): no allocation, recording is
 * O(1) (a count-leading-zeros and a few shifts), and two histograms merge
 * by adding their counts.
 */
#ifndef KETTLE_HIST_H
#define KETTLE_HIST_H

#include <kettle/common.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KT_HIST_SUB_BITS   7  /* 2^7 buckets per power of two */
#define KT_HIST_UNIT_SHIFT 3  /* values are kept in units of 8 ns */
#define KT_HIST_TOP_BITS   34 /* ... below 2^34 units */
#define KT_HIST_MAX_TRACKABLE ((uint64_t)1 << (KT_HIST_TOP_BITS + KT_HIST_UNIT_SHIFT))
#define KT_HIST_NBUCKETS ((KT_HIST_TOP_BITS - KT_HIST_SUB_BITS + 1) << KT_HIST_SUB_BITS)

typedef struct kt_hist {
    uint64_t count;            /* values recorded */
    uint64_t min, max;         /* exact; min is UINT64_MAX while empty */
    uint64_t sum_lo, sum_hi;   /* exact 128-bit sum, for the mean */
    uint64_t counts[KT_HIST_NBUCKETS];
} kt_hist;

/* Make h empty. (A zeroed kt_hist is not: call this first.) */
void kt_hist_init(kt_hist *h);
/* Empty h again; the same as kt_hist_init(). */
void kt_hist_reset(kt_hist *h);

/* Record one value (ns). */
void kt_hist_record(kt_hist *h, uint64_t v);
/* Record v n times. */
void kt_hist_record_n(kt_hist *h, uint64_t v, uint64_t n);

/* Add src's values to dst (the same as recording them into dst).
 * 0, or -EINVAL for a NULL argument. */
int kt_hist_merge(kt_hist *dst, const kt_hist *src);

/* The value below which p percent of the values lie (p in 0..100, clamped):
 * the middle of the bucket holding the value of rank ceil(p/100 * count),
 * kept within [min, max]. p <= 0 gives min, p >= 100 gives max. 0 if empty. */
uint64_t kt_hist_percentile(const kt_hist *h, double p);
/* The exact mean; 0 if empty. */
double kt_hist_mean(const kt_hist *h);
/* Exact smallest and largest values; 0 if empty. */
uint64_t kt_hist_min(const kt_hist *h);
uint64_t kt_hist_max(const kt_hist *h);
/* Number of values recorded. */
uint64_t kt_hist_count(const kt_hist *h);

/* Buckets, for output: there are kt_hist_nbuckets() (KT_HIST_NBUCKETS);
 * bucket i holds *count values from *lo to *hi inclusive (the last bucket
 * also holds everything above its hi). i out of range gives zeros. */
size_t kt_hist_nbuckets(void);
void kt_hist_bucket(const kt_hist *h, size_t i, uint64_t *lo, uint64_t *hi, uint64_t *count);

#ifdef __cplusplus
}
#endif
#endif
