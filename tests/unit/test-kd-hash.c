/*
 * test-kd-hash.c - kettled's consistent-hash ring (src/kettled/hash.c):
 * keys spread evenly, the mapping does not depend on the order servers are
 * listed in, removing a server moves only its own keys, and ejected
 * servers are skipped in favour of their ring neighbours. Keys up to 64
 * bytes keep their FNV-1a placement; longer ones (hashed by words) spread
 * as evenly and depend on every byte.
 */
#include "config.h"
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include "hash.h"

#define NKEYS 30000

static uint32_t lookup(const kd_ring *r, unsigned key)
{
    char k[16];
    int n = snprintf(k, sizeof k, "%u", key);
    return kd_ring_lookup(r, k, (size_t)n, NULL, NULL);
}

static void test_spread(void **state)
{
    (void)state;
    const char *names[] = { "127.0.0.1:7380", "127.0.0.1:7381", "127.0.0.1:7382", "127.0.0.1:7383" };
    kd_ring r;
    assert_int_equal(kd_ring_build(&r, names, 4, 160), 0);
    assert_int_equal(r.n, 640);
    unsigned count[4] = { 0 };
    for (unsigned k = 0; k < NKEYS; k++)
        count[lookup(&r, k)]++;
    for (int i = 0; i < 4; i++) {
        /* 160 points each: within 20% of the fair share */
        assert_true(count[i] > NKEYS / 4 * 8 / 10);
        assert_true(count[i] < NKEYS / 4 * 12 / 10);
    }
    kd_ring_free(&r);
}

static void test_order_does_not_matter(void **state)
{
    (void)state;
    const char *a[] = { "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1" };
    const char *b[] = { "10.0.0.3:1", "10.0.0.1:1", "10.0.0.2:1" };
    kd_ring ra, rb;
    assert_int_equal(kd_ring_build(&ra, a, 3, 100), 0);
    assert_int_equal(kd_ring_build(&rb, b, 3, 100), 0);
    for (unsigned k = 0; k < 2000; k++)
        assert_string_equal(a[lookup(&ra, k)], b[lookup(&rb, k)]);
    kd_ring_free(&ra);
    kd_ring_free(&rb);
}

static void test_removal_moves_only_its_keys(void **state)
{
    (void)state;
    const char *three[] = { "s0:1", "s1:1", "s2:1" };
    const char *two[] = { "s0:1", "s2:1" };
    kd_ring r3, r2;
    assert_int_equal(kd_ring_build(&r3, three, 3, 160), 0);
    assert_int_equal(kd_ring_build(&r2, two, 2, 160), 0);
    unsigned moved = 0;
    for (unsigned k = 0; k < NKEYS; k++) {
        const char *before = three[lookup(&r3, k)];
        const char *after = two[lookup(&r2, k)];
        if (strcmp(before, "s1:1") != 0)
            assert_string_equal(before, after); /* not s1's: stays put */
        else
            moved++;
    }
    assert_true(moved > NKEYS / 5 && moved < NKEYS / 2);
    kd_ring_free(&r3);
    kd_ring_free(&r2);
}

static bool not_one(uint32_t server, void *arg)
{
    return server != *(uint32_t *)arg;
}

static void test_dead_server_skipped(void **state)
{
    (void)state;
    const char *names[] = { "a:1", "b:1", "c:1" };
    kd_ring r;
    uint32_t dead = 1;
    unsigned to[3] = { 0 };
    assert_int_equal(kd_ring_build(&r, names, 3, 160), 0);
    for (unsigned k = 0; k < NKEYS; k++) {
        char key[16];
        int n = snprintf(key, sizeof key, "%u", k);
        uint32_t s = kd_ring_lookup(&r, key, (size_t)n, not_one, &dead);
        uint32_t plain = kd_ring_lookup(&r, key, (size_t)n, NULL, NULL);
        assert_int_not_equal(s, dead);
        if (plain != dead)
            assert_int_equal(s, plain);
        else
            to[s]++;
    }
    /* the dead server's keys spread over both neighbours, not onto one */
    assert_true(to[0] > 1000 && to[2] > 1000);
    kd_ring_free(&r);
}

static bool none_live(uint32_t server, void *arg)
{
    (void)server;
    (void)arg;
    return false;
}

static void test_all_dead_and_one_server(void **state)
{
    (void)state;
    const char *names[] = { "only:1" };
    kd_ring r;
    assert_int_equal(kd_ring_build(&r, names, 1, 1), 0);
    assert_int_equal(kd_ring_lookup(&r, "x", 1, none_live, NULL), 0);
    assert_int_equal(kd_ring_lookup(&r, "", 0, NULL, NULL), 0);
    kd_ring_free(&r);
    /* the hash is stable (the ring depends on it across restarts) */
    assert_true(kd_hash("17", 2) == kd_hash("17", 2));
    assert_true(kd_hash("17", 2) != kd_hash("71", 2));
}

/* The byte-by-byte FNV-1a with the finaliser: what keys up to 64 bytes
 * hash to, now as before. */
static uint64_t reference(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static void test_long_keys(void **state)
{
    (void)state;
    static char key[8000];
    for (size_t n = 0; n <= 64; n++) {
        memset(key, 'k', n);
        assert_true(kd_hash(key, n) == reference(key, n));
    }
    /* long keys differing in one byte, anywhere (the 32-byte blocks, the
     * tail), spread over four servers as short ones do */
    const char *names[] = { "127.0.0.1:7380", "127.0.0.1:7381", "127.0.0.1:7382", "127.0.0.1:7383" };
    kd_ring r;
    assert_int_equal(kd_ring_build(&r, names, 4, 160), 0);
    const size_t lens[] = { 65, 100, 8000 };
    for (size_t l = 0; l < 3; l++) {
        size_t len = lens[l];
        memset(key, 'x', len);
        for (size_t where = 0; where < len; where += len / 3) {
            unsigned count[4] = { 0 };
            memset(key, 'x', len);
            for (unsigned k = 0; k < 8000; k++) {
                char d[8];
                snprintf(d, sizeof d, "%05u", k);
                size_t at = where + 5 <= len ? where : len - 5;
                memcpy(key + at, d, 5);
                count[kd_ring_lookup(&r, key, len, NULL, NULL)]++;
            }
            for (int i = 0; i < 4; i++)
                assert_true(count[i] > 2000 * 8 / 10 && count[i] < 2000 * 12 / 10);
        }
    }
    memset(key, 'x', 8000);
    uint64_t h = kd_hash(key, 8000);
    key[7999] = 'y';
    assert_true(kd_hash(key, 8000) != h);
    key[7999] = 'x';
    key[0] = 'y';
    assert_true(kd_hash(key, 8000) != h);
    assert_true(kd_hash(key, 7999) != kd_hash(key, 8000));
    kd_ring_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spread),
        cmocka_unit_test(test_order_does_not_matter),
        cmocka_unit_test(test_removal_moves_only_its_keys),
        cmocka_unit_test(test_dead_server_skipped),
        cmocka_unit_test(test_all_dead_and_one_server),
        cmocka_unit_test(test_long_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
