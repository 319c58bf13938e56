/*
 * loop.c - the reactor: picks the I/O backend, runs iterations, and owns
 * the loop-wide plumbing that is not about streams: the cross-thread post
 * queue (a mutex-guarded list plus an eventfd), signals (signalfd), the
 * spare descriptor kept for EMFILE, and the statistics.
 *
 * One iteration, in order:
 *   update time; timeout = 0 if anything is ready, else the nearest timer;
 *   io->poll (wait + dispatch); update time; fire timers; run future
 *   continuations and redeliver kept input; run continuations and deferred
 *   callbacks until none is ready; flush the streams with queued output;
 *   finish closed streams (on_close, free).
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include "internal.h"

/* ---- backend names ---------------------------------------------------------- */

/* Names as the command line and KETTLE_IO spell them. */
int kt_io_parse(const char *name, kt_io_kind *out)
{
    static const struct { const char *name; kt_io_kind kind; } names[] = {
        { "auto", KT_IO_AUTO },         { "epoll", KT_IO_EPOLL },
        { "io_uring", KT_IO_URING },    { "uring", KT_IO_URING },
        { "io-uring", KT_IO_URING },    { "libevent", KT_IO_LIBEVENT },
    };
    if (name == NULL)
        return -EINVAL;
    for (size_t i = 0; i < KT__ARRAY_LEN(names); i++) {
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].kind;
            return 0;
        }
    }
    return -EINVAL;
}

/* A static string, never NULL. */
const char *kt_io_name(kt_io_kind kind)
{
    switch (kind) {
    case KT_IO_AUTO: return "auto";
    case KT_IO_EPOLL: return "epoll";
    case KT_IO_URING: return "io_uring";
    case KT_IO_LIBEVENT: return "libevent";
    }
    return "unknown";
}

/* The table for a forced kind, or NULL when it is not built in. */
static const struct kt__io_ops *io_table(kt_io_kind kind)
{
    switch (kind) {
    case KT_IO_EPOLL: return &kt__io_epoll;
#ifdef HAVE_LIBURING
    case KT_IO_URING: return &kt__io_uring;
#endif
#ifdef HAVE_LIBEVENT
    case KT_IO_LIBEVENT: return &kt__io_libevent;
#endif
    default: return NULL;
    }
}

/* Initialise loop->io from the chosen kind. AUTO tries io_uring and falls
 * back to epoll on any set-up failure, recording and logging why once. */
static int io_select(kt_loop *loop, const kt_loop_options *opts)
{
    kt_io_kind kind = opts ? opts->io : KT_IO_AUTO;
    if ((unsigned)kind > KT_IO_LIBEVENT)
        return -ENOSYS; /* not a backend this library knows */
    if (kind == KT_IO_AUTO) {
        const char *env = getenv("KETTLE_IO");
        if (env && *env && kt_io_parse(env, &kind) < 0) {
            kt_log_error("KETTLE_IO=%s: unknown I/O backend (auto, epoll, io_uring, libevent)", env);
            return -EINVAL;
        }
    }
    if (kind != KT_IO_AUTO) {
        const struct kt__io_ops *io = io_table(kind);
        if (io == NULL)
            return -ENOSYS;
        loop->io = io;
        int rc = io->init(loop, opts);
        if (rc < 0)
            loop->io = NULL;
        return rc;
    }
#ifdef HAVE_LIBURING
    loop->io = &kt__io_uring;
    int rc = kt__io_uring.init(loop, opts);
    if (rc == 0)
        return 0;
    snprintf(loop->fallback_buf, sizeof(loop->fallback_buf), "%s", strerror(-rc));
    loop->fallback_reason = loop->fallback_buf;
    kt_log_notice("io_uring unavailable (%s), using epoll", loop->fallback_reason);
#endif
    loop->io = &kt__io_epoll;
    int erc = kt__io_epoll.init(loop, opts);
    if (erc < 0)
        loop->io = NULL;
    return erc;
}

/* ---- posts: the one thread-safe entry ------------------------------------- */

