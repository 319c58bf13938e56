/*
 * internal.h - libkettle's private declarations: the loop and stream
 * structures, the I/O backend operations table, and the hooks by which the
 * loop drives the timer and future modules.
 *
 * Ownership of this file by module: the loop/stream core (loop.c,
 * stream.c, stream-read.c, listener.c) owns struct kt_loop, kt_stream and
 * kt_listener; block.c the blocks and their free lists; timer.c struct
 * kt__timer_heap; future.c and future-comb.c keep their state behind
 * loop->futures (future-internal.h); each backend keeps its state behind
 * loop->io_data and the io_ctx of streams, listeners and watches (the
 * readiness core io-ready.c and its header serve epoll and libevent).
 */
#ifndef KETTLE_INTERNAL_H
#define KETTLE_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <sys/uio.h>
#include <kettle/kettle.h>

#define KT__UNUSED(x) ((void)(x))
#define KT__ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- handles: what an I/O backend dispatches on -------------------------- */

enum kt__handle_type { KT__H_STREAM = 1, KT__H_LISTENER, KT__H_WATCH };

/* First member of every object registered with a backend. */
struct kt__handle {
    uint8_t type; /* enum kt__handle_type */
    int fd;
};

/* A readable descriptor watched on the loop's behalf (eventfd, signalfd). */
struct kt__watch {
    struct kt__handle h;
    void (*cb)(struct kt__watch *w); /* called while the fd is readable */
    void *io_ctx;                    /* backend private */
    uint32_t io_flags;               /* backend private */
};

/* ---- blocks (block.c) ------------------------------------------------------ */

/* A block of queued output, or of kept input (KT__S_RBLOCK). Blocks come
 * in size classes, each from a bounded per-loop free list (block.c): a
 * stream's first block is small, since most replies are a few dozen bytes,
 * and the blocks after it grow only while its output keeps growing. A
 * stream with nothing queued holds none. */
typedef struct kt__block {
    struct kt__block *next;
    uint32_t pos;  /* first unsent byte */
    uint32_t last; /* end of queued bytes */
    uint32_t size; /* capacity of data[] */
    uint8_t cls;   /* size class; KT__BLOCK_BIG: made to measure, never listed */
    char data[];
} kt__block;

#define KT__BLOCK_NCLASS 3 /* 512 B, 4 KiB and 16 KiB allocations */
#define KT__BLOCK_BIG KT__BLOCK_NCLASS /* the class of a block made to measure */
/* The largest class's capacity: the unit of bulk output. */
#define KT__BLOCK_SIZE (16384 - sizeof(kt__block))

/* Usable bytes of a block of class cls (< KT__BLOCK_NCLASS): its
 * allocation less the header. */
static inline uint32_t kt__block_capacity(unsigned cls)
{
    return (cls == 0 ? 512u : cls == 1 ? 4096u : 16384u) - (uint32_t)sizeof(kt__block);
}

/* The spare blocks of one class. */
struct kt__block_list {
    kt__block *head;
    uint32_t len; /* blocks listed, at most the class's bound */
    uint32_t low; /* fewest listed since the last trim: spares nobody needed */
};

/* ---- timers (timer.c) ------------------------------------------------------ */

/* A heap slot keeps the deadline next to the pointer so that sifting reads
 * only the array (one cache line holds the four children of a node); the
 * timer itself is touched only to break ties and to store its new index. */
struct kt__timer_slot {
    uint64_t deadline;
    kt_timer *t;
};

struct kt__timer_heap {
    struct kt__timer_slot *slots; /* 4-ary min-heap ordered by (deadline, seq) */
    void *mem;                    /* the allocation slots points into (aligned) */
    size_t len, cap;              /* len = timers armed */
    uint64_t next_seq;
};

int kt__timers_init(kt_loop *loop);
void kt__timers_destroy(kt_loop *loop);
/* Nanoseconds until the nearest deadline from loop->now: 0 if one is due,
 * -1 if there is no timer. */
int64_t kt__timers_timeout(const kt_loop *loop);
/* Fire every timer due at loop->now (timers armed during this pass wait for
 * the next one). */
void kt__timers_run(kt_loop *loop);

/* ---- futures (future.c) ------------------------------------------------------ */

struct kt__futures; /* free list, ready queue: private to future.c */

int kt__futures_init(kt_loop *loop);
/* Run queued continuations until the queue is empty (continuations that
 * queue more run in the same call). Returns the number run. */
