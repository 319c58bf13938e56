/*
 * pconn.c - a pipelined RESP client connection (see pconn.h).
 *
 * The ring holds one entry per request in send order: a small header (send
 * time, dropped flag) and the owner's slot. Replies come back in the same
 * order, so each complete reply settles the entry at the head. An entry is
 * copied out before its callback runs, so the owner may push (and the ring
 * may grow or wrap onto the entry's old place) from inside on_reply.
 * The watchdog is one timer per connection looking at the oldest entry
 * only: nothing is done per request to keep it.
 */
#include "config.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "pconn.h"

typedef struct hdr {
    uint64_t sent;
    bool dropped;
} hdr;

#define HDR_SIZE ((sizeof(hdr) + 7u) & ~(size_t)7u)

static size_t stream_read_cb(kt_stream *s, const char *data, size_t len, void *arg);
static void stream_eof_cb(kt_stream *s, void *arg);
static void stream_error_cb(kt_stream *s, int err, void *arg);
static void stream_connect_cb(kt_stream *s, int status, void *arg);
static void stream_drain_cb(kt_stream *s, void *arg);
static void stream_close_cb(kt_stream *s, void *arg);
static void watchdog_cb(kt_timer *t, void *arg);

static const kt_stream_cbs stream_cbs = {
    .on_read = stream_read_cb,
    .on_eof = stream_eof_cb,
    .on_error = stream_error_cb,
    .on_connect = stream_connect_cb,
    .on_drain = stream_drain_cb,
    .on_close = stream_close_cb,
};

static inline hdr *entry(const kt_pconn *pc, uint32_t i)
{
    return (hdr *)(void *)(pc->ring + (size_t)i * pc->stride);
}

static inline void *user(hdr *h)
{
    return (unsigned char *)h + HDR_SIZE;
}

int kt_pconn_init(kt_pconn *pc, kt_loop *loop, const kt_pconn_cbs *cbs, void *arg,
                  size_t slot_size, const kt_resp_limits *lim)
{
    memset(pc, 0, sizeof *pc);
    pc->loop = loop;
    pc->cbs = cbs;
    pc->arg = arg;
    pc->slot_size = slot_size;
    pc->stride = HDR_SIZE + ((slot_size + 7u) & ~(size_t)7u);
    pc->lim = lim ? *lim : kt_resp_default_limits;
    pc->state = KT_PCONN_DOWN;
    if ((pc->cur = kt_malloc(pc->stride)) == NULL)
        return -ENOMEM;
    kt_timer_init(loop, &pc->watchdog, watchdog_cb, pc);
    return 0;
}

void kt_pconn_free(kt_pconn *pc)
{
    kt_timer_stop(&pc->watchdog);
    kt_free(pc->ring);
    kt_free(pc->cur);
    kt_resp_reply_free(&pc->reply);
    pc->ring = pc->cur = NULL;
    pc->cap = pc->count = 0;
}

kt_pconn_state kt_pconn_state_of(const kt_pconn *pc) { return (kt_pconn_state)pc->state; }
kt_stream *kt_pconn_stream(const kt_pconn *pc) { return pc->state == KT_PCONN_CLOSING ? NULL : pc->s; }
void *kt_pconn_arg(const kt_pconn *pc) { return pc->arg; }

size_t kt_pconn_unsent(const kt_pconn *pc)
{
    return pc->state == KT_PCONN_UP ? kt_stream_pending(pc->s) : 0;
}

bool kt_pconn_blocked(const kt_pconn *pc)
{
    return pc->state == KT_PCONN_UP && kt_stream_write_blocked(pc->s);
}

void kt_pconn_set_watermarks(kt_pconn *pc, size_t high, size_t low)
{
    pc->wm_high = high;
    pc->wm_low = low;
    if (pc->state == KT_PCONN_UP || pc->state == KT_PCONN_CONNECTING)
        kt_stream_set_watermarks(pc->s, high, low);
}

/* ---- connecting --------------------------------------------------------------- */

int kt_pconn_connect(kt_pconn *pc, const kt_addr *addr, uint64_t timeout_ns)
{
    if (pc->state != KT_PCONN_DOWN)
        return -EALREADY;
    kt_stream *s;
    int r = kt_stream_connect(pc->loop, addr, timeout_ns, &stream_cbs, pc, &s);
    if (r < 0)
        return r;
    pc->s = s;
    pc->state = KT_PCONN_CONNECTING;
    pc->gen++;
    if (pc->wm_high)
        kt_stream_set_watermarks(s, pc->wm_high, pc->wm_low);
    /* A new stream starts a new reply: forget any half-parsed state. */
    kt_resp_reply_free(&pc->reply);
    return 0;
}

/* Close the stream: detached (no callback reaches pc again) unless the
 * owner wants on_closed. */
