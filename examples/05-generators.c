/*
 * 05-generators.c - get_numbers() with C coroutines: the switch/__LINE__
 * trick, C's nearest thing to a generator's `yield`.
 *
 * 03 and 04 cut fetch() into states by hand. A coroutine lets the compiler
 * do the cutting: fetch_co() below reads top to bottom like the blocking
 * fetch_blocking() of 01 (fetch.h), except that where 01 would block it says
 * CO_WAIT_FD(fd, events): "yield to the scheduler, resume me here when fd
 * is ready". The macros expand into one big switch over a `line` field;
 * yielding stores __LINE__ and returns, resuming jumps back to `case
 * __LINE__:`. The line number IS the state of 03's enum, numbered for us.
 *
 * The wait never spins: a waiting coroutine is not resumed until poll()
 * reports its socket ready, and the scheduler resumes only that one (each
 * coroutine says exactly what it waits for, unlike 04's re-poll-everything
 * executor).
 *
 * The rule this style imposes: a local variable does not survive a yield
 * (the function really returns), so everything that must live across a
 * CO_WAIT goes in the coroutine's struct, the frame the compiler would
 * otherwise keep for us. And you cannot yield from a function the
 * coroutine calls: only the coroutine's own body can wait.
 *
 * A coroutine is resumed three times in its life: to start, when its
 * connection is up, and when its reply is there. The report counts the
 * resumes: 3 per fetch, however many fetches there are, because each
 * coroutine says what it waits for and the scheduler wakes only that one.
 *
 * Usage: 05-generators [-n N] [-v] [HOST:PORT]   (default 127.0.0.1:7380)
 */
#include "config.h"

#include <poll.h>

#include "fetch.h"

/* ---- the coroutine macros ------------------------------------------------ */

/* A coroutine's resume point and what it waits for. line 0 = not started. */
struct co {
    int line;         /* where to resume: the __LINE__ of the last yield */
    int wait_fd;      /* the socket it waits on, -1 for none */
    short wait_events; /* POLLIN or POLLOUT */
};

enum co_status { CO_WAITING, CO_FINISHED };

/* Open and close a coroutine body (the function returns enum co_status). */
#define CO_BEGIN(c) switch ((c)->line) { case 0:
#define CO_END(c)   } (c)->line = -1; (c)->wait_fd = -1; return CO_FINISHED

/* Yield until fd has events; execution resumes on the line after. Both
 * `case __LINE__` and the store of __LINE__ expand on one source line, so
 * they get the same number. */
#define CO_WAIT_FD(c, fd, events)                                                    \
    do {                                                                             \
        (c)->wait_fd = (fd); (c)->wait_events = (events); (c)->line = __LINE__;       \
        return CO_WAITING; case __LINE__: (c)->wait_fd = -1;                          \
    } while (0)

/* Finish early (from inside the body). */
#define CO_EXIT(c) do { (c)->line = -1; (c)->wait_fd = -1; return CO_FINISHED; } while (0)

/* ---- the fetch coroutine -------------------------------------------------- */

/* The coroutine's frame: its arguments and every variable used across a
 * wait. */
struct fetch {
    struct co co;
    int n;                              /* argument */
    const struct sockaddr_storage *ss;  /* argument */
    socklen_t sslen;
    int fd;
    char out[64];
    size_t out_len, out_off;
    char in[256];
    size_t in_len;
    const char *what, *why; /* a failure, as recv_some() reports it */
    int err;                /* errno when not even a socket could be had */
    long value;
};

static struct numbers nums;

static void fetch_fail(struct fetch *f, const char *what, const char *why)
{
    example_error("GET %d: %s: %s", f->n, what, why);
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
}

/*
 * fetch(n) as a coroutine. Compare with fetch_blocking() (fetch.h, 01's model): the same
 * steps in the same order; each blocking call became a non-blocking call
 * plus a CO_WAIT_FD.
 */
