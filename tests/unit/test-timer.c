/*
 * test-timer.c - the loop's timer heap: order (deadline, then start order),
 * cancellation, repetition without drift, re-entrancy from callbacks, and
 * allocation failure. Runs on the backend named by KETTLE_IO.
 *
 * Nothing here sleeps and hopes: every wait is the loop running until a
 * condition holds, bounded by a guard timer that fails the test.
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

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define KT_TEST_ON_VALGRIND() RUNNING_ON_VALGRIND
#endif
#endif
#ifndef KT_TEST_ON_VALGRIND
#define KT_TEST_ON_VALGRIND() 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#define KT_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KT_TEST_SANITIZED 1
#endif
#endif

/* The big tests' size: 1M plain, 200k under ASan, 50k under valgrind. */
static size_t big_n(void)
{
    if (KT_TEST_ON_VALGRIND())
        return 50000;
#ifdef KT_TEST_SANITIZED
    return 200000;
#else
    return 1000000;
#endif
}

/* Deterministic xorshift64*: the same "random" deadlines every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

/* ---- waiting with a deadline ------------------------------------------------ */

/* Run iterations until *done, or fail the test after limit_ns. */
#define run_until(loop, done, limit_ns) unit_run_until(loop, done, limit_ns, #done)

/* The end of a test: no timer left in the heap, the loop freed. */
static void end_loop(kt_loop *loop)
{
    assert_int_equal(loop->timers.len, 0);
    kt_loop_free(loop);
}

/* ---- order ------------------------------------------------------------------- */

struct order_ctx {
    uint64_t *timeout; /* per timer */
    uint8_t *fired;    /* per timer */
    kt_timer *timers;
    size_t n, count, bad, last;
    bool done;
};

static void order_cb(kt_timer *t, void *arg)
{
    struct order_ctx *c = arg;
    size_t i = (size_t)(t - c->timers);
    if (c->count > 0) {
        size_t p = c->last;
        /* (timeout, start index) must not decrease: all started at one now */
        if (c->timeout[p] > c->timeout[i] || (c->timeout[p] == c->timeout[i] && p > i))
            c->bad++;
    }
    c->fired[i]++;
    c->last = i;
    if (++c->count == c->n)
        c->done = true;
}

/* c for n timers, zeroed. */
static void order_alloc(struct order_ctx *c, size_t n)
{
    *c = (struct order_ctx){ .n = n };
    c->timeout = calloc(n, sizeof(*c->timeout));
    c->fired = calloc(n, 1);
    c->timers = calloc(n, sizeof(*c->timers));
    assert_non_null(c->timeout);
    assert_non_null(c->fired);
    assert_non_null(c->timers);
}

static void order_free(struct order_ctx *c)
{
    free(c->timeout);
    free(c->fired);
    free(c->timers);
}

/* A million timers (fewer under sanitizers) over 100 ms, half of them on
 * whole milliseconds so that ties are common: they fire in (deadline, start
 * order), each exactly once. */
static void test_order_many(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct order_ctx c;
    order_alloc(&c, big_n());

    kt_loop_update_time(loop);
    for (size_t i = 0; i < c.n; i++) {
        uint64_t ns = rng() % KT_MSEC(100);
        c.timeout[i] = (i & 1) ? ns - ns % KT_MSEC(1) : ns;
        kt_timer_init(loop, &c.timers[i], order_cb, &c);
        assert_int_equal(kt_timer_start(&c.timers[i], c.timeout[i], 0), 0);
    }
    run_until(loop, &c.done, KT_SEC(30));
    assert_int_equal(c.bad, 0);
    for (size_t i = 0; i < c.n; i++) {
        assert_int_equal(c.fired[i], 1);
        assert_false(kt_timer_active(&c.timers[i]));
    }
    end_loop(loop);
    order_free(&c);
}

/* Sets the bool its argument points to. */
static void flag_cb(kt_timer *t, void *arg)
{
    (void)t;
    *(bool *)arg = true;
}

/* Half of many timers stopped before they fire: the others fire exactly
 * once, the stopped ones never, even after every deadline has passed. */
