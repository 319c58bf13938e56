/*
 * kettle/loop.h - the reactor: one kt_loop per thread, its timers, signals
 * and cross-thread wake-ups.
 *
 * An iteration: read the monotonic clock once, wait for I/O up to the
 * nearest timer deadline, dispatch I/O, fire expired timers, run ready future
 * continuations and deferred callbacks, flush queued writes, finish closed
 * handles.
 */
#ifndef KETTLE_LOOP_H
#define KETTLE_LOOP_H

#include <kettle/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kt_loop kt_loop;
typedef struct kt_timer kt_timer;
typedef struct kt_defer kt_defer;

/* I/O backends. KT_IO_AUTO tries io_uring, then epoll. */
typedef enum kt_io_kind {
    KT_IO_AUTO = 0,
    KT_IO_EPOLL,
    KT_IO_URING,
    KT_IO_LIBEVENT,
} kt_io_kind;

/* "auto", "epoll", "io_uring" (or "uring"), "libevent" -> kind. 0 or -EINVAL. */
int kt_io_parse(const char *name, kt_io_kind *out);
/* The canonical name of a kind ("auto", "epoll", "io_uring", "libevent"). */
const char *kt_io_name(kt_io_kind kind);

typedef struct kt_loop_options {
    kt_io_kind io;          /* KT_IO_AUTO: the environment's KETTLE_IO, else io_uring then epoll */
    unsigned uring_entries; /* io_uring submission queue size; 0 = default (4096) */
    unsigned uring_buffers; /* provided receive buffers; 0 = default (1024 x 16 KiB) */
} kt_loop_options;

/*
 * Create a loop. opts may be NULL (all defaults). With KT_IO_AUTO, a failing
 * io_uring set-up (ENOSYS, EPERM, EINVAL, ENOMEM for locked memory) falls back
 * to epoll and logs one line naming the cause. A forced backend that cannot
 * run returns its error (-ENOSYS when not built in). 0 or negative errno.
 */
int kt_loop_new(kt_loop **out, const kt_loop_options *opts);

/* Free a loop that has nothing left (libuv's uv_loop_close): 0, or
 * -EBUSY with nothing freed while anything remains that a run would wait
 * for (see kt_loop_run) or a future is still referenced. The usual end:
 * close the streams and listeners, stop the timers and signals, run
 * KT_RUN_DEFAULT until it returns (the closes finish), then this. */
int kt_loop_close(kt_loop *loop);

/* Free a loop whatever it holds. Streams and listeners still open are
 * closed (streams without flushing) and the backend's closes awaited, so
 * their on_close and close callbacks run from inside this call; timers,
 * signals (unblocked again), defers and posts not yet run are dropped.
 * Futures still referenced are reported in the log and not freed. Loop
 * thread, outside any callback. NULL is ignored. */
void kt_loop_free(kt_loop *loop);

/* The backend in use: "epoll", "io_uring" or "libevent". */
const char *kt_loop_backend(const kt_loop *loop);
/* Why KT_IO_AUTO fell back from io_uring (strerror text), or NULL. */
const char *kt_loop_fallback_reason(const kt_loop *loop);

/*
 * A run waits for the loop's live handles: streams until their on_close has
 * run, listeners until their close has finished, armed timers, watched
 * signals, queued defers and posts, ready continuations. With none of them
 * the loop never blocks: KT_RUN_DEFAULT returns at once and KT_RUN_ONCE
 * polls without waiting. (So a loop that waits only for posts from other
 * threads needs a handle of its own to wait on, a timer say.)
 */
typedef enum kt_run_mode {
    KT_RUN_DEFAULT = 0, /* until kt_loop_stop() or nothing is left to wait for */
    KT_RUN_ONCE,        /* one iteration, waiting for I/O or a timer if nothing is ready */
    KT_RUN_NOWAIT,      /* one iteration without waiting */
} kt_run_mode;

/* Run the loop. Returns 0, or a negative errno if the backend failed
 * (-EBUSY from inside a callback: runs do not nest). */
int kt_loop_run(kt_loop *loop, kt_run_mode mode);
/* Make kt_loop_run(KT_RUN_DEFAULT) return after the current iteration.
 * Loop thread only (from another thread, use kt_loop_post). */
void kt_loop_stop(kt_loop *loop);

/* Cached monotonic time of this iteration, in nanoseconds. */
uint64_t kt_loop_now(const kt_loop *loop);
/* Re-read the clock (for long callbacks). */
void kt_loop_update_time(kt_loop *loop);

/* Run fn(arg) on the loop's thread in its next iteration. Thread-safe; the
 * only kettle call that may be made from another thread. Posts not yet run
 * when the loop is freed are dropped. 0, -EINVAL (fn NULL) or -ENOMEM. */
typedef void (*kt_post_cb)(void *arg);
int kt_loop_post(kt_loop *loop, kt_post_cb fn, void *arg);

