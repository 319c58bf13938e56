/*
 * stream.c - byte streams over the backend's operations table: creation,
 * the output block chain, backpressure, half-close, the three ways to
 * close, and the completions backends report about them. The read side
 * is in stream-read.c, the blocks in block.c.
 *
 *   kt_stream_write() / kt_stream_out()
 *        │ copy into the tail block
 *        ▼
 *   out_head ─▶ [512 B] ─▶ [4 KiB] ─▶ [16 KiB] ─▶ … ─▶ out_tail
 *        │ blocks: size classes, each with a bounded per-loop free list;
 *        │ small first, larger only while the output keeps growing
 *        │ stream on loop->dirty, flushed once at the end of the iteration
 *        ▼
 *   io->flush ─ kt__stream_iov() ─▶ sendmsg / send ─▶ kt__stream_sent(n)
 *                                   retires blocks, on_drain, FIN, flush-close
 *
 * Lifetime: kt_stream_close() asks the backend to close (at once, or once
 * the output drained for KT_CLOSE_FLUSH); the backend reports
 * kt__stream_closed(); at the end of that iteration on_close runs and the
 * stream is freed. Until then the memory stays valid, so a callback may
 * close any stream, itself included, and the caller up the stack only
 * needs to look at the flags afterwards.
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include "internal.h"

#define KT__DEFAULT_HIGH    (1024 * 1024)
#define KT__DEFAULT_LOW     (256 * 1024)
#define KT__DEFAULT_LINGER  KT_SEC(5)
#define KT__BLOCK_TRIM_NS   KT_SEC(1)      /* how often unused spare blocks are freed */

static void close_hard(kt_stream *s, bool reset);

/* ---- stream lists ------------------------------------------------------------------ */

/* See internal.h. */
void kt__stream_add_pending(kt_stream *s)
{
    if (s->flags & KT__S_PENDING)
        return;
    s->flags |= KT__S_PENDING;
    s->next_pending = s->loop->pending;
    s->loop->pending = s;
}

/* Queue s for the end-of-iteration flush; at most once. */
static void mark_dirty(kt_stream *s)
{
    if (s->flags & KT__S_DIRTY)
        return;
    s->flags |= KT__S_DIRTY;
    s->next_dirty = s->loop->dirty;
    s->loop->dirty = s;
}

static void stream_timer_cb(kt_timer *t, void *arg);

/* A new stream on fd, linked into loop->all. The caller owns fd until the
 * backend's stream_open succeeded. NULL on ENOMEM. */
static kt_stream *stream_new(kt_loop *loop, int fd, unsigned flags)
{
    kt_stream *s = kt_calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->h.type = KT__H_STREAM;
    s->h.fd = fd;
    s->loop = loop;
    s->flags = flags;
    s->high = KT__DEFAULT_HIGH;
    s->low = KT__DEFAULT_LOW;
    s->linger = KT__DEFAULT_LINGER;
    kt_timer_init(loop, &s->timer, stream_timer_cb, s);
    s->next_all = loop->all;
    if (loop->all)
        loop->all->prev_all = s;
    loop->all = s;
    loop->stats.streams++;
    return s;
}

/* Drop all queued output (the backend no longer needs it). */
static void out_release(kt_stream *s)
{
    for (kt__block *b = s->out_head, *next; b; b = next) {
        next = b->next;
        kt__block_put(s->loop, b);
    }
    s->out_head = s->out_tail = NULL;
    s->out_bytes = 0;
}

/* Unlink s from a singly-linked list threaded through the given field.
 * Rare (a stream freed while still queued), hence the scan. */
#define LIST_UNLINK(head, s, field)                                    \
    do {                                                               \
        for (kt_stream **pp = &(head); *pp; pp = &(*pp)->field) {      \
            if (*pp == (s)) {                                          \
                *pp = (s)->field;                                      \
                break;                                                 \
            }                                                          \
        }                                                              \
    } while (0)

