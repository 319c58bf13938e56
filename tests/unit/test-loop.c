/*
 * test-loop.c - the reactor on whichever backend KETTLE_IO names (the
 * suite runs once per backend; exit 77 when that backend cannot run here):
 * backend choice, run modes, stop, cross-thread posts, signals, timers and
 * futures within iterations, deferred callbacks, statistics.
 *
 * Nothing here sleeps and hopes: every wait is a loop run that ends on an
 * event, bounded by a deadline timer that fails the test.
 */
#include "config.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <cmocka.h>
#include <kettle/kettle.h>
#include "unit.h"

/* ---- helpers ----------------------------------------------------------------- */

static void deadline_cb(kt_timer *t, void *arg)
{
    (void)t;
    fail_msg("deadline passed: %s", (const char *)arg);
}

/* Arm a deadline that fails the test if the loop is still running then. */
static void deadline(kt_loop *loop, kt_timer *t, uint64_t ns, const char *what)
{
    kt_timer_init(loop, t, deadline_cb, (void *)what);
    assert_int_equal(kt_timer_start(t, ns, 0), 0);
}

/* A new loop with a deadline armed. */
static kt_loop *loop_with_deadline(kt_timer *t, uint64_t ns, const char *what)
{
    kt_loop *loop = unit_loop_new();
    deadline(loop, t, ns, what);
    return loop;
}

/* Run env changes under a saved KETTLE_IO, restored afterwards. */
static char *saved_env;

static void env_save(void)
{
    const char *v = getenv("KETTLE_IO");
    saved_env = v ? strdup(v) : NULL;
}

static void env_restore(void)
{
    if (saved_env) {
        setenv("KETTLE_IO", saved_env, 1);
        free(saved_env);
        saved_env = NULL;
    } else {
        unsetenv("KETTLE_IO");
    }
}

/* ---- backend choice ---------------------------------------------------------- */

static void test_io_names(void **state)
{
    (void)state;
    kt_io_kind k;
    assert_int_equal(kt_io_parse("auto", &k), 0);
    assert_int_equal(k, KT_IO_AUTO);
    assert_int_equal(kt_io_parse("epoll", &k), 0);
    assert_int_equal(k, KT_IO_EPOLL);
    assert_int_equal(kt_io_parse("io_uring", &k), 0);
    assert_int_equal(k, KT_IO_URING);
    assert_int_equal(kt_io_parse("uring", &k), 0);
    assert_int_equal(k, KT_IO_URING);
    assert_int_equal(kt_io_parse("libevent", &k), 0);
    assert_int_equal(k, KT_IO_LIBEVENT);
    assert_int_equal(kt_io_parse("kqueue", &k), -EINVAL);
    assert_int_equal(kt_io_parse(NULL, &k), -EINVAL);
    assert_string_equal(kt_io_name(KT_IO_EPOLL), "epoll");
    assert_string_equal(kt_io_name(KT_IO_URING), "io_uring");
    assert_string_equal(kt_io_name(KT_IO_LIBEVENT), "libevent");
    assert_string_equal(kt_io_name(KT_IO_AUTO), "auto");
}

/* The backend in use is the one KETTLE_IO asked for (auto: io_uring or epoll). */
static void test_backend_reported(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    const char *name = kt_loop_backend(loop);
    const char *env = getenv("KETTLE_IO");
    kt_io_kind k = KT_IO_AUTO;
    if (env && *env)
        assert_int_equal(kt_io_parse(env, &k), 0);
    if (k == KT_IO_AUTO) {
        assert_true(strcmp(name, "io_uring") == 0 || strcmp(name, "epoll") == 0);
        if (strcmp(name, "epoll") == 0 && kt_loop_fallback_reason(loop))
            assert_true(strlen(kt_loop_fallback_reason(loop)) > 0);
    } else {
        assert_string_equal(name, kt_io_name(k));
        assert_null(kt_loop_fallback_reason(loop));
    }
    kt_loop_free(loop);
}

/* KETTLE_IO picks the backend when the options say auto; options win. */
static void test_env_honoured(void **state)
{
    (void)state;
    kt_loop *loop = NULL;
    env_save();
    setenv("KETTLE_IO", "epoll", 1);
    assert_int_equal(kt_loop_new(&loop, NULL), 0);
    assert_string_equal(kt_loop_backend(loop), "epoll");
    kt_loop_free(loop);

    setenv("KETTLE_IO", "no-such-backend", 1);
    loop = NULL;
    assert_int_equal(kt_loop_new(&loop, NULL), -EINVAL);
    assert_null(loop);

    /* An explicit choice ignores the environment. */
    kt_loop_options o = { .io = KT_IO_EPOLL };
    assert_int_equal(kt_loop_new(&loop, &o), 0);
    assert_string_equal(kt_loop_backend(loop), "epoll");
    kt_loop_free(loop);
    env_restore();
}