static void close_stream(kt_pconn *pc, kt_close_mode mode)
{
    kt_stream *s = pc->s;
    kt_timer_stop(&pc->watchdog);
    pc->gen++;
    if (s == NULL) {
        pc->state = KT_PCONN_DOWN;
        return;
    }
    if (pc->cbs->on_closed) {
        pc->state = KT_PCONN_CLOSING;
    } else {
        kt_stream_set_cbs(s, NULL, NULL);
        pc->s = NULL;
        pc->state = KT_PCONN_DOWN;
    }
    kt_stream_close(s, mode);
}

static void stream_connect_cb(kt_stream *s, int status, void *arg)
{
    kt_pconn *pc = arg;
    if (status == 0 && (status = kt_stream_read_start(s)) == 0) {
        pc->state = KT_PCONN_UP;
        if (pc->cbs->on_connect)
            pc->cbs->on_connect(pc, 0, pc->arg);
        return;
    }
    close_stream(pc, KT_CLOSE_NOW);
    if (pc->cbs->on_connect)
        pc->cbs->on_connect(pc, status, pc->arg);
}

static void stream_close_cb(kt_stream *s, void *arg)
{
    kt_pconn *pc = arg;
    (void)s;
    pc->s = NULL;
    pc->state = KT_PCONN_DOWN;
    if (pc->cbs->on_closed)
        pc->cbs->on_closed(pc, pc->arg);
}

static void stream_drain_cb(kt_stream *s, void *arg)
{
    kt_pconn *pc = arg;
    (void)s;
    if (pc->state == KT_PCONN_UP && pc->cbs->on_drain)
        pc->cbs->on_drain(pc, pc->arg);
}

/* ---- the ring ------------------------------------------------------------------- */

/* Double the ring, keeping FIFO order from index 0. */
static int ring_grow(kt_pconn *pc)
{
    uint32_t cap = pc->cap ? pc->cap * 2 : 16;
    if (cap <= pc->cap)
        return -ENOMEM;
    unsigned char *r = kt_malloc((size_t)cap * pc->stride);
    if (r == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < pc->count; i++)
        memcpy(r + (size_t)i * pc->stride, entry(pc, (pc->head + i) % pc->cap), pc->stride);
    kt_free(pc->ring);
    pc->ring = r;
    pc->cap = cap;
    pc->head = 0;
    return 0;
}

static void watchdog_arm(kt_pconn *pc)
{
    if (pc->timeout && pc->count && !kt_timer_active(&pc->watchdog)) {
        uint64_t now = kt_loop_now(pc->loop);
        uint64_t due = entry(pc, pc->head)->sent + pc->timeout;
        (void)kt_timer_start(&pc->watchdog, due > now ? due - now : 0, 0);
    }
}

void *kt_pconn_push(kt_pconn *pc, uint64_t *seq, int *err)
{
    int e = 0;
    if (pc->state != KT_PCONN_UP)
        e = -ENOTCONN;
    else if (pc->count == pc->cap && ring_grow(pc) < 0)
        e = -ENOMEM;
    if (e) {
        if (err)
            *err = e;
        return NULL;
    }
    uint32_t i = pc->head + pc->count; /* < 2 * cap: no division */
    hdr *h = entry(pc, i >= pc->cap ? i - pc->cap : i);
    h->sent = kt_loop_now(pc->loop);
    h->dropped = false;
    if (seq)
        *seq = pc->seq_head + pc->count;
    pc->count++;
    watchdog_arm(pc);
    return user(h);
}

void *kt_pconn_command(kt_pconn *pc, size_t argc, const kt_resp_arg *argv, uint64_t *seq,
                       int *err)
{
    void *slot = kt_pconn_push(pc, seq, err);
    if (slot == NULL)
        return NULL;
    kt_out o = kt_stream_out(pc->s);
    if (kt_resp_command(&o, argc, argv) < 0) {
        /* Part of it may be queued: the stream is beyond saving. */
        kt_pconn_fail(pc, -ENOMEM, "out of memory");
        if (err)
            *err = -ENOMEM;
        return NULL;
    }
    return slot;
}

static hdr *find(kt_pconn *pc, uint64_t seq)
{
    if (seq < pc->seq_head || seq - pc->seq_head >= pc->count)
        return NULL;
    return entry(pc, (uint32_t)((pc->head + (seq - pc->seq_head)) % pc->cap));
}

void kt_pconn_drop(kt_pconn *pc, uint64_t seq)
{
    hdr *h = find(pc, seq);
    if (h)
        h->dropped = true;
}

void *kt_pconn_slot(kt_pconn *pc, uint64_t seq)
{
    hdr *h = find(pc, seq);
    return h ? user(h) : NULL;
}