/* Release everything; the backend is done with s. */
static void stream_free(kt_stream *s)
{
    kt_loop *loop = s->loop;
    kt_timer_stop(&s->timer);
    if (s->flags & KT__S_PENDING)
        LIST_UNLINK(loop->pending, s, next_pending);
    if (s->flags & KT__S_DIRTY)
        LIST_UNLINK(loop->dirty, s, next_dirty);
    if (s->prev_all)
        s->prev_all->next_all = s->next_all;
    else
        loop->all = s->next_all;
    if (s->next_all)
        s->next_all->prev_all = s->prev_all;
    kt__stream_rbuf_release(s);
    out_release(s);
    loop->stats.streams--;
    kt_free(s);
}

/* Block headers count: they are what an allocation costs. */
size_t kt__stream_mem(const kt_stream *s)
{
    size_t n = 0;
    for (const kt__block *b = s->out_head; b; b = b->next)
        n += sizeof(*b) + b->size;
    if (s->rbuf)
        n += s->rhead + s->rcap + ((s->flags & KT__S_RBLOCK) ? sizeof(kt__block) : 0);
    return n;
}

/* ---- queuing output ----------------------------------------------------------------- */

/* No more output is accepted after shutdown, close or failure. */
static bool out_closed(const kt_stream *s)
{
    return (s->flags & (KT__S_CLOSING | KT__S_SHUT_WANTED | KT__S_FAILED)) != 0;
}

/* n bytes were added at the tail: account, mark for the end-of-iteration
 * flush, and raise the backpressure flag past the high-water mark. */
static void out_added(kt_stream *s, size_t n)
{
    s->out_bytes += n;
    if (s->out_bytes > s->high)
        s->flags |= KT__S_BLOCKED;
    mark_dirty(s);
}

/* Append b to the output chain (the stream owns it from now on). */
static void out_link(kt_stream *s, kt__block *b)
{
    if (s->out_tail)
        s->out_tail->next = b;
    else
        s->out_head = b;
    s->out_tail = b;
}

/* Copy len bytes to the tail: blocks are taken before anything is copied,
 * so a failure leaves the queue as it was. */
int kt_stream_write(kt_stream *s, const void *data, size_t len)
{
    if (out_closed(s))
        return -EPIPE;
    if (len == 0)
        return 0;
    const char *p = data;
    kt__block *t = s->out_tail;
    size_t room = t ? t->size - t->last : 0;
    size_t first = room < len ? room : len;

    kt__block *chain = NULL, **link = &chain, *prev = t;
    for (size_t left = len - first; left > 0;) {
        kt__block *b = kt__block_get(s->loop, kt__block_next_class(prev, left));
        if (b == NULL) {
            for (kt__block *c = chain, *next; c; c = next) {
                next = c->next;
                kt__block_put(s->loop, c);
            }
            return -ENOMEM;
        }
        size_t take = left < b->size ? left : b->size;
        b->last = (uint32_t)take;
        left -= take;
        prev = b;
        *link = b;
        link = &b->next;
    }
    if (first) {
        memcpy(t->data + t->last, p, first);
        t->last += (uint32_t)first;
        p += first;
    }
    for (kt__block *b = chain, *next; b; b = next) {
        next = b->next;
        b->next = NULL;
        memcpy(b->data, p, b->last);
        p += b->last;
        out_link(s, b);
    }
    out_added(s, len);
    return 0;
}

/* kt_out.reserve: n contiguous bytes at the tail, from the tail block's
 * room, a fresh block (see kt__block_next_class), or (n > the largest class) a block
 * made to measure. */
static char *out_reserve(void *ctx, size_t n)
{
    kt_stream *s = ctx;
    if (out_closed(s))
        return NULL;
    kt__block *t = s->out_tail;
    if (t && t->size - t->last >= n)
        return t->data + t->last;
    unsigned cls = kt__block_next_class(t, n);
    kt__block *b = kt__block_capacity(cls) >= n ? kt__block_get(s->loop, cls) : kt__block_big(n);
    if (b == NULL)
        return NULL;
    out_link(s, b);
    return b->data;
}

