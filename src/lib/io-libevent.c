/*
 * io-libevent.c - the portable backend: readiness events on a libevent
 * event_base (epoll, kqueue, poll or select, whichever libevent picks),
 * with non-blocking accept4, read and sendmsg of our own.
 *
 * Each stream owns two events, read and write, allocated together in its
 * io_ctx; the read event is persistent while reading, the write event is
 * added only while a write is blocked (or a connect is in progress), so
 * the common path of a flush is one sendmsg and no event change. A wait is
 * one event_base_loop(EVLOOP_ONCE) bounded by a timer event (or
 * EVLOOP_NONBLOCK for a zero timeout).
 *
 * While a libevent callback of ours calls back into the user, the object
 * holds io_pending; a close inside it deletes the events and closes the fd
 * at once but reports kt__*_closed() only when the callback unwinds, and
 * contexts are freed after event_base_loop returns, never under libevent.
 */
#include "config.h"
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <event2/event.h>
#include "internal.h"

#define LV_SCRATCH      (64 * 1024)
#define LV_READS_MAX    4   /* full-scratch reads per stream per wake-up */
#define LV_ACCEPT_BATCH 64  /* accepts per listener per wake-up */
#define LV_IOV_MAX      1024

/* stream io_flags */
#define LV_READING    0x01u /* read event added */
#define LV_WRITING    0x02u /* write event added (blocked write or connect) */
#define LV_CONNECTING 0x04u
#define LV_CLOSED     0x08u /* close called: fd closed, events deleted */
#define LV_WBLOCK     0x10u /* a write is waiting for writability */

/* listener io_flags */
#define LL_ADDED  0x01u
#define LL_CLOSED 0x02u

/* Contexts: a header for the free-after-loop list, then the events. */
struct lv_ctx {
    struct lv_ctx *next_dead;
    kt_loop *loop;
    _Alignas(16) unsigned char ev[]; /* one or two struct event */
};

struct lv_state {
    struct event_base *base;
    struct event *timer;      /* bounds the wait */
    size_t evsize;            /* event_get_struct_event_size(), rounded up */
    struct lv_ctx *dead;      /* contexts to free after the dispatch */
    bool woke;                /* kt__loop_woke() called in this poll */
    struct iovec iov[LV_IOV_MAX];
    char scratch[LV_SCRATCH];
};

static struct lv_state *lv_of(kt_loop *loop) { return loop->io_data; }

/* libevent has no hook between its wait and its dispatch: the first
 * callback of a poll tells the loop when the wait ended. */
static inline void lv_woke(kt_loop *loop)
{
    struct lv_state *st = loop->io_data;
    if (!st->woke) {
        st->woke = true;
        kt__loop_woke(loop);
    }
}

static struct event *ctx_ev(struct lv_ctx *c, struct lv_state *st, int i)
{
    return (struct event *)(void *)(c->ev + (size_t)i * st->evsize);
}

static struct lv_ctx *ctx_new(kt_loop *loop, int nev)
{
    struct lv_ctx *c = kt_calloc(1, sizeof(struct lv_ctx) + (size_t)nev * lv_of(loop)->evsize);
    if (c)
        c->loop = loop;
    return c;
}

static void ctx_bury(struct lv_state *st, struct lv_ctx *c)
{
    c->next_dead = st->dead;
    st->dead = c;
}

static void free_dead(struct lv_state *st)
{
    while (st->dead) {
        struct lv_ctx *c = st->dead;
        st->dead = c->next_dead;
        kt_free(c);
    }
}

/* ---- set-up ------------------------------------------------------------------ */

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    KT__UNUSED(fd);
    KT__UNUSED(what);
    lv_woke(arg);
}

static int lv_init(kt_loop *loop, const kt_loop_options *opts)
{
    KT__UNUSED(opts);
    struct lv_state *st = kt_calloc(1, sizeof(*st));
    if (st == NULL)
        return -ENOMEM;
    struct event_config *cfg = event_config_new();
    if (cfg == NULL) {
        kt_free(st);
        return -ENOMEM;
    }
    /* One thread per loop: no locks. */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    st->base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (st->base == NULL) {
        kt_free(st);
        return -ENOSYS;
    }
    st->evsize = (event_get_struct_event_size() + 15) & ~(size_t)15;
    st->timer = event_new(st->base, -1, 0, timer_cb, loop);
    if (st->timer == NULL) {
        event_base_free(st->base);
        kt_free(st);
        return -ENOMEM;
    }
    loop->io_data = st;
    kt_log_debug("libevent %s using %s", event_get_version(), event_base_get_method(st->base));
    return 0;
}

