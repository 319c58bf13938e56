/*
 * io-uring.c - the completion backend: one io_uring per loop.
 *
 * Listeners run one multishot accept; streams one multishot recv that picks
 * its 16 KiB buffer from a ring of provided buffers. A buffer is free again
 * as soon as kt__stream_data() returns (it copies what the user leaves
 * unconsumed) and is posted back before the next submit (io-uring-res.c:
 * only a window of the most recently used buffers is posted, for cache
 * locality; ENOBUFS re-arms the receive and widens the window, no byte is
 * lost). Sends are queued by flush (one in flight per stream, SEND for one
 * vector, SENDMSG for several) and go out with every other SQE of the
 * iteration in the next poll's submit. A SENDMSG's header and vectors,
 * and a connect's address, live in a block of the loop's op pool only
 * while that op is in flight, so an idle stream's context is a few words.
 * Stream sockets sit in a fixed-file table when there is room. Wake-up
 * and signals are multishot polls.
 *
 * A multishot receive can miss the peer's end: when the FIN or RST wakes
 * it while it is still taking the last bytes, the kernel may drop that
 * wake-up, and the end, a state rather than an event, never wakes it
 * again (the stream would stay open until some timeout). So a reading
 * stream also arms a one-shot poll for POLLRDHUP (ERR and HUP come
 * with it); when that fires, the multishot receive is cancelled and the
 * stream receives one shot at a time, each receive a fresh look at the
 * socket, until its EOF or error.
 *
 *   user_data = object pointer | tag (low 3 bits; objects are 8-aligned)
 *
 *   stream io_pending = ops in flight (recv, send, connect) + holds taken
 *   while a completion calls back into the user; the fd is closed and
 *   kt__stream_closed() called only when it drops to 0 after close, so no
 *   completion ever refers to freed memory. Closing cancels each op in
 *   flight by its user_data (a hash lookup in the kernel, where a cancel
 *   by descriptor walks every armed op). A listener stops listening at
 *   once, and its close finishes with the cancelled accept's last CQE.
 *
 * Every "start"/"stop" sets the wanted state and calls a kick function that
 * makes the armed operations match it. If no SQE can be had even after a
 * submit (kernel out of memory), the object goes on a kick list retried at
 * the next poll instead of failing.
 */
#include "config.h"
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include "io-uring.h"

static void stream_kick(struct ur_loop *u, kt_stream *s);

/* ---- set-up ------------------------------------------------------------------- */

static int ur_init(kt_loop *loop, const kt_loop_options *opts)
{
    struct ur_loop *u = kt_calloc(1, sizeof(*u));
    if (u == NULL)
        return -ENOMEM;
    u->loop = loop;
    int rc = kt__ur_setup(u, opts);
    if (rc < 0) {
        kt__ur_free(u);
        return rc;
    }
    loop->io_data = u;
    return 0;
}

static void ur_destroy(kt_loop *loop)
{
    struct ur_loop *u = loop->io_data;
    if (u == NULL)
        return;
    /* Watch contexts live as long as the loop (kt_loop_free stops them
     * just before); anything still armed dies with the ring. */
    kt_free(loop->wake.io_ctx);
    loop->wake.io_ctx = NULL;
    kt_free(loop->sig.io_ctx);
    loop->sig.io_ctx = NULL;
    kt__ur_free(u);
    loop->io_data = NULL;
}

/* ---- submission ---------------------------------------------------------------- */

/* See io-uring.h. */
struct io_uring_sqe *kt__ur_sqe(struct ur_loop *u)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (sqe)
        return sqe;
    if (kt__ur_enable(u) < 0)
        return NULL;
    (void)io_uring_submit(&u->ring);
    return io_uring_get_sqe(&u->ring);
}

void kt__ur_kick_later(struct ur_loop *u, struct ur_node *n)
{
    n->next_kick = u->kicks;
    u->kicks = n;
}

