/*
 * test-resp.c - the RESP codec: requests and replies fed whole, byte by
 * byte, split at every offset and at random ones, with the buffer moved
 * between calls, and pipelined; Redis's protocol errors
 * (tests/unit/protocol.tcl among them); limits; bounded work when a message
 * trickles in; reset and trim; encoder round trips; allocation failures.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <kettle/resp.h>
#include "unit.h"

typedef struct bytes {
    const char *p;
    size_t len;
} bytes;
#define B(s) { s, sizeof(s) - 1 }

static kt_resp_req g_req;
static kt_resp_reply g_rep;
static kt_resp_reply g_skip; /* kt_resp_reply_len's state */

/* Start the parsers afresh: what follows is not the message they were in. */
static void reset_parsers(void)
{
    kt_resp_req_reset(&g_req);
    kt_resp_reply_reset(&g_rep);
    kt_resp_reply_reset(&g_skip);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    return unit_xorshift64(&rng_state);
}

/* ---- canonical forms: what a parse produced, as comparable bytes ---------- */

/* A request re-encoded as an array of bulks ("*0\r\n" for a skipped one). */
static void canon_request(const kt_resp_req *req, kt_buf *out)
{
    kt_out o = kt_buf_out(out);
    assert_int_equal(kt_resp_command(&o, req->argc, req->argv), 0);
}

static void put_str(kt_buf *out, const char *s)
{
    assert_int_equal(kt_buf_append(out, s, strlen(s)), 0);
}

static void put_escaped(kt_buf *out, const char *p, size_t n)
{
    char tmp[8];
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x21 && c < 0x7f && c != '\\') {
            assert_int_equal(kt_buf_append(out, p + i, 1), 0);
        } else {
            snprintf(tmp, sizeof(tmp), "\\x%02x", c);
            put_str(out, tmp);
        }
    }
}

/* A reply tree as text: "+OK", ":5", "$abc", "nil$", "[:1 [$a]]". */
static size_t render(const kt_resp_node *nodes, size_t i, kt_buf *out)
{
    const kt_resp_node *nd = &nodes[i++];
    char tmp[32];
    switch (nd->type) {
    case KT_RESP_STRING:
    case KT_RESP_ERROR_REPLY:
    case KT_RESP_BULK:
        tmp[0] = (char)nd->type;
        assert_int_equal(kt_buf_append(out, tmp, 1), 0);
        put_escaped(out, nd->p, nd->len);
        break;
    case KT_RESP_INTEGER:
        snprintf(tmp, sizeof(tmp), ":%lld", (long long)nd->i);
        put_str(out, tmp);
        break;
    case KT_RESP_NIL:
        put_str(out, nd->i == '$' ? "nil$" : "nil*");
        break;
    case KT_RESP_ARRAY:
        put_str(out, "[");
        for (size_t k = 0; k < nd->n; k++) {
            if (k)
                put_str(out, " ");
            i = render(nodes, i, out);
        }
        put_str(out, "]");
        break;
    default:
        fail_msg("bad node type %d", nd->type);
    }
    return i;
}

/* ---- the two parsers behind one signature ---------------------------------- */

typedef ssize_t (*one_fn)(const char *buf, size_t len, const kt_resp_limits *lim,
                          kt_buf *canon, const char **err);

static ssize_t one_request(const char *buf, size_t len, const kt_resp_limits *lim,
                           kt_buf *canon, const char **err)
{
    ssize_t r = kt_resp_parse_request(buf, len, lim, &g_req, err);
    if (r > 0 && canon)
        canon_request(&g_req, canon);
    return r;
}

static ssize_t one_reply(const char *buf, size_t len, const kt_resp_limits *lim,
                         kt_buf *canon, const char **err)
{
    const char *err2 = NULL;
    ssize_t r = kt_resp_parse_reply(buf, len, lim, &g_rep, err);
    /* kt_resp_reply_len agrees on every input. */
    assert_int_equal(kt_resp_reply_len(buf, len, lim, &g_skip, &err2), r);
    if (r == KT_RESP_ERROR)
        assert_string_equal(err2, *err);
    if (r > 0 && canon) {
        assert_int_equal(render(g_rep.nodes, 0, canon), g_rep.count);
        put_str(canon, "\n");
    }
    return r;
}

/*
 * Feed data into a receive buffer the way a server gets it: a first chunk
 * of `first` bytes, then chunks of `step`, parsing every complete message
 * after each chunk. Canonical forms of the messages go to canon; returns
 * the error if one stopped the feed (NULL otherwise).
 */
static const char *feed(one_fn fn, const kt_resp_limits *lim, const char *data, size_t len,
                        size_t first, size_t step, kt_buf *canon)
{
    kt_buf in = { 0 };
    size_t off = 0, chunk = first;
    const char *err = NULL;

    reset_parsers();
    while (off < len) {
        size_t n = len - off < chunk ? len - off : chunk;
        assert_int_equal(kt_buf_append(&in, data + off, n), 0);
        off += n;
        chunk = step;
        for (;;) {
            ssize_t r = fn(in.data, in.len, lim, canon, &err);
            if (r == KT_RESP_ERROR) {
                kt_buf_free(&in);
                return err;
            }
            if (r == KT_RESP_INCOMPLETE)
                break;
            assert_true(r > 0 && (size_t)r <= in.len);
            kt_buf_consume(&in, (size_t)r);
        }
    }
    assert_int_equal(in.len, 0);
    kt_buf_free(&in);
    return NULL;
}

/* Every proper prefix, each in a buffer of exactly its size (so that
 * AddressSanitizer sees any read past the end), gives INCOMPLETE, or the
 * error the whole input gives. */
static void check_prefixes(one_fn fn, const kt_resp_limits *lim, const char *data,
                           size_t len, const char *whole_err)
{
    reset_parsers();
    for (size_t n = 0; n < len; n++) {
        char *copy = malloc(n ? n : 1);
        const char *err = NULL;
        ssize_t r;
        assert_non_null(copy);
        memcpy(copy, data, n);
        r = fn(copy, n, lim, NULL, &err);
        free(copy);
        if (r == KT_RESP_ERROR && whole_err) {
            assert_string_equal(err, whole_err);
            continue;
        }
        if (r != KT_RESP_INCOMPLETE)
            fail_msg("prefix %zu of %zu gave %zd (%s)", n, len, r, err ? err : "");
    }
}

/* A valid message: whole, every prefix, byte by byte, split at every
 * offset: the same canonical result each time. */
static void check_valid(one_fn fn, const kt_resp_limits *lim, const char *data, size_t len,
                        const char *expect, size_t expect_len)
{
    kt_buf a = { 0 };
    char *copy = malloc(len);
    const char *err = NULL;

    assert_non_null(copy);
    memcpy(copy, data, len);
    reset_parsers();
    assert_int_equal(fn(copy, len, lim, &a, &err), (ssize_t)len);
    free(copy);
    assert_int_equal(a.len, expect_len);
    assert_memory_equal(a.data, expect, expect_len);
    check_prefixes(fn, lim, data, len, NULL);
    for (size_t split = 0; split <= len; split++) {
        a.len = 0;
        assert_null(feed(fn, lim, data, len, split ? split : 1, split ? len : 1, &a));
        assert_int_equal(a.len, expect_len);
        assert_memory_equal(a.data, expect, expect_len);
    }
    kt_buf_free(&a);
}

