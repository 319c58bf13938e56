/*
 * fetch.h - the socket plumbing the hand-written models share (01 to 05
 * and 07); the models differ only in how they wait.
 *
 * Each example fetches numbers from kettle-db with `GET n`. Parsing the
 * address, connecting, encoding the request and parsing the reply are the
 * same in every one of them, so they live here, as static inline functions
 * (no library to link, nothing hidden: this file is all there is), with the
 * poll() call of the poll loops and its deadline. What is NOT here is the
 * point of each example: where it waits, and how it keeps its place while
 * waiting. That stays in the example's own file. (06 and
 * 08 leave all this to libkettle: see kettle-fetch.h.)
 *
 * Every function prints nothing unless it says so, and returns an error
 * instead of exiting.
 */
#ifndef EXAMPLES_FETCH_H
#define EXAMPLES_FETCH_H

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "example.h"

static atomic_ulong recv_calls; /* fetch_blocking()'s recv() calls, all threads */

/*
 * Resolve "host:port" or "[v6addr]:port" into *out (the first address
 * found). 0, or -1 with a message printed.
 */
static inline int resolve(const char *spec, struct sockaddr_storage *out, socklen_t *outlen)
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

/* The start of each main(): the command line into *ex (exits 2 on bad
 * usage), then its HOST:PORT resolved into *ss and the record of the
 * numbers to come set up in *nums (exits 1 when either cannot be). */
static inline void example_setup(int argc, char **argv, struct example *ex,
                                 struct sockaddr_storage *ss, socklen_t *sslen,
                                 struct numbers *nums)
{
    example_init(argc, argv, ex, EX_BASIC);
    if (resolve(ex->addr, ss, sslen) < 0 || numbers_init(nums, ex) < 0)
        exit(1);
}

/*
 * The wait of a poll() loop (03, 04, 05): poll() the k sockets for no
 * longer than what is left of TIMEOUT_MS since the start. Returns how many
 * are ready; 0 when a signal interrupted the wait (go round again); -1 with
 * the reason printed when poll() failed or the time is up.
 */
static inline int poll_deadline(struct pollfd *pfd, nfds_t k)
{
    long left = TIMEOUT_MS - elapsed_ms();
    int rc = left > 0 ? poll(pfd, k, (int)left) : 0;
    if (rc < 0 && errno == EINTR)
        return 0;
    if (rc < 0)
        example_error("poll: %s", strerror(errno));
    else if (rc == 0)
        example_error("timed out after %d ms waiting for the database", TIMEOUT_MS);
    return rc > 0 ? rc : -1;
}

/*
 * Open a TCP connection to ss. DIAL_BLOCKING: a blocking socket, connected
 * on return, whose send and recv give up after IO_TIMEOUT_S.
 * DIAL_NONBLOCKING: a non-blocking socket whose connect() may still be in
 * progress (it is done when the socket turns writable; connect_error()
 * then says how it went). Returns the socket, or -1 with errno set and
 * *what naming the call that failed ("socket" or "connect").
 */
enum dial_mode { DIAL_BLOCKING, DIAL_NONBLOCKING };

static inline int dial(const struct sockaddr_storage *ss, socklen_t sslen, enum dial_mode mode,
                       const char **what)
{
    int nb = mode == DIAL_NONBLOCKING ? SOCK_NONBLOCK : 0;
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | nb, 0);
    if (fd < 0) {
        *what = "socket";
        return -1;
    }
    if (!nb) { /* bound every blocking call so a silent database cannot hang us */
        struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    if (connect(fd, (const struct sockaddr *)ss, sslen) < 0 && !(nb && errno == EINPROGRESS)) {
        int err = errno;
        close(fd);
        errno = err;
        *what = "connect";
        return -1;
    }
    return fd;
}

/* How a non-blocking connect() ended, once the socket is writable: 0 when
 * connected, else the errno value. */
static inline int connect_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    return err;
}

/* Encode `GET n` as RESP (*2\r\n$3\r\nGET\r\n$1\r\n7\r\n) into buf (64
 * bytes are plenty). Returns its length. */