/* A kind the library does not know, forced, is -ENOSYS; a known one either
 * works or fails with a set-up error, never silently becomes another. */
static void test_forced_backends(void **state)
{
    (void)state;
    kt_loop *loop = NULL;
    kt_loop_options o = { .io = (kt_io_kind)42 };
    assert_int_equal(kt_loop_new(&loop, &o), -ENOSYS);
    assert_null(loop);

    const kt_io_kind kinds[] = { KT_IO_EPOLL, KT_IO_URING, KT_IO_LIBEVENT };
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        o.io = kinds[i];
        int rc = kt_loop_new(&loop, &o);
        if (rc == 0) {
            assert_string_equal(kt_loop_backend(loop), kt_io_name(kinds[i]));
            kt_loop_free(loop);
        } else {
            assert_true(rc == -ENOSYS || rc == -EPERM || rc == -EINVAL || rc == -ENOMEM);
            assert_int_not_equal(kinds[i], KT_IO_EPOLL);
        }
        loop = NULL;
    }
}

/* ---- run modes ----------------------------------------------------------------- */

static void count_cb(kt_timer *t, void *arg)
{
    (void)t;
    (*(int *)arg)++;
}

static void test_run_nowait(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    kt_timer far;
    int fired = 0;
    kt_timer_init(loop, &far, count_cb, &fired);
    assert_int_equal(kt_timer_start(&far, KT_SEC(3600), 0), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    kt_loop_stats st;
    kt_loop_get_stats(loop, &st);
    assert_int_equal(st.iterations, 3);
    assert_int_equal(st.timers_pending, 1);
    assert_int_equal(fired, 0);
    kt_timer_stop(&far);
    kt_loop_free(loop);
}

/* A timer that records the loop's time when it fires. */
struct stamp {
    int fired;
    uint64_t at;
    kt_loop *loop;
    kt_timer t;
};

static void stamp_cb(kt_timer *t, void *arg)
{
    struct stamp *x = arg;
    (void)t;
    x->fired++;
    x->at = kt_loop_now(x->loop);
}

/* Arm x's timer to stamp it after delay; the loop's time when armed. */
static uint64_t stamp_arm(kt_loop *loop, struct stamp *x, uint64_t delay)
{
    *x = (struct stamp){ .loop = loop };
    kt_timer_init(loop, &x->t, stamp_cb, x);
    uint64_t armed = kt_loop_now(loop);
    assert_int_equal(kt_timer_start(&x->t, delay, 0), 0);
    return armed;
}

/* ONCE waits for the nearest timer when nothing else is ready: the first
 * call returns with the timer fired (or, after a spurious wake-up, one of
 * the next few does), and the timer is never early. */
static void test_run_once_waits(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct stamp x;
    uint64_t armed = stamp_arm(loop, &x, KT_MSEC(20));
    int calls = 0;
    while (!x.fired && calls < 5) {
        assert_int_equal(kt_loop_run(loop, KT_RUN_ONCE), 0);
        calls++;
    }
    assert_int_equal(x.fired, 1); /* waited, did not spin */
    assert_true(x.at >= armed + KT_MSEC(20));
    kt_loop_stats st;
    kt_loop_get_stats(loop, &st);
    assert_int_equal(st.iterations, (uint64_t)calls);
    kt_loop_free(loop);
}

struct stopper {
    kt_loop *loop;
    int count, stop_at;
};

static void stop_at_cb(kt_timer *t, void *arg)
{
    (void)t;
    struct stopper *s = arg;
    if (++s->count == s->stop_at)
        kt_loop_stop(s->loop);
}

static void test_stop(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct stopper s = { loop, 0, 5 };
    kt_timer t, dl;
    deadline(loop, &dl, KT_SEC(10), "stop");
    kt_timer_init(loop, &t, stop_at_cb, &s);
    assert_int_equal(kt_timer_start(&t, KT_MSEC(1), KT_MSEC(1)), 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_DEFAULT), 0);
    assert_int_equal(s.count, 5);
    /* Run again: the stop was consumed, the loop runs until stopped again. */
    s.stop_at = 8;
    assert_int_equal(kt_loop_run(loop, KT_RUN_DEFAULT), 0);
    assert_int_equal(s.count, 8);
    kt_timer_stop(&t);
    kt_timer_stop(&dl);
    kt_loop_free(loop);
}

