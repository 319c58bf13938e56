/*
 * io-ready.h - the readiness core shared by the epoll and libevent backends
 * (io-ready.c): non-blocking connect, read, sendmsg and accept4, driven by
 * "this descriptor is readable / writable" events, and the loop's own
 * watches (eventfd, signalfd). A readiness backend keeps only what is its
 * own: how it waits, and how it arms what it watches (its sync, setup and
 * release functions). Nothing outside those three files includes this
 * header.
 */
#ifndef KETTLE_IO_READY_H
#define KETTLE_IO_READY_H

#include <sys/socket.h>
#include "internal.h"

/* io_flags of streams and listeners: what the core wants watched. The
 * bits below 0x10000 are the backend's own (what it has registered). */
#define KT__RD_READ   0x00010000u /* readability: reading, or accepting */
#define KT__RD_WBLOCK 0x00020000u /* writability: a send hit EAGAIN */
#define KT__RD_CONN   0x00040000u /* writability: a connect in progress */
#define KT__RD_WANT   (KT__RD_READ | KT__RD_WBLOCK | KT__RD_CONN)

#define KT__RD_SCRATCH   (64 * 1024) /* every read lands here first */
#define KT__RD_IOV_MAX   1024        /* vectors per sendmsg (UIO_MAXIOV) */
#define KT__RD_READS_MAX 4           /* full-scratch reads per stream per wake-up */
#define KT__RD_ACCEPTS   64          /* accepts per listener per wake-up */

/* The first member of a readiness backend's state (loop->io_data). */
struct kt__rd {
    /* Make what the backend watches for h (a stream, listener or watch,
     * whose io_flags is *flags and io_ctx is ctx) match the KT__RD_* bits:
     * readable if READ, writable if WBLOCK or CONN, nothing (and no
     * registration left) when none is set. 0, or a negative errno and
     * nothing changed. */
    int (*sync)(kt_loop *loop, struct kt__handle *h, uint32_t *flags, void *ctx);
    /* Give a new handle (stream, listener or watch) the backend's context
     * in *ctx, before its first sync. 0 or negative errno. NULL when the
     * backend needs none. */
    int (*setup)(kt_loop *loop, struct kt__handle *h, void **ctx);
    /* Release that context once nothing is watched for its handle; NULL
     * when there is nothing to do. */
    void (*release)(kt_loop *loop, void *ctx);
    struct msghdr msg;                /* for sendmsg: its vectors are iov */
    struct iovec iov[KT__RD_IOV_MAX]; /* sendmsg vectors, shared by all streams */
    char scratch[KT__RD_SCRATCH];
};

/* Set up the core's part of a backend's state with its hooks. */
void kt__rd_init(struct kt__rd *rd,
                 int (*sync)(kt_loop *loop, struct kt__handle *h, uint32_t *flags, void *ctx),
                 int (*setup)(kt_loop *loop, struct kt__handle *h, void **ctx),
                 void (*release)(kt_loop *loop, void *ctx));

/* The operations a readiness backend takes from the core: it brings only
 * its init, destroy and poll. */
#define KT__RD_OPS                          \
    .listen_start = kt__rd_listen_start,    \
    .listen_stop = kt__rd_listen_stop,      \
    .listen_close = kt__rd_listen_close,    \
    .stream_open = kt__rd_stream_open,      \
    .connect = kt__rd_connect,              \
    .read_start = kt__rd_read_start,        \
    .read_stop = kt__rd_read_stop,          \
    .flush = kt__rd_flush,                  \
    .close = kt__rd_close,                  \
    .watch_start = kt__rd_watch_start,      \
    .watch_stop = kt__rd_watch_stop

/* Operations (see struct kt__io_ops). Closes are synchronous. */
int kt__rd_listen_start(kt_listener *l);
void kt__rd_listen_stop(kt_listener *l);
void kt__rd_listen_close(kt_listener *l);
int kt__rd_stream_open(kt_stream *s);
int kt__rd_connect(kt_stream *s, const kt_addr *addr);
int kt__rd_read_start(kt_stream *s);
void kt__rd_read_stop(kt_stream *s);
void kt__rd_flush(kt_stream *s);
void kt__rd_close(kt_stream *s);
int kt__rd_watch_start(kt_loop *loop, struct kt__watch *w);
void kt__rd_watch_stop(kt_loop *loop, struct kt__watch *w);

/* Events, from the backend's dispatch. An event for a stream already
 * closed in this iteration is ignored. EPOLLERR and EPOLLHUP count as
 * both readable and writable (the next call says what happened). */
void kt__rd_stream_ready(kt_stream *s, bool readable, bool writable);
/* The listener is readable: accept a bounded batch. */
void kt__rd_accept(kt_listener *l);

#endif
