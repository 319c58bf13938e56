/*
 * test-future.c - futures and their combinators: continuation order and
 * deferral, cancellation to the producer, all/race/timeout/chain/sequence
 * alone and combined, failure messages, reference counting (every test ends
 * with no live future) and allocation failure at every allocation of a
 * scenario in turn. Runs on the backend named by KETTLE_IO.
 *
 * Waiting is always the loop running until a condition holds, bounded by a
 * guard timer that fails the test; producers that "take time" are timers.
 */
#include "config.h"
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "internal.h"
#include "unit.h"

/* Every test ends here: nothing leaked, nothing queued. */
static void end_loop(kt_loop *loop)
{
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(kt__futures_live(loop), 0);
    assert_false(kt__futures_ready(loop));
    kt_loop_free(loop);
}

/* Run iterations until *done, or fail the test after limit_ns. */
#define run_until(loop, done, limit_ns) unit_run_until(loop, done, limit_ns, #done)

/* ---- helpers: a log of continuation runs ------------------------------------ */

struct log {
    int ids[64];
    int n;
    bool done;
    int want;
};

struct entry {
    struct log *log;
    int id;
};

static void log_cb(kt_future *f, void *arg)
{
    (void)f;
    struct entry *e = arg;
    assert_true(e->log->n < 64);
    e->log->ids[e->log->n++] = e->id;
    if (e->log->n == e->log->want)
        e->log->done = true;
}

/* Sets the bool arg points to. */
static void done_cb(kt_future *f, void *arg)
{
    (void)f;
    *(bool *)arg = true;
}

/* A producer that resolves (or fails) its future from a timer, and
 * unhooks itself when the future is cancelled. */
struct producer {
    kt_future *f;
    kt_timer timer;
    int64_t value;
    int err;           /* fail with this instead of resolving */
    int cancelled;     /* cancel hook calls */
    uint64_t started;  /* loop time when started */
    uint64_t settled;  /* loop time when settled */
};

static void producer_timer_cb(kt_timer *t, void *arg)
{
    (void)t;
    struct producer *p = arg;
    p->settled = kt_loop_now(kt_future_loop(p->f));
    if (p->err)
        assert_int_equal(kt_future_fail(p->f, p->err, "producer failed: %lld", (long long)p->value), 0);
    else
        assert_int_equal(kt_future_resolve_i64(p->f, p->value), 0);
    kt_future_unref(p->f); /* the producer's reference */
    p->f = NULL;
}

static void producer_cancel_cb(kt_future *f, void *arg)
{
    struct producer *p = arg;
    assert_ptr_equal(f, p->f);
    p->cancelled++;
    kt_timer_stop(&p->timer);
    kt_future_unref(p->f);
    p->f = NULL;
}

/* Start p: returns a new future for the caller (its own reference) that
 * settles after delay_ns; the producer keeps a second reference. A delay
 * of UINT64_MAX never settles unless cancelled. */
static kt_future *produce(kt_loop *loop, struct producer *p, uint64_t delay_ns, int64_t value, int err)
{
    kt_future *f = kt_future_new(loop);
    if (f == NULL)
        return NULL;
    memset(p, 0, sizeof(*p));
    p->f = f;
    p->value = value;
    p->err = err;
    p->started = kt_loop_now(loop);
    kt_future_ref(f);
    kt_future_on_cancel(f, producer_cancel_cb, p);
    kt_timer_init(loop, &p->timer, producer_timer_cb, p);
    if (delay_ns != UINT64_MAX && kt_timer_start(&p->timer, delay_ns, 0) < 0) {
        kt_future_unref(f);
        kt_future_unref(f);
        p->f = NULL;
        return NULL;
    }
    return f;
}

/* Run until f has settled; fail the test after 5 s. */
static void await(kt_loop *loop, kt_future *f)
{
    bool done = false;
    assert_int_equal(kt_future_then(f, done_cb, &done), 0);
    run_until(loop, &done, KT_SEC(5));
}

/* ---- basics ---------------------------------------------------------------- */

static int dtor_calls;
static void count_dtor(void *p)
{
    dtor_calls++;
    free(p);
}

static void test_resolve_value_and_dtor(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    kt_future *f = kt_future_new(loop);
    assert_non_null(f);
    assert_int_equal(kt__futures_live(loop), 1);
    assert_int_equal(kt_future_state_of(f), KT_FUTURE_PENDING);
    assert_false(kt_future_done(f));
    assert_ptr_equal(kt_future_loop(f), loop);
    assert_null(kt_future_value(f));
    assert_int_equal(kt_future_error(f), 0);
    assert_null(kt_future_errmsg(f));

    dtor_calls = 0;
    int *v = malloc(sizeof(*v));
    assert_non_null(v);
    *v = 42;
    assert_int_equal(kt_future_resolve(f, v, count_dtor), 0);
    assert_true(kt_future_done(f));
    assert_ptr_equal(kt_future_value(f), v);
    assert_int_equal(kt_future_error(f), 0);
    assert_null(kt_future_errmsg(f));

    /* settling twice: -EALREADY, and the rejected value is freed */
    int *w = malloc(sizeof(*w));
    assert_non_null(w);
    assert_int_equal(kt_future_resolve(f, w, count_dtor), -EALREADY);
    assert_int_equal(dtor_calls, 1);
    assert_int_equal(kt_future_resolve_i64(f, 1), -EALREADY);
    assert_int_equal(kt_future_fail(f, -EIO, "no"), -EALREADY);
    assert_int_equal(kt_future_cancel(f), -EALREADY);
    assert_ptr_equal(kt_future_value(f), v);

    kt_future_ref(f);
    kt_future_unref(f);
    assert_int_equal(dtor_calls, 1);
    kt_future_unref(f); /* the value goes with the future */
    assert_int_equal(dtor_calls, 2);
    end_loop(loop);
}

static void test_fail_messages(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    kt_future *a = kt_future_new(loop), *b = kt_future_new(loop), *c = kt_future_new(loop);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    char fmt_buf[32];
    snprintf(fmt_buf, sizeof(fmt_buf), "server %s", "x");
    assert_int_equal(kt_future_fail(a, -ECONNREFUSED, "connect to %s:%d refused", "db1", 7380), 0);
    assert_int_equal(kt_future_fail(b, -EIO, NULL), 0);
    assert_int_equal(kt_future_fail(c, EPIPE, "%s", fmt_buf), 0); /* positive errno normalised */
    assert_int_equal(kt_future_state_of(a), KT_FUTURE_FAILED);
    assert_int_equal(kt_future_error(a), -ECONNREFUSED);
    assert_string_equal(kt_future_errmsg(a), "connect to db1:7380 refused");
    assert_int_equal(kt_future_error(b), -EIO);
    assert_string_equal(kt_future_errmsg(b), strerror(EIO));
    assert_int_equal(kt_future_error(c), -EPIPE);
    assert_string_equal(kt_future_errmsg(c), "server x");
    assert_null(kt_future_value(a));
    assert_int_equal(kt_future_i64(a), 0);
    kt_future_unref(a);
    kt_future_unref(b);
    kt_future_unref(c);
    end_loop(loop);
}