static void recurse_cb(kt_timer *t, void *arg)
{
    (void)t;
    kt_loop *loop = arg;
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), -EBUSY);
    kt_loop_stop(loop);
}

static void test_no_recursion(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    kt_timer t;
    kt_timer_init(loop, &t, recurse_cb, loop);
    assert_int_equal(kt_timer_start(&t, 0, 0), 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_DEFAULT), 0);
    kt_loop_free(loop);
}

/* ---- timers and futures inside iterations ------------------------------------------ */

struct order {
    kt_loop *loop;
    int seq[8];
    int n;
    kt_timer t[4];
    uint64_t iter_at_timer;
    uint64_t iter_at_then;
    uint64_t iter_at[4];
    kt_future *f;
};

static uint64_t iterations(kt_loop *loop)
{
    kt_loop_stats st;
    kt_loop_get_stats(loop, &st);
    return st.iterations;
}

static void order_then(kt_future *f, void *arg)
{
    struct order *o = arg;
    assert_int_equal(kt_future_i64(f), 42);
    o->iter_at_then = iterations(o->loop);
    o->seq[o->n++] = 100;
    /* armed here rather than up front: its place in the order is then
     * the continuation's doing, not a matter of time */
    assert_int_equal(kt_timer_start(&o->t[2], KT_MSEC(10), 0), 0);
}

static void order_cb(kt_timer *t, void *arg)
{
    struct order *o = arg;
    int id = (int)(t - o->t);
    o->seq[o->n++] = id;
    o->iter_at[id] = iterations(o->loop);
    if (id == 1) {
        /* Resolve here: the continuation runs later in this same iteration. */
        o->iter_at_timer = iterations(o->loop);
        kt_future_resolve_i64(o->f, 42);
    }
    if (id == 2) /* zero timeout from a callback: next iteration, not this pass */
        assert_int_equal(kt_timer_start(&o->t[3], 0, 0), 0);
    if (id == 3)
        kt_loop_stop(o->loop);
}

static void test_timers_and_futures(void **state)
{
    (void)state;
    kt_timer dl;
    kt_loop *loop = loop_with_deadline(&dl, KT_SEC(10), "timers");
    struct order o = { .loop = loop };
    for (int i = 0; i < 4; i++)
        kt_timer_init(loop, &o.t[i], order_cb, &o);
    o.f = kt_future_new(loop);
    assert_non_null(o.f);
    assert_int_equal(kt_future_then(o.f, order_then, &o), 0);
    /* started latest first: they fire by deadline, whenever the loop
     * gets to them */
    assert_int_equal(kt_timer_start(&o.t[1], KT_MSEC(5), 0), 0);
    assert_int_equal(kt_timer_start(&o.t[0], KT_MSEC(1), 0), 0);
    kt_loop_stats st;
    kt_loop_get_stats(loop, &st);
    assert_int_equal(st.timers_pending, 3);
    assert_int_equal(kt_loop_run(loop, KT_RUN_DEFAULT), 0);
    assert_int_equal(o.n, 5);
    UNIT_ASSERT_SEQ(o.seq, 0, 1, 100, 2, 3);
    assert_int_equal(o.iter_at_then, o.iter_at_timer);
    assert_true(o.iter_at[3] > o.iter_at[2]); /* the zero timeout: a later pass */
    kt_future_unref(o.f);
    kt_timer_stop(&dl);
    kt_loop_get_stats(loop, &st);
    assert_int_equal(st.timers_pending, 0);
    assert_int_equal(st.futures_live, 0);
    kt_loop_free(loop);
}

/* The longest iteration counts work, not the wait for the timer: it is
 * shorter than the wait itself (from arming to the wake-up that fired the
 * timer, 300 ms at the least), whatever the machine's load stretches. */
static void test_stats_exclude_wait(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct stamp x;
    uint64_t armed = stamp_arm(loop, &x, KT_MSEC(300));
    while (!x.fired)
        assert_int_equal(kt_loop_run(loop, KT_RUN_ONCE), 0);
    kt_loop_stats st;
    kt_loop_get_stats(loop, &st);
    assert_true(st.iterations >= 1);
    assert_true(x.at - armed >= KT_MSEC(300));
    assert_true(st.longest_iteration_ns < x.at - armed);
    assert_int_equal(st.streams, 0);
    kt_loop_free(loop);
}

