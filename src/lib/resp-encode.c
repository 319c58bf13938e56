/*
 * resp-encode.c - the RESP2 encoder: each function writes one value into a
 * kt_out sink (a stream's output or a kt_buf), formatting numbers without
 * snprintf and reserving at most OUT_CHUNK bytes (plus a header) at a time.
 */
#include "config.h"
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <kettle/resp.h>

/* Pieces larger than this are not reserved in one go (see resp.h), so
 * that a sink of 16 KiB blocks can always serve a reservation. */
#define OUT_CHUNK 8192

static const char digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static const uint64_t pow10_table[20] = {
    1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull, 100000000ull,
    1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull, 10000000000000ull,
    100000000000000ull, 1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
    1000000000000000000ull, 10000000000000000000ull,
};

static inline unsigned count_digits(uint64_t v)
{
    /* bits * log10(2) guesses the digit count to within one. */
    unsigned bits = 64 - (unsigned)__builtin_clzll(v | 1);
    unsigned t = (bits * 1233) >> 12;
    return t + (v >= pow10_table[t]) + (v == 0);
}

/* Write the nd digits of v at p; return the end. */
static inline char *put_u64(char *p, uint64_t v, unsigned nd)
{
    char *end = p + nd, *q = end;
    /* Four digits a round halves the chain of dependent divisions. */
    while (v >= 10000) {
        unsigned r = (unsigned)(v % 10000), hi = r / 100 * 2, lo = r % 100 * 2;
        v /= 10000;
        q -= 4;
        memcpy(q, digit_pairs + hi, 2);
        memcpy(q + 2, digit_pairs + lo, 2);
    }
    if (v >= 100) {
        unsigned i = (unsigned)(v % 100) * 2;
        v /= 100;
        *--q = digit_pairs[i + 1];
        *--q = digit_pairs[i];
    }
    if (v >= 10) {
        *--q = digit_pairs[v * 2 + 1];
        *--q = digit_pairs[v * 2];
    } else {
        *--q = (char)('0' + v);
    }
    return end;
}

static inline char *put_crlf(char *p)
{
    p[0] = '\r';
    p[1] = '\n';
    return p + 2;
}

/* <c><v>\r\n for a length or count. */
static inline char *put_header(char *p, char c, uint64_t v)
{
    *p++ = c;
    p = put_u64(p, v, count_digits(v));
    return put_crlf(p);
}

static int put_raw(kt_out *o, const void *src, size_t n)
{
    const char *s = src;
    while (n > 0) {
        size_t m = n < OUT_CHUNK ? n : OUT_CHUNK;
        char *p = o->reserve(o->ctx, m);
        if (p == NULL)
            return -ENOMEM;
        memcpy(p, s, m);
        o->commit(o->ctx, m);
        s += m;
        n -= m;
    }
    return 0;
}

/* c + text with CR/LF as spaces + \r\n */
static int put_line(kt_out *o, char c, const char *s, size_t n)
{
    char *p = o->reserve(o->ctx, n + 3);
    if (p == NULL)
        return -ENOMEM;
    p[0] = c;
    for (size_t i = 0; i < n; i++)
        p[i + 1] = s[i] == '\r' || s[i] == '\n' ? ' ' : s[i];
    put_crlf(p + 1 + n);
    o->commit(o->ctx, n + 3);
    return 0;
}

int kt_resp_simple(kt_out *o, const char *s)
{
    return put_line(o, '+', s, strlen(s));
}

int kt_resp_verror(kt_out *o, const char *fmt, va_list ap)
{
    char small[256];
    va_list cp;
    int n;
    char *p;

    va_copy(cp, ap);
    n = vsnprintf(small, sizeof(small), fmt, cp);
    va_end(cp);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < sizeof(small))
        return put_line(o, '-', small, (size_t)n);
    /* Long text: format straight into the output (its NUL lands where
     * the \r goes). */
    p = o->reserve(o->ctx, (size_t)n + 3);
    if (p == NULL)
        return -ENOMEM;
    p[0] = '-';
    vsnprintf(p + 1, (size_t)n + 1, fmt, ap);
    for (int i = 1; i <= n; i++)
        if (p[i] == '\r' || p[i] == '\n')
            p[i] = ' ';
    put_crlf(p + 1 + n);
    o->commit(o->ctx, (size_t)n + 3);
    return 0;
}

