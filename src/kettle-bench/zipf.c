/*
 * zipf.c - Zipf-distributed keys by rejection-inversion (see zipf.h).
 *
 * Ranks k = 1 .. n have weights h(k) = k^-s. The hat is the continuous
 * h(x) on [0.5, n + 0.5] with integral H(x) = (x^(1-s) - 1) / (1 - s)
 * (ln x when s = 1). A uniform y on [H(1.5) - h(1), H(n + 0.5)] is mapped
 * back through H's inverse to x, rounded to k; since h is convex, the
 * slice of y belonging to k, [H(k - 0.5), H(k + 0.5)], is at least h(k)
 * wide, and accepting only its top h(k) gives each k exactly its weight
 * (k = 1's slice is exactly h(1) wide, so it is always accepted). The
 * key is k - 1.
 */
#include "config.h"
#include <errno.h>
#include <math.h>
#include "zipf.h"

/* log1p(t) / t and expm1(t) / t, both 1 at t = 0: they keep H and its
 * inverse exact for s near 1, where 1 - s would divide by almost 0. */
static double log1p_over(double t)
{
    return fabs(t) > 1e-8 ? log1p(t) / t : 1.0 - t / 2.0 + t * t / 3.0;
}

static double expm1_over(double t)
{
    return fabs(t) > 1e-8 ? expm1(t) / t : 1.0 + t / 2.0 + t * t / 6.0;
}

/* h(x) = x^-s */
static double h(const kb_zipf *z, double x)
{
    return exp(-z->s * log(x));
}

/* H(x), the integral of h */
static double big_h(const kb_zipf *z, double x)
{
    double lx = log(x);
    return expm1_over((1.0 - z->s) * lx) * lx;
}

/* H's inverse */
static double big_h_inv(const kb_zipf *z, double y)
{
    return exp(log1p_over((1.0 - z->s) * y) * y);
}

int kb_zipf_init(kb_zipf *z, uint64_t n, double s)
{
    if (n == 0 || !(s > 0.0 && s <= KB_ZIPF_MAX))
        return -EINVAL;
    z->n = n;
    z->s = s;
    z->h_lo = big_h(z, 1.5) - 1.0;
    z->h_hi = big_h(z, (double)n + 0.5);
    /* for k >= 2, any x with k - x below this lies in the accepted part */
    z->shortcut = 2.0 - big_h_inv(z, big_h(z, 2.5) - h(z, 2.0));
    return 0;
}

uint64_t kb_zipf_next(const kb_zipf *z, kt_rng *r)
{
    if (z->n == 1)
        return 0;
    for (;;) {
        double u = kt_rng_uniform(r);
        double y = z->h_hi + u * (z->h_lo - z->h_hi);
        double x = big_h_inv(z, y);
        double kd = floor(x + 0.5);
        uint64_t k = kd < 1.0 ? 1 : kd > (double)z->n ? z->n : (uint64_t)kd;
        if ((double)k - x <= z->shortcut || y >= big_h(z, (double)k + 0.5) - h(z, (double)k))
            return k - 1;
    }
}
