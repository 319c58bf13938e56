/*
 * io-uring.c - the completion backend: one io_uring per loop.
 *
 * Listeners run one multishot accept; streams one multishot recv that picks
 * its buffers from a ring of provided buffers (16 KiB each), handed back to
 * the kernel as soon as kt__stream_data() returns (it copies what the user
 * leaves unconsumed). Sends are queued by flush (one in flight per stream,
 * SEND for one vector, SENDMSG for several) and go out together with every
 * other SQE of the iteration in the next poll's single io_uring_enter.
 * Wake-up and signals are multishot polls.
 *
 *   user_data = object pointer | tag (low 3 bits; objects are 8-aligned)
 *
 *   stream io_pending = ops in flight (recv, send, connect) + holds taken
 *   while a completion calls back into the user; the fd is closed and
 *   kt__stream_closed() called only when it drops to 0 after close, so no
 *   completion ever refers to freed memory.
 *
 * Every "start"/"stop" sets the wanted state and calls a kick function that
 * makes the armed operations match it. If no SQE can be had even after a
 * submit (kernel out of memory), the object goes on a kick list retried at
 * the next poll instead of failing.
 */
#include "config.h"
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <liburing.h>
#include "internal.h"

#define UR_DEFAULT_ENTRIES 4096u
#define UR_MAX_ENTRIES     32768u
#define UR_DEFAULT_BUFS    1024u
#define UR_MAX_BUFS        32768u   /* the buffer ring holds at most 2^15 */
#define UR_BUF_SIZE        16384u
#define UR_BGID            0
#define UR_IOV_MAX         32       /* vectors per send: up to 512 KiB of blocks */
#define UR_REAP_BATCH      64
#define UR_WINDOW_MIN      64       /* receive buffers posted at least */
#define UR_WINDOW_EPOCH    4096     /* polls between window shrink checks */
#define UR_BOOKKEEP_WAIT   100000   /* ns: bound on waiting past bookkeeping CQEs */

/* user_data tags */
enum { UT_NONE = 0, UT_ACCEPT, UT_RECV, UT_SEND, UT_CONNECT, UT_WATCH };
#define UT_MASK 7u

/* stream io_flags */
#define SF_RECV        0x0001u /* multishot recv armed (terminal CQE not seen) */
#define SF_RECV_CANCEL 0x0002u /* cancel sent for the armed recv */
#define SF_SEND        0x0004u /* a send in flight */
#define SF_CONNECT     0x0008u /* connect in flight */
#define SF_CLOSING     0x0010u /* close called */
#define SF_CANCEL_ALL  0x0020u /* cancel by fd sent (closing) */
#define SF_RDONE       0x0040u /* EOF or receive error: never re-arm */
#define SF_WDONE       0x0080u /* send error: send no more */
#define SF_WANT_READ   0x0100u /* read_start without read_stop */
#define SF_WANT_FLUSH  0x0200u /* flush asked while a send could not start */
#define SF_KICK        0x0400u /* on the kick list */

/* listener context flags */
#define LF_ARMED   0x01u /* multishot accept armed */
#define LF_CANCEL  0x02u
#define LF_WANT    0x04u
#define LF_BUSY    0x08u /* calling back into the listener */
#define LF_KICK    0x10u
#define LF_ORPHAN  0x20u /* on u->orphans */

/* watch flags (kept in struct ur_watch) */
#define WF_ARMED  0x01u
#define WF_CANCEL 0x02u
#define WF_WANT   0x04u
#define WF_KICK   0x08u

/* Every context starts with this node: the kick list links them. */
struct ur_node {
    struct ur_node *next_kick;
    uint8_t type; /* enum kt__handle_type of the owner */
};

struct ur_stream {
    struct ur_node node; /* first: the node is the context */
    kt_stream *s;
    struct msghdr msg;               /* SENDMSG: stable until the CQE */
    kt_addr addr;                    /* CONNECT: stable until the CQE */
    struct iovec iov[UR_IOV_MAX];
};

struct ur_listener {
    struct ur_node node;
    kt_listener *l;                  /* NULL once closed (an orphan) */
    unsigned flags;                  /* LF_* */
    struct ur_listener *next_orphan; /* u->orphans */
};