/* A malformed message: the error text whole, and consistent on every
 * prefix and every split. */
static void check_error(one_fn fn, const kt_resp_limits *lim, const char *data, size_t len,
                        const char *want)
{
    const char *err = NULL;
    char *copy = malloc(len);
    ssize_t r;

    assert_non_null(copy);
    memcpy(copy, data, len);
    reset_parsers();
    r = fn(copy, len, lim, NULL, &err);
    free(copy);
    if (r != KT_RESP_ERROR)
        fail_msg("expected error '%s', got %zd for %.*s", want, r, (int)len, data);
    assert_string_equal(err, want);
    if (len > 4096)
        return; /* prefixes of the long ones are covered by the limit tests */
    check_prefixes(fn, lim, data, len, want);
    for (size_t split = 1; split < len; split++)
        assert_string_equal(feed(fn, lim, data, len, split, len, NULL), want);
    assert_string_equal(feed(fn, lim, data, len, 1, 1, NULL), want);
}

/* ---- requests ------------------------------------------------------------- */

struct req_case {
    bytes in;
    size_t argc;
    bytes argv[5];
};

static const struct req_case req_cases[] = {
    { B("*1\r\n$4\r\nPING\r\n"), 1, { B("PING") } },
    { B("*2\r\n$3\r\nGET\r\n$1\r\n1\r\n"), 2, { B("GET"), B("1") } },
    { B("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"), 3, { B("SET"), B("k"), B("") } },
    { B("*2\r\n$4\r\nECHO\r\n$5\r\na\0b\r\n\r\n"), 2, { B("ECHO"), B("a\0b\r\n") } },
    { B("*1\r\n$2\r\n\r\n\r\n"), 1, { B("\r\n") } },
    { B("*2\r\n$3\r\nGET\r\n$20\r\n-9223372036854775808\r\n"), 2, { B("GET"), B("-9223372036854775808") } },
    { B("*0\r\n"), 0, { { 0 } } },
    { B("*-1\r\n"), 0, { { 0 } } },
    { B("*-10\r\n"), 0, { { 0 } } },
    { B("PING\r\n"), 1, { B("PING") } },
    { B("PING\n"), 1, { B("PING") } },
    { B("\r\n"), 0, { { 0 } } },
    { B("\n"), 0, { { 0 } } },
    { B("  \t \r\n"), 0, { { 0 } } },
    { B("GET 1\r\n"), 2, { B("GET"), B("1") } },
    { B("  SET   a\t b  \r\n"), 3, { B("SET"), B("a"), B("b") } },
    { B("SET k \"hello world\"\r\n"), 3, { B("SET"), B("k"), B("hello world") } },
    { B("SET k \"a\\nb\\r\\t\\b\\a\\x41\\x7a\\\\\\\"\\q\"\r\n"), 3,
      { B("SET"), B("k"), B("a\nb\r\t\b\aAz\\\"q") } },
    { B("SET k 'it\\'s \"x\" \\n'\r\n"), 3, { B("SET"), B("k"), B("it's \"x\" \\n") } },
    { B("SET k \"\" ''\r\n"), 4, { B("SET"), B("k"), B(""), B("") } },
    { B("SET k ab\"c d\" e'f g'\r\n"), 4, { B("SET"), B("k"), B("abc d"), B("ef g") } },
    { B("SET k \"\\xZZ\\x4\"\r\n"), 3, { B("SET"), B("k"), B("xZZx4") } },
    { B("SET k \"\\x00\\xff\\xAb\"\r\n"), 3, { B("SET"), B("k"), B("\0\xff\xab") } },
    { B("$3\r\n"), 1, { B("$3") } },
    { B("GET\vkey\r\n"), 1, { B("GET\vkey") } },
    { B("\vGET\f\r\n"), 1, { B("GET\f") } },
    { B("ECHO a\rb\r\n"), 3, { B("ECHO"), B("a"), B("b") } },
    { B("ECHO \"a\"\tb\r\n"), 3, { B("ECHO"), B("a"), B("b") } },
    { B("ECHO a\0b\r\n"), 2, { B("ECHO"), B("a\0b") } },
};

static void expected_request(const struct req_case *c, kt_buf *out)
{
    kt_resp_arg argv[5];
    kt_out o = kt_buf_out(out);
    for (size_t i = 0; i < c->argc; i++) {
        argv[i].p = c->argv[i].p;
        argv[i].len = c->argv[i].len;
    }
    assert_int_equal(kt_resp_command(&o, c->argc, argv), 0);
}

static void test_request_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(req_cases) / sizeof(req_cases[0]); i++) {
        kt_buf want = { 0 };
        expected_request(&req_cases[i], &want);
        check_valid(one_request, NULL, req_cases[i].in.p, req_cases[i].in.len, want.data, want.len);
        kt_buf_free(&want);
    }
}

/* all fed in a first piece of first bytes, then pieces of step bytes:
 * no error, and the canonical forms of want. */
static void feeds_give(one_fn fn, const kt_buf *all, size_t first, size_t step, const kt_buf *want)
{
    kt_buf got = { 0 };
    assert_null(feed(fn, NULL, all->data, all->len, first, step, &got));
    assert_int_equal(got.len, want->len);
    assert_memory_equal(got.data, want->data, want->len);
    kt_buf_free(&got);
}

static void test_request_pipelined(void **state)
{
    kt_buf all = { 0 }, want = { 0 };
    size_t n = sizeof(req_cases) / sizeof(req_cases[0]);
    (void)state;

    /* Inline cases after a multibulk one and the other way round, twice. */
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(kt_buf_append(&all, req_cases[i].in.p, req_cases[i].in.len), 0);
            expected_request(&req_cases[i], &want);
        }
    }
    feeds_give(one_request, &all, all.len, 1, &want);
    for (size_t step = 1; step < 40; step += 3)
        feeds_give(one_request, &all, step, step, &want);
    kt_buf_free(&all);
    kt_buf_free(&want);
}

/* Bytes, and what a parser must make of them: an error, or a reply tree
 * as text. */
struct io_case {
    bytes in;
    const char *want;
};

