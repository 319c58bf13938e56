/*
 * future.c - callback-driven futures and their combinators.
 *
 * A future is recycled through a per-loop free list. Continuations live in
 * one inline slot (the common single-subscriber case needs no node) followed
 * by a FIFO of nodes, also from a free list. Settling never runs anything:
 * it appends the future to the loop's ready queue, and kt__futures_run
 * drains that queue from the loop, one future at a time, until it is empty:
 *
 *   resolve(f) ──▶ ready: [f1]─[f2]─[f]        kt__futures_run:
 *                                              pop f1, run its continuations
 *   then(g) on a settled g ──▶ ... ─[g]        (they may settle f3: appended)
 *                                              pop f2 ...
 *
 * so chains of any length run on a flat stack. While a future has
 * continuations registered or is being drained it holds one reference of its
 * own (the "continuation reference"), so a continuation may drop the last
 * user reference of the future it runs on.
 *
 * Releases and cancellations also use work lists instead of recursion:
 * recycling a combinator drops its inputs, cancelling one cancels its
 * inputs, and nesting depth must not become stack depth.
 *
 * Combinators (all, race, timeout, chain, sequence) keep their state in a
 * struct kt__comb hung off their own future. Each input has an item with an
 * embedded continuation node, so once a combinator is created nothing it
 * does later can fail for lack of memory. Each continuation registered on an
 * input holds a reference on the combinator's future, which therefore lives
 * until every input it watches has settled and been seen.
 */
#include "config.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "internal.h"

/* Free lists keep at most this many (beyond, memory goes back to malloc). */
#define KT__FREE_FUTURES_MAX 16384
#define KT__FREE_CONTS_MAX 16384

/* A continuation beyond the inline one. */
struct kt__cont {
    struct kt__cont *next;
    kt_future_cb cb;
    void *arg;
    bool embedded; /* part of a combinator's state: not ours to recycle */
};

enum {
    KT__F_QUEUED = 0x01,    /* on the ready queue or being drained */
    KT__F_MSG_OWNED = 0x02, /* msg is ours to free (else borrowed from an input) */
    KT__F_CANCELLING = 0x04, /* on the cancel list: next is taken, queue it later */
};

enum kt__fkind { KT__K_PLAIN = 0, KT__K_ALL, KT__K_RACE, KT__K_TIMEOUT, KT__K_CHAIN, KT__K_SEQ };

struct kt_future {
    kt_loop *loop;
    uint32_t refs;
    uint8_t state;          /* kt_future_state */
    uint8_t kind;           /* enum kt__fkind */
    uint8_t flags;          /* KT__F_* */
    int err;                /* failed: negative errno */
    void *value;            /* resolved: pointer value (or forwarded) */
    int64_t i64;            /* resolved: integer value (or forwarded) */
    kt_free_cb dtor;        /* frees value at recycle */
    const char *msg;        /* failed: message, NULL for strerror */
    kt_cancel_cb cancel_cb; /* producer hook, pending futures only */
    void *cancel_arg;
    kt_future_cb cb0;       /* inline continuation, runs before the list */
    void *arg0;
    struct kt__cont *head, *tail;
    kt_future *next;        /* ready queue, cancel list, dying list or free list */
    struct kt__comb *comb;  /* combinator state, NULL for a plain future */
};

/* One input of a combinator. */
struct kt__item {
    struct kt__cont node;   /* our continuation on f */
    kt_future *f;           /* owned reference; NULL until started (sequence) */
    struct kt__comb *c;
};

struct kt__comb {
    kt_future *self;        /* the combinator's future (not a reference) */
    size_t n;               /* inputs visible through kt_all_item */
    size_t nitems;          /* items[] allocated (n, or more for internals) */
    size_t left;            /* all: unsettled; race: not yet failed; seq: next to start */
    size_t winner;          /* race */
    union {
        struct { kt_timer timer; uint64_t ns; } to;
        struct { kt_step_cb step; void *arg; } chain;
        struct { kt_seq_cb start; void *arg; } seq;
    } u;
    struct kt__item items[];
};