struct ur_watch {
    struct ur_node node;
    struct kt__watch *w;
    unsigned flags;                  /* WF_* */
};

struct ur_loop {
    struct io_uring ring;
    bool enabled;                    /* created disabled: enabled by the first poll */
    struct io_uring_buf_ring *br;    /* provided buffer ring (mmap'd) */
    size_t br_bytes;
    char *bufs;                      /* nbufs * UR_BUF_SIZE (mmap'd) */
    size_t bufs_bytes;
    unsigned nbufs;
    uint16_t *spare;                 /* buffer ids not posted: a stack, hottest on top */
    unsigned nspare;
    unsigned posted;                 /* buffers in the kernel's ring */
    unsigned window;                 /* how many to keep posted */
    unsigned peak, epoch;            /* most buffers used by one poll, polls this epoch */
    unsigned bookkeep;               /* queued SQEs that complete at submit with a CQE
                                      * of no interest to the user (sends, cancels) */
    unsigned bk_misses;              /* waits past them that timed out in a row */
    bool dry;                        /* a receive saw ENOBUFS in this poll */
    struct ur_node *kicks;           /* objects waiting for an SQE */
    struct ur_listener *orphans;     /* closed listeners with an accept in flight */
    kt_loop *loop;
};

static inline uint64_t ud_pack(const void *p, unsigned tag) { return (uint64_t)(uintptr_t)p | tag; }
static inline void *ud_ptr(uint64_t ud) { return (void *)(uintptr_t)(ud & ~(uint64_t)UT_MASK); }

static void stream_kick(struct ur_loop *u, kt_stream *s);
static void listener_kick(struct ur_loop *u, struct ur_listener *c);
static void watch_kick(struct ur_loop *u, struct ur_watch *c);

/* ---- ring set-up ----------------------------------------------------------- */

/* A ring created with SINGLE_ISSUER is bound to the task that enables it,
 * so it is created disabled and enabled by the thread that first polls
 * (the one running the loop), which then also registers the ring fd. */