static const struct io_case req_errors[] = {
    /* tests/unit/protocol.tcl */
    { B("*3000000000\r\n"), "invalid multibulk length" },
    { B("*20000000\r\n"), "invalid multibulk length" },
    { B("*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n"), "expected '$', got 'f'" },
    { B("*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n"), "invalid bulk length" },
    { B("*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$2000000000\r\n"), "invalid bulk length" },
    { B("*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$blabla\r\n"), "invalid bulk length" },
    { B("*1\r\nfoo\r\n"), "expected '$', got 'f'" },
    { B("set \"\"\"test-key\"\"\" test-value\r\nping\r\n"), "unbalanced quotes in request" },
    /* more of the same families */
    { B("*1048577\r\n"), "invalid multibulk length" },
    { B("*\r\n"), "invalid multibulk length" },
    { B("*abc\r\n"), "invalid multibulk length" },
    { B("*01\r\n"), "invalid multibulk length" },
    { B("*+1\r\n"), "invalid multibulk length" },
    { B("* 1\r\n"), "invalid multibulk length" },
    { B("*-0\r\n"), "invalid multibulk length" },
    { B("*99999999999999999999\r\n"), "invalid multibulk length" },
    { B("*1x\r\n"), "invalid multibulk length" },
    { B("*1\r\n$3 \r\nabc\r\n"), "invalid bulk length" },
    { B("*1\rX"), "invalid multibulk length" },
    { B("*1\r\n$\r\n"), "invalid bulk length" },
    { B("*1\r\n$01\r\n"), "invalid bulk length" },
    { B("*1\r\n$-1\r\n"), "invalid bulk length" },
    { B("*1\r\n$-0\r\n"), "invalid bulk length" },
    { B("*1\r\n$9223372036854775808\r\n"), "invalid bulk length" },
    { B("*1\r\n$536870913\r\n"), "invalid bulk length" },
    { B("*1\r\n$99999999999999999999\r\n"), "invalid bulk length" },
    { B("*1\r\n$3\r\nfooX\r\n"), "invalid bulk length" },
    { B("*1\r\n$3\r\nfoo\rX"), "invalid bulk length" },
    { B("*1\r\n$3\rX"), "invalid bulk length" },
    { B("*1\r\n:1\r\n"), "expected '$', got ':'" },
    { B("*2\r\n$3\r\nGET\r\n*1\r\n"), "expected '$', got '*'" },
    { B("*1\r\n\r\n"), "expected '$', got '\r'" },
    { B("*1\r\n\0\r\n"), "expected '$', got '" },
    { B("*111111111111111111111111111111111111111111\r\n"), "too big mbulk count string" },
    { B("*1\r\n$111111111111111111111111111111111111111111\r\n"), "too big bulk count string" },
    { B("*1\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), "too big bulk count string" },
    { B("GET \"abc\r\n"), "unbalanced quotes in request" },
    { B("GET 'abc\r\n"), "unbalanced quotes in request" },
    { B("GET \"a\"b\r\n"), "unbalanced quotes in request" },
    { B("GET 'a'b\r\n"), "unbalanced quotes in request" },
    { B("GET \"abc\\\r\n"), "unbalanced quotes in request" },
    { B("GET 'it\\'\r\n"), "unbalanced quotes in request" },
};

static void test_request_errors(void **state)
{
    char *big;
    size_t n;
    (void)state;

    for (size_t i = 0; i < sizeof(req_errors) / sizeof(req_errors[0]); i++)
        check_error(one_request, NULL, req_errors[i].in.p, req_errors[i].in.len, req_errors[i].want);

    /* protocol.tcl's "protocol desync" cases: a first byte, then endless
     * data without a newline. */
    big = malloc(80000);
    assert_non_null(big);
    for (n = 1; n < 80000; n++)
        big[n] = "payload"[n % 7];
    big[0] = '\0';
    check_error(one_request, NULL, big, 80000, "too big inline request");
    big[0] = '$';
    big[1] = '\0';
    check_error(one_request, NULL, big, 80000, "too big inline request");
    big[0] = '*';
    check_error(one_request, NULL, big, 80000, "too big mbulk count string");
    check_error(one_request, NULL, big, 40, "too big mbulk count string");
    /* A line of 70000 bytes, with and without its newline. */
    memset(big, 'A', 80000);
    check_error(one_request, NULL, big, 70000, "too big inline request");
    big[70000] = '\n';
    check_error(one_request, NULL, big, 70001, "too big inline request");
    free(big);
}

static void test_request_limits(void **state)
{
    kt_resp_limits lim = { .max_inline = 16, .max_bulk = 4, .max_args = 2, .max_depth = 32 };
    const char *err = NULL;
    char line[64];
    (void)state;

    /* Inline: 16 bytes pass, 17 are refused with or without the newline,
     * and a final \r is not counted until it proves to be inside. */
    assert_int_equal(kt_resp_parse_request("0123456789abcdef\r\n", 18, &lim, &g_req, &err), 18);
    assert_int_equal(g_req.argc, 1);
    assert_int_equal(kt_resp_parse_request("0123456789abcdef\r", 17, &lim, &g_req, &err), KT_RESP_INCOMPLETE);
    assert_int_equal(kt_resp_parse_request("0123456789abcdef", 16, &lim, &g_req, &err), KT_RESP_INCOMPLETE);
    assert_int_equal(kt_resp_parse_request("0123456789abcdefg", 17, &lim, &g_req, &err), KT_RESP_ERROR);
    assert_string_equal(err, "too big inline request");
    assert_int_equal(kt_resp_parse_request("0123456789abcdef\rx", 18, &lim, &g_req, &err), KT_RESP_ERROR);
    check_error(one_request, &lim, "0123456789abcdefg\r\n", 19, "too big inline request");
    check_error(one_request, &lim, "0123456789abcdefg\n", 18, "too big inline request");
    /* Count and size. */
    check_error(one_request, &lim, "*3\r\n", 4, "invalid multibulk length");
    check_valid(one_request, &lim, "*-1\r\n", 5, "*0\r\n", 4);
    check_error(one_request, &lim, "*2\r\n$4\r\nabcd\r\n$5\r\n", 18, "invalid bulk length");
    check_valid(one_request, &lim, "*2\r\n$4\r\nabcd\r\n$0\r\n\r\n", 20,
                "*2\r\n$4\r\nabcd\r\n$0\r\n\r\n", 20);
    /* The defaults: exactly at a limit is waited for, past it refused. */
    assert_int_equal(kt_resp_parse_request("*1048576\r\n", 10, NULL, &g_req, &err), KT_RESP_INCOMPLETE);
    kt_resp_req_reset(&g_req); /* the next one is another message */
    assert_int_equal(kt_resp_parse_request("*1\r\n$536870912\r\n", 16, NULL, &g_req, &err),
                     KT_RESP_INCOMPLETE);
    /* Header lines: KT_RESP_MAX_HEADER bytes wait, one more is refused. */
    memset(line, '1', sizeof(line));
    line[0] = '*';
    kt_resp_req_reset(&g_req);
    assert_int_equal(kt_resp_parse_request(line, KT_RESP_MAX_HEADER, NULL, &g_req, &err),
                     KT_RESP_INCOMPLETE);
    assert_int_equal(kt_resp_parse_request(line, KT_RESP_MAX_HEADER + 1, NULL, &g_req, &err),
                     KT_RESP_ERROR);
    assert_string_equal(err, "too big mbulk count string");
    /* Inline argc is not limited by max_args (the line length bounds it). */
    assert_int_equal(kt_resp_parse_request("a b c d\n", 8, &lim, &g_req, &err), 8);
    assert_int_equal(g_req.argc, 4);
}

/* ---- replies -------------------------------------------------------------- */

static const struct io_case rep_cases[] = {
    { B("+OK\r\n"), "+OK" },
    { B("+\r\n"), "+" },
    { B("+hello world\r\n"), "+hello\\x20world" },
    { B("-ERR unknown command 'foo'\r\n"), "-ERR\\x20unknown\\x20command\\x20'foo'" },
    { B(":0\r\n"), ":0" },
    { B(":-1\r\n"), ":-1" },
    { B(":9223372036854775807\r\n"), ":9223372036854775807" },
    { B(":-9223372036854775808\r\n"), ":-9223372036854775808" },
    { B("$0\r\n\r\n"), "$" },
    { B("$3\r\n123\r\n"), "$123" },
    { B("$5\r\na\0b\r\n\r\n"), "$a\\x00b\\x0d\\x0a" },
    { B("$2\r\n\r\n\r\n"), "$\\x0d\\x0a" },
    { B("$-1\r\n"), "nil$" },
    { B("*-1\r\n"), "nil*" },
    { B("*0\r\n"), "[]" },
    { B("*3\r\n:1\r\n:2\r\n:3\r\n"), "[:1 :2 :3]" },
    { B("*2\r\n$3\r\nfoo\r\n$-1\r\n"), "[$foo nil$]" },
    { B("*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n$1\r\na\r\n"), "[[:1 :2] [$a]]" },
    { B("*1\r\n*1\r\n*1\r\n*1\r\n*0\r\n"), "[[[[[]]]]]" },
    { B("*3\r\n*0\r\n*-1\r\n+x\r\n"), "[[] nil* +x]" },
    { B("*2\r\n-ERR a\r\n-ERR b\r\n"), "[-ERR\\x20a -ERR\\x20b]" },
    { B("*4\r\n+a\r\n:7\r\n$1\r\nb\r\n*1\r\n:8\r\n"), "[+a :7 $b [:8]]" },
    { B("*2\r\n*3\r\n:1\r\n*1\r\n:2\r\n:3\r\n:4\r\n"), "[[:1 [:2] :3] :4]" },
};

static void test_reply_valid(void **state)
{
    kt_buf all = { 0 }, want = { 0 };
    (void)state;

    for (size_t i = 0; i < sizeof(rep_cases) / sizeof(rep_cases[0]); i++) {
        kt_buf w = { 0 };
        put_str(&w, rep_cases[i].want);
        put_str(&w, "\n");
        check_valid(one_reply, NULL, rep_cases[i].in.p, rep_cases[i].in.len, w.data, w.len);
        assert_int_equal(kt_buf_append(&all, rep_cases[i].in.p, rep_cases[i].in.len), 0);
        assert_int_equal(kt_buf_append(&want, w.data, w.len), 0);
        kt_buf_free(&w);
    }
    /* Pipelined. */
    for (size_t step = 1; step < 30; step += 4)
        feeds_give(one_reply, &all, step, step, &want);
    kt_buf_free(&all);
    kt_buf_free(&want);
}

static const struct io_case rep_errors[] = {
    { B("?x\r\n"), "invalid reply type byte" },
    { B("\r\n"), "invalid reply type byte" },
    { B("*1\r\n?\r\n"), "invalid reply type byte" },
    { B(":abc\r\n"), "invalid integer" },
    { B(":\r\n"), "invalid integer" },
    { B(":01\r\n"), "invalid integer" },
    { B(":12a\r\n"), "invalid integer" },
    { B(":9223372036854775808\r\n"), "invalid integer" },
    { B(":-9223372036854775809\r\n"), "invalid integer" },
    { B(":111111111111111111111111111111111111111\r\n"), "invalid integer" },
    { B("$-2\r\n"), "invalid bulk length" },
    { B("$abc\r\n"), "invalid bulk length" },
    { B("$3\r\nabcd\r\n"), "invalid bulk length" },
    { B("$536870913\r\n"), "invalid bulk length" },
    { B("*-2\r\n"), "invalid multibulk length" },
    { B("*-0\r\n"), "invalid multibulk length" },
    { B("*01\r\n"), "invalid multibulk length" },
    { B("*-\r\n"), "invalid multibulk length" },
    { B("$-0\r\n"), "invalid bulk length" },
    { B("$01\r\n"), "invalid bulk length" },
    { B("$-\r\n"), "invalid bulk length" },
    { B("$9223372036854775808\r\n"), "invalid bulk length" },
    { B(":-0\r\n"), "invalid integer" },
    { B(":-\r\n"), "invalid integer" },
    { B("*1048577\r\n"), "invalid multibulk length" },
    { B("+OK\rX"), "expected CRLF" },
    { B("*1\rX"), "expected CRLF" },
    { B("$111111111111111111111111111111111111111"), "too big bulk count string" },
    { B("*111111111111111111111111111111111111111"), "too big mbulk count string" },
    { B("*2\r\n:1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n"
        "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n"
        "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n"), "reply nested too deeply" },
};

static void test_reply_errors(void **state)
{
    kt_resp_limits lim = { .max_inline = 8, .max_bulk = 3, .max_args = 2, .max_depth = 2 };
    char *big;
    (void)state;

    for (size_t i = 0; i < sizeof(rep_errors) / sizeof(rep_errors[0]); i++)
        check_error(one_reply, NULL, rep_errors[i].in.p, rep_errors[i].in.len, rep_errors[i].want);

    big = malloc(70000);
    assert_non_null(big);
    memset(big, 'x', 70000);
    big[0] = '+';
    check_error(one_reply, NULL, big, 70000, "too big simple string");
    big[0] = '-';
    check_error(one_reply, NULL, big, 70000, "too big simple string");
    free(big);

    /* Limits. */
    check_valid(one_reply, &lim, "+1234567\r\n", 10, "+1234567\n", 9);
    check_error(one_reply, &lim, "+12345678\r\n", 11, "too big simple string");
    check_valid(one_reply, &lim, "$3\r\nabc\r\n", 9, "$abc\n", 5);
    check_error(one_reply, &lim, "$4\r\nabcd\r\n", 10, "invalid bulk length");
    check_valid(one_reply, &lim, "*2\r\n*0\r\n:1\r\n", 12, "[[] :1]\n", 8);
    check_error(one_reply, &lim, "*3\r\n", 4, "invalid multibulk length");
    check_error(one_reply, &lim, "*1\r\n*1\r\n*0\r\n", 12, "reply nested too deeply");
    lim.max_depth = 0;
    check_error(one_reply, &lim, "*0\r\n", 4, "reply nested too deeply");
    check_valid(one_reply, &lim, "*-1\r\n", 5, "nil*\n", 5);
}

/* ---- encoder -------------------------------------------------------------- */

static void expect_buf(kt_buf *b, const char *want, size_t n)
{
    assert_int_equal(b->len, n);
    assert_memory_equal(b->data, want, n);
    b->len = 0;
}
/* Run an encoder call on b and compare what it wrote. */
#define ENC(call, s)                            \
    do {                                        \
        assert_int_equal((call), 0);            \
        expect_buf(&b, s, sizeof(s) - 1);       \
    } while (0)

static void test_encoder(void **state)
{
    static const int64_t nums[] = { 0, 1, -1, 9, 10, -10, 99, 100, 12345, -99999,
                                    1000000000000ll, INT64_MAX, INT64_MIN, INT64_MIN + 1 };
    kt_buf b = { 0 };
    kt_out o = kt_buf_out(&b);
    char want[64], *longtext;
    (void)state;

    ENC(kt_resp_simple(&o, "OK"), "+OK\r\n");
    ENC(kt_resp_simple(&o, "a\r\nb"), "+a  b\r\n");
    ENC(kt_resp_error(&o, "ERR Protocol error: %s", "invalid bulk length"),
        "-ERR Protocol error: invalid bulk length\r\n");
    ENC(kt_resp_error(&o, "ERR %d\nlines\r", 2), "-ERR 2 lines \r\n");
    ENC(kt_resp_nil(&o), "$-1\r\n");
    ENC(kt_resp_nil_array(&o), "*-1\r\n");
    ENC(kt_resp_array(&o, 0), "*0\r\n");
    ENC(kt_resp_array(&o, 1234567), "*1234567\r\n");
    ENC(kt_resp_bulk(&o, NULL, 0), "$0\r\n\r\n");
    ENC(kt_resp_bulk(&o, "a\0b", 3), "$3\r\na\0b\r\n");

    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]) + 2000; i++) {
        int64_t v = i < sizeof(nums) / sizeof(nums[0]) ? nums[i]
                                                       : (int64_t)(rnd() >> (rnd() % 64));
        int n;
        if (i % 2 && v != INT64_MIN)
            v = -v;
        n = snprintf(want, sizeof(want), ":%lld\r\n", (long long)v);
        assert_int_equal(kt_resp_int(&o, v), 0);
        expect_buf(&b, want, (size_t)n);
        n = snprintf(want, sizeof(want), "%lld", (long long)v);
        n = snprintf(want, sizeof(want), "$%d\r\n%lld\r\n", n, (long long)v);
        assert_int_equal(kt_resp_bulk_i64(&o, v), 0);
        expect_buf(&b, want, (size_t)n);
    }

    /* A long error takes the other formatting path. */
    longtext = malloc(1001);
    assert_non_null(longtext);
    memset(longtext, 'e', 1000);
    longtext[500] = '\n';
    longtext[1000] = '\0';
    assert_int_equal(kt_resp_error(&o, "ERR %s", longtext), 0);
    assert_int_equal(b.len, 1007);
    assert_memory_equal(b.data, "-ERR ee", 7);
    assert_int_equal(b.data[505], ' ');
    assert_memory_equal(b.data + 1005, "\r\n", 2);
    free(longtext);
    kt_buf_free(&b);
}