static enum co_status fetch_co(struct fetch *f)
{
    CO_BEGIN(&f->co);

    f->fd = dial(f->ss, f->sslen, DIAL_NONBLOCKING, &f->what);
    if (f->fd < 0) { /* out of descriptors, say: the scheduler starts no more */
        f->err = errno;
        CO_EXIT(&f->co);
    }
    CO_WAIT_FD(&f->co, f->fd, POLLOUT); /* yield until connected */
    {
        int err = connect_error(f->fd);
        if (err) {
            fetch_fail(f, "connect", strerror(err));
            CO_EXIT(&f->co);
        }
    }

    /* rc is a plain local, lost at every yield: fine, because each wait is
     * followed by a fresh assignment to it. */
    int rc;
    while ((rc = send_some(f->fd, f->out, f->out_len, &f->out_off)) == 0)
        CO_WAIT_FD(&f->co, f->fd, POLLOUT); /* buffer full: yield */
    if (rc < 0) {
        fetch_fail(f, "send", strerror(-rc));
        CO_EXIT(&f->co);
    }

    do
        CO_WAIT_FD(&f->co, f->fd, POLLIN); /* yield until the reply (or part) is here */
    while ((rc = recv_some(f->fd, f->in, sizeof f->in, &f->in_len, &f->value, &f->what,
                           &f->why)) == 0);
    if (rc < 0) {
        fetch_fail(f, f->what, f->why);
        CO_EXIT(&f->co);
    }
    if (f->value != f->n) {
        fetch_fail(f, "reply", "the database answered another number");
        CO_EXIT(&f->co);
    }
    numbers_got(&nums, f->value);
    close(f->fd);
    f->fd = -1;

    CO_END(&f->co);
}

/* ---- the scheduler -------------------------------------------------------- */

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
    fd_limit_raise(); /* one socket per coroutine */

    size_t started = 0, live = 0;
    unsigned long resumes = 0, wakeups = 0;
    printf("[%4ld ms] starting %d fetch coroutines against %s\n", elapsed_ms(), ex.n, ex.addr);
    for (; started < n; started++) {
        struct fetch *f = &fetches[started];
        *f = (struct fetch){ .co = { .line = 0, .wait_fd = -1 }, .n = (int)started + 1,
                             .ss = &ss, .sslen = sslen, .fd = -1 };
        f->out_len = encode_get(f->out, sizeof f->out, f->n);
        /* First resume: runs the body up to its first wait. */
        resumes++;
        if (fetch_co(f) == CO_WAITING) {
            live++;
        } else if (f->err) { /* it could not even open a socket: start no more */
            example_stop(f->n, ex.n, f->what, f->err);
            started++;
            break;
        }
    }

    /* The scheduler: wait in poll() for what the coroutines wait for, and
     * resume exactly the ones whose socket is ready. */
    while (live > 0) {
        nfds_t k = 0;
        for (size_t i = 0; i < started; i++) {
            if (fetches[i].co.line == -1)
                continue;
            pfd[k] = (struct pollfd){ .fd = fetches[i].co.wait_fd,
                                      .events = fetches[i].co.wait_events };
            owner[k++] = &fetches[i];
        }
        int rc = poll_deadline(pfd, k);
        if (rc == 0)
            continue; /* interrupted */
        if (rc < 0)
            break;
        wakeups++;
        for (nfds_t i = 0; i < k; i++) {
            if (!pfd[i].revents)
                continue;
            resumes++;
            if (fetch_co(owner[i]) == CO_FINISHED)
                live--;
        }
    }
    for (size_t i = 0; i < started; i++)
        if (fetches[i].fd >= 0) /* only after a timeout */
            close(fetches[i].fd);

    int rc = example_report(&nums, 1);
    printf("coroutine resumes: %lu\n", resumes);
    printf("scheduler wake-ups: %lu\n", wakeups);
    numbers_free(&nums);
    free(fetches);
    free(pfd);
    free(owner);
    return rc;
}
