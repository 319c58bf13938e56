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
#include "fuzz.h"

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

/* Both entry points side by side: they must agree. */
struct replies {
    kt_resp_reply rep, skip;
};

static void *rep_open(void)
{
    struct replies *s = calloc(1, sizeof *s);
    CHECK(s != NULL);
    return s;
}

static uint64_t rep_close(void *state)
{
    struct replies *s = state;
    uint64_t examined = s->rep.examined;
    kt_resp_reply_free(&s->rep);
    kt_resp_reply_free(&s->skip);
    free(s);
    return examined;
}

static ssize_t rep_parse(void *state, const char *p, size_t n, const kt_resp_limits *lim,
                         kt_buf *out, const char **err)
{
    struct replies *s = state;
    const char *err2 = NULL;
    ssize_t r = kt_resp_parse_reply(p, n, lim, &s->rep, err);
    CHECK(kt_resp_reply_len(p, n, lim, &s->skip, &err2) == r);
    if (r <= 0) {
        CHECK(s->rep.count == 0);
        CHECK(r == KT_RESP_INCOMPLETE || (*err && err2 && strcmp(*err, err2) == 0));
        return r;
    }
    CHECK(s->rep.count > 0);
    if (out) {
        kt_out o = kt_buf_out(out);
        for (size_t i = 0; i < s->rep.count; i++) {
            const kt_resp_node *nd = &s->rep.nodes[i];
            CHECK(!nd->p || (nd->p >= p && nd->p + nd->len <= p + r));
            encode(&o, out, nd);
        }
    }
    return r;
}

/* The nodes form one well-nested tree within max_depth, and the encoder
 * writes them back as exactly the bytes that were parsed. */
static void rep_check(void *state, const char *p, size_t r, const kt_resp_limits *lim)
{
    const struct replies *s = state;
    const kt_resp_limits *l = lim ? lim : &kt_resp_default_limits;
    size_t max_depth = l->max_depth < KT_RESP_MAX_DEPTH ? l->max_depth : KT_RESP_MAX_DEPTH;
    kt_buf enc = { 0 };
    kt_out o = kt_buf_out(&enc);

    CHECK(walk(&s->rep, 0, 0, max_depth) == s->rep.count);
    for (size_t i = 0; i < s->rep.count; i++)
        encode(&o, &enc, &s->rep.nodes[i]);
    CHECK(enc.len == r && memcmp(enc.data, p, enc.len) == 0);
    kt_buf_free(&enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const fuzz_target reply = { rep_open, rep_close, rep_parse, rep_check };
    return fuzz_one(&reply, data, size);
}