static void test_roundtrip(void **state)
{
    kt_buf b = { 0 }, data = { 0 };
    kt_out o = kt_buf_out(&b);
    const char *err = NULL;
    (void)state;

    for (int iter = 0; iter < 300; iter++) {
        kt_resp_arg argv[6];
        size_t argc = 1 + rnd() % 6, off = 0;
        ssize_t r;

        /* Random binary arguments, now and then past 16 KiB. */
        data.len = 0;
        for (size_t i = 0; i < argc; i++) {
            size_t n = rnd() % 8 == 0 ? rnd() % 40000 : rnd() % 40;
            char *p = kt_buf_reserve(&data, n);
            assert_non_null(p);
            for (size_t k = 0; k < n; k++)
                p[k] = (char)rnd();
            kt_buf_commit(&data, n);
            argv[i].len = n;
        }
        for (size_t i = 0; i < argc; i++) {
            argv[i].p = data.data + off;
            off += argv[i].len;
        }

        /* As a request. */
        b.len = 0;
        assert_int_equal(kt_resp_command(&o, argc, argv), 0);
        r = kt_resp_parse_request(b.data, b.len, NULL, &g_req, &err);
        assert_int_equal(r, (ssize_t)b.len);
        assert_int_equal(g_req.argc, argc);
        for (size_t i = 0; i < argc; i++) {
            assert_int_equal(g_req.argv[i].len, argv[i].len);
            if (argv[i].len)
                assert_memory_equal(g_req.argv[i].p, argv[i].p, argv[i].len);
        }

        /* As a reply: an array of the bulks, a number and a nil. */
        b.len = 0;
        assert_int_equal(kt_resp_array(&o, argc + 2), 0);
        for (size_t i = 0; i < argc; i++)
            assert_int_equal(kt_resp_bulk(&o, argv[i].p, argv[i].len), 0);
        assert_int_equal(kt_resp_bulk_i64(&o, (int64_t)rnd()), 0);
        assert_int_equal(kt_resp_nil(&o), 0);
        r = kt_resp_parse_reply(b.data, b.len, NULL, &g_rep, &err);
        assert_int_equal(r, (ssize_t)b.len);
        assert_int_equal(kt_resp_reply_len(b.data, b.len, NULL, &g_skip, &err), r);
        assert_int_equal(g_rep.count, argc + 3);
        assert_int_equal(g_rep.nodes[0].type, KT_RESP_ARRAY);
        assert_int_equal(g_rep.nodes[0].n, argc + 2);
        for (size_t i = 0; i < argc; i++) {
            assert_int_equal(g_rep.nodes[i + 1].type, KT_RESP_BULK);
            assert_int_equal(g_rep.nodes[i + 1].len, argv[i].len);
            if (argv[i].len)
                assert_memory_equal(g_rep.nodes[i + 1].p, argv[i].p, argv[i].len);
        }
        assert_int_equal(g_rep.nodes[argc + 2].type, KT_RESP_NIL);
    }
    kt_buf_free(&b);
    kt_buf_free(&data);
}