void kt__ur_kick_unlink(struct ur_loop *u, struct ur_node *n)
{
    for (struct ur_node **pp = &u->kicks; *pp; pp = &(*pp)->next_kick) {
        if (*pp == n) {
            *pp = n->next_kick;
            return;
        }
    }
}

/* Retry what could not get an SQE last time. */
static void run_kicks(struct ur_loop *u)
{
    struct ur_node *n = u->kicks;
    u->kicks = NULL;
    while (n) {
        struct ur_node *next = n->next_kick;
        switch (n->type) {
        case KT__H_STREAM: {
            kt_stream *s = ((struct ur_stream *)n)->s;
            s->io_flags &= ~SF_KICK;
            stream_kick(u, s);
            break;
        }
        default: /* a listener or a watch */
            ((struct ur_multi *)n)->flags &= ~MF_KICK;
            kt__ur_multi_kick(u, (struct ur_multi *)n);
            break;
        }
        n = next;
    }
}

bool kt__ur_cancel_ud(struct ur_loop *u, uint64_t ud)
{
    struct io_uring_sqe *sqe = kt__ur_sqe(u);
    if (sqe == NULL)
        return false;
    io_uring_prep_cancel64(sqe, ud, 0);
    io_uring_sqe_set_data64(sqe, UT_NONE);
    return true;
}

/* ---- streams ----------------------------------------------------------------------- */

static int ur_stream_open(kt_stream *s)
{
    struct ur_stream *c = kt_calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->node.type = KT__H_STREAM;
    c->s = s;
    c->slot = kt__ur_slot_take(s->loop->io_data, s->h.fd);
    s->io_ctx = c;
    s->io_flags = 0;
    s->io_pending = 0;
    return 0;
}

/* Every op is done: close the fd and hand the stream back. */
static void stream_finish(struct ur_loop *u, kt_stream *s)
{
    struct ur_stream *c = s->io_ctx;
    if (s->io_flags & SF_KICK)
        kt__ur_kick_unlink(u, &c->node);
    if (c->slot >= 0)
        kt__ur_slot_clear(u, (unsigned)c->slot);
    if (c->op) /* not reached: the op's CQE came first (io_pending) */
        kt__ur_op_put(u, c->op);
    kt_free(c);
    s->io_ctx = NULL;
    if (s->h.fd >= 0)
        close(s->h.fd);
    s->h.fd = -1;
    kt__stream_closed(s);
}

/* Release one op or hold; finish a close, or bring the ops in line. */
static void stream_put(struct ur_loop *u, kt_stream *s)
{
    if (--s->io_pending == 0 && (s->io_flags & SF_CLOSING))
        stream_finish(u, s);
    else if (!(s->io_flags & SF_CLOSING))
        stream_kick(u, s);
}

/* Queue one send over the queued output. One vector goes as a SEND
 * (the kernel reads only the output block); several as a SENDMSG, whose
 * header and vectors live in a pooled op block until the CQE. */
