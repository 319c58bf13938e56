/*
 * spectrum.c - the percentile spectrum of a histogram, the .hgrm file,
 * and the timeline's folding (see spectrum.h; svg.c draws them).
 *
 * The .hgrm layout is HdrHistogram's "percentile distribution" text, the
 * one its plotter and wrk2's --latency users read:
 *
 *        Value     Percentile TotalCount 1/(1-Percentile)
 *
 *        0.071 0.000000000000          1           1.00
 *        ...
 *       12.345 1.000000000000      10000
 *   #[Mean    =        0.140, StdDeviation   =        0.049]
 *   #[Max     =       12.345, Total count    =        10000]
 *   #[Buckets =           27, SubBuckets     =          256]
 *
 * Each value is the one kt_hist_percentile gives at that level (the
 * middle of its bucket, within the exact min and max), so the file and the
 * JSON report agree.
 */
#include "config.h"
#include <errno.h>
#include <math.h>
#include <string.h>
#include <kettle/common.h>
#include "spectrum.h"

#define TICKS_PER_HALF 5

/* The next level after `level` percent: the distance to 100 is cut into
 * TICKS_PER_HALF steps per halving. */
static double next_level(double level)
{
    double halvings = floor(log2(100.0 / (100.0 - level)));
    return level + 100.0 / (TICKS_PER_HALF * exp2(halvings + 1));
}

/* The value reported for bucket i: as kt_hist_percentile reports it. */
static uint64_t bucket_value(const kt_hist *h, size_t i)
{
    uint64_t lo, hi;
    kt_hist_bucket(h, i, &lo, &hi, NULL);
    uint64_t mid = lo + (hi - lo) / 2;
    return mid < h->min ? h->min : mid > h->max ? h->max : mid;
}

static int push(kb_pct_row **rows, size_t *n, size_t *cap, uint64_t v, double level, uint64_t total)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 128;
        kb_pct_row *r = kt_realloc(*rows, c * sizeof(*r));
        if (r == NULL)
            return -ENOMEM;
        *rows = r;
        *cap = c;
    }
    (*rows)[(*n)++] = (kb_pct_row){ v, level, total };
    return 0;
}

int kb_spectrum(const kt_hist *h, kb_pct_row **rows, size_t *n)
{
    size_t cap = 0;
    uint64_t seen = 0;
    double level = 0.0;
    int rc = 0;

    *rows = NULL;
    *n = 0;
    if (h->count == 0)
        return 0;
    bool done = false;
    for (size_t i = 0, nb = kt_hist_nbuckets(); i < nb && rc == 0 && !done; i++) {
        if (h->counts[i] == 0)
            continue;
        seen += h->counts[i];
        /* every level this bucket reaches; in the last bucket only the
         * first (the 100% row follows), as HdrHistogram's iterator does */
        while (rc == 0 && !done && 100.0 * (double)seen / (double)h->count >= level) {
            uint64_t v = level == 0.0 ? h->min : bucket_value(h, i);
            rc = push(rows, n, &cap, v, level, seen);
            double next = next_level(level);
            /* past some 10^16 values the levels can no longer advance */
            done = seen == h->count || !(next > level && next < 100.0);
            level = next;
        }
    }
    if (rc == 0)
        rc = push(rows, n, &cap, h->max, 100.0, h->count);
    if (rc < 0) {
        kt_free(*rows);
        *rows = NULL;
        *n = 0;
    }
    return rc;
}

/* The standard deviation, from each bucket's reported value. */
static double stddev(const kt_hist *h)
{
    double mean = kt_hist_mean(h), sq = 0;
    for (size_t i = 0, nb = kt_hist_nbuckets(); i < nb; i++) {
        if (h->counts[i] != 0) {
            double d = (double)bucket_value(h, i) - mean;
            sq += d * d * (double)h->counts[i];
        }
    }
    return h->count ? sqrt(sq / (double)h->count) : 0;
}

int kb_write_hgrm(FILE *f, const kt_hist *h)
{
    kb_pct_row *rows;
    size_t n;
    int rc = kb_spectrum(h, &rows, &n);
    if (rc < 0)
        return rc;
    fprintf(f, "%12s %14s %10s %14s\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    for (size_t i = 0; i < n; i++) {
        double p = rows[i].level / 100.0;
        if (rows[i].level < 100.0)
            fprintf(f, "%12.3f %2.12f %10llu %14.2f\n", (double)rows[i].value / 1e6, p,
                    (unsigned long long)rows[i].total, 1.0 / (1.0 - p));
        else
            fprintf(f, "%12.3f %2.12f %10llu\n", (double)rows[i].value / 1e6, p,
                    (unsigned long long)rows[i].total);
    }
    /* the geometry in HdrHistogram's terms: 2 x 128 sub-buckets, one bucket
     * per power of two above them */
    fprintf(f, "#[Mean    = %12.3f, StdDeviation   = %12.3f]\n", kt_hist_mean(h) / 1e6,
            stddev(h) / 1e6);
    fprintf(f, "#[Max     = %12.3f, Total count    = %12llu]\n", (double)kt_hist_max(h) / 1e6,
            (unsigned long long)kt_hist_count(h));
    fprintf(f, "#[Buckets = %12d, SubBuckets     = %12d]\n", KT_HIST_TOP_BITS - KT_HIST_SUB_BITS,
            2 << KT_HIST_SUB_BITS);
    kt_free(rows);
    return ferror(f) ? -EIO : 0;
}

int kb_timeline_fold(const uint64_t *slots, size_t nslots, double end_s, kb_timeline *out)
{
    static const unsigned steps[] = { 1, 2, 5 };
    uint64_t f = 1;
    memset(out, 0, sizeof(*out));
    for (uint64_t dec = 1; ; dec *= 10) {
        size_t k;
        for (k = 0; k < 3; k++) {
            f = steps[k] * dec;
            if ((nslots + f - 1) / f <= KB_TIMELINE_POINTS)
                break;
        }
        if (k < 3)
            break;
    }
    out->interval_s = (double)f * (double)KB_SLOT_NS / 1e9;
    out->end_s = end_s;
    out->n = (nslots + f - 1) / f;
    if (out->n == 0)
        return 0;
    out->counts = kt_calloc(out->n, sizeof(*out->counts));
    if (out->counts == NULL) {
        out->n = 0;
        return -ENOMEM;
    }
    for (size_t i = 0; i < nslots; i++)
        out->counts[i / f] += slots[i];
    return 0;
}

void kb_timeline_free(kb_timeline *t)
{
    kt_free(t->counts);
    memset(t, 0, sizeof(*t));
}

void kb_run_free(kb_run *r)
{
    kt_free(r->label);
    kb_timeline_free(&r->tl);
    r->label = NULL;
}