size_t kt__futures_run(kt_loop *loop);
bool kt__futures_ready(const kt_loop *loop);
void kt__futures_destroy(kt_loop *loop);
uint64_t kt__futures_live(const kt_loop *loop);

/* ---- the backend operations table ------------------------------------------ */

/*
 * One const table per backend (io-epoll.c, io-uring.c, io-libevent.c),
 * at the level of streams rather than raw readiness, so that a completion
 * backend can use multishot accept/recv and batched sends. Completions are
 * reported back through the kt__stream_* / kt__listener_* functions below.
 */
struct kt__io_ops {
    const char *name;
    kt_io_kind kind;
    /* Set up loop->io_data. -ENOSYS, -EPERM, -EINVAL (and -ENOMEM for
     * locked memory) from io_uring make KT_IO_AUTO fall back to epoll. */
    int (*init)(kt_loop *loop, const kt_loop_options *opts);
    void (*destroy)(kt_loop *loop);
    /* Submit queued work, wait up to timeout_ns (-1 forever, 0 not at all)
     * and dispatch completions. 0 or negative errno (EINTR is not an error). */
    int (*poll)(kt_loop *loop, int64_t timeout_ns);

    /* Accept connections: kt__listener_accepted() for each, and
     * kt__listener_failed() on errors (EMFILE included). */
    int (*listen_start)(kt_listener *l);
    void (*listen_stop)(kt_listener *l);
    /* Stop and close l->h.fd; call kt__listener_closed() once nothing is in
     * flight (may be synchronous). */
    void (*listen_close)(kt_listener *l);

    /* A new stream on s->h.fd (accepted, connecting or opened). */
    int (*stream_open)(kt_stream *s);
    /* Start a non-blocking connect; report with kt__stream_connected(). */
    int (*connect)(kt_stream *s, const kt_addr *addr);
    /* Deliver received bytes with kt__stream_data(), FIN with
     * kt__stream_eof(), errors with kt__stream_failed(). */
    int (*read_start)(kt_stream *s);
    void (*read_stop)(kt_stream *s);
    /* Send queued output: kt__stream_iov() gives the vectors,
     * kt__stream_sent() retires what went out. Called once per iteration for
     * each stream with new output; a completion backend queues the send and
     * submits it with the next poll. */
    void (*flush)(kt_stream *s);
    /* Stop everything, close s->h.fd, and call kt__stream_closed() once no
     * operation is in flight (may be synchronous). */
    void (*close)(kt_stream *s);

    /* Call w->cb while w->h.fd is readable; stop before the fd closes (a
     * watch may be started again on a new descriptor). */
    int (*watch_start)(kt_loop *loop, struct kt__watch *w);
    void (*watch_stop)(kt_loop *loop, struct kt__watch *w);

    /* kt_loop_set_batch_wait(); NULL where the backend has none. */
    int (*batch_wait)(kt_loop *loop, uint64_t wait_ns, unsigned events);
};

extern const struct kt__io_ops kt__io_epoll;
#ifdef HAVE_LIBURING
extern const struct kt__io_ops kt__io_uring;
#endif
#ifdef HAVE_LIBEVENT
extern const struct kt__io_ops kt__io_libevent;
#endif

/* ---- core structures (loop.c, stream.c) ------------------------------------ */

struct kt__post {
    struct kt__post *next;
    kt_post_cb fn;
    void *arg;
};

struct kt_listener {
    struct kt__handle h;
    kt_loop *loop;
    kt_accept_cb cb;
    void *arg;
    unsigned flags;     /* KT__L_* */
    kt_timer pause;     /* EMFILE back-off */
    void *io_ctx;       /* backend private */
    uint32_t io_flags;  /* backend private */
    kt_listener *prev_all, *next_all; /* loop->listeners: every open listener */
    kt_listener *next_closed;         /* loop->closed_listeners: freed at the end of the iteration */
    uint64_t emfile_at;               /* loop time of the last EMFILE/ENFILE */
    kt_listener_close_cb close_cb;    /* kt_listener_close_notify: runs before the free */
    void *close_arg;
};

#define KT__L_ACCEPTING 0x01u /* the backend is accepting (set by stream.c; backends stop their accept batch when it clears) */
#define KT__L_PAUSED    0x02u /* the user paused it */
#define KT__L_CLOSING   0x04u
#define KT__L_UNIX      0x08u
#define KT__L_OWNPATH   0x10u /* kt_listen bound the unix path: unlink it on close */
#define KT__L_EMFILE    0x20u /* in an out-of-descriptors episode (logged once) */