static bool stream_send(struct ur_loop *u, kt_stream *s)
{
    struct ur_stream *c = s->io_ctx;
    struct iovec iov[UR_IOV_MAX];
    int n = kt__stream_iov(s, iov, UR_IOV_MAX);
    if (n <= 0)
        return true;
    struct ur_op *op = NULL;
    if (n > 1 && (op = kt__ur_op_get(u)) == NULL)
        return false; /* out of memory: retried from the kick list */
    struct io_uring_sqe *sqe = kt__ur_sqe(u);
    if (sqe == NULL) {
        if (op)
            kt__ur_op_put(u, op);
        return false;
    }
    if (n == 1) {
        io_uring_prep_send(sqe, s->h.fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
    } else {
        memcpy(op->send.iov, iov, (size_t)n * sizeof(iov[0]));
        memset(&op->send.msg, 0, sizeof(op->send.msg));
        op->send.msg.msg_iov = op->send.iov;
        op->send.msg.msg_iovlen = (size_t)n;
        io_uring_prep_sendmsg(sqe, s->h.fd, &op->send.msg, MSG_NOSIGNAL);
        c->op = op;
    }
    ur_sqe_target(sqe, c);
    io_uring_sqe_set_data64(sqe, ud_pack(s, UT_SEND));
    s->io_flags |= SF_SEND;
    s->io_pending++;
    return true;
}

/* Watch for the peer's end (see the top of the file); once per stream. */
static bool stream_arm_hup(struct ur_loop *u, kt_stream *s)
{
    struct io_uring_sqe *sqe = kt__ur_sqe(u);
    if (sqe == NULL)
        return false;
    io_uring_prep_poll_add(sqe, s->h.fd, POLLRDHUP);
    ur_sqe_target(sqe, s->io_ctx);
    io_uring_sqe_set_data64(sqe, ud_pack(s, UT_HUP));
    s->io_flags |= SF_HUP_WATCH;
    s->io_pending++;
    return true;
}

static bool stream_arm_recv(struct ur_loop *u, kt_stream *s)
{
    if (!(s->io_flags & (SF_HUP_WATCH | SF_HUP)) && !stream_arm_hup(u, s))
        return false;
    struct io_uring_sqe *sqe = kt__ur_sqe(u);
    if (sqe == NULL)
        return false;
    if (u->single_recv || (s->io_flags & SF_HUP))
        io_uring_prep_recv(sqe, s->h.fd, NULL, 0, 0); /* each CQE ends it: re-armed */
    else
        io_uring_prep_recv_multishot(sqe, s->h.fd, NULL, 0, 0);
    ur_sqe_target(sqe, s->io_ctx);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = UR_BGID;
    io_uring_sqe_set_data64(sqe, ud_pack(s, UT_RECV));
    s->io_flags |= SF_RECV;
    s->io_pending++;
    return true;
}

/* Cancel the stream's op `busy` (tag) unless its cancel (`sent`) is
 * queued already; false when no SQE could be had. */
static bool cancel_op(struct ur_loop *u, kt_stream *s, unsigned busy, unsigned sent, unsigned tag)
{
    if (!(s->io_flags & busy) || (s->io_flags & sent))
        return true;
    if (!kt__ur_cancel_ud(u, ud_pack(s, tag)))
        return false;
    s->io_flags |= sent;
    return true;
}

/* Make the armed ops match what is wanted. */
static void stream_kick(struct ur_loop *u, kt_stream *s)
{
    unsigned f = s->io_flags;
    bool ok = true;
    if (f & SF_CLOSING) {
        /* One cancel per op in flight, each found by its user_data: the
         * kernel looks that up in a hash, where a cancel by descriptor
         * walks every armed op of the ring (closing n streams would cost
         * O(n^2)). */
        ok = cancel_op(u, s, SF_RECV, SF_RECV_CANCEL, UT_RECV) &&
             cancel_op(u, s, SF_SEND, SF_SEND_CANCEL, UT_SEND) &&
             cancel_op(u, s, SF_CONNECT, SF_CONN_CANCEL, UT_CONNECT) &&
             cancel_op(u, s, SF_HUP_WATCH, SF_HUP_CANCEL, UT_HUP);
    } else if (!(f & SF_CONNECT)) {
        if ((f & SF_WANT_FLUSH) && !(f & (SF_SEND | SF_WDONE))) {
            if (stream_send(u, s))
                s->io_flags &= ~SF_WANT_FLUSH;
            else
                ok = false;
        }
        f = s->io_flags;
        if ((f & SF_WANT_READ) && !(f & (SF_RECV | SF_RDONE))) {
            ok = stream_arm_recv(u, s) && ok;
        } else if (!(f & SF_WANT_READ) && (f & SF_RECV) && !(f & SF_RECV_CANCEL)) {
            if (kt__ur_cancel_ud(u, ud_pack(s, UT_RECV)))
                s->io_flags |= SF_RECV_CANCEL;
            else
                ok = false;
        }
    }
    if (!ok && !(s->io_flags & SF_KICK)) {
        s->io_flags |= SF_KICK;
        kt__ur_kick_later(u, &((struct ur_stream *)s->io_ctx)->node);
    }
}

static int ur_connect(kt_stream *s, const kt_addr *addr)
{
    struct ur_loop *u = s->loop->io_data;
    struct ur_stream *c = s->io_ctx;
    struct ur_op *op = kt__ur_op_get(u);
    if (op == NULL)
        return -ENOMEM;
    struct io_uring_sqe *sqe = kt__ur_sqe(u);
    if (sqe == NULL) {
        kt__ur_op_put(u, op);
        return -EAGAIN;
    }
    op->addr = *addr;
    c->op = op;
    io_uring_prep_connect(sqe, s->h.fd, (const struct sockaddr *)&op->addr.ss, op->addr.len);
    ur_sqe_target(sqe, c);
    io_uring_sqe_set_data64(sqe, ud_pack(s, UT_CONNECT));
    s->io_flags |= SF_CONNECT;
    s->io_pending++;
    return 0;
}

static int ur_read_start(kt_stream *s)
{
    s->io_flags |= SF_WANT_READ;
    if (!(s->io_flags & SF_CLOSING))
        stream_kick(s->loop->io_data, s);
    return 0;
}

static void ur_read_stop(kt_stream *s)
{
    s->io_flags &= ~SF_WANT_READ;
    if (!(s->io_flags & SF_CLOSING))
        stream_kick(s->loop->io_data, s);
}

static void ur_flush(kt_stream *s)
{
    unsigned f = s->io_flags;
    if (f & (SF_SEND | SF_CLOSING | SF_WDONE))
        return; /* the completion of the send in flight continues */
    s->io_flags |= SF_WANT_FLUSH;
    stream_kick(s->loop->io_data, s);
}

static void ur_close(kt_stream *s)
{
    if (s->io_flags & SF_CLOSING)
        return;
    s->io_flags |= SF_CLOSING;
    s->io_flags &= ~(SF_WANT_READ | SF_WANT_FLUSH);
    if (s->io_pending == 0)
        stream_finish(s->loop->io_data, s);
    else
        stream_kick(s->loop->io_data, s);
}

static void on_recv(struct ur_loop *u, kt_stream *s, int res, unsigned flags)
{
    bool more = flags & IORING_CQE_F_MORE;
    if (!more) {
        s->io_flags &= ~(SF_RECV | SF_RECV_CANCEL); /* io_pending kept as a hold */
        if (res == -ENOBUFS)
            u->dry = true; /* re-armed by stream_put, submitted after the refill */
        if (res == -EINVAL && !u->single_recv) {
            /* Linux 5.19 has buffer rings but no multishot receive: from
             * now on one receive per completion, re-armed each time. */
            kt_log_info("io_uring: no multishot receive, re-arming receives one at a time");
            u->single_recv = true;
            stream_put(u, s);
            return;
        }
    }
    bool live = !(s->io_flags & (SF_CLOSING | SF_RDONE));
    if (flags & IORING_CQE_F_BUFFER) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        if (res > 0 && live)
            kt__stream_data(s, u->bufs + (size_t)bid * UR_BUF_SIZE, (size_t)res);
        ur_buf_release(u, bid);
    }
    if (res == 0 && live) {
        s->io_flags |= SF_RDONE;
        kt__stream_eof(s);
    } else if (res < 0 && live && res != -ENOBUFS && res != -ECANCELED) {
        s->io_flags |= SF_RDONE;
        kt__stream_failed(s, res);
    }
    if (!more)
        stream_put(u, s);
}