/* Drain the eventfd, then run every post queued so far. Posts queued by
 * these callbacks (or concurrently) find the list empty and write the
 * eventfd again, so they run in the next iteration, not in this one. */
static void wake_cb(struct kt__watch *w)
{
    kt_loop *loop = (kt_loop *)((char *)w - offsetof(kt_loop, wake));
    uint64_t v;
    while (read(w->h.fd, &v, sizeof(v)) < 0 && errno == EINTR)
        ;
    if (loop->freeing)
        return; /* kt_loop_free drops the posts */
    pthread_mutex_lock(&loop->post_lock);
    struct kt__post *p = loop->post_head;
    loop->post_head = loop->post_tail = NULL;
    pthread_mutex_unlock(&loop->post_lock);
    while (p) {
        struct kt__post *next = p->next;
        p->fn(p->arg);
        kt_free(p);
        p = next;
    }
}

/* Only the post that finds the queue empty writes the eventfd: a burst of
 * posts costs one write and one wake-up. */
int kt_loop_post(kt_loop *loop, kt_post_cb fn, void *arg)
{
    if (fn == NULL)
        return -EINVAL;
    struct kt__post *p = kt_malloc(sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    p->next = NULL;
    p->fn = fn;
    p->arg = arg;
    pthread_mutex_lock(&loop->post_lock);
    bool was_empty = loop->post_head == NULL;
    if (was_empty)
        loop->post_head = p;
    else
        loop->post_tail->next = p;
    loop->post_tail = p;
    pthread_mutex_unlock(&loop->post_lock);
    if (was_empty) {
        uint64_t one = 1;
        while (write(loop->wake.h.fd, &one, sizeof(one)) < 0 && errno == EINTR)
            ;
    }
    return 0;
}

/* ---- signals ------------------------------------------------------------------ */

/* Read every queued siginfo (several may be pending) and dispatch. */
static void sig_cb(struct kt__watch *w)
{
    kt_loop *loop = (kt_loop *)((char *)w - offsetof(kt_loop, sig));
    struct signalfd_siginfo si[8];
    for (;;) {
        ssize_t n = read(w->h.fd, si, sizeof(si));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        for (size_t i = 0; i < (size_t)n / sizeof(si[0]) && !loop->freeing; i++) {
            unsigned signo = si[i].ssi_signo;
            if (signo < KT__ARRAY_LEN(loop->sigs) && loop->sigs[signo].cb)
                loop->sigs[signo].cb(loop, (int)signo, loop->sigs[signo].arg);
        }
        if ((size_t)n < sizeof(si))
            return;
    }
}

/* Blocks signo in the calling thread (remembering whether we did, to
 * undo it at free) and routes it to the loop's one signalfd. */
int kt_loop_signal(kt_loop *loop, int signo, kt_signal_cb cb, void *arg)
{
    if (signo <= 0 || (size_t)signo >= KT__ARRAY_LEN(loop->sigs) || signo == SIGKILL ||
        signo == SIGSTOP)
        return -EINVAL;
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);

    if (cb == NULL) {
        if (!sigismember(&loop->sigmask, signo))
            return 0;
        sigdelset(&loop->sigmask, signo);
        loop->sigs[signo].cb = NULL;
        if (loop->sig.h.fd >= 0)
            (void)signalfd(loop->sig.h.fd, &loop->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
        if (sigismember(&loop->sig_blocked, signo)) {
            sigdelset(&loop->sig_blocked, signo);
            pthread_sigmask(SIG_UNBLOCK, &one, NULL);
        }
        return 0;
    }

    sigset_t old;
    int rc = pthread_sigmask(SIG_BLOCK, &one, &old);
    if (rc != 0)
        return -rc;
    bool we_blocked = !sigismember(&old, signo);
    sigset_t mask = loop->sigmask;
    sigaddset(&mask, signo);
    int fd = signalfd(loop->sig.h.fd, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto undo;
    }
    if (loop->sig.h.fd < 0) {
        loop->sig.h.type = KT__H_WATCH;
        loop->sig.h.fd = fd;
        loop->sig.cb = sig_cb;
        rc = loop->io->watch_start(loop, &loop->sig);
        if (rc < 0) {
            close(fd);
            loop->sig.h.fd = -1;
            goto undo;
        }
    }
    loop->sigmask = mask;
    if (we_blocked)
        sigaddset(&loop->sig_blocked, signo);
    loop->sigs[signo].cb = cb;
    loop->sigs[signo].arg = arg;
    return 0;
undo:
    if (we_blocked)
        pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    return rc;
}

/* Close the signalfd, dropping signals nobody read (so unblocking does not
 * deliver them with their default action), then unblock what we blocked. */
static void signals_destroy(kt_loop *loop)
{
    if (loop->sig.h.fd >= 0) {
        loop->io->watch_stop(loop, &loop->sig);
        struct signalfd_siginfo si[8];
        while (read(loop->sig.h.fd, si, sizeof(si)) > 0)
            ;
        close(loop->sig.h.fd);
        loop->sig.h.fd = -1;
    }
    pthread_sigmask(SIG_UNBLOCK, &loop->sig_blocked, NULL);
    sigemptyset(&loop->sig_blocked);
}

/* ---- creation and destruction ---------------------------------------------- */

/* Everything the loop needs is set up here, so that running it never
 * fails for want of a resource it could have taken up front. */
int kt_loop_new(kt_loop **out, const kt_loop_options *opts)
{
    kt_loop *loop = kt_calloc(1, sizeof(*loop));
    if (loop == NULL)
        return -ENOMEM;
    int rc;
    loop->spare_fd = -1;
    loop->wake.h.fd = -1;
    loop->sig.h.fd = -1;
    sigemptyset(&loop->sigmask);
    sigemptyset(&loop->sig_blocked);
    if ((rc = pthread_mutex_init(&loop->post_lock, NULL)) != 0) {
        kt_free(loop);
        return -rc;
    }
    loop->now = kt_clock_ns();
    if ((rc = kt__timers_init(loop)) < 0)
        goto fail_timers;
    if ((rc = kt__futures_init(loop)) < 0)
        goto fail_futures;
    loop->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if ((rc = io_select(loop, opts)) < 0)
        goto fail_io;

    loop->wake.h.type = KT__H_WATCH;
    loop->wake.cb = wake_cb;
    loop->wake.h.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wake.h.fd < 0) {
        rc = -errno;
        goto fail_wake;
    }
    if ((rc = loop->io->watch_start(loop, &loop->wake)) < 0) {
        close(loop->wake.h.fd);
        goto fail_wake;
    }
    /* Backend set-up can take a while (io_uring: ~1 ms zeroing its rings):
     * timers armed right after creation count from now, not from before. */
    loop->now = kt_clock_ns();
    *out = loop;
    return 0;

fail_wake:
    loop->io->destroy(loop);
fail_io:
    if (loop->spare_fd >= 0)
        close(loop->spare_fd);
    kt__futures_destroy(loop);
fail_futures:
    kt__timers_destroy(loop);
fail_timers:
    pthread_mutex_destroy(&loop->post_lock);
    kt_free(loop);
    return rc;
}