static void lv_destroy(kt_loop *loop)
{
    struct lv_state *st = lv_of(loop);
    if (st == NULL)
        return;
    /* Watch contexts live as long as the loop (stopped just before). */
    struct kt__watch *ws[] = { &loop->wake, &loop->sig };
    for (size_t i = 0; i < KT__ARRAY_LEN(ws); i++) {
        if (ws[i]->io_ctx) {
            struct event *ev = ctx_ev(ws[i]->io_ctx, st, 0);
            if (event_initialized(ev))
                event_del(ev);
            kt_free(ws[i]->io_ctx);
            ws[i]->io_ctx = NULL;
        }
    }
    free_dead(st);
    event_free(st->timer);
    event_base_free(st->base);
    kt_free(st);
    loop->io_data = NULL;
}

/* ---- streams -------------------------------------------------------------------- */

/* Hold s across a call into the user; the release finishes a close made
 * meanwhile. Returns false when s is gone (closed) after the release. */
static inline void s_hold(kt_stream *s) { s->io_pending++; }

static bool s_release(kt_stream *s)
{
    if (--s->io_pending == 0 && (s->io_flags & LV_CLOSED)) {
        kt__stream_closed(s);
        return false;
    }
    return !(s->io_flags & LV_CLOSED);
}

static void set_writing(kt_stream *s, bool on)
{
    struct lv_state *st = lv_of(s->loop);
    if (on == ((s->io_flags & LV_WRITING) != 0))
        return;
    struct event *wr = ctx_ev(s->io_ctx, st, 1);
    if (on ? event_add(wr, NULL) == 0 : event_del(wr) == 0)
        s->io_flags ^= LV_WRITING;
}

/* Send what the socket takes; wait for writability after a short write.
 * Called with s held. */
static void lv_write(kt_stream *s)
{
    struct lv_state *st = lv_of(s->loop);
    bool blocked = false;
    while (s->out_bytes > 0) {
        int cnt = kt__stream_iov(s, st->iov, LV_IOV_MAX);
        if (cnt <= 0)
            break;
        size_t total = 0;
        for (int i = 0; i < cnt; i++)
            total += st->iov[i].iov_len;
        struct msghdr msg = { .msg_iov = st->iov, .msg_iovlen = (size_t)cnt };
        ssize_t n = sendmsg(s->h.fd, &msg, MSG_NOSIGNAL); /* EPIPE, not SIGPIPE */
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                blocked = true;
                break;
            }
            int err = -errno;
            s->io_flags &= ~LV_WBLOCK;
            set_writing(s, false);
            kt__stream_failed(s, err);
            return;
        }
        kt__stream_sent(s, (size_t)n); /* may run on_drain, finish a close */
        if (s->io_flags & LV_CLOSED)
            return;
        if ((size_t)n < total) {
            blocked = true;
            break;
        }
    }
    if (blocked)
        s->io_flags |= LV_WBLOCK;
    else
        s->io_flags &= ~LV_WBLOCK;
    set_writing(s, blocked);
    if (blocked && !(s->io_flags & LV_WRITING))
        kt__stream_failed(s, -ENOMEM); /* could not wait for writability */
}

/* Read into the scratch buffer; a few full reads, then yield (libevent
 * is level-triggered: the rest is reported again). Called with s held. */
