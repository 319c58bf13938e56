/*
 * 07-blocked-loop.c - sync over async: what one blocking call does to an
 * event loop.
 *
 * The coroutines of 05-generators.c, plus three things: a ticker coroutine
 * that wakes every 50 ms and prints how late it woke, a sleep wait
 * (CO_SLEEP) next to the socket wait, and a way for one coroutine to wake
 * another (CO_SUSPEND, co_wake). Fetches 1..N-1 are proper coroutines.
 * Fetch N is written "sync over async": once the others have sent their
 * requests, it calls the plain blocking fetch_blocking() of 01 from inside
 * its coroutine, as code does when it calls a synchronous library (or
 * waits on a future with a blocking get()) from inside the loop.
 *
 * The whole loop stops for as long as that call sleeps in recv(): the
 * ticker cannot tick, and the replies to 1..N-1, which kettle-db sends
 * while fetch N waits (their requests went first), sit unread in their
 * socket buffers until fetch N returns. The report counts them. The cure
 * is 05's: wait with CO_WAIT_FD, never with a blocking call; work that
 * really must block or burn CPU goes to other threads (08-work-stealing.c).
 *
 * Usage: 07-blocked-loop [-n N] [-v] [HOST:PORT]   (default 127.0.0.1:7380)
 */
#include "config.h"

#include <limits.h>
#include <poll.h>

#include "fetch.h"

#define TICK_MS 50

/* ---- coroutines: 05-generators.c's, with sleeping and waking ------------- */

struct co {
    int line;          /* resume point (__LINE__ of the last yield); -1 finished */
    int wait_fd;       /* socket waited on, or -1 */
    short wait_events;
    long wake_at_ms;   /* sleeping until then (elapsed_ms() clock), or -1 */
};

enum co_status { CO_WAITING, CO_FINISHED };

#define CO_BEGIN(c) switch ((c)->line) { case 0:
#define CO_END(c)   } (c)->line = -1; return CO_FINISHED
#define CO_EXIT(c)  do { (c)->line = -1; return CO_FINISHED; } while (0)
/* Yield until fd has events. */
#define CO_WAIT_FD(c, fd, events)                                                    \
    do {                                                                             \
        (c)->wait_fd = (fd); (c)->wait_events = (events); (c)->line = __LINE__;       \
        return CO_WAITING; case __LINE__: (c)->wait_fd = -1;                          \
    } while (0)
/* Yield for ms milliseconds. */
#define CO_SLEEP(c, ms)                                                              \
    do {                                                                             \
        (c)->wake_at_ms = elapsed_ms() + (ms); (c)->line = __LINE__;                  \
        return CO_WAITING; case __LINE__: (c)->wake_at_ms = -1;                       \
    } while (0)
/* Yield until another task calls co_wake(c): a sleep with no end. */
#define CO_SUSPEND(c) CO_SLEEP(c, LONG_MAX / 2)

/* Make a sleeping or suspended coroutine runnable in the next pass. */
static void co_wake(struct co *c)
{
    if (c->line > 0 && c->wait_fd < 0)
        c->wake_at_ms = 0;
}

/* A task: a coroutine and its body. Each kind of task embeds this first. */
struct task {
    struct co co;
    enum co_status (*run)(struct task *t);
};

static struct numbers nums;
static int fetches_left;  /* the ticker stops when this reaches 0 */
static int requests_out;  /* async fetches that have sent their request (or given up) */
static int nasync;        /* N - 1: the well-behaved fetches */
static struct task *culprit;

/* ---- the ticker ----------------------------------------------------------- */

struct ticker {
    struct task task;
    long due_ms;     /* when this tick should have come */
    long last_ms;    /* when the previous tick came */
    long worst_gap;  /* longest time between two ticks */
    unsigned long ticks;
};

static enum co_status ticker_run(struct task *t)
{
    struct ticker *k = (struct ticker *)t;
    CO_BEGIN(&t->co);
    k->last_ms = k->due_ms = elapsed_ms();
    for (;;) {
        {
            long now = elapsed_ms();
            long late = now - k->due_ms;
            if (now - k->last_ms > k->worst_gap)
                k->worst_gap = now - k->last_ms;
            k->last_ms = now;
            k->ticks++;
            if (late > TICK_MS / 2)
                printf("[%4ld ms] tick, %ld ms late: the loop was blocked\n", now, late);
            else if (nums.show)
                printf("[%4ld ms] tick\n", now);
            k->due_ms = now + TICK_MS;
        }
        if (fetches_left == 0)
            break;
        CO_SLEEP(&t->co, TICK_MS);
    }
    CO_END(&t->co);
}

/* ---- a well-behaved fetch: 05's coroutine ---------------------------------- */

