/*
 * 03-state-machines.c - get_numbers() on ONE thread: a hand-written state
 * machine per fetch, driven by a poll() loop.
 *
 * Blocking code keeps its progress on the stack ("I am inside fetch(2),
 * waiting in recv()"). To wait for many things at once on one thread, that
 * progress has to move into data: each fetch becomes a struct with a
 * `state` field, and a function step() that advances it as far as it can
 * without blocking, then returns. The loop asks the kernel, with poll(),
 * which sockets are ready, and steps those machines.
 *
 *   CONNECTING --writable--> SENDING --all sent--> RECEIVING --reply--> DONE
 *
 * The waits overlap, as with threads, but on one thread and one stack:
 * the total is the longest delay. A fetch costs its struct (under 400
 * bytes) and a socket, not a stack and a task. The price is in the code:
 * the straight-line fetch_blocking() of 01 (fetch.h) is cut into pieces at
 * every point where it could block, and the pieces share their variables
 * through the struct. And in the loop: every wake-up hands poll() the whole
 * list of sockets again, the kernel checks each one, and the loop scans
 * the answers. That is O(sockets) per wake-up, and the report counts it
 * (`sockets handed to poll()`); epoll and io_uring (06) remove it.
 *
 * With a fixed delay the wake-ups do not grow with N: the replies come
 * back in a burst, and a wake-up takes every reply that is there.
 *
 * Usage: 03-state-machines [-n N] [-v] [HOST:PORT]   (default 127.0.0.1:7380)
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

static struct numbers nums;

static void fail(struct fetch *f, const char *what, const char *why)
{
    example_error("GET %d: %s: %s", f->n, what, why);
    finish(f, FAILED);
}

/* Start fetch f: a non-blocking socket and a connect() that returns at
 * once (EINPROGRESS); the loop learns from poll() when it completed.
 * 0, or -1 with errno set and *what naming the call that failed. */
static int fetch_start(struct fetch *f, int n, const struct sockaddr_storage *ss,
                       socklen_t sslen, const char **what)
{
    *f = (struct fetch){ .n = n, .fd = -1, .state = CONNECTING };
    f->out_len = encode_get(f->out, sizeof f->out, n);
    f->fd = dial(ss, sslen, DIAL_NONBLOCKING, what);
    return f->fd < 0 ? -1 : 0;
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
        numbers_got(&nums, f->value);
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
    struct example ex;
    struct sockaddr_storage ss;
    socklen_t sslen;
    example_setup(argc, argv, &ex, &ss, &sslen, &nums); /* exits on bad usage, address, memory */
    size_t n = (size_t)ex.n;
    struct fetch *fetches = calloc(n, sizeof *fetches);
    struct pollfd *pfd = calloc(n, sizeof *pfd);
    struct fetch **owner = calloc(n, sizeof *owner);
    if (!fetches || !pfd || !owner)
        return 1;
    fd_limit_raise(); /* one socket per fetch */

    /* Start them all: none of these calls waits. */
    size_t started = 0;
    for (; started < n; started++) {
        const char *what;
        if (fetch_start(&fetches[started], (int)started + 1, &ss, sslen, &what) < 0) {
            example_stop((int)started + 1, ex.n, what, errno);
            break;
        }
    }
    printf("[%4ld ms] started fetches of 1..%zu from %s\n", elapsed_ms(), started, ex.addr);

    /* The event loop: collect what every live machine waits for, sleep in
     * poll() until one of them is ready, step the ready ones, repeat. */
    unsigned long wakeups = 0, handed = 0;
    for (;;) {
        nfds_t k = 0;
        for (size_t i = 0; i < started; i++) {
            if (fetches[i].state == DONE || fetches[i].state == FAILED)
                continue;
            pfd[k] = (struct pollfd){ .fd = fetches[i].fd, .events = fetch_events(&fetches[i]) };
            owner[k++] = &fetches[i];
        }
        if (k == 0)
            break; /* every machine has finished */

        int rc = poll_deadline(pfd, k);
        if (rc == 0)
            continue; /* interrupted */
        if (rc < 0) {
            for (nfds_t i = 0; i < k; i++)
                finish(owner[i], FAILED);
            break;
        }
        wakeups++;
        handed += k; /* the whole list, every time: the kernel checks each one */
        for (nfds_t i = 0; i < k; i++)
            if (pfd[i].revents) /* POLLERR/POLLHUP also step: send/recv report it */
                fetch_step(owner[i]);
    }

    int rc = example_report(&nums, 1);
    printf("loop wake-ups: %lu\n", wakeups);
    printf("sockets handed to poll(): %lu\n", handed);
    numbers_free(&nums);
    free(fetches);
    free(pfd);
    free(owner);
    return rc;
}