/* kt_out.commit: the first n reserved bytes become output. */
static void out_commit(void *ctx, size_t n)
{
    kt_stream *s = ctx;
    kt__block *t = s->out_tail;
    if (n == 0 || t == NULL || out_closed(s))
        return;
    if (n > t->size - t->last)
        n = t->size - t->last;
    t->last += (uint32_t)n;
    out_added(s, n);
}

/* The sink borrows s: valid while s is (no allocation). */
kt_out kt_stream_out(kt_stream *s)
{
    return (kt_out){ .reserve = out_reserve, .commit = out_commit, .ctx = s };
}

size_t kt_stream_pending(const kt_stream *s) { return s->out_bytes; }

bool kt_stream_write_blocked(const kt_stream *s) { return (s->flags & KT__S_BLOCKED) != 0; }

/* low is clamped to high; the blocked flag follows the new marks at once
 * (without on_drain: the caller knows it changed them). */
void kt_stream_set_watermarks(kt_stream *s, size_t high, size_t low)
{
    if (low > high)
        low = high;
    s->high = high;
    s->low = low;
    if (s->out_bytes > high)
        s->flags |= KT__S_BLOCKED;
    else if (s->out_bytes <= low)
        s->flags &= ~KT__S_BLOCKED;
}

/* ---- sending: what backends call ------------------------------------------------------- */

/* Vectors over the queued bytes from the head, skipping empty blocks (an
 * uncommitted reservation). The stream keeps owning the memory. */
int kt__stream_iov(kt_stream *s, struct iovec *iov, int max)
{
    int n = 0;
    for (kt__block *b = s->out_head; b && n < max; b = b->next) {
        if (b->last == b->pos)
            continue;
        iov[n].iov_base = b->data + b->pos;
        iov[n].iov_len = b->last - b->pos;
        n++;
    }
    return n;
}

/* Send the FIN of kt_stream_shutdown (output has drained). */
static void do_shutdown(kt_stream *s)
{
    s->flags |= KT__S_SHUT_DONE;
    (void)shutdown(s->h.fd, SHUT_WR); /* ENOTCONN after a reset: nothing to do */
}

/* Retire n sent bytes from the head; then, in this order: finish a
 * flush-close, on_drain below the low mark, a pending FIN. */
void kt__stream_sent(kt_stream *s, size_t n)
{
    if (n > s->out_bytes)
        n = s->out_bytes;
    s->out_bytes -= n;
    while (s->out_head) {
        kt__block *b = s->out_head;
        size_t avail = b->last - b->pos;
        if (n < avail) {
            b->pos += (uint32_t)n;
            break;
        }
        n -= avail;
        s->out_head = b->next;
        if (s->out_head == NULL)
            s->out_tail = NULL;
        kt__block_put(s->loop, b);
        if (n == 0 && s->out_head && s->out_head->last > s->out_head->pos)
            break;
    }

    if (s->flags & KT__S_CLOSING) {
        if (s->out_bytes == 0 && !(s->flags & KT__S_CLOSE_SENT))
            close_hard(s, false); /* KT_CLOSE_FLUSH is done */
        return;
    }
    if ((s->flags & KT__S_BLOCKED) && s->out_bytes <= s->low) {
        s->flags &= ~KT__S_BLOCKED;
        if (s->cbs.on_drain)
            s->cbs.on_drain(s, s->arg);
        if (s->flags & KT__S_CLOSING)
            return;
    }
    if (s->out_bytes == 0 && (s->flags & (KT__S_SHUT_WANTED | KT__S_SHUT_DONE)) == KT__S_SHUT_WANTED)
        do_shutdown(s);
}

/* Each stream with new output once; streams dirtied meanwhile (on_drain
 * writing elsewhere) are flushed in the next iteration. About once a
 * second, spare blocks nobody needed meanwhile are freed (an idle loop
 * keeps its spares, within their bounds). */
