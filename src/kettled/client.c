/*
 * client.c - one client connection: requests in, replies out in order.
 *
 *   bytes ─▶ parse (shared scratch) ─▶ dispatch ─┬─ immediate reply ──────┐
 *                                                └─ kd_req + future(s)    │
 *                                                        │                ▼
 *   FIFO:  head [GET 7 ✓][MGET 1 2 3 …][PING ✓(bytes)] tail     stream output
 *            │ when the head's future has settled, it and every
 *            └ following settled request are encoded, in order ──────▶ flush
 *
 * Requests of one connection run concurrently; replies leave in request
 * order (RESP has no request ids). An immediate reply goes straight to the
 * stream when nothing is pending before it, otherwise it waits in the FIFO
 * as bytes. Backpressure: reading pauses while max-pending requests are in
 * flight or while the stream's output is above its high-water mark, and
 * resumes as replies drain. An idle client holds no buffers: the parser's
 * scratch is shared, the stream keeps nothing once input is consumed.
 */
#include "config.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "kd.h"

#define KD_C_AUTHED 0x01u /* AUTH passed (or no password) */
#define KD_C_FINISH 0x02u /* close once the FIFO is empty */
#define KD_C_PAUSED 0x04u /* reading stopped for backpressure */
#define KD_C_CLOSED 0x08u /* kd_client_close called */

struct kd_client {
    kt_stream *s;
    kd_server *srv;
    kd_client *prev, *next; /* srv list, least recently active first */
    kd_req *head, *tail;    /* requests awaiting their reply, in order */
    uint32_t pending;       /* requests in the FIFO */
    size_t held;            /* bytes of replies waiting in the FIFO (BYTES requests) */
    uint32_t flags;         /* KD_C_* */
    uint64_t id;
    uint64_t created;       /* loop time */
    uint64_t last;          /* loop time of the last complete request */
    char *name;             /* CLIENT SETNAME */
    kt_resp_req req;        /* this connection's request parser */
};

#define KD_FREE_REQS_MAX 65536
static kd_req *free_reqs;
static size_t nfree_reqs;

static size_t client_read_cb(kt_stream *s, const char *data, size_t len, void *arg);
static void client_eof_cb(kt_stream *s, void *arg);
static void client_error_cb(kt_stream *s, int err, void *arg);
static void client_drain_cb(kt_stream *s, void *arg);
static void client_close_cb(kt_stream *s, void *arg);

static const kt_stream_cbs client_cbs = {
    .on_read = client_read_cb,
    .on_eof = client_eof_cb,
    .on_error = client_error_cb,
    .on_drain = client_drain_cb,
    .on_close = client_close_cb,
};

/* ---- the client list (least recently active first) -------------------------- */

static void list_unlink(kd_server *srv, kd_client *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        srv->tail = c->prev;
    c->prev = c->next = NULL;
}

static void list_append(kd_server *srv, kd_client *c)
{
    c->next = NULL;
    c->prev = srv->tail;
    if (srv->tail)
        srv->tail->next = c;
    else
        srv->head = c;
    srv->tail = c;
}

static void touch(kd_client *c)
{
    kd_server *srv = c->srv;
    c->last = kt_loop_now(srv->loop);
    if (srv->tail != c) {
        list_unlink(srv, c);
        list_append(srv, c);
    }
}

/* ---- accepting -------------------------------------------------------------------- */

/* Pause reading well before max-output-buffer: what is already in flight
 * (up to max-pending requests) still lands on top of the mark. */
static size_t high_water(const kd_server *srv)
{
    size_t limit = (size_t)srv->cfg.max_output_buffer;
    return limit / 4 < (1u << 20) ? limit / 4 : (1u << 20);
}

static void set_watermarks(kd_client *c)
{
    size_t high = high_water(c->srv);
    kt_stream_set_watermarks(c->s, high, high / 4);
}

void kd_client_accept(kd_server *srv, kt_stream *s)
{
    static const char full[] = "-ERR max number of clients reached\r\n";
    if (srv->draining || srv->nclients >= (size_t)srv->cfg.maxclients) {
        srv->st.rejected++;
        kt_stream_set_cbs(s, NULL, NULL);
        if (!srv->draining)
            (void)kt_stream_write(s, full, sizeof full - 1);
        kt_stream_set_linger(s, KT_SEC(1));
        kt_stream_close(s, KT_CLOSE_FLUSH);
        return;
    }
    kd_client *c = kt_calloc(1, sizeof *c);
    if (c == NULL) {
        kt_stream_set_cbs(s, NULL, NULL);
        kt_stream_close(s, KT_CLOSE_RESET);
        return;
    }
    c->s = s;
    c->srv = srv;
    c->id = ++srv->next_id;
    c->created = c->last = kt_loop_now(srv->loop);
    if (srv->cfg.requirepass == NULL)
        c->flags |= KD_C_AUTHED;
    kt_stream_set_cbs(s, &client_cbs, c);
    set_watermarks(c);
    if (kt_stream_read_start(s) < 0) {
        kt_stream_set_cbs(s, NULL, NULL);
        kt_stream_close(s, KT_CLOSE_RESET);
        kt_free(c);
        return;
    }
    list_append(srv, c);
    srv->nclients++;
    srv->st.connections++;
}

