/*
 * 03-state-machines.c - get_numbers() on ONE thread: a hand-written state
 * machine per fetch, driven by a poll() loop.
 *
 * Blocking code keeps its progress on the stack ("I am inside fetch(2),
 * waiting in recv()"). To wait for three things at once on one thread, that
 * progress has to move into data: each fetch becomes a struct with a
 * `state` field, and a function step() that advances it as far as it can
 * without blocking, then returns. The loop asks the kernel, with poll(),
 * which sockets are ready, and steps those machines.
 *
 *   CONNECTING --writable--> SENDING --all sent--> RECEIVING --reply--> DONE
 *
 * The three waits overlap, as with threads, but on one thread and one
 * stack: the total is the longest delay (300 ms). The price is in the code:
 * the straight-line fetch_blocking() of 01 (fetch.h) is cut into pieces at every
 * point where it could block, and the pieces share their variables through
 * the struct. The loop also scans every machine on every wake-up (poll()
 * is O(number of sockets) per call, which is what epoll and io_uring fix).
 *
 * Usage: 03-state-machines [HOST:PORT]   (default 127.0.0.1:7380)
 */
#include "config.h"

#include <poll.h>

#include "fetch.h"

enum fetch_state {
    CONNECTING, /* non-blocking connect() in progress: wait until writable */
    SENDING,    /* request partly sent: wait until writable */
    RECEIVING,  /* waiting for (the rest of) the reply: wait until readable */
    DONE,       /* value holds the answer; socket closed */
    FAILED,     /* a message was printed; socket closed */
};

/* One fetch: everything that blocking code would keep in local variables. */
struct fetch {
    int n;                  /* the number asked for */
    int fd;                 /* non-blocking socket, -1 once closed */
    enum fetch_state state;
    char out[64];           /* the request, and how much of it is sent */
    size_t out_len, out_off;
    char in[256];           /* reply bytes received so far */
    size_t in_len;
    long value;             /* the answer, once DONE */
};

static void finish(struct fetch *f, enum fetch_state state)
{
    close(f->fd);
    f->fd = -1;
    f->state = state;
}

static void fail(struct fetch *f, const char *what, const char *why)
{
    fprintf(stderr, "GET %d: %s: %s\n", f->n, what, why);
    finish(f, FAILED);
}

/* Start fetch f: a non-blocking socket and a connect() that returns at
 * once (EINPROGRESS); the loop learns from poll() when it completed. */
static void fetch_start(struct fetch *f, int n, const struct sockaddr_storage *ss,
                        socklen_t sslen)
{
    *f = (struct fetch){ .n = n, .fd = -1, .state = CONNECTING };
    f->out_len = encode_get(f->out, sizeof f->out, n);

    const char *what;
    f->fd = dial(ss, sslen, DIAL_NONBLOCKING, &what);
    if (f->fd < 0) {
        fprintf(stderr, "GET %d: %s: %s\n", n, what, strerror(errno));
        f->state = FAILED;
    }
}

/* What f is waiting for, as poll() events. */
static short fetch_events(const struct fetch *f)
{
    return f->state == RECEIVING ? POLLIN : POLLOUT;
}

/*
 * Advance f as far as possible without blocking, then return. Called when
 * poll() says f's socket is ready. Each case ends either by moving to the
 * next state (and falling through to try it at once) or by returning to
 * wait for the kernel again.
 */
static void fetch_step(struct fetch *f)
{
    switch (f->state) {
    case CONNECTING: {
        int err = connect_error(f->fd);
        if (err) {
            fail(f, "connect", strerror(err));
            return;
        }
        f->state = SENDING;
    }
        /* fall through */
    case SENDING: {
        int rc = send_some(f->fd, f->out, f->out_len, &f->out_off);
        if (rc < 0)
            fail(f, "send", strerror(-rc));
        if (rc <= 0)
            return; /* failed, or socket buffer full: wait for POLLOUT */
        f->state = RECEIVING;
        return; /* the reply cannot be there yet: wait for POLLIN */
    }
    case RECEIVING: {
        const char *what, *why;
        int rc = recv_some(f->fd, f->in, sizeof f->in, &f->in_len, &f->value, &what, &why);
        if (rc < 0) {
            fail(f, what, why);
            return;
        }
        if (rc == 0)
            return; /* not all there yet: wait for more */
        if (f->value != f->n) {
            fail(f, "reply", "the database answered another number");
            return;
        }
        printf("[%4ld ms] got %ld\n", elapsed_ms(), f->value);
        finish(f, DONE);
        return;
    }
    case DONE:
    case FAILED:
        return;
    }
}

int main(int argc, char **argv)
{
    const char *addr = example_init(argc, argv); /* exits 2 on bad usage */

    struct sockaddr_storage ss;
    socklen_t sslen;
    if (resolve(addr, &ss, &sslen) < 0)
        return 1;

    /* Start all three: none of these calls waits. */
    struct fetch fetches[NFETCH];
    for (int i = 0; i < NFETCH; i++)
        fetch_start(&fetches[i], i + 1, &ss, sslen);
    printf("[%4ld ms] started fetches of 1, 2, 3 from %s\n", elapsed_ms(), addr);

    /* The event loop: collect what every live machine waits for, sleep in
     * poll() until one of them is ready, step the ready ones, repeat. */
    unsigned wakeups = 0;
    for (;;) {
        struct pollfd pfd[NFETCH];
        struct fetch *owner[NFETCH];
        nfds_t k = 0;
        for (int i = 0; i < NFETCH; i++) {
            if (fetches[i].state == DONE || fetches[i].state == FAILED)
                continue;
            pfd[k] = (struct pollfd){ .fd = fetches[i].fd, .events = fetch_events(&fetches[i]) };
            owner[k++] = &fetches[i];
        }
        if (k == 0)
            break; /* every machine has finished */

        long left = TIMEOUT_MS - elapsed_ms();
        int rc = left > 0 ? poll(pfd, k, (int)left) : 0;
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0) {
            perror("poll");
            return 1;
        }
        if (rc == 0) {
            fprintf(stderr, "timed out after %d ms waiting for the database\n", TIMEOUT_MS);
            for (nfds_t i = 0; i < k; i++)
                finish(owner[i], FAILED);
            return 1;
        }
        wakeups++;
        for (nfds_t i = 0; i < k; i++)
            if (pfd[i].revents) /* POLLERR/POLLHUP also step: send/recv report it */
                fetch_step(owner[i]);
    }

    int ok = 1;
    for (int i = 0; i < NFETCH; i++)
        ok = ok && fetches[i].state == DONE;
    if (!ok)
        return 1;
    printf("total: %ld ms (%u wake-ups of the loop)\n", elapsed_ms(), wakeups);
    return 0;
}
