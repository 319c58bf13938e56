/*
 * pconn.h - a pipelined RESP client connection: what kettled's backend
 * pool and kettle-bench's load connections both are.
 *
 *   owner ── kt_pconn_push(slot) + request bytes ──▶ stream ──TCP──▶ server
 *                 │
 *                 ▼ FIFO ring of slots, oldest first
 *   [s1][s2][s3(dropped)][s4] ◀── replies, in order: each one settles the
 *     │                          oldest slot (on_reply); a dropped slot's
 *     │                          reply is read and thrown away (reply NULL)
 *     └─ watchdog: the oldest slot waiting longer than `timeout` -> on_overdue
 *
 * A slot is `slot_size` bytes the owner fills when it sends a request (a
 * pointer to its waiter, the keys it asked for, a start time) and gets back
 * with the reply. Each connection parses with its own kt_resp_reply, so a
 * reply split over reads resumes on its own connection. Any failure (refused,
 * reset, closed, garbage, a reply to no request, kt_pconn_fail) hands every
 * outstanding slot back through on_abandon, closes the stream and calls
 * on_down; the owner decides whether and when to reconnect (kt_pconn_connect
 * again on the same kt_pconn).
 *
 * The kt_pconn lives in the owner's memory (kt_pconn_init). With on_closed
 * set, it must stay valid until on_closed has run after a close or failure;
 * without it, the stream is detached at close and the owner may free it at
 * once. Everything runs on the loop's thread; callbacks never run inside the
 * call that registered them, except on_abandon and on_down, which run inside
 * kt_pconn_fail and kt_pconn_close.
 */
#ifndef KETTLE_PCONN_H
#define KETTLE_PCONN_H

#include <kettle/kettle.h>

typedef struct kt_pconn kt_pconn;

typedef enum kt_pconn_state {
    KT_PCONN_DOWN = 0,   /* no stream (never connected, or failed/closed) */
    KT_PCONN_CONNECTING,
    KT_PCONN_UP,
    KT_PCONN_CLOSING,    /* the stream is closing; on_closed will run */
} kt_pconn_state;

typedef struct kt_pconn_cbs {
    /* The connect finished: status 0 (UP, reading) or a negative errno
     * (the connection is DOWN or CLOSING again; nothing was outstanding). */
    void (*on_connect)(kt_pconn *pc, int status, void *arg);
    /* The reply to the oldest request. slot is a copy of its user area,
     * sent the loop time it was pushed; reply is NULL when the slot was
     * dropped (the reply was read and thrown away). The reply's nodes point
     * into the stream's buffer: valid during the call only. */
    void (*on_reply)(kt_pconn *pc, void *slot, uint64_t sent, const kt_resp_reply *reply,
                     void *arg);
    /* The oldest request has waited `waited` ns, past the timeout. NULL:
     * fail the connection with -ETIMEDOUT, "no reply within N ms". If the
     * callback leaves the connection up, the watchdog looks again one
     * timeout later. */
    void (*on_overdue)(kt_pconn *pc, uint64_t waited, void *arg);
    /* A request left without a reply by a failure or close (dropped ones
     * included), oldest first; err and why as for on_down (why is NULL on
     * kt_pconn_close). May be NULL. */
    void (*on_abandon)(kt_pconn *pc, void *slot, int err, const char *why, void *arg);
    /* The connection failed (after on_abandon for each request): err is a
     * negative errno, why says what happened ("connection closed by the
     * server", "connection failed: Connection reset by peer", "sent a
     * malformed reply (Protocol error: ...)", "no reply within 200 ms" or the
     * owner's kt_pconn_fail text). Not called for kt_pconn_close. */
    void (*on_down)(kt_pconn *pc, int err, const char *why, void *arg);
    /* Queued output fell below the low-water mark after passing the
     * high-water mark (kt_pconn_set_watermarks): room to send again. */
    void (*on_drain)(kt_pconn *pc, void *arg);
    /* The stream has finished closing. NULL: detach at close instead. */
    void (*on_closed)(kt_pconn *pc, void *arg);
    /* Bytes arrived: called once per read, before the on_reply calls for
     * the replies they complete (one clock read for all of them, say).
     * May be NULL; must not fail or close the connection. */
    void (*on_input)(kt_pconn *pc, void *arg);
} kt_pconn_cbs;

