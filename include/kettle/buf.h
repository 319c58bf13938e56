/*
 * kettle/buf.h - a plain growable byte buffer (kt_buf) and the output sink
 * (kt_out) that the RESP encoder writes into.
 *
 * kt_out is an interface of two functions: reserve room, then commit what
 * was written there. kt_buf_out() makes one over a kt_buf; kettle/stream.h
 * has kt_stream_out(), which writes straight into a stream's output.
 */
#ifndef KETTLE_BUF_H
#define KETTLE_BUF_H

#include <kettle/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Where an encoder writes: reserve(n) gives n contiguous writable bytes
 * (or NULL when out of memory); commit(n) makes the first n of them part
 * of the output (n may be less than reserved). kt_stream_out() and
 * kt_buf_out() make one. */
typedef struct kt_out {
    char *(*reserve)(void *ctx, size_t n);
    void (*commit)(void *ctx, size_t n);
    void *ctx;
} kt_out;

/* A plain growable buffer: bytes data[0..len), cap allocated. Zero-init. */
typedef struct kt_buf {
    char *data;
    size_t len, cap;
} kt_buf;

/* Make room for n more bytes and return where they go (data + len);
 * kt_buf_commit() then adds them. NULL when out of memory (b unchanged). */
char *kt_buf_reserve(kt_buf *b, size_t n);
/* Add n reserved bytes to len. */
void kt_buf_commit(kt_buf *b, size_t n);
/* Append n bytes (copied). 0 or -ENOMEM. */
int kt_buf_append(kt_buf *b, const void *p, size_t n);
/* Drop the first n bytes (n > len drops all). */
void kt_buf_consume(kt_buf *b, size_t n);
/* Free the memory and zero b. */
void kt_buf_free(kt_buf *b);
/* A sink that appends to b (b must outlive it). */
kt_out kt_buf_out(kt_buf *b);

#ifdef __cplusplus
}
#endif
#endif