/* ---- liveness and the end of a loop --------------------------------------------- */

/*
 * What a run waits for (libuv's "active handles"): streams until their
 * on_close has run (open, closing, or closed by the backend and not yet
 * finished), listeners until their close has finished, armed timers,
 * watched signals, queued defers, ready continuations and queued posts.
 * The wake-up eventfd is the loop's own and does not count.
 */
static bool loop_alive(kt_loop *loop)
{
    if (loop->stats.streams || loop->nlisteners || loop->timers.len || loop->defer_head ||
        kt__futures_ready(loop) || !sigisemptyset(&loop->sigmask))
        return true;
    pthread_mutex_lock(&loop->post_lock);
    bool posts = loop->post_head != NULL;
    pthread_mutex_unlock(&loop->post_lock);
    return posts;
}

/* Release everything once no stream or listener is left. */
static void loop_destroy(kt_loop *loop)
{
    signals_destroy(loop);
    loop->io->watch_stop(loop, &loop->wake);
    close(loop->wake.h.fd);
    loop->io->destroy(loop);

    for (struct kt__post *p = loop->post_head, *next; p; p = next) {
        next = p->next;
        kt_free(p);
    }
    kt__blocks_destroy(loop);
    if (loop->spare_fd >= 0)
        close(loop->spare_fd);
    kt__futures_destroy(loop);
    kt__timers_destroy(loop);
    pthread_mutex_destroy(&loop->post_lock);
    kt_free(loop);
}