/* Deliver signo through the loop (signalfd): the signal is blocked for the
 * calling thread and cb runs from the loop when it arrives. One callback per
 * signal; a new call replaces it, cb NULL removes it. 0 or negative errno. */
typedef void (*kt_signal_cb)(kt_loop *loop, int signo, void *arg);
int kt_loop_signal(kt_loop *loop, int signo, kt_signal_cb cb, void *arg);

typedef struct kt_loop_stats {
    uint64_t iterations;
    uint64_t longest_iteration_ns; /* busy time of the longest iteration (wait excluded) */
    uint64_t timers_pending;
    uint64_t streams;              /* open streams */
    uint64_t futures_live;         /* futures allocated and not yet recycled */
    uint64_t batch_waits;          /* waits that let the kernel gather completions */
} kt_loop_stats;
void kt_loop_get_stats(const kt_loop *loop, kt_loop_stats *out);

/*
 * Batch wait. A busy loop wakes for every few completions, and on a machine
 * where a wake-up (a context switch) costs more than the work it brings,
 * that is most of its time. With a batch wait set, a wait that follows a
 * busy spell (at least max(2, events / 8) completions since the loop last
 * slept) lets the kernel gather up to `events` completions for at most
 * wait_ns before waking the loop, then wakes it for the first. An idle or
 * lightly loaded loop wakes as before, so a lone request pays nothing; under
 * load a request may wait up to wait_ns more per wake-up, for fewer and
 * larger iterations. A timer due sooner ends the gathering. While the waits
 * gather little (their smoothed size under events / 4), each skips the next
 * busy waits, 1, 2, 4 ... up to 64. io_uring on Linux 6.12 and later, with
 * DEFER_TASKRUN (min_wait of io_uring_enter); wait_ns 0 turns it off (the
 * default); at most 60 s and 4096 events are used. Setting the same values
 * again keeps what the loop has learnt. 0, -EINVAL (events 0 with wait_ns
 * set) or -ENOTSUP where the backend or the kernel cannot.
 */
int kt_loop_set_batch_wait(kt_loop *loop, uint64_t wait_ns, unsigned events);

/* ---- timers ------------------------------------------------------------ */

/*
 * A timer is embedded in the caller's memory (no allocation per timer beyond
 * the loop's heap array). Fields are private. Equal deadlines fire in the
 * order they were started. O(log n) start and stop.
 */
typedef void (*kt_timer_cb)(kt_timer *t, void *arg);
struct kt_timer {
    uint64_t deadline; /* private */
    uint64_t seq;      /* private: FIFO order among equal deadlines */
    uint64_t repeat;   /* private */
    size_t index;      /* private: position in the heap, SIZE_MAX when idle */
    kt_timer_cb cb;    /* private */
    void *arg;         /* private */
    kt_loop *loop;     /* private */
};

void kt_timer_init(kt_loop *loop, kt_timer *t, kt_timer_cb cb, void *arg);
/* Arm: first fire after timeout_ns from the loop's current time, then every
 * repeat_ns if non-zero (scheduled from the previous deadline, not from when
 * the callback ran, so a repeating timer does not drift). Restarting an
 * armed timer re-arms it. A timer armed from inside a timer callback with a
 * zero timeout fires in the next iteration, never in the same pass.
 * 0 or -ENOMEM (the timer stays idle). */
int kt_timer_start(kt_timer *t, uint64_t timeout_ns, uint64_t repeat_ns);
/* Disarm; harmless on an idle timer. Safe from inside its own callback. */
void kt_timer_stop(kt_timer *t);
bool kt_timer_active(const kt_timer *t);

/* ---- deferred callbacks ---------------------------------------------------
 *
 * A defer runs its callback once, at the end of the current iteration: after
 * the ready future continuations and before queued writes are flushed. What
 * it sets in motion (continuations, more defers, this one queued again) runs
 * in the same iteration, still before the flush; a defer runs only when no
 * continuation is ready. So work issued anywhere during an iteration can be
 * gathered and sent as one batch (one request per server, one write).
 * Embedded in the caller's memory like kt_timer; queuing never allocates.
 */
typedef void (*kt_defer_cb)(kt_defer *d, void *arg);
struct kt_defer {
    kt_defer *prev, *next; /* private: the loop's queue */
    kt_defer_cb cb;        /* private */
    void *arg;             /* private */
    kt_loop *loop;         /* private */
    bool queued;           /* private */
};

void kt_defer_init(kt_loop *loop, kt_defer *d, kt_defer_cb cb, void *arg);
/* Queue d for the end of this iteration (of the next one when called
 * outside a running loop); a queued defer stays queued once (FIFO among
 * defers). The loop does not wait for I/O while a defer is queued.
 * 0, or -EINVAL for a defer never initialised. */
int kt_loop_defer(kt_defer *d);
/* Unqueue; harmless when not queued. Safe from any callback. */
void kt_defer_cancel(kt_defer *d);
bool kt_defer_queued(const kt_defer *d);

#ifdef __cplusplus
}
#endif
#endif
