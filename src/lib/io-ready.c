/*
 * io-ready.c - the readiness core of the epoll and libevent backends: what
 * to do when a descriptor is readable or writable, and the arming of every
 * handle through the backend's sync. Reads go into one
 * per-loop 64 KiB scratch buffer handed to kt__stream_data(), which copies
 * only what the callback leaves unconsumed, so idle streams hold no
 * buffer; sends are one sendmsg (MSG_NOSIGNAL) over the queued blocks;
 * connects and accepts are non-blocking.
 *
 * What the core wants watched is kept in io_flags (KT__RD_*), and the
 * backend's sync makes its registration match after every change, so the
 * backend itself is only a wait and an arm: epoll_ctl for epoll,
 * event_add/event_del for libevent. Interest is level-triggered, which
 * gives fairness for free: a stream gets at most a few full reads and a
 * listener a bounded accept batch per wake-up, and the rest is reported
 * again. Writability is watched only while a send is blocked (or a
 * connect pending): the common flush is one sendmsg and no arm at all.
 */
#include "config.h"
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "io-ready.h"

static struct kt__rd *rd_of(kt_loop *loop) { return loop->io_data; }

/* Turn the KT__RD_* bit of a handle on or off and bring the backend's
 * registration in line (which it already is when the bit does not change:
 * the common case of a flush that went out whole costs no call). Turning
 * on can fail (0 or negative errno): the bit is then off again. Turning
 * off cannot. */
static int want(kt_loop *loop, struct kt__handle *h, uint32_t *flags, void *ctx, uint32_t bit,
                bool on)
{
    uint32_t old = *flags;
    if (on)
        *flags |= bit;
    else
        *flags &= ~bit;
    if (*flags == old)
        return 0;
    int rc = rd_of(loop)->sync(loop, h, flags, ctx);
    if (rc < 0 && on)
        *flags &= ~bit;
    return on ? rc : 0;
}

#define STREAM_WANT(s, bit, on) want((s)->loop, &(s)->h, &(s)->io_flags, (s)->io_ctx, bit, on)
#define LISTENER_WANT(l, bit, on) want((l)->loop, &(l)->h, &(l)->io_flags, (l)->io_ctx, bit, on)

/* A new handle's backend context, if the backend has one. */
static int ctx_setup(kt_loop *loop, struct kt__handle *h, void **ctx)
{
    struct kt__rd *rd = rd_of(loop);
    return rd->setup && *ctx == NULL ? rd->setup(loop, h, ctx) : 0;
}

/* Nothing watched any more for h (the backend is asked even if the bits
 * say so already: a failed deregistration is retried), and the backend's
 * context released. */
static void unwatch(kt_loop *loop, struct kt__handle *h, uint32_t *flags, void **ctx)
{
    struct kt__rd *rd = rd_of(loop);
    *flags &= ~KT__RD_WANT;
    (void)rd->sync(loop, h, flags, *ctx);
    if (rd->release)
        rd->release(loop, *ctx);
    *ctx = NULL;
    *flags = 0;
}

/* At close: unwatched, then the descriptor closed. */
static void forget(kt_loop *loop, struct kt__handle *h, uint32_t *flags, void **ctx)
{
    unwatch(loop, h, flags, ctx);
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
}

/* The hooks, and the sendmsg header set once: each send fills in only the
 * number of vectors. */
void kt__rd_init(struct kt__rd *rd,
                 int (*sync)(kt_loop *loop, struct kt__handle *h, uint32_t *flags, void *ctx),
                 int (*setup)(kt_loop *loop, struct kt__handle *h, void **ctx),
                 void (*release)(kt_loop *loop, void *ctx))
{
    rd->sync = sync;
    rd->setup = setup;
    rd->release = release;
    memset(&rd->msg, 0, sizeof(rd->msg));
    rd->msg.msg_iov = rd->iov;
}

/* ---- sending -------------------------------------------------------------------- */

/* Send as much queued output as the socket takes. A short send means the
 * send buffer is full: watch writability at once instead of paying for
 * the EAGAIN; stop watching once everything went out. */
static void rd_write(kt_stream *s)
{
    struct kt__rd *rd = rd_of(s->loop);
    bool blocked = false;
    while (s->out_bytes > 0) {
        int cnt = kt__stream_iov(s, rd->iov, KT__RD_IOV_MAX);
        if (cnt <= 0)
            break;
        size_t total = 0;
        for (int i = 0; i < cnt; i++)
            total += rd->iov[i].iov_len;
        rd->msg.msg_iovlen = (size_t)cnt;
        ssize_t n = sendmsg(s->h.fd, &rd->msg, MSG_NOSIGNAL); /* EPIPE, not SIGPIPE */
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                blocked = true;
                break;
            }
            int err = -errno;
            (void)STREAM_WANT(s, KT__RD_WBLOCK, false);
            kt__stream_failed(s, err);
            return;
        }
        kt__stream_sent(s, (size_t)n); /* may run on_drain, finish a close */
        if (s->flags & KT__S_CLOSED)
            return;
        if ((size_t)n < total) {
            blocked = true;
            break;
        }
    }
    if (!blocked && !(s->io_flags & KT__RD_WBLOCK))
        return; /* the common case: all went out, and no watch to undo */
    int rc = STREAM_WANT(s, KT__RD_WBLOCK, blocked);
    if (rc < 0)
        kt__stream_failed(s, rc); /* could not wait for writability */
}