/* The peer's end has come (res: the poll mask) or the watch was cancelled:
 * a multishot receive still armed is replaced by one-shot ones. */
static void on_hup(struct ur_loop *u, kt_stream *s, int res)
{
    s->io_flags &= ~(SF_HUP_WATCH | SF_HUP_CANCEL); /* io_pending kept as a hold */
    if (res > 0 && !(s->io_flags & SF_CLOSING)) {
        s->io_flags |= SF_HUP;
        if ((s->io_flags & (SF_RECV | SF_RECV_CANCEL)) == SF_RECV &&
            kt__ur_cancel_ud(u, ud_pack(s, UT_RECV)))
            s->io_flags |= SF_RECV_CANCEL; /* its last CQE re-arms */
    }
    stream_put(u, s);
}

/* The op's CQE has come: the kernel reads its block no more. */
static void stream_op_done(struct ur_loop *u, kt_stream *s)
{
    struct ur_stream *c = s->io_ctx;
    if (c->op) {
        kt__ur_op_put(u, c->op);
        c->op = NULL;
    }
}

static void on_send(struct ur_loop *u, kt_stream *s, int res)
{
    stream_op_done(u, s);
    s->io_flags &= ~(SF_SEND | SF_SEND_CANCEL); /* io_pending kept as a hold */
    if (!(s->io_flags & (SF_CLOSING | SF_WDONE))) {
        if (res > 0) {
            kt__stream_sent(s, (size_t)res);
            /* A partial send, or output queued meanwhile: continue. */
            if (!(s->io_flags & (SF_CLOSING | SF_SEND)) && s->out_bytes > 0)
                s->io_flags |= SF_WANT_FLUSH;
        } else if (res != -ECANCELED) {
            /* 0 for a non-empty send does not happen on a stream socket;
             * were it to, failing beats re-sending forever. */
            s->io_flags |= SF_WDONE;
            kt__stream_failed(s, res < 0 ? res : -EIO);
        }
    }
    stream_put(u, s); /* kicks the continuation */
}

