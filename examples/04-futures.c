/*
 * 04-futures.c - get_numbers() with hand-rolled futures: re-entrant poll
 * functions over closure-like state structs, driven by a poll() loop.
 *
 * 03-state-machines.c wrote one state machine and a loop that knew all
 * about it. Here the machine gets a uniform face, a future:
 *
 *     struct future { enum poll_result (*poll)(struct future *, struct reactor *); ... };
 *
 * poll() is re-entrant in the sense the explanation means: it is called
 * again and again, each call resumes from the state saved in the struct,
 * does what it can without blocking, and answers READY or PENDING. Before
 * answering PENDING a leaf future tells the reactor what it is waiting for
 * (this socket, readable). The struct behind each future is a closure: the
 * function's arguments and locals, captured so the function can stop and
 * be resumed.
 *
 * Because every future looks the same, futures compose: join_all() is a
 * future made of futures, then() attaches a callback with its own
 * environment, and the executor (block_on) knows nothing about fetching; it
 * polls one root future and sleeps in poll() until something it waits on
 * is ready. Futures are lazy: nothing starts until the first poll.
 *
 * The cost shown at the end: on every wake-up the executor polls the whole
 * tree again, including futures whose sockets were not ready (they answer
 * PENDING after a failed recv). A fetch needs three polls that do
 * something (start, connected and sent, reply); every other poll finds
 * nothing, and there are N of those per wake-up until the replies come.
 * Real runtimes pass a "waker" that names the task to poll; libkettle
 * (06-kettle.c) pushes results to callbacks instead.
 *
 * Usage: 04-futures [-n N] [-v] [HOST:PORT]   (default 127.0.0.1:7380)
 */
#include "config.h"

#include <poll.h>

#include "fetch.h"

/* ---- the interface ------------------------------------------------------ */

enum poll_result { PENDING, READY };

/* What a pending future waits for, gathered during one round of polls. */
struct reactor {
    struct pollfd *pfd; /* cap entries */
    nfds_t n, cap;
    const char *error;  /* set when the table overflowed */
};

/* Record "wake me when fd has events". A leaf future calls this just
 * before it returns PENDING. */
static void reactor_wait(struct reactor *r, int fd, short events)
{
    if (r->n == r->cap) {
        r->error = "more sockets than the executor has room for";
        return;
    }
    r->pfd[r->n++] = (struct pollfd){ .fd = fd, .events = events };
}

struct future {
    /* Make progress without blocking; READY when finished (then value or
     * error holds the result), PENDING after registering what to wait for. */
    enum poll_result (*poll)(struct future *self, struct reactor *r);
    /* Release the future and everything it owns. */
    void (*drop)(struct future *self);
    long value;        /* the result, once READY with error == NULL */
    const char *error; /* why it failed, once READY (static text) */
};

static unsigned long leaf_polls;   /* how often a fetch's poll function ran */
static unsigned long futile_polls; /* ... and found nothing to do */
static int nfetch;                 /* N: fetches in the tree */

/* ---- a leaf future: fetch one number -------------------------------------- */

/* The closure: fetch(n)'s arguments and every local that must survive a
 * return to the executor. `base` comes first so a struct future * can be
 * cast back to it. */
struct fetch_future {
    struct future base;
    int n;                                 /* captured argument */
    const struct sockaddr_storage *ss;     /* captured argument */
    socklen_t sslen;
    enum { START, CONNECTING, SENDING, RECEIVING, FINISHED } state;
    int fd;
    char out[64];
    size_t out_len, out_off;
    char in[256];
    size_t in_len;
};

static enum poll_result fetch_fail(struct fetch_future *f, const char *what, const char *why)
{
    example_error("GET %d: %s: %s", f->n, what, why);
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    f->state = FINISHED;
    f->base.error = why;
    return READY;
}

static enum poll_result not_started(struct fetch_future *f)
{
    f->state = FINISHED;
    f->base.error = "not started";
    return READY;
}