/* Called once per iteration for a stream with new output. While a send
 * is blocked the socket is known to be full: the writability event
 * continues it, rather than a sendmsg that would return EAGAIN. */
void kt__rd_flush(kt_stream *s)
{
    if (s->io_flags & (KT__RD_CONN | KT__RD_WBLOCK))
        return;
    rd_write(s);
}

/* ---- receiving ------------------------------------------------------------------- */

/* Read into the scratch buffer and hand the bytes over. A full read is
 * retried a few times (more is probably there), then the stream yields to
 * the others; level-triggered interest reports the rest. */
static void rd_read(kt_stream *s)
{
    struct kt__rd *rd = rd_of(s->loop);
    for (int i = 0; i < KT__RD_READS_MAX; i++) {
        ssize_t n = read(s->h.fd, rd->scratch, sizeof(rd->scratch));
        if (n > 0) {
            kt__stream_data(s, rd->scratch, (size_t)n);
            if ((size_t)n < sizeof(rd->scratch) || (s->flags & KT__S_CLOSED) ||
                !(s->io_flags & KT__RD_READ))
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        int err = n == 0 ? 0 : -errno;
        (void)STREAM_WANT(s, KT__RD_READ, false);
        if (err == 0)
            kt__stream_eof(s);
        else
            kt__stream_failed(s, err);
        return;
    }
}

/* Readability while the user reads: the kernel holds the rest meanwhile. */
int kt__rd_read_start(kt_stream *s) { return STREAM_WANT(s, KT__RD_READ, true); }

void kt__rd_read_stop(kt_stream *s) { (void)STREAM_WANT(s, KT__RD_READ, false); }

/* Nothing is watched until there is something to wait for. */
int kt__rd_stream_open(kt_stream *s)
{
    s->io_flags = 0;
    s->io_ctx = NULL;
    return ctx_setup(s->loop, &s->h, &s->io_ctx);
}

/* ---- connecting and events ----------------------------------------------------------- */

/* Non-blocking connect: the result comes as writability (SO_ERROR says
 * which). Even an immediate success waits for that event, so on_connect
 * never runs inside kt_stream_connect(). */
int kt__rd_connect(kt_stream *s, const kt_addr *addr)
{
    if (connect(s->h.fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 &&
        errno != EINPROGRESS && errno != EINTR)
        return -errno;
    return STREAM_WANT(s, KT__RD_CONN, true);
}

/* A pending connect is resolved first (its writability is not room to
 * send); then output, then input. */
void kt__rd_stream_ready(kt_stream *s, bool readable, bool writable)
{
    if (s->flags & KT__S_CLOSED)
        return;
    if (s->io_flags & KT__RD_CONN) {
        if (!writable)
            return;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(s->h.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        (void)STREAM_WANT(s, KT__RD_CONN, false);
        kt__stream_connected(s, -err);
        return; /* anything else is still reported next time */
    }
    if (writable && (s->io_flags & KT__RD_WBLOCK)) {
        rd_write(s); /* stops watching writability once all went out */
        if (s->flags & KT__S_CLOSED)
            return;
    }
    if (readable && (s->io_flags & KT__RD_READ))
        rd_read(s);
}

/* Synchronous: deregister (explicitly: a dup'd or inherited descriptor
 * would keep the registration alive), release, close, report. */
void kt__rd_close(kt_stream *s)
{
    forget(s->loop, &s->h, &s->io_flags, &s->io_ctx);
    kt__stream_closed(s);
}

/* ---- listeners ------------------------------------------------------------------------ */

/* Accept a bounded batch so a connection storm cannot starve the streams
 * already open; the rest stays in the backlog and is reported again. */
void kt__rd_accept(kt_listener *l)
{
    for (int i = 0; i < KT__RD_ACCEPTS; i++) {
        if (!(l->flags & KT__L_ACCEPTING) || l->h.fd < 0)
            return; /* the accept callback paused or closed it */
        int fd = accept4(l->h.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            kt__listener_accepted(l, fd);
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            kt__listener_failed(l, -errno);
        return;
    }
}

/* Accepting is readability of the listening socket. */
int kt__rd_listen_start(kt_listener *l)
{
    int rc = ctx_setup(l->loop, &l->h, &l->io_ctx);
    return rc < 0 ? rc : LISTENER_WANT(l, KT__RD_READ, true);
}

/* Paused or backing off: not watched at all, so EMFILE cannot spin. */
void kt__rd_listen_stop(kt_listener *l) { (void)LISTENER_WANT(l, KT__RD_READ, false); }

/* Synchronous, as for streams. */
void kt__rd_listen_close(kt_listener *l)
{
    forget(l->loop, &l->h, &l->io_flags, &l->io_ctx);
    kt__listener_closed(l);
}

/* ---- the loop's watches ------------------------------------------------------------------ */

/* The wake-up eventfd and the signalfd: readable until their callbacks
 * drain them. A stopped watch gives up its context: the loop may start it
 * again on a new descriptor. */
int kt__rd_watch_start(kt_loop *loop, struct kt__watch *w)
{
    int rc = ctx_setup(loop, &w->h, &w->io_ctx);
    return rc < 0 ? rc : want(loop, &w->h, &w->io_flags, w->io_ctx, KT__RD_READ, true);
}

/* Before the watch's descriptor is closed. */
void kt__rd_watch_stop(kt_loop *loop, struct kt__watch *w)
{
    unwatch(loop, &w->h, &w->io_flags, &w->io_ctx);
}
