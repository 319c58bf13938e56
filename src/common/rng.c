/*
 * rng.c - xoshiro256** (Blackman and Vigna's generator, written from its
 * published description) seeded by splitmix64, plus uniform, normal and
 * Bernoulli draws. See rng.h.
 */
#include "config.h"
#include <math.h>
#include <unistd.h>
#include <kettle/common.h>
#include "rng.h"

uint64_t kt_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void kt_rng_seed(kt_rng *r, uint64_t seed)
{
    uint64_t st = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = kt_splitmix64(&st);
    /* splitmix64 never yields four zero words in a row, but be certain:
     * the all-zero state is xoshiro's one fixed point. */
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 1;
    r->have_spare = false;
    r->spare = 0;
}

uint64_t kt_rng_seed_random(kt_rng *r)
{
    uint64_t st = kt_clock_ns() ^ ((uint64_t)getpid() << 32);
    uint64_t seed = kt_splitmix64(&st) & (uint64_t)INT64_MAX;
    if (seed == 0)
        seed = 1;
    kt_rng_seed(r, seed);
    return seed;
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t kt_rng_next(kt_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t kt_rng_below(kt_rng *r, uint64_t n)
{
    /* Reject the top sliver that would favour small values. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do
        x = kt_rng_next(r);
    while (x >= limit);
    return x % n;
}

double kt_rng_uniform(kt_rng *r)
{
    return (double)(kt_rng_next(r) >> 11) * 0x1.0p-53;
}

double kt_rng_uniform_pos(kt_rng *r)
{
    return (double)((kt_rng_next(r) >> 11) + 1) * 0x1.0p-53;
}

double kt_rng_normal(kt_rng *r)
{
    if (r->have_spare) {
        r->have_spare = false;
        return r->spare;
    }
    double u, v, s;
    do {
        u = 2.0 * kt_rng_uniform(r) - 1.0;
        v = 2.0 * kt_rng_uniform(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    double m = sqrt(-2.0 * log(s) / s);
    r->spare = v * m;
    r->have_spare = true;
    return u * m;
}

bool kt_rng_chance(kt_rng *r, double p)
{
    if (p <= 0.0)
        return false;
    if (p >= 1.0)
        return true;
    return kt_rng_uniform(r) < p;
}