/* ---- deferred callbacks ------------------------------------------------------ */

struct dfr {
    kt_loop *loop;
    kt_stream *s;
    kt_future *f, *g;
    kt_defer d1, d2, d3;
    kt_timer t;
    char seq[16];
    int n;
    uint64_t iter[8];
    int niter;
    size_t pending_at_d1, pending_at_d3;
};

/* Collects what a stream reads. */
struct sink {
    char buf[64];
    size_t len;
};

static size_t sink_read(kt_stream *s, const char *data, size_t len, void *arg)
{
    (void)s;
    struct sink *k = arg;
    size_t n = len < sizeof(k->buf) - k->len ? len : sizeof(k->buf) - k->len;
    memcpy(k->buf + k->len, data, n);
    k->len += n;
    return len;
}

static void dfr_mark(struct dfr *x, char c)
{
    x->seq[x->n++] = c;
    x->iter[x->niter++] = iterations(x->loop);
}

/* A step that writes: its mark, then its byte (the mark in lower case)
 * queued on the stream. */
static void dfr_write(struct dfr *x, char c)
{
    char byte = (char)(c - 'A' + 'a');
    dfr_mark(x, c);
    assert_int_equal(kt_stream_write(x->s, &byte, 1), 0);
}

static void dfr_c1(kt_future *f, void *arg)
{
    (void)f;
    struct dfr *x = arg;
    dfr_write(x, 'A');
}

static void dfr_c2(kt_future *f, void *arg)
{
    (void)f;
    struct dfr *x = arg;
    dfr_write(x, 'C');
}

static void dfr_d3(kt_defer *d, void *arg)
{
    (void)d;
    struct dfr *x = arg;
    x->pending_at_d3 = kt_stream_pending(x->s); /* (the mark writes nothing) */
    dfr_write(x, 'D');
}

/* Runs after the timer's continuation; what it starts (a continuation, a
 * defer) runs in the same iteration, the continuation first. */
static void dfr_d1(kt_defer *d, void *arg)
{
    (void)d;
    struct dfr *x = arg;
    x->pending_at_d1 = kt_stream_pending(x->s); /* (the mark writes nothing) */
    dfr_write(x, 'B');
    assert_int_equal(kt_loop_defer(&x->d3), 0);
    assert_int_equal(kt_future_then(x->g, dfr_c2, x), 0);
    assert_int_equal(kt_future_resolve_i64(x->g, 2), 0);
}

static void dfr_timer(kt_timer *t, void *arg)
{
    (void)t;
    struct dfr *x = arg;
    dfr_mark(x, 'T');
    assert_int_equal(kt_loop_defer(&x->d1), 0); /* queued before the resolve ... */
    assert_int_equal(kt_future_resolve_i64(x->f, 1), 0); /* ... yet runs after its continuation */
}

/* The order within one iteration: timer, continuations, defers (each
 * after the continuations the work before it made ready), then the flush:
 * a defer still sees the iteration's output queued, not sent. */
static void test_defer_order(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct dfr x = { .loop = loop };
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(kt_stream_open_fd(loop, sv[0], NULL, NULL, &x.s), 0);
    x.f = kt_future_new(loop);
    x.g = kt_future_new(loop);
    assert_non_null(x.f);
    assert_non_null(x.g);
    assert_int_equal(kt_future_then(x.f, dfr_c1, &x), 0);
    kt_defer_init(loop, &x.d1, dfr_d1, &x);
    kt_defer_init(loop, &x.d3, dfr_d3, &x);
    kt_timer_init(loop, &x.t, dfr_timer, &x);
    assert_int_equal(kt_timer_start(&x.t, 0, 0), 0);
    kt_timer dl;
    deadline(loop, &dl, KT_SEC(10), "defer order");
    struct sink k = { 0 };
    kt_stream *peer;
    kt_stream_cbs pcbs = { .on_read = sink_read };
    assert_int_equal(kt_stream_open_fd(loop, sv[1], &pcbs, &k, &peer), 0);
    assert_int_equal(kt_stream_read_start(peer), 0);
    while (k.len < 4)
        assert_int_equal(kt_loop_run(loop, KT_RUN_ONCE), 0);
    kt_timer_stop(&dl);
    assert_int_equal(x.n, 5);
    assert_memory_equal(x.seq, "TABCD", 5);
    for (int i = 1; i < x.niter; i++)
        assert_int_equal(x.iter[i], x.iter[0]); /* all in one iteration */
    assert_int_equal(x.pending_at_d1, 1);
    assert_int_equal(x.pending_at_d3, 3);
    assert_memory_equal(k.buf, "abcd", 4);
    kt_future_unref(x.f);
    kt_future_unref(x.g);
    kt_stream_close(x.s, KT_CLOSE_NOW);
    kt_stream_close(peer, KT_CLOSE_NOW);
    kt_loop_free(loop);
}