/* Nothing is freed while anything remains, so the caller can go on
 * closing and running the loop, then try again. */
int kt_loop_close(kt_loop *loop)
{
    if (loop->running || loop_alive(loop) || kt__futures_live(loop) > 0)
        return -EBUSY;
    loop_destroy(loop);
    return 0;
}

/*
 * Close what is left, wait for the backend to finish those closes, free.
 * Streams and listeners are closed (streams without flushing); their
 * on_close and close callbacks run from here, and a stream or listener
 * they open is closed in turn. A completion backend reports its closes in
 * later completions: the wait is for those, with no bound on the number of
 * polls and no timeout, since every close is certain to complete. While
 * freeing, the wake-up and the signals deliver nothing: posts and signals
 * are dropped, as are timers and defers.
 */
void kt_loop_free(kt_loop *loop)
{
    if (loop == NULL)
        return;
    loop->freeing = true;
    for (;;) {
        bool asked = kt__streams_close_all(loop);
        kt__streams_finish(loop);
        kt__listeners_finish(loop);
        if (loop->all == NULL && loop->nlisteners == 0)
            break;
        /* Callbacks may have closed (or opened) more: finish those first. */
        if (!asked && loop->closing == NULL && loop->closed_listeners == NULL)
            (void)loop->io->poll(loop, -1);
    }
    loop_destroy(loop);
}

/* Static strings owned by the library / the loop. */
const char *kt_loop_backend(const kt_loop *loop) { return loop->io->name; }

const char *kt_loop_fallback_reason(const kt_loop *loop) { return loop->fallback_reason; }

int kt_loop_set_batch_wait(kt_loop *loop, uint64_t wait_ns, unsigned events)
{
    if (wait_ns && events == 0)
        return -EINVAL;
    if (loop->io->batch_wait == NULL)
        return wait_ns ? -ENOTSUP : 0;
    return loop->io->batch_wait(loop, wait_ns, events);
}

/* ---- deferred callbacks ------------------------------------------------------- */

/* Idle handle in the caller's memory; nothing is allocated. */
void kt_defer_init(kt_loop *loop, kt_defer *d, kt_defer_cb cb, void *arg)
{
    d->prev = d->next = NULL;
    d->cb = cb;
    d->arg = arg;
    d->loop = loop;
    d->queued = false;
}

/* Appended to the loop's queue (a doubly linked list: cancel is O(1)). */
int kt_loop_defer(kt_defer *d)
{
    if (d->loop == NULL || d->cb == NULL)
        return -EINVAL;
    if (d->queued)
        return 0;
    kt_loop *loop = d->loop;
    d->queued = true;
    d->next = NULL;
    d->prev = loop->defer_tail;
    if (loop->defer_tail)
        loop->defer_tail->next = d;
    else
        loop->defer_head = d;
    loop->defer_tail = d;
    return 0;
}

void kt_defer_cancel(kt_defer *d)
{
    if (!d->queued)
        return;
    kt_loop *loop = d->loop;
    if (d->prev)
        d->prev->next = d->next;
    else
        loop->defer_head = d->next;
    if (d->next)
        d->next->prev = d->prev;
    else
        loop->defer_tail = d->prev;
    d->prev = d->next = NULL;
    d->queued = false;
}

bool kt_defer_queued(const kt_defer *d) { return d->queued; }

/* Continuations first; then one defer at a time, only while no
 * continuation is ready, so that each defer sees everything the work
 * before it queued. Defers queued meanwhile (even the one running, again)
 * run in this same pass. */