static void test_buf(void **state)
{
    kt_buf b = { 0 };
    (void)state;
    assert_non_null(kt_buf_reserve(&b, 0));
    assert_int_equal(kt_buf_append(&b, "hello world", 11), 0);
    kt_buf_consume(&b, 6);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "world", 5);
    assert_null(kt_buf_reserve(&b, SIZE_MAX)); /* len + n overflows */
    assert_int_equal(b.len, 5);
    kt_buf_consume(&b, 99);
    assert_int_equal(b.len, 0);
    kt_buf_free(&b);
    assert_null(b.data);
}

/* ---- allocation failure --------------------------------------------------- */

static long alloc_budget = -1; /* allocations left; -1: no limit */

static bool take_budget(void)
{
    if (alloc_budget == 0)
        return false;
    if (alloc_budget > 0)
        alloc_budget--;
    return true;
}

static void *failing_malloc(size_t n) { return take_budget() ? malloc(n) : NULL; }
static void *failing_realloc(void *p, size_t n) { return take_budget() ? realloc(p, n) : NULL; }

/* A request and a reply of n elements each: "*n" then n times their item. */
static void build_n(kt_buf *req, kt_buf *rep, int n, const char *req_item, const char *rep_item)
{
    char head[24];
    int hl = snprintf(head, sizeof(head), "*%d\r\n", n);
    assert_int_equal(kt_buf_append(req, head, (size_t)hl) | kt_buf_append(rep, head, (size_t)hl), 0);
    for (int i = 0; i < n; i++) {
        assert_int_equal(kt_buf_append(req, req_item, strlen(req_item)), 0);
        assert_int_equal(kt_buf_append(rep, rep_item, strlen(rep_item)), 0);
    }
}

/* A parse under a failing allocator: "out of memory", or want bytes. */
static void oom_or(ssize_t n, const char *err, ssize_t want)
{
    if (n == KT_RESP_ERROR)
        assert_string_equal(err, "out of memory");
    else
        assert_int_equal(n, want);
}

