/*
 * fuzz-resp-request.c - libFuzzer target for the request parser.
 *
 * The input is parsed as a pipeline of requests under the default limits
 * and under tight ones. For each request it checks what a server relies
 * on: the parse is the same whichever way the bytes were split (every
 * prefix gives INCOMPLETE, or the same error), arguments lie inside the
 * message or the scratch buffer, and re-encoding the arguments parses back
 * to the same ones (byte for byte the same message, for multibulk input).
 *
 * Then the whole input is fed four ways, as hiredis's fuzzer does: whole,
 * byte by byte, split at random points, and split at random points with
 * the unconsumed bytes moved to a new buffer before every call. The four
 * give the same requests, the same bytes consumed and the same end (error
 * text, or what is left incomplete), and fed byte by byte the parser
 * examines at most a few bytes per byte of input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <kettle/resp.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const kt_resp_limits tight = { .max_inline = 64, .max_bulk = 64, .max_args = 8, .max_depth = 4 };

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static bool inside(const char *p, size_t len, const char *lo, size_t span)
{
    return len == 0 || (lo != NULL && p >= lo && p <= lo + span && len <= (size_t)(lo + span - p));
}

/* Prefixes of p[0..upto), each in a buffer of its own size, agree with the
 * result r (err) that the longer input gave. */
static void check_prefixes(const char *p, size_t upto, const kt_resp_limits *lim, ssize_t r,
                           const char *err)
{
    kt_resp_req req = { 0 };
    size_t step = upto > 512 ? upto / 64 : 1;

    for (size_t n = 0; n < upto; n += step) {
        char *copy = malloc(n ? n : 1);
        const char *e = NULL;
        ssize_t pr;
        CHECK(copy != NULL);
        memcpy(copy, p, n);
        pr = kt_resp_parse_request(copy, n, lim, &req, &e);
        free(copy);
        if (pr == KT_RESP_INCOMPLETE)
            continue;
        /* Only an error that the longer input has too may show early. */
        CHECK(pr == KT_RESP_ERROR && r == KT_RESP_ERROR && e && strcmp(e, err) == 0);
    }
    kt_resp_req_free(&req);
}

static void run(const char *buf, size_t len, const kt_resp_limits *lim)
{
    kt_resp_req req = { 0 }, again = { 0 };
    kt_buf enc = { 0 };
    kt_out o = kt_buf_out(&enc);
    size_t off = 0;

    for (int msgs = 0; off < len && msgs < 256; msgs++) {
        const char *p = buf + off, *err = NULL, *err2 = NULL;
        size_t n = len - off;
        ssize_t r = kt_resp_parse_request(p, n, lim, &req, &err);

        if (r <= 0) {
            CHECK(r == KT_RESP_INCOMPLETE || (r == KT_RESP_ERROR && err != NULL));
            CHECK(req.argc == 0);
            if (msgs < 4)
                check_prefixes(p, n, lim, r, err);
            break;
        }
        CHECK((size_t)r <= n);
        for (size_t i = 0; i < req.argc; i++)
            CHECK(inside(req.argv[i].p, req.argv[i].len, p, (size_t)r) ||
                  inside(req.argv[i].p, req.argv[i].len, req.scratch, req.scratch_cap));
        if (msgs < 4)
            check_prefixes(p, (size_t)r, lim, r, NULL);

        /* Round trip through the encoder. */
        enc.len = 0;
        CHECK(kt_resp_command(&o, req.argc, req.argv) == 0);
        CHECK(kt_resp_parse_request(enc.data, enc.len, NULL, &again, &err2) == (ssize_t)enc.len);
        CHECK(again.argc == req.argc);
        for (size_t i = 0; i < req.argc; i++) {
            CHECK(again.argv[i].len == req.argv[i].len);
            CHECK(req.argv[i].len == 0 ||
                  memcmp(again.argv[i].p, req.argv[i].p, req.argv[i].len) == 0);
        }
        if (p[0] == '*' && req.argc > 0)
            CHECK(enc.len == (size_t)r && memcmp(enc.data, p, enc.len) == 0);
        off += (size_t)r;
    }
    kt_resp_req_free(&req);
    kt_resp_req_free(&again);
    kt_buf_free(&enc);
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
 * Feed buf as a stream would, parsing every complete request after each
 * piece; what came out goes to out: per request, the bytes it took and its
 * arguments re-encoded; at the end the error text, or the bytes left over.
 * Returns the bytes the parser examined.
 */
static uint64_t feed(const char *buf, size_t len, const kt_resp_limits *lim, int how,
                     uint64_t seed, kt_buf *out)
{
    kt_resp_req req = { 0 };
    kt_out o = kt_buf_out(out);
    size_t have = 0, start = 0;
    char *moved = NULL;
    uint64_t examined;

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
            r = kt_resp_parse_request(p, have - start, lim, &req, &err);
            if (r == KT_RESP_INCOMPLETE)
                break;
            if (r == KT_RESP_ERROR) {
                CHECK(err != NULL && req.argc == 0);
                CHECK(kt_buf_append(out, "E", 1) == 0 && kt_buf_append(out, err, strlen(err)) == 0);
                goto end;
            }
            CHECK(kt_buf_append(out, &r, sizeof(r)) == 0);
            CHECK(kt_resp_command(&o, req.argc, req.argv) == 0);
            start += (size_t)r;
        }
    }
    CHECK(kt_buf_append(out, "I", 1) == 0);
    CHECK(kt_buf_append(out, &start, sizeof(start)) == 0);
end:
    free(moved);
    examined = req.examined;
    kt_resp_req_free(&req);
    return examined;
}

static void feeds(const char *buf, size_t len, const kt_resp_limits *lim)
{
    kt_buf whole = { 0 }, other = { 0 };
    uint64_t seed = 0x9e3779b97f4a7c15ull ^ len;

    for (size_t i = 0; i < len && i < 64; i++)
        seed = seed * 31 + (unsigned char)buf[i];
    seed |= 1;
    feed(buf, len, lim, WHOLE, 0, &whole);
    for (int how = BYTES; how <= MOVED; how++) {
        uint64_t examined;
        other.len = 0;
        examined = feed(buf, len, lim, how, seed, &other);
        CHECK(other.len == whole.len && memcmp(other.data, whole.data, whole.len) == 0);
        if (how == BYTES)
            CHECK(examined <= 3 * (uint64_t)len + 8);
    }
    kt_buf_free(&whole);
    kt_buf_free(&other);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run((const char *)data, size, NULL);
    run((const char *)data, size, &tight);
    feeds((const char *)data, size, NULL);
    feeds((const char *)data, size, &tight);
    return 0;
}