static void on_connect(struct ur_loop *u, kt_stream *s, int res)
{
    stream_op_done(u, s);
    s->io_flags &= ~(SF_CONNECT | SF_CONN_CANCEL);
    if (!(s->io_flags & SF_CLOSING)) {
        if (res < 0)
            s->io_flags |= SF_RDONE | SF_WDONE;
        kt__stream_connected(s, res);
    }
    stream_put(u, s);
}

/* ---- polling ------------------------------------------------------------------------ */

static void dispatch(struct ur_loop *u, uint64_t ud, int res, unsigned flags)
{
    void *p = ud_ptr(ud);
    unsigned tag = (unsigned)(ud & UT_MASK);
    if (tag != UT_SEND && tag != UT_NONE) {
        u->seen_real = true;
        u->nreal++;
    }
    switch (tag) {
    case UT_RECV: on_recv(u, p, res, flags); break;
    case UT_SEND: on_send(u, p, res); break;
    case UT_ACCEPT: kt__ur_on_accept(u, p, res, flags); break;
    case UT_CONNECT: on_connect(u, p, res); break;
    case UT_WATCH: kt__ur_on_watch(u, p, res, flags); break;
    case UT_HUP: on_hup(u, p, res); break;
    default: break; /* cancel results, liburing's own timeouts */
    }
}

/* Dispatch what the CQ holds. CQEs are copied out and the ring advanced
 * before the callbacks run, which may queue SQEs (and even submit them when
 * the SQ fills). Bounded so that a flood cannot starve timers. */
static void reap(struct ur_loop *u)
{
    struct { uint64_t ud; int32_t res; uint32_t flags; } batch[UR_REAP_BATCH];
    unsigned limit = 4 * u->ring.cq.ring_entries, total = 0, used = u->posted;
    while (total < limit) {
        unsigned head, n = 0;
        struct io_uring_cqe *cqe;
        io_uring_for_each_cqe(&u->ring, head, cqe) {
            batch[n].ud = cqe->user_data;
            batch[n].res = cqe->res;
            batch[n].flags = cqe->flags;
            if (++n == UR_REAP_BATCH)
                break;
        }
        if (n == 0)
            break;
        io_uring_cq_advance(&u->ring, n);
        for (unsigned i = 0; i < n; i++)
            dispatch(u, batch[i].ud, batch[i].res, batch[i].flags);
        total += n;
    }
    kt__ur_window_tick(u, used - u->posted); /* buffers the kernel filled since the refill */
    if (u->dry) {
        u->dry = false;
        kt__ur_window_grow(u);
    }
    kt__ur_bufs_refill(u);
}

