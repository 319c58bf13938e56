/*
 * future-internal.h - what future.c (futures, their continuations and the
 * loop's ready queue) and future-comb.c (the combinators) share: the
 * structures and the inline steps of settling. Nothing else includes it.
 */
#ifndef KETTLE_FUTURE_INTERNAL_H
#define KETTLE_FUTURE_INTERNAL_H

#include "internal.h"

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

/* ---- settling (inline: on every resolve) ------------------------------------ */

/* Any continuation waiting to run (inline or in the list)? */
static inline bool kt__future_has_conts(const kt_future *f)
{
    return f->cb0 != NULL || f->head != NULL;
}

/* Append f to a FIFO of futures linked through next (the ready queue,
 * the cancel list). */
static inline void kt__future_append(kt_future **head, kt_future **tail, kt_future *f)
{
    f->next = NULL;
    if (*tail)
        (*tail)->next = f;
    else
        *head = f;
    *tail = f;
}

/* Append f to the ready queue; the caller checked it is not there yet. */
static inline void kt__future_enqueue(struct kt__futures *m, kt_future *f)
{
    f->flags |= KT__F_QUEUED;
    kt__future_append(&m->ready_head, &m->ready_tail, f);
}

/* f has just left PENDING: queue its continuations, forget its hook. */
static inline void kt__future_settled(kt_future *f)
{
    f->cancel_cb = NULL;
    if (kt__future_has_conts(f) && !(f->flags & KT__F_QUEUED))
        kt__future_enqueue(f->loop->futures, f);
}

/* Register cb(f, arg) (future.c). The inline slot is used only when no
 * continuation is waiting, so order is registration order. node, if
 * given, is used instead of allocating one (combinators): then this
 * cannot fail. 0 or -ENOMEM. */
int kt__future_cont_add(kt_future *f, struct kt__cont *node, kt_future_cb cb, void *arg);
/* Drop a combinator's inputs and state, at the recycle of its future
 * (future-comb.c). */
void kt__comb_release(kt_future *self);

#endif
