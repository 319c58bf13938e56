/*
 * 02-threads.c - get_numbers() with one thread per fetch.
 *
 * The fetch code is the blocking code of 01-blocking.c, unchanged; what
 * changes is that each fetch runs on its own thread with its own
 * connection, so the three waits overlap and the total is the LONGEST delay
 * (300 ms), not the sum.
 *
 * The cost: every thread is a kernel task with its own stack. The program
 * prints how much address space and resident memory the three threads
 * added while they were blocked: each stack reserves 8 MiB of address
 * space by default (the RLIMIT_STACK soft limit), of which only the pages
 * touched become resident. Three threads are nothing; 10,000 waiting
 * connections would be 10,000 stacks and 10,000 tasks for the scheduler.
 *
 * Usage: 02-threads [HOST:PORT]   (default 127.0.0.1:7380)
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_ADDR "127.0.0.1:7380"
#define IO_TIMEOUT_S 10 /* give up on a silent database after this long */
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

/* Open a blocking connection to ss, with every call bounded in time.
 * The socket, or -1 with a message printed. */
static int dial(const struct sockaddr_storage *ss, socklen_t sslen, const char *addr)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "socket: %s\n", strerror(errno));
        return -1;
    }
    struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (const struct sockaddr *)ss, sslen) < 0) {
        fprintf(stderr, "connect to %s: %s\n", addr, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* What a thread needs, and what it hands back when joined. */
struct job {
    pthread_t tid;
    int n;                             /* the number to fetch */
    const char *addr;                  /* for messages */
    const struct sockaddr_storage *ss; /* where the database is */
    socklen_t sslen;
    int ok;                            /* set by the thread: 1 when n came back */
};

/* Threads that have connected (or failed to): main waits for all of them
 * before measuring memory, so that every stack is in use. */
static pthread_mutex_t ready_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready_cond = PTHREAD_COND_INITIALIZER;
static int ready;

static void announce_ready(void)
{
    pthread_mutex_lock(&ready_lock);
    ready++;
    pthread_cond_signal(&ready_cond);
    pthread_mutex_unlock(&ready_lock);
}

/* Thread body: its own connection, one blocking fetch. Every thread sleeps
 * in its own recv() at the same time as the others. */
static void *fetch_thread(void *arg)
{
    struct job *j = arg;
    int fd = dial(j->ss, j->sslen, j->addr);
    announce_ready();
    if (fd < 0)
        return NULL;
    long v = fetch(fd, j->n);
    close(fd);
    if (v < 0)
        return NULL;
    if (v != j->n) {
        fprintf(stderr, "GET %d: the database answered %ld\n", j->n, v);
        return NULL;
    }
    /* One printf is one locked write to stdout: lines from different
     * threads do not interleave. */
    printf("[%4ld ms] got %ld (thread %d)\n", elapsed_ms(), v, j->n);
    j->ok = 1;
    return NULL;
}

/* Read "VmSize:" and "VmRSS:" (kB) from /proc/self/status; 0 when absent. */
static void memory_kb(long *vsize, long *rss)
{
    *vsize = *rss = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmSize:", 7) == 0)
            *vsize = strtol(line + 7, NULL, 10);
        else if (strncmp(line, "VmRSS:", 6) == 0)
            *rss = strtol(line + 6, NULL, 10);
    }
    fclose(f);
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

    pthread_attr_t attr;
    size_t stack = 0;
    pthread_attr_init(&attr);
    pthread_attr_getstacksize(&attr, &stack);
    pthread_attr_destroy(&attr);

    long vs0, rss0;
    memory_kb(&vs0, &rss0);
    printf("[%4ld ms] starting %d threads (default stack %zu KiB each) against %s\n",
           elapsed_ms(), NFETCH, stack / 1024, addr);

    struct job jobs[NFETCH];
    int started = 0;
    for (int i = 0; i < NFETCH; i++) {
        jobs[i] = (struct job){ .n = i + 1, .addr = addr, .ss = &ss, .sslen = sslen };
        int rc = pthread_create(&jobs[i].tid, NULL, fetch_thread, &jobs[i]);
        if (rc != 0) {
            fprintf(stderr, "pthread_create: %s\n", strerror(rc));
            break;
        }
        started++;
    }

    /* Once every thread has connected, they are about to block in recv():
     * measure what they cost while they wait. */
    pthread_mutex_lock(&ready_lock);
    while (ready < started)
        pthread_cond_wait(&ready_cond, &ready_lock);
    pthread_mutex_unlock(&ready_lock);
    long vs1, rss1;
    memory_kb(&vs1, &rss1);
    if (vs0 && vs1)
        printf("[%4ld ms] while waiting: address space +%ld KiB, resident +%ld KiB\n",
               elapsed_ms(), vs1 - vs0, rss1 - rss0);

    int ok = started == NFETCH;
    for (int i = 0; i < started; i++) {
        pthread_join(jobs[i].tid, NULL);
        ok = ok && jobs[i].ok;
    }
    if (!ok)
        return 1;
    printf("total: %ld ms\n", elapsed_ms());
    return 0;
}