struct dcount {
    kt_defer *other; /* cancelled by this one's callback */
    int runs, again;
};

static void dcount_cb(kt_defer *d, void *arg)
{
    struct dcount *c = arg;
    c->runs++;
    if (c->other)
        kt_defer_cancel(c->other);
    if (c->again > 0) {
        c->again--;
        assert_int_equal(kt_loop_defer(d), 0); /* again, in this same iteration */
    }
}

/* Queued twice runs once; cancelled (before the loop or by an earlier
 * defer) never runs; queued again from its own callback runs again in
 * the same iteration; an uninitialised one is refused. */
static void test_defer_cancel(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    kt_defer a, b, c, z;
    struct dcount ca = { 0 }, cb = { 0 }, cc = { 0 };
    kt_defer_init(loop, &a, dcount_cb, &ca);
    kt_defer_init(loop, &b, dcount_cb, &cb);
    kt_defer_init(loop, &c, dcount_cb, &cc);
    memset(&z, 0, sizeof(z));
    assert_int_equal(kt_loop_defer(&z), -EINVAL);

    ca.other = &b; /* a runs first and cancels b */
    ca.again = 2;
    assert_int_equal(kt_loop_defer(&a), 0);
    assert_int_equal(kt_loop_defer(&a), 0);
    assert_int_equal(kt_loop_defer(&b), 0);
    assert_int_equal(kt_loop_defer(&c), 0);
    assert_true(kt_defer_queued(&c));
    kt_defer_cancel(&c);
    kt_defer_cancel(&c); /* harmless */
    assert_false(kt_defer_queued(&c));
    assert_true(kt_defer_queued(&b));

    uint64_t before = iterations(loop);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(iterations(loop), before + 1);
    assert_int_equal(ca.runs, 3); /* once, then twice more from itself */
    assert_int_equal(cb.runs, 0);
    assert_int_equal(cc.runs, 0);
    assert_false(kt_defer_queued(&a));
    assert_false(kt_defer_queued(&b));
    kt_loop_free(loop);
}

/* A queued defer keeps the poll from waiting: ONCE returns at once even
 * with only a far timer armed (waiting would end on the deadline). */
static void test_defer_no_wait(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    kt_timer dl;
    deadline(loop, &dl, KT_SEC(3600), "a defer waited for I/O");
    kt_defer d;
    struct dcount c = { 0 };
    kt_defer_init(loop, &d, dcount_cb, &c);
    assert_int_equal(kt_loop_defer(&d), 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_ONCE), 0);
    assert_int_equal(c.runs, 1);
    kt_timer_stop(&dl);
    kt_loop_free(loop);
}

static void null_accept(kt_listener *l, kt_stream *s, void *arg)
{
    (void)l;
    (void)arg;
    kt_stream_close(s, KT_CLOSE_NOW);
}

/* ---- a loop that knows when it is done ------------------------------------------------ */

struct done {
    int timer, defer, post, cont, sig, read_eof, closed, lclosed;
};

static void done_timer(kt_timer *t, void *arg)
{
    (void)t;
    ((struct done *)arg)->timer++;
}

static void done_defer(kt_defer *d, void *arg)
{
    (void)d;
    ((struct done *)arg)->defer++;
}

static void done_post(void *arg)
{
    ((struct done *)arg)->post++;
}

static void done_cont(kt_future *f, void *arg)
{
    (void)f;
    ((struct done *)arg)->cont++;
}

static void done_sig(kt_loop *loop, int signo, void *arg)
{
    ((struct done *)arg)->sig++;
    assert_int_equal(kt_loop_signal(loop, signo, NULL, NULL), 0); /* the last handle */
}

static void done_eof(kt_stream *s, void *arg)
{
    ((struct done *)arg)->read_eof++;
    kt_stream_close(s, KT_CLOSE_NOW);
}

static void done_close(kt_stream *s, void *arg)
{
    (void)s;
    ((struct done *)arg)->closed++;
}

static size_t done_read(kt_stream *s, const char *data, size_t len, void *arg)
{
    (void)s;
    (void)data;
    (void)arg;
    return len;
}

