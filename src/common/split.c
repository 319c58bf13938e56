/*
 * split.c - redis-cli style argument splitting (see split.h).
 *
 * A quote may start anywhere in an argument ("a"'b'c is one argument, abc),
 * as in a shell; a closing quote must be followed by a blank, the end, or
 * another quote-free part of the same argument.
 */
#include "config.h"
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <kettle/common.h>
#include "split.h"

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int hexval(char c)
{
    static const char digits[] = "0123456789abcdef";
    const char *d = c ? strchr(digits, tolower((unsigned char)c)) : NULL;
    return d ? (int)(d - digits) : -1;
}

/* The escape at s[i] (a backslash) inside quote q: the byte it stands
 * for into *out, and how many input bytes it takes; 0 when the backslash
 * is a plain byte. */
static size_t escape(const char *s, size_t len, size_t i, char q, char *out)
{
    int hi, lo;
    if (i + 1 >= len)
        return 0;
    char e = s[i + 1];
    if (q == '\'') {
        *out = '\'';
        return e == '\'' ? 2 : 0;
    }
    if (e == 'x' && i + 3 < len && (hi = hexval(s[i + 2])) >= 0 && (lo = hexval(s[i + 3])) >= 0) {
        *out = (char)(hi * 16 + lo);
        return 4;
    }
    switch (e) {
    case 'n': *out = '\n'; break;
    case 'r': *out = '\r'; break;
    case 't': *out = '\t'; break;
    case 'a': *out = '\a'; break;
    case 'b': *out = '\b'; break;
    default: *out = e; break;
    }
    return 2;
}

/* The quoted part of an argument whose opening quote is at s[*i] into
 * buf at *n; *i moves past the closing quote. 0, or -EINVAL (with *i past
 * the opening quote) when it is not closed. */
static int quoted(const char *s, size_t len, size_t *i, char *buf, size_t *n)
{
    size_t open = (*i)++;
    char q = s[open];
    while (*i < len && s[*i] != q) {
        size_t k = s[*i] == '\\' ? escape(s, len, *i, q, &buf[*n]) : 0;
        if (k == 0) {
            buf[*n] = s[*i];
            k = 1;
        }
        (*n)++;
        *i += k;
    }
    if (*i >= len) {
        *i = open + 1;
        return -EINVAL;
    }
    (*i)++;
    return 0;
}

/* Append one argument (copied) to a. */
static int push(kt_args *a, const char *buf, size_t n)
{
    char **v = kt_realloc(a->v, (a->n + 1) * sizeof(*v));
    if (v == NULL)
        return -ENOMEM;
    a->v = v;
    size_t *l = kt_realloc(a->len, (a->n + 1) * sizeof(*l));
    if (l == NULL)
        return -ENOMEM;
    a->len = l;
    char *copy = kt_malloc(n + 1);
    if (copy == NULL)
        return -ENOMEM;
    memcpy(copy, buf, n);
    copy[n] = '\0';
    a->v[a->n] = copy;
    a->len[a->n] = n;
    a->n++;
    return 0;
}

int kt_split(const char *s, size_t len, kt_args *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    /* an argument is never longer than the input */
    char *buf = kt_malloc(len + 1);
    if (buf == NULL)
        return -ENOMEM;
    size_t i = 0;
    int rc = 0;

    for (;;) {
        while (i < len && is_blank(s[i]))
            i++;
        if (i >= len)
            break;
        size_t n = 0;
        while (i < len && !is_blank(s[i])) {
            if (s[i] == '"' || s[i] == '\'') {
                if (quoted(s, len, &i, buf, &n) < 0) {
                    *why = s[i - 1] == '"' ? "unbalanced double quote" : "unbalanced single quote";
                    rc = -EINVAL;
                    goto done;
                }
            } else {
                buf[n++] = s[i++];
            }
        }
        rc = push(out, buf, n);
        if (rc < 0) {
            *why = "out of memory";
            break;
        }
    }
done:
    kt_free(buf);
    return rc;
}

void kt_args_free(kt_args *a)
{
    for (size_t i = 0; i < a->n; i++)
        kt_free(a->v[i]);
    kt_free(a->v);
    kt_free(a->len);
    memset(a, 0, sizeof(*a));
}

/* Walk s and call back on every unquoted position: returns the offsets of
 * the first and last unquoted c. */
static void scan(const char *s, size_t len, char c, size_t *first, size_t *last)
{
    int q = 0; /* 0, '"' or '\'' */
    *first = *last = len;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (q == '"') {
            if (ch == '\\' && i + 1 < len)
                i++;
            else if (ch == '"')
                q = 0;
        } else if (q == '\'') {
            if (ch == '\\' && i + 1 < len && s[i + 1] == '\'')
                i++;
            else if (ch == '\'')
                q = 0;
        } else if (ch == '"' || ch == '\'') {
            q = ch;
        } else if (ch == c) {
            if (*first == len)
                *first = i;
            *last = i;
        }
    }
}

size_t kt_find_unquoted(const char *s, size_t len, char c)
{
    size_t first, last;
    scan(s, len, c, &first, &last);
    return first;
}

size_t kt_rfind_unquoted(const char *s, size_t len, char c)
{
    size_t first, last;
    scan(s, len, c, &first, &last);
    return last;
}
