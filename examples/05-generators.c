/*
 * 05-generators.c - get_numbers() with C coroutines: the switch/__LINE__
 * trick, C's nearest thing to a generator's `yield`.
 *
 * 03 and 04 cut fetch() into states by hand. A coroutine lets the compiler
 * do the cutting: fetch_co() below reads top to bottom like the blocking
 * fetch() of 01-blocking.c, except that where 01 would block it says
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
 * Usage: 05-generators [HOST:PORT]   (default 127.0.0.1:7380)
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_ADDR "127.0.0.1:7380"
#define TIMEOUT_MS 10000 /* give up on a silent database after this long */
#define NFETCH 3

static struct timespec start;

/* Milliseconds since the program started (monotonic clock). */
static long elapsed_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
}

/*
 * Resolve "host:port" or "[v6addr]:port" into *out (the first address
 * found). 0, or -1 with a message printed.
 */
static int resolve(const char *spec, struct sockaddr_storage *out, socklen_t *outlen)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof host) {
        fprintf(stderr, "bad address '%s': expected HOST:PORT\n", spec);
        return -1;
    }
    const char *h = spec;
    size_t hlen = (size_t)(colon - spec);
    if (h[0] == '[' && h[hlen - 1] == ']') { /* [::1]:7380 */
        h++;
        hlen -= 2;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';

    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
    struct addrinfo *res;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "bad address '%s': %s\n", spec, gai_strerror(rc));
        return -1;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *outlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/*
 * Parse one RESP reply to GET at the start of buf: a bulk string
 * "$1\r\n7\r\n" (kettle-db's answer) or an integer ":7\r\n". Returns the
 * bytes it used (> 0) with *value set, 0 if more bytes are needed, or -1
 * with *why set (an error reply is printed to stderr as well).
 */
static int parse_reply(const char *buf, size_t len, long *value, const char **why)
{
    const char *eol = memchr(buf, '\n', len);
    if (!eol)
        return 0;
    if (eol == buf || eol[-1] != '\r') {
        *why = "malformed reply (no CRLF)";
        return -1;
    }
    const char *line_end = eol - 1; /* the '\r' */
    char *end;
    switch (buf[0]) {
    case '-':
        fprintf(stderr, "database replied: %.*s\n", (int)(line_end - buf - 1), buf + 1);
        *why = "error reply";
        return -1;
    case ':':
        *value = strtol(buf + 1, &end, 10);
        if (end != line_end) {
            *why = "malformed integer reply";
            return -1;
        }
        return (int)(eol + 1 - buf);
    case '$': {
        long blen = strtol(buf + 1, &end, 10);
        if (end != line_end || blen < 1 || blen > 20) {
            *why = blen == -1 ? "no such key (nil reply)" : "unexpected bulk reply";
            return -1;
        }
        const char *data = eol + 1;
        size_t need = (size_t)(data - buf) + (size_t)blen + 2;
        if (len < need)
            return 0;
        *value = strtol(data, &end, 10);
        if (end != data + blen || memcmp(end, "\r\n", 2) != 0) {
            *why = "bulk reply is not a number";
            return -1;
        }
        return (int)need;
    }
    default:
        *why = "unexpected reply type";
        return -1;
    }
}

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
    long value;
    int ok;                             /* result: 1 when n came back */
};

static void fetch_fail(struct fetch *f, const char *what, const char *why)
{
    fprintf(stderr, "GET %d: %s: %s\n", f->n, what, why);
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
}

/*
 * fetch(n) as a coroutine. Compare with fetch() in 01-blocking.c: the same
 * steps in the same order; each blocking call became a non-blocking call
 * plus a CO_WAIT_FD.
 */
static enum co_status fetch_co(struct fetch *f)
{
    CO_BEGIN(&f->co);