struct kt__futures {
    kt_future *ready_head, *ready_tail;
    kt_future *cancel_head, *cancel_tail; /* cancelled, hook not yet run */
    kt_future *dying;                      /* refs hit zero, not yet recycled */
    bool cancelling, releasing;
    kt_future *free_list;
    size_t nfree;
    struct kt__cont *free_conts;
    size_t nfree_conts;
    uint64_t live;
    kt_future *oom; /* permanent, failed with -ENOMEM: stands in for a future
                     * that could not be allocated (a sequence item) */
};

static void comb_release(kt_future *self);

/* ---- the loop's side ------------------------------------------------------- */

/* The module's state and its permanent out-of-memory future. 0 or -ENOMEM. */
int kt__futures_init(kt_loop *loop)
{
    struct kt__futures *m = kt_calloc(1, sizeof(*m));
    kt_future *oom = kt_malloc(sizeof(*oom));
    if (m == NULL || oom == NULL) {
        kt_free(m);
        kt_free(oom);
        return -ENOMEM;
    }
    *oom = (kt_future){ .loop = loop, .refs = 1, .state = KT_FUTURE_FAILED, .err = -ENOMEM };
    m->oom = oom;
    loop->futures = m;
    return 0;
}

/* Free the free lists. Futures still live (a leak in the caller) are
 * reported, not freed: nobody knows where they are. */
void kt__futures_destroy(kt_loop *loop)
{
    struct kt__futures *m = loop->futures;
    if (m == NULL)
        return;
    if (m->live)
        kt_log_warning("loop freed with %llu futures still referenced", (unsigned long long)m->live);
    for (kt_future *f = m->free_list, *next; f; f = next) {
        next = f->next;
        kt_free(f);
    }
    for (struct kt__cont *c = m->free_conts, *next; c; c = next) {
        next = c->next;
        kt_free(c);
    }
    kt_free(m->oom);
    kt_free(m);
    loop->futures = NULL;
}

/* Futures handed out and not yet recycled (the permanent one excluded). */
uint64_t kt__futures_live(const kt_loop *loop)
{
    return loop->futures ? loop->futures->live : 0;
}

/* Continuations are queued: the loop must not block in its poll. */
bool kt__futures_ready(const kt_loop *loop)
{
    return loop->futures && loop->futures->ready_head != NULL;
}

/* A continuation node from the free list or the allocator; NULL on ENOMEM. */
static struct kt__cont *cont_get(struct kt__futures *m)
{
    struct kt__cont *c = m->free_conts;
    if (c) {
        m->free_conts = c->next;
        m->nfree_conts--;
        return c;
    }
    return kt_malloc(sizeof(*c));
}

/* Back to the free list, or to the allocator beyond its cap. */
static void cont_put(struct kt__futures *m, struct kt__cont *c)
{
    if (m->nfree_conts < KT__FREE_CONTS_MAX) {
        c->next = m->free_conts;
        m->free_conts = c;
        m->nfree_conts++;
    } else {
        kt_free(c);
    }
}

/* Drain the ready queue. A future's continuations run in registration
 * order, including ones added while it drains; then its continuation
 * reference is dropped (which may recycle it). Returns continuations run. */
size_t kt__futures_run(kt_loop *loop)
{
    struct kt__futures *m = loop->futures;
    size_t n = 0;
    kt_future *f;

    while ((f = m->ready_head) != NULL) {
        m->ready_head = f->next;
        if (m->ready_head == NULL)
            m->ready_tail = NULL;
        f->next = NULL;
        for (;;) {
            kt_future_cb cb;
            void *arg;
            if (f->cb0) {
                cb = f->cb0;
                arg = f->arg0;
                f->cb0 = NULL;
            } else if (f->head) {
                struct kt__cont *c = f->head;
                f->head = c->next;
                if (f->head == NULL)
                    f->tail = NULL;
                cb = c->cb;
                arg = c->arg;
                if (!c->embedded)
                    cont_put(m, c);
            } else {
                break;
            }
            cb(f, arg);
            n++;
        }
        f->flags &= (uint8_t)~KT__F_QUEUED;
        kt_future_unref(f);
    }
    return n;
}