struct kt_stream {
    struct kt__handle h;
    kt_loop *loop;
    kt_stream_cbs cbs;
    void *arg;
    unsigned flags;           /* KT__S_* */

    char *rbuf;               /* unconsumed input, NULL when none */
    size_t rlen, rcap;        /* kept bytes; room from rbuf on */
    size_t rhead;             /* consumed bytes before rbuf in its allocation */

    kt__block *out_head, *out_tail;
    size_t out_bytes;         /* queued, not yet sent */
    size_t high, low;         /* backpressure marks */

    kt_stream *next_dirty;    /* loop->dirty list: output to flush */
    kt_stream *next_pending;  /* loop->pending: kept input (or a connect error) to deliver */
    kt_stream *next_closed;   /* loop->closing: backend done, on_close due */
    kt_stream *prev_all, *next_all; /* every open stream of the loop */

    kt_timer timer;           /* connect timeout, then linger on close */
    uint64_t linger;
    int connect_err;          /* immediate connect failure, reported from loop->pending */

    void *io_ctx;             /* backend private */
    uint32_t io_pending;      /* backend: operations in flight */
    uint32_t io_flags;        /* backend private flags */
};

#define KT__S_READING     0x0001u /* the user wants bytes */
#define KT__S_CONNECTING  0x0002u
#define KT__S_EOF         0x0004u /* FIN received */
#define KT__S_SHUT_WANTED 0x0008u /* FIN to send once output drains */
#define KT__S_SHUT_DONE   0x0010u
#define KT__S_CLOSING     0x0020u /* kt_stream_close called */
#define KT__S_DIRTY       0x0040u /* on loop->dirty */
#define KT__S_PENDING     0x0080u /* on loop->pending */
#define KT__S_BLOCKED     0x0100u /* above the high-water mark */
#define KT__S_FAILED      0x0200u /* on_error delivered */
#define KT__S_UNIX        0x0400u
#define KT__S_CLOSED      0x0800u /* backend finished: on loop->closing */
#define KT__S_IN_READ_CB  0x1000u
#define KT__S_EOF_DUE     0x2000u /* FIN received while not reading: on_eof after read_start */
#define KT__S_RBLOCK      0x4000u /* rbuf is the data[] of a kt__block from the free list */
#define KT__S_CLOSE_SENT  0x8000u /* io->close has been called: nothing more is asked of the backend */

/* Backends: after any kt__stream_* call, s may have been closed by a user
 * callback. It stays allocated until the end of the iteration, but once
 * KT__S_CLOSED is set (or h.fd is -1) the backend must not touch its fd. */

struct kt_loop {
    const struct kt__io_ops *io;
    void *io_data;              /* backend private */
    const char *fallback_reason;
    char fallback_buf[96];      /* fallback_reason points here */
    uint64_t now;               /* monotonic ns, read once per iteration */
    uint64_t woke;              /* when io->poll's wait returned (kt__loop_woke), 0 if not reported */
    bool stop;
    bool running;               /* inside kt_loop_run (no recursion) */
    bool freeing;               /* inside kt_loop_free: posts and signals are dropped */

    struct kt__timer_heap timers;
    struct kt__futures *futures;
    kt_defer *defer_head, *defer_tail; /* queued defers, run at the end of the iteration */

    kt_stream *dirty;           /* streams with output to flush */
    kt_stream *pending;         /* streams with kept input to redeliver */
    kt_stream *closing;         /* closed by the backend, on_close due */
    kt_stream *all;             /* every stream not yet freed */
    kt_listener *listeners;     /* every listener not yet closed */
    kt_listener *closed_listeners; /* closed, freed at the end of the iteration */
    uint32_t nlisteners;        /* listeners not yet freed (open or closing) */
    struct kt__block_list free_blocks[KT__BLOCK_NCLASS]; /* spare blocks by class */
    uint64_t blocks_trimmed;    /* loop time of the last trim of free_blocks */
    int spare_fd;               /* released on EMFILE */

    struct kt__watch wake;      /* eventfd */
    pthread_mutex_t post_lock;
    struct kt__post *post_head, *post_tail;

    struct kt__watch sig;       /* signalfd, -1 until a signal is watched */
    sigset_t sigmask;           /* signals routed to the signalfd */
    sigset_t sig_blocked;       /* those this loop blocked itself: unblocked at free */
    struct { kt_signal_cb cb; void *arg; } sigs[65];