static int ur_enable(struct ur_loop *u)
{
    if (u->enabled)
        return 0;
    if (u->ring.flags & IORING_SETUP_R_DISABLED) {
        int rc = io_uring_register(u->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
        if (rc < 0)
            return rc;
    }
    u->enabled = true;
    (void)io_uring_register_ring_fd(&u->ring); /* optional: cheaper enters */
    return 0;
}

static int ring_create(struct ur_loop *u, unsigned entries)
{
    static const unsigned tries[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL |
            IORING_SETUP_R_DISABLED,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_SUBMIT_ALL,
        0,
    };
    int rc = -EINVAL;
    for (size_t i = 0; i < KT__ARRAY_LEN(tries); i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = tries[i];
        rc = io_uring_queue_init_params(entries, &u->ring, &p);
        if (rc == 0) {
            /* Without FEAT_EXT_ARG liburing would implement the timed
             * wait with timeout SQEs; without NODROP completions could be
             * lost. Both came with 5.5-5.11: older kernels use epoll. */
            if (!(p.features & IORING_FEAT_EXT_ARG) || !(p.features & IORING_FEAT_NODROP)) {
                io_uring_queue_exit(&u->ring);
                return -ENOSYS;
            }
            return 0;
        }
        if (rc != -EINVAL)
            return rc; /* ENOSYS, EPERM, ENOMEM: no point in other flags */
    }
    return rc;
}

static unsigned pow2_clamp(unsigned v, unsigned dflt, unsigned max)
{
    if (v == 0)
        v = dflt;
    if (v > max)
        v = max;
    unsigned p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

/*
 * Receive buffers. The kernel takes them from the head of the ring and we
 * add at the tail, so with every buffer posted each receive would land in
 * the least recently used one: with 1024 x 16 KiB that is a cold cache line
 * on a page out of the TLB's reach, every time. So only a window of
 * buffers is posted; a used buffer goes on top of a stack of spares at
 * once and the window is topped up from the top (the hottest) before the
 * next submit. The window doubles when the ring runs dry (ENOBUFS: the
 * receive is re-armed, no byte is lost) and halves when an epoch of polls
 * never needed half of it.
 */
static void bufs_refill(struct ur_loop *u)
{
    int mask = io_uring_buf_ring_mask(u->nbufs);
    int n = 0;
    while (u->posted < u->window && u->nspare > 0) {
        unsigned bid = u->spare[--u->nspare];
        io_uring_buf_ring_add(u->br, u->bufs + (size_t)bid * UR_BUF_SIZE, UR_BUF_SIZE,
                              (unsigned short)bid, mask, n++);
        u->posted++;
    }
    if (n)
        io_uring_buf_ring_advance(u->br, n);
}

/* The kernel filled buffer bid; the data has been delivered (and copied
 * if kept): the buffer is free again. */
static inline void buf_release(struct ur_loop *u, unsigned bid)
{
    u->posted--;
    u->spare[u->nspare++] = (uint16_t)bid;
}

static void window_grow(struct ur_loop *u)
{
    if (u->window < u->nbufs) {
        u->window *= 2;
        kt_log_debug("io_uring: receive buffers ran out, posting %u", u->window);
    }
}

/* Once per epoch: shrink a window that was twice too large all along. */
static void window_tick(struct ur_loop *u, unsigned used)
{
    if (used > u->peak)
        u->peak = used;
    if (++u->epoch < UR_WINDOW_EPOCH)
        return;
    if (u->window > UR_WINDOW_MIN && 4 * u->peak < u->window)
        u->window /= 2;
    u->epoch = 0;
    u->peak = 0;
}

/* Register the provided-buffer ring by hand (liburing 2.3 has no
 * io_uring_setup_buf_ring) and fill it with every buffer. */
static int bufs_create(struct ur_loop *u, unsigned nbufs)
{
    long page = sysconf(_SC_PAGESIZE);
    u->nbufs = nbufs;
    u->br_bytes = ((size_t)nbufs * sizeof(struct io_uring_buf) + (size_t)page - 1) &
                  ~((size_t)page - 1);
    void *br = mmap(NULL, u->br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (br == MAP_FAILED)
        return -ENOMEM;
    u->br = br;
    u->bufs_bytes = (size_t)nbufs * UR_BUF_SIZE;
    void *bufs = mmap(NULL, u->bufs_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    if (bufs == MAP_FAILED)
        return -ENOMEM;
    u->bufs = bufs;

    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)u->br;
    reg.ring_entries = nbufs;
    reg.bgid = UR_BGID;
    int rc = io_uring_register_buf_ring(&u->ring, &reg, 0);
    if (rc < 0)
        return rc; /* EINVAL before 5.19: AUTO falls back */
    io_uring_buf_ring_init(u->br);
    u->spare = kt_malloc(nbufs * sizeof(*u->spare));
    if (u->spare == NULL)
        return -ENOMEM;
    for (unsigned i = 0; i < nbufs; i++)
        u->spare[i] = (uint16_t)(nbufs - 1 - i); /* buffer 0 on top */
    u->nspare = nbufs;
    u->window = nbufs < UR_WINDOW_MIN ? nbufs : UR_WINDOW_MIN;
    if (getenv("KT_UR_FULLWIN")) u->window = nbufs; /* EXPERIMENT */
    bufs_refill(u);
    return 0;
}

static void ur_free(struct ur_loop *u)
{
    if (u->ring.ring_fd >= 0)
        io_uring_queue_exit(&u->ring);
    if (u->bufs)
        munmap(u->bufs, u->bufs_bytes);
    if (u->br)
        munmap(u->br, u->br_bytes);
    kt_free(u->spare);
    kt_free(u);
}

static int ur_init(kt_loop *loop, const kt_loop_options *opts)
{
    struct ur_loop *u = kt_calloc(1, sizeof(*u));
    if (u == NULL)
        return -ENOMEM;
    u->loop = loop;
    u->ring.ring_fd = -1;
    unsigned entries = pow2_clamp(opts ? opts->uring_entries : 0, UR_DEFAULT_ENTRIES, UR_MAX_ENTRIES);
    unsigned nbufs = pow2_clamp(opts ? opts->uring_buffers : 0, UR_DEFAULT_BUFS, UR_MAX_BUFS);
    int rc = ring_create(u, entries);
    if (rc < 0) {
        u->ring.ring_fd = -1;
        ur_free(u);
        return rc;
    }
    if ((rc = bufs_create(u, nbufs)) < 0) {
        ur_free(u);
        return rc;
    }
    loop->io_data = u;
    return 0;
}

static unsigned long dbg_bounded, dbg_timeouts, dbg_extra, dbg_extra_waits, dbg_polls; /* EXPERIMENT */
static void ur_destroy(kt_loop *loop)
{
    if (getenv("KT_UR_DBG")) fprintf(stderr, "polls %lu bounded %lu timeouts %lu extra-waits %lu extra %lu\n", dbg_polls, dbg_bounded, dbg_timeouts, dbg_extra_waits, dbg_extra);
    struct ur_loop *u = loop->io_data;
    if (u == NULL)
        return;
    /* Watch contexts live as long as the loop (kt_loop_free stops them
     * just before); anything still armed dies with the ring. */
    kt_free(loop->wake.io_ctx);
    loop->wake.io_ctx = NULL;
    kt_free(loop->sig.io_ctx);
    loop->sig.io_ctx = NULL;
    while (u->orphans) {
        struct ur_listener *c = u->orphans;
        u->orphans = c->next_orphan;
        kt_free(c);
    }
    ur_free(u);
    loop->io_data = NULL;
}

/* ---- submission ---------------------------------------------------------------- */

/* An SQE, submitting what is queued if the SQ is full. NULL only if the
 * kernel refuses the submit. */
static struct io_uring_sqe *ur_sqe(struct ur_loop *u)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (sqe)
        return sqe;
    if (ur_enable(u) < 0)
        return NULL;
    if (io_uring_submit(&u->ring) >= 0)
        u->bookkeep = 0; /* their CQEs may be reaped before the next wait */
    return io_uring_get_sqe(&u->ring);
}

static void kick_later(struct ur_loop *u, struct ur_node *n)
{
    n->next_kick = u->kicks;
    u->kicks = n;
}

static void kick_unlink(struct ur_loop *u, struct ur_node *n)
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
        case KT__H_LISTENER:
            ((struct ur_listener *)n)->flags &= ~LF_KICK;
            listener_kick(u, (struct ur_listener *)n);
            break;
        case KT__H_WATCH:
            ((struct ur_watch *)n)->flags &= ~WF_KICK;
            watch_kick(u, (struct ur_watch *)n);
            break;
        }
        n = next;
    }
}

