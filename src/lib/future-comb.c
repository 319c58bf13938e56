/*
 * future-comb.c - the combinators: all (gather), race (first success
 * wins), timeout, chain (then a step's future) and sequence (one after
 * another).
 *
 * Each keeps its state in a struct kt__comb hung off its own future. Each
 * input has an item with an embedded continuation node, so once a
 * combinator is created nothing it does later can fail for lack of
 * memory. Each continuation registered on an input holds a reference on
 * the combinator's future, which therefore lives until every input it
 * watches has settled and been seen. Cancelling a combinator cancels the
 * inputs still pending; recycling it drops them (future.c does both
 * through work lists, so nesting depth never becomes stack depth).
 */
#include "config.h"
#include <errno.h>
#include <string.h>
#include "future-internal.h"

/* A combinator future with nitems empty items; NULL on ENOMEM. */
static kt_future *comb_new(kt_loop *loop, enum kt__fkind kind, size_t n, size_t nitems)
{
    if (nitems > (SIZE_MAX - sizeof(struct kt__comb)) / sizeof(struct kt__item))
        return NULL;
    kt_future *self = kt_future_new(loop);
    if (self == NULL)
        return NULL;
    struct kt__comb *c = kt_malloc(sizeof(*c) + nitems * sizeof(struct kt__item));
    if (c == NULL) {
        kt_future_unref(self);
        return NULL;
    }
    memset(c, 0, sizeof(*c));
    c->self = self;
    c->n = n;
    c->nitems = nitems;
    c->winner = SIZE_MAX;
    for (size_t i = 0; i < nitems; i++)
        c->items[i] = (struct kt__item){ .node.embedded = true, .c = c };
    self->kind = (uint8_t)kind;
    self->comb = c;
    return self;
}

/* Drop the inputs and the state (at recycle of the combinator's future). */
void kt__comb_release(kt_future *self)
{
    struct kt__comb *c = self->comb;
    self->comb = NULL;
    if (self->kind == KT__K_TIMEOUT && c->u.to.timer.loop)
        kt_timer_stop(&c->u.to.timer); /* idle by now; cheap insurance */
    for (size_t i = 0; i < c->nitems; i++)
        if (c->items[i].f)
            kt_future_unref(c->items[i].f);
    kt_free(c);
}

/* Watch item i: cb runs once its future settles; holds a reference on the
 * combinator's future until then. Cannot fail (embedded node). */
static void comb_watch(struct kt__comb *c, size_t i, kt_future_cb cb)
{
    struct kt__item *it = &c->items[i];
    c->self->refs++;
    (void)kt__future_cont_add(it->f, &it->node, cb, it);
}

/* Producer hook of every combinator: cancel what is still pending (and
 * stop a timeout's timer). */
static void comb_cancel_cb(kt_future *self, void *arg)
{
    struct kt__comb *c = arg;
    if (self->kind == KT__K_TIMEOUT)
        kt_timer_stop(&c->u.to.timer);
    for (size_t i = 0; i < c->nitems; i++)
        if (c->items[i].f && c->items[i].f->state == KT_FUTURE_PENDING)
            (void)kt_future_cancel(c->items[i].f);
}

/* Inputs fs[0..n) become items 0..n-1 (a reference taken on each), the
 * cancel hook is set, and each is watched by cb. Cannot fail. */
static void comb_start(kt_future *self, kt_future *const *fs, size_t n, kt_future_cb cb)
{
    struct kt__comb *c = self->comb;
    for (size_t i = 0; i < n; i++) {
        c->items[i].f = fs[i];
        fs[i]->refs++;
    }
    kt_future_on_cancel(self, comb_cancel_cb, c);
    for (size_t i = 0; i < n; i++)
        comb_watch(c, i, cb);
}

/* Input i is g, which a step or start callback returned (its reference
 * passes to the combinator): watched by cb while the combinator is
 * pending, else cancelled (the callback settled it, cancelling it say). */
static void comb_follow(struct kt__comb *c, size_t i, kt_future *g, kt_future_cb cb)
{
    c->items[i].f = g;
    if (c->self->state == KT_FUTURE_PENDING)
        comb_watch(c, i, cb);
    else
        (void)kt_future_cancel(g);
}

/* Settle self as src is settled. The value and message are borrowed: the
 * combinator keeps src referenced for as long as it lives. */