int kt_resp_error(kt_out *o, const char *fmt, ...)
{
    va_list ap;
    int r;
    va_start(ap, fmt);
    r = kt_resp_verror(o, fmt, ap);
    va_end(ap);
    return r;
}

/* <c>[-]<u>\r\n */
static int put_number(kt_out *o, char c, bool neg, uint64_t u)
{
    char *p = o->reserve(o->ctx, 24), *q;

    if (p == NULL)
        return -ENOMEM;
    q = p;
    *q++ = c;
    if (neg)
        *q++ = '-';
    q = put_u64(q, u, count_digits(u));
    q = put_crlf(q);
    o->commit(o->ctx, (size_t)(q - p));
    return 0;
}

int kt_resp_int(kt_out *o, int64_t v)
{
    return put_number(o, ':', v < 0, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
}

int kt_resp_bulk_i64(kt_out *o, int64_t v)
{
    char *p = o->reserve(o->ctx, 32), *q;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    unsigned nd = count_digits(u);

    if (p == NULL)
        return -ENOMEM;
    q = put_header(p, '$', nd + (v < 0));
    if (v < 0)
        *q++ = '-';
    q = put_u64(q, u, nd);
    q = put_crlf(q);
    o->commit(o->ctx, (size_t)(q - p));
    return 0;
}

int kt_resp_bulk(kt_out *o, const void *data, size_t n)
{
    char *p, *q;

    if (n <= OUT_CHUNK) {
        p = o->reserve(o->ctx, n + 26);
        if (p == NULL)
            return -ENOMEM;
        q = put_header(p, '$', n);
        if (n)
            memcpy(q, data, n);
        q = put_crlf(q + n);
        o->commit(o->ctx, (size_t)(q - p));
        return 0;
    }
    p = o->reserve(o->ctx, 24);
    if (p == NULL)
        return -ENOMEM;
    q = put_header(p, '$', n);
    o->commit(o->ctx, (size_t)(q - p));
    if (put_raw(o, data, n) < 0)
        return -ENOMEM;
    return put_raw(o, "\r\n", 2);
}

int kt_resp_nil(kt_out *o)
{
    return put_raw(o, "$-1\r\n", 5);
}

int kt_resp_nil_array(kt_out *o)
{
    return put_raw(o, "*-1\r\n", 5);
}

int kt_resp_array(kt_out *o, size_t n)
{
    return put_number(o, '*', false, n);
}

int kt_resp_command(kt_out *o, size_t argc, const kt_resp_arg *argv)
{
    size_t total = 3 + count_digits(argc);
    char *p, *q;

    /* The backend's hot path ("GET n"): one reservation for the whole
     * command when it is small. */
    for (size_t i = 0; i < argc && total <= OUT_CHUNK; i++) {
        if (argv[i].len > OUT_CHUNK) {
            total = OUT_CHUNK + 1; /* and no overflow */
            break;
        }
        total += 5 + count_digits(argv[i].len) + argv[i].len;
    }
    if (total <= OUT_CHUNK) {
        p = o->reserve(o->ctx, total);
        if (p == NULL)
            return -ENOMEM;
        q = put_header(p, '*', argc);
        for (size_t i = 0; i < argc; i++) {
            q = put_header(q, '$', argv[i].len);
            if (argv[i].len)
                memcpy(q, argv[i].p, argv[i].len);
            q = put_crlf(q + argv[i].len);
        }
        o->commit(o->ctx, (size_t)(q - p));
        return 0;
    }
    if (kt_resp_array(o, argc) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < argc; i++)
        if (kt_resp_bulk(o, argv[i].p, argv[i].len) < 0)
            return -ENOMEM;
    return 0;
}
