/*
 * buf.c - kt_buf, the plain growable byte buffer, and the kt_out sink
 * over it. Growth doubles, so appending n bytes in pieces copies each byte
 * O(1) times.
 */
#include "config.h"
#include <errno.h>
#include <string.h>
#include <kettle/buf.h>

char *kt_buf_reserve(kt_buf *b, size_t n)
{
    if (b->cap - b->len < n || b->data == NULL) {
        size_t need, ncap = b->cap ? b->cap : 64;
        char *d;
        if (n > SIZE_MAX - b->len)
            return NULL;
        need = b->len + n;
        while (ncap < need)
            ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
        d = kt_realloc(b->data, ncap);
        if (d == NULL)
            return NULL;
        b->data = d;
        b->cap = ncap;
    }
    return b->data + b->len;
}

void kt_buf_commit(kt_buf *b, size_t n)
{
    b->len += n;
}

int kt_buf_append(kt_buf *b, const void *p, size_t n)
{
    char *d = kt_buf_reserve(b, n);
    if (d == NULL)
        return -ENOMEM;
    if (n)
        memcpy(d, p, n);
    b->len += n;
    return 0;
}

void kt_buf_consume(kt_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void kt_buf_free(kt_buf *b)
{
    kt_free(b->data);
    memset(b, 0, sizeof(*b));
}

static char *buf_reserve_cb(void *ctx, size_t n)
{
    return kt_buf_reserve(ctx, n);
}

static void buf_commit_cb(void *ctx, size_t n)
{
    kt_buf_commit(ctx, n);
}

kt_out kt_buf_out(kt_buf *b)
{
    kt_out o = { buf_reserve_cb, buf_commit_cb, b };
    return o;
}
