/*
 * rng.h - kettle-db's seeded pseudo-random generator: xoshiro256** seeded
 * through splitmix64, with the few distributions the latency models and the
 * fault dice need. Reproducible: the same seed gives the same sequence.
 */
#ifndef KDB_RNG_H
#define KDB_RNG_H

#include <stdbool.h>
#include <stdint.h>

typedef struct kdb_rng {
    uint64_t s[4];
    double spare;     /* second normal deviate of the last Box-Muller pair */
    bool have_spare;
} kdb_rng;

/* Seed the generator (any seed, 0 included, gives a valid state). */
void kdb_rng_seed(kdb_rng *r, uint64_t seed);
/* The next 64 random bits. */
uint64_t kdb_rng_next(kdb_rng *r);
/* Uniform in [0, 1) with 53 bits of precision. */
double kdb_rng_uniform(kdb_rng *r);
/* Uniform in (0, 1]: safe to take the logarithm of. */
double kdb_rng_uniform_pos(kdb_rng *r);
/* Standard normal deviate (mean 0, sd 1), Marsaglia's polar method. */
double kdb_rng_normal(kdb_rng *r);
/* True with probability p (p <= 0 never, p >= 1 always). */
bool kdb_rng_chance(kdb_rng *r, double p);
/* The splitmix64 step: a well-mixed 64-bit value derived from *state. */
uint64_t kdb_splitmix64(uint64_t *state);

#endif
