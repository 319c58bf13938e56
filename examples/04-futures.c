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
 * PENDING after a failed recv). Real runtimes pass a "waker" that names the
 * task to poll; libkettle (06-kettle.c) pushes results to callbacks instead.
 *
 * Usage: 04-futures [HOST:PORT]   (default 127.0.0.1:7380)
 */
#include "config.h"

#include <poll.h>

#include "fetch.h"

#define MAX_WAITS 64     /* sockets one executor round can wait on */

/* ---- the interface ------------------------------------------------------ */

enum poll_result { PENDING, READY };

/* What a pending future waits for, gathered during one round of polls. */
struct reactor {
    struct pollfd pfd[MAX_WAITS];
    nfds_t n;
    const char *error; /* set when the table overflowed */
};

/* Record "wake me when fd has events". A leaf future calls this just
 * before it returns PENDING. */
static void reactor_wait(struct reactor *r, int fd, short events)
{
    if (r->n == MAX_WAITS) {
        r->error = "too many sockets for one executor";
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

static unsigned leaf_polls; /* how often a fetch's poll function ran */

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
    fprintf(stderr, "GET %d: %s: %s\n", f->n, what, why);
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    f->state = FINISHED;
    f->base.error = why;
    return READY;
}

/* The re-entrant function: each call picks up at f->state. */
static enum poll_result fetch_poll(struct future *self, struct reactor *r)
{
    struct fetch_future *f = (struct fetch_future *)self;
    leaf_polls++;
    switch (f->state) {
    case START: { /* first poll: only now does the fetch begin */
        f->out_len = encode_get(f->out, sizeof f->out, f->n);
        const char *what;
        f->fd = dial(f->ss, f->sslen, DIAL_NONBLOCKING, &what);
        if (f->fd < 0)
            return fetch_fail(f, what, strerror(errno));
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
        int rc = recv_some(f->fd, f->in, sizeof f->in, &f->in_len, &f->base.value, &what, &why);
        if (rc < 0)
            return fetch_fail(f, what, why);
        if (rc == 0) {
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
    struct future *child[NFETCH]; /* owned */
    int ready[NFETCH];
    size_t n;
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
    free(j);
}

/* Takes ownership of the n children (dropped on failure too; a NULL child
 * means its constructor ran out of memory). NULL on ENOMEM. */
static struct future *join_all(struct future **child, size_t n)
{
    struct join_future *j = calloc(1, sizeof *j);
    int ok = j && n <= NFETCH;
    for (size_t i = 0; i < n; i++)
        ok = ok && child[i];
    if (!ok) {
        for (size_t i = 0; i < n; i++)
            if (child[i])
                child[i]->drop(child[i]);
        free(j);
        return NULL;
    }
    j->base = (struct future){ .poll = join_poll, .drop = join_drop };
    memcpy(j->child, child, n * sizeof *child);
    j->n = n;
    return &j->base;
}

/* ---- the executor --------------------------------------------------------- */

/* Poll root until it is ready, sleeping in poll() on whatever it registered
 * in between. 0, or -1 with a message printed (timeout, poll failure). */
static int block_on(struct future *root, unsigned *rounds)
{
    for (;;) {
        struct reactor r = { .n = 0 };
        ++*rounds;
        if (root->poll(root, &r) == READY)
            return 0;
        if (r.error || r.n == 0) {
            fprintf(stderr, "executor: %s\n", r.error ? r.error : "pending future waits on nothing");
            return -1;
        }
        int rc;
        do {
            long left = TIMEOUT_MS - elapsed_ms();
            rc = left > 0 ? poll(r.pfd, r.n, (int)left) : 0;
        } while (rc < 0 && errno == EINTR);
        if (rc < 0) {
            perror("poll");
            return -1;
        }
        if (rc == 0) {
            fprintf(stderr, "timed out after %d ms waiting for the database\n", TIMEOUT_MS);
            return -1;
        }
    }
}

/* ---- get_numbers() -------------------------------------------------------- */

/* The callback attached with then(): env is the prefix to print. */
static void print_number(void *env, const struct future *done)
{
    printf("[%4ld ms] %s %ld\n", elapsed_ms(), (const char *)env, done->value);
}

int main(int argc, char **argv)
{
    const char *addr = example_init(argc, argv); /* exits 2 on bad usage */

    struct sockaddr_storage ss;
    socklen_t sslen;
    if (resolve(addr, &ss, &sslen) < 0)
        return 1;

    /* Build the whole computation first; nothing has touched the network
     * yet. This reads like the explanation's
     *     all(fetch(1).then(print), fetch(2).then(print), fetch(3).then(print)) */
    struct future *parts[NFETCH];
    for (int i = 0; i < NFETCH; i++)
        parts[i] = then(fetch(i + 1, &ss, sslen), print_number, "got");
    struct future *all = join_all(parts, NFETCH);
    if (!all) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    printf("[%4ld ms] built join_all(fetch(1), fetch(2), fetch(3)) for %s; polling it\n",
           elapsed_ms(), addr);

    unsigned rounds = 0;
    int rc = block_on(all, &rounds);
    int failed = rc < 0 || all->error != NULL;
    all->drop(all);
    if (failed)
        return 1;
    printf("total: %ld ms (%u executor rounds, %u calls of fetch's poll function)\n",
           elapsed_ms(), rounds, leaf_polls);
    return 0;
}