static inline size_t encode_get(char *buf, size_t cap, int n)
{
    char arg[16];
    int alen = snprintf(arg, sizeof arg, "%d", n);
    return (size_t)snprintf(buf, cap, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", alen, arg);
}

/*
 * Parse one RESP reply to GET at the start of buf: a bulk string
 * "$1\r\n7\r\n" (kettle-db's answer) or an integer ":7\r\n". Returns the
 * bytes it used (> 0) with *value set, 0 if more bytes are needed, or -1
 * with *why set (for an error reply, its text: valid until the thread's
 * next call).
 */
static inline int parse_reply(const char *buf, size_t len, long *value, const char **why)
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
    case '-': {
        static _Thread_local char said[128];
        snprintf(said, sizeof said, "the database replied %.*s", (int)(line_end - buf - 1),
                 buf + 1);
        *why = said;
        return -1;
    }
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
 * Non-blocking send of out[*off .. len) on fd, advancing *off. Returns 1
 * when everything is sent, 0 when the socket buffer is full (wait until
 * fd is writable and call again), or -errno.
 */
static inline int send_some(int fd, const char *out, size_t len, size_t *off)
{
    while (*off < len) {
        ssize_t w = send(fd, out + *off, len - *off, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        if (w < 0)
            return -errno;
        *off += (size_t)w;
    }
    return 1;
}

/*
 * Non-blocking receive into in[*len .. cap) on fd, advancing *len, until a
 * whole reply is there or the socket has nothing more. Returns 1 with
 * *value set when the reply is complete, 0 when more is needed (wait until
 * fd is readable and call again), or -1 with *what ("recv" or "reply") and
 * *why describing the failure.
 */
static inline int recv_some(int fd, char *in, size_t cap, size_t *len, long *value,
                            const char **what, const char **why)
{
    for (;;) {
        *what = "recv";
        if (*len == cap) {
            *why = "reply too long";
            return -1;
        }
        ssize_t r = recv(fd, in + *len, cap - *len, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        if (r <= 0) {
            *why = r == 0 ? "the database closed the connection" : strerror(errno);
            return -1;
        }
        *len += (size_t)r;
        *what = "reply";
        *why = "bad reply";
        int used = parse_reply(in, *len, value, why);
        if (used != 0)
            return used > 0 ? 1 : -1;
    }
}

/*
 * Fetch n over the connected BLOCKING socket fd: send GET n, then wait in
 * recv() until the whole reply is there. This is 01-blocking.c's model;
 * 02 runs it on threads and 07 calls it, wrongly, inside a loop. Returns
 * the number, or -1 with a message printed.
 */
static inline long fetch_blocking(int fd, int n)
{
    char req[64];
    size_t len = encode_get(req, sizeof req, n);

    /* A blocking send of 24 bytes completes at once (they fit in the socket
     * buffer); a real program would still loop on short writes. */
    for (size_t off = 0; off < len;) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            example_error("send GET %d: %s", n, strerror(errno));
            return -1;
        }
        off += (size_t)w;
    }

    char buf[256];
    size_t have = 0;
    for (;;) {
        /* Here is where the time goes: this thread sleeps in the kernel
         * until the database answers. */
        atomic_fetch_add(&recv_calls, 1);
        ssize_t r = recv(fd, buf + have, sizeof buf - have, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            example_error("recv GET %d: %s", n, errno == EAGAIN ? "timed out" : strerror(errno));
            return -1;
        }
        if (r == 0) {
            example_error("recv GET %d: the database closed the connection", n);
            return -1;
        }
        have += (size_t)r;

        long value = 0;
        const char *why = "bad reply";
        int used = parse_reply(buf, have, &value, &why);
        if (used < 0) {
            example_error("GET %d: %s", n, why);
            return -1;
        }
        if (used > 0)
            return value;
        if (have == sizeof buf) {
            example_error("GET %d: reply too long", n);
            return -1;
        }
    }
}

#endif /* EXAMPLES_FETCH_H */