/* The re-entrant function: each call picks up at f->state. */
static enum poll_result fetch_poll(struct future *self, struct reactor *r)
{
    struct fetch_future *f = (struct fetch_future *)self;
    int entered = f->state;
    leaf_polls++;
    switch (f->state) {
    case START: { /* first poll: only now does the fetch begin */
        if (example_stopped_at) /* an earlier fetch could not start: nor does this one */
            return not_started(f);
        f->out_len = encode_get(f->out, sizeof f->out, f->n);
        const char *what;
        f->fd = dial(f->ss, f->sslen, DIAL_NONBLOCKING, &what);
        if (f->fd < 0) { /* out of descriptors, say */
            example_stop(f->n, nfetch, what, errno);
            return not_started(f);
        }
        f->state = CONNECTING;
        reactor_wait(r, f->fd, POLLOUT);
        return PENDING;
    }
    case CONNECTING: {
        int err = connect_error(f->fd);
        if (err)
            return fetch_fail(f, "connect", strerror(err));
        struct pollfd p = { .fd = f->fd, .events = POLLOUT };
        if (poll(&p, 1, 0) == 0) { /* polled, but not connected yet */
            futile_polls++;
            reactor_wait(r, f->fd, POLLOUT);
            return PENDING;
        }
        f->state = SENDING;
    }
        /* fall through */
    case SENDING: {
        int rc = send_some(f->fd, f->out, f->out_len, &f->out_off);
        if (rc < 0)
            return fetch_fail(f, "send", strerror(-rc));
        if (rc == 0) {
            reactor_wait(r, f->fd, POLLOUT);
            return PENDING;
        }
        f->state = RECEIVING;
    }
        /* fall through */
    case RECEIVING: {
        const char *what, *why;
        size_t had = f->in_len;
        int rc = recv_some(f->fd, f->in, sizeof f->in, &f->in_len, &f->base.value, &what, &why);
        if (rc < 0)
            return fetch_fail(f, what, why);
        if (rc == 0) {
            if (entered == RECEIVING && f->in_len == had)
                futile_polls++; /* woken for another socket: recv() found nothing */
            reactor_wait(r, f->fd, POLLIN);
            return PENDING;
        }
        if (f->base.value != f->n)
            return fetch_fail(f, "reply", "the database answered another number");
        close(f->fd);
        f->fd = -1;
        f->state = FINISHED;
        return READY;
    }
    case FINISHED:
        return READY; /* polling a finished future again is harmless */
    }
    return READY;
}

static void fetch_drop(struct future *self)
{
    struct fetch_future *f = (struct fetch_future *)self;
    if (f->fd >= 0)
        close(f->fd);
    free(f);
}

/* A future that will fetch n from ss when first polled. NULL on ENOMEM. */
static struct future *fetch(int n, const struct sockaddr_storage *ss, socklen_t sslen)
{
    struct fetch_future *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->base = (struct future){ .poll = fetch_poll, .drop = fetch_drop };
    f->n = n;
    f->ss = ss;
    f->sslen = sslen;
    f->state = START;
    f->fd = -1;
    return &f->base;
}

/* ---- combinators ---------------------------------------------------------- */

/* then(inner, fn, env): when inner is ready, call fn(env, inner) once, then
 * be ready with inner's result. fn plus env is the C spelling of a closure. */
struct then_future {
    struct future base;
    struct future *inner; /* owned */
    void (*fn)(void *env, const struct future *done);
    void *env;
    int called;
};

static enum poll_result then_poll(struct future *self, struct reactor *r)
{
    struct then_future *t = (struct then_future *)self;
    if (!t->called) {
        if (t->inner->poll(t->inner, r) == PENDING)
            return PENDING;
        t->called = 1;
        t->base.value = t->inner->value;
        t->base.error = t->inner->error;
        if (!t->base.error)
            t->fn(t->env, t->inner);
    }
    return READY;
}

static void then_drop(struct future *self)
{
    struct then_future *t = (struct then_future *)self;
    t->inner->drop(t->inner);
    free(t);
}

/* Takes ownership of inner (dropped on failure too). NULL on ENOMEM. */
static struct future *then(struct future *inner, void (*fn)(void *, const struct future *),
                           void *env)
{
    if (!inner)
        return NULL;
    struct then_future *t = calloc(1, sizeof *t);
    if (!t) {
        inner->drop(inner);
        return NULL;
    }
    t->base = (struct future){ .poll = then_poll, .drop = then_drop };
    t->inner = inner;
    t->fn = fn;
    t->env = env;
    return &t->base;
}

/* join_all: ready when every child is; fails with the first child error. */
struct join_future {
    struct future base;
    size_t n;
    struct future **child; /* n children, owned */
    unsigned char *ready;  /* ready[i]: child i has finished */
};