static void run_ready(kt_loop *loop)
{
    for (;;) {
        kt__futures_run(loop);
        kt_defer *d = loop->defer_head;
        if (d == NULL)
            return;
        kt_defer_cancel(d);
        d->cb(d, d->arg);
    }
}

/* ---- running ------------------------------------------------------------------ */

/* The cached time: one clock read serves a whole iteration. */
uint64_t kt_loop_now(const kt_loop *loop) { return loop->now; }

void kt_loop_update_time(kt_loop *loop) { loop->now = kt_clock_ns(); }

/* See internal.h: the time the wait ended, for the stats and callbacks. */
void kt__loop_woke(kt_loop *loop)
{
    loop->now = kt_clock_ns();
    loop->woke = loop->now;
}

/* Takes effect at the end of the current iteration; cleared when
 * kt_loop_run returns. */
void kt_loop_stop(kt_loop *loop) { loop->stop = true; }

/* Work that must not wait for I/O: the poll gets a zero timeout. */
bool kt__loop_has_ready(const kt_loop *loop)
{
    return loop->pending || loop->closing || loop->dirty || loop->closed_listeners ||
           loop->defer_head || kt__futures_ready(loop);
}

/* One iteration (see the top of the file). start is the time it began;
 * returns the time it ended, which the next iteration reuses. */
static int iterate(kt_loop *loop, bool may_wait, uint64_t *start)
{
    loop->now = *start;
    int64_t timeout = 0;
    if (may_wait && !kt__loop_has_ready(loop))
        timeout = kt__timers_timeout(loop);
    /* Kept input queued by read_start before now is delivered in this
     * iteration; what is queued from here on waits for the next. */
    kt_stream *pending = loop->pending;
    loop->pending = NULL;

    loop->woke = 0;
    int rc = loop->io->poll(loop, timeout);
    uint64_t woke = loop->woke;
    if (woke == 0) {
        /* The backend did not say when its wait ended: count the whole
         * poll as waiting (dispatch time is then not in the stats). */
        kt_loop_update_time(loop);
        woke = loop->now;
    }

    kt__timers_run(loop);
    kt__futures_run(loop);
    kt__streams_run_pending(loop, pending);
    run_ready(loop);
    kt__streams_flush(loop);
    if (loop->closing)
        kt__streams_finish(loop);
    if (loop->closed_listeners)
        kt__listeners_finish(loop);

    /* Busy time runs from the end of the wait; the little done before it
     * (computing the timeout) is not counted. */
    uint64_t end = kt_clock_ns();
    uint64_t busy = end - woke;
    loop->stats.iterations++;
    if (busy > loop->stats.longest_iteration_ns)
        loop->stats.longest_iteration_ns = busy;
    *start = end;
    return rc;
}

/* Not re-entrant: a callback that runs the loop gets -EBUSY. The clock
 * read that ends one iteration starts the next. A loop with nothing to
 * wait for never blocks: DEFAULT returns at once, ONCE polls without
 * waiting. */
int kt_loop_run(kt_loop *loop, kt_run_mode mode)
{
    if (loop->running)
        return -EBUSY;
    uint64_t t = kt_clock_ns();
    bool alive = mode != KT_RUN_NOWAIT && loop_alive(loop); /* NOWAIT never waits */
    int rc = 0;
    if (mode == KT_RUN_DEFAULT && !alive) {
        loop->now = t;
        return 0;
    }
    loop->running = true;
    do {
        rc = iterate(loop, alive, &t);
    } while (rc == 0 && mode == KT_RUN_DEFAULT && !loop->stop && (alive = loop_alive(loop)));
    loop->now = t;
    loop->stop = false;
    loop->running = false;
    return rc;
}

/* A snapshot; the counters live in the loop, the gauges are read here. */
void kt_loop_get_stats(const kt_loop *loop, kt_loop_stats *out)
{
    *out = loop->stats;
    out->timers_pending = loop->timers.len;
    out->futures_live = kt__futures_live(loop);
}