/* ---- life cycle ------------------------------------------------------------- */

/* A pending future from the free list (or the allocator) with one
 * reference, the caller's. NULL on ENOMEM. */
kt_future *kt_future_new(kt_loop *loop)
{
    struct kt__futures *m = loop->futures;
    kt_future *f = m->free_list;
    if (f) {
        m->free_list = f->next;
        m->nfree--;
    } else if ((f = kt_malloc(sizeof(*f))) == NULL) {
        return NULL;
    }
    *f = (kt_future){ .loop = loop, .refs = 1 };
    m->live++;
    return f;
}

/* One more reference; each is dropped with kt_future_unref. */
void kt_future_ref(kt_future *f)
{
    f->refs++;
}

/* Free what f owns and put it on the free list. */
static void recycle(struct kt__futures *m, kt_future *f)
{
    if (f->dtor && f->value)
        f->dtor(f->value);
    if (f->flags & KT__F_MSG_OWNED)
        kt_free((char *)f->msg);
    if (f->comb)
        comb_release(f);
    m->live--;
    if (m->nfree < KT__FREE_FUTURES_MAX) {
        f->next = m->free_list;
        m->free_list = f;
        m->nfree++;
    } else {
        kt_free(f);
    }
}

/* At zero, f joins the dying list; the outermost release drains it, so a
 * destructor or a combinator dropping its inputs never recurses. */
void kt_future_unref(kt_future *f)
{
    if (--f->refs > 0)
        return;
    struct kt__futures *m = f->loop->futures;
    f->next = m->dying;
    m->dying = f;
    if (m->releasing)
        return;
    m->releasing = true;
    while ((f = m->dying) != NULL) {
        m->dying = f->next;
        recycle(m, f);
    }
    m->releasing = false;
}

/* ---- settling ------------------------------------------------------------------ */

/* Any continuation waiting to run (inline or in the list)? */
static inline bool has_conts(const kt_future *f)
{
    return f->cb0 != NULL || f->head != NULL;
}

/* Append f to the ready queue; the caller checked it is not there yet. */
static inline void enqueue(struct kt__futures *m, kt_future *f)
{
    f->flags |= KT__F_QUEUED;
    f->next = NULL;
    if (m->ready_tail)
        m->ready_tail->next = f;
    else
        m->ready_head = f;
    m->ready_tail = f;
}

/* f has just left PENDING: queue its continuations, forget its hook. */
static inline void settled(kt_future *f)
{
    f->cancel_cb = NULL;
    if (has_conts(f) && !(f->flags & KT__F_QUEUED))
        enqueue(f->loop->futures, f);
}

/* Settle with value (owned by f from now, freed with dtor at recycle; a
 * rejected value is freed at once). 0 or -EALREADY. */
int kt_future_resolve(kt_future *f, void *value, kt_free_cb dtor)
{
    if (f->state != KT_FUTURE_PENDING) {
        if (dtor && value)
            dtor(value);
        return -EALREADY;
    }
    f->state = KT_FUTURE_RESOLVED;
    f->value = value;
    f->dtor = dtor;
    settled(f);
    return 0;
}

/* Settle with an integer (nothing to free). 0 or -EALREADY. */
int kt_future_resolve_i64(kt_future *f, int64_t v)
{
    if (f->state != KT_FUTURE_PENDING)
        return -EALREADY;
    f->state = KT_FUTURE_RESOLVED;
    f->i64 = v;
    settled(f);
    return 0;
}

/* The message is formatted into its own allocation; when that fails the
 * error still stands and kt_future_errmsg falls back to strerror. A
 * non-negative err is normalised (a failure must carry an error). */
