/*
 * fuzz.h - what the RESP fuzz targets share. A target describes its parser
 * as a fuzz_target; fuzz_one() then checks one input under the default
 * limits and under tight ones:
 *
 *  - as a pipeline of messages: each one passes the target's own checks,
 *    and every prefix of it gives INCOMPLETE, or the error the whole gave;
 *  - fed four ways, as hiredis's fuzzer does: whole, byte by byte, split at
 *    random points, and split at random points with the unconsumed bytes
 *    moved to a new buffer before every call. The four give the same
 *    messages, the same bytes consumed and the same end (error text, or
 *    what is left incomplete), and fed byte by byte the parser examines at
 *    most a few bytes per byte of input.
 */
#ifndef KETTLE_TESTS_FUZZ_H
#define KETTLE_TESTS_FUZZ_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <kettle/resp.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

typedef struct fuzz_target {
    /* A fresh parser state, and its end: freed, the bytes it examined returned. */
    void *(*open)(void);
    uint64_t (*close)(void *state);
    /* Parse one message at p[0..n): the parser's answer (*err set on
     * KT_RESP_ERROR); on success, when out is not NULL, what was parsed is
     * appended to out encoded again. */
    ssize_t (*parse)(void *state, const char *p, size_t n, const kt_resp_limits *lim,
                     kt_buf *out, const char **err);
    /* The target's checks of the message of r bytes at p just parsed. */
    void (*check)(void *state, const char *p, size_t r, const kt_resp_limits *lim);
} fuzz_target;

/* Prefixes of p[0..upto), each in a buffer of its own size, agree with the
 * result r (err) that the longer input gave. */
static void check_prefixes(const fuzz_target *t, const char *p, size_t upto,
                           const kt_resp_limits *lim, ssize_t r, const char *err)
{
    void *st = t->open();
    size_t step = upto > 512 ? upto / 64 : 1;

    for (size_t n = 0; n < upto; n += step) {
        char *copy = malloc(n ? n : 1);
        const char *e = NULL;
        ssize_t pr;
        CHECK(copy != NULL);
        memcpy(copy, p, n);
        pr = t->parse(st, copy, n, lim, NULL, &e);
        free(copy);
        if (pr == KT_RESP_INCOMPLETE)
            continue;
        /* Only an error that the longer input has too may show early. */
        CHECK(pr == KT_RESP_ERROR && r == KT_RESP_ERROR && e && strcmp(e, err) == 0);
    }
    (void)t->close(st);
}

/* The input as a pipeline of messages, each checked. */
static void run(const fuzz_target *t, const char *buf, size_t len, const kt_resp_limits *lim)
{
    void *st = t->open();
    size_t off = 0;

    for (int msgs = 0; off < len && msgs < 256; msgs++) {
        const char *p = buf + off, *err = NULL;
        size_t n = len - off;
        ssize_t r = t->parse(st, p, n, lim, NULL, &err);

        if (r <= 0) {
            CHECK(r == KT_RESP_INCOMPLETE || (r == KT_RESP_ERROR && err != NULL));
            if (msgs < 4)
                check_prefixes(t, p, n, lim, r, err);
            break;
        }
        CHECK((size_t)r <= n);
        t->check(st, p, (size_t)r, lim);
        if (msgs < 4)
            check_prefixes(t, p, (size_t)r, lim, r, NULL);
        off += (size_t)r;
    }
    (void)t->close(st);
}

enum { WHOLE, BYTES, RANDOM, MOVED };

/* Split points from the input itself, so that a crash reproduces. */
static uint64_t next_rand(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/*
 * Feed buf as a stream would, parsing every complete message after each
 * piece; what came out goes to out: per message, its encoding and the
 * bytes it took; at the end the error text, or the bytes left over.
 * Returns the bytes the parser examined.
 */
static uint64_t feed(const fuzz_target *t, const char *buf, size_t len, const kt_resp_limits *lim,
                     int how, uint64_t seed, kt_buf *out)
{
    void *st = t->open();
    size_t have = 0, start = 0;
    char *moved = NULL;

    while (have < len) {
        size_t piece = how == WHOLE ? len : how == BYTES ? 1 : 1 + next_rand(&seed) % 16;
        have += piece < len - have ? piece : len - have;
        for (;;) {
            const char *p = buf + start, *err = NULL;
            ssize_t r;
            if (how == MOVED) {
                free(moved);
                moved = malloc(have - start ? have - start : 1);
                CHECK(moved != NULL);
                memcpy(moved, buf + start, have - start);
                p = moved;
            }
            r = t->parse(st, p, have - start, lim, out, &err);
            if (r == KT_RESP_INCOMPLETE)
                break;
            if (r == KT_RESP_ERROR) {
                CHECK(err != NULL);
                CHECK(kt_buf_append(out, "E", 1) == 0 && kt_buf_append(out, err, strlen(err)) == 0);
                goto end;
            }
            CHECK(kt_buf_append(out, &r, sizeof(r)) == 0);
            start += (size_t)r;
        }
    }
    CHECK(kt_buf_append(out, "I", 1) == 0);
    CHECK(kt_buf_append(out, &start, sizeof(start)) == 0);
end:
    free(moved);
    return t->close(st);
}

static void feeds(const fuzz_target *t, const char *buf, size_t len, const kt_resp_limits *lim)
{
    kt_buf whole = { 0 }, other = { 0 };
    uint64_t seed = 0x9e3779b97f4a7c15ull ^ len;

    for (size_t i = 0; i < len && i < 64; i++)
        seed = seed * 31 + (unsigned char)buf[i];
    seed |= 1;
    feed(t, buf, len, lim, WHOLE, 0, &whole);
    for (int how = BYTES; how <= MOVED; how++) {
        uint64_t examined;
        other.len = 0;
        examined = feed(t, buf, len, lim, how, seed, &other);
        CHECK(other.len == whole.len && memcmp(other.data, whole.data, whole.len) == 0);
        if (how == BYTES)
            CHECK(examined <= 3 * (uint64_t)len + 8);
    }
    kt_buf_free(&whole);
    kt_buf_free(&other);
}

static int fuzz_one(const fuzz_target *t, const uint8_t *data, size_t size)
{
    static const kt_resp_limits tight = { .max_inline = 64, .max_bulk = 64, .max_args = 8,
                                          .max_depth = 4 };
    run(t, (const char *)data, size, NULL);
    run(t, (const char *)data, size, &tight);
    feeds(t, (const char *)data, size, NULL);
    feeds(t, (const char *)data, size, &tight);
    return 0;
}

#endif
