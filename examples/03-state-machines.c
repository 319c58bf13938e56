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
 * the straight-line fetch() of 01-blocking.c is cut into pieces at every
 * point where it could block, and the pieces share their variables through
 * the struct. The loop also scans every machine on every wake-up (poll()
 * is O(number of sockets) per call, which is what epoll and io_uring fix).
 *
 * Usage: 03-state-machines [HOST:PORT]   (default 127.0.0.1:7380)
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
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
    char arg[16];
    int alen = snprintf(arg, sizeof arg, "%d", n);
    f->out_len = (size_t)snprintf(f->out, sizeof f->out, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n",
                                  alen, arg);

    f->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (f->fd < 0) {
        fprintf(stderr, "GET %d: socket: %s\n", n, strerror(errno));
        f->state = FAILED;
        return;
    }
    if (connect(f->fd, (const struct sockaddr *)ss, sslen) < 0 && errno != EINPROGRESS)
        fail(f, "connect", strerror(errno));
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
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(f->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            fail(f, "connect", strerror(err));
            return;
        }
        f->state = SENDING;
    }
        /* fall through */
    case SENDING:
        while (f->out_off < f->out_len) {
            ssize_t w = send(f->fd, f->out + f->out_off, f->out_len - f->out_off, MSG_NOSIGNAL);
            if (w < 0 && (errno == EAGAIN || errno == EINTR))
                return; /* socket buffer full: wait for POLLOUT */
            if (w < 0) {
                fail(f, "send", strerror(errno));
                return;
            }
            f->out_off += (size_t)w;
        }
        f->state = RECEIVING;
        return; /* the reply cannot be there yet: wait for POLLIN */
    case RECEIVING:
        for (;;) {
            if (f->in_len == sizeof f->in) {
                fail(f, "recv", "reply too long");
                return;
            }
            ssize_t r = recv(f->fd, f->in + f->in_len, sizeof f->in - f->in_len, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                return; /* not all there yet: wait for more */
            if (r < 0) {
                fail(f, "recv", strerror(errno));
                return;
            }
            if (r == 0) {
                fail(f, "recv", "the database closed the connection");
                return;
            }
            f->in_len += (size_t)r;
            const char *why = "bad reply";
            int used = parse_reply(f->in, f->in_len, &f->value, &why);
            if (used < 0) {
                fail(f, "reply", why);
                return;
            }
            if (used > 0) {
                if (f->value != f->n) {
                    fail(f, "reply", "the database answered another number");
                    return;
                }
                printf("[%4ld ms] got %ld\n", elapsed_ms(), f->value);
                finish(f, DONE);
                return;
            }
        }
    case DONE:
    case FAILED:
        return;
    }
}

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