static void test_cancel_half(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct order_ctx c = { .n = big_n() };
    c.timeout = calloc(c.n, sizeof(*c.timeout));
    c.fired = calloc(c.n, 1);
    c.timers = calloc(c.n, sizeof(*c.timers));
    uint8_t *stopped = calloc(c.n, 1);
    assert_non_null(c.timeout);
    assert_non_null(c.fired);
    assert_non_null(c.timers);
    assert_non_null(stopped);

    kt_loop_update_time(loop);
    for (size_t i = 0; i < c.n; i++) {
        c.timeout[i] = rng() % KT_MSEC(50);
        kt_timer_init(loop, &c.timers[i], order_cb, &c);
        assert_int_equal(kt_timer_start(&c.timers[i], c.timeout[i], 0), 0);
    }
    size_t nstopped = 0;
    for (size_t i = 0; i < c.n; i++) {
        if (rng() & 1) {
            kt_timer_stop(&c.timers[i]);
            kt_timer_stop(&c.timers[i]); /* harmless twice */
            assert_false(kt_timer_active(&c.timers[i]));
            stopped[i] = 1;
            nstopped++;
        }
    }
    assert_int_equal(loop->timers.len, c.n - nstopped);
    size_t total = c.n;
    c.n -= nstopped; /* done when the survivors have fired */
    run_until(loop, &c.done, KT_SEC(30));

    /* then past every deadline, to see that nothing else fires */
    bool past = false;
    kt_timer after;
    kt_timer_init(loop, &after, flag_cb, &past);
    assert_int_equal(kt_timer_start(&after, KT_MSEC(60), 0), 0);
    run_until(loop, &past, KT_SEC(5));

    assert_int_equal(c.bad, 0);
    assert_int_equal(c.count, total - nstopped);
    for (size_t i = 0; i < total; i++)
        assert_int_equal(c.fired[i], stopped[i] ? 0 : 1);
    end_loop(loop);
    order_free(&c);
    free(stopped);
}

/* ---- repetition ----------------------------------------------------------------- */

struct rep_ctx {
    kt_loop *loop;
    uint64_t t0, period;
    uint64_t cur;        /* deadline of the slot firing next */
    uint64_t max_slot;   /* slots 1..max_slot are inside the window */
    size_t count;        /* fires */
    size_t fired_in;     /* fires of slots inside the window */
    size_t skipped_in;   /* slots inside the window skipped (loop was late) */
    size_t off_grid;     /* next deadline not on t0 + k * period */
    size_t early;        /* fired before its slot */
    uint64_t stall_ns;   /* first callback busy-waits this long */
    uint64_t now[16];
    bool done;
};

static void rep_cb(kt_timer *t, void *arg)
{
    struct rep_ctx *c = arg;
    uint64_t now = kt_loop_now(c->loop);
    /* the timer is already re-armed: its deadline is the next slot */
    uint64_t next = t->deadline;
    if ((next - c->t0) % c->period != 0 || next <= c->cur)
        c->off_grid++;
    if (now < c->cur)
        c->early++;
    uint64_t slot = (c->cur - c->t0) / c->period, next_slot = (next - c->t0) / c->period;
    if (slot <= c->max_slot)
        c->fired_in++;
    for (uint64_t k = slot + 1; k < next_slot; k++)
        if (k <= c->max_slot)
            c->skipped_in++;
    c->cur = next;
    if (c->count < 16)
        c->now[c->count] = now;
    c->count++;
    if (c->count == 1 && c->stall_ns) {
        /* fall behind on purpose: the loop is blocked, not sleeping */
        uint64_t until = kt_clock_ns() + c->stall_ns;
        while (kt_clock_ns() < until)
            ;
    }
}

/* A 10 ms repeating timer over a 305 ms window: every next deadline is on
 * the grid of the first one (no drift), none fires early, and each of the
 * 30 slots in the window either fired or, if the loop fell a whole period
 * behind (a loaded machine), was skipped on purpose. */