static void test_alloc_failure(void **state)
{
    const kt_allocator failing = { failing_malloc, failing_realloc, NULL };
    kt_buf req = { 0 }, rep = { 0 }, out = { 0 };
    kt_out o = kt_buf_out(&out);
    const char *err;
    (void)state;

    /* 100 arguments need several argv growths; a reply of 100 nodes too. */
    build_n(&req, &rep, 100, "$1\r\nx\r\n", ":1\r\n");

    kt_set_allocator(&failing);
    for (long budget = 0; budget < 10; budget++) {
        kt_resp_req r = { 0 };
        kt_resp_reply p = { 0 };
        ssize_t n;

        alloc_budget = budget;
        err = NULL;
        n = kt_resp_parse_request(req.data, req.len, NULL, &r, &err);
        if (n == KT_RESP_ERROR) {
            assert_string_equal(err, "out of memory");
            assert_int_equal(r.argc, 0);
        } else {
            assert_int_equal(n, (ssize_t)req.len);
            assert_int_equal(r.argc, 100);
        }
        /* Inline: argv first or the scratch for quotes first. */
        for (int k = 0; k < 2; k++) {
            kt_resp_req r2 = { 0 };
            const char *line = k ? "\"v\" k\n" : "SET k \"v\"\n";
            alloc_budget = budget;
            err = NULL;
            n = kt_resp_parse_request(line, strlen(line), NULL, &r2, &err);
            if (n == KT_RESP_ERROR)
                assert_string_equal(err, "out of memory");
            else
                assert_int_equal(r2.argc, k ? 2 : 3);
            alloc_budget = -1;
            kt_resp_req_free(&r2);
        }
        alloc_budget = budget;
        n = kt_resp_parse_reply(rep.data, rep.len, NULL, &p, &err);
        if (n == KT_RESP_ERROR)
            assert_string_equal(err, "out of memory");
        else
            assert_int_equal(p.count, 101);
        alloc_budget = -1;
        kt_resp_req_free(&r);
        kt_resp_reply_free(&p);
    }

    /* The encoder reports -ENOMEM and leaves the buffer as it was. */
    alloc_budget = 0;
    assert_int_equal(kt_resp_simple(&o, "OK"), -ENOMEM);
    assert_int_equal(kt_resp_bulk(&o, "abc", 3), -ENOMEM);
    assert_int_equal(kt_resp_bulk_i64(&o, 42), -ENOMEM);
    assert_int_equal(kt_resp_command(&o, 0, NULL), -ENOMEM);
    assert_int_equal(kt_resp_error(&o, "ERR %s", "x"), -ENOMEM);
    assert_int_equal(out.len, 0);
    alloc_budget = -1;
    kt_set_allocator(NULL);

    kt_buf_free(&req);
    kt_buf_free(&rep);
    kt_buf_free(&out);
}

/* ---- resuming: any split, any buffer, bounded work ------------------------ */

enum feed_how { FEED_WHOLE, FEED_BYTES, FEED_RANDOM, FEED_MOVED };

/*
 * Feed data as a stream would, parsing every complete message after each
 * piece: whole, byte by byte, in random pieces, or in random pieces with
 * the unconsumed bytes moved to a new buffer of exactly their size before
 * every call (so AddressSanitizer sees a stale pointer or a read past the
 * end). Canonical forms go to canon, the bytes consumed to *used; returns
 * the error that stopped the feed, or NULL.
 */
static const char *feed_how(one_fn fn, const kt_resp_limits *lim, const char *data, size_t len,
                            enum feed_how how, kt_buf *canon, size_t *used)
{
    size_t have = 0, start = 0;
    char *moved = NULL;
    const char *err = NULL;

    reset_parsers();
    while (have < len) {
        size_t piece = how == FEED_WHOLE ? len : how == FEED_BYTES ? 1
                     : rnd() % 4 ? 1 + rnd() % 8 : 1 + rnd() % 600;
        have += piece < len - have ? piece : len - have;
        for (;;) {
            const char *p = data + start;
            ssize_t r;
            if (how == FEED_MOVED) {
                free(moved);
                moved = malloc(have - start ? have - start : 1);
                assert_non_null(moved);
                memcpy(moved, data + start, have - start);
                p = moved;
            }
            r = fn(p, have - start, lim, canon, &err);
            if (r == KT_RESP_ERROR) {
                free(moved);
                *used = start;
                return err;
            }
            if (r == KT_RESP_INCOMPLETE)
                break;
            assert_true(r > 0 && (size_t)r <= have - start);
            start += (size_t)r;
        }
    }
    free(moved);
    *used = start;
    return NULL;
}

/* The four feeds of data agree: same messages, same bytes consumed, same
 * error (or none). */
static void check_feeds(one_fn fn, const kt_resp_limits *lim, const char *data, size_t len)
{
    kt_buf want = { 0 }, got = { 0 };
    size_t want_used, used;
    const char *want_err = feed_how(fn, lim, data, len, FEED_WHOLE, &want, &want_used);

    for (int how = FEED_BYTES; how <= FEED_MOVED; how++) {
        for (int round = 0; round < (how == FEED_BYTES ? 1 : 3); round++) {
            const char *err;
            got.len = 0;
            err = feed_how(fn, lim, data, len, (enum feed_how)how, &got, &used);
            if (want_err == NULL || err == NULL)
                assert_ptr_equal(err, want_err);
            else
                assert_string_equal(err, want_err);
            assert_int_equal(used, want_used);
            assert_int_equal(got.len, want.len);
            if (want.len)
                assert_memory_equal(got.data, want.data, want.len);
        }
    }
    kt_buf_free(&want);
    kt_buf_free(&got);
}

static void put_random_bytes(kt_buf *b, size_t n)
{
    char *p = kt_buf_reserve(b, n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)(rnd() % 4 ? "ab\r\n$*\"' \\x0"[rnd() % 12] : (char)rnd());
    kt_buf_commit(b, n);
}

/* A pipeline of requests: the table's cases and random multibulk ones. */
static void gen_requests(kt_buf *b, int n)
{
    kt_out o = kt_buf_out(b);
    for (int i = 0; i < n; i++) {
        if (rnd() % 2) {
            const struct req_case *c = &req_cases[rnd() % (sizeof(req_cases) / sizeof(req_cases[0]))];
            assert_int_equal(kt_buf_append(b, c->in.p, c->in.len), 0);
        } else {
            kt_buf data = { 0 };
            kt_resp_arg argv[8];
            size_t argc = 1 + rnd() % 8, off = 0;
            for (size_t k = 0; k < argc; k++) {
                argv[k].len = rnd() % 5 ? rnd() % 12 : rnd() % 3000;
                put_random_bytes(&data, argv[k].len);
            }
            for (size_t k = 0; k < argc; k++) {
                argv[k].p = data.data + off;
                off += argv[k].len;
            }
            assert_int_equal(kt_resp_command(&o, argc, argv), 0);
            kt_buf_free(&data);
        }
    }
}

/* One random reply, nested up to depth more levels. */
static void gen_reply(kt_buf *b, int depth)
{
    kt_out o = kt_buf_out(b);
    kt_buf data = { 0 };
    size_t n;

    switch (rnd() % (depth > 0 ? 7 : 5)) {
    case 0: put_str(b, rnd() % 2 ? "+OK\r\n" : "-ERR wrong\r\n"); break;
    case 1: assert_int_equal(kt_resp_int(&o, (int64_t)rnd()), 0); break;
    case 2: assert_int_equal(rnd() % 2 ? kt_resp_nil(&o) : kt_resp_nil_array(&o), 0); break;
    case 3:
    case 4:
        n = rnd() % 5 ? rnd() % 16 : rnd() % 4000;
        put_random_bytes(&data, n);
        assert_int_equal(kt_resp_bulk(&o, data.data, n), 0);
        break;
    default:
        n = rnd() % 6;
        assert_int_equal(kt_resp_array(&o, n), 0);
        for (size_t i = 0; i < n; i++)
            gen_reply(b, depth - 1);
        break;
    }
    kt_buf_free(&data);
}

