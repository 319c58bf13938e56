/*
 * io-uring.h - private to the io_uring backend (io-uring.c: streams,
 * submission and the poll; io-uring-listen.c: listeners and the loop's
 * watches; io-uring-res.c: the ring, the receive buffers and the
 * fixed-file slots). Nothing outside those three files includes it.
 */
#ifndef KETTLE_IO_URING_H
#define KETTLE_IO_URING_H

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
#define UR_MAX_SLOTS       16384    /* fixed-file table size (also <= RLIMIT_NOFILE) */

/* user_data tags */
enum { UT_NONE = 0, UT_ACCEPT, UT_RECV, UT_SEND, UT_CONNECT, UT_WATCH, UT_HUP };
#define UT_MASK 7u

/* stream io_flags */
#define SF_RECV        0x0001u /* multishot recv armed (terminal CQE not seen) */
#define SF_RECV_CANCEL 0x0002u /* cancel sent for the armed recv */
#define SF_SEND        0x0004u /* a send in flight */
#define SF_CONNECT     0x0008u /* connect in flight */
#define SF_CLOSING     0x0010u /* close called */
#define SF_SEND_CANCEL 0x0020u /* cancel sent for the send in flight (closing) */
#define SF_RDONE       0x0040u /* EOF or receive error: never re-arm */
#define SF_WDONE       0x0080u /* send error: send no more */
#define SF_WANT_READ   0x0100u /* read_start without read_stop */
#define SF_WANT_FLUSH  0x0200u /* flush asked while a send could not start */
#define SF_KICK        0x0400u /* on the kick list */
#define SF_CONN_CANCEL 0x0800u /* cancel sent for the connect in flight (closing) */
#define SF_HUP_WATCH   0x1000u /* the poll for the peer's end is armed */
#define SF_HUP_CANCEL  0x2000u /* cancel sent for that poll (closing) */
#define SF_HUP         0x4000u /* the peer's end came: receive one shot at a time */

/* listener and watch context flags: each runs one multishot op (accept;
 * a poll for readability) */
#define MF_ARMED   0x01u /* armed: its last CQE not seen yet */
#define MF_CANCEL  0x02u /* its cancel is queued */
#define MF_WANT    0x04u /* wanted armed */
#define MF_KICK    0x08u /* on the kick list */
#define LF_BUSY    0x10u /* listener: calling back into it */
#define LF_CLOSING 0x20u /* listener: closed, the accept's last CQE finishes the close */

/* Every context starts with this node: the kick list links them. */
struct ur_node {
    struct ur_node *next_kick;
    uint8_t type; /* enum kt__handle_type of the owner */
};

/* What the kernel may read until an op's CQE: a SENDMSG's header and
 * vectors, or a CONNECT's address. Taken from the loop's pool only while
 * such an op is in flight (a stream has at most one: no send while
 * connecting), so that an idle stream carries none of it. */
struct ur_op {
    union {
        struct ur_op *next_free;     /* on u->ops_free */
        struct {
            struct msghdr msg;
            struct iovec iov[UR_IOV_MAX];
        } send;
        kt_addr addr;
    };
};

struct ur_stream {
    struct ur_node node; /* first: the node is the context */
    kt_stream *s;
    int slot;                        /* fixed-file slot, -1 if none */
    struct ur_op *op;                /* SENDMSG or CONNECT in flight, else NULL */
};

/* A listener's or a watch's context: one multishot op (accept; a poll). */
struct ur_multi {
    struct ur_node node;             /* first: the node is the context */
    unsigned flags;                  /* MF_*, LF_* */
    union {
        kt_listener *l;              /* node.type KT__H_LISTENER */
        struct kt__watch *w;         /* node.type KT__H_WATCH */
    };
};

#ifndef IORING_FEAT_MIN_TIMEOUT /* Linux 6.12; liburing 2.8 */
#define IORING_FEAT_MIN_TIMEOUT (1U << 15)
#endif
#define UR_BATCH_MAX_US 60000000u  /* kt_loop_set_batch_wait: longest gathering (60 s) */
#define UR_BATCH_MAX_EVENTS 4096u  /* and most completions waited for */

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
    bool dry;                        /* a receive saw ENOBUFS in this poll */
    bool deferred;                   /* DEFER_TASKRUN + TASKRUN_FLAG: completions are
                                      * posted only inside our enters; pending
                                      * completion work shows in the SQ flags */
    bool seen_real;                  /* reap dispatched more than send/cancel results */
    bool min_wait;                   /* the kernel takes a minimum wait (6.12) */
    unsigned batch_us, batch_events; /* kt_loop_set_batch_wait(); batch_us 0: off */
    unsigned nreal;                  /* real completions since the loop last slept */
    bool in_batch;                   /* this poll waits for a batch */
    unsigned batch_skip, batch_backoff; /* busy waits left to skip, and how many after the next thin batch */
    unsigned batch_avg;              /* completions a batch wait gathers, x16, smoothed */
    bool single_recv;                /* the kernel refused multishot receive (5.19) */
    unsigned *slots;                 /* free fixed-file slots (a stack) */
    unsigned nslots;                 /* free slots on the stack */
    unsigned *limbo;                 /* slots whose clearing is queued: free after submit */
    unsigned nlimbo;
    struct ur_node *kicks;           /* objects waiting for an SQE */
    struct ur_op *ops_free;          /* the op pool's free list */
    unsigned nops_free;
    unsigned ops_used, ops_peak;     /* ops in flight now, most this epoch */
    kt_loop *loop;
};

