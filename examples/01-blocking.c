/*
 * 01-blocking.c - get_numbers() the plain way: one blocking socket, fetch 1,
 * then 2, then 3.
 *
 * Each call to fetch() sends `GET n` and then sits in recv() until the
 * answer comes back. Nothing else happens meanwhile: the program spends
 * nearly all its time asleep in the kernel, and the total is the SUM of the
 * three delays (100 + 200 + 300 ms against kettle-db in proportional mode).
 * This is the baseline every later example improves on.
 *
 * Usage: 01-blocking [HOST:PORT]   (default 127.0.0.1:7380)
 * Build: part of `make` (not installed); see examples/README.md.
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_ADDR "127.0.0.1:7380"
#define IO_TIMEOUT_S 10 /* give up on a silent database after this long */

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

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : DEFAULT_ADDR;
    if (argc > 2 || addr[0] == '-') {
        fprintf(stderr, "usage: %s [HOST:PORT]   (default %s)\n", argv[0], DEFAULT_ADDR);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* one line at a time, even into a pipe */
    clock_gettime(CLOCK_MONOTONIC, &start);

    struct sockaddr_storage ss;
    socklen_t sslen;
    if (resolve(addr, &ss, &sslen) < 0)
        return 1;

    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    /* Bound every blocking call so a silent database cannot hang us. */
    struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&ss, sslen) < 0) {
        fprintf(stderr, "connect to %s: %s\n", addr, strerror(errno));
        close(fd);
        return 1;
    }
    printf("[%4ld ms] connected to %s; fetching 1, 2, 3 one after another\n",
           elapsed_ms(), addr);

    /* get_numbers(): the straight-line version. Each fetch starts only when
     * the previous one has finished. */
    for (int n = 1; n <= 3; n++) {
        long v = fetch(fd, n);
        if (v < 0) {
            close(fd);
            return 1;
        }
        if (v != n) {
            fprintf(stderr, "GET %d: the database answered %ld\n", n, v);
            close(fd);
            return 1;
        }
        printf("[%4ld ms] got %ld\n", elapsed_ms(), v);
    }
    close(fd);
    printf("total: %ld ms\n", elapsed_ms());
    return 0;
}