static void test_repeat_no_drift(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct rep_ctx c = { .loop = loop, .period = KT_MSEC(10), .max_slot = 30 };
    kt_timer rep, window;
    kt_loop_update_time(loop);
    c.t0 = kt_loop_now(loop);
    c.cur = c.t0 + c.period;
    kt_timer_init(loop, &rep, rep_cb, &c);
    kt_timer_init(loop, &window, flag_cb, &c.done);
    assert_int_equal(kt_timer_start(&rep, c.period, c.period), 0);
    assert_int_equal(kt_timer_start(&window, 30 * c.period + c.period / 2, 0), 0);
    run_until(loop, &c.done, KT_SEC(10));
    assert_true(kt_timer_active(&rep));
    kt_timer_stop(&rep);
    assert_int_equal(c.off_grid, 0);
    assert_int_equal(c.early, 0);
    assert_int_equal(c.fired_in + c.skipped_in, 30);
    assert_true(c.fired_in > 0);
    if (c.skipped_in)
        print_message("# loop fell behind: %zu of 30 slots skipped\n", c.skipped_in);
    kt_loop_free(loop);
}

/* A repeating timer that falls far behind fires once for the missed slots,
 * then resumes on its grid: no burst. */
static void test_repeat_skips_when_behind(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct rep_ctx c = { .loop = loop, .period = KT_MSEC(5), .stall_ns = KT_MSEC(23), .max_slot = 100 };
    kt_timer rep;
    kt_loop_update_time(loop);
    c.t0 = kt_loop_now(loop);
    c.cur = c.t0 + c.period;
    kt_timer_init(loop, &rep, rep_cb, &c);
    assert_int_equal(kt_timer_start(&rep, c.period, c.period), 0);
    while (c.count < 4) {
        size_t before = c.count;
        assert_int_equal(kt_loop_run(loop, KT_RUN_ONCE), 0);
        assert_true(c.count - before <= 1); /* one fire per pass at most */
    }
    kt_timer_stop(&rep);
    /* fired at 5 ms, stalled to >= 28 ms; the 10 ms slot fires late once,
     * then the next is the first slot after that fire, not 15, 20, 25 */
    assert_true(c.now[1] >= c.t0 + KT_MSEC(28));
    assert_true(c.now[2] > c.now[1]);
    assert_true(c.now[2] >= c.t0 + KT_MSEC(30));
    assert_int_equal(c.off_grid, 0);
    assert_int_equal(c.early, 0);
    assert_true(c.skipped_in >= 3); /* 15, 20, 25 at least */
    kt_loop_free(loop);
}

/* ---- callbacks that stop, restart and free ----------------------------------------- */

struct cb_ctx {
    kt_timer *other;
    int fired_self, fired_other;
    int mode;
};

enum { STOP_SELF = 1, STOP_OTHER, RESTART_ZERO, FREE_SELF, FREE_OTHER };

static void other_cb(kt_timer *t, void *arg)
{
    (void)t;
    struct cb_ctx *c = arg;
    c->fired_other++;
}

static void self_cb(kt_timer *t, void *arg)
{
    struct cb_ctx *c = arg;
    c->fired_self++;
    switch (c->mode) {
    case STOP_SELF:
        kt_timer_stop(t);
        assert_false(kt_timer_active(t));
        break;
    case STOP_OTHER:
        kt_timer_stop(c->other);
        break;
    case RESTART_ZERO:
        assert_int_equal(kt_timer_start(t, 0, 0), 0);
        break;
    case FREE_SELF:
        kt_timer_stop(t);
        kt_free(t);
        break;
    case FREE_OTHER:
        kt_timer_stop(c->other);
        kt_free(c->other);
        c->other = NULL;
        break;
    }
}

/* t runs self_cb in c's mode, due at once, repeating every repeat ns. */
static void start_self(kt_loop *loop, kt_timer *t, struct cb_ctx *c, uint64_t repeat)
{
    kt_timer_init(loop, t, self_cb, c);
    assert_int_equal(kt_timer_start(t, 0, repeat), 0);
}

static void run_nowait(kt_loop *loop, int passes)
{
    for (int i = 0; i < passes; i++)
        assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
}