static inline uint64_t ud_pack(const void *p, unsigned tag) { return (uint64_t)(uintptr_t)p | tag; }
static inline void *ud_ptr(uint64_t ud) { return (void *)(uintptr_t)(ud & ~(uint64_t)UT_MASK); }

/* ---- io-uring-res.c ------------------------------------------------------- */

/* Create the ring (SINGLE_ISSUER + DEFER_TASKRUN, else COOP_TASKRUN, else
 * plain; never SQPOLL), the provided-buffer ring and, if it can, the
 * fixed-file table, sized from opts. 0, or the set-up error unchanged
 * (-ENOSYS, -EPERM, -EINVAL, -ENOMEM) so that KT_IO_AUTO can fall back;
 * then the caller releases what was made with kt__ur_free(). */
int kt__ur_setup(struct ur_loop *u, const kt_loop_options *opts);
/* Release what kt__ur_setup created, and u. */
void kt__ur_free(struct ur_loop *u);
/* Enable the ring (created disabled) from the calling thread, once. */
int kt__ur_enable(struct ur_loop *u);

/* Top the posted receive buffers up to the window. */
void kt__ur_bufs_refill(struct ur_loop *u);
/* The ring ran dry: post twice as many. */
void kt__ur_window_grow(struct ur_loop *u);
/* One poll used `used` buffers; shrinks an oversized window per epoch. */
void kt__ur_window_tick(struct ur_loop *u, unsigned used);

/* A fixed-file slot holding fd, or -1 (no table, table full). */
int kt__ur_slot_take(struct ur_loop *u, int fd);
/* Queue the clearing of a slot; reusable after the next full submit. */
void kt__ur_slot_clear(struct ur_loop *u, unsigned slot);
/* After a submit that took every SQE: cleared slots become free. */
void kt__ur_slots_release(struct ur_loop *u);

/* An op block from the pool (allocated only when the pool is empty), or
 * NULL if out of memory. Give it back with kt__ur_op_put() after its CQE. */
struct ur_op *kt__ur_op_get(struct ur_loop *u);
/* Return an op block to the pool. */
void kt__ur_op_put(struct ur_loop *u, struct ur_op *op);

/* ---- io-uring.c: submission, shared with io-uring-listen.c ----------------- */

/* An SQE, submitting what is queued if the SQ is full. NULL only if the
 * kernel refuses the submit. */
struct io_uring_sqe *kt__ur_sqe(struct ur_loop *u);
/* Retry n's kick at the next poll (it could not get an SQE). */
void kt__ur_kick_later(struct ur_loop *u, struct ur_node *n);
/* Take n off the kick list (its object goes away). */
void kt__ur_kick_unlink(struct ur_loop *u, struct ur_node *n);
/* Queue a cancel of the op with user_data ud (its CQE is ignored). */
bool kt__ur_cancel_ud(struct ur_loop *u, uint64_t ud);

/* ---- io-uring-listen.c: listeners and the loop's watches --------------------- */

int kt__ur_listen_start(kt_listener *l);
void kt__ur_listen_stop(kt_listener *l);
void kt__ur_listen_close(kt_listener *l);
int kt__ur_watch_start(kt_loop *loop, struct kt__watch *w);
void kt__ur_watch_stop(kt_loop *loop, struct kt__watch *w);
/* Make the armed op of a listener or watch context match what is wanted;
 * without an SQE, retry from the kick list. */
void kt__ur_multi_kick(struct ur_loop *u, struct ur_multi *m);
/* Their completions. */
void kt__ur_on_accept(struct ur_loop *u, struct ur_multi *c, int res, unsigned flags);
void kt__ur_on_watch(struct ur_loop *u, struct ur_multi *c, int res, unsigned flags);

/* The kernel filled buffer bid; the data has been delivered (and copied
 * if kept): the buffer is free again. */
static inline void ur_buf_release(struct ur_loop *u, unsigned bid)
{
    u->posted--;
    u->spare[u->nspare++] = (uint16_t)bid;
}

/* Point an SQE at the stream's socket: its fixed slot when it has one. */
static inline void ur_sqe_target(struct io_uring_sqe *sqe, const struct ur_stream *c)
{
    if (c->slot >= 0) {
        sqe->fd = c->slot;
        sqe->flags |= IOSQE_FIXED_FILE;
    }
}

#endif
