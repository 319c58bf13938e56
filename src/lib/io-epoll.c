/*
 * io-epoll.c - the readiness backend: epoll plus non-blocking accept4,
 * read and sendmsg. Reports to stream.c through the kt__stream_* and
 * kt__listener_* completions.
 *
 * Level-triggered, with the registered interest cached in io_flags so that
 * epoll_ctl runs only when the interest really changes. Why level and not
 * edge: (1) fairness for free: a stream gets at most a few 64 KiB reads and
 * a listener a bounded accept batch per wake-up, and the kernel keeps
 * reporting what is left, where edge-triggering would need our own ready
 * list to remember unfinished descriptors; (2) read_stop is honoured by the
 * kernel and read_start cannot lose an edge; (3) the interest changes that
 * cost an epoll_ctl (EPOLLOUT while a write is blocked, read_stop under
 * backpressure, the EMFILE pause) are rare in steady state. A descriptor
 * with no interest is removed from the set, because EPOLLHUP and EPOLLERR
 * are reported whatever the mask, and level-triggered would report them
 * forever.
 *
 * Reads go into one per-loop 64 KiB scratch buffer handed to
 * kt__stream_data(), which copies only what the callback leaves unconsumed:
 * idle streams hold no buffer.
 */
#include "config.h"
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include "internal.h"

#define EP_MAX_EVENTS   256
#define EP_SCRATCH      (64 * 1024)
#define EP_READS_MAX    4   /* full-scratch reads per stream per wake-up */
#define EP_ACCEPT_BATCH 64  /* accepts per listener per wake-up */
#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

/* io_flags of streams and listeners. The low bits cache the registered
 * events (EPOLLIN = 0x1, EPOLLOUT = 0x4); the others say what is wanted. */
#define EP_REG_MASK ((uint32_t)(EPOLLIN | EPOLLOUT))
#define EP_READ     0x00010000u /* wants EPOLLIN: reading or accepting */
#define EP_WBLOCK   0x00020000u /* a write hit EAGAIN: wants EPOLLOUT */
#define EP_CONN     0x00040000u /* connect in progress: wants EPOLLOUT */
#define EP_ADDED    0x80000000u /* in the epoll set */

struct ep_state {
    int epfd;
    bool no_pwait2;              /* kernel without epoll_pwait2: use epoll_wait */
    struct epoll_event events[EP_MAX_EVENTS];
    struct iovec iov[IOV_MAX];   /* sendmsg vectors, shared by all streams */
    char scratch[EP_SCRATCH];    /* every read lands here first */
};

/* The backend state hung on the loop. */
static struct ep_state *ep_of(kt_loop *loop) { return loop->io_data; }

/* Bring the kernel's interest for h in line with what *flags wants, with
 * one epoll_ctl at most and none when nothing changes. 0 or -errno. */
static int ep_sync(kt_loop *loop, struct kt__handle *h, uint32_t *flags)
{
    uint32_t want = ((*flags & EP_READ) ? (uint32_t)EPOLLIN : 0) |
                    ((*flags & (EP_WBLOCK | EP_CONN)) ? (uint32_t)EPOLLOUT : 0);
    bool added = (*flags & EP_ADDED) != 0;
    if (added ? want == (*flags & EP_REG_MASK) : want == 0)
        return 0;
    struct epoll_event ev = { .events = want, .data.ptr = h };
    int op = !added ? EPOLL_CTL_ADD : want ? EPOLL_CTL_MOD : EPOLL_CTL_DEL;
    if (epoll_ctl(ep_of(loop)->epfd, op, h->fd, &ev) < 0)
        return -errno;
    *flags = (*flags & ~(EP_ADDED | EP_REG_MASK)) | want | (want ? EP_ADDED : 0);
    return 0;
}

/* ---- set-up ------------------------------------------------------------------- */

/* One allocation for the epoll state, the events, iovecs and scratch. */
static int ep_init(kt_loop *loop, const kt_loop_options *opts)
{
    KT__UNUSED(opts);
    struct ep_state *ep = kt_malloc(sizeof(*ep));
    if (ep == NULL)
        return -ENOMEM;
    ep->no_pwait2 = false;
    ep->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (ep->epfd < 0) {
        int rc = -errno;
        kt_free(ep);
        return rc;
    }
    loop->io_data = ep;
    return 0;
}

/* Handles were deregistered by their close; only the set remains. */
static void ep_destroy(kt_loop *loop)
{
    struct ep_state *ep = ep_of(loop);
    if (ep == NULL)
        return;
    close(ep->epfd);
    kt_free(ep);
    loop->io_data = NULL;
}

/* ---- streams -------------------------------------------------------------------- */

/* Send as much queued output as the socket takes. A short write means the
 * send buffer is full: arm EPOLLOUT at once instead of paying for the
 * EAGAIN. EPOLLOUT is disarmed when everything went out. */