/* A repeating timer that stops itself fires once. */
static void test_stop_self(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct cb_ctx c = { .mode = STOP_SELF };
    kt_timer t;
    start_self(loop, &t, &c, KT_MSEC(1));
    assert_true(kt_timer_active(&t));
    run_nowait(loop, 5);
    assert_int_equal(c.fired_self, 1);
    assert_false(kt_timer_active(&t));
    kt_loop_free(loop);
}

/* A timer due in the same pass, stopped by an earlier one, never fires;
 * nor does one freed by another's callback (ASan watches the memory). */
static void test_stop_other_same_pass(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    for (int mode = STOP_OTHER; mode <= FREE_OTHER; mode += FREE_OTHER - STOP_OTHER) {
        struct cb_ctx c = { .mode = mode };
        kt_timer a;
        kt_timer *b = kt_malloc(sizeof(*b));
        assert_non_null(b);
        c.other = b;
        kt_timer_init(loop, &a, self_cb, &c);
        kt_timer_init(loop, b, other_cb, &c);
        assert_int_equal(kt_timer_start(&a, 0, 0), 0);
        assert_int_equal(kt_timer_start(b, 0, 0), 0); /* same deadline, after a */
        run_nowait(loop, 2);
        assert_int_equal(c.fired_self, 1);
        assert_int_equal(c.fired_other, 0);
        if (c.other) {
            assert_false(kt_timer_active(b));
            kt_free(b);
        }
    }
    end_loop(loop);
}

/* A repeating timer stops and frees itself in its callback. */
static void test_free_self(void **state)
{
    (void)state;
    struct cb_ctx c = { .mode = FREE_SELF };
    kt_loop *loop = unit_loop_new();
    kt_timer *t = kt_malloc(sizeof(*t));
    assert_non_null(t);
    start_self(loop, t, &c, 1);
    run_nowait(loop, 3);
    assert_int_equal(c.fired_self, 1);
    end_loop(loop);
}

/* A timer restarted with a zero timeout from its own callback fires once
 * per iteration, never twice in a pass (the loop cannot starve); a fresh
 * zero timer started from another's callback waits for the next pass too. */
static void test_zero_restart_next_iteration(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct cb_ctx c = { .mode = RESTART_ZERO };
    kt_timer t;
    start_self(loop, &t, &c, 0);
    for (int i = 1; i <= 10; i++) {
        assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
        assert_int_equal(c.fired_self, i);
    }
    kt_timer_stop(&t);
    kt_loop_free(loop);
}

struct chain_ctx {
    kt_timer a, b;
    int fired_a, fired_b;
};

static void chain_b_cb(kt_timer *t, void *arg)
{
    (void)t;
    struct chain_ctx *c = arg;
    c->fired_b++;
}

static void chain_a_cb(kt_timer *t, void *arg)
{
    (void)t;
    struct chain_ctx *c = arg;
    c->fired_a++;
    assert_int_equal(kt_timer_start(&c->b, 0, 0), 0);
}