void kt__streams_flush(kt_loop *loop)
{
    if (loop->now - loop->blocks_trimmed >= KT__BLOCK_TRIM_NS)
        kt__blocks_trim(loop);
    kt_stream *s = loop->dirty;
    loop->dirty = NULL;
    while (s) {
        kt_stream *next = s->next_dirty;
        s->next_dirty = NULL;
        s->flags &= ~KT__S_DIRTY;
        if (s->out_bytes > 0 &&
            !(s->flags & (KT__S_CLOSE_SENT | KT__S_CONNECTING | KT__S_FAILED)))
            loop->io->flush(s);
        s = next;
    }
}

/* FIN now if nothing is queued (and connected), else once drained. */
int kt_stream_shutdown(kt_stream *s)
{
    if (s->flags & (KT__S_CLOSING | KT__S_FAILED))
        return -EPIPE;
    if (s->flags & KT__S_SHUT_WANTED)
        return 0;
    s->flags |= KT__S_SHUT_WANTED;
    if (s->out_bytes == 0 && !(s->flags & KT__S_CONNECTING))
        do_shutdown(s);
    return 0;
}

/* ---- connection state ------------------------------------------------------------------- */

/* The connect finished (or failed). Ignored after the timeout fired or
 * after close; queued output and a wanted FIN proceed on success. */
void kt__stream_connected(kt_stream *s, int status)
{
    if (!(s->flags & KT__S_CONNECTING) || (s->flags & KT__S_CLOSE_SENT))
        return; /* timed out already, or closed: a late completion */
    s->flags &= ~KT__S_CONNECTING;
    kt_timer_stop(&s->timer);
    if (status == 0 && (s->flags & KT__S_READING) && !(s->flags & KT__S_CLOSING))
        status = s->loop->io->read_start(s);

    if (s->flags & KT__S_CLOSING) {
        /* Closed with KT_CLOSE_FLUSH while connecting: send, then close. */
        if (status < 0 || s->out_bytes == 0) {
            close_hard(s, false);
        } else {
            (void)kt_timer_start(&s->timer, s->linger, 0);
            mark_dirty(s);
        }
        return;
    }
    if (status < 0) {
        s->flags |= KT__S_FAILED;
    } else if (s->out_bytes > 0) {
        mark_dirty(s);
    } else if (s->flags & KT__S_SHUT_WANTED) {
        do_shutdown(s);
    }
    if (s->cbs.on_connect)
        s->cbs.on_connect(s, status, s->arg);
    else if (status < 0)
        kt_stream_close(s, KT_CLOSE_NOW);
}

/* One on_error per stream; reading stops. A failure while connecting is
 * a connect result; while flush-closing it just ends the close. */
void kt__stream_failed(kt_stream *s, int err)
{
    if (s->flags & KT__S_CLOSE_SENT)
        return;
    if (s->flags & KT__S_CONNECTING) {
        kt__stream_connected(s, err);
        return;
    }
    if (s->flags & KT__S_CLOSING) {
        close_hard(s, false); /* the flush cannot finish */
        return;
    }
    if (s->flags & KT__S_FAILED)
        return;
    s->flags |= KT__S_FAILED;
    s->flags &= ~(KT__S_READING | KT__S_BLOCKED);
    s->loop->io->read_stop(s);
    if (s->cbs.on_error)
        s->cbs.on_error(s, err, s->arg);
    else
        kt_stream_close(s, KT_CLOSE_NOW);
}

/* The stream timer: connect timeout, then the linger bound of a flush-close. */
static void stream_timer_cb(kt_timer *t, void *arg)
{
    KT__UNUSED(t);
    kt_stream *s = arg;
    if (s->flags & KT__S_CLOSE_SENT)
        return;
    if (s->flags & KT__S_CLOSING) {
        close_hard(s, true); /* the peer did not take the output in time */
        return;
    }
    if (s->flags & KT__S_CONNECTING) {
        s->flags &= ~KT__S_CONNECTING; /* a later completion is ignored */
        s->flags |= KT__S_FAILED;
        if (s->cbs.on_connect)
            s->cbs.on_connect(s, -ETIMEDOUT, s->arg);
        else
            kt_stream_close(s, KT_CLOSE_NOW);
    }
}

