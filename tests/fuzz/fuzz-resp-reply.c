/*
 * fuzz-resp-reply.c - libFuzzer target for the reply parser.
 *
 * The input is parsed as a pipeline of replies under the default limits
 * and under tight ones. For each reply: kt_resp_reply_len() agrees with
 * kt_resp_parse_reply(), the nodes form one well-nested tree within
 * max_depth, every prefix gives INCOMPLETE (or the same error), and the
 * encoder writes the nodes back as exactly the bytes that were parsed.
 *
 * Then the whole input is fed four ways, as hiredis's fuzzer does: whole,
 * byte by byte, split at random points, and split at random points with
 * the unconsumed bytes moved to a new buffer before every call, through
 * both entry points side by side. The four give the same replies, the
 * same bytes consumed and the same end, and fed byte by byte the parser
 * examines at most a few bytes per byte of input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <kettle/resp.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const kt_resp_limits tight = { .max_inline = 64, .max_bulk = 64, .max_args = 8, .max_depth = 4 };

#define CHECK(c) do { if (!(c)) abort(); } while (0)

/* Walk the subtree at nodes[i]; return the index after it. */
static size_t walk(const kt_resp_reply *rep, size_t i, size_t depth, size_t max_depth)
{
    const kt_resp_node *nd;
    CHECK(i < rep->count);
    nd = &rep->nodes[i++];
    if (nd->type != KT_RESP_ARRAY)
        return i;
    CHECK(depth + 1 <= max_depth);
    for (size_t k = 0; k < nd->n; k++)
        i = walk(rep, i, depth + 1, max_depth);
    return i;
}

/* Write the nodes back (simple strings raw: kt_resp_simple would change
 * nothing in valid input but takes a C string). */
static void encode(kt_out *o, kt_buf *b, const kt_resp_node *nd)
{
    switch (nd->type) {
    case KT_RESP_STRING:
    case KT_RESP_ERROR_REPLY: {
        char t = (char)nd->type;
        CHECK(kt_buf_append(b, &t, 1) == 0);
        CHECK(kt_buf_append(b, nd->p, nd->len) == 0);
        CHECK(kt_buf_append(b, "\r\n", 2) == 0);
        break;
    }
    case KT_RESP_INTEGER: CHECK(kt_resp_int(o, nd->i) == 0); break;
    case KT_RESP_BULK: CHECK(kt_resp_bulk(o, nd->p, nd->len) == 0); break;
    case KT_RESP_ARRAY: CHECK(kt_resp_array(o, nd->n) == 0); break;
    case KT_RESP_NIL:
        CHECK(nd->i == '$' || nd->i == '*');
        CHECK((nd->i == '$' ? kt_resp_nil(o) : kt_resp_nil_array(o)) == 0);
        break;
    default: abort();
    }
}

static void check_prefixes(const char *p, size_t upto, const kt_resp_limits *lim, ssize_t r,
                           const char *err)
{
    size_t step = upto > 512 ? upto / 64 : 1;
    kt_resp_reply st = { 0 };

    for (size_t n = 0; n < upto; n += step) {
        char *copy = malloc(n ? n : 1);
        const char *e = NULL;
        ssize_t pr;
        CHECK(copy != NULL);
        memcpy(copy, p, n);
        pr = kt_resp_reply_len(copy, n, lim, &st, &e);
        free(copy);
        if (pr == KT_RESP_INCOMPLETE)
            continue;
        CHECK(pr == KT_RESP_ERROR && r == KT_RESP_ERROR && e && strcmp(e, err) == 0);
    }
    kt_resp_reply_free(&st);
}

