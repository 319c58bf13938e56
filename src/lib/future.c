/*
 * future.c - callback-driven futures: their life cycle, settling,
 * continuations and the loop's ready queue (the combinators are in
 * future-comb.c).
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
 */
#include "config.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "future-internal.h"

/* Free lists keep at most this many (beyond, memory goes back to malloc). */
#define KT__FREE_FUTURES_MAX 16384
#define KT__FREE_CONTS_MAX 16384

/* Recycle node: onto the free list at head (n long) while it is below cap,
 * else back to the allocator. Futures and continuation nodes alike. */
#define FREE_LIST_PUT(head, n, cap, node)                          \
    do {                                                           \
        if ((n) < (cap)) {                                         \
            (node)->next = (head);                                 \
            (head) = (node);                                       \
            (n)++;                                                 \
        } else {                                                   \
            kt_free(node);                                         \
        }                                                          \
    } while (0)

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
    FREE_LIST_PUT(m->free_conts, m->nfree_conts, KT__FREE_CONTS_MAX, c);
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
        kt__comb_release(f);
    m->live--;
    FREE_LIST_PUT(m->free_list, m->nfree, KT__FREE_FUTURES_MAX, f);
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
    kt__future_settled(f);
    return 0;
}

/* Settle with an integer (nothing to free). 0 or -EALREADY. */
int kt_future_resolve_i64(kt_future *f, int64_t v)
{
    if (f->state != KT_FUTURE_PENDING)
        return -EALREADY;
    f->state = KT_FUTURE_RESOLVED;
    f->i64 = v;
    kt__future_settled(f);
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
    kt__future_settled(f);
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
    kt__future_append(&m->cancel_head, &m->cancel_tail, f);
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
        kt__future_settled(f);
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
int kt__future_cont_add(kt_future *f, struct kt__cont *node, kt_future_cb cb, void *arg)
{
    bool held = kt__future_has_conts(f) || (f->flags & KT__F_QUEUED);
    if (!kt__future_has_conts(f)) {
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
        kt__future_enqueue(f->loop->futures, f);
    return 0;
}

/* Public registration: may need a node. 0, -EINVAL (no cb) or -ENOMEM. */
int kt_future_then(kt_future *f, kt_future_cb cb, void *arg)
{
    if (cb == NULL)
        return -EINVAL;
    return kt__future_cont_add(f, NULL, cb, arg);
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