/* Continuations run in registration order, futures in settle order, never
 * inside the settling call or inside then(). */
static void test_continuation_order(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct log log = { .want = 7 };
    struct entry e[7];
    for (int i = 0; i < 7; i++)
        e[i] = (struct entry){ &log, i };
    kt_future *a = kt_future_new(loop), *b = kt_future_new(loop);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(kt_future_then(a, log_cb, &e[3]), 0);
    assert_int_equal(kt_future_then(a, log_cb, &e[4]), 0);
    assert_int_equal(kt_future_then(a, log_cb, &e[5]), 0);
    assert_int_equal(kt_future_then(b, log_cb, &e[0]), 0);
    assert_int_equal(kt_future_then(b, log_cb, &e[1]), 0);
    assert_int_equal(kt_future_resolve_i64(b, 1), 0); /* b settles first */
    assert_int_equal(kt_future_resolve_i64(a, 2), 0);
    assert_int_equal(log.n, 0); /* nothing ran inside resolve */
    assert_int_equal(kt_future_then(b, log_cb, &e[2]), 0); /* b is already queued */
    assert_int_equal(kt_future_then(a, log_cb, &e[6]), 0);
    assert_int_equal(log.n, 0); /* nor inside then */
    kt_future_unref(a);
    kt_future_unref(b);
    assert_int_equal(kt__futures_live(loop), 2); /* held by their continuations */
    assert_true(kt__futures_ready(loop));
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(log.n, 7);
    for (int i = 0; i < 7; i++)
        assert_int_equal(log.ids[i], i);
    end_loop(loop);
}

