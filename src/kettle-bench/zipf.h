/*
 * zipf.h - Zipf-distributed keys for kettle-bench's __zipf_int__.
 *
 * Over keys 0 .. n-1, key i comes with probability proportional to
 * 1 / (i + 1)^s: key 0 is the hottest, key 1 half as hot when s = 1, and
 * so on. s is the exponent (--zipf, default 0.99, YCSB's and the usual
 * "hot keys" setting).
 *
 * Sampling is rejection-inversion (W. Hörmann and G. Derflinger,
 * "Rejection-inversion to generate variates from monotone discrete
 * distributions", ACM TOMACS 6(3), 1996): O(1) set-up and O(1) expected
 * time per key for any n and any s > 0, with no table, so a keyspace of
 * a billion costs what one of a thousand does.
 */
#ifndef KB_ZIPF_H
#define KB_ZIPF_H

#include <stdint.h>
#include "rng.h"

#define KB_ZIPF_DEFAULT 0.99
#define KB_ZIPF_MAX 100.0   /* larger exponents put every key on key 0 anyway */

typedef struct kb_zipf {
    uint64_t n;        /* keys 0 .. n-1 */
    double s;          /* exponent, > 0 */
    double h_lo;       /* H(1.5) - h(1): the low end of the sampled area */
    double h_hi;       /* H(n + 0.5): its high end */
    double shortcut;   /* a key within this of its inverse is accepted at once */
} kb_zipf;

/* Prepare z for n keys (n >= 1) and exponent s (0 < s <= KB_ZIPF_MAX).
 * 0, or -EINVAL. */
int kb_zipf_init(kb_zipf *z, uint64_t n, double s);

/* One key in [0, n), drawing uniform numbers from r (about 1.1 draws on
 * average). */
uint64_t kb_zipf_next(const kb_zipf *z, kt_rng *r);

#endif