static void done_lclose(kt_listener *l, void *arg)
{
    (void)l;
    ((struct done *)arg)->lclosed++;
}

static const kt_stream_cbs done_cbs = {
    .on_read = done_read, .on_eof = done_eof, .on_close = done_close,
};

/* Two streams over a socketpair, both reading. */
static void stream_pair(kt_loop *loop, struct done *d, kt_stream **a, kt_stream **b)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(kt_stream_open_fd(loop, sv[0], &done_cbs, d, a), 0);
    assert_int_equal(kt_stream_open_fd(loop, sv[1], &done_cbs, d, b), 0);
    assert_int_equal(kt_stream_read_start(*a), 0);
    assert_int_equal(kt_stream_read_start(*b), 0);
}

/* KT_RUN_DEFAULT returns, without kt_loop_stop, once every kind of handle
 * has finished; with none it returns at once, and ONCE does not block. */
static void test_run_until_done(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct done d = { 0 };
    assert_int_equal(kt_loop_run(loop, KT_RUN_DEFAULT), 0);
    assert_int_equal(iterations(loop), 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_ONCE), 0); /* would block forever if it waited */
    assert_int_equal(iterations(loop), 1);

    kt_timer t;
    kt_timer_init(loop, &t, done_timer, &d);
    assert_int_equal(kt_timer_start(&t, KT_MSEC(1), 0), 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_DEFAULT), 0);
    assert_int_equal(d.timer, 1);

    kt_defer df;
    kt_defer_init(loop, &df, done_defer, &d);
    assert_int_equal(kt_loop_defer(&df), 0);
    assert_int_equal(kt_loop_post(loop, done_post, &d), 0);
    kt_future *f = kt_future_new(loop);
    assert_non_null(f);
    assert_int_equal(kt_future_then(f, done_cont, &d), 0);
    assert_int_equal(kt_future_resolve_i64(f, 1), 0);
    kt_future_unref(f);
    assert_int_equal(kt_loop_run(loop, KT_RUN_DEFAULT), 0);
    assert_int_equal(d.defer, 1);
    assert_int_equal(d.post, 1);
    assert_int_equal(d.cont, 1);

    assert_int_equal(kt_loop_signal(loop, SIGUSR1, done_sig, &d), 0);
    assert_int_equal(raise(SIGUSR1), 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_DEFAULT), 0);
    assert_int_equal(d.sig, 1);

    /* Streams: one half-closes after its output drained, the peer sees
     * EOF and closes, which the first sees as EOF in turn: the run ends
     * when both on_close have run, on every backend. */
    kt_stream *a, *b;
    stream_pair(loop, &d, &a, &b);
    assert_int_equal(kt_stream_write(a, "bye", 3), 0);
    assert_int_equal(kt_stream_shutdown(a), 0);
    kt_listener *l;
    kt_addr any;
    assert_int_equal(kt_addr_parse("127.0.0.1:0", &any), 0);
    assert_int_equal(kt_listen(loop, &any, 0, null_accept, NULL, &l), 0);
    kt_listener_close_notify(l, done_lclose, &d);
    assert_int_equal(kt_loop_run(loop, KT_RUN_DEFAULT), 0);
    assert_int_equal(d.read_eof, 2);
    assert_int_equal(d.closed, 2);
    assert_int_equal(d.lclosed, 1);
    kt_loop_stats st;
    kt_loop_get_stats(loop, &st);
    assert_int_equal(st.streams, 0);
    assert_int_equal(kt_loop_close(loop), 0);
}

