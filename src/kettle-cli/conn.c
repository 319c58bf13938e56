/*
 * conn.c - kettle-cli's blocking connection (see conn.h).
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <kettle/common.h>
#include "conn.h"

/* Milliseconds left before deadline (0 = none: -1 for poll). */
static int ms_left(uint64_t deadline)
{
    if (deadline == 0)
        return -1;
    uint64_t now = kt_clock_ns();
    if (now >= deadline)
        return 0;
    uint64_t ms = (deadline - now + 999999) / 1000000;
    return ms > 1000000000 ? 1000000000 : (int)ms;
}

/* Wait until fd is ready for events or the deadline passes (or a signal
 * raised *stop). */
static int wait_fd(int fd, short events, uint64_t deadline, volatile sig_atomic_t *stop)
{
    for (;;) {
        struct pollfd p = { .fd = fd, .events = events };
        int n = poll(&p, 1, ms_left(deadline));
        if (n > 0)
            return 0;
        if (n == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
        if (stop != NULL && *stop)
            return -EINTR;
    }
}

/* Non-blocking connect bounded by deadline, then back to blocking. */
static int connect_one(const struct sockaddr *sa, socklen_t len, uint64_t deadline)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (connect(fd, sa, len) < 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
        } else if ((rc = wait_fd(fd, POLLOUT, deadline, NULL)) == 0) {
            int err = 0;
            socklen_t elen = sizeof(err);
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
                rc = -errno;
            else if (err != 0)
                rc = -err;
        }
    }
    if (rc == 0) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
            rc = -errno;
    }
    if (rc < 0) {
        close(fd);
        return rc;
    }
    if (sa->sa_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

int kc_connect(kc_conn *c, const char *host, int port, const char *path,
               uint64_t connect_ns, const char **why)
{
    uint64_t deadline = connect_ns ? kt_clock_ns() + connect_ns : 0;
    int fd;

    kc_close(c);
    c->in.len = 0;
    c->consumed = 0;
    *why = NULL;
    if (path != NULL) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        snprintf(c->name, sizeof(c->name), "%s", path);
        if (strlen(path) >= sizeof(sun.sun_path)) {
            *why = "socket path too long";
            return -ENAMETOOLONG;
        }
        memcpy(sun.sun_path, path, strlen(path) + 1);
        fd = connect_one((struct sockaddr *)&sun, sizeof(sun), deadline);
    } else {
        char svc[16];
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
        snprintf(c->name, sizeof(c->name), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
        snprintf(svc, sizeof(svc), "%d", port);
        int gai = getaddrinfo(host, svc, &hints, &res);
        if (gai != 0) {
            *why = gai_strerror(gai);
            return -EHOSTUNREACH;
        }
        fd = -EHOSTUNREACH;
        for (ai = res; ai != NULL; ai = ai->ai_next) {
            fd = connect_one(ai->ai_addr, ai->ai_addrlen, deadline);
            if (fd >= 0)
                break;
        }
        freeaddrinfo(res);
    }
    if (fd < 0)
        return fd;
    c->fd = fd;
    return 0;
}

int kc_send(kc_conn *c, size_t argc, const kt_resp_arg *argv)
{
    kt_buf b = { 0 };
    kt_out o = kt_buf_out(&b);
    int rc = kt_resp_command(&o, argc, argv);
    size_t off = 0;
    while (rc == 0 && off < b.len) {
        ssize_t n = send(c->fd, b.data + off, b.len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = -errno;
        else
            off += (size_t)n;
    }
    kt_buf_free(&b);
    return rc;
}

int kc_read_reply(kc_conn *c, kt_resp_reply *r, const char **why)
{
    uint64_t deadline = c->timeout_ns ? kt_clock_ns() + c->timeout_ns : 0;

    /* the previous reply's bytes are no longer referenced */
    kt_buf_consume(&c->in, c->consumed);
    c->consumed = 0;
    for (;;) {
        if (c->in.len > 0) {
            ssize_t n = kt_resp_parse_reply(c->in.data, c->in.len, NULL, r, why);
            if (n > 0) {
                c->consumed = (size_t)n;
                return 0;
            }
            if (n == KT_RESP_ERROR)
                return -EPROTO;
        }
        if (c->stop != NULL && *c->stop)
            return -EINTR;
        int rc = wait_fd(c->fd, POLLIN, deadline, c->stop);
        if (rc < 0)
            return rc;
        char *p = kt_buf_reserve(&c->in, 16384);
        if (p == NULL)
            return -ENOMEM;
        ssize_t n = recv(c->fd, p, 16384, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ECONNRESET;
        kt_buf_commit(&c->in, (size_t)n);
    }
}

void kc_close(kc_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

void kc_conn_free(kc_conn *c)
{
    kc_close(c);
    kt_buf_free(&c->in);
}
