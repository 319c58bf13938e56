/*
 * io-epoll.c - the epoll backend: how it waits and how it arms. What to do
 * when a descriptor is ready (read, sendmsg, connect, accept) is the
 * readiness core's (io-ready.c), shared with the libevent backend.
 *
 * Level-triggered, with the registered events cached in io_flags so that
 * epoll_ctl runs only when the interest really changes. Why level and not
 * edge: (1) fairness for free (see io-ready.c), where edge-triggering
 * would need our own ready list to remember unfinished descriptors; (2)
 * read_stop is honoured by the kernel and read_start cannot lose an edge;
 * (3) the interest changes that cost an epoll_ctl (writability while a
 * send is blocked, read_stop under backpressure, the EMFILE pause) are
 * rare in steady state. A descriptor with no interest is removed from the
 * set, because EPOLLHUP and EPOLLERR are reported whatever the mask, and
 * level-triggered would report them forever.
 */
#include "config.h"
#include <errno.h>
#include <limits.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include "io-ready.h"

#define EP_MAX_EVENTS 256

/* io_flags bits of ours (the core's KT__RD_* say what is wanted): the
 * registered events (EPOLLIN = 0x1, EPOLLOUT = 0x4) and membership. */
#define EP_REG_MASK ((uint32_t)(EPOLLIN | EPOLLOUT))
#define EP_ADDED    0x8000u /* in the epoll set */

struct ep_state {
    struct kt__rd rd;            /* first: the readiness core's part */
    int epfd;
    bool no_pwait2;              /* kernel without epoll_pwait2: use epoll_wait */
    struct epoll_event events[EP_MAX_EVENTS];
};

/* The backend state hung on the loop. */
static struct ep_state *ep_of(kt_loop *loop) { return loop->io_data; }

/* Bring the kernel's interest for h in line with what *flags wants, with
 * one epoll_ctl at most and none when nothing changes. 0 or -errno. */
static int ep_sync(kt_loop *loop, struct kt__handle *h, uint32_t *flags, void *ctx)
{
    KT__UNUSED(ctx);
    uint32_t want = ((*flags & KT__RD_READ) ? (uint32_t)EPOLLIN : 0) |
                    ((*flags & (KT__RD_WBLOCK | KT__RD_CONN)) ? (uint32_t)EPOLLOUT : 0);
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
    kt__rd_init(&ep->rd, ep_sync, NULL, NULL);
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
        case KT__H_STREAM:
            kt__rd_stream_ready((kt_stream *)h, ev & (EPOLLIN | EPOLLERR | EPOLLHUP),
                                ev & (EPOLLOUT | EPOLLERR | EPOLLHUP));
            break;
        case KT__H_LISTENER:
            kt__rd_accept((kt_listener *)h);
            break;
        case KT__H_WATCH:
            ((struct kt__watch *)h)->cb((struct kt__watch *)h);
            break;
        }
    }
    return 0;
}

const struct kt__io_ops kt__io_epoll = {
    .name = "epoll", .kind = KT_IO_EPOLL,
    .init = ep_init, .destroy = ep_destroy, .poll = ep_poll,
    KT__RD_OPS,
};