    f->fd = socket(f->ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (f->fd < 0) {
        fetch_fail(f, "socket", strerror(errno));
        CO_EXIT(&f->co);
    }
    if (connect(f->fd, (const struct sockaddr *)f->ss, f->sslen) < 0 && errno != EINPROGRESS) {
        fetch_fail(f, "connect", strerror(errno));
        CO_EXIT(&f->co);
    }
    CO_WAIT_FD(&f->co, f->fd, POLLOUT); /* yield until connected */
    {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(f->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            fetch_fail(f, "connect", strerror(err));
            CO_EXIT(&f->co);
        }
    }

    while (f->out_off < f->out_len) {
        /* w is a plain local: fine, it is not needed after the wait below. */
        ssize_t w = send(f->fd, f->out + f->out_off, f->out_len - f->out_off, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            fetch_fail(f, "send", strerror(errno));
            CO_EXIT(&f->co);
        }
        if (w > 0)
            f->out_off += (size_t)w;
        else
            CO_WAIT_FD(&f->co, f->fd, POLLOUT); /* buffer full: yield */
    }

    for (;;) {
        CO_WAIT_FD(&f->co, f->fd, POLLIN); /* yield until the reply (or part) is here */
        if (f->in_len == sizeof f->in) {
            fetch_fail(f, "recv", "reply too long");
            CO_EXIT(&f->co);
        }
        ssize_t r = recv(f->fd, f->in + f->in_len, sizeof f->in - f->in_len, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r <= 0) {
            fetch_fail(f, "recv", r == 0 ? "the database closed the connection" : strerror(errno));
            CO_EXIT(&f->co);
        }
        f->in_len += (size_t)r;
        const char *why = "bad reply";
        int used = parse_reply(f->in, f->in_len, &f->value, &why);
        if (used < 0) {
            fetch_fail(f, "reply", why);
            CO_EXIT(&f->co);
        }
        if (used > 0)
            break;
    }
    if (f->value != f->n) {
        fetch_fail(f, "reply", "the database answered another number");
        CO_EXIT(&f->co);
    }
    printf("[%4ld ms] got %ld\n", elapsed_ms(), f->value);
    close(f->fd);
    f->fd = -1;
    f->ok = 1;

    CO_END(&f->co);
}

/* ---- the scheduler -------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : DEFAULT_ADDR;
    if (argc > 2 || addr[0] == '-') {
        fprintf(stderr, "usage: %s [HOST:PORT]   (default %s)\n", argv[0], DEFAULT_ADDR);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    clock_gettime(CLOCK_MONOTONIC, &start);

    struct sockaddr_storage ss;
    socklen_t sslen;
    if (resolve(addr, &ss, &sslen) < 0)
        return 1;

    struct fetch fetches[NFETCH];
    int live = 0;
    unsigned resumes = 0;
    printf("[%4ld ms] starting three fetch coroutines against %s\n", elapsed_ms(), addr);
    for (int i = 0; i < NFETCH; i++) {
        struct fetch *f = &fetches[i];
        *f = (struct fetch){ .co = { .line = 0, .wait_fd = -1 }, .n = i + 1, .ss = &ss,
                             .sslen = sslen, .fd = -1 };
        char arg[16];
        int alen = snprintf(arg, sizeof arg, "%d", f->n);
        f->out_len = (size_t)snprintf(f->out, sizeof f->out, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n",
                                      alen, arg);
        /* First resume: runs the body up to its first wait. */
        resumes++;
        if (fetch_co(f) == CO_WAITING)
            live++;
    }

    /* The scheduler: wait in poll() for what the coroutines wait for, and
     * resume exactly the ones whose socket is ready. */
    int timed_out = 0;
    while (live > 0) {
        struct pollfd pfd[NFETCH];
        struct fetch *owner[NFETCH];
        nfds_t k = 0;
        for (int i = 0; i < NFETCH; i++) {
            if (fetches[i].co.line == -1)
                continue;
            pfd[k] = (struct pollfd){ .fd = fetches[i].co.wait_fd,
                                      .events = fetches[i].co.wait_events };
            owner[k++] = &fetches[i];
        }
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
            timed_out = 1;
            break;
        }
        for (nfds_t i = 0; i < k; i++) {
            if (!pfd[i].revents)
                continue;
            resumes++;
            if (fetch_co(owner[i]) == CO_FINISHED)
                live--;
        }
    }

    int ok = !timed_out;
    for (int i = 0; i < NFETCH; i++) {
        if (fetches[i].fd >= 0) /* only after a timeout */
            close(fetches[i].fd);
        ok = ok && fetches[i].ok;
    }
    if (!ok)
        return 1;
    printf("total: %ld ms (%u resumes of the coroutines)\n", elapsed_ms(), resumes);
    return 0;
}