static void ep_write(kt_loop *loop, kt_stream *s)
{
    struct ep_state *ep = ep_of(loop);
    bool blocked = false;
    while (s->out_bytes > 0) {
        int cnt = kt__stream_iov(s, ep->iov, IOV_MAX);
        if (cnt <= 0)
            break;
        size_t total = 0;
        for (int i = 0; i < cnt; i++)
            total += ep->iov[i].iov_len;
        struct msghdr msg = { .msg_iov = ep->iov, .msg_iovlen = (size_t)cnt };
        ssize_t n = sendmsg(s->h.fd, &msg, MSG_NOSIGNAL); /* EPIPE, not SIGPIPE */
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                blocked = true;
                break;
            }
            int err = -errno;
            s->io_flags &= ~EP_WBLOCK;
            (void)ep_sync(loop, &s->h, &s->io_flags);
            kt__stream_failed(s, err);
            return;
        }
        kt__stream_sent(s, (size_t)n); /* may run on_drain, finish a close */
        if (s->flags & KT__S_CLOSED)
            return;
        if ((size_t)n < total) {
            blocked = true;
            break;
        }
    }
    if (blocked)
        s->io_flags |= EP_WBLOCK;
    else
        s->io_flags &= ~EP_WBLOCK;
    int rc = ep_sync(loop, &s->h, &s->io_flags);
    if (rc < 0 && blocked)
        kt__stream_failed(s, rc); /* could not wait for writability */
}

/* Read into the scratch buffer and hand the bytes over. A full read is
 * retried a few times (more is probably there), then the stream yields to
 * the others; level-triggered epoll reports the rest. */
static void ep_read(kt_loop *loop, kt_stream *s)
{
    struct ep_state *ep = ep_of(loop);
    for (int i = 0; i < EP_READS_MAX; i++) {
        ssize_t n = read(s->h.fd, ep->scratch, sizeof(ep->scratch));
        if (n > 0) {
            kt__stream_data(s, ep->scratch, (size_t)n);
            if ((size_t)n < sizeof(ep->scratch) || (s->flags & KT__S_CLOSED) ||
                !(s->io_flags & EP_READ))
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        int err = n == 0 ? 0 : -errno;
        s->io_flags &= ~EP_READ;
        (void)ep_sync(loop, &s->h, &s->io_flags);
        if (err == 0)
            kt__stream_eof(s);
        else
            kt__stream_failed(s, err);
        return;
    }
}

/* One epoll event for a stream. A pending connect is resolved first (its
 * EPOLLOUT is not writability); then output, then input. */
static void ep_stream_event(kt_loop *loop, kt_stream *s, uint32_t ev)
{
    if (s->io_flags & EP_CONN) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(s->h.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        s->io_flags &= ~EP_CONN;
        (void)ep_sync(loop, &s->h, &s->io_flags);
        kt__stream_connected(s, -err);
        return; /* anything else is still reported next time */
    }
    if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && (s->io_flags & EP_WBLOCK)) {
        s->io_flags &= ~EP_WBLOCK; /* ep_write re-arms it if still blocked */
        ep_write(loop, s);
        if (s->flags & KT__S_CLOSED)
            return;
    }
    if ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) && (s->io_flags & EP_READ))
        ep_read(loop, s);
}

/* Nothing to register until there is something to wait for. */
static int ep_stream_open(kt_stream *s)
{
    s->io_flags = 0;
    return 0;
}

/* Non-blocking connect: the result arrives as EPOLLOUT (SO_ERROR says
 * which). Even an immediate success waits for that event, so on_connect
 * never runs inside kt_stream_connect(). */