/* Private: read the fields through the functions below. */
struct kt_pconn {
    kt_loop *loop;
    kt_stream *s;
    const kt_pconn_cbs *cbs;
    void *arg;
    unsigned char *ring;   /* cap entries of `stride` bytes: header + user area */
    unsigned char *cur;    /* the slot being delivered or abandoned (a copy) */
    size_t slot_size, stride;
    uint32_t cap, head, count;
    uint64_t seq_head;     /* id of the oldest outstanding request */
    uint64_t timeout;      /* watchdog on the oldest reply, ns; 0 off */
    uint64_t gen;          /* bumped at every connect and close */
    size_t wm_high, wm_low; /* output watermarks (0: the stream's defaults) */
    uint8_t state;         /* kt_pconn_state */
    kt_resp_limits lim;
    kt_resp_reply reply;   /* this connection's parse state */
    kt_timer watchdog;
};

/* Prepare pc on loop (DOWN, nothing allocated but the slot copy). cbs
 * must outlive pc; slot_size is the owner's bytes per request; lim NULL
 * means kt_resp_default_limits. 0 or -ENOMEM. */
int kt_pconn_init(kt_pconn *pc, kt_loop *loop, const kt_pconn_cbs *cbs, void *arg,
                  size_t slot_size, const kt_resp_limits *lim);
/* Release what pc holds. It must be DOWN (close it first; with on_closed,
 * after on_closed has run). */
void kt_pconn_free(kt_pconn *pc);

/* Start connecting pc (DOWN) to addr; timeout_ns bounds the attempt (0:
 * none). on_connect reports the result. 0 or a negative errno (then no
 * callback runs and pc stays DOWN). */
int kt_pconn_connect(kt_pconn *pc, const kt_addr *addr, uint64_t timeout_ns);

/*
 * Send a request: take a slot at the tail of the ring, then write the
 * request's bytes into kt_pconn_out(pc) (or use kt_pconn_command). Returns
 * the slot's user area for the owner to fill (valid until the next push
 * or reply), and its id in *seq (may be NULL). NULL with -ENOMEM or
 * -ENOTCONN (not UP) in *err (may be NULL); nothing was queued then.
 */
void *kt_pconn_push(kt_pconn *pc, uint64_t *seq, int *err);
/* The sink writing into the stream's output (pc must be UP). */
static inline kt_out kt_pconn_out(kt_pconn *pc)
{
    return kt_stream_out(pc->s);
}
/* Push a slot and write argv as one RESP command. The slot's user area or
 * NULL (*err -ENOMEM or -ENOTCONN: nothing was sent). */
void *kt_pconn_command(kt_pconn *pc, size_t argc, const kt_resp_arg *argv, uint64_t *seq,
                       int *err);

/* The outstanding request seq will not be waited for: its reply is read
 * and dropped (on_reply gets NULL). Unknown or answered ids are ignored. */
void kt_pconn_drop(kt_pconn *pc, uint64_t seq);
/* The user area of outstanding request seq, or NULL (answered, unknown).
 * Valid until the next push or reply. */
void *kt_pconn_slot(kt_pconn *pc, uint64_t seq);
/* The oldest outstanding request's user area and send time, or NULL. */
void *kt_pconn_oldest(kt_pconn *pc, uint64_t *sent);

/* The watchdog: on_overdue once the oldest reply has waited ns (0: off).
 * May change at any time; a shorter timeout takes effect at once. */
void kt_pconn_set_timeout(kt_pconn *pc, uint64_t ns);
/* Backpressure marks of the stream's output (see kt_stream_set_watermarks);
 * kept across reconnects. */
void kt_pconn_set_watermarks(kt_pconn *pc, size_t high, size_t low);

/* Fail pc: on_abandon for every outstanding request, close the stream
 * (reset), on_down(err, text). Harmless when DOWN or CLOSING. */
void kt_pconn_fail(kt_pconn *pc, int err, const char *fmt, ...) KT_PRINTF(3, 4);
/* Close without on_down: on_abandon(-ESHUTDOWN, NULL) for every
 * outstanding request, then close the stream with mode. */
void kt_pconn_close(kt_pconn *pc, kt_close_mode mode);

kt_pconn_state kt_pconn_state_of(const kt_pconn *pc);
/* Requests sent and not yet answered (dropped ones included). */
static inline uint32_t kt_pconn_outstanding(const kt_pconn *pc)
{
    return pc->count;
}
/* Bytes written and not yet sent by the kernel (0 when not UP). */
size_t kt_pconn_unsent(const kt_pconn *pc);
/* True while the output is above the high-water mark. */
bool kt_pconn_blocked(const kt_pconn *pc);
/* The stream (NULL unless CONNECTING or UP), for what this API lacks. */
kt_stream *kt_pconn_stream(const kt_pconn *pc);
/* The owner's argument. */
void *kt_pconn_arg(const kt_pconn *pc);

#endif