void *kt_pconn_oldest(kt_pconn *pc, uint64_t *sent)
{
    if (pc->count == 0)
        return NULL;
    hdr *h = entry(pc, pc->head);
    if (sent)
        *sent = h->sent;
    return user(h);
}

/* Take the oldest entry off the ring into pc->cur. */
static hdr *pop(kt_pconn *pc)
{
    memcpy(pc->cur, entry(pc, pc->head), pc->stride);
    pc->head = pc->head + 1 == pc->cap ? 0 : pc->head + 1;
    pc->count--;
    pc->seq_head++;
    return (hdr *)(void *)pc->cur;
}

/* ---- replies -------------------------------------------------------------------- */

static size_t stream_read_cb(kt_stream *s, const char *data, size_t len, void *arg)
{
    kt_pconn *pc = arg;
    uint64_t gen = pc->gen;
    size_t off = 0;
    (void)s;
    if (pc->cbs->on_input)
        pc->cbs->on_input(pc, pc->arg);
    while (off < len) {
        if (pc->count == 0) {
            kt_pconn_fail(pc, -EPROTO, "sent a reply to no request");
            return len;
        }
        const char *why = NULL;
        ssize_t r = kt_resp_parse_reply(data + off, len - off, &pc->lim, &pc->reply, &why);
        if (r == KT_RESP_INCOMPLETE)
            break;
        if (r < 0) {
            kt_pconn_fail(pc, -EPROTO, "sent a malformed reply (Protocol error: %s)",
                          why ? why : "unknown");
            return len;
        }
        off += (size_t)r;
        hdr *h = pop(pc);
        if (pc->cbs->on_reply)
            pc->cbs->on_reply(pc, user(h), h->sent, h->dropped ? NULL : &pc->reply, pc->arg);
        if (pc->gen != gen) /* failed or closed from the callback */
            return len;
    }
    return off;
}

static void stream_eof_cb(kt_stream *s, void *arg)
{
    (void)s;
    kt_pconn_fail(arg, -ECONNRESET, "connection closed by the server");
}

static void stream_error_cb(kt_stream *s, int err, void *arg)
{
    (void)s;
    kt_pconn_fail(arg, err, "connection failed: %s", strerror(-err));
}

/* ---- the watchdog ------------------------------------------------------------------ */

void kt_pconn_set_timeout(kt_pconn *pc, uint64_t ns)
{
    if (ns == pc->timeout)
        return;
    bool sooner = ns && (pc->timeout == 0 || ns < pc->timeout);
    pc->timeout = ns;
    if (ns == 0) {
        kt_timer_stop(&pc->watchdog);
    } else if (sooner && pc->state == KT_PCONN_UP) {
        kt_timer_stop(&pc->watchdog);
        watchdog_arm(pc);
    }
}

static void watchdog_cb(kt_timer *t, void *arg)
{
    kt_pconn *pc = arg;
    (void)t;
    if (pc->state != KT_PCONN_UP || pc->count == 0 || pc->timeout == 0)
        return;
    uint64_t now = kt_loop_now(pc->loop);
    uint64_t sent = entry(pc, pc->head)->sent;
    if (now < sent + pc->timeout) {
        watchdog_arm(pc);
        return;
    }
    uint64_t gen = pc->gen;
    if (pc->cbs->on_overdue)
        pc->cbs->on_overdue(pc, now - sent, pc->arg);
    else
        kt_pconn_fail(pc, -ETIMEDOUT, "no reply within %llu ms",
                      (unsigned long long)(pc->timeout / KT_MSEC(1)));
    if (pc->gen == gen && pc->state == KT_PCONN_UP && pc->count && pc->timeout)
        (void)kt_timer_start(&pc->watchdog, pc->timeout, 0);
}

/* ---- failing and closing -------------------------------------------------------------- */

/* Hand every outstanding request back to the owner, oldest first. */
static void abandon_all(kt_pconn *pc, int err, const char *why)
{
    while (pc->count) {
        hdr *h = pop(pc);
        if (pc->cbs->on_abandon)
            pc->cbs->on_abandon(pc, user(h), err, why, pc->arg);
    }
    pc->head = 0;
}

void kt_pconn_fail(kt_pconn *pc, int err, const char *fmt, ...)
{
    if (pc->state != KT_PCONN_UP && pc->state != KT_PCONN_CONNECTING)
        return;
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    close_stream(pc, KT_CLOSE_RESET);
    abandon_all(pc, err, why);
    if (pc->cbs->on_down)
        pc->cbs->on_down(pc, err, why, pc->arg);
}

void kt_pconn_close(kt_pconn *pc, kt_close_mode mode)
{
    if (pc->state == KT_PCONN_UP || pc->state == KT_PCONN_CONNECTING)
        close_stream(pc, mode);
    abandon_all(pc, -ESHUTDOWN, NULL);
}