/* kt_loop_close refuses (freeing nothing) while any handle is left. */
static void test_close_busy(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct done d = { 0 };

    kt_timer t;
    kt_timer_init(loop, &t, done_timer, &d);
    assert_int_equal(kt_timer_start(&t, KT_SEC(3600), 0), 0);
    assert_int_equal(kt_loop_close(loop), -EBUSY);
    kt_timer_stop(&t);

    kt_defer df;
    kt_defer_init(loop, &df, done_defer, &d);
    assert_int_equal(kt_loop_defer(&df), 0);
    assert_int_equal(kt_loop_close(loop), -EBUSY);
    kt_defer_cancel(&df);

    assert_int_equal(kt_loop_post(loop, done_post, &d), 0);
    assert_int_equal(kt_loop_close(loop), -EBUSY);
    assert_int_equal(kt_loop_run(loop, KT_RUN_DEFAULT), 0);
    assert_int_equal(d.post, 1);

    assert_int_equal(kt_loop_signal(loop, SIGUSR2, done_sig, &d), 0);
    assert_int_equal(kt_loop_close(loop), -EBUSY);
    assert_int_equal(kt_loop_signal(loop, SIGUSR2, NULL, NULL), 0);

    kt_future *f = kt_future_new(loop);
    assert_int_equal(kt_loop_close(loop), -EBUSY); /* still referenced */
    kt_future_unref(f);

    kt_stream *a, *b;
    stream_pair(loop, &d, &a, &b);
    kt_listener *l;
    kt_addr any;
    assert_int_equal(kt_addr_parse("127.0.0.1:0", &any), 0);
    assert_int_equal(kt_listen(loop, &any, 0, null_accept, NULL, &l), 0);
    assert_int_equal(kt_loop_close(loop), -EBUSY);
    kt_stream_close(a, KT_CLOSE_NOW);
    kt_stream_close(b, KT_CLOSE_NOW);
    kt_listener_close_notify(l, done_lclose, &d);
    assert_int_equal(kt_loop_close(loop), -EBUSY); /* closing is not closed */
    assert_int_equal(kt_loop_run(loop, KT_RUN_DEFAULT), 0);
    assert_int_equal(d.closed, 2);
    assert_int_equal(d.lclosed, 1);
    assert_int_equal(d.timer + d.defer + d.sig, 0);
    assert_int_equal(kt_loop_close(loop), 0);
}

/* kt_loop_free with everything still open: the closes finish inside it
 * (on_close and close callbacks run), the rest is dropped; ASan checks
 * that nothing leaks, on every backend. */
static void test_free_open(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct done d = { 0 };
    kt_stream *a, *b;
    stream_pair(loop, &d, &a, &b);
    assert_int_equal(kt_stream_write(a, "pending", 7), 0);
    kt_listener *l, *l2;
    kt_addr any;
    assert_int_equal(kt_addr_parse("127.0.0.1:0", &any), 0);
    assert_int_equal(kt_listen(loop, &any, 0, null_accept, NULL, &l), 0);
    assert_int_equal(kt_listen(loop, &any, 0, null_accept, NULL, &l2), 0);
    kt_listener_close_notify(l2, done_lclose, &d);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0); /* the backend arms its reads */
    kt_listener_close_notify(l, done_lclose, &d);
    kt_timer t;
    kt_timer_init(loop, &t, done_timer, &d);
    assert_int_equal(kt_timer_start(&t, 0, 0), 0);
    kt_defer df;
    kt_defer_init(loop, &df, done_defer, &d);
    assert_int_equal(kt_loop_defer(&df), 0);
    assert_int_equal(kt_loop_post(loop, done_post, &d), 0);
    kt_loop_free(loop);
    assert_int_equal(d.closed, 2);
    assert_int_equal(d.lclosed, 2);
    assert_int_equal(d.timer + d.defer + d.post, 0);
}

/* ---- posts ------------------------------------------------------------------------ */

#define POST_THREADS 4
#define POSTS_EACH   250

struct posts {
    kt_loop *loop;
    int ran;                 /* loop thread only */
    pthread_t loop_thread;
    bool wrong_thread;
};

static void post_cb(void *arg)
{
    struct posts *p = arg;
    if (!pthread_equal(pthread_self(), p->loop_thread))
        p->wrong_thread = true;
    if (++p->ran == POST_THREADS * POSTS_EACH + 1)
        kt_loop_stop(p->loop);
}

static void *poster(void *arg)
{
    struct posts *p = arg;
    for (int i = 0; i < POSTS_EACH; i++)
        assert_int_equal(kt_loop_post(p->loop, post_cb, p), 0);
    return NULL;
}

static void test_post_threads(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct posts p = { .loop = loop, .loop_thread = pthread_self() };
    kt_timer dl;
    deadline(loop, &dl, KT_SEC(20), "posts");
    pthread_t th[POST_THREADS];
    for (int i = 0; i < POST_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, poster, &p), 0);
    assert_int_equal(kt_loop_post(loop, post_cb, &p), 0); /* and one from the loop's thread */
    assert_int_equal(kt_loop_run(loop, KT_RUN_DEFAULT), 0);
    for (int i = 0; i < POST_THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(p.ran, POST_THREADS * POSTS_EACH + 1);
    assert_false(p.wrong_thread);
    kt_timer_stop(&dl);
    kt_loop_free(loop);
}

