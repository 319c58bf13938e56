/*
 * rng.h - the one pseudo-random generator of the kettle programs:
 * xoshiro256** seeded through splitmix64, with the few distributions
 * kettle-db's latency models and fault dice, kettled's pool (reconnect
 * jitter, replica choice) and kettle-bench (keys) need. Reproducible: the
 * same seed gives the same sequence. Not for secrets.
 */
#ifndef KETTLE_RNG_H
#define KETTLE_RNG_H

#include <stdbool.h>
#include <stdint.h>

typedef struct kt_rng {
    uint64_t s[4];
    double spare;     /* second normal deviate of the last Box-Muller pair */
    bool have_spare;
} kt_rng;

/* Seed the generator (any seed, 0 included, gives a valid state). */
void kt_rng_seed(kt_rng *r, uint64_t seed);
/* Seed from the clock and the process id; returns the seed used (never 0,
 * at most INT64_MAX, so that it can be shown and given back as a seed). */
uint64_t kt_rng_seed_random(kt_rng *r);
/* The next 64 random bits. */
uint64_t kt_rng_next(kt_rng *r);
/* Uniform in [0, n) (n > 0), without modulo bias. */
uint64_t kt_rng_below(kt_rng *r, uint64_t n);
/* Uniform in [0, 1) with 53 bits of precision. */
double kt_rng_uniform(kt_rng *r);
/* Uniform in (0, 1]: safe to take the logarithm of. */
double kt_rng_uniform_pos(kt_rng *r);
/* Standard normal deviate (mean 0, sd 1), Marsaglia's polar method. */
double kt_rng_normal(kt_rng *r);
/* True with probability p (p <= 0 never, p >= 1 always). */
bool kt_rng_chance(kt_rng *r, double p);
/* The splitmix64 step: a well-mixed 64-bit value derived from *state. */
uint64_t kt_splitmix64(uint64_t *state);

#endif
