/*
 * hash.h - consistent hashing of keys onto database servers: a ring of
 * virtual nodes (points) per server, ketama-style, so that adding or
 * removing one server moves only the keys that hashed to it.
 */
#ifndef KD_HASH_H
#define KD_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kd_ring_point {
    uint64_t h;      /* position on the ring */
    uint32_t server; /* index given to kd_ring_build */
} kd_ring_point;

typedef struct kd_ring {
    kd_ring_point *pts; /* sorted by h */
    size_t n;
} kd_ring;

/* 64-bit hash of n bytes (FNV-1a with a final avalanche mix). */
uint64_t kd_hash(const void *p, size_t n);

/* Build the ring: `points` virtual nodes for each of the nservers named
 * servers (the name, not the index, decides where they sit, so the same
 * server lands at the same points whatever the order of the list).
 * 0 or -ENOMEM (r untouched). Free with kd_ring_free. */
int kd_ring_build(kd_ring *r, const char *const *names, size_t nservers, unsigned points);
void kd_ring_free(kd_ring *r);

/* The server for key: the first point at or after the key's hash whose
 * server live() accepts (live NULL: any). When none does, the first
 * point's server. The ring must not be empty. */
uint32_t kd_ring_lookup(const kd_ring *r, const void *key, size_t len,
                        bool (*live)(uint32_t server, void *arg), void *arg);
/* The same for a key whose kd_hash is h (computed once by the caller). */
uint32_t kd_ring_lookup_hash(const kd_ring *r, uint64_t h, bool (*live)(uint32_t server, void *arg),
                             void *arg);

#endif
