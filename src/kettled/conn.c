/*
 * conn.c - one pipelined connection of the backend pool to a database
 * server (see the picture at the top of pool.c).
 *
 * Requests go out as "GET key" in the order fetches arrive; RESP replies
 * come back in the same order, so the connection keeps a FIFO ring of the
 * futures waiting on it and each reply settles the oldest. A cancelled
 * waiter leaves its slot in place (f = NULL): its reply still arrives, in
 * turn, and is read and dropped. Any failure - refused, reset, closed,
 * garbage, a reply overdue past backend-timeout - fails every waiter with
 * an error naming the server, closes, and reconnects after a backoff.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "pool-int.h"

static size_t conn_read_cb(kt_stream *s, const char *data, size_t len, void *arg);
static void conn_eof_cb(kt_stream *s, void *arg);
static void conn_error_cb(kt_stream *s, int err, void *arg);
static void conn_connect_cb(kt_stream *s, int status, void *arg);
static void conn_timer_cb(kt_timer *t, void *arg);

static const kt_stream_cbs conn_cbs = {
    .on_read = conn_read_cb,
    .on_eof = conn_eof_cb,
    .on_error = conn_error_cb,
    .on_connect = conn_connect_cb,
};

void kd_conn_init(kd_conn *c, kd_backend *b)
{
    memset(c, 0, sizeof *c);
    c->b = b;
    c->state = KD_CONN_BACKOFF;
    kt_timer_init(b->pool->loop, &c->timer, conn_timer_cb, c);
}

void kd_conn_start(kd_conn *c)
{
    kd_backend *b = c->b;
    kd_pool *p = b->pool;
    kt_stream *s = NULL;
    c->state = KD_CONN_CONNECTING;
    c->served = false;
    b->connecting++;
    int r = kt_stream_connect(p->loop, &b->addr, p->prm.connect_timeout, &conn_cbs, c, &s);
    if (r < 0) {
        kd_conn_fail(c, true, "cannot connect: %s", strerror(-r));
        return;
    }
    c->s = s;
}

static void conn_connect_cb(kt_stream *s, int status, void *arg)
{
    kd_conn *c = arg;
    kd_backend *b = c->b;
    (void)s;
    if (status < 0) {
        kd_conn_fail(c, true, "cannot connect: %s", strerror(-status));
        return;
    }
    int r = kt_stream_read_start(c->s);
    if (r < 0) {
        kd_conn_fail(c, true, "cannot read: %s", strerror(-r));
        return;
    }
    c->state = KD_CONN_UP;
    b->connecting--;
    b->up++;
    b->st.connects++;
    kt_log_info("backend %s: connection %u up", b->name, (unsigned)(c - b->conns));
    kd_backend_drain_queue(b);
}

/* ---- the ring of waiters ---------------------------------------------------- */

static void wait_cancel_cb(kt_future *f, void *arg)
{
    kd_wait *w = arg;
    w->f = NULL;
    w->conn->b->st.cancelled++;
    kt_future_unref(f);
}

/* Double the ring (bounded by backend-pipeline), keeping FIFO order from
 * index 0. The cancel hooks point at slots, so they move with them. */
static int ring_grow(kd_conn *c)
{
    uint32_t limit = c->b->pool->prm.pipeline;
    uint32_t cap = c->cap ? c->cap * 2 : 64;
    if (cap > limit)
        cap = limit > c->count ? limit : c->count + 1;
    kd_wait *r = kt_malloc((size_t)cap * sizeof *r);
    if (r == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < c->count; i++) {
        r[i] = c->ring[(c->head + i) % c->cap];
        if (r[i].f)
            kt_future_on_cancel(r[i].f, wait_cancel_cb, &r[i]);
    }
    kt_free(c->ring);
    c->ring = r;
    c->cap = cap;
    c->head = 0;
    return 0;
}