int kt_future_fail(kt_future *f, int err, const char *fmt, ...)
{
    if (f->state != KT_FUTURE_PENDING)
        return -EALREADY;
    f->state = KT_FUTURE_FAILED;
    f->err = err < 0 ? err : err > 0 ? -err : -EIO;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        int len = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        char *msg = len >= 0 ? kt_malloc((size_t)len + 1) : NULL;
        if (msg) {
            va_start(ap, fmt);
            vsnprintf(msg, (size_t)len + 1, fmt, ap);
            va_end(ap);
            f->msg = msg;
            f->flags |= KT__F_MSG_OWNED;
        }
    }
    settled(f);
    return 0;
}

/*
 * Mark f cancelled, run its producer hook, queue its continuations. A hook
 * that cancels further futures (a combinator cancelling its inputs) only
 * queues them on the cancel list: the outermost call runs the hooks in
 * order before it returns, so deep nesting never deepens the stack.
 */
int kt_future_cancel(kt_future *f)
{
    if (f->state != KT_FUTURE_PENDING)
        return -EALREADY;
    struct kt__futures *m = f->loop->futures;
    f->state = KT_FUTURE_CANCELLED;
    f->err = -ECANCELED;
    f->refs++; /* until its hook has run */
    f->flags |= KT__F_CANCELLING;
    f->next = NULL;
    if (m->cancel_tail)
        m->cancel_tail->next = f;
    else
        m->cancel_head = f;
    m->cancel_tail = f;
    if (m->cancelling)
        return 0;
    m->cancelling = true;
    while ((f = m->cancel_head) != NULL) {
        m->cancel_head = f->next;
        if (m->cancel_head == NULL)
            m->cancel_tail = NULL;
        f->flags &= (uint8_t)~KT__F_CANCELLING;
        kt_cancel_cb cb = f->cancel_cb;
        f->cancel_cb = NULL;
        if (cb)
            cb(f, f->cancel_arg);
        settled(f);
        kt_future_unref(f);
    }
    m->cancelling = false;
    return 0;
}

/* The producer's hook; replaces any earlier one. Combinators set their own
 * on the futures they return. */
void kt_future_on_cancel(kt_future *f, kt_cancel_cb cb, void *arg)
{
    f->cancel_cb = cb;
    f->cancel_arg = arg;
}

/* Register cb(f, arg). The inline slot is used only when no continuation
 * is waiting, so order is registration order. node, if given, is used
 * instead of allocating one (combinators): then this cannot fail. */
static int cont_add(kt_future *f, struct kt__cont *node, kt_future_cb cb, void *arg)
{
    bool held = has_conts(f) || (f->flags & KT__F_QUEUED);
    if (!has_conts(f)) {
        f->cb0 = cb;
        f->arg0 = arg;
    } else {
        if (node == NULL) {
            if ((node = cont_get(f->loop->futures)) == NULL)
                return -ENOMEM;
            node->embedded = false;
        }
        node->next = NULL;
        node->cb = cb;
        node->arg = arg;
        if (f->tail)
            f->tail->next = node;
        else
            f->head = node;
        f->tail = node;
    }
    if (!held)
        f->refs++; /* the continuation reference */
    /* a future still on the cancel list is queued once its hook has run */
    if (f->state != KT_FUTURE_PENDING && !(f->flags & (KT__F_QUEUED | KT__F_CANCELLING)))
        enqueue(f->loop->futures, f);
    return 0;
}

/* Public registration: may need a node. 0, -EINVAL (no cb) or -ENOMEM. */
int kt_future_then(kt_future *f, kt_future_cb cb, void *arg)
{
    if (cb == NULL)
        return -EINVAL;
    return cont_add(f, NULL, cb, arg);
}

/* ---- accessors ------------------------------------------------------------------ */