static void forward(kt_future *self, const kt_future *src)
{
    if (self->state != KT_FUTURE_PENDING)
        return;
    self->state = src->state;
    switch (src->state) {
    case KT_FUTURE_RESOLVED:
        self->value = src->value;
        self->i64 = src->i64;
        break;
    case KT_FUTURE_FAILED:
        self->err = src->err;
        self->msg = src->msg;
        break;
    default:
        self->err = -ECANCELED;
        break;
    }
    kt__future_settled(self);
}

/* A combinator of kind over fs[0..n), each watched by cb (none when n is
 * 0: the caller settles it). NULL on ENOMEM or a NULL input (the caller's
 * own allocation failed), with nothing taken or registered. */
static kt_future *comb_over(kt_loop *loop, enum kt__fkind kind, kt_future *const *fs, size_t n,
                            kt_future_cb cb)
{
    for (size_t i = 0; i < n; i++)
        if (fs[i] == NULL)
            return NULL;
    kt_future *self = comb_new(loop, kind, n, n);
    if (self) {
        self->comb->left = n;
        comb_start(self, fs, n, cb);
    }
    return self;
}

/* all: count settled inputs, resolve at the last one. */
static void all_item_cb(kt_future *f, void *arg)
{
    struct kt__item *it = arg;
    struct kt__comb *c = it->c;
    kt_future *self = c->self;
    if (--c->left == 0)
        (void)kt_future_resolve(self, NULL, NULL);
    kt_future_unref(self); /* may free c and it */
}

/* Gather fs[0..n): one watch per input; nothing to wait for resolves. */
kt_future *kt_all(kt_loop *loop, kt_future *const *fs, size_t n)
{
    kt_future *self = comb_over(loop, KT__K_ALL, fs, n, all_item_cb);
    if (self && n == 0)
        (void)kt_future_resolve(self, NULL, NULL);
    return self;
}

/* Inputs of an all or sequence future, 0 for any other. */
size_t kt_all_count(const kt_future *all)
{
    if (all->kind != KT__K_ALL && all->kind != KT__K_SEQ)
        return 0;
    return all->comb->n;
}

/* Input i (borrowed); NULL out of range, for other futures, or for a
 * sequence item never started (the sequence was cancelled first). */
kt_future *kt_all_item(const kt_future *all, size_t i)
{
    if ((all->kind != KT__K_ALL && all->kind != KT__K_SEQ) || i >= all->comb->n)
        return NULL;
    return all->comb->items[i].f;
}

/* race: the first success wins and cancels the rest; the last of n
 * failures fails the race with its error. */
static void race_item_cb(kt_future *f, void *arg)
{
    struct kt__item *it = arg;
    struct kt__comb *c = it->c;
    kt_future *self = c->self;
    if (self->state == KT_FUTURE_PENDING) {
        if (f->state == KT_FUTURE_RESOLVED) {
            c->winner = (size_t)(it - c->items);
            forward(self, f);
            for (size_t i = 0; i < c->n; i++)
                if (c->items[i].f->state == KT_FUTURE_PENDING)
                    (void)kt_future_cancel(c->items[i].f);
        } else if (--c->left == 0) {
            self->state = KT_FUTURE_FAILED;
            self->err = kt_future_error(f);
            self->msg = f->state == KT_FUTURE_FAILED ? f->msg : NULL;
            kt__future_settled(self);
        }
    }
    kt_future_unref(self);
}

/* A race of nothing fails at once with -EINVAL: no input can ever win. */
kt_future *kt_race(kt_loop *loop, kt_future *const *fs, size_t n)
{
    kt_future *self = comb_over(loop, KT__K_RACE, fs, n, race_item_cb);
    if (self && n == 0)
        (void)kt_future_fail(self, -EINVAL, "race of no futures");
    return self;
}

/* Index of the input whose value the race took, or SIZE_MAX. */
size_t kt_race_winner(const kt_future *race)
{
    return race->kind == KT__K_RACE ? race->comb->winner : SIZE_MAX;
}

/* timeout: the inner future settled first (or the timeout was settled some
 * other way): the timer has no more business. */
static void timeout_item_cb(kt_future *f, void *arg)
{
    struct kt__item *it = arg;
    struct kt__comb *c = it->c;
    kt_future *self = c->self;
    kt_timer_stop(&c->u.to.timer);
    forward(self, f);
    kt_future_unref(self);
}

/* The deadline passed first: fail, then cancel the inner future (whose
 * continuation, run later, only drops its reference). */