    kt_loop_stats stats;
};

/* ---- completions reported by backends (stream.c) ------------------------- */

/* Bytes arrived for s; they are delivered (with kept bytes first) before
 * this returns, and copied if not consumed, so the backend may reuse data. */
void kt__stream_data(kt_stream *s, const char *data, size_t len);
void kt__stream_eof(kt_stream *s);
void kt__stream_failed(kt_stream *s, int err);
void kt__stream_connected(kt_stream *s, int status);
/* Up to max vectors over the queued output; returns the count. */
int kt__stream_iov(kt_stream *s, struct iovec *iov, int max);
/* n bytes went out: free sent blocks, fire on_drain, finish a pending
 * shutdown or flush-close. */
void kt__stream_sent(kt_stream *s, size_t n);
/* The backend is done with s: queue on_close and the free. */
void kt__stream_closed(kt_stream *s);

/* A connection was accepted (fd non-blocking, close-on-exec). */
void kt__listener_accepted(kt_listener *l, int fd);
/* Accepting failed with err: EMFILE/ENFILE trigger the spare-descriptor
 * trick and a timed pause; other errors are logged. */
void kt__listener_failed(kt_listener *l, int err);
void kt__listener_closed(kt_listener *l);
/* listener.c -> stream.c: a stream for an accepted fd (TCP_NODELAY on TCP,
 * io->stream_open done), or NULL with fd closed. */
kt_stream *kt__stream_accepted(kt_loop *loop, int fd, bool unix_socket);

/* ---- the loop's calls into stream.c ----------------------------------------- */

/* Backends call this right after their wait returns (before dispatching):
 * it refreshes loop->now and lets the stats exclude the wait. Optional. */
void kt__loop_woke(kt_loop *loop);
/* Work is ready that must not wait for I/O (kept input, closes to finish,
 * output to flush, continuations, defers): the poll must not block. */
bool kt__loop_has_ready(const kt_loop *loop);
/* Deliver kept input and deferred connect errors to the streams of batch:
 * loop->pending as the loop took it at the start of the iteration (so a
 * read_start is answered in the next iteration, never re-entrantly). */
void kt__streams_run_pending(kt_loop *loop, kt_stream *batch);
/* io->flush each stream on loop->dirty once. */
void kt__streams_flush(kt_loop *loop);
/* on_close and free for loop->closing. */
void kt__streams_finish(kt_loop *loop);
/* Close callbacks and free for loop->closed_listeners (listener.c). */
void kt__listeners_finish(kt_loop *loop);
/* kt_loop_free: close (streams without flushing) the streams and
 * listeners left open. True if it closed any. */
bool kt__streams_close_all(kt_loop *loop);

/* ---- blocks (block.c) -------------------------------------------------------- */

/* A block of class cls (< KT__BLOCK_NCLASS), from the free list or new;
 * NULL on ENOMEM. */
kt__block *kt__block_get(kt_loop *loop, unsigned cls);
/* A block made to measure for n bytes (more than any class holds); NULL on
 * ENOMEM. Freed by kt__block_put. */
kt__block *kt__block_big(size_t n);
/* The smallest class holding n bytes, KT__BLOCK_BIG if none does. */
unsigned kt__block_class_for(size_t n);
/* The class of a block to follow prev (NULL: the queue is empty) that
 * should hold n bytes: small first, one class up while output keeps
 * growing. */
unsigned kt__block_next_class(const kt__block *prev, size_t n);
/* Back to its class's free list while that is under its bound, else freed. */
void kt__block_put(kt_loop *loop, kt__block *b);
/* Free the spare blocks nobody took since the last trim (kt__streams_flush
 * does it about once a second). */
void kt__blocks_trim(kt_loop *loop);
/* kt_loop_free: free every spare block. */
void kt__blocks_destroy(kt_loop *loop);
/* Bytes of spare blocks (headers included) on the free lists. */
size_t kt__blocks_spare(const kt_loop *loop);

/* ---- the two halves of a stream (stream.c, stream-read.c) -------------------- */

/* Bytes s holds for output blocks and kept input (headers included); 0
 * for an idle stream. For tests and diagnostics. */
size_t kt__stream_mem(const kt_stream *s);
/* Queue s on loop->pending for a delivery in the next iteration (kept
 * input, an on_eof that waited, a connect error); at most once. */
void kt__stream_add_pending(kt_stream *s);
/* Give the read buffer back (at free). */
void kt__stream_rbuf_release(kt_stream *s);

#endif