/* Accessors: borrowed views, valid while the caller holds a reference. */
kt_future_state kt_future_state_of(const kt_future *f)
{
    return (kt_future_state)f->state;
}

kt_loop *kt_future_loop(const kt_future *f)
{
    return f->loop;
}

void *kt_future_value(const kt_future *f)
{
    return f->state == KT_FUTURE_RESOLVED ? f->value : NULL;
}

int64_t kt_future_i64(const kt_future *f)
{
    return f->state == KT_FUTURE_RESOLVED ? f->i64 : 0;
}

int kt_future_error(const kt_future *f)
{
    if (f->state == KT_FUTURE_FAILED)
        return f->err;
    if (f->state == KT_FUTURE_CANCELLED)
        return -ECANCELED;
    return 0;
}

const char *kt_future_errmsg(const kt_future *f)
{
    if (f->state != KT_FUTURE_FAILED)
        return NULL;
    return f->msg ? f->msg : strerror(-f->err);
}

/* ---- combinators ------------------------------------------------------------------ */

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
static void comb_release(kt_future *self)
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
    (void)cont_add(it->f, &it->node, cb, it);
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
    settled(self);
}

/* True if any input is NULL (the caller's own allocation failed). */
static bool any_null(kt_future *const *fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fs[i] == NULL)
            return true;
    return false;
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

/* Gather fs[0..n): references taken, one watch per input. NULL on ENOMEM
 * (or a NULL input), with nothing taken or registered. */
kt_future *kt_all(kt_loop *loop, kt_future *const *fs, size_t n)
{
    if (any_null(fs, n))
        return NULL;
    kt_future *self = comb_new(loop, KT__K_ALL, n, n);
    if (self == NULL)
        return NULL;
    struct kt__comb *c = self->comb;
    c->left = n;
    if (n == 0) {
        (void)kt_future_resolve(self, NULL, NULL);
        return self;
    }
    for (size_t i = 0; i < n; i++) {
        c->items[i].f = fs[i];
        fs[i]->refs++;
    }
    kt_future_on_cancel(self, comb_cancel_cb, c);
    for (size_t i = 0; i < n; i++)
        comb_watch(c, i, all_item_cb);
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
            settled(self);
        }
    }
    kt_future_unref(self);
}

/* A race of nothing fails at once with -EINVAL: no input can ever win. */
kt_future *kt_race(kt_loop *loop, kt_future *const *fs, size_t n)
{
    if (any_null(fs, n))
        return NULL;
    kt_future *self = comb_new(loop, KT__K_RACE, n, n);
    if (self == NULL)
        return NULL;
    struct kt__comb *c = self->comb;
    c->left = n;
    if (n == 0) {
        (void)kt_future_fail(self, -EINVAL, "race of no futures");
        return self;
    }
    for (size_t i = 0; i < n; i++) {
        c->items[i].f = fs[i];
        fs[i]->refs++;
    }
    kt_future_on_cancel(self, comb_cancel_cb, c);
    for (size_t i = 0; i < n; i++)
        comb_watch(c, i, race_item_cb);
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
    c->items[0].f = f;
    f->refs++;
    kt_future_on_cancel(self, comb_cancel_cb, c);
    comb_watch(c, 0, timeout_item_cb);
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
        if (next == NULL) {
            (void)kt_future_fail(self, -ENOMEM, NULL);
        } else {
            c->items[1].f = next; /* the step's reference passes to us */
            if (self->state == KT_FUTURE_PENDING)
                comb_watch(c, 1, chain_item_cb);
            else /* the step cancelled the chain */
                (void)kt_future_cancel(next);
        }
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
    c->items[0].f = f;
    f->refs++;
    kt_future_on_cancel(self, comb_cancel_cb, c);
    comb_watch(c, 0, chain_item_cb);
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
            c->items[i].f = g;
            if (self->state == KT_FUTURE_PENDING)
                comb_watch(c, i, seq_item_cb);
            else /* start cancelled the sequence */
                (void)kt_future_cancel(g);
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