/* ---- requests -------------------------------------------------------------------- */

kd_req *kd_req_new(kd_client *c, enum kd_req_kind kind)
{
    kd_req *r = free_reqs;
    if (r) {
        free_reqs = r->next;
        nfree_reqs--;
    } else if ((r = kt_malloc(sizeof *r)) == NULL) {
        return NULL;
    }
    memset(r, 0, sizeof *r);
    r->c = c;
    r->kind = (uint8_t)kind;
    return r;
}

void kd_req_free(kd_req *r)
{
    if (r->f)
        kt_future_unref(r->f);
    if (r->inner)
        kt_future_unref(r->inner);
    kt_buf_free(&r->out);
    kt_free(r->koff);
    if (nfree_reqs < KD_FREE_REQS_MAX) {
        r->next = free_reqs;
        free_reqs = r;
        nfree_reqs++;
    } else {
        kt_free(r);
    }
}

void kd_reqs_free_all(void)
{
    while (free_reqs) {
        kd_req *r = free_reqs;
        free_reqs = r->next;
        kt_free(r);
    }
    nfree_reqs = 0;
}

static void fifo_push(kd_client *c, kd_req *r)
{
    r->next = NULL;
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->pending++;
}

static void client_flush(kd_client *c);

/* The continuation of every fetch request. */
static void req_done_cb(kt_future *f, void *arg)
{
    kd_req *r = arg;
    r->done = true;
    if (kt_future_error(f) == -ETIMEDOUT)
        kd_srv->st.timeouts++;
    kd_client *c = r->c;
    if (c == NULL) { /* its client has gone */
        kd_req_free(r);
        return;
    }
    if (c->head == r)
        client_flush(c);
}

void kd_req_submit(kd_req *r, kt_future *f)
{
    kd_client *c = r->c;
    kd_server *srv = c->srv;
    if (f == NULL)
        goto nomem;
    if (srv->cfg.request_timeout) {
        kt_future *t = kt_timeout(f, srv->cfg.request_timeout);
        if (t == NULL) {
            (void)kt_future_cancel(f);
            kt_future_unref(f);
            goto nomem;
        }
        kt_future_unref(f); /* the timeout holds it and forwards its value */
        f = t;
    }
    r->f = f;
    if (kt_future_then(f, req_done_cb, r) < 0) {
        (void)kt_future_cancel(f);
        goto nomem;
    }
    fifo_push(c, r);
    return;
nomem:
    kd_req_free(r);
    kd_client_error(c, "ERR out of memory");
}

/* ---- replies ---------------------------------------------------------------------- */

kt_out *kd_client_out(kd_client *c)
{
    kd_server *srv = c->srv;
    if (c->head == NULL) {
        srv->out = kt_stream_out(c->s);
        return &srv->out;
    }
    kd_req *r = kd_req_new(c, KD_R_BYTES);
    if (r == NULL) {
        kd_client_close(c, KT_CLOSE_NOW);
        return NULL;
    }
    r->done = true;
    fifo_push(c, r);
    srv->out = kt_buf_out(&r->out);
    srv->out_req = r; /* its size is counted once written: see account_held() */
    return &srv->out;
}