int kd_conn_send(kd_conn *c, const char *key, size_t len, kt_future *f)
{
    static const char pre[] = "*2\r\n$3\r\nGET\r\n$";
    if (c->count == c->cap && ring_grow(c) < 0)
        return -ENOMEM;
    kt_out o = kt_stream_out(c->s);
    char *p = o.reserve(o.ctx, len + sizeof pre + 24);
    if (p == NULL)
        return -ENOMEM;
    char *q = p;
    memcpy(q, pre, sizeof pre - 1);
    q += sizeof pre - 1;
    char digits[24];
    size_t nd = 0;
    size_t v = len;
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (nd)
        *q++ = digits[--nd];
    *q++ = '\r';
    *q++ = '\n';
    memcpy(q, key, len);
    q += len;
    *q++ = '\r';
    *q++ = '\n';
    o.commit(o.ctx, (size_t)(q - p));

    kd_pool *pool = c->b->pool;
    kd_wait *w = &c->ring[(c->head + c->count) % c->cap];
    w->f = f;
    w->conn = c;
    w->sent = kt_loop_now(pool->loop);
    kt_future_ref(f);
    kt_future_on_cancel(f, wait_cancel_cb, w);
    c->count++;
    c->b->outstanding++;
    if (pool->prm.backend_timeout && !kt_timer_active(&c->timer))
        (void)kt_timer_start(&c->timer, pool->prm.backend_timeout, 0);
    return 0;
}

/* ---- replies ------------------------------------------------------------------ */

/* A decimal integer that prints back as the same bytes (no sign '+', no
 * leading zeros, no "-0"): it can travel as an i64 without changing. */
static bool canonical_int(const char *p, size_t len, int64_t *v)
{
    if (len == 0 || len > 20)
        return false;
    const char *d = p[0] == '-' ? p + 1 : p;
    size_t dl = len - (size_t)(d - p);
    if (dl == 0 || (d[0] == '0' && (dl > 1 || d != p)))
        return false;
    return kt_parse_i64(p, len, v) == 0;
}

/* Settle f with the reply node n. */
static void deliver(kd_backend *b, kt_future *f, const kt_resp_node *n)
{
    int64_t v;
    switch (n->type) {
    case KT_RESP_BULK:
    case KT_RESP_STRING:
        if (canonical_int(n->p, n->len, &v)) {
            (void)kt_future_resolve_i64(f, v);
        } else {
            kd_blob *blob = kt_malloc(sizeof *blob + n->len);
            if (blob == NULL) {
                (void)kt_future_fail(f, -ENOMEM, "ERR out of memory");
                return;
            }
            blob->len = n->len;
            memcpy(blob->data, n->p, n->len);
            (void)kt_future_resolve(f, blob, kt_free);
        }
        break;
    case KT_RESP_INTEGER:
        (void)kt_future_resolve_i64(f, n->i);
        break;
    case KT_RESP_NIL:
        b->st.nils++;
        (void)kt_future_fail(f, -ENOENT, NULL);
        break;
    case KT_RESP_ERROR_REPLY:
        b->st.errors++;
        (void)kt_future_fail(f, -EREMOTEIO, "%.*s", (int)(n->len > 512 ? 512 : n->len), n->p);
        break;
    default:
        b->st.errors++;
        (void)kt_future_fail(f, -EPROTO, "ERR backend %s: unexpected reply type '%c' to GET",
                             b->name, n->type);
        break;
    }
}

static size_t conn_read_cb(kt_stream *s, const char *data, size_t len, void *arg)
{
    kd_conn *c = arg;
    kd_backend *b = c->b;
    kd_pool *p = b->pool;
    uint64_t now = kt_loop_now(p->loop);
    size_t off = 0;
    (void)s;
    while (off < len) {
        if (c->count == 0) {
            kd_conn_fail(c, true, "sent a reply to no request");
            return len;
        }
        kd_wait *w = &c->ring[c->head];
        const char *err = NULL;
        ssize_t r;
        if (w->f)
            r = kt_resp_parse_reply(data + off, len - off, &p->lim, &c->reply, &err);
        else /* cancelled: only find where the reply ends */
            r = kt_resp_reply_len(data + off, len - off, &p->lim, &c->reply, &err);
        if (r == KT_RESP_INCOMPLETE)
            break;
        if (r < 0) {
            kd_conn_fail(c, true, "sent a malformed reply (Protocol error: %s)",
                         err ? err : "unknown");
            return len;
        }
        kt_future *f = w->f;
        w->f = NULL;
        c->head = c->head + 1 == c->cap ? 0 : c->head + 1;
        c->count--;
        b->outstanding--;
        b->st.replies++;
        kt_hist_record(&b->hist, now - w->sent);
        if (f) {
            deliver(b, f, &c->reply.nodes[0]);
            kt_future_unref(f);
        }
        off += (size_t)r;
    }
    if (off && !c->served) {
        c->served = true;
        c->fails = 0;
    }
    if (off && (b->fails || b->warned || b->ejected))
        kd_backend_healthy(b);
    if (b->qlen)
        kd_backend_drain_queue(b);
    return off;
}