/* then() on an already settled, already drained future runs later, once. */
static void test_then_on_settled(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct log log = { .want = 2 };
    struct entry e0 = { &log, 0 }, e1 = { &log, 1 };
    kt_future *f = kt_future_new(loop);
    assert_non_null(f);
    assert_int_equal(kt_future_resolve_i64(f, 7), 0);
    assert_int_equal(kt_future_then(f, log_cb, &e0), 0);
    assert_int_equal(log.n, 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(log.n, 1);
    assert_int_equal(kt_future_then(f, log_cb, &e1), 0);
    assert_int_equal(log.n, 1);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(log.n, 2);
    assert_int_equal(kt_future_then(f, NULL, NULL), -EINVAL);
    kt_future_unref(f);
    end_loop(loop);
}

/* A continuation that settles another future, and one that adds a
 * continuation to a settled future, extend the same run. */
struct extend_ctx {
    kt_future *next;
    struct log *log;
    struct entry e[3];
};

static void extend_first_cb(kt_future *f, void *arg)
{
    struct extend_ctx *x = arg;
    log_cb(f, &x->e[0]);
    assert_int_equal(kt_future_resolve_i64(x->next, 1), 0);
    assert_int_equal(kt_future_then(f, log_cb, &x->e[2]), 0); /* f is draining */
}

static void test_run_extends(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct log log = { .want = 3 };
    struct extend_ctx x = { .log = &log };
    for (int i = 0; i < 3; i++)
        x.e[i] = (struct entry){ &log, i };
    kt_future *a = kt_future_new(loop);
    x.next = kt_future_new(loop);
    assert_non_null(a);
    assert_non_null(x.next);
    assert_int_equal(kt_future_then(a, extend_first_cb, &x), 0);
    assert_int_equal(kt_future_then(x.next, log_cb, &x.e[1]), 0);
    assert_int_equal(kt_future_resolve_i64(a, 0), 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    /* e2 was added to a while a drained: it runs before next's */
    assert_int_equal(log.n, 3);
    assert_int_equal(log.ids[0], 0);
    assert_int_equal(log.ids[1], 2);
    assert_int_equal(log.ids[2], 1);
    kt_future_unref(a);
    kt_future_unref(x.next);
    end_loop(loop);
}

/* A continuation drops the last reference of the future it runs on, and
 * a second continuation on it still runs (ASan watches for use-after-free). */
static void drop_cb(kt_future *f, void *arg)
{
    (void)arg;
    kt_future_unref(f);
}

static void test_continuation_drops_last_ref(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    bool done = false;
    kt_future *f = kt_future_new(loop);
    assert_non_null(f);
    assert_int_equal(kt_future_then(f, drop_cb, NULL), 0);
    assert_int_equal(kt_future_then(f, done_cb, &done), 0);
    assert_int_equal(kt_future_resolve(f, malloc(8), free), 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_true(done);
    end_loop(loop);
}

/* A long chain of futures, each continuation resolving the next: runs in
 * one call on a flat stack. */
struct relay {
    kt_future **fs;
    size_t n;
    size_t ran;
};

static void relay_cb(kt_future *f, void *arg)
{
    struct relay *r = arg;
    size_t i = (size_t)kt_future_i64(f);
    r->ran++;
    if (i + 1 < r->n)
        assert_int_equal(kt_future_resolve_i64(r->fs[i + 1], (int64_t)i + 1), 0);
}

static void test_long_relay(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct relay r = { .n = 100000 };
    r.fs = calloc(r.n, sizeof(*r.fs));
    assert_non_null(r.fs);
    for (size_t i = 0; i < r.n; i++) {
        r.fs[i] = kt_future_new(loop);
        assert_non_null(r.fs[i]);
        assert_int_equal(kt_future_then(r.fs[i], relay_cb, &r), 0);
        kt_future_unref(r.fs[i]); /* the continuation keeps it */
    }
    assert_int_equal(kt_future_resolve_i64(r.fs[0], 0), 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(r.ran, r.n);
    free(r.fs);
    end_loop(loop);
}

/* ---- cancellation ------------------------------------------------------------ */

static void test_cancel_reaches_producer(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct producer p;
    bool done = false;
    kt_future *f = produce(loop, &p, KT_SEC(60), 1, 0);
    assert_non_null(f);
    assert_int_equal(kt_future_then(f, done_cb, &done), 0);
    assert_int_equal(kt_future_cancel(f), 0);
    assert_int_equal(p.cancelled, 1); /* synchronously */
    assert_false(done);               /* continuations later */
    assert_int_equal(kt_future_state_of(f), KT_FUTURE_CANCELLED);
    assert_int_equal(kt_future_error(f), -ECANCELED);
    assert_null(kt_future_errmsg(f));
    assert_int_equal(kt_future_cancel(f), -EALREADY);
    assert_int_equal(p.cancelled, 1);
    /* a producer settling after cancellation is told so and its value freed */
    dtor_calls = 0;
    assert_int_equal(kt_future_resolve(f, malloc(4), count_dtor), -EALREADY);
    assert_int_equal(dtor_calls, 1);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_true(done);
    kt_future_unref(f);
    end_loop(loop);
}

/* A continuation on a cancels b: b's producer hears at once, b's own
 * continuations run in the same run. */
struct cancel_ctx {
    kt_future *victim;
};

static void cancel_other_cb(kt_future *f, void *arg)
{
    (void)f;
    struct cancel_ctx *c = arg;
    assert_int_equal(kt_future_cancel(c->victim), 0);
}

static void test_cancel_from_continuation(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct producer p;
    bool done = false;
    kt_future *a = kt_future_new(loop);
    kt_future *b = produce(loop, &p, KT_SEC(60), 0, 0);
    assert_non_null(a);
    assert_non_null(b);
    struct cancel_ctx c = { b };
    assert_int_equal(kt_future_then(a, cancel_other_cb, &c), 0);
    assert_int_equal(kt_future_then(b, done_cb, &done), 0);
    assert_int_equal(kt_future_resolve_i64(a, 1), 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(p.cancelled, 1);
    assert_true(done);
    assert_int_equal(kt_future_state_of(b), KT_FUTURE_CANCELLED);
    kt_future_unref(a);
    kt_future_unref(b);
    end_loop(loop);
}

/* Cancelling an all cancels its inputs one hook after another; a hook
 * that registers a continuation on an input whose hook has not run yet
 * must not lose the inputs after it. */
struct hook_then_ctx {
    kt_future *target;
    bool done;
    int hooks;
};

static void hook_then_cb(kt_future *f, void *arg)
{
    (void)f;
    struct hook_then_ctx *h = arg;
    h->hooks++;
    if (h->target) {
        assert_int_equal(kt_future_state_of(h->target), KT_FUTURE_CANCELLED);
        assert_int_equal(kt_future_then(h->target, done_cb, &h->done), 0);
        h->target = NULL;
    }
}

static void test_then_inside_cancel_hooks(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct hook_then_ctx h = { .hooks = 0 };
    kt_future *in[3];
    for (int i = 0; i < 3; i++) {
        in[i] = kt_future_new(loop);
        assert_non_null(in[i]);
        kt_future_on_cancel(in[i], hook_then_cb, &h);
    }
    h.target = in[1];
    kt_future *all = kt_all(loop, in, 3);
    assert_non_null(all);
    assert_int_equal(kt_future_cancel(all), 0);
    assert_int_equal(h.hooks, 3); /* every input's hook ran before cancel returned */
    for (int i = 0; i < 3; i++)
        assert_int_equal(kt_future_state_of(in[i]), KT_FUTURE_CANCELLED);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_true(h.done);
    for (int i = 0; i < 3; i++)
        kt_future_unref(in[i]);
    kt_future_unref(all);
    end_loop(loop);
}

/* ---- all ---------------------------------------------------------------------- */

static void test_all_per_item(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct producer p[3];
    kt_future *in[4];
    in[0] = produce(loop, &p[0], KT_MSEC(2), 10, 0);
    in[1] = produce(loop, &p[1], KT_MSEC(1), 11, -EIO);
    in[2] = produce(loop, &p[2], UINT64_MAX, 12, 0);
    in[3] = kt_future_new(loop);
    for (int i = 0; i < 4; i++)
        assert_non_null(in[i]);
    assert_int_equal(kt_future_resolve_i64(in[3], 13), 0);
    kt_future *all = kt_all(loop, in, 4);
    assert_non_null(all);
    for (int i = 0; i < 4; i++)
        kt_future_unref(in[i]); /* all keeps its own references */
    assert_int_equal(kt_all_count(all), 4);
    assert_null(kt_all_item(all, 4));
    bool done = false;
    assert_int_equal(kt_future_then(all, done_cb, &done), 0);
    assert_int_equal(kt_future_cancel(kt_all_item(all, 2)), 0); /* one input cancelled */
    run_until(loop, &done, KT_SEC(5));
    assert_int_equal(kt_future_state_of(all), KT_FUTURE_RESOLVED);
    assert_int_equal(kt_future_i64(kt_all_item(all, 0)), 10);
    assert_int_equal(kt_future_error(kt_all_item(all, 1)), -EIO);
    assert_string_equal(kt_future_errmsg(kt_all_item(all, 1)), "producer failed: 11");
    assert_int_equal(kt_future_state_of(kt_all_item(all, 2)), KT_FUTURE_CANCELLED);
    assert_int_equal(kt_future_i64(kt_all_item(all, 3)), 13);
    assert_int_equal(kt_race_winner(all), SIZE_MAX);
    kt_future_unref(all);

    kt_future *none = kt_all(loop, NULL, 0);
    assert_non_null(none);
    assert_int_equal(kt_future_state_of(none), KT_FUTURE_RESOLVED);
    assert_int_equal(kt_all_count(none), 0);
    kt_future_unref(none);
    end_loop(loop);
}

/* Cancelling an all cancels the inputs still pending, not the others. */
static void test_all_cancel(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct producer p[2];
    kt_future *in[3];
    in[0] = produce(loop, &p[0], UINT64_MAX, 0, 0);
    in[1] = produce(loop, &p[1], UINT64_MAX, 0, 0);
    in[2] = kt_future_new(loop);
    assert_non_null(in[0]);
    assert_non_null(in[1]);
    assert_non_null(in[2]);
    assert_int_equal(kt_future_resolve_i64(in[2], 5), 0);
    kt_future *all = kt_all(loop, in, 3);
    assert_non_null(all);
    bool done = false;
    assert_int_equal(kt_future_then(all, done_cb, &done), 0);
    kt_future_unref(all); /* the continuation keeps it */
    assert_int_equal(kt_future_cancel(all), 0);
    assert_int_equal(p[0].cancelled, 1);
    assert_int_equal(p[1].cancelled, 1);
    assert_int_equal(kt_future_state_of(in[2]), KT_FUTURE_RESOLVED);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_true(done);
    for (int i = 0; i < 3; i++)
        kt_future_unref(in[i]);
    end_loop(loop);
}

/* ---- race ---------------------------------------------------------------------- */

static void test_race_winner(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct producer p[3];
    kt_future *in[3];
    in[0] = produce(loop, &p[0], KT_SEC(60), 1, 0);
    in[1] = produce(loop, &p[1], KT_MSEC(1), 2, -EIO); /* fails first */
    in[2] = produce(loop, &p[2], KT_MSEC(3), 3, 0);    /* wins */
    for (int i = 0; i < 3; i++)
        assert_non_null(in[i]);
    kt_future *r = kt_race(loop, in, 3);
    assert_non_null(r);
    for (int i = 0; i < 3; i++)
        kt_future_unref(in[i]);
    assert_int_equal(kt_race_winner(r), SIZE_MAX);
    await(loop, r);
    assert_int_equal(kt_future_state_of(r), KT_FUTURE_RESOLVED);
    assert_int_equal(kt_race_winner(r), 2);
    assert_int_equal(kt_future_i64(r), 3);
    assert_int_equal(p[0].cancelled, 1); /* the loser still pending */
    assert_int_equal(p[1].cancelled, 0);
    assert_int_equal(kt_all_count(r), 0);
    kt_future_unref(r);
    end_loop(loop);
}

/* The winner's pointer value is forwarded and lives as long as the race. */
static void test_race_pointer_value(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    kt_future *in[2] = { kt_future_new(loop), kt_future_new(loop) };
    assert_non_null(in[0]);
    assert_non_null(in[1]);
    kt_future *r = kt_race(loop, in, 2);
    assert_non_null(r);
    char *s = strdup("winner");
    assert_non_null(s);
    assert_int_equal(kt_future_resolve(in[1], s, free), 0);
    kt_future_unref(in[0]);
    kt_future_unref(in[1]);
    bool done = false;
    assert_int_equal(kt_future_then(r, done_cb, &done), 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_true(done);
    assert_int_equal(kt_race_winner(r), 1);
    assert_string_equal(kt_future_value(r), "winner");
    assert_null(kt_all_item(r, 0)); /* not an all */
    kt_future_unref(r); /* frees the losers (cancelled) and the winner's value */
    end_loop(loop);
}

/* Every input fails: the race fails with the last error, message included. */
static void test_race_all_fail(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct producer p[3];
    kt_future *in[3];
    in[0] = produce(loop, &p[0], KT_MSEC(2), 0, -ECONNRESET);
    in[1] = produce(loop, &p[1], KT_MSEC(4), 1, -ECONNREFUSED); /* last */
    in[2] = produce(loop, &p[2], KT_MSEC(1), 2, -EIO);
    for (int i = 0; i < 3; i++)
        assert_non_null(in[i]);
    kt_future *r = kt_race(loop, in, 3);
    assert_non_null(r);
    for (int i = 0; i < 3; i++)
        kt_future_unref(in[i]);
    await(loop, r);
    assert_int_equal(kt_future_state_of(r), KT_FUTURE_FAILED);
    assert_int_equal(kt_future_error(r), -ECONNREFUSED);
    assert_string_equal(kt_future_errmsg(r), "producer failed: 1");
    assert_int_equal(kt_race_winner(r), SIZE_MAX);
    kt_future_unref(r);

    kt_future *none = kt_race(loop, NULL, 0);
    assert_non_null(none);
    assert_int_equal(kt_future_error(none), -EINVAL);
    kt_future_unref(none);
    end_loop(loop);
}

/* ---- timeout ---------------------------------------------------------------------- */

static void test_timeout_fires(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct producer p;
    kt_future *f = produce(loop, &p, UINT64_MAX, 0, 0);
    assert_non_null(f);
    kt_loop_update_time(loop);
    uint64_t t0 = kt_loop_now(loop);
    kt_future *t = kt_timeout(f, KT_MSEC(5));
    assert_non_null(t);
    kt_future_unref(f);
    await(loop, t);
    assert_true(kt_loop_now(loop) >= t0 + KT_MSEC(5));
    assert_int_equal(kt_future_error(t), -ETIMEDOUT);
    assert_string_equal(kt_future_errmsg(t), "timed out after 5 ms");
    assert_int_equal(p.cancelled, 1); /* the inner future was cancelled */
    assert_int_equal(loop->timers.len, 0);
    kt_future_unref(t);

    /* sub-millisecond and zero timeouts say so */
    f = kt_future_new(loop);
    kt_future *g = kt_future_new(loop);
    assert_non_null(f);
    assert_non_null(g);
    t = kt_timeout(f, KT_USEC(500));
    assert_non_null(t);
    kt_future *z = kt_timeout(g, 0);
    assert_non_null(z);
    kt_future_unref(f);
    kt_future_unref(g);
    await(loop, t);
    assert_string_equal(kt_future_errmsg(t), "timed out after 0.500 ms");
    assert_string_equal(kt_future_errmsg(z), "timed out after 0 ms");
    kt_future_unref(t);
    kt_future_unref(z);
    end_loop(loop);
}

/* The inner future settles first: its value comes through, the timer stops. */
static void test_timeout_forwards(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct producer p[2];
    kt_future *ok = produce(loop, &p[0], KT_MSEC(1), 77, 0);
    kt_future *bad = produce(loop, &p[1], KT_MSEC(1), 78, -ENOENT);
    assert_non_null(ok);
    assert_non_null(bad);
    kt_future *t1 = kt_timeout(ok, KT_SEC(60));
    kt_future *t2 = kt_timeout(bad, KT_SEC(60));
    assert_non_null(t1);
    assert_non_null(t2);
    kt_future_unref(ok);
    kt_future_unref(bad);
    kt_future *both[2] = { t1, t2 };
    kt_future *all = kt_all(loop, both, 2);
    assert_non_null(all);
    await(loop, all);
    assert_int_equal(kt_future_i64(t1), 77);
    assert_int_equal(kt_future_error(t2), -ENOENT);
    assert_string_equal(kt_future_errmsg(t2), "producer failed: 78");
    assert_int_equal(loop->timers.len, 0); /* both timeouts' timers stopped */
    kt_future_unref(t1);
    kt_future_unref(t2);
    kt_future_unref(all);
    end_loop(loop);
}

/* Cancelling a timeout cancels the inner future and stops the timer. */
static void test_timeout_cancelled(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct producer p;
    kt_future *f = produce(loop, &p, UINT64_MAX, 0, 0);
    assert_non_null(f);
    kt_future *t = kt_timeout(f, KT_SEC(60));
    assert_non_null(t);
    assert_int_equal(loop->timers.len, 1);
    assert_int_equal(kt_future_cancel(t), 0);
    assert_int_equal(p.cancelled, 1);
    assert_int_equal(loop->timers.len, 0);
    assert_int_equal(kt_future_state_of(t), KT_FUTURE_CANCELLED);
    kt_future_unref(t);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    /* the inner future is cancelled; the timeout is gone once f's
     * continuation has run */
    assert_int_equal(kt_future_state_of(f), KT_FUTURE_CANCELLED);
    kt_future_unref(f);
    end_loop(loop);
}

/* A race of kt_timeout(a, ta) and kt_timeout(b, tb), a settling with value
 * after a_delay and b never: the race once settled; in[] its inputs. */
static kt_future *race_of_timeouts(kt_loop *loop, struct producer p[2], uint64_t a_delay,
                                   int64_t value, uint64_t ta, uint64_t tb, kt_future *in[2])
{
    kt_future *a = produce(loop, &p[0], a_delay, value, 0);
    kt_future *b = produce(loop, &p[1], UINT64_MAX, 0, 0);
    assert_non_null(a);
    assert_non_null(b);
    in[0] = kt_timeout(a, ta);
    in[1] = kt_timeout(b, tb);
    assert_non_null(in[0]);
    assert_non_null(in[1]);
    kt_future *r = kt_race(loop, in, 2);
    assert_non_null(r);
    kt_future_unref(a);
    kt_future_unref(b);
    kt_future_unref(in[0]); /* the race keeps its own references */
    kt_future_unref(in[1]);
    await(loop, r);
    return r;
}

/* A race of timeouts: both time out, the race fails with the last one. */
static void test_race_of_timeouts(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct producer p[2];
    kt_future *in[2];
    kt_future *r = race_of_timeouts(loop, p, UINT64_MAX, 0, KT_MSEC(8), KT_MSEC(2), in);
    assert_int_equal(kt_future_error(r), -ETIMEDOUT);
    assert_string_equal(kt_future_errmsg(r), "timed out after 8 ms");
    assert_int_equal(p[0].cancelled, 1);
    assert_int_equal(p[1].cancelled, 1);
    kt_future_unref(r);
    end_loop(loop);
}

/* A race of timeouts where one inner future wins in time: the value comes
 * through two levels, the other timeout is cancelled with its inner one. */
static void test_race_of_timeouts_winner(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct producer p[2];
    kt_future *in[2];
    kt_future *r = race_of_timeouts(loop, p, KT_MSEC(2), 99, KT_SEC(60), KT_SEC(60), in);
    assert_int_equal(kt_race_winner(r), 0);
    assert_int_equal(kt_future_i64(r), 99);
    assert_int_equal(p[1].cancelled, 1);
    assert_int_equal(kt_future_state_of(kt_race_winner(r) == 0 ? in[1] : in[0]), KT_FUTURE_CANCELLED);
    assert_int_equal(loop->timers.len, 0);
    kt_future_unref(r);
    end_loop(loop);
}

/* A timeout around an all: the all is cancelled, and with it the input
 * still pending; the one already resolved keeps its value. */
static void test_timeout_of_all(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct producer p[2];
    kt_future *in[2];
    in[0] = produce(loop, &p[0], KT_MSEC(1), 5, 0);
    in[1] = produce(loop, &p[1], UINT64_MAX, 0, 0);
    assert_non_null(in[0]);
    assert_non_null(in[1]);
    kt_future *all = kt_all(loop, in, 2);
    assert_non_null(all);
    kt_future *t = kt_timeout(all, KT_MSEC(6));
    assert_non_null(t);
    await(loop, t);
    assert_int_equal(kt_future_error(t), -ETIMEDOUT);
    assert_int_equal(kt_future_state_of(all), KT_FUTURE_CANCELLED);
    assert_int_equal(kt_future_i64(in[0]), 5);
    assert_int_equal(kt_future_state_of(in[1]), KT_FUTURE_CANCELLED);
    assert_int_equal(p[1].cancelled, 1);
    kt_future_unref(t);
    kt_future_unref(all);
    kt_future_unref(in[0]);
    kt_future_unref(in[1]);
    end_loop(loop);
}

/* ---- chain ------------------------------------------------------------------------ */

struct step_ctx {
    kt_loop *loop;
    struct producer p;
    int calls;
    int64_t seen;
    int seen_err;
    int mode; /* 0: delayed value, 1: NULL, 2: delayed failure, 3: cancel chain */
    kt_future *chain;
};

static kt_future *step_cb(kt_future *prev, void *arg)
{
    struct step_ctx *s = arg;
    s->calls++;
    s->seen = kt_future_i64(prev);
    s->seen_err = kt_future_error(prev);
    switch (s->mode) {
    case 1:
        return NULL;
    case 2:
        return produce(s->loop, &s->p, KT_MSEC(1), s->seen, -EPROTO);
    case 3: {
        kt_future *f = produce(s->loop, &s->p, UINT64_MAX, 0, 0);
        assert_int_equal(kt_future_cancel(s->chain), 0);
        return f;
    }
    default:
        return produce(s->loop, &s->p, KT_MSEC(1), s->seen * 2, 0);
    }
}

static void test_chain(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    for (int mode = 0; mode <= 3; mode++) {
        struct step_ctx s = { .loop = loop, .mode = mode };
        struct producer p0;
        kt_future *f = produce(loop, &p0, KT_MSEC(1), 21, 0);
        assert_non_null(f);
        kt_future *c = kt_then_chain(f, step_cb, &s);
        assert_non_null(c);
        s.chain = c;
        kt_future_unref(f);
        assert_int_equal(s.calls, 0);
        bool done = false;
        assert_int_equal(kt_future_then(c, done_cb, &done), 0);
        run_until(loop, &done, KT_SEC(5));
        assert_int_equal(s.calls, 1);
        assert_int_equal(s.seen, 21);
        switch (mode) {
        case 0:
            assert_int_equal(kt_future_i64(c), 42);
            break;
        case 1:
            assert_int_equal(kt_future_error(c), -ENOMEM);
            break;
        case 2:
            assert_int_equal(kt_future_error(c), -EPROTO);
            assert_string_equal(kt_future_errmsg(c), "producer failed: 21");
            break;
        case 3:
            assert_int_equal(kt_future_state_of(c), KT_FUTURE_CANCELLED);
            assert_int_equal(s.p.cancelled, 1); /* the step's future too */
            break;
        }
        kt_future_unref(c);
    }
    end_loop(loop);
}

/* A chain cancelled while waiting for its first future never calls the
 * step; one cancelled while waiting for the step's future cancels that. */
static void test_chain_cancel(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct step_ctx s = { .loop = loop };
    struct producer p0;
    kt_future *f = produce(loop, &p0, UINT64_MAX, 1, 0);
    assert_non_null(f);
    kt_future *c = kt_then_chain(f, step_cb, &s);
    assert_non_null(c);
    kt_future_unref(f);
    assert_int_equal(kt_future_cancel(c), 0);
    assert_int_equal(p0.cancelled, 1);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(s.calls, 0);
    kt_future_unref(c);

    /* second stage */
    struct producer p1;
    f = produce(loop, &p1, 0, 3, 0);
    assert_non_null(f);
    c = kt_then_chain(f, step_cb, &s);
    assert_non_null(c);
    kt_future_unref(f);
    while (s.calls == 0)
        assert_int_equal(kt_loop_run(loop, KT_RUN_ONCE), 0);
    assert_int_equal(kt_future_state_of(c), KT_FUTURE_PENDING);
    assert_int_equal(kt_future_cancel(c), 0);
    assert_int_equal(s.p.cancelled, 1);
    kt_future_unref(c);
    end_loop(loop);
}

/* Chains nested 50,000 deep: cancelling the outermost reaches the
 * innermost producer, and releasing them all does not recurse. */
static kt_future *never_step(kt_future *prev, void *arg)
{
    (void)prev;
    (void)arg;
    fail_msg("step of a cancelled chain called");
    return NULL;
}

static void test_deep_nesting(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct producer p;
    kt_future *f = produce(loop, &p, UINT64_MAX, 0, 0);
    assert_non_null(f);
    for (int i = 0; i < 50000; i++) {
        kt_future *c = kt_then_chain(f, never_step, NULL);
        assert_non_null(c);
        kt_future_unref(f);
        f = c;
    }
    assert_int_equal(kt_future_cancel(f), 0);
    assert_int_equal(p.cancelled, 1);
    kt_future_unref(f);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    end_loop(loop);
}

/* ---- sequence ----------------------------------------------------------------------- */

struct seq_ctx {
    kt_loop *loop;
    struct producer p[4];
    uint64_t start_at[4];
    size_t started;
    size_t null_at;   /* start returns NULL for this item */
    size_t cancel_at; /* start cancels the sequence at this item */
    kt_future *seq;
};

static kt_future *seq_start(size_t i, void *arg)
{
    struct seq_ctx *s = arg;
    assert_int_equal(i, s->started);
    s->started++;
    s->start_at[i] = kt_loop_now(s->loop);
    if (i == s->null_at)
        return NULL;
    if (i == s->cancel_at) {
        kt_future *f = produce(s->loop, &s->p[i], UINT64_MAX, 0, 0);
        assert_int_equal(kt_future_cancel(s->seq), 0);
        return f;
    }
    return produce(s->loop, &s->p[i], KT_MSEC(2), (int64_t)i * 10, i == 2 ? -EIO : 0);
}

/* Each item starts only once the previous one has settled. */
static void test_sequence(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct seq_ctx s = { .loop = loop, .null_at = 1, .cancel_at = SIZE_MAX };
    kt_future *seq = kt_sequence(loop, 4, seq_start, &s);
    assert_non_null(seq);
    s.seq = seq;
    assert_int_equal(s.started, 0); /* never inside kt_sequence */
    assert_int_equal(kt_all_count(seq), 4);
    await(loop, seq);
    assert_int_equal(s.started, 4);
    assert_int_equal(kt_future_state_of(seq), KT_FUTURE_RESOLVED);
    /* start times: after the previous item settled */
    assert_true(s.start_at[1] >= s.p[0].settled);
    assert_true(s.start_at[2] >= s.start_at[1]);
    assert_true(s.start_at[3] >= s.p[2].settled);
    assert_true(s.p[2].settled >= s.start_at[2] + KT_MSEC(2));
    assert_true(s.start_at[3] >= s.start_at[0] + KT_MSEC(4));
    /* per-item results */
    assert_int_equal(kt_future_i64(kt_all_item(seq, 0)), 0);
    assert_int_equal(kt_future_error(kt_all_item(seq, 1)), -ENOMEM);
    assert_int_equal(kt_future_error(kt_all_item(seq, 2)), -EIO);
    assert_int_equal(kt_future_i64(kt_all_item(seq, 3)), 30);
    kt_future_unref(seq);

    kt_future *empty = kt_sequence(loop, 0, seq_start, &s);
    assert_non_null(empty);
    assert_int_equal(kt_future_state_of(empty), KT_FUTURE_RESOLVED);
    kt_future_unref(empty);
    end_loop(loop);
}

/* Cancelling a sequence cancels the current item; later ones never start.
 * Also a start callback that cancels the sequence itself. */
static void test_sequence_cancel(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    for (int variant = 0; variant < 2; variant++) {
        struct seq_ctx s = { .loop = loop, .null_at = SIZE_MAX,
                             .cancel_at = variant ? 1 : SIZE_MAX };
        kt_future *seq = kt_sequence(loop, 4, seq_start, &s);
        assert_non_null(seq);
        s.seq = seq;
        bool done = false;
        assert_int_equal(kt_future_then(seq, done_cb, &done), 0);
        if (variant == 0) {
            while (s.started < 2)
                assert_int_equal(kt_loop_run(loop, KT_RUN_ONCE), 0);
            assert_int_equal(kt_future_cancel(seq), 0);
        }
        run_until(loop, &done, KT_SEC(5));
        assert_int_equal(kt_future_state_of(seq), KT_FUTURE_CANCELLED);
        assert_int_equal(s.started, 2);
        assert_int_equal(s.p[1].cancelled, 1);
        assert_int_equal(kt_future_state_of(kt_all_item(seq, 1)), KT_FUTURE_CANCELLED);
        assert_null(kt_all_item(seq, 2));
        assert_null(kt_all_item(seq, 3));
        kt_future_unref(seq);
    }
    end_loop(loop);
}

/* A sequence inside a race inside a timeout inside a chain. */
static kt_future *wrap_step(kt_future *prev, void *arg)
{
    kt_future *f = kt_future_new(kt_future_loop(prev));
    (void)arg;
    if (f)
        assert_int_equal(kt_future_resolve_i64(f, kt_future_i64(prev) + 1), 0);
    return f;
}

static void test_nested_combination(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct seq_ctx s = { .loop = loop, .null_at = SIZE_MAX, .cancel_at = SIZE_MAX };
    struct producer p;
    kt_future *seq = kt_sequence(loop, 2, seq_start, &s);
    kt_future *slow = produce(loop, &p, UINT64_MAX, 0, 0);
    assert_non_null(seq);
    assert_non_null(slow);
    s.seq = seq;
    kt_future *in[2] = { slow, seq };
    kt_future *r = kt_race(loop, in, 2);
    assert_non_null(r);
    kt_future *t = kt_timeout(r, KT_SEC(60));
    assert_non_null(t);
    kt_future *c = kt_then_chain(t, wrap_step, NULL);
    assert_non_null(c);
    kt_future_unref(seq);
    kt_future_unref(slow);
    kt_future_unref(r);
    kt_future_unref(t);
    await(loop, c);
    assert_int_equal(kt_future_i64(c), 1); /* the sequence resolves with no value: 0 + 1 */
    assert_int_equal(p.cancelled, 1);
    kt_future_unref(c);
    end_loop(loop);
}

/* ---- random graphs ------------------------------------------------------------------ */

/* A pool of futures we hold one reference each on; random operations
 * create plain futures and combinators over pool members, settle, cancel,
 * subscribe and drop them, interleaved with loop iterations. In the end
 * everything pending is cancelled: every continuation must have run exactly
 * once, no future stays pending, none leaks, no timer stays armed. */
#define RG_POOL 48

struct rg {
    kt_loop *loop;
    kt_future *pool[RG_POOL];
    size_t n;
    uint64_t rng;
    long registered, ran;
    int bad_state;
};

static uint64_t rg_next(struct rg *g)
{
    g->rng ^= g->rng >> 12;
    g->rng ^= g->rng << 25;
    g->rng ^= g->rng >> 27;
    return g->rng * 2685821657736338717ull;
}

static size_t rg_pick(struct rg *g) { return (size_t)(rg_next(g) % g->n); }

/* Keep f (our reference) in the pool, or drop it when full. */
static void rg_keep(struct rg *g, kt_future *f)
{
    if (f == NULL)
        return;
    if (g->n < RG_POOL)
        g->pool[g->n++] = f;
    else
        kt_future_unref(f);
}

static void rg_cont(kt_future *f, void *arg)
{
    struct rg *g = arg;
    if (kt_future_state_of(f) == KT_FUTURE_PENDING)
        g->bad_state++;
    g->ran++;
}

static void rg_then(struct rg *g, kt_future *f)
{
    assert_int_equal(kt_future_then(f, rg_cont, g), 0);
    g->registered++;
}

/* A step or a sequence start: a new future, settled now or kept pending in
 * the pool (where it will be settled or cancelled later). */
static kt_future *rg_produce(struct rg *g)
{
    kt_future *f = kt_future_new(g->loop);
    assert_non_null(f);
    switch (rg_next(g) % 4) {
    case 0:
        (void)kt_future_resolve_i64(f, 1);
        break;
    case 1:
        (void)kt_future_fail(f, -EIO, "made failed %d", 1);
        break;
    default:
        if (g->n < RG_POOL) {
            kt_future_ref(f);
            rg_keep(g, f);
        } else {
            (void)kt_future_cancel(f);
        }
        break;
    }
    return f;
}

static kt_future *rg_step(kt_future *prev, void *arg)
{
    struct rg *g = arg;
    if (kt_future_state_of(prev) == KT_FUTURE_PENDING)
        g->bad_state++;
    return rg_next(g) % 8 == 0 ? NULL : rg_produce(g);
}

static kt_future *rg_start(size_t i, void *arg)
{
    (void)i;
    struct rg *g = arg;
    return rg_next(g) % 8 == 0 ? NULL : rg_produce(g);
}

static void rg_op(struct rg *g)
{
    kt_future *in[4];
    size_t k = 1 + rg_next(g) % 4;
    if (g->n == 0) {
        rg_keep(g, kt_future_new(g->loop));
        return;
    }
    for (size_t i = 0; i < k; i++)
        in[i] = g->pool[rg_pick(g)];
    switch (rg_next(g) % 14) {
    case 0:
    case 1:
        rg_keep(g, kt_future_new(g->loop));
        break;
    case 2:
        (void)kt_future_resolve(in[0], malloc(8), free);
        break;
    case 3:
        (void)kt_future_resolve_i64(in[0], 5);
        break;
    case 4:
        (void)kt_future_fail(in[0], -ECONNRESET, "reset %d", 5);
        break;
    case 5:
        (void)kt_future_cancel(in[0]);
        break;
    case 6:
        rg_then(g, in[0]);
        break;
    case 7:
        rg_keep(g, kt_all(g->loop, in, k));
        break;
    case 8:
        rg_keep(g, kt_race(g->loop, in, k));
        break;
    case 9:
        rg_keep(g, kt_timeout(in[0], rg_next(g) % KT_USEC(300)));
        break;
    case 10:
        rg_keep(g, kt_then_chain(in[0], rg_step, g));
        break;
    case 11:
        rg_keep(g, kt_sequence(g->loop, rg_next(g) % 4, rg_start, g));
        break;
    case 12: { /* drop our reference (to a settled one: a pending future
                * nobody references can never be settled, a caller's leak) */
        size_t i = rg_pick(g);
        if (kt_future_done(g->pool[i])) {
            kt_future_unref(g->pool[i]);
            g->pool[i] = g->pool[--g->n];
        }
        break;
    }
    default: /* sometimes wait for a timer (if one is armed: ONCE would
              * otherwise wait for I/O that never comes), so timeouts fire */
        assert_int_equal(kt_loop_run(g->loop, g->loop->timers.len && rg_next(g) % 4 == 0 ? KT_RUN_ONCE
                                                                                         : KT_RUN_NOWAIT), 0);
        break;
    }
}

static void test_random_graphs(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 300; seed++) {
        struct rg g = { .loop = unit_loop_new(), .rng = seed * 0x9e3779b97f4a7c15ull };
        for (int i = 0; i < 400; i++)
            rg_op(&g);
        /* wind down: cancel whatever is pending until nothing is, since
         * steps and starts may still create pending futures */
        for (int round = 0;; round++) {
            for (size_t i = 0; i < g.n; i++)
                (void)kt_future_cancel(g.pool[i]);
            assert_int_equal(kt_loop_run(g.loop, KT_RUN_NOWAIT), 0);
            bool pending = false; /* the run may have added some */
            for (size_t i = 0; i < g.n; i++)
                pending |= !kt_future_done(g.pool[i]);
            if (!pending && !kt__futures_ready(g.loop))
                break;
            assert_true(round < 1000);
        }
        for (size_t i = 0; i < g.n; i++)
            assert_int_not_equal(kt_future_state_of(g.pool[i]), KT_FUTURE_PENDING);
        assert_int_equal(g.ran, g.registered);
        assert_int_equal(g.bad_state, 0);
        for (size_t i = 0; i < g.n; i++)
            kt_future_unref(g.pool[i]);
        assert_int_equal(g.loop->timers.len, 0);
        end_loop(g.loop);
    }
}

/* ---- allocation failure --------------------------------------------------------------- */

static long alloc_count;  /* allocations so far */
static long alloc_fail_at; /* fail this one (1-based); 0 = never */
static bool alloc_failed;

static bool alloc_ok(void)
{
    if (++alloc_count == alloc_fail_at) {
        alloc_failed = true;
        return false;
    }
    return true;
}
static void *fail_malloc(size_t n) { return alloc_ok() ? malloc(n) : NULL; }
static void *fail_realloc(void *p, size_t n) { return alloc_ok() ? realloc(p, n) : NULL; }

struct scen {
    kt_loop *loop;
    int pending;   /* continuations registered and not yet run */
    int errors;    /* NULL or -ENOMEM returned, or a message that fell back */
    bool done;
    kt_future *to; /* the timeout (a reference), to see when it fired */
};

static void scen_cb(kt_future *f, void *arg)
{
    (void)f;
    struct scen *sc = arg;
    if (--sc->pending == 0)
        sc->done = true;
}

/* then() that counts, or counts the error. */
static void scen_then(struct scen *sc, kt_future *f)
{
    if (f == NULL)
        return;
    int rc = kt_future_then(f, scen_cb, sc);
    if (rc == 0)
        sc->pending++;
    else {
        assert_int_equal(rc, -ENOMEM);
        sc->errors++;
    }
}

static kt_future *scen_new(struct scen *sc)
{
    kt_future *f = kt_future_new(sc->loop);
    if (f == NULL)
        sc->errors++;
    return f;
}

static kt_future *scen_step(kt_future *prev, void *arg)
{
    kt_future *f = kt_future_new(kt_future_loop(prev));
    (void)arg;
    if (f)
        (void)kt_future_fail(f, -EIO, "step after %d", kt_future_error(prev));
    return f;
}

static kt_future *scen_seq_start(size_t i, void *arg)
{
    struct scen *sc = arg;
    kt_future *f = kt_future_new(sc->loop);
    if (f)
        (void)kt_future_resolve_i64(f, (int64_t)i);
    return f;
}

static void scen_unref(kt_future *f)
{
    if (f)
        kt_future_unref(f);
}

/* Everything at once: several continuations per future (nodes), messages,
 * all, race, timeout, chain, sequence, cancellation. Any allocation may
 * fail; whatever was created must still settle and be released. */
static void scenario(struct scen *sc)
{
    kt_loop *loop = sc->loop;
    kt_future *p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = scen_new(sc);
        scen_then(sc, p[i]);
        scen_then(sc, p[i]);
    }
    if (p[0])
        (void)kt_future_resolve_i64(p[0], 1);
    if (p[1]) {
        (void)kt_future_fail(p[1], -EIO, "failed %s %d", "item", 1);
        if (strcmp(kt_future_errmsg(p[1]), strerror(EIO)) == 0)
            sc->errors++; /* the copy failed: strerror stands in */
    }
    if (p[3])
        (void)kt_future_resolve(p[3], malloc(16), free);

    kt_future *all = NULL, *to = NULL, *race = NULL, *chain = NULL, *seq;
    if (p[0] && p[1]) {
        all = kt_all(loop, p, 2);
        if (all == NULL)
            sc->errors++;
    }
    if (p[2]) {
        to = kt_timeout(p[2], KT_MSEC(20));
        if (to == NULL) {
            sc->errors++;
            (void)kt_future_cancel(p[2]); /* nobody else will settle it */
        } else {
            kt_future_ref(to);
            sc->to = to;
        }
    }
    if (to && p[3]) {
        kt_future *in[2] = { to, p[3] };
        race = kt_race(loop, in, 2);
        if (race == NULL)
            sc->errors++;
    }
    if (all) {
        chain = kt_then_chain(all, scen_step, NULL);
        if (chain == NULL)
            sc->errors++;
    }
    seq = kt_sequence(loop, 3, scen_seq_start, sc);
    if (seq == NULL)
        sc->errors++;
    scen_then(sc, all);
    scen_then(sc, to);
    scen_then(sc, race);
    scen_then(sc, chain);
    scen_then(sc, seq);
    scen_then(sc, to); /* second continuation: needs a node */

    for (int i = 0; i < 4; i++)
        scen_unref(p[i]);
    scen_unref(all);
    scen_unref(to);
    scen_unref(race);
    scen_unref(chain);
    scen_unref(seq);
}

/* Run the scenario once to count its allocations, then again failing the
 * k-th for every k: errors are reported, nothing crashes, nothing leaks. */
static void test_alloc_failure_each(void **state)
{
    (void)state;
    long total = 0, failed_runs = 0, stalls = 0;
    for (long k = 0;; k++) {
        kt_loop *loop = unit_loop_new();
        kt_timer guard;
        bool timed_out = false, guard_fired = false;
        struct scen sc = { .loop = loop };
        /* the guard first, so its heap allocation is not in the count */
        kt_timer_init(loop, &guard, unit_guard_cb, &guard_fired);
        assert_int_equal(kt_timer_start(&guard, KT_SEC(5), 0), 0);

        alloc_count = 0;
        alloc_fail_at = k;
        alloc_failed = false;
        kt_set_allocator(&(kt_allocator){ fail_malloc, fail_realloc, NULL });
        scenario(&sc);
        /* drain once before the timeout, so that the order in which
         * continuation nodes are recycled (and so the allocation count)
         * does not depend on the machine's speed */
        assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
        /* (the race cancels the timeout in that drain, unless its timer,
         * run first in an iteration, has already fired) */
        bool late = sc.to && kt_future_error(sc.to) == -ETIMEDOUT;
        while (sc.pending > 0 && !guard_fired)
            assert_int_equal(kt_loop_run(loop, KT_RUN_ONCE), 0);
        timed_out = guard_fired;
        kt_set_allocator(NULL);
        long used = alloc_count;
        alloc_fail_at = 0;
        (void)used;

        kt_timer_stop(&guard);
        assert_false(timed_out);
        assert_int_equal(sc.pending, 0);
        if (sc.to)
            kt_future_unref(sc.to);
        if (late) {
            /* The machine stalled 20 ms before the first drain: this
             * round's order (and count) is not the scenario's. Again. */
            end_loop(loop);
            assert_true(++stalls < 100);
            k--;
            continue;
        }
        if (k == 0) {
            total = used;
            assert_int_equal(sc.errors, 0);
            assert_true(total > 10);
        } else if (alloc_failed) {
            /* reported as NULL/-ENOMEM/strerror, or recorded in a result
             * (a sequence item or chain that fails with -ENOMEM) */
            failed_runs++;
        }
        end_loop(loop);
        if (k > 0 && !alloc_failed)
            break;
    }
    assert_int_equal(failed_runs, total);
    print_message("# scenario made %ld allocations; each failed in turn\n", total);
}

/* kt_timeout failing at each of its allocations (the future, its state,
 * the timer heap array of a fresh loop) returns NULL and leaves nothing. */
static void test_timeout_enomem(void **state)
{
    (void)state;
    long at;
    for (at = 1;; at++) {
        kt_loop *loop = unit_loop_new();
        kt_future *f = kt_future_new(loop);
        assert_non_null(f);
        alloc_count = 0;
        alloc_fail_at = at;
        kt_set_allocator(&(kt_allocator){ fail_malloc, fail_realloc, NULL });
        kt_future *t = kt_timeout(f, KT_MSEC(1));
        kt_set_allocator(NULL);
        alloc_fail_at = 0;
        if (t) {
            assert_int_equal(kt_future_cancel(t), 0);
            kt_future_unref(t);
        } else {
            assert_int_equal(kt__futures_live(loop), 1);
            assert_int_equal(loop->timers.len, 0);
        }
        kt_future_unref(f);
        end_loop(loop);
        if (t)
            break;
    }
    assert_int_equal(at, 4); /* three allocations, each failed once */
}

int main(void)
{

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve_value_and_dtor),
        cmocka_unit_test(test_fail_messages),
        cmocka_unit_test(test_continuation_order),
        cmocka_unit_test(test_then_on_settled),
        cmocka_unit_test(test_run_extends),
        cmocka_unit_test(test_continuation_drops_last_ref),
        cmocka_unit_test(test_long_relay),
        cmocka_unit_test(test_cancel_reaches_producer),
        cmocka_unit_test(test_cancel_from_continuation),
        cmocka_unit_test(test_then_inside_cancel_hooks),
        cmocka_unit_test(test_all_per_item),
        cmocka_unit_test(test_all_cancel),
        cmocka_unit_test(test_race_winner),
        cmocka_unit_test(test_race_pointer_value),
        cmocka_unit_test(test_race_all_fail),
        cmocka_unit_test(test_timeout_fires),
        cmocka_unit_test(test_timeout_forwards),
        cmocka_unit_test(test_timeout_cancelled),
        cmocka_unit_test(test_race_of_timeouts),
        cmocka_unit_test(test_race_of_timeouts_winner),
        cmocka_unit_test(test_timeout_of_all),
        cmocka_unit_test(test_chain),
        cmocka_unit_test(test_chain_cancel),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_sequence),
        cmocka_unit_test(test_sequence_cancel),
        cmocka_unit_test(test_nested_combination),
        cmocka_unit_test(test_random_graphs),
        cmocka_unit_test(test_alloc_failure_each),
        cmocka_unit_test(test_timeout_enomem),
    };
    return unit_run_backend_tests(tests, NULL, NULL);
}