/* Completion work is pending in the kernel (DEFER_TASKRUN + TASKRUN_FLAG). */
static inline bool work_pending(const struct ur_loop *u)
{
    return u->deferred && (IO_URING_READ_ONCE(*u->ring.sq.kflags) & IORING_SQ_TASKRUN);
}

/* Submit what is queued now; 0 or a fatal negative errno. */
static int submit_now(struct ur_loop *u)
{
    if (io_uring_sq_ready(&u->ring) == 0)
        return 0;
    int rc = io_uring_submit(&u->ring);
    kt__ur_slots_release(u);
    return rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY ? rc : 0;
}

/*
 * kt_loop_set_batch_wait(): the wait that follows a busy spell asks the
 * kernel for a batch (min_wait_usec of IORING_ENTER_EXT_ARG, in the field
 * older headers call pad): up to batch_events completions, or what came
 * in batch_us, or after that the first. The timeout always goes with it,
 * one second standing for "none", since a minimum wait without one ends
 * when it expires even with nothing to show.
 */
static int ur_batch_wait(kt_loop *loop, uint64_t wait_ns, unsigned events)
{
    struct ur_loop *u = loop->io_data;
    if (wait_ns && (!u->min_wait || !u->deferred))
        return -ENOTSUP;
    uint64_t us = wait_ns / 1000 + (wait_ns % 1000 != 0);
    if (us > UR_BATCH_MAX_US)
        us = UR_BATCH_MAX_US;
    if (events > UR_BATCH_MAX_EVENTS)
        events = UR_BATCH_MAX_EVENTS;
    if (us == u->batch_us && events == u->batch_events)
        return 0; /* a reload that changed nothing keeps what was learnt */
    u->batch_us = (unsigned)us;
    u->batch_events = events;
    u->batch_avg = 16 * events;
    u->batch_skip = u->batch_backoff = 0;
    return 0;
}

/*
 * A batch wait is due when the loop has been busy since it last slept.
 * Whether waiting pays shows in what the wait gathers: with few clients,
 * each waiting for its own reply, the completions that could come have
 * come long before the wait ends, and every batch wait is time lost. So
 * while batches are thin (their smoothed size under a quarter of
 * batch_events), each one skips the next busy waits, 1, 2, 4 ... up to 64
 * of them; once they fill again, every busy wait is a batch wait.
 */
static bool batch_due(struct ur_loop *u, int64_t timeout_ns)
{
    unsigned busy = u->batch_events / 8 > 2 ? u->batch_events / 8 : 2;
    bool due = u->batch_us && u->nreal >= busy && io_uring_sq_ready(&u->ring) == 0 &&
               (timeout_ns < 0 || timeout_ns >= 1000); /* a timer due within 1 us: no gathering */
    u->nreal = 0;
    if (due && u->batch_skip) {
        u->batch_skip--;
        due = false;
    }
    u->in_batch = due;
    return due;
}

static void batch_judge(struct ur_loop *u)
{
    unsigned full = u->batch_events / 4 > 2 ? u->batch_events / 4 : 2;
    u->in_batch = false;
    u->batch_avg = (3 * u->batch_avg + 16 * u->nreal) / 4;
    if (u->batch_avg >= 16 * full) {
        u->batch_backoff = 0;
        return;
    }
    u->batch_backoff = u->batch_backoff ? u->batch_backoff * 2 : 1;
    if (u->batch_backoff > 64)
        u->batch_backoff = 64;
    u->batch_skip = u->batch_backoff;
}

static struct __kernel_timespec ns_ts(int64_t ns)
{
    return (struct __kernel_timespec){ .tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000 };
}

