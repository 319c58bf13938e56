/*
 * io-uring-listen.c - the io_uring backend's listeners and the loop's
 * watches: each runs one multishot operation (an accept; a poll for
 * readability of the wake-up eventfd or the signalfd), armed while wanted
 * and cancelled when not, in the same way for both (kt__ur_multi_kick).
 *
 * The multishot accept names the listener's context. Closing a listener
 * closes its socket at once (no connection queues on it any more) and
 * cancels the accept; the close finishes (kt__listener_closed) with the
 * accept's last CQE, so that the loop knows when nothing of the listener
 * is left in the kernel. Connections it still accepted meanwhile are
 * closed. A watch's callback drains its descriptor, so an edge per
 * wake-up is enough.
 */
#include "config.h"
#include <errno.h>
#include <poll.h>
#include <unistd.h>
#include <sys/socket.h>
#include "io-uring.h"

/* See io-uring.h. */
void kt__ur_multi_kick(struct ur_loop *u, struct ur_multi *m)
{
    unsigned tag = m->node.type == KT__H_LISTENER ? UT_ACCEPT : UT_WATCH;
    bool ok = true;
    if (m->flags & MF_WANT) {
        if (!(m->flags & MF_ARMED)) {
            struct io_uring_sqe *sqe = kt__ur_sqe(u);
            if (sqe == NULL) {
                ok = false;
            } else {
                if (tag == UT_ACCEPT)
                    io_uring_prep_multishot_accept(sqe, m->l->h.fd, NULL, NULL,
                                                   SOCK_NONBLOCK | SOCK_CLOEXEC);
                else
                    io_uring_prep_poll_multishot(sqe, m->w->h.fd, POLLIN);
                io_uring_sqe_set_data64(sqe, ud_pack(m, tag));
                m->flags |= MF_ARMED;
            }
        }
    } else if ((m->flags & MF_ARMED) && !(m->flags & MF_CANCEL)) {
        if (kt__ur_cancel_ud(u, ud_pack(m, tag)))
            m->flags |= MF_CANCEL;
        else
            ok = false;
    }
    if (!ok && !(m->flags & MF_KICK)) {
        m->flags |= MF_KICK;
        kt__ur_kick_later(u, &m->node);
    }
}

/* Want the op of *ctx armed or not; the first time, a new context for
 * owner (a listener or a watch, by type). 0 or -ENOMEM. */
static int multi_want(struct ur_loop *u, void **ctx, uint8_t type, void *owner, bool on)
{
    struct ur_multi *m = *ctx;
    if (m == NULL) {
        if (!on)
            return 0;
        if ((m = kt_calloc(1, sizeof(*m))) == NULL)
            return -ENOMEM;
        m->node.type = type;
        if (type == KT__H_LISTENER)
            m->l = owner;
        else
            m->w = owner;
        *ctx = m;
    }
    if (on)
        m->flags |= MF_WANT;
    else
        m->flags &= ~MF_WANT;
    kt__ur_multi_kick(u, m);
    return 0;
}

/* ---- listeners ------------------------------------------------------------------- */

static void listener_ctx_free(struct ur_loop *u, struct ur_multi *c)
{
    if (c->flags & MF_KICK)
        kt__ur_kick_unlink(u, &c->node);
    c->l->io_ctx = NULL;
    kt_free(c);
}

int kt__ur_listen_start(kt_listener *l)
{
    return multi_want(l->loop->io_data, &l->io_ctx, KT__H_LISTENER, l, true);
}

void kt__ur_listen_stop(kt_listener *l)
{
    (void)multi_want(l->loop->io_data, &l->io_ctx, KT__H_LISTENER, l, false);
}

void kt__ur_listen_close(kt_listener *l)
{
    struct ur_loop *u = l->loop->io_data;
    struct ur_multi *c = l->io_ctx;
    if (l->h.fd >= 0) {
        /* An armed accept keeps the socket alive until its cancel lands;
         * shutdown() stops it listening now, so a connect made after this
         * call is refused instead of queueing on a closing listener. */
        shutdown(l->h.fd, SHUT_RDWR);
        close(l->h.fd);
    }
    l->h.fd = -1;
    if (c && (c->flags & (MF_ARMED | LF_BUSY))) {
        c->flags = (c->flags & ~MF_WANT) | LF_CLOSING;
        kt__ur_multi_kick(u, c); /* the cancel; its CQEs finish the close */
        return;
    }
    if (c)
        listener_ctx_free(u, c);
    kt__listener_closed(l);
}

void kt__ur_on_accept(struct ur_loop *u, struct ur_multi *c, int res, unsigned flags)
{
    bool more = flags & IORING_CQE_F_MORE;
    if (!more)
        c->flags &= ~(MF_ARMED | MF_CANCEL);
    if (c->flags & LF_CLOSING) {
        if (res >= 0)
            close(res);
    } else {
        c->flags |= LF_BUSY;
        if (res >= 0)
            kt__listener_accepted(c->l, res);
        else if (res != -ECANCELED)
            kt__listener_failed(c->l, res);
        c->flags &= ~LF_BUSY;
    }
    if (c->flags & LF_CLOSING) {
        if (!(c->flags & MF_ARMED)) {
            kt_listener *l = c->l;
            listener_ctx_free(u, c);
            kt__listener_closed(l);
        }
    } else if (!more) {
        kt__ur_multi_kick(u, c);
    }
}

/* ---- watches ---------------------------------------------------------------------- */

/* A watch's context lives as long as the loop (ur_destroy frees it): the
 * loop may start it again on a new descriptor. */
int kt__ur_watch_start(kt_loop *loop, struct kt__watch *w)
{
    return multi_want(loop->io_data, &w->io_ctx, KT__H_WATCH, w, true);
}

void kt__ur_watch_stop(kt_loop *loop, struct kt__watch *w)
{
    (void)multi_want(loop->io_data, &w->io_ctx, KT__H_WATCH, w, false);
}

void kt__ur_on_watch(struct ur_loop *u, struct ur_multi *c, int res, unsigned flags)
{
    bool more = flags & IORING_CQE_F_MORE;
    if (!more)
        c->flags &= ~(MF_ARMED | MF_CANCEL);
    if (res > 0 && (c->flags & MF_WANT))
        c->w->cb(c->w);
    if (!more)
        kt__ur_multi_kick(u, c);
}