void kd_client_error(kd_client *c, const char *fmt, ...)
{
    kt_out *o = kd_client_out(c);
    if (o == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    (void)kt_resp_verror(o, fmt, ap);
    va_end(ap);
}

static void maybe_resume(kd_client *c)
{
    if ((c->flags & (KD_C_PAUSED | KD_C_FINISH | KD_C_CLOSED)) != KD_C_PAUSED)
        return;
    if (c->pending >= (uint32_t)c->srv->cfg.max_pending || kt_stream_write_blocked(c->s) ||
        c->held > high_water(c->srv))
        return;
    c->flags &= ~KD_C_PAUSED;
    if (kt_stream_read_start(c->s) < 0)
        kd_client_close(c, KT_CLOSE_NOW);
}

/* Replies kept for c (sent to the stream or waiting in order) past
 * max-output-buffer: a client that does not read. Close it. */
static bool over_output_limit(kd_client *c)
{
    kd_server *srv = c->srv;
    if (kt_stream_pending(c->s) + c->held <= srv->cfg.max_output_buffer)
        return false;
    char peer[64];
    kt_log_notice("closing client id=%llu %s: output buffer over %llu bytes (max-output-buffer)",
                  (unsigned long long)c->id, kt_stream_peer(c->s, peer, sizeof peer),
                  (unsigned long long)srv->cfg.max_output_buffer);
    srv->st.closed_output++;
    kd_client_close(c, KT_CLOSE_RESET);
    return true;
}

/* A reply kd_client_out() parked in the FIFO now has its size: count it. */
static void account_held(kd_client *c)
{
    kd_server *srv = c->srv;
    if (srv->out_req) {
        if (!(c->flags & KD_C_CLOSED) && srv->out_req->c == c)
            c->held += srv->out_req->out.len;
        srv->out_req = NULL;
    }
}

/* Encode the head and every settled request behind it. */
static void client_flush(kd_client *c)
{
    kt_out o = kt_stream_out(c->s);
    kd_req *r;
    while ((r = c->head) != NULL && r->done) {
        if (r->kind == KD_R_BYTES) {
            (void)kt_stream_write(c->s, r->out.data, r->out.len);
            c->held -= r->out.len;
        } else {
            kd_cmd_reply(r, &o);
        }
        c->head = r->next;
        if (c->head == NULL)
            c->tail = NULL;
        c->pending--;
        kd_req_free(r);
    }
    if (over_output_limit(c))
        return;
    if (c->head == NULL && (c->flags & KD_C_FINISH)) {
        kd_client_close(c, KT_CLOSE_FLUSH);
        return;
    }
    maybe_resume(c);
}

/* ---- reading ----------------------------------------------------------------------- */

static void pause_reading(kd_client *c)
{
    c->flags |= KD_C_PAUSED;
    c->srv->st.paused++;
    kt_stream_read_stop(c->s);
}

/* Unparsed input past max-query-buffer: close (Redis does the same). */
static size_t query_limit(kd_client *c, size_t len)
{
    kd_server *srv = c->srv;
    char peer[64];
    kt_log_notice("closing client id=%llu %s: query buffer over %llu bytes (max-query-buffer)",
                  (unsigned long long)c->id, kt_stream_peer(c->s, peer, sizeof peer),
                  (unsigned long long)srv->cfg.max_query_buffer);
    srv->st.closed_query++;
    kd_client_close(c, KT_CLOSE_NOW);
    return len;
}

static size_t client_read_cb(kt_stream *s, const char *data, size_t len, void *arg)
{
    kd_client *c = arg;
    kd_server *srv = c->srv;
    size_t off = 0;
    while (off < len) {
        if (c->pending >= (uint32_t)srv->cfg.max_pending || kt_stream_write_blocked(s) ||
            c->held > high_water(srv)) {
            pause_reading(c);
            break;
        }
        const char *err = NULL;
        ssize_t r = kt_resp_parse_request(data + off, len - off, &srv->lim, &c->req, &err);
        if (r == KT_RESP_INCOMPLETE) {
            if (len - off > srv->cfg.max_query_buffer)
                return query_limit(c, len);
            break;
        }
        if (r < 0) {
            srv->st.err_protocol++;
            kt_log_info("client id=%llu: protocol error: %s", (unsigned long long)c->id,
                        err ? err : "?");
            kd_client_error(c, "ERR Protocol error: %s", err ? err : "invalid request");
            account_held(c);
            if (!(c->flags & KD_C_CLOSED))
                kd_client_finish(c);
            return len;
        }
        off += (size_t)r;
        if (c->req.argc == 0)
            continue; /* empty line, *0, *-1 */
        touch(c);
        kd_cmd_dispatch(c, &c->req);
        account_held(c);
        if (c->flags & (KD_C_CLOSED | KD_C_FINISH))
            return len; /* QUIT or worse: the rest is not for us */
        if (c->held > srv->cfg.max_output_buffer && over_output_limit(c))
            return len;
    }
    kt_resp_req_trim(&c->req, 0); /* between requests an idle client holds no argv */
    return off;
}

static void client_eof_cb(kt_stream *s, void *arg)
{
    (void)s;
    /* Half-close: answer what was asked, then close. */
    kd_client_finish(arg);
}

static void client_error_cb(kt_stream *s, int err, void *arg)
{
    (void)s;
    (void)err;
    kd_client_close(arg, KT_CLOSE_NOW);
}

static void client_drain_cb(kt_stream *s, void *arg)
{
    (void)s;
    maybe_resume(arg);
}

static void client_close_cb(kt_stream *s, void *arg)
{
    kd_client *c = arg;
    kd_server *srv = c->srv;
    (void)s;
    kt_resp_req_free(&c->req);
    kt_free(c->name);
    kt_free(c);
    srv->nclosing--;
    kd_server_client_gone(srv);
}

/* ---- closing ------------------------------------------------------------------------ */

void kd_client_finish(kd_client *c)
{
    if (c->flags & KD_C_CLOSED)
        return;
    c->flags |= KD_C_FINISH;
    kt_stream_read_stop(c->s);
    if (c->head == NULL)
        kd_client_close(c, KT_CLOSE_FLUSH);
}

void kd_client_close(kd_client *c, kt_close_mode mode)
{
    kd_server *srv = c->srv;
    if (c->flags & KD_C_CLOSED)
        return;
    c->flags |= KD_C_CLOSED;
    list_unlink(srv, c);
    srv->nclients--;
    /* Detach the pending requests: settled ones go now; the others are
     * cancelled (which reaches the pool: queued fetches are dropped, sent
     * ones are unhooked) and freed by their continuation. */
    kd_req *r = c->head;
    c->head = c->tail = NULL;
    while (r) {
        kd_req *next = r->next;
        if (r->done) {
            kd_req_free(r);
        } else {
            r->c = NULL;
            (void)kt_future_cancel(r->f);
        }
        r = next;
    }
    c->pending = 0;
    srv->nclosing++;
    kt_stream_close(c->s, mode);
}

void kd_clients_close_all(kd_server *srv)
{
    while (srv->head)
        kd_client_close(srv->head, KT_CLOSE_NOW);
}

void kd_clients_finish_all(kd_server *srv)
{
    for (kd_client *c = srv->head, *next; c; c = next) {
        next = c->next; /* finish may close c (and unlink it) */
        kd_client_finish(c);
    }
}

void kd_clients_sweep(kd_server *srv)
{
    uint64_t idle = srv->cfg.idle_timeout;
    if (idle == 0)
        return;
    uint64_t now = kt_loop_now(srv->loop);
    /* Least recently active first: stop at the first one still fresh. A
     * client waiting on the database is not idle: it moves to the back. */
    kd_client *stop = srv->tail;
    while (srv->head && srv->head->last + idle <= now) {
        kd_client *c = srv->head;
        if (c->head) {
            touch(c);
        } else {
            char peer[64];
            kt_log_info("closing client id=%llu %s: idle for %llu s", (unsigned long long)c->id,
                        kt_stream_peer(c->s, peer, sizeof peer),
                        (unsigned long long)((now - c->last) / KT_SEC(1)));
            srv->st.closed_idle++;
            kd_client_close(c, KT_CLOSE_FLUSH);
        }
        if (c == stop)
            break;
    }
}

size_t kd_clients_blocked(const kd_server *srv)
{
    size_t n = 0;
    for (const kd_client *c = srv->head; c; c = c->next)
        if (c->head && !c->head->done)
            n++;
    return n;
}

/* ---- accessors ---------------------------------------------------------------------- */

uint64_t kd_client_id(const kd_client *c) { return c->id; }
const char *kd_client_name(const kd_client *c) { return c->name; }
bool kd_client_authed(const kd_client *c) { return (c->flags & KD_C_AUTHED) != 0; }

void kd_client_set_name(kd_client *c, char *name)
{
    kt_free(c->name);
    c->name = name;
}

void kd_client_set_authed(kd_client *c, bool yes)
{
    if (yes)
        c->flags |= KD_C_AUTHED;
    else
        c->flags &= ~KD_C_AUTHED;
}

void kd_client_describe(const kd_client *c, kt_buf *out)
{
    char line[512], peer[96];
    uint64_t now = kt_loop_now(c->srv->loop);
    int n = snprintf(line, sizeof line, "id=%llu addr=%s name=%s age=%llu idle=%llu pending=%u "
                     "obl=%zu qbuf=%zu\n", (unsigned long long)c->id,
                     kt_stream_peer(c->s, peer, sizeof peer), c->name ? c->name : "",
                     (unsigned long long)((now - c->created) / KT_SEC(1)),
                     (unsigned long long)((now - c->last) / KT_SEC(1)), (unsigned)c->pending,
                     kt_stream_pending(c->s), kt_stream_buffered(c->s));
    if (n > 0)
        (void)kt_buf_append(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

void kd_clients_describe_all(const kd_server *srv, kt_buf *out)
{
    for (const kd_client *c = srv->head; c; c = c->next)
        kd_client_describe(c, out);
}