static int ep_connect(kt_stream *s, const kt_addr *addr)
{
    if (connect(s->h.fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 &&
        errno != EINPROGRESS && errno != EINTR)
        return -errno;
    s->io_flags |= EP_CONN;
    int rc = ep_sync(s->loop, &s->h, &s->io_flags);
    if (rc < 0)
        s->io_flags &= ~EP_CONN;
    return rc;
}

/* EPOLLIN while the user reads: the kernel holds the rest meanwhile. */
static int ep_read_start(kt_stream *s)
{
    s->io_flags |= EP_READ;
    int rc = ep_sync(s->loop, &s->h, &s->io_flags);
    if (rc < 0)
        s->io_flags &= ~EP_READ;
    return rc;
}

/* Drops EPOLLIN (an fd with no interest left leaves the set). */
static void ep_read_stop(kt_stream *s)
{
    s->io_flags &= ~EP_READ;
    (void)ep_sync(s->loop, &s->h, &s->io_flags);
}

/* Called once per iteration for a stream with new output. While EPOLLOUT
 * is armed the socket is known to be full: wait for the event instead of
 * paying a sendmsg that would return EAGAIN. */
static void ep_flush(kt_stream *s)
{
    if (s->io_flags & (EP_CONN | EP_WBLOCK))
        return;
    ep_write(s->loop, s);
}

/* Synchronous: deregister (explicitly: a dup'd or inherited descriptor
 * would keep the registration alive), close, report. */
static void ep_close(kt_stream *s)
{
    if (s->io_flags & EP_ADDED)
        (void)epoll_ctl(ep_of(s->loop)->epfd, EPOLL_CTL_DEL, s->h.fd, NULL);
    s->io_flags = 0;
    if (s->h.fd >= 0)
        close(s->h.fd);
    s->h.fd = -1;
    kt__stream_closed(s);
}

/* ---- listeners ------------------------------------------------------------------ */

/* Accept a bounded batch so a connection storm cannot starve the streams
 * already open; the rest stays in the backlog and epoll reports it again. */
static void ep_accept(kt_listener *l)
{
    for (int i = 0; i < EP_ACCEPT_BATCH; i++) {
        if (!(l->flags & KT__L_ACCEPTING) || l->h.fd < 0)
            return; /* the accept callback paused or closed it */
        int fd = accept4(l->h.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            kt__listener_accepted(l, fd);
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            kt__listener_failed(l, -errno);
        return;
    }
}

/* Accepting is EPOLLIN on the listening socket. */
static int ep_listen_start(kt_listener *l)
{
    l->io_flags |= EP_READ;
    int rc = ep_sync(l->loop, &l->h, &l->io_flags);
    if (rc < 0)
        l->io_flags &= ~EP_READ;
    return rc;
}

/* Paused or backing off: out of the set, so EMFILE cannot spin. */
static void ep_listen_stop(kt_listener *l)
{
    l->io_flags &= ~EP_READ;
    (void)ep_sync(l->loop, &l->h, &l->io_flags);
}

/* Synchronous, as for streams. */
static void ep_listen_close(kt_listener *l)
{
    if (l->io_flags & EP_ADDED)
        (void)epoll_ctl(ep_of(l->loop)->epfd, EPOLL_CTL_DEL, l->h.fd, NULL);
    l->io_flags = 0;
    if (l->h.fd >= 0)
        close(l->h.fd);
    l->h.fd = -1;
    kt__listener_closed(l);
}

/* ---- watches ---------------------------------------------------------------------- */

/* eventfd and signalfd: always EPOLLIN; their callbacks drain them. */
static int ep_watch_start(kt_loop *loop, struct kt__watch *w)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = w };
    return epoll_ctl(ep_of(loop)->epfd, EPOLL_CTL_ADD, w->h.fd, &ev) < 0 ? -errno : 0;
}

/* Before the watch's descriptor is closed. */
static void ep_watch_stop(kt_loop *loop, struct kt__watch *w)
{
    (void)epoll_ctl(ep_of(loop)->epfd, EPOLL_CTL_DEL, w->h.fd, NULL);
}

/* ---- the wait ------------------------------------------------------------------------ */

/* epoll_wait's milliseconds, rounded up so that a timer is never reached
 * early (which would spin until it is due). */
static int ms_ceil(int64_t ns)
{
    if (ns < 0)
        return -1;
    int64_t ms = (ns + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Wait with nanosecond precision (epoll_pwait2, Linux 5.11) or, on older
 * kernels, milliseconds; then dispatch. Handles stay allocated during the
 * dispatch (stream.c frees at the end of the iteration), so an event for
 * one closed by an earlier callback is recognised and skipped. */
static int ep_poll(kt_loop *loop, int64_t timeout_ns)
{
    struct ep_state *ep = ep_of(loop);
    int n;
    for (;;) {
        if (!ep->no_pwait2) {
            struct timespec ts, *tsp = NULL;
            if (timeout_ns >= 0) {
                ts.tv_sec = (time_t)(timeout_ns / 1000000000);
                ts.tv_nsec = (long)(timeout_ns % 1000000000);
                tsp = &ts;
            }
            n = epoll_pwait2(ep->epfd, ep->events, EP_MAX_EVENTS, tsp, NULL);
            if (n < 0 && errno == ENOSYS) {
                ep->no_pwait2 = true;
                continue;
            }
        } else {
            n = epoll_wait(ep->epfd, ep->events, EP_MAX_EVENTS, ms_ceil(timeout_ns));
        }
        break;
    }
    int err = n < 0 ? errno : 0;
    kt__loop_woke(loop);
    if (n < 0)
        return err == EINTR ? 0 : -err;

    for (int i = 0; i < n; i++) {
        struct kt__handle *h = ep->events[i].data.ptr;
        uint32_t ev = ep->events[i].events;
        switch (h->type) {
        case KT__H_STREAM: {
            kt_stream *s = (kt_stream *)h;
            if (!(s->flags & KT__S_CLOSED))
                ep_stream_event(loop, s, ev);
            break;
        }
        case KT__H_LISTENER:
            ep_accept((kt_listener *)h);
            break;
        case KT__H_WATCH:
            ((struct kt__watch *)h)->cb((struct kt__watch *)h);
            break;
        }
    }
    return 0;
}

const struct kt__io_ops kt__io_epoll = {
    .name = "epoll",
    .kind = KT_IO_EPOLL,
    .init = ep_init,
    .destroy = ep_destroy,
    .poll = ep_poll,
    .listen_start = ep_listen_start,
    .listen_stop = ep_listen_stop,
    .listen_close = ep_listen_close,
    .stream_open = ep_stream_open,
    .connect = ep_connect,
    .read_start = ep_read_start,
    .read_stop = ep_read_stop,
    .flush = ep_flush,
    .close = ep_close,
    .watch_start = ep_watch_start,
    .watch_stop = ep_watch_stop,
};