/* Queue a cancel of the op with user_data ud (its CQE is ignored). */
static bool cancel_ud(struct ur_loop *u, uint64_t ud)
{
    struct io_uring_sqe *sqe = ur_sqe(u);
    if (sqe == NULL)
        return false;
    io_uring_prep_cancel64(sqe, ud, 0);
    io_uring_sqe_set_data64(sqe, UT_NONE);
    u->bookkeep++;
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
        kick_unlink(u, &c->node);
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

/* Queue one send over the queued output. */
static bool stream_send(struct ur_loop *u, kt_stream *s)
{
    struct ur_stream *c = s->io_ctx;
    int n = kt__stream_iov(s, c->iov, UR_IOV_MAX);
    if (n <= 0)
        return true;
    struct io_uring_sqe *sqe = ur_sqe(u);
    if (sqe == NULL)
        return false;
    if (n == 1) {
        io_uring_prep_send(sqe, s->h.fd, c->iov[0].iov_base, c->iov[0].iov_len, MSG_NOSIGNAL);
    } else {
        memset(&c->msg, 0, sizeof(c->msg));
        c->msg.msg_iov = c->iov;
        c->msg.msg_iovlen = (size_t)n;
        io_uring_prep_sendmsg(sqe, s->h.fd, &c->msg, MSG_NOSIGNAL);
    }
    io_uring_sqe_set_data64(sqe, ud_pack(s, UT_SEND));
    s->io_flags |= SF_SEND;
    s->io_pending++;
    u->bookkeep++;
    return true;
}

static bool stream_arm_recv(struct ur_loop *u, kt_stream *s)
{
    struct io_uring_sqe *sqe = ur_sqe(u);
    if (sqe == NULL)
        return false;
    io_uring_prep_recv_multishot(sqe, s->h.fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = UR_BGID;
    io_uring_sqe_set_data64(sqe, ud_pack(s, UT_RECV));
    s->io_flags |= SF_RECV;
    s->io_pending++;
    return true;
}

/* Make the armed ops match what is wanted. */
static void stream_kick(struct ur_loop *u, kt_stream *s)
{
    unsigned f = s->io_flags;
    bool ok = true;
    if (f & SF_CLOSING) {
        if ((f & (SF_RECV | SF_SEND | SF_CONNECT)) && !(f & SF_CANCEL_ALL)) {
            struct io_uring_sqe *sqe = ur_sqe(u);
            if (sqe) {
                io_uring_prep_cancel_fd(sqe, s->h.fd, IORING_ASYNC_CANCEL_ALL);
                io_uring_sqe_set_data64(sqe, UT_NONE);
                s->io_flags |= SF_CANCEL_ALL;
                u->bookkeep++;
            } else {
                ok = false;
            }
        }
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
            if (cancel_ud(u, ud_pack(s, UT_RECV)))
                s->io_flags |= SF_RECV_CANCEL;
            else
                ok = false;
        }
    }
    if (!ok && !(s->io_flags & SF_KICK)) {
        s->io_flags |= SF_KICK;
        kick_later(u, &((struct ur_stream *)s->io_ctx)->node);
    }
}

static int ur_connect(kt_stream *s, const kt_addr *addr)
{
    struct ur_loop *u = s->loop->io_data;
    struct ur_stream *c = s->io_ctx;
    struct io_uring_sqe *sqe = ur_sqe(u);
    if (sqe == NULL)
        return -EAGAIN;
    c->addr = *addr;
    io_uring_prep_connect(sqe, s->h.fd, (const struct sockaddr *)&c->addr.ss, c->addr.len);
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
    }
    bool live = !(s->io_flags & (SF_CLOSING | SF_RDONE));
    if (flags & IORING_CQE_F_BUFFER) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        if (res > 0 && live)
            kt__stream_data(s, u->bufs + (size_t)bid * UR_BUF_SIZE, (size_t)res);
        buf_release(u, bid);
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

static void on_send(struct ur_loop *u, kt_stream *s, int res)
{
    s->io_flags &= ~SF_SEND; /* io_pending kept as a hold */
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
    s->io_flags &= ~SF_CONNECT;
    if (!(s->io_flags & SF_CLOSING)) {
        if (res < 0)
            s->io_flags |= SF_RDONE | SF_WDONE;
        kt__stream_connected(s, res);
    }
    stream_put(u, s);
}

/* ---- listeners ------------------------------------------------------------------- */

/*
 * The multishot accept names the context, not the listener, so that
 * listen_close can be synchronous: the listener is detached at once (fd
 * closed, kt__listener_closed) and an armed context lives on as an orphan
 * until its cancelled accept reports its last CQE; connections it still
 * accepted meanwhile are closed.
 */
static void listener_ctx_free(struct ur_loop *u, struct ur_listener *c)
{
    if (c->flags & LF_KICK)
        kick_unlink(u, &c->node);
    if (c->flags & LF_ORPHAN) {
        for (struct ur_listener **pp = &u->orphans; *pp; pp = &(*pp)->next_orphan) {
            if (*pp == c) {
                *pp = c->next_orphan;
                break;
            }
        }
    }
    kt_free(c);
}

static void listener_kick(struct ur_loop *u, struct ur_listener *c)
{
    bool ok = true;
    if ((c->flags & LF_WANT) && c->l) {
        if (!(c->flags & LF_ARMED)) {
            struct io_uring_sqe *sqe = ur_sqe(u);
            if (sqe) {
                io_uring_prep_multishot_accept(sqe, c->l->h.fd, NULL, NULL,
                                               SOCK_NONBLOCK | SOCK_CLOEXEC);
                io_uring_sqe_set_data64(sqe, ud_pack(c, UT_ACCEPT));
                c->flags |= LF_ARMED;
            } else {
                ok = false;
            }
        }
    } else if ((c->flags & LF_ARMED) && !(c->flags & LF_CANCEL)) {
        if (cancel_ud(u, ud_pack(c, UT_ACCEPT)))
            c->flags |= LF_CANCEL;
        else
            ok = false;
    }
    if (!ok && !(c->flags & LF_KICK)) {
        c->flags |= LF_KICK;
        kick_later(u, &c->node);
    }
}

static int ur_listen_start(kt_listener *l)
{
    struct ur_listener *c = l->io_ctx;
    if (c == NULL) {
        c = kt_calloc(1, sizeof(*c));
        if (c == NULL)
            return -ENOMEM;
        c->node.type = KT__H_LISTENER;
        c->l = l;
        l->io_ctx = c;
    }
    c->flags |= LF_WANT;
    listener_kick(l->loop->io_data, c);
    return 0;
}

static void ur_listen_stop(kt_listener *l)
{
    struct ur_listener *c = l->io_ctx;
    if (c) {
        c->flags &= ~LF_WANT;
        listener_kick(l->loop->io_data, c);
    }
}

static void ur_listen_close(kt_listener *l)
{
    struct ur_loop *u = l->loop->io_data;
    struct ur_listener *c = l->io_ctx;
    if (c) {
        l->io_ctx = NULL;
        c->l = NULL;
        c->flags &= ~LF_WANT;
        if (c->flags & (LF_ARMED | LF_BUSY)) {
            c->flags |= LF_ORPHAN;
            c->next_orphan = u->orphans;
            u->orphans = c;
            listener_kick(u, c);
        } else {
            listener_ctx_free(u, c);
        }
    }
    if (l->h.fd >= 0)
        close(l->h.fd); /* an armed accept keeps the socket until cancelled */
    l->h.fd = -1;
    kt__listener_closed(l);
}

static void on_accept(struct ur_loop *u, struct ur_listener *c, int res, unsigned flags)
{
    bool more = flags & IORING_CQE_F_MORE;
    if (!more)
        c->flags &= ~(LF_ARMED | LF_CANCEL);
    c->flags |= LF_BUSY;
    if (res >= 0) {
        if (c->l)
            kt__listener_accepted(c->l, res);
        else
            close(res);
    } else if (res != -ECANCELED && c->l) {
        kt__listener_failed(c->l, res);
    }
    c->flags &= ~LF_BUSY;
    if (c->l == NULL) {
        if (!(c->flags & LF_ARMED))
            listener_ctx_free(u, c);
    } else if (!more) {
        listener_kick(u, c);
    }
}

/* ---- watches ---------------------------------------------------------------------- */

/* The wake-up eventfd and the signalfd: a multishot poll each. Their
 * callbacks drain the descriptor, so an edge per wake-up is enough. */
static void watch_kick(struct ur_loop *u, struct ur_watch *c)
{
    bool ok = true;
    if (c->flags & WF_WANT) {
        if (!(c->flags & WF_ARMED)) {
            struct io_uring_sqe *sqe = ur_sqe(u);
            if (sqe) {
                io_uring_prep_poll_multishot(sqe, c->w->h.fd, POLLIN);
                io_uring_sqe_set_data64(sqe, ud_pack(c, UT_WATCH));
                c->flags |= WF_ARMED;
            } else {
                ok = false;
            }
        }
    } else if ((c->flags & WF_ARMED) && !(c->flags & WF_CANCEL)) {
        struct io_uring_sqe *sqe = ur_sqe(u);
        if (sqe) {
            io_uring_prep_poll_remove(sqe, ud_pack(c, UT_WATCH));
            io_uring_sqe_set_data64(sqe, UT_NONE);
            c->flags |= WF_CANCEL;
        } else {
            ok = false;
        }
    }
    if (!ok && !(c->flags & WF_KICK)) {
        c->flags |= WF_KICK;
        kick_later(u, &c->node);
    }
}

static int ur_watch_start(kt_loop *loop, struct kt__watch *w)
{
    struct ur_watch *c = w->io_ctx;
    if (c == NULL) {
        c = kt_calloc(1, sizeof(*c));
        if (c == NULL)
            return -ENOMEM;
        c->node.type = KT__H_WATCH;
        c->w = w;
        w->io_ctx = c;
    }
    c->flags |= WF_WANT;
    watch_kick(loop->io_data, c);
    return 0;
}

static void ur_watch_stop(kt_loop *loop, struct kt__watch *w)
{
    struct ur_watch *c = w->io_ctx;
    if (c == NULL)
        return;
    c->flags &= ~WF_WANT;
    watch_kick(loop->io_data, c);
}

static void on_watch(struct ur_loop *u, struct ur_watch *c, int res, unsigned flags)
{
    if (!(flags & IORING_CQE_F_MORE))
        c->flags &= ~(WF_ARMED | WF_CANCEL);
    if (res > 0 && (c->flags & WF_WANT))
        c->w->cb(c->w);
    if (!(flags & IORING_CQE_F_MORE))
        watch_kick(u, c);
}

/* ---- polling ------------------------------------------------------------------------ */

static void dispatch(struct ur_loop *u, uint64_t ud, int res, unsigned flags)
{
    void *p = ud_ptr(ud);
    switch ((unsigned)(ud & UT_MASK)) {
    case UT_RECV: on_recv(u, p, res, flags); break;
    case UT_SEND: on_send(u, p, res); break;
    case UT_ACCEPT: on_accept(u, p, res, flags); break;
    case UT_CONNECT: on_connect(u, p, res); break;
    case UT_WATCH: on_watch(u, p, res, flags); break;
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
    window_tick(u, used - u->posted); /* buffers the kernel filled since the refill */
    if (u->dry) {
        u->dry = false;
        window_grow(u);
    }
    bufs_refill(u);
}

/*
 * One enter per iteration: submit everything queued and wait. Sends and
 * cancels mostly complete during the submit itself, and their CQEs would
 * end the wait at once, costing a second enter per iteration to sleep. So
 * the wait asks for one CQE more than those; in case some of them do not
 * complete at once (a full socket) the wait is bounded, and after bounded
 * waits that keep expiring the trick is tried only now and then.
 */
static int ur_poll(kt_loop *loop, int64_t timeout_ns)
{
    dbg_polls++;
    struct ur_loop *u = loop->io_data;
    int rc = ur_enable(u);
    if (rc < 0)
        return rc;
    if (u->kicks)
        run_kicks(u);
    unsigned extra = u->bookkeep;
    u->bookkeep = 0;
    if (getenv("KT_UR_NOBK")) extra = 0; /* EXPERIMENT */

    if (timeout_ns == 0 || io_uring_cq_ready(&u->ring) > 0) {
        rc = io_uring_submit_and_get_events(&u->ring);
        kt__loop_woke(loop);
    } else {
        bool bounded = false;
        if (extra > 0 && (u->bk_misses < 4 || (u->epoch & 15) == 0) &&
            (timeout_ns < 0 || timeout_ns > UR_BOOKKEEP_WAIT)) {
            timeout_ns = UR_BOOKKEEP_WAIT;
            bounded = true;
        } else if (extra > 0 && timeout_ns >= 0 && timeout_ns <= UR_BOOKKEEP_WAIT) {
            /* the loop's own deadline bounds it already */
        } else {
            extra = 0;
        }
        if (timeout_ns < 0) {
            rc = io_uring_submit_and_wait(&u->ring, 1 + extra);
        } else {
            struct __kernel_timespec ts = {
                .tv_sec = timeout_ns / 1000000000,
                .tv_nsec = timeout_ns % 1000000000,
            };
            struct io_uring_cqe *cqe;
            rc = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1 + extra, &ts, NULL);
        }
        kt__loop_woke(loop);
        if (bounded)
            u->bk_misses = rc == -ETIME ? u->bk_misses + 1 : 0;
        if (bounded) dbg_bounded++; /* EXPERIMENT */
        if (bounded && rc == -ETIME) dbg_timeouts++; /* EXPERIMENT */
        if (extra) dbg_extra += extra, dbg_extra_waits++; /* EXPERIMENT */
    }
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
        return rc;
    reap(u);
    return 0;
}

const struct kt__io_ops kt__io_uring = {
    .name = "io_uring",
    .kind = KT_IO_URING,
    .init = ur_init,
    .destroy = ur_destroy,
    .poll = ur_poll,
    .listen_start = ur_listen_start,
    .listen_stop = ur_listen_stop,
    .listen_close = ur_listen_close,
    .stream_open = ur_stream_open,
    .connect = ur_connect,
    .read_start = ur_read_start,
    .read_stop = ur_read_stop,
    .flush = ur_flush,
    .close = ur_close,
    .watch_start = ur_watch_start,
    .watch_stop = ur_watch_stop,
};