static int wait_batch(struct ur_loop *u, int64_t timeout_ns)
{
    if (timeout_ns < 0)
        timeout_ns = 1000000000;
    /* a timer due sooner ends the gathering: it is never made late */
    unsigned min_us = (uint64_t)timeout_ns / 1000 < u->batch_us ? (unsigned)(timeout_ns / 1000)
                                                                 : u->batch_us;
    struct __kernel_timespec ts = ns_ts(timeout_ns);
    struct io_uring_getevents_arg arg = {
        .sigmask_sz = _NSIG / 8,
        .pad = min_us,
        .ts = (uint64_t)(uintptr_t)&ts,
    };
    u->loop->stats.batch_waits++;
    int rc = io_uring_enter2((unsigned)u->ring.ring_fd, 0, u->batch_events,
                             IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, (sigset_t *)&arg,
                             sizeof arg);
    return rc; /* liburing 2.3 returns -errno itself */
}

/*
 * One iteration's enters: submit everything queued, wait, dispatch.
 *
 * With DEFER_TASKRUN the submit comes first on its own: the iteration's
 * sends complete during it, and their CQEs are dispatched at once, so that
 * they do not end the wait that follows (costing another iteration and
 * another enter to go to sleep). If something else completed inline too (a
 * receive armed on a socket with data waiting), or the dispatch gave the
 * loop work, the poll returns without waiting. Otherwise, or without
 * DEFER_TASKRUN, one enter submits and waits.
 */
static int ur_poll(kt_loop *loop, int64_t timeout_ns)
{
    struct ur_loop *u = loop->io_data;
    int rc = kt__ur_enable(u);
    if (rc < 0)
        return rc;
    if (u->kicks)
        run_kicks(u);

    if (timeout_ns == 0 || io_uring_cq_ready(&u->ring) > 0 || work_pending(u)) {
        rc = io_uring_submit_and_get_events(&u->ring);
        kt__loop_woke(loop);
        goto reap;
    }
    if (u->deferred) {
        if ((rc = submit_now(u)) < 0)
            return rc;
        if (io_uring_cq_ready(&u->ring) > 0) {
            uint64_t entry = loop->now;
            u->seen_real = false;
            kt__loop_woke(loop);
            reap(u);
            if (u->seen_real || kt__loop_has_ready(loop) || work_pending(u))
                return 0;
            if ((rc = submit_now(u)) < 0) /* continuations of partial sends */
                return rc;
            if (timeout_ns > 0) { /* the deadline has not moved */
                int64_t spent = (int64_t)(loop->now - entry);
                timeout_ns = timeout_ns > spent ? timeout_ns - spent : 0;
            }
        }
    }
    if (batch_due(u, timeout_ns)) {
        rc = wait_batch(u, timeout_ns);
    } else if (timeout_ns < 0) {
        rc = io_uring_submit_and_wait(&u->ring, 1);
    } else {
        struct __kernel_timespec ts = ns_ts(timeout_ns);
        struct io_uring_cqe *cqe;
        rc = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
    }
    kt__loop_woke(loop);
reap:
    kt__ur_slots_release(u);
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
        return rc;
    reap(u);
    if (u->in_batch)
        batch_judge(u);
    return 0;
}

const struct kt__io_ops kt__io_uring = {
    .name = "io_uring",
    .kind = KT_IO_URING,
    .init = ur_init,
    .destroy = ur_destroy,
    .poll = ur_poll,
    .listen_start = kt__ur_listen_start,
    .listen_stop = kt__ur_listen_stop,
    .listen_close = kt__ur_listen_close,
    .stream_open = ur_stream_open,
    .connect = ur_connect,
    .read_start = ur_read_start,
    .read_stop = ur_read_stop,
    .flush = ur_flush,
    .close = ur_close,
    .batch_wait = ur_batch_wait,
    .watch_start = kt__ur_watch_start,
    .watch_stop = kt__ur_watch_stop,
};
