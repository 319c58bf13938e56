/*
 * kettle/future.h - callback-driven futures.
 *
 * A future is a single-assignment slot owned by one loop: pending, then
 * resolved (a value), failed (an error) or cancelled. Consumers register
 * continuations with kt_future_then(); a continuation never runs inside the
 * call that settles the future: it is queued and the loop runs it later in
 * the same iteration, so resolving is never re-entrant and the stack stays
 * bounded however long a chain is.
 *
 * Futures are reference counted and recycled through a per-loop free list.
 * The creator holds the first reference. A queued continuation holds its own
 * reference until it has run, so dropping yours after kt_future_then() is fine.
 *
 * Cancellation travels to the producer: kt_future_cancel() on a pending
 * future marks it cancelled, calls the producer's cancel hook at once (so it
 * can unhook its waiter), then queues the continuations as for any settle.
 * A producer that settles an already cancelled future gets -EALREADY.
 */
#ifndef KETTLE_FUTURE_H
#define KETTLE_FUTURE_H

#include <kettle/common.h>
#include <kettle/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kt_future kt_future;

typedef enum kt_future_state {
    KT_FUTURE_PENDING = 0,
    KT_FUTURE_RESOLVED,
    KT_FUTURE_FAILED,
    KT_FUTURE_CANCELLED,
} kt_future_state;

/* Continuation: f is settled (any state but PENDING). */
typedef void (*kt_future_cb)(kt_future *f, void *arg);
/* Producer's cancel hook, called synchronously from kt_future_cancel(). */
typedef void (*kt_cancel_cb)(kt_future *f, void *arg);
typedef void (*kt_free_cb)(void *p);

/* A new pending future with one reference (the caller's). NULL on ENOMEM. */
kt_future *kt_future_new(kt_loop *loop);
void kt_future_ref(kt_future *f);
/* Drop a reference; at zero the value's destructor runs and the future goes
 * back to the loop's free list. */
void kt_future_unref(kt_future *f);

/* Settle with a value. dtor (may be NULL) frees value when the future is
 * recycled. If f is not pending, value is freed with dtor and -EALREADY is
 * returned. 0 on success. */
int kt_future_resolve(kt_future *f, void *value, kt_free_cb dtor);
/* Settle with an integer value. 0 or -EALREADY. */
int kt_future_resolve_i64(kt_future *f, int64_t v);
/* Settle as failed with err (a negative errno) and a message (printf
 * format; copied; NULL for none). 0 or -EALREADY. */
int kt_future_fail(kt_future *f, int err, const char *fmt, ...) KT_PRINTF(3, 4);
/* Consumer side: cancel a pending future (see above). 0 or -EALREADY. */
int kt_future_cancel(kt_future *f);
/* Producer side: the hook kt_future_cancel() calls; one per future. */
void kt_future_on_cancel(kt_future *f, kt_cancel_cb cb, void *arg);

/* Run cb(f, arg) from the loop once f is settled (later in this iteration if
 * it already is). Several continuations run in registration order.
 * 0 or -ENOMEM (then cb is never called). */
int kt_future_then(kt_future *f, kt_future_cb cb, void *arg);

kt_future_state kt_future_state_of(const kt_future *f);
static inline bool kt_future_done(const kt_future *f) { return kt_future_state_of(f) != KT_FUTURE_PENDING; }
kt_loop *kt_future_loop(const kt_future *f);
/* The value of a resolved future (borrowed), NULL otherwise. */
void *kt_future_value(const kt_future *f);
/* The integer value of a resolved future, 0 otherwise. */
int64_t kt_future_i64(const kt_future *f);
/* 0 when resolved or pending, the negative errno when failed, -ECANCELED
 * when cancelled. */
int kt_future_error(const kt_future *f);
/* The failure message (borrowed; strerror text when none was given), or
 * NULL when not failed. */
const char *kt_future_errmsg(const kt_future *f);

/* ---- combinators --------------------------------------------------------
 * Each takes its own references on its inputs and returns a new future the
 * caller owns (NULL on ENOMEM). Cancelling the result cancels the inputs
 * that are still pending. */

/* Gather: resolves (never fails) once every input has settled; per-item
 * results through kt_all_item(). n == 0 resolves at once. */
kt_future *kt_all(kt_loop *loop, kt_future *const *fs, size_t n);
size_t kt_all_count(const kt_future *all);
/* Input i of an all or sequence future (borrowed). */
kt_future *kt_all_item(const kt_future *all, size_t i);

/* First success wins: resolves with the winner's value (kt_future_value and
 * kt_future_i64 of the race return the winner's) and cancels the others.
 * Fails with the last error when every input fails. */
kt_future *kt_race(kt_loop *loop, kt_future *const *fs, size_t n);
/* Index of the winning input, or SIZE_MAX. */
size_t kt_race_winner(const kt_future *race);

/* Settles as f does (value forwarded as for race); if timeout_ns passes
 * first, cancels f and fails with -ETIMEDOUT. */
kt_future *kt_timeout(kt_future *f, uint64_t timeout_ns);

/* Chain: once f settles, next = step(f, arg) is called from the loop; the
 * result settles as next does (value forwarded). step returns a future it
 * owns a reference to (ownership passes to the chain) or NULL, which fails
 * the chain with -ENOMEM. */
typedef kt_future *(*kt_step_cb)(kt_future *prev, void *arg);
kt_future *kt_then_chain(kt_future *f, kt_step_cb step, void *arg);

/* Sequence: start(0, arg), await it, then start(1, arg), ... each item
 * awaited before the next starts. Resolves when all have settled, with
 * per-item results through kt_all_item() as for kt_all. start returns an
 * owned future or NULL (that item fails with -ENOMEM). */
typedef kt_future *(*kt_seq_cb)(size_t i, void *arg);
kt_future *kt_sequence(kt_loop *loop, size_t n, kt_seq_cb start, void *arg);

#ifdef __cplusplus
}
#endif
#endif
