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

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_ADDR "127.0.0.1:7380"
#define IO_TIMEOUT_S 10  /* the blocking call's bound */
#define TIMEOUT_MS 10000 /* the loop's bound */
#define TICK_MS 50
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

/*
 * Fetch n over the connected blocking socket fd: send GET n, then wait in
 * recv() until the whole reply is there. Returns the number, or -1 with a
 * message printed.
 */
static long fetch(int fd, int n)
{
    char req[64];
    char arg[16];
    int alen = snprintf(arg, sizeof arg, "%d", n);
    int len = snprintf(req, sizeof req, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", alen, arg);

    /* A blocking send of 24 bytes completes at once (they fit in the socket
     * buffer); a real program would still loop on short writes. */
    for (int off = 0; off < len;) {
        ssize_t w = send(fd, req + off, (size_t)(len - off), MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "send GET %d: %s\n", n, strerror(errno));
            return -1;
        }
        off += (int)w;
    }

    char buf[256];
    size_t have = 0;
    for (;;) {
        /* Here is where the time goes: this thread sleeps in the kernel
         * until the database answers. */
        ssize_t r = recv(fd, buf + have, sizeof buf - have, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fprintf(stderr, "recv GET %d: %s\n", n,
                    errno == EAGAIN ? "timed out" : strerror(errno));
            return -1;
        }
        if (r == 0) {
            fprintf(stderr, "recv GET %d: the database closed the connection\n", n);
            return -1;
        }
        have += (size_t)r;

        long value = 0;
        const char *why = "bad reply";
        int used = parse_reply(buf, have, &value, &why);
        if (used < 0) {
            fprintf(stderr, "GET %d: %s\n", n, why);
            return -1;
        }
        if (used > 0)
            return value;
        if (have == sizeof buf) {
            fprintf(stderr, "GET %d: reply too long\n", n);
            return -1;
        }
    }
}

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
    f->fd = socket(f->ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (f->fd < 0) {
        fetch_fail(f, "socket", strerror(errno));
        CO_EXIT(&t->co);
    }
    if (connect(f->fd, (const struct sockaddr *)f->ss, f->sslen) < 0 && errno != EINPROGRESS) {
        fetch_fail(f, "connect", strerror(errno));
        CO_EXIT(&t->co);
    }
    CO_WAIT_FD(&t->co, f->fd, POLLOUT);
    {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(f->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            fetch_fail(f, "connect", strerror(err));
            CO_EXIT(&t->co);
        }
    }
    while (f->out_off < f->out_len) {
        ssize_t w = send(f->fd, f->out + f->out_off, f->out_len - f->out_off, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            fetch_fail(f, "send", strerror(errno));
            CO_EXIT(&t->co);
        }
        if (w > 0)
            f->out_off += (size_t)w;
        else
            CO_WAIT_FD(&t->co, f->fd, POLLOUT);
    }
    for (;;) {
        CO_WAIT_FD(&t->co, f->fd, POLLIN);
        if (f->in_len == sizeof f->in) {
            fetch_fail(f, "recv", "reply too long");
            CO_EXIT(&t->co);
        }
        ssize_t r = recv(f->fd, f->in + f->in_len, sizeof f->in - f->in_len, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r <= 0) {
            fetch_fail(f, "recv", r == 0 ? "the database closed the connection" : strerror(errno));
            CO_EXIT(&t->co);
        }
        f->in_len += (size_t)r;
        const char *why = "bad reply";
        int used = parse_reply(f->in, f->in_len, &f->value, &why);
        if (used < 0) {
            fetch_fail(f, "reply", why);
            CO_EXIT(&t->co);
        }
        if (used > 0)
            break;
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
        f->fd = socket(f->ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (f->fd < 0) {
            fetch_fail(f, "socket", strerror(errno));
            CO_EXIT(&t->co);
        }
        struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
        setsockopt(f->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(f->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(f->fd, (const struct sockaddr *)f->ss, f->sslen) < 0) {
            fetch_fail(f, "connect", strerror(errno));
            CO_EXIT(&t->co);
        }
        /* The mistake: nothing else on this thread runs until this returns. */
        f->value = fetch(f->fd, f->n);
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
        char arg[16];
        int alen = snprintf(arg, sizeof arg, "%d", n);
        f->out_len = (size_t)snprintf(f->out, sizeof f->out, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n",
                                      alen, arg);
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