struct fetch {
    struct task task;
    int n;
    const struct sockaddr_storage *ss;
    socklen_t sslen;
    int fd;
    char out[64];
    size_t out_len, out_off;
    char in[256];
    size_t in_len;
    const char *what, *why; /* a failure, as recv_some() reports it */
    int err;                /* errno when not even a socket could be had */
    int sent;               /* the request is out (or never will be) */
    long value;
};

/* This fetch's request is out, or will never be: when it is the last
 * one, the culprit may go ahead. */
static void request_out(struct fetch *f)
{
    if (f->sent)
        return;
    f->sent = 1;
    if (++requests_out == nasync)
        co_wake(&culprit->co);
}

static void fetch_fail(struct fetch *f, const char *what, const char *why)
{
    example_error("GET %d: %s: %s", f->n, what, why);
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    request_out(f);
    fetches_left--;
}

static enum co_status fetch_async_run(struct task *t)
{
    struct fetch *f = (struct fetch *)t;
    CO_BEGIN(&t->co);
    f->fd = dial(f->ss, f->sslen, DIAL_NONBLOCKING, &f->what);
    if (f->fd < 0) { /* out of descriptors, say: the scheduler starts no more */
        f->err = errno;
        CO_EXIT(&t->co);
    }
    CO_WAIT_FD(&t->co, f->fd, POLLOUT); /* yield until connected */
    {
        int err = connect_error(f->fd);
        if (err) {
            fetch_fail(f, "connect", strerror(err));
            CO_EXIT(&t->co);
        }
    }

    /* rc is a plain local, lost at every yield: fine, because each wait is
     * followed by a fresh assignment to it. */
    int rc;
    while ((rc = send_some(f->fd, f->out, f->out_len, &f->out_off)) == 0)
        CO_WAIT_FD(&t->co, f->fd, POLLOUT); /* buffer full: yield */
    if (rc < 0) {
        fetch_fail(f, "send", strerror(-rc));
        CO_EXIT(&t->co);
    }
    request_out(f);

    do
        CO_WAIT_FD(&t->co, f->fd, POLLIN); /* yield until the reply (or part) is here */
    while ((rc = recv_some(f->fd, f->in, sizeof f->in, &f->in_len, &f->value, &f->what,
                           &f->why)) == 0);
    if (rc < 0) {
        fetch_fail(f, f->what, f->why);
        CO_EXIT(&t->co);
    }
    close(f->fd);
    f->fd = -1;
    if (f->value != f->n) {
        fetch_fail(f, "reply", "the database answered another number");
        CO_EXIT(&t->co);
    }
    numbers_got(&nums, f->value);
    fetches_left--;
    CO_END(&t->co);
}

/* ---- the culprit: a coroutine that makes a blocking call ------------------- */

static struct fetch *fetches; /* 1..N-1, then N, the culprit */
static long frozen_ms;
static int waited_unread;     /* replies that arrived while the loop was frozen */

/* How many well-behaved fetches have a reply in their socket buffer that
 * nobody has read: poll() them all without waiting. */
static int replies_unread(void)
{
    int k = 0;
    for (int i = 0; i < nasync; i++) {
        struct pollfd p = { .fd = fetches[i].fd, .events = POLLIN };
        if (p.fd >= 0 && fetches[i].task.co.wait_events == POLLIN && poll(&p, 1, 0) == 1)
            k++;
    }
    return k;
}

static enum co_status fetch_sync_run(struct task *t)
{
    struct fetch *f = (struct fetch *)t;
    CO_BEGIN(&t->co);
    if (requests_out < nasync)
        CO_SUSPEND(&t->co); /* well-behaved async waiting first: the others' requests go out */
    {
        long t0 = elapsed_ms();
        printf("[%4ld ms] fetch %d: calling the blocking fetch_blocking() inside the loop...\n",
               t0, f->n);
        f->fd = dial(f->ss, f->sslen, DIAL_BLOCKING, &f->what); /* blocks, too */
        if (f->fd < 0) {
            fetch_fail(f, f->what, strerror(errno));
            CO_EXIT(&t->co);
        }
        /* The mistake: nothing else on this thread runs until this returns. */
        f->value = fetch_blocking(f->fd, f->n);
        close(f->fd);
        f->fd = -1;
        if (f->value != f->n) {
            fetch_fail(f, "reply", f->value < 0 ? "blocking fetch failed" : "another number");
            CO_EXIT(&t->co);
        }
        long t1 = elapsed_ms();
        frozen_ms = t1 - t0;
        waited_unread = replies_unread();
        printf("[%4ld ms] fetch %d: the blocking call returned; the loop was frozen for %ld ms,"
               " and %d replies arrived meanwhile and wait unread\n",
               t1, f->n, frozen_ms, waited_unread);
        numbers_got(&nums, f->value);
    }
    fetches_left--;
    CO_END(&t->co);
}

/* ---- the scheduler: 05's, plus sleeping tasks ------------------------------ */