/* Now and then (by iter) a malformed message after in, or its end cut off. */
static void spoil(kt_buf *in, int iter, const struct io_case *errs, size_t n)
{
    if (iter % 3 == 1) {
        const struct io_case *e = &errs[rnd() % n];
        assert_int_equal(kt_buf_append(in, e->in.p, e->in.len), 0);
    } else if (iter % 3 == 2) {
        in->len -= 1 + rnd() % (in->len < 20 ? in->len : 20);
    }
}

static void test_feeds_agree(void **state)
{
    kt_buf in = { 0 };
    kt_resp_limits tight = { .max_inline = 40, .max_bulk = 100, .max_args = 5, .max_depth = 3 };
    (void)state;

    for (int iter = 0; iter < 60; iter++) {
        /* Requests, then now and then a malformed one or a cut-off end. */
        in.len = 0;
        gen_requests(&in, 1 + (int)(rnd() % 20));
        spoil(&in, iter, req_errors, sizeof(req_errors) / sizeof(req_errors[0]));
        check_feeds(one_request, NULL, in.data, in.len);
        check_feeds(one_request, &tight, in.data, in.len);

        /* Replies likewise. */
        in.len = 0;
        for (int i = 0, n = 1 + (int)(rnd() % 10); i < n; i++)
            gen_reply(&in, 4);
        spoil(&in, iter, rep_errors, sizeof(rep_errors) / sizeof(rep_errors[0]));
        check_feeds(one_reply, NULL, in.data, in.len);
        check_feeds(one_reply, &tight, in.data, in.len);
    }
    kt_buf_free(&in);
}

/* Present buf[0..0), buf[0..1), ... buf[0..len) to a request parser:
 * every call before the last is incomplete. Returns the bytes examined. */
static uint64_t trickle_request(kt_resp_req *req, const char *buf, size_t len)
{
    uint64_t before;
    const char *err = NULL;

    kt_resp_req_reset(req);
    before = req->examined;
    for (size_t n = 0; n < len; n++)
        assert_int_equal(kt_resp_parse_request(buf, n, NULL, req, &err), KT_RESP_INCOMPLETE);
    assert_int_equal(kt_resp_parse_request(buf, len, NULL, req, &err), (ssize_t)len);
    return req->examined - before;
}

/* The same for a reply, through both entry points. */
static uint64_t trickle_reply(kt_resp_reply *rep, bool build, const char *buf, size_t len)
{
    uint64_t before;
    const char *err = NULL;

    kt_resp_reply_reset(rep);
    before = rep->examined;
    for (size_t n = 0; n < len; n++)
        assert_int_equal(build ? kt_resp_parse_reply(buf, n, NULL, rep, &err)
                               : kt_resp_reply_len(buf, n, NULL, rep, &err),
                         KT_RESP_INCOMPLETE);
    assert_int_equal(build ? kt_resp_parse_reply(buf, len, NULL, rep, &err)
                           : kt_resp_reply_len(buf, len, NULL, rep, &err),
                     (ssize_t)len);
    return rep->examined - before;
}

/* Work is bounded by the bytes, however they trickle in: at most this
 * many bytes examined per byte of input. */
#define MAX_WORK_PER_BYTE 3

static void check_work(const char *what, uint64_t examined, size_t len)
{
    print_message("%-34s %8zu bytes, %9llu examined (%.2f per byte)\n", what, len,
                  (unsigned long long)examined, (double)examined / (double)len);
    assert_true(examined <= (uint64_t)MAX_WORK_PER_BYTE * len);
}

static void test_bounded_work(void **state)
{
    kt_buf b = { 0 }, keys = { 0 };
    kt_out o = kt_buf_out(&b);
    kt_resp_req req = { 0 };
    kt_resp_reply rep = { 0 };
    size_t nargs = 60001, off = 0, len;
    kt_resp_arg *argv = malloc(nargs * sizeof(*argv));
    const char *err = NULL;
    uint64_t before;
    (void)state;

    /* MGET of 60,000 keys: whole, then byte by byte. */
    assert_non_null(argv);
    put_str(&keys, "MGET");
    argv[0].len = 4;
    for (size_t i = 1; i < nargs; i++) {
        char k[32];
        argv[i].len = (size_t)snprintf(k, sizeof(k), "key:%zu", i);
        put_str(&keys, k);
    }
    for (size_t i = 0; i < nargs; i++) {
        argv[i].p = keys.data + off;
        off += argv[i].len;
    }
    assert_int_equal(kt_resp_command(&o, nargs, argv), 0);
    before = req.examined;
    assert_int_equal(kt_resp_parse_request(b.data, b.len, NULL, &req, &err), (ssize_t)b.len);
    check_work("60,000-key MGET, whole", req.examined - before, b.len);
    check_work("60,000-key MGET, byte by byte", trickle_request(&req, b.data, b.len), b.len);
    assert_int_equal(req.argc, nargs);
    for (size_t i = 0; i < nargs; i++) {
        assert_int_equal(req.argv[i].len, argv[i].len);
        assert_memory_equal(req.argv[i].p, argv[i].p, argv[i].len);
    }
    /* An idle connection gives the 60,001 entries back. */
    assert_true(req.cap >= nargs);
    kt_resp_req_trim(&req, 4096);
    assert_null(req.argv);
    assert_int_equal(req.cap, 0);

    /* A 64 KiB inline line, byte by byte. */
    b.len = 0;
    put_str(&b, "SET k ");
    len = 64 * 1024 - b.len;
    assert_non_null(memset(kt_buf_reserve(&b, len), 'v', len));
    kt_buf_commit(&b, len);
    put_str(&b, "\r\n");
    check_work("64 KiB inline line, byte by byte", trickle_request(&req, b.data, b.len), b.len);
    assert_int_equal(req.argc, 3);
    assert_int_equal(req.argv[2].len, len);

    /* A reply of 100,000 elements, byte by byte, built and measured. */
    b.len = 0;
    assert_int_equal(kt_resp_array(&o, 100000), 0);
    for (int64_t i = 0; i < 100000; i++)
        assert_int_equal(i % 10 == 9 ? kt_resp_nil(&o) : kt_resp_bulk_i64(&o, i * 7919), 0);
    check_work("100,000-element reply, byte by byte", trickle_reply(&rep, true, b.data, b.len), b.len);
    assert_int_equal(rep.count, 100001);
    assert_int_equal(rep.nodes[100000].type, KT_RESP_NIL);
    assert_int_equal(rep.nodes[99999].len, 9);
    assert_memory_equal(rep.nodes[99999].p, "791884162", 9); /* 99998 * 7919 */
    check_work("100,000 elements, kt_resp_reply_len", trickle_reply(&rep, false, b.data, b.len), b.len);
    assert_int_equal(rep.count, 0);

    /* Nested 32 deep (the default max_depth): every level holds three
     * values and the next level; the last one a nil instead. */
    b.len = 0;
    for (int d = 0; d < 32; d++)
        put_str(&b, "*4\r\n+level\r\n:-42\r\n$5\r\nabcde\r\n");
    put_str(&b, "$-1\r\n");
    check_work("32-deep reply, byte by byte", trickle_reply(&rep, true, b.data, b.len), b.len);
    assert_int_equal(rep.count, 32 * 4 + 1);
    check_work("32-deep reply, kt_resp_reply_len", trickle_reply(&rep, false, b.data, b.len), b.len);

    kt_resp_req_free(&req);
    kt_resp_reply_free(&rep);
    kt_buf_free(&b);
    kt_buf_free(&keys);
    free(argv);
}