/* ---- closing --------------------------------------------------------------------------- */

/* Ask the backend to close now; with reset, an RST instead of a FIN. The
 * output blocks stay until the stream is freed: a completion backend may
 * still have them in flight. */
static void close_hard(kt_stream *s, bool reset)
{
    s->flags |= KT__S_CLOSING | KT__S_CLOSE_SENT;
    s->flags &= ~(KT__S_READING | KT__S_EOF_DUE | KT__S_BLOCKED);
    kt_timer_stop(&s->timer);
    if (reset && s->h.fd >= 0) {
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        (void)setsockopt(s->h.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    s->loop->io->close(s);
}

/*
 * KT_CLOSE_FLUSH with output queued keeps the connection until it drained
 * (bounded by the linger time, then reset). Reading goes on if it was on,
 * with the bytes discarded: closing a socket with unread input makes the
 * kernel send RST, which could destroy the output we are flushing.
 */
void kt_stream_close(kt_stream *s, kt_close_mode mode)
{
    if (s == NULL || (s->flags & KT__S_CLOSE_SENT))
        return;
    if (s->flags & KT__S_CLOSING) { /* already flushing: may escalate */
        if (mode != KT_CLOSE_FLUSH)
            close_hard(s, mode == KT_CLOSE_RESET);
        return;
    }
    s->flags |= KT__S_CLOSING;
    s->flags &= ~(KT__S_READING | KT__S_EOF_DUE | KT__S_BLOCKED);
    kt_timer_stop(&s->timer);
    if (mode == KT_CLOSE_FLUSH && s->out_bytes > 0 && !(s->flags & KT__S_FAILED)) {
        if (s->linger == 0) {
            close_hard(s, true);
            return;
        }
        (void)kt_timer_start(&s->timer, s->linger, 0); /* -ENOMEM: unbounded */
        if (!(s->flags & KT__S_CONNECTING))
            mark_dirty(s);
        return;
    }
    close_hard(s, mode == KT_CLOSE_RESET);
}

/* 0 means no waiting: a flush-close with output queued resets at once. */
void kt_stream_set_linger(kt_stream *s, uint64_t ns) { s->linger = ns; }

/* The backend is done (fd closed): queue on_close and the free for the
 * end of this iteration. */
void kt__stream_closed(kt_stream *s)
{
    if (s->flags & KT__S_CLOSED)
        return;
    s->flags |= KT__S_CLOSED | KT__S_CLOSING | KT__S_CLOSE_SENT;
    s->h.fd = -1;
    s->next_closed = s->loop->closing;
    s->loop->closing = s;
}

/* on_close, then free. An on_close that closes other streams appends to
 * the list, which is drained to the end. */
void kt__streams_finish(kt_loop *loop)
{
    while (loop->closing) {
        kt_stream *s = loop->closing;
        loop->closing = s->next_closed;
        kt_timer_stop(&s->timer);
        if (s->cbs.on_close)
            s->cbs.on_close(s, s->arg);
        stream_free(s);
    }
}

/* kt_loop_free: close (without flushing) what the user left open. */
bool kt__streams_close_all(kt_loop *loop)
{
    bool asked = loop->listeners != NULL;
    while (loop->listeners)
        kt_listener_close(loop->listeners);
    for (kt_stream *s = loop->all; s; s = s->next_all) {
        if (!(s->flags & KT__S_CLOSE_SENT)) {
            close_hard(s, false);
            asked = true;
        }
    }
    return asked;
}

/* ---- creating streams ------------------------------------------------------------------ */

/* Small RESP replies must not wait for Nagle. */
static void set_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Only set-up failures are returned (then nothing was created); every
 * connect outcome goes to on_connect from the loop. */
int kt_stream_connect(kt_loop *loop, const kt_addr *addr, uint64_t timeout_ns,
                      const kt_stream_cbs *cbs, void *arg, kt_stream **out)
{
    if (addr == NULL || out == NULL)
        return -EINVAL;
    int family = addr->ss.ss_family;
    if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
        return -EAFNOSUPPORT;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    unsigned flags = KT__S_CONNECTING | (family == AF_UNIX ? KT__S_UNIX : 0);
    kt_stream *s = stream_new(loop, fd, flags);
    if (s == NULL) {
        close(fd);
        return -ENOMEM;
    }
    if (family != AF_UNIX)
        set_nodelay(fd);
    kt_stream_set_cbs(s, cbs, arg);
    int rc = 0;
    if (timeout_ns > 0)
        rc = kt_timer_start(&s->timer, timeout_ns, 0);
    if (rc == 0)
        rc = loop->io->stream_open(s);
    if (rc < 0) {
        close(fd);
        stream_free(s);
        return rc;
    }
    rc = loop->io->connect(s, addr);
    if (rc < 0) {
        /* Refused at once (a unix path with nobody listening, ...): still
         * reported through on_connect, from the next iteration. */
        s->connect_err = rc;
        kt__stream_add_pending(s);
    }
    *out = s;
    return 0;
}

/* The stream owns fd once this returns 0 (kt_stream_close closes it). */
int kt_stream_open_fd(kt_loop *loop, int fd, const kt_stream_cbs *cbs, void *arg,
                      kt_stream **out)
{
    if (fd < 0 || out == NULL)
        return -EINVAL;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    kt_stream *s = stream_new(loop, fd, ss.ss_family == AF_UNIX ? KT__S_UNIX : 0);
    if (s == NULL)
        return -ENOMEM;
    kt_stream_set_cbs(s, cbs, arg);
    int rc = loop->io->stream_open(s);
    if (rc < 0) {
        stream_free(s); /* fd stays the caller's */
        return rc;
    }
    *out = s;
    return 0;
}

/* A connection from a listener (listener.c): the stream is set up and
 * handed to the accept callback. On failure fd is closed here. */
kt_stream *kt__stream_accepted(kt_loop *loop, int fd, bool unix_socket)
{
    kt_stream *s = stream_new(loop, fd, unix_socket ? KT__S_UNIX : 0);
    if (s == NULL) {
        close(fd);
        return NULL;
    }
    if (!unix_socket)
        set_nodelay(fd);
    if (loop->io->stream_open(s) < 0) {
        close(fd);
        stream_free(s);
        return NULL;
    }
    return s;
}

/* ---- accessors ------------------------------------------------------------------------- */

/* Copied: the caller's table may be temporary. NULL clears them all. */
void kt_stream_set_cbs(kt_stream *s, const kt_stream_cbs *cbs, void *arg)
{
    if (cbs)
        s->cbs = *cbs;
    else
        memset(&s->cbs, 0, sizeof(s->cbs));
    s->arg = arg;
}

/* The callbacks' argument. */
void *kt_stream_data(const kt_stream *s) { return s->arg; }

void kt_stream_set_data(kt_stream *s, void *arg) { s->arg = arg; }

kt_loop *kt_stream_loop(const kt_stream *s) { return s->loop; }

int kt_stream_fd(const kt_stream *s) { return s->h.fd; }

/* Formatted into the caller's buf; "unix" for unix sockets, "?" when the
 * peer is unknown (closed). */
const char *kt_stream_peer(const kt_stream *s, char *buf, size_t size)
{
    kt_addr a;
    a.len = sizeof(a.ss);
    if (s->flags & KT__S_UNIX) {
        snprintf(buf, size, "unix");
        return buf;
    }
    if (s->h.fd < 0 || getpeername(s->h.fd, (struct sockaddr *)&a.ss, &a.len) < 0) {
        snprintf(buf, size, "?");
        return buf;
    }
    return kt_addr_format(&a, buf, size);
}