/* Run tasks until all have finished. The first pass starts them in order
 * and stops starting fetches at the first that cannot get a socket.
 * 0, or -1 on poll failure or timeout. */
static int run_tasks(struct task **tasks, int n, struct pollfd *pfd, struct task **owner)
{
    int live = 0;
    for (int i = 0; i < n; i++) {
        if (example_stopped_at) { /* not started: finished as far as anyone waits */
            tasks[i]->co.line = -1;
            if (tasks[i]->run == fetch_async_run)
                request_out((struct fetch *)tasks[i]);
            fetches_left--;
            continue;
        }
        if (tasks[i]->run(tasks[i]) == CO_WAITING)
            live++;
        else if (tasks[i]->run == fetch_async_run && ((struct fetch *)tasks[i])->err) {
            struct fetch *f = (struct fetch *)tasks[i];
            example_stop(f->n, nums.n, f->what, f->err);
            request_out(f);
            fetches_left--;
        }
    }
    while (live > 0) {
        nfds_t k = 0;
        long now = elapsed_ms(), next_wake = TIMEOUT_MS;
        for (int i = 0; i < n; i++) {
            struct co *c = &tasks[i]->co;
            if (c->line == -1)
                continue;
            if (c->wait_fd >= 0) {
                pfd[k] = (struct pollfd){ .fd = c->wait_fd, .events = c->wait_events };
                owner[k++] = tasks[i];
            } else if (c->wake_at_ms >= 0 && c->wake_at_ms < next_wake) {
                next_wake = c->wake_at_ms;
            }
        }
        if (now >= TIMEOUT_MS) {
            example_error("timed out after %d ms", TIMEOUT_MS);
            return -1;
        }
        int rc = poll(pfd, k, next_wake > now ? (int)(next_wake - now) : 0);
        if (rc < 0 && errno != EINTR) {
            example_error("poll: %s", strerror(errno));
            return -1;
        }
        for (nfds_t i = 0; rc > 0 && i < k; i++)
            if (pfd[i].revents && owner[i]->run(owner[i]) == CO_FINISHED)
                live--;
        now = elapsed_ms();
        for (int i = 0; i < n; i++) {
            struct co *c = &tasks[i]->co;
            if (c->line != -1 && c->wait_fd < 0 && c->wake_at_ms >= 0 && c->wake_at_ms <= now &&
                tasks[i]->run(tasks[i]) == CO_FINISHED)
                live--;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct example ex;
    struct sockaddr_storage ss;
    socklen_t sslen;
    example_setup(argc, argv, &ex, &ss, &sslen, &nums); /* exits on bad usage, address, memory */
    int ntask = ex.n + 1;
    fetches = calloc((size_t)ex.n, sizeof *fetches);
    struct task **tasks = calloc((size_t)ntask, sizeof *tasks);
    struct pollfd *pfd = calloc((size_t)ntask, sizeof *pfd);
    struct task **owner = calloc((size_t)ntask, sizeof *owner);
    if (!fetches || !tasks || !pfd || !owner)
        return 1;
    fd_limit_raise(); /* one socket per fetch */

    struct ticker ticker = { .task = { .co = { .wait_fd = -1, .wake_at_ms = -1 },
                                       .run = ticker_run } };
    tasks[0] = &ticker.task;
    fetches_left = ex.n;
    nasync = ex.n - 1;
    for (int i = 0; i < ex.n; i++) {
        struct fetch *f = &fetches[i];
        int n = i + 1;
        *f = (struct fetch){ .task = { .co = { .wait_fd = -1, .wake_at_ms = -1 },
                                       .run = n == ex.n ? fetch_sync_run : fetch_async_run },
                             .n = n, .ss = &ss, .sslen = sslen, .fd = -1 };
        f->out_len = encode_get(f->out, sizeof f->out, n);
        tasks[i + 1] = &f->task;
    }
    culprit = &fetches[ex.n - 1].task;
    printf("[%4ld ms] ticker every %d ms; fetches 1..%d async, fetch %d sync over async, from %s\n",
           elapsed_ms(), TICK_MS, ex.n - 1, ex.n, ex.addr);

    run_tasks(tasks, ntask, pfd, owner); /* failures are counted in the report */
    for (int i = 0; i < ex.n; i++)
        if (fetches[i].fd >= 0)
            close(fetches[i].fd);

    int rc = example_report(&nums, 1);
    printf("ticks: %lu\n", ticker.ticks);
    printf("longest gap between ticks: %ld ms (should be %d)\n", ticker.worst_gap, TICK_MS);
    printf("loop frozen: %ld ms\n", frozen_ms);
    printf("replies that waited unread: %d of %d\n", waited_unread, nasync);
    numbers_free(&nums);
    free(fetches);
    free(tasks);
    free(pfd);
    free(owner);
    return rc;
}