static void timeout_timer_cb(kt_timer *t, void *arg)
{
    struct kt__comb *c = arg;
    kt_future *self = c->self;
    (void)t;
    if (self->state != KT_FUTURE_PENDING)
        return;
    uint64_t ns = c->u.to.ns;
    if (ns % KT_MSEC(1) == 0)
        (void)kt_future_fail(self, -ETIMEDOUT, "timed out after %llu ms", (unsigned long long)(ns / KT_MSEC(1)));
    else
        (void)kt_future_fail(self, -ETIMEDOUT, "timed out after %.3f ms", (double)ns / 1e6);
    (void)kt_future_cancel(c->items[0].f);
}

/* f with a deadline: a timer in the combinator's state, armed now (so
 * this may fail with ENOMEM if the timer array cannot grow: NULL). */
kt_future *kt_timeout(kt_future *f, uint64_t timeout_ns)
{
    if (f == NULL)
        return NULL;
    kt_future *self = comb_new(f->loop, KT__K_TIMEOUT, 0, 1);
    if (self == NULL)
        return NULL;
    struct kt__comb *c = self->comb;
    c->u.to.ns = timeout_ns;
    kt_timer_init(f->loop, &c->u.to.timer, timeout_timer_cb, c);
    if (kt_timer_start(&c->u.to.timer, timeout_ns, 0) < 0) {
        kt_future_unref(self);
        return NULL;
    }
    comb_start(self, &f, 1, timeout_item_cb);
    return self;
}

/* chain: item 0 is f, item 1 the step's future. */
static void chain_item_cb(kt_future *f, void *arg)
{
    struct kt__item *it = arg;
    struct kt__comb *c = it->c;
    kt_future *self = c->self;
    if (it == &c->items[1]) {
        forward(self, f);
    } else if (self->state == KT_FUTURE_PENDING) {
        kt_future *next = c->u.chain.step(f, c->u.chain.arg);
        if (next == NULL)
            (void)kt_future_fail(self, -ENOMEM, NULL);
        else
            comb_follow(c, 1, next, chain_item_cb);
    }
    kt_future_unref(self);
}

/* f, then step's future; the step runs from the loop, never in here. */
kt_future *kt_then_chain(kt_future *f, kt_step_cb step, void *arg)
{
    if (f == NULL || step == NULL)
        return NULL;
    kt_future *self = comb_new(f->loop, KT__K_CHAIN, 0, 2);
    if (self == NULL)
        return NULL;
    struct kt__comb *c = self->comb;
    c->u.chain.step = step;
    c->u.chain.arg = arg;
    comb_start(self, &f, 1, chain_item_cb);
    return self;
}

/* sequence: items[0..n) are the started futures, items[n] a resolved
 * "kick" future whose continuation starts item 0 from the loop (start must
 * not run inside kt_sequence). Each item's continuation starts the next. */
static void seq_item_cb(kt_future *f, void *arg)
{
    struct kt__item *it = arg;
    struct kt__comb *c = it->c;
    kt_future *self = c->self;
    (void)f;
    if (self->state == KT_FUTURE_PENDING) {
        if (c->left == c->n) {
            (void)kt_future_resolve(self, NULL, NULL);
        } else {
            size_t i = c->left++;
            kt_future *g = c->u.seq.start(i, c->u.seq.arg);
            if (g == NULL) { /* that item fails with -ENOMEM */
                g = self->loop->futures->oom;
                g->refs++;
            }
            comb_follow(c, i, g, seq_item_cb);
        }
    }
    kt_future_unref(self);
}

/* n items started one after another from the loop. NULL on ENOMEM. */
kt_future *kt_sequence(kt_loop *loop, size_t n, kt_seq_cb start, void *arg)
{
    if (start == NULL || n == SIZE_MAX)
        return NULL;
    kt_future *self = comb_new(loop, KT__K_SEQ, n, n + 1);
    if (self == NULL)
        return NULL;
    struct kt__comb *c = self->comb;
    c->u.seq.start = start;
    c->u.seq.arg = arg;
    if (n == 0) {
        (void)kt_future_resolve(self, NULL, NULL);
        return self;
    }
    kt_future *kick = kt_future_new(loop);
    if (kick == NULL) {
        kt_future_unref(self);
        return NULL;
    }
    (void)kt_future_resolve(kick, NULL, NULL);
    c->items[n].f = kick;
    kt_future_on_cancel(self, comb_cancel_cb, c);
    comb_watch(c, n, seq_item_cb);
    return self;
}