static void run(const char *buf, size_t len, const kt_resp_limits *lim)
{
    const kt_resp_limits *l = lim ? lim : &kt_resp_default_limits;
    size_t max_depth = l->max_depth < KT_RESP_MAX_DEPTH ? l->max_depth : KT_RESP_MAX_DEPTH;
    kt_resp_reply rep = { 0 }, skip = { 0 };
    kt_buf enc = { 0 };
    kt_out o = kt_buf_out(&enc);
    size_t off = 0;

    for (int msgs = 0; off < len && msgs < 256; msgs++) {
        const char *p = buf + off, *err = NULL, *err2 = NULL;
        size_t n = len - off;
        ssize_t r = kt_resp_parse_reply(p, n, lim, &rep, &err);

        CHECK(kt_resp_reply_len(p, n, lim, &skip, &err2) == r);
        if (r <= 0) {
            CHECK(r == KT_RESP_INCOMPLETE || (r == KT_RESP_ERROR && err && strcmp(err, err2) == 0));
            CHECK(rep.count == 0);
            if (msgs < 4)
                check_prefixes(p, n, lim, r, err);
            break;
        }
        CHECK((size_t)r <= n && rep.count > 0);
        CHECK(walk(&rep, 0, 0, max_depth) == rep.count);
        if (msgs < 4)
            check_prefixes(p, (size_t)r, lim, r, NULL);

        enc.len = 0;
        for (size_t i = 0; i < rep.count; i++)
            encode(&o, &enc, &rep.nodes[i]);
        CHECK(enc.len == (size_t)r && memcmp(enc.data, p, enc.len) == 0);
        off += (size_t)r;
    }
    kt_resp_reply_free(&rep);
    kt_resp_reply_free(&skip);
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
 * Feed buf as a stream would, parsing every complete reply after each
 * piece with kt_resp_parse_reply() and kt_resp_reply_len() (which must
 * agree); what came out goes to out: per reply, the bytes it took and its
 * nodes encoded again; at the end the error text, or the bytes left over.
 * Returns the bytes the parser examined.
 */
static uint64_t feed(const char *buf, size_t len, const kt_resp_limits *lim, int how,
                     uint64_t seed, kt_buf *out)
{
    kt_resp_reply rep = { 0 }, skip = { 0 };
    kt_out o = kt_buf_out(out);
    size_t have = 0, start = 0;
    char *moved = NULL;
    uint64_t examined;

    while (have < len) {
        size_t piece = how == WHOLE ? len : how == BYTES ? 1 : 1 + next_rand(&seed) % 16;
        have += piece < len - have ? piece : len - have;
        for (;;) {
            const char *p = buf + start, *err = NULL, *err2 = NULL;
            ssize_t r;
            if (how == MOVED) {
                free(moved);
                moved = malloc(have - start ? have - start : 1);
                CHECK(moved != NULL);
                memcpy(moved, buf + start, have - start);
                p = moved;
            }
            r = kt_resp_parse_reply(p, have - start, lim, &rep, &err);
            CHECK(kt_resp_reply_len(p, have - start, lim, &skip, &err2) == r);
            if (r == KT_RESP_INCOMPLETE)
                break;
            if (r == KT_RESP_ERROR) {
                CHECK(err != NULL && err2 != NULL && strcmp(err, err2) == 0 && rep.count == 0);
                CHECK(kt_buf_append(out, "E", 1) == 0 && kt_buf_append(out, err, strlen(err)) == 0);
                goto end;
            }
            CHECK(kt_buf_append(out, &r, sizeof(r)) == 0);
            for (size_t i = 0; i < rep.count; i++) {
                const kt_resp_node *nd = &rep.nodes[i];
                CHECK(!nd->p || (nd->p >= p && nd->p + nd->len <= p + r));
                encode(&o, out, nd);
            }
            start += (size_t)r;
        }
    }
    CHECK(kt_buf_append(out, "I", 1) == 0);
    CHECK(kt_buf_append(out, &start, sizeof(start)) == 0);
end:
    free(moved);
    examined = rep.examined;
    kt_resp_reply_free(&rep);
    kt_resp_reply_free(&skip);
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
