/*
 * resp-int.h - what the RESP request parser (resp.c) and reply parser
 * (resp-reply.c) share: the search for a line's end that goes on where an
 * earlier call left it, numbers as Redis reads them, positions kept as
 * offsets while a message is incomplete, and array growth.
 *
 * No line is waited for without bound: an inline line longer than
 * max_inline and a '*'/'$' header longer than KT_RESP_MAX_HEADER are
 * refused as soon as that many bytes are there, so a peer that never sends
 * a newline cannot make the caller buffer forever. Every check is made
 * only once the bytes it depends on are present, which is what makes a
 * result independent of how the input was split.
 */
#ifndef KT_RESP_INT_H
#define KT_RESP_INT_H

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <kettle/resp.h>

/* find_crlf() results besides a length and KT_RESP_INCOMPLETE. */
#define LINE_TOO_LONG (-3)

static inline ssize_t fail(const char **err, const char *why)
{
    if (err)
        *err = why;
    return KT_RESP_ERROR;
}

/* A position inside an incomplete message, kept in a pointer field as an
 * offset from the message's start (the buffer may move between calls). */
#define TO_OFF(p, base) ((const char *)(uintptr_t)((p) - (base)))
#define TO_PTR(off, base) ((base) + (uintptr_t)(off))

/*
 * The line at p (avail bytes, type byte included) must end in \r with at
 * most bound bytes before it. Its first *scan bytes were searched by an
 * earlier call and hold no \r: the search goes on from there. Returns the
 * length before the \r once the byte after it is there too (the caller
 * checks that it is \n), KT_RESP_INCOMPLETE, or LINE_TOO_LONG once more
 * than bound bytes have no \r among them. The bytes searched are added to
 * *seen; *scan is left for the caller to clear once the line is whole.
 */
static inline ssize_t find_crlf(const char *p, size_t avail, size_t bound, size_t *scan,
                                uint64_t *seen)
{
    size_t win = avail <= bound ? avail : bound + 1, i = *scan;

    /* Header lines are a few bytes: a plain loop beats a call to memchr. */
    if (bound <= KT_RESP_MAX_HEADER) {
        while (i < win && p[i] != '\r')
            i++;
    } else if (i < win) {
        const char *cr = memchr(p + i, '\r', win - i);
        i = cr ? (size_t)(cr - p) : win;
    }
    if (i < win && i + 1 < avail) {
        *seen += i + 2 - *scan;
        return (ssize_t)i;
    }
    if (i < win) {
        *seen += i + 1 - *scan;
        *scan = i; /* the \n is not there yet: the search ends here next time */
        return KT_RESP_INCOMPLETE;
    }
    *seen += win - *scan;
    *scan = win;
    return avail > bound ? LINE_TOO_LONG : KT_RESP_INCOMPLETE;
}

/* A bulk's data of blen bytes at p, with fewer than blen + 2 bytes there:
 * KT_RESP_INCOMPLETE, or KT_RESP_ERROR ("invalid bulk length": the length
 * was a lie) when the byte after the data is there and is not \r. */
static inline int bulk_short(const char *p, size_t avail, size_t blen)
{
    return avail == blen + 1 && p[blen] != '\r' ? KT_RESP_ERROR : KT_RESP_INCOMPLETE;
}

/* Digits as Redis's string2ll() takes them: "0", or 1 to 19 digits
 * without a leading zero. No sign, no '+', no blanks. */
static inline bool parse_digits(const char *s, size_t n, uint64_t *out)
{
    uint64_t v;

    if (n - 1 >= 19 || (unsigned)(unsigned char)s[0] - '1' > 8) { /* n == 0 too */
        *out = 0;
        return n == 1 && s[0] == '0';
    }
    v = (unsigned)(unsigned char)s[0] - '0';
    for (size_t i = 1; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9)
            return false;
        v = v * 10 + d; /* 19 digits cannot overflow 64 bits */
    }
    *out = v;
    return true;
}

/* A decimal as string2ll() takes it: digits with an optional '-' ("-0"
 * refused), within int64_t. */
static inline bool parse_ll(const char *s, size_t n, int64_t *out)
{
    bool neg = n > 0 && s[0] == '-';
    uint64_t v;

    if (!parse_digits(s + neg, n - neg, &v) || v > (uint64_t)INT64_MAX + neg || (neg && v == 0))
        return false;
    *out = neg ? -(int64_t)(v - 1) - 1 : (int64_t)v;
    return true;
}

/* Double an array of *cap elements of size bytes (8 at first). Returns it,
 * or NULL when out of memory (then it is unchanged). */
static inline void *grow(void *a, size_t *cap, size_t size)
{
    size_t ncap = *cap ? *cap * 2 : 8;

    if (ncap > SIZE_MAX / size)
        return NULL;
    a = kt_realloc(a, ncap * size);
    if (a != NULL)
        *cap = ncap;
    return a;
}

#endif