static enum poll_result join_poll(struct future *self, struct reactor *r)
{
    struct join_future *j = (struct join_future *)self;
    enum poll_result res = READY;
    /* Poll every unfinished child, not only the one whose socket woke us:
     * the executor does not say which. This is the polling cost. */
    for (size_t i = 0; i < j->n; i++) {
        if (j->ready[i])
            continue;
        if (j->child[i]->poll(j->child[i], r) == PENDING) {
            res = PENDING;
            continue;
        }
        j->ready[i] = 1;
        if (j->child[i]->error && !j->base.error)
            j->base.error = j->child[i]->error;
    }
    return res;
}

static void join_drop(struct future *self)
{
    struct join_future *j = (struct join_future *)self;
    for (size_t i = 0; i < j->n; i++)
        if (j->child[i])
            j->child[i]->drop(j->child[i]);
    free(j->child);
    free(j->ready);
    free(j);
}

/* Takes ownership of the array of n children, allocated with malloc
 * (dropped on failure too; a NULL child means its constructor ran out of
 * memory). NULL on ENOMEM. */
static struct future *join_all(struct future **child, size_t n)
{
    struct join_future *j = calloc(1, sizeof *j);
    unsigned char *ready = calloc(n, 1);
    int ok = j && ready;
    for (size_t i = 0; i < n; i++)
        ok = ok && child[i];
    if (!ok) {
        for (size_t i = 0; i < n; i++)
            if (child[i])
                child[i]->drop(child[i]);
        free(child);
        free(ready);
        free(j);
        return NULL;
    }
    j->base = (struct future){ .poll = join_poll, .drop = join_drop };
    j->n = n;
    j->child = child;
    j->ready = ready;
    return &j->base;
}

/* ---- the executor --------------------------------------------------------- */

/* Poll root until it is ready, sleeping in poll() on whatever it registered
 * in between: at most max_waits sockets. 0, or -1 with a message printed
 * (timeout, poll failure). */
static int block_on(struct future *root, size_t max_waits, unsigned long *rounds)
{
    struct reactor r = { .pfd = calloc(max_waits, sizeof *r.pfd), .cap = max_waits };
    int rc = r.pfd ? 0 : -1;
    if (rc < 0)
        example_error("executor: out of memory");
    while (rc == 0) {
        r.n = 0;
        ++*rounds;
        if (root->poll(root, &r) == READY)
            break;
        if (r.error || r.n == 0) {
            example_error("executor: %s", r.error ? r.error : "pending future waits on nothing");
            rc = -1;
            break;
        }
        int ready;
        do
            ready = poll_deadline(r.pfd, r.n);
        while (ready == 0); /* interrupted */
        if (ready < 0)
            rc = -1;
    }
    free(r.pfd);
    return rc;
}

/* ---- get_numbers() -------------------------------------------------------- */

/* The callback attached with then(): env is the record of numbers. */
static void record_number(void *env, const struct future *done)
{
    numbers_got(env, done->value);
}

int main(int argc, char **argv)
{
    struct example ex;
    struct sockaddr_storage ss;
    socklen_t sslen;
    struct numbers nums;
    example_setup(argc, argv, &ex, &ss, &sslen, &nums); /* exits on bad usage, address, memory */
    size_t n = (size_t)ex.n;
    struct future **parts = calloc(n, sizeof *parts);
    if (!parts)
        return 1;
    fd_limit_raise(); /* one socket per fetch */
    nfetch = ex.n;

    /* Build the whole computation first; nothing has touched the network
     * yet. This reads like the explanation's
     *     all(fetch(1).then(record), fetch(2).then(record), ...) */
    for (size_t i = 0; i < n; i++)
        parts[i] = then(fetch((int)i + 1, &ss, sslen), record_number, &nums);
    struct future *all = join_all(parts, n);
    if (!all) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    printf("[%4ld ms] built join_all(fetch(1), ..., fetch(%d)) for %s; polling it\n",
           elapsed_ms(), ex.n, ex.addr);

    unsigned long rounds = 0;
    block_on(all, n, &rounds); /* failures are counted in the report */
    all->drop(all);

    int rc = example_report(&nums, 1);
    printf("executor rounds: %lu\n", rounds);
    printf("fetch polls: %lu\n", leaf_polls);
    printf("fetch polls that found nothing to do: %lu\n", futile_polls);
    numbers_free(&nums);
    return rc;
}
