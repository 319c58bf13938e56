/*
 * io-libevent.c - the portable backend: a libevent event_base (epoll,
 * kqueue, poll or select, whichever libevent picks) does the waiting; what
 * to do when a descriptor is ready is the readiness core's (io-ready.c),
 * shared with the epoll backend.
 *
 * Each stream owns two events, read and write, allocated together in its
 * io_ctx; the core's sync adds the read event while reading and the write
 * event only while a send is blocked (or a connect is in progress). A
 * listener, or one of the loop's watches, owns one read event. A wait is one event_base_loop(EVLOOP_ONCE)
 * bounded by a timer event (or EVLOOP_NONBLOCK for a zero timeout).
 *
 * A close deletes the events at once, but their memory may be the event
 * libevent is running a callback of: contexts are freed after
 * event_base_loop returns, never under libevent.
 */
#include "config.h"
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <event2/event.h>
#include "io-ready.h"

/* io_flags bits of ours (the core's KT__RD_* say what is wanted). */
#define LV_READING 0x01u /* read event added */
#define LV_WRITING 0x02u /* write event added */

/* A handle's context: a header (the events' argument), then the events. */
struct lv_ctx {
    struct kt__handle *h;            /* the stream, listener or watch */
    union {
        kt_loop *loop;               /* while in use */
        struct lv_ctx *next_dead;    /* released: on the free-after-the-dispatch list */
    };
    _Alignas(16) unsigned char ev[]; /* one or two struct event */
};

struct lv_state {
    struct kt__rd rd;         /* first: the readiness core's part */
    struct event_base *base;
    struct event *timer;      /* bounds the wait */
    size_t evsize;            /* event_get_struct_event_size(), rounded up */
    struct lv_ctx *dead;      /* contexts to free after the dispatch */
    bool woke;                /* kt__loop_woke() called in this poll */
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

/* ---- the core's hooks: arming, contexts ------------------------------------------- */

/* The core's release: freed after the dispatch. */
static void ctx_bury(kt_loop *loop, void *ctx)
{
    struct lv_state *st = lv_of(loop);
    struct lv_ctx *c = ctx;
    if (c == NULL)
        return;
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

/* The core's sync: event 0 (read) follows KT__RD_READ, event 1 (write,
 * streams only) follows KT__RD_WBLOCK or KT__RD_CONN. */
static int lv_sync(kt_loop *loop, struct kt__handle *h, uint32_t *flags, void *ctx)
{
    struct lv_state *st = lv_of(loop);
    static const struct { uint32_t want, have; } evs[2] = {
        { KT__RD_READ, LV_READING },
        { KT__RD_WBLOCK | KT__RD_CONN, LV_WRITING },
    };
    for (int i = 0; i < (h->type == KT__H_STREAM ? 2 : 1); i++) {
        bool want = (*flags & evs[i].want) != 0, have = (*flags & evs[i].have) != 0;
        if (want == have)
            continue;
        if (ctx == NULL)
            return want ? -EINVAL : 0;
        struct event *ev = ctx_ev(ctx, st, i);
        if (want ? event_add(ev, NULL) < 0 : event_del(ev) < 0)
            return -ENOMEM;
        *flags ^= evs[i].have;
    }
    return 0;
}

static int lv_setup(kt_loop *loop, struct kt__handle *h, void **ctx);

/* ---- set-up and tear-down --------------------------------------------------------- */

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
    kt__rd_init(&st->rd, lv_sync, lv_setup, ctx_bury);
    loop->io_data = st;
    kt_log_debug("libevent %s using %s", event_get_version(), event_base_get_method(st->base));
    return 0;
}

static void lv_destroy(kt_loop *loop)
{
    struct lv_state *st = lv_of(loop);
    if (st == NULL)
        return;
    free_dead(st);
    event_free(st->timer);
    event_base_free(st->base);
    kt_free(st);
    loop->io_data = NULL;
}

/* ---- events ----------------------------------------------------------------------- */

/* Every event of ours: the handle's context names it; what says how it is
 * ready. The dispatch is the epoll backend's, after a wait libevent did. */
static void event_cb(evutil_socket_t fd, short what, void *arg)
{
    KT__UNUSED(fd);
    struct lv_ctx *c = arg;
    lv_woke(c->loop);
    switch (c->h->type) {
    case KT__H_STREAM:
        kt__rd_stream_ready((kt_stream *)c->h, what & EV_READ, what & EV_WRITE);
        break;
    case KT__H_LISTENER:
        kt__rd_accept((kt_listener *)c->h);
        break;
    case KT__H_WATCH:
        ((struct kt__watch *)c->h)->cb((struct kt__watch *)c->h);
        break;
    }
}

/* The core's setup: a stream gets a read and a write event, a listener or
 * a watch a read event; the core's sync adds them when wanted. */
static int lv_setup(kt_loop *loop, struct kt__handle *h, void **ctx)
{
    struct lv_state *st = lv_of(loop);
    int nev = h->type == KT__H_STREAM ? 2 : 1;
    struct lv_ctx *c = kt_calloc(1, sizeof(struct lv_ctx) + (size_t)nev * st->evsize);
    if (c == NULL)
        return -ENOMEM;
    c->loop = loop;
    c->h = h;
    static const short what[2] = { EV_READ | EV_PERSIST, EV_WRITE | EV_PERSIST };
    for (int i = 0; i < nev; i++) {
        if (event_assign(ctx_ev(c, st, i), st->base, h->fd, what[i], event_cb, c) < 0) {
            kt_free(c);
            return -EINVAL;
        }
    }
    *ctx = c;
    return 0;
}

/* ---- the wait --------------------------------------------------------------------- */

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
    .name = "libevent", .kind = KT_IO_LIBEVENT,
    .init = lv_init, .destroy = lv_destroy, .poll = lv_poll,
    KT__RD_OPS,
};