/* A post wakes a loop blocked with nothing else to do. */
static void *late_poster(void *arg)
{
    struct posts *p = arg;
    assert_int_equal(kt_loop_post(p->loop, post_cb, p), 0);
    return NULL;
}

static void test_post_wakes(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct posts p = { .loop = loop, .loop_thread = pthread_self(),
                       .ran = POST_THREADS * POSTS_EACH }; /* next post stops */
    kt_timer dl;
    deadline(loop, &dl, KT_SEC(20), "post wake-up");
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, late_poster, &p), 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_DEFAULT), 0);
    pthread_join(th, NULL);
    assert_int_equal(p.ran, POST_THREADS * POSTS_EACH + 1);
    kt_timer_stop(&dl);
    kt_loop_free(loop);
}

/* ---- signals --------------------------------------------------------------------- */

struct sigs {
    kt_loop *loop;
    int usr1, usr2;
};

static void sig_cb(kt_loop *loop, int signo, void *arg)
{
    struct sigs *s = arg;
    assert_ptr_equal(loop, s->loop);
    if (signo == SIGUSR1)
        s->usr1++;
    if (signo == SIGUSR2)
        s->usr2++;
    if (s->usr1 >= 1 && s->usr2 >= 1)
        kt_loop_stop(loop);
}

static bool blocked(int signo)
{
    sigset_t cur;
    pthread_sigmask(SIG_SETMASK, NULL, &cur);
    return sigismember(&cur, signo);
}

static void test_signals(void **state)
{
    (void)state;
    kt_timer dl;
    kt_loop *loop = loop_with_deadline(&dl, KT_SEC(10), "signals");
    struct sigs s = { .loop = loop };
    assert_false(blocked(SIGUSR1));
    assert_int_equal(kt_loop_signal(loop, SIGUSR1, sig_cb, &s), 0);
    assert_int_equal(kt_loop_signal(loop, SIGUSR2, sig_cb, &s), 0);
    assert_true(blocked(SIGUSR1));
    assert_int_equal(kt_loop_signal(loop, SIGKILL, sig_cb, &s), -EINVAL);
    assert_int_equal(kt_loop_signal(loop, 0, sig_cb, &s), -EINVAL);
    assert_int_equal(raise(SIGUSR1), 0);
    assert_int_equal(raise(SIGUSR2), 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_DEFAULT), 0);
    assert_int_equal(s.usr1, 1);
    assert_int_equal(s.usr2, 1);

    /* Removing one unblocks it; the other keeps working. */
    assert_int_equal(kt_loop_signal(loop, SIGUSR2, NULL, NULL), 0);
    assert_false(blocked(SIGUSR2));
    assert_int_equal(raise(SIGUSR1), 0);
    while (s.usr1 < 2)
        assert_int_equal(kt_loop_run(loop, KT_RUN_ONCE), 0);
    kt_timer_stop(&dl);

    /* A signal nobody read is dropped at free, not delivered as SIGUSR1's
     * default action (which would end this process). */
    assert_int_equal(raise(SIGUSR1), 0);
    kt_loop_free(loop);
    assert_false(blocked(SIGUSR1));
}

/* A loop changes no process-wide signal state: SIGPIPE keeps whatever
 * disposition the program gave it (sends use MSG_NOSIGNAL instead). */
static void test_sigpipe_untouched(void **state)
{
    (void)state;
    struct sigaction old;
    unit_sigpipe_default(&old);
    kt_loop *loop = unit_loop_new();
    assert_true(unit_sigpipe_is_default());
    kt_loop_free(loop);
    unit_sigpipe_restore(&old);
}

int main(void)
{

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_io_names),
        cmocka_unit_test(test_backend_reported),
        cmocka_unit_test(test_env_honoured),
        cmocka_unit_test(test_forced_backends),
        cmocka_unit_test(test_run_nowait),
        cmocka_unit_test(test_run_once_waits),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_no_recursion),
        cmocka_unit_test(test_timers_and_futures),
        cmocka_unit_test(test_stats_exclude_wait),
        cmocka_unit_test(test_defer_order),
        cmocka_unit_test(test_defer_cancel),
        cmocka_unit_test(test_defer_no_wait),
        cmocka_unit_test(test_run_until_done),
        cmocka_unit_test(test_close_busy),
        cmocka_unit_test(test_free_open),
        cmocka_unit_test(test_post_threads),
        cmocka_unit_test(test_post_wakes),
        cmocka_unit_test(test_signals),
        cmocka_unit_test(test_sigpipe_untouched),
    };
    return unit_run_backend_tests(tests, NULL, NULL);
}