static void lv_read(kt_stream *s)
{
    struct lv_state *st = lv_of(s->loop);
    for (int i = 0; i < LV_READS_MAX; i++) {
        ssize_t n = read(s->h.fd, st->scratch, sizeof(st->scratch));
        if (n > 0) {
            kt__stream_data(s, st->scratch, (size_t)n);
            if ((size_t)n < sizeof(st->scratch) || (s->io_flags & (LV_CLOSED)) ||
                !(s->io_flags & LV_READING))
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        int err = n == 0 ? 0 : -errno;
        event_del(ctx_ev(s->io_ctx, st, 0));
        s->io_flags &= ~LV_READING;
        if (err == 0)
            kt__stream_eof(s);
        else
            kt__stream_failed(s, err);
        return;
    }
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    KT__UNUSED(fd);
    KT__UNUSED(what);
    kt_stream *s = arg;
    lv_woke(s->loop);
    if (s->io_flags & LV_CLOSED)
        return;
    s_hold(s);
    lv_read(s);
    s_release(s);
}

/* Writable: a connect finished, or a blocked write may go on. */
static void write_cb(evutil_socket_t fd, short what, void *arg)
{
    KT__UNUSED(what);
    kt_stream *s = arg;
    lv_woke(s->loop);
    if (s->io_flags & LV_CLOSED)
        return;
    s_hold(s);
    if (s->io_flags & LV_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        s->io_flags &= ~LV_CONNECTING;
        set_writing(s, false);
        kt__stream_connected(s, -err);
    } else if (s->io_flags & LV_WBLOCK) {
        lv_write(s);
    } else {
        set_writing(s, false);
    }
    s_release(s);
}

static int lv_stream_open(kt_stream *s)
{
    struct lv_state *st = lv_of(s->loop);
    struct lv_ctx *c = ctx_new(s->loop, 2);
    if (c == NULL)
        return -ENOMEM;
    if (event_assign(ctx_ev(c, st, 0), st->base, s->h.fd, EV_READ | EV_PERSIST, read_cb, s) < 0 ||
        event_assign(ctx_ev(c, st, 1), st->base, s->h.fd, EV_WRITE | EV_PERSIST, write_cb, s) < 0) {
        kt_free(c);
        return -EINVAL;
    }
    s->io_ctx = c;
    s->io_flags = 0;
    s->io_pending = 0;
    return 0;
}

/* Non-blocking connect; the result comes with writability, even after an
 * immediate success, so on_connect never runs inside kt_stream_connect(). */
static int lv_connect(kt_stream *s, const kt_addr *addr)
{
    if (connect(s->h.fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 &&
        errno != EINPROGRESS && errno != EINTR)
        return -errno;
    s->io_flags |= LV_CONNECTING;
    set_writing(s, true);
    if (!(s->io_flags & LV_WRITING)) {
        s->io_flags &= ~LV_CONNECTING;
        return -ENOMEM;
    }
    return 0;
}

static int lv_read_start(kt_stream *s)
{
    if (s->io_flags & (LV_READING | LV_CLOSED))
        return 0;
    if (event_add(ctx_ev(s->io_ctx, lv_of(s->loop), 0), NULL) < 0)
        return -ENOMEM;
    s->io_flags |= LV_READING;
    return 0;
}

static void lv_read_stop(kt_stream *s)
{
    if (!(s->io_flags & LV_READING))
        return;
    event_del(ctx_ev(s->io_ctx, lv_of(s->loop), 0));
    s->io_flags &= ~LV_READING;
}

/* While a write is blocked the socket is known to be full: the write
 * event continues; otherwise write now. */
static void lv_flush(kt_stream *s)
{
    if (s->io_flags & (LV_CONNECTING | LV_WBLOCK | LV_CLOSED))
        return;
    s_hold(s);
    lv_write(s);
    s_release(s);
}

static void lv_close(kt_stream *s)
{
    struct lv_state *st = lv_of(s->loop);
    if (s->io_flags & LV_CLOSED)
        return;
    event_del(ctx_ev(s->io_ctx, st, 0));
    event_del(ctx_ev(s->io_ctx, st, 1));
    ctx_bury(st, s->io_ctx);
    s->io_ctx = NULL;
    s->io_flags = LV_CLOSED;
    if (s->h.fd >= 0)
        close(s->h.fd);
    s->h.fd = -1;
    if (s->io_pending == 0)
        kt__stream_closed(s);
}

/* ---- listeners ------------------------------------------------------------------ */

static void accept_cb(evutil_socket_t fd, short what, void *arg)
{
    KT__UNUSED(fd);
    KT__UNUSED(what);
    kt_listener *l = arg;
    lv_woke(l->loop);
    l->io_pending++;
    for (int i = 0; i < LV_ACCEPT_BATCH; i++) {
        if (!(l->flags & KT__L_ACCEPTING) || (l->io_flags & LL_CLOSED))
            break; /* the accept callback paused or closed it */
        int cfd = accept4(l->h.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd >= 0) {
            kt__listener_accepted(l, cfd);
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            kt__listener_failed(l, -errno);
        break;
    }
    if (--l->io_pending == 0 && (l->io_flags & LL_CLOSED))
        kt__listener_closed(l);
}

static int lv_listen_start(kt_listener *l)
{
    struct lv_state *st = lv_of(l->loop);
    if (l->io_ctx == NULL) {
        struct lv_ctx *c = ctx_new(l->loop, 1);
        if (c == NULL)
            return -ENOMEM;
        if (event_assign(ctx_ev(c, st, 0), st->base, l->h.fd, EV_READ | EV_PERSIST, accept_cb, l) < 0) {
            kt_free(c);
            return -EINVAL;
        }
        l->io_ctx = c;
    }
    if (!(l->io_flags & LL_ADDED)) {
        if (event_add(ctx_ev(l->io_ctx, st, 0), NULL) < 0)
            return -ENOMEM;
        l->io_flags |= LL_ADDED;
    }
    return 0;
}

static void lv_listen_stop(kt_listener *l)
{
    if (l->io_flags & LL_ADDED) {
        event_del(ctx_ev(l->io_ctx, lv_of(l->loop), 0));
        l->io_flags &= ~LL_ADDED;
    }
}

static void lv_listen_close(kt_listener *l)
{
    if (l->io_flags & LL_CLOSED)
        return;
    lv_listen_stop(l);
    if (l->io_ctx)
        ctx_bury(lv_of(l->loop), l->io_ctx);
    l->io_ctx = NULL;
    l->io_flags = LL_CLOSED;
    if (l->h.fd >= 0)
        close(l->h.fd);
    l->h.fd = -1;
    if (l->io_pending == 0)
        kt__listener_closed(l);
}

/* ---- watches ---------------------------------------------------------------------- */

static void watch_cb(evutil_socket_t fd, short what, void *arg)
{
    KT__UNUSED(fd);
    KT__UNUSED(what);
    struct kt__watch *w = arg;
    lv_woke(((struct lv_ctx *)w->io_ctx)->loop);
    w->cb(w);
}

static int lv_watch_start(kt_loop *loop, struct kt__watch *w)
{
    struct lv_state *st = lv_of(loop);
    if (w->io_ctx == NULL) {
        struct lv_ctx *c = ctx_new(loop, 1);
        if (c == NULL)
            return -ENOMEM;
        w->io_ctx = c;
    }
    struct event *ev = ctx_ev(w->io_ctx, st, 0);
    /* (Re)assign: the descriptor may be new since the last start. */
    if (event_initialized(ev))
        event_del(ev);
    if (event_assign(ev, st->base, w->h.fd, EV_READ | EV_PERSIST, watch_cb, w) < 0 ||
        event_add(ev, NULL) < 0)
        return -ENOMEM;
    return 0;
}

static void lv_watch_stop(kt_loop *loop, struct kt__watch *w)
{
    if (w->io_ctx && event_initialized(ctx_ev(w->io_ctx, lv_of(loop), 0)))
        event_del(ctx_ev(w->io_ctx, lv_of(loop), 0));
}

/* ---- the wait ------------------------------------------------------------------------ */

static int lv_poll(kt_loop *loop, int64_t timeout_ns)
{
    struct lv_state *st = lv_of(loop);
    int rc;
    st->woke = false;
    if (timeout_ns == 0) {
        rc = event_base_loop(st->base, EVLOOP_NONBLOCK);
    } else {
        if (timeout_ns > 0) {
            /* Microseconds rounded up: never wake before the timer. */
            int64_t us = (timeout_ns + 999) / 1000;
            struct timeval tv = { .tv_sec = (time_t)(us / 1000000), .tv_usec = (suseconds_t)(us % 1000000) };
            event_add(st->timer, &tv);
        }
        rc = event_base_loop(st->base, EVLOOP_ONCE);
        if (timeout_ns > 0)
            event_del(st->timer);
    }
    lv_woke(loop);
    free_dead(st);
    return rc < 0 ? -EIO : 0;
}

const struct kt__io_ops kt__io_libevent = {
    .name = "libevent",
    .kind = KT_IO_LIBEVENT,
    .init = lv_init,
    .destroy = lv_destroy,
    .poll = lv_poll,
    .listen_start = lv_listen_start,
    .listen_stop = lv_listen_stop,
    .listen_close = lv_listen_close,
    .stream_open = lv_stream_open,
    .connect = lv_connect,
    .read_start = lv_read_start,
    .read_stop = lv_read_stop,
    .flush = lv_flush,
    .close = lv_close,
    .watch_start = lv_watch_start,
    .watch_stop = lv_watch_stop,
};
