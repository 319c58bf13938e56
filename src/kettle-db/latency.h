/*
 * latency.h - kettle-db's latency models: how long the simulated database
 * takes to answer one key.
 *
 * SPEC grammar (durations take ns, us, ms, s, m; a bare number is in ms):
 *   none                      no delay
 *   fixed D                   always D                      (a bare "D" too)
 *   uniform LO HI             uniform on [LO, HI]
 *   normal MEAN SD            normal, floored at 0
 *   exponential MEAN          exponential with that mean
 *   lognormal MEDIAN SIGMA    exp(N(ln MEDIAN, SIGMA^2)); SIGMA unitless
 *   pareto SCALE SHAPE        Pareto type I: SCALE / U^(1/SHAPE); heavy tail
 *   proportional UNIT         key n waits n x UNIT (the explanation's wait_n)
 * Every delay is capped by the caller's maximum (option max-delay).
 */
#ifndef KDB_LATENCY_H
#define KDB_LATENCY_H

#include <stdint.h>
#include <stdio.h>
#include "rng.h"

/* The syntax of a delay model, for the help of the options that take one
 * (kettle-db's latency, kettled's embedded-latency). */
#define KDB_LATENCY_SYNTAX                                                                    \
    "none | fixed D | uniform LO HI | normal MEAN SD | exponential MEAN | "                    \
    "lognormal MEDIAN SIGMA | pareto SCALE SHAPE | proportional UNIT (key n waits n x UNIT); " \
    "a bare number is in ms"

typedef enum kdb_lat_kind {
    KDB_LAT_NONE = 0,
    KDB_LAT_FIXED,
    KDB_LAT_UNIFORM,
    KDB_LAT_NORMAL,
    KDB_LAT_EXPONENTIAL,
    KDB_LAT_LOGNORMAL,
    KDB_LAT_PARETO,
    KDB_LAT_PROPORTIONAL,
} kdb_lat_kind;

typedef struct kdb_latency {
    kdb_lat_kind kind;
    double a, b;    /* parameters: durations in ns, SIGMA and SHAPE unitless */
    char text[96];  /* the spec in canonical form ("normal 50ms 10ms") */
} kdb_latency;

/* Parse a SPEC (see above) into *out; *out is untouched on error.
 * 0, or -EINVAL with *why pointing to static text. */
int kdb_latency_parse(const char *spec, kdb_latency *out, const char **why);

/* Draw one delay in ns for key (used by "proportional"; other models ignore
 * it), capped at max_ns. A negative key counts as 0. */
uint64_t kdb_latency_sample(const kdb_latency *m, kt_rng *r, int64_t key, uint64_t max_ns);

/* Print the first n delays that spec draws with seed (0: one from the clock),
 * the k-th for key k, capped at max_ns: a comment line naming the model and
 * the seed, then one delay a line in microseconds. kettle-db draws the same
 * sequence, in the order requests start their delay. 0, or -EINVAL. */
int kdb_latency_print(const char *spec, uint64_t seed, int64_t n, uint64_t max_ns, FILE *out);

/* The model's name ("fixed", "pareto", ...). */
const char *kdb_latency_kind_name(kdb_lat_kind kind);

/* Format ns as the shortest exact "250ms" / "1500us" / "42ns" / "2s" into buf. */
const char *kdb_format_duration(uint64_t ns, char *buf, size_t size);

#endif