static void test_zero_started_in_callback(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct chain_ctx c = { .fired_a = 0 };
    kt_timer_init(loop, &c.a, chain_a_cb, &c);
    kt_timer_init(loop, &c.b, chain_b_cb, &c);
    assert_int_equal(kt_timer_start(&c.a, 0, 0), 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(c.fired_a, 1);
    assert_int_equal(c.fired_b, 0);
    assert_true(kt_timer_active(&c.b));
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(c.fired_b, 1);
    kt_loop_free(loop);
}

struct log_ctx {
    kt_timer *base;
    size_t order[8];
    size_t n;
};

static void log_cb(kt_timer *t, void *arg)
{
    struct log_ctx *c = arg;
    c->order[c->n++] = (size_t)(t - c->base);
}

/* Restarting an armed timer moves it, and it takes a new place among equal
 * deadlines: after the ones started before the restart. */
static void test_restart_moves(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    kt_timer timers[4];
    struct log_ctx c = { .base = timers };
    for (int i = 0; i < 4; i++)
        kt_timer_init(loop, &timers[i], log_cb, &c);
    assert_int_equal(kt_timer_start(&timers[0], KT_SEC(100), 0), 0);
    assert_int_equal(kt_timer_start(&timers[1], 0, 0), 0);
    assert_int_equal(kt_timer_start(&timers[2], 0, 0), 0);
    assert_int_equal(kt_timer_start(&timers[3], 0, 0), 0);
    assert_int_equal(kt_timer_start(&timers[0], 0, 0), 0); /* moved up, after 3 */
    assert_int_equal(kt_timer_start(&timers[1], 0, 0), 0); /* re-armed: after 0 */
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(c.n, 4);
    UNIT_ASSERT_SEQ(c.order, 2, 3, 0, 1);
    end_loop(loop);
}

/* ---- random operations against a model ---------------------------------------------- */

#define RT_N 64

struct rt_model {
    bool armed;
    uint64_t deadline, seq, repeat;
};

struct rt {
    kt_loop *loop;
    kt_timer t[RT_N];
    struct rt_model m[RT_N];
    uint64_t seq;             /* mirrors the heap's: one per start or re-arm */
    uint64_t last_deadline, last_seq;
    uint64_t rng;
    long fires, bad;
};

static uint64_t rt_next(struct rt *r)
{
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    return r->rng * 2685821657736338717ull;
}

static void rt_start(struct rt *r, size_t i)
{
    uint64_t timeout = rt_next(r) % 4 == 0 ? 0 : rt_next(r) % KT_USEC(1500);
    uint64_t repeat = rt_next(r) % 4 == 0 ? KT_USEC(100) + rt_next(r) % KT_USEC(900) : 0;
    assert_int_equal(kt_timer_start(&r->t[i], timeout, repeat), 0);
    r->m[i] = (struct rt_model){ true, kt_loop_now(r->loop) + timeout, r->seq++, repeat };
}

static void rt_stop(struct rt *r, size_t i)
{
    kt_timer_stop(&r->t[i]);
    r->m[i].armed = false;
}

static void rt_cb(kt_timer *t, void *arg)
{
    struct rt *r = arg;
    size_t i = (size_t)(t - r->t);
    struct rt_model *m = &r->m[i];
    uint64_t now = kt_loop_now(r->loop);
    r->fires++;
    if (!m->armed || m->deadline > now)
        r->bad++; /* fired while stopped, or early */
    if (m->deadline < r->last_deadline || (m->deadline == r->last_deadline && m->seq < r->last_seq))
        r->bad++; /* out of (deadline, start order) */
    r->last_deadline = m->deadline;
    r->last_seq = m->seq;
    if (m->repeat) { /* re-armed before this call: on the grid, in the future */
        if (!kt_timer_active(t) || t->deadline <= now || (t->deadline - m->deadline) % m->repeat)
            r->bad++;
        m->deadline = t->deadline;
        m->seq = r->seq++;
    } else {
        if (kt_timer_active(t))
            r->bad++;
        m->armed = false;
    }
    /* then do something to ourselves or to others */
    for (int k = (int)(rt_next(r) % 3); k > 0; k--) {
        size_t j = rt_next(r) % 3 == 0 ? i : rt_next(r) % RT_N;
        if (rt_next(r) % 2)
            rt_start(r, j);
        else
            rt_stop(r, j);
    }
}

/* The model and the heap agree after every iteration. */
static void rt_check(struct rt *r)
{
    size_t armed = 0;
    for (size_t i = 0; i < RT_N; i++) {
        assert_int_equal(kt_timer_active(&r->t[i]), r->m[i].armed);
        armed += r->m[i].armed;
    }
    assert_int_equal(r->loop->timers.len, armed);
}

static void test_random_ops(void **state)
{
    (void)state;
    long fires = 0;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        struct rt *r = calloc(1, sizeof(*r));
        assert_non_null(r);
        r->loop = unit_loop_new();
        r->rng = seed * 0x9e3779b97f4a7c15ull;
        for (size_t i = 0; i < RT_N; i++)
            kt_timer_init(r->loop, &r->t[i], rt_cb, r);
        for (int iter = 0; iter < 100; iter++) {
            for (int k = (int)(rt_next(r) % 4); k > 0; k--) {
                size_t j = rt_next(r) % RT_N;
                if (rt_next(r) % 3)
                    rt_start(r, j);
                else
                    rt_stop(r, j);
            }
            if (r->loop->timers.len == 0)
                rt_start(r, rt_next(r) % RT_N); /* ONCE must have a timer to wait for */
            assert_int_equal(kt_loop_run(r->loop, KT_RUN_ONCE), 0);
            rt_check(r);
        }
        assert_int_equal(r->bad, 0);
        fires += r->fires;
        for (size_t i = 0; i < RT_N; i++)
            rt_stop(r, i);
        rt_check(r);
        kt_loop_free(r->loop);
        free(r);
    }
    assert_true(fires > 1000);
}

