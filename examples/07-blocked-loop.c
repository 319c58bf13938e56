/*
 * 07-blocked-loop.c - sync over async: what one blocking call does to an
 * event loop.
 *
 * The coroutines of 05-generators.c, plus two things: a ticker coroutine
 * that wakes every 50 ms and prints how late it woke, and a sleep wait
 * (CO_SLEEP) next to the socket wait. Fetches 1 and 2 are proper
 * coroutines. Fetch 3 is written "sync over async": after a short sleep it
 * calls the plain blocking fetch() of 01-blocking.c from inside its
 * coroutine, as code does when it calls a synchronous library (or waits on
 * a future with a blocking get()) from inside the loop.
 *
 * The whole loop stops for as long as that call sleeps in recv(): the
 * ticker cannot tick, and the replies to 1 and 2, which kettle-db sends
 * after 100 and 200 ms, sit unread in the socket buffers until fetch 3
 * returns. The timestamps show the hole. The cure is 05's: wait with
 * CO_WAIT_FD, never with a blocking call; work that really must block or
 * burn CPU goes to other threads (08-work-stealing.c).
 *
 * Usage: 07-blocked-loop [HOST:PORT]   (default 127.0.0.1:7380)
 */
#include "config.h"

#include <poll.h>

#include "fetch.h"

#define TICK_MS 50

/* ---- coroutines: 05-generators.c's, with a sleep ------------------------- */

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

/* A task: a coroutine and its body. Each kind of task embeds this first. */
struct task {
    struct co co;
    enum co_status (*run)(struct task *t);
};

static int fetches_left = NFETCH; /* the ticker stops when this reaches 0 */
static int failures;

/* ---- the ticker ----------------------------------------------------------- */

struct ticker {
    struct task task;
    long due_ms;     /* when this tick should have come */
    long last_ms;    /* when the previous tick came */
    long worst_gap;  /* longest time between two ticks */
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
            if (late > TICK_MS / 2)
                printf("[%4ld ms] tick, %ld ms late: the loop was blocked\n", now, late);
            else
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
    long value;
};

static void fetch_fail(struct fetch *f, const char *what, const char *why)
{
    fprintf(stderr, "GET %d: %s: %s\n", f->n, what, why);
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    failures++;
    fetches_left--;
}

static enum co_status fetch_async_run(struct task *t)
{
    struct fetch *f = (struct fetch *)t;
    CO_BEGIN(&t->co);
    f->fd = dial(f->ss, f->sslen, DIAL_NONBLOCKING, &f->what);
    if (f->fd < 0) {
        fetch_fail(f, f->what, strerror(errno));
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
    printf("[%4ld ms] got %ld\n", elapsed_ms(), f->value);
    fetches_left--;
    CO_END(&t->co);
}

/* ---- the culprit: a coroutine that makes a blocking call ------------------- */

static enum co_status fetch_sync_run(struct task *t)
{
    struct fetch *f = (struct fetch *)t;
    CO_BEGIN(&t->co);
    CO_SLEEP(&t->co, TICK_MS); /* some well-behaved async work first */
    {
        long t0 = elapsed_ms();
        printf("[%4ld ms] fetch %d: calling the blocking fetch() inside the loop...\n", t0, f->n);
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
        printf("[%4ld ms] got %ld, from the blocking call: the loop was frozen for %ld ms\n",
               t1, f->value, t1 - t0);
    }
    fetches_left--;
    CO_END(&t->co);
}

/* ---- the scheduler: 05's, plus sleeping tasks ------------------------------ */

#define NTASK (NFETCH + 1)

/* Run tasks until all have finished. 0, or -1 on poll failure or timeout. */
static int run_tasks(struct task **tasks, int n)
{
    int live = 0;
    for (int i = 0; i < n; i++)
        if (tasks[i]->run(tasks[i]) == CO_WAITING)
            live++;
    while (live > 0) {
        struct pollfd pfd[NTASK];
        struct task *owner[NTASK];
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
            fprintf(stderr, "timed out after %d ms\n", TIMEOUT_MS);
            return -1;
        }
        int rc = poll(pfd, k, next_wake > now ? (int)(next_wake - now) : 0);
        if (rc < 0 && errno != EINTR) {
            perror("poll");
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
    const char *addr = example_init(argc, argv); /* exits 2 on bad usage */

    struct sockaddr_storage ss;
    socklen_t sslen;
    if (resolve(addr, &ss, &sslen) < 0)
        return 1;

    struct ticker ticker = { .task = { .co = { .wait_fd = -1, .wake_at_ms = -1 },
                                       .run = ticker_run } };
    struct fetch fetches[NFETCH];
    struct task *tasks[NTASK] = { &ticker.task };
    for (int i = 0; i < NFETCH; i++) {
        struct fetch *f = &fetches[i];
        int n = i + 1;
        *f = (struct fetch){ .task = { .co = { .wait_fd = -1, .wake_at_ms = -1 },
                                       .run = n == 3 ? fetch_sync_run : fetch_async_run },
                             .n = n, .ss = &ss, .sslen = sslen, .fd = -1 };
        f->out_len = encode_get(f->out, sizeof f->out, n);
        tasks[i + 1] = &f->task;
    }
    printf("[%4ld ms] ticker every %d ms; fetches 1, 2 async, fetch 3 sync over async, from %s\n",
           elapsed_ms(), TICK_MS, addr);

    int rc = run_tasks(tasks, NTASK);
    for (int i = 0; i < NFETCH; i++)
        if (fetches[i].fd >= 0)
            close(fetches[i].fd);
    if (rc < 0 || failures)
        return 1;
    printf("longest gap between ticks: %ld ms (should be %d)\n", ticker.worst_gap, TICK_MS);
    printf("total: %ld ms\n", elapsed_ms());
    return 0;
}
