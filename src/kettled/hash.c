/*
 * hash.c - the consistent-hash ring (see hash.h).
 *
 * Each server owns `points` positions on a 64-bit ring, at the hashes of
 * "NAME#0", "NAME#1", ...; a key belongs to the first position at or after
 * its own hash (wrapping around). With 160 points per server the share of
 * keys each server gets stays within a few percent of 1/n, and removing a
 * server hands only its own keys to its ring neighbours. A lookup is a
 * binary search: O(log(points x servers)).
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <kettle/common.h>
#include "hash.h"

/* Keys up to this long hash with FNV-1a byte by byte; longer ones with
 * four independent lanes over 8-byte words (a serial multiply per byte
 * costs about 1 ms per MB: an MGET of 1,000 keys of 8 KB would hold the
 * loop for 10 ms on hashing alone, where the lanes take under one). */
#define KD_HASH_BYTEWISE 64

static inline uint64_t load_le64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v); /* the same ring on every machine */
#endif
    return v;
}

static inline uint64_t rotl64(uint64_t x, unsigned r)
{
    return (x << r) | (x >> (64 - r));
}

#define P1 0x9e3779b185ebca87ull
#define P2 0xc2b2ae3d27d4eb4full

static inline uint64_t lane(uint64_t acc, uint64_t w)
{
    acc += w * P2;
    acc = rotl64(acc, 31);
    return acc * P1;
}

uint64_t kd_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a offset basis */
    size_t i = 0;
    if (n > KD_HASH_BYTEWISE) {
        uint64_t a = h, b = h ^ P1, c = h ^ P2, d = h + P1 + P2;
        for (; i + 32 <= n; i += 32) {
            a = lane(a, load_le64(s + i));
            b = lane(b, load_le64(s + i + 8));
            c = lane(c, load_le64(s + i + 16));
            d = lane(d, load_le64(s + i + 24));
        }
        h = rotl64(a, 1) + rotl64(b, 7) + rotl64(c, 12) + rotl64(d, 18);
        h ^= (uint64_t)n;
    }
    for (; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    /* FNV's low bits mix poorly for short keys such as "17": a 64-bit
     * avalanche finaliser spreads every input bit over the whole word. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static int point_cmp(const void *a, const void *b)
{
    const kd_ring_point *x = a, *y = b;
    if (x->h != y->h)
        return x->h < y->h ? -1 : 1;
    /* equal hashes (astronomically rare): a fixed order keeps lookups
     * deterministic */
    return x->server < y->server ? -1 : x->server > y->server;
}

int kd_ring_build(kd_ring *r, const char *const *names, size_t nservers, unsigned points)
{
    if (points == 0)
        points = 1;
    size_t total = nservers * points;
    kd_ring_point *pts = kt_calloc(total ? total : 1, sizeof *pts);
    if (pts == NULL)
        return -ENOMEM;
    size_t n = 0;
    for (size_t s = 0; s < nservers; s++) {
        for (unsigned i = 0; i < points; i++) {
            char buf[300];
            int len = snprintf(buf, sizeof buf, "%s#%u", names[s], i);
            if (len < 0 || (size_t)len >= sizeof buf)
                len = (int)sizeof buf - 1;
            pts[n].h = kd_hash(buf, (size_t)len);
            pts[n].server = (uint32_t)s;
            n++;
        }
    }
    qsort(pts, n, sizeof *pts, point_cmp);
    r->pts = pts;
    r->n = n;
    return 0;
}

void kd_ring_free(kd_ring *r)
{
    kt_free(r->pts);
    r->pts = NULL;
    r->n = 0;
}

uint32_t kd_ring_lookup(const kd_ring *r, const void *key, size_t len,
                        bool (*live)(uint32_t server, void *arg), void *arg)
{
    return kd_ring_lookup_hash(r, kd_hash(key, len), live, arg);
}

uint32_t kd_ring_lookup_hash(const kd_ring *r, uint64_t h, bool (*live)(uint32_t server, void *arg),
                             void *arg)
{
    size_t lo = 0, hi = r->n; /* first point with pts[i].h >= h */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->pts[mid].h < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == r->n)
        lo = 0;
    if (live == NULL)
        return r->pts[lo].server;
    /* Walk on past servers that are out (ejected): their keys spread over
     * the neighbours instead of all landing on one. */
    for (size_t k = 0, i = lo; k < r->n; k++, i = (i + 1 == r->n) ? 0 : i + 1)
        if (live(r->pts[i].server, arg))
            return r->pts[i].server;
    return r->pts[lo].server;
}