static void conn_eof_cb(kt_stream *s, void *arg)
{
    (void)s;
    kd_conn_fail(arg, false, "connection closed by the server");
}

static void conn_error_cb(kt_stream *s, int err, void *arg)
{
    (void)s;
    kd_conn_fail(arg, false, "connection failed: %s", strerror(-err));
}

/* BACKOFF: time to reconnect (unless the server is still ejected).
 * UP: the stall watchdog - armed while replies are outstanding, it looks
 * at the oldest one only, so it costs nothing per request. */
static void conn_timer_cb(kt_timer *t, void *arg)
{
    kd_conn *c = arg;
    kd_backend *b = c->b;
    kd_pool *p = b->pool;
    uint64_t now = kt_loop_now(p->loop);
    (void)t;
    if (c->state == KD_CONN_BACKOFF) {
        if (b->retiring)
            return;
        if (b->ejected && now < b->eject_until) {
            (void)kt_timer_start(&c->timer, b->eject_until - now, 0);
            return;
        }
        kd_conn_start(c);
        return;
    }
    if (c->state != KD_CONN_UP || c->count == 0 || p->prm.backend_timeout == 0)
        return;
    uint64_t due = c->ring[c->head].sent + p->prm.backend_timeout;
    if (now >= due) {
        b->st.stalls++;
        kd_conn_fail(c, true, "no reply within %llu ms",
                     (unsigned long long)(p->prm.backend_timeout / KT_MSEC(1)));
        return;
    }
    (void)kt_timer_start(&c->timer, due - now, 0);
}

/* ---- failing and closing --------------------------------------------------------- */

/* Stop the stream, forget the connection state, and fail the waiters with
 * err and msg (NULL msg: only when nothing is outstanding). */
static void conn_reset(kd_conn *c, int err, const char *msg)
{
    kd_backend *b = c->b;
    if (c->s) {
        kt_stream_set_cbs(c->s, NULL, NULL); /* no callback may reach c again */
        kt_stream_close(c->s, KT_CLOSE_NOW);
        c->s = NULL;
    }
    kt_resp_reply_reset(&c->reply); /* a partial reply went with the stream */
    if (c->state == KD_CONN_UP)
        b->up--;
    else if (c->state == KD_CONN_CONNECTING)
        b->connecting--;
    c->state = KD_CONN_BACKOFF;
    kt_timer_stop(&c->timer);
    /* Failing queues continuations and never runs cancel hooks, so the
     * ring cannot change under this loop. */
    for (uint32_t i = 0; i < c->count; i++) {
        kd_wait *w = &c->ring[(c->head + i) % c->cap];
        if (w->f) {
            (void)kt_future_fail(w->f, err, "%s", msg ? msg : "ERR backend connection closed");
            kt_future_unref(w->f);
            w->f = NULL;
            b->st.failed++;
        }
    }
    b->outstanding -= c->count;
    c->count = 0;
    c->head = 0;
}

void kd_conn_fail(kd_conn *c, bool counts, const char *fmt, ...)
{
    kd_backend *b = c->b;
    kd_pool *p = b->pool;
    char what[160], msg[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(msg, sizeof msg, "ERR backend %s: %s", b->name, what);

    /* A connection that never served a reply counts as a failed attempt
     * even when it "only" closed: a server that accepts and then drops
     * every connection must be backed off and ejected like a dead one. */
    counts = counts || !c->served;
    conn_reset(c, -EIO, msg);
    if (counts)
        c->fails++;
    kd_backend_failed(b, counts, what);
    if (b->retiring)
        return;
    uint64_t delay = kd_pool_backoff(p, c->fails);
    uint64_t now = kt_loop_now(p->loop);
    if (b->ejected && b->eject_until > now + delay)
        delay = b->eject_until - now;
    (void)kt_timer_start(&c->timer, delay, 0);
}

void kd_conn_close(kd_conn *c, const char *msg)
{
    conn_reset(c, -ESHUTDOWN, msg);
    kt_resp_reply_free(&c->reply);
    kt_free(c->ring);
    c->ring = NULL;
    c->cap = 0;
}