/* ---- allocation failure ------------------------------------------------------------ */

static long alloc_budget = -1; /* allocations left; -1 = unlimited */
static int alloc_failures;

static bool alloc_ok(void)
{
    if (alloc_budget < 0)
        return true;
    if (alloc_budget == 0) {
        alloc_failures++;
        return false;
    }
    alloc_budget--;
    return true;
}
static void *fail_malloc(size_t n) { return alloc_ok() ? malloc(n) : NULL; }
static void *fail_realloc(void *p, size_t n) { return alloc_ok() ? realloc(p, n) : NULL; }

struct count_ctx {
    int fired;
    int want;
    bool done;
};

static void count_cb(kt_timer *t, void *arg)
{
    (void)t;
    struct count_ctx *c = arg;
    if (++c->fired == c->want)
        c->done = true;
}

/* With growth of the heap array failing after `budget` successes,
 * kt_timer_start says -ENOMEM and leaves the timer idle; re-arming an armed
 * timer needs no memory; every timer that was armed fires exactly once. */
static void test_alloc_failure(void **state)
{
    (void)state;
    enum { N = 5000 }; /* the array grows 64 -> 8192: seven allocations */
    for (long budget = 0; budget < 6; budget++) {
        kt_loop *loop = unit_loop_new();
        kt_timer *timers = calloc(N, sizeof(*timers));
        int *fired = calloc(N, sizeof(*fired));
        assert_non_null(timers);
        assert_non_null(fired);
        struct count_ctx c = { .want = 0 };

        kt_set_allocator(&(kt_allocator){ fail_malloc, fail_realloc, NULL });
        alloc_budget = budget;
        alloc_failures = 0;
        int started = 0, refused = -1;
        for (int i = 0; i < N; i++) {
            kt_timer_init(loop, &timers[i], count_cb, &c);
            int rc = kt_timer_start(&timers[i], KT_MSEC(1), 0);
            if (rc == 0) {
                started++;
                continue;
            }
            assert_int_equal(rc, -ENOMEM);
            assert_false(kt_timer_active(&timers[i]));
            if (refused < 0)
                refused = i;
        }
        assert_true(refused >= 0); /* the heap had to grow past the budget */
        assert_true(alloc_failures > 0);
        /* re-arming an armed timer cannot fail */
        if (started > 0)
            assert_int_equal(kt_timer_start(&timers[0], KT_MSEC(1), 0), 0);
        alloc_budget = -1;
        kt_set_allocator(NULL);

        c.want = started;
        if (started > 0)
            run_until(loop, &c.done, KT_SEC(5));
        assert_int_equal(c.fired, started);
        assert_int_equal(loop->timers.len, 0);
        kt_loop_free(loop);
        free(timers);
        free(fired);
    }
}

int main(void)
{

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_many),
        cmocka_unit_test(test_cancel_half),
        cmocka_unit_test(test_repeat_no_drift),
        cmocka_unit_test(test_repeat_skips_when_behind),
        cmocka_unit_test(test_stop_self),
        cmocka_unit_test(test_stop_other_same_pass),
        cmocka_unit_test(test_free_self),
        cmocka_unit_test(test_zero_restart_next_iteration),
        cmocka_unit_test(test_zero_started_in_callback),
        cmocka_unit_test(test_restart_moves),
        cmocka_unit_test(test_random_ops),
        cmocka_unit_test(test_alloc_failure),
    };
    return unit_run_backend_tests(tests, NULL, NULL);
}