static void test_reset_trim(void **state)
{
    static const char set[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
    static const char nested[] = "*3\r\n:1\r\n*2\r\n$3\r\nabc\r\n+x\r\n:2\r\n";
    kt_resp_req req = { 0 };
    kt_resp_reply rep = { 0 };
    const char *err = NULL;
    char *moved;
    (void)state;

    /* Input dropped in the middle of a request: reset, then another. */
    assert_int_equal(kt_resp_parse_request(set, 20, NULL, &req, &err), KT_RESP_INCOMPLETE);
    assert_int_equal(req.argc, 0);
    kt_resp_req_reset(&req);
    assert_int_equal(kt_resp_parse_request("PING\r\n", 6, NULL, &req, &err), 6);
    assert_int_equal(req.argc, 1);
    /* Shorter than what was taken: a new message, never a read past it. */
    assert_int_equal(kt_resp_parse_request(set, 25, NULL, &req, &err), KT_RESP_INCOMPLETE);
    assert_int_equal(kt_resp_parse_request("ECHO a\n", 7, NULL, &req, &err), 7);
    assert_int_equal(req.argc, 2);

    /* Arguments taken before the buffer moved point into the new one. */
    assert_int_equal(kt_resp_parse_request(set, 25, NULL, &req, &err), KT_RESP_INCOMPLETE);
    moved = malloc(sizeof(set) - 1);
    assert_non_null(moved);
    memcpy(moved, set, sizeof(set) - 1);
    /* A trim while a request is incomplete keeps what it needs. */
    kt_resp_req_trim(&req, 0);
    assert_non_null(req.argv);
    assert_int_equal(kt_resp_parse_request(moved, sizeof(set) - 1, NULL, &req, &err),
                     (ssize_t)sizeof(set) - 1);
    assert_int_equal(req.argc, 3);
    assert_ptr_equal(req.argv[0].p, moved + 8);
    assert_ptr_equal(req.argv[1].p, moved + 17);
    assert_ptr_equal(req.argv[2].p, moved + 24);
    free(moved);
    /* Between requests: small arrays stay under a keep of 4 KiB, go at 0. */
    kt_resp_req_trim(&req, 4096);
    assert_non_null(req.argv);
    kt_resp_req_trim(&req, 0);
    assert_null(req.argv);
    assert_null(req.scratch);
    assert_int_equal(req.argc + req.cap + req.scratch_cap, 0);
    assert_int_equal(kt_resp_parse_request("SET k \"v w\"\n", 12, NULL, &req, &err), 12);
    assert_int_equal(req.argc, 3);
    assert_memory_equal(req.argv[2].p, "v w", 3);
    kt_resp_req_trim(&req, 0);
    assert_null(req.scratch);

    /* Replies: a waiter that goes away in the middle of its reply; the
     * rest is measured on the same state, from where the parse stopped. */
    assert_int_equal(kt_resp_parse_reply(nested, 14, NULL, &rep, &err), KT_RESP_INCOMPLETE);
    assert_int_equal(rep.count, 0);
    assert_int_equal(kt_resp_reply_len(nested, 20, NULL, &rep, &err), KT_RESP_INCOMPLETE);
    assert_int_equal(kt_resp_reply_len(nested, sizeof(nested) - 1, NULL, &rep, &err),
                     (ssize_t)sizeof(nested) - 1);
    assert_int_equal(rep.count, 0);
    /* Begun by kt_resp_reply_len, finished by kt_resp_parse_reply: the
     * nodes are all there (the reply is parsed again from its start). */
    assert_int_equal(kt_resp_reply_len(nested, 14, NULL, &rep, &err), KT_RESP_INCOMPLETE);
    assert_int_equal(kt_resp_parse_reply(nested, sizeof(nested) - 1, NULL, &rep, &err),
                     (ssize_t)sizeof(nested) - 1);
    assert_int_equal(rep.count, 6);
    assert_int_equal(rep.nodes[3].type, KT_RESP_BULK);
    assert_memory_equal(rep.nodes[3].p, "abc", 3);
    /* A reconnect drops a partial reply: reset. */
    assert_int_equal(kt_resp_parse_reply(nested, 20, NULL, &rep, &err), KT_RESP_INCOMPLETE);
    kt_resp_reply_reset(&rep);
    assert_int_equal(kt_resp_parse_reply("+OK\r\n", 5, NULL, &rep, &err), 5);
    assert_int_equal(rep.count, 1);
    assert_memory_equal(rep.nodes[0].p, "OK", 2);
    kt_resp_reply_trim(&rep, 1024);
    assert_non_null(rep.nodes);
    kt_resp_reply_trim(&rep, 0);
    assert_null(rep.nodes);
    assert_int_equal(rep.count + rep.cap, 0);

    kt_resp_req_free(&req);
    kt_resp_reply_free(&rep);
}

/* Allocation fails in the middle of a trickled request or reply: the
 * error is "out of memory" and the state is ready for a new message. */
static void test_alloc_failure_resumed(void **state)
{
    const kt_allocator failing = { failing_malloc, failing_realloc, NULL };
    kt_buf req = { 0 }, rep = { 0 };
    (void)state;

    build_n(&req, &rep, 40, "$2\r\nab\r\n", "$2\r\nab\r\n");
    kt_set_allocator(&failing);
    for (long budget = 0; budget < 5; budget++) {
        kt_resp_req r = { 0 };
        kt_resp_reply p = { 0 };
        const char *err = NULL;
        ssize_t n = KT_RESP_INCOMPLETE;

        alloc_budget = budget;
        for (size_t len = 0; len <= req.len && n == KT_RESP_INCOMPLETE; len++)
            n = kt_resp_parse_request(req.data, len, NULL, &r, &err);
        oom_or(n, err, (ssize_t)req.len);
        n = KT_RESP_INCOMPLETE;
        for (size_t len = 0; len <= rep.len && n == KT_RESP_INCOMPLETE; len++)
            n = kt_resp_parse_reply(rep.data, len, NULL, &p, &err);
        oom_or(n, err, (ssize_t)rep.len);
        alloc_budget = -1;
        /* Ready for the next message either way. */
        assert_int_equal(kt_resp_parse_request("PING\r\n", 6, NULL, &r, &err), 6);
        assert_int_equal(kt_resp_parse_reply(":1\r\n", 4, NULL, &p, &err), 4);
        kt_resp_req_free(&r);
        kt_resp_reply_free(&p);
    }
    kt_set_allocator(NULL);
    kt_buf_free(&req);
    kt_buf_free(&rep);
}

static int teardown(void **state)
{
    (void)state;
    kt_resp_req_free(&g_req);
    kt_resp_reply_free(&g_rep);
    kt_resp_reply_free(&g_skip);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_valid),
        cmocka_unit_test(test_request_pipelined),
        cmocka_unit_test(test_request_errors),
        cmocka_unit_test(test_request_limits),
        cmocka_unit_test(test_reply_valid),
        cmocka_unit_test(test_reply_errors),
        cmocka_unit_test(test_encoder),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_alloc_failure),
        cmocka_unit_test(test_feeds_agree),
        cmocka_unit_test(test_bounded_work),
        cmocka_unit_test(test_reset_trim),
        cmocka_unit_test(test_alloc_failure_resumed),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
