/*
 * server-conn.c - one client connection of the server core: requests in,
 * replies out in request order, every byte it makes the server hold bounded.
 *
 *   bytes ─▶ parser (c->req, resumes where the last read stopped)
 *              │ complete request          │ incomplete: kept by the stream,
 *              ▼                           │ past max-query-buffer: closed
 *           ks_dispatch ─┬─ immediate reply ──▶ stream, or a byte slot when
 *                        │                      something is owed before it
 *                        └─ deferred slot (daemon) ── ready ──┐
 *   FIFO: head [slot ✓][bytes ✓][slot …] tail                 ▼
 *         the head and every ready slot behind it leave together ─▶ stream
 *
 * Reading pauses (backpressure) while max-pending requests are owed, while
 * the bytes held for requests in flight reach max-pending-bytes, while the
 * stream's output is above its high-water mark, or while parked replies
 * pass it; it resumes as replies leave. A client whose unsent replies
 * (stream and FIFO) pass max-output-buffer is closed. An idle client holds
 * no buffer: the stream keeps nothing once its input is parsed, and a
 * parser state grown by a large request is released.
 */
#include "config.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "server-int.h"

/* A parser state with more argument slots than this is released once the
 * connection has no partial request (an idle client holds little). */
#define KS_REQ_KEEP_ARGS 64

static size_t conn_read_cb(kt_stream *s, const char *data, size_t len, void *arg);
static void conn_eof_cb(kt_stream *s, void *arg);
static void conn_error_cb(kt_stream *s, int err, void *arg);
static void conn_drain_cb(kt_stream *s, void *arg);
static void conn_close_cb(kt_stream *s, void *arg);

static const kt_stream_cbs conn_cbs = {
    .on_read = conn_read_cb,
    .on_eof = conn_eof_cb,
    .on_error = conn_error_cb,
    .on_drain = conn_drain_cb,
    .on_close = conn_close_cb,
};

/* ---- the client list ------------------------------------------------------------ */

/* Take c out of the list at *head (and *tail, when the list keeps one). */
static void unlink_from(ks_conn **head, ks_conn **tail, ks_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else if (tail)
        *tail = c->prev;
    c->prev = c->next = NULL;
}

void ks__list_unlink(ks_server *srv, ks_conn *c)
{
    unlink_from(&srv->head, &srv->tail, c);
}

void ks__list_append(ks_server *srv, ks_conn *c)
{
    c->next = NULL;
    c->prev = srv->tail;
    if (srv->tail)
        srv->tail->next = c;
    else
        srv->head = c;
    srv->tail = c;
}

void ks__touch(ks_conn *c)
{
    ks_server *srv = c->srv;
    c->last = kt_loop_now(srv->loop);
    if (srv->tail != c) {
        ks__list_unlink(srv, c);
        ks__list_append(srv, c);
    }
}

/* ---- set-up ------------------------------------------------------------------------ */

void ks__conn_set_watermarks(ks_conn *c)
{
    size_t high = c->srv->high_water;
    kt_stream_set_watermarks(c->s, high, high / 4);
}

ks_conn *ks__conn_new(ks_server *srv, kt_stream *s)
{
    const ks_daemon *d = srv->d;
    ks_conn *c = kt_calloc(1, d->conn_size > sizeof *c ? d->conn_size : sizeof *c);
    if (c == NULL) {
        kt_stream_set_cbs(s, NULL, NULL);
        kt_stream_close(s, KT_CLOSE_RESET);
        return NULL;
    }
    c->s = s;
    c->srv = srv;
    c->id = ++srv->next_id;
    c->created = c->last = kt_loop_now(srv->loop);
    c->flags = KS_C_PAUSED; /* not reading until ks_conn_update_reading says so */
    if (srv->sc->password == NULL || srv->sc->password[0] == '\0')
        c->flags |= KS_C_AUTHED;
    ks__list_append(srv, c);
    srv->nclients++;
    srv->st.connections++;
    kt_stream_set_cbs(s, &conn_cbs, c);
    ks__conn_set_watermarks(c);
    if (d->on_accept && !d->on_accept(c))
        c->flags |= KS_C_IDLE;
    if (!(c->flags & KS_C_CLOSED))
        ks_conn_update_reading(c);
    return c;
}

/* ---- byte slots ------------------------------------------------------------------- */

static ks_bslot *bslot_get(ks_server *srv)
{
    ks_bslot *b = srv->free_bslots;
    if (b) {
        srv->free_bslots = b->free_next;
        srv->nfree_bslots--;
    } else if ((b = kt_calloc(1, sizeof *b)) == NULL) {
        return NULL;
    }
    memset(&b->slot, 0, sizeof b->slot);
    b->slot.ready = true;
    b->slot.bytes = true;
    b->n = 0;
    b->out.len = 0;
    return b;
}

static void bslot_put(ks_server *srv, ks_bslot *b)
{
    /* Keep a slot for reuse only with a small buffer (a burst of large
     * replies is not kept for later). */
    if (srv == NULL || srv->nfree_bslots >= KS_FREE_BSLOTS_MAX || b->out.cap > 4096) {
        kt_buf_free(&b->out);
        kt_free(b);
        return;
    }
    b->free_next = srv->free_bslots;
    srv->free_bslots = b;
    srv->nfree_bslots++;
}

void ks__bslots_free(ks_server *srv)
{
    while (srv->free_bslots) {
        ks_bslot *b = srv->free_bslots;
        srv->free_bslots = b->free_next;
        kt_buf_free(&b->out);
        kt_free(b);
    }
    srv->nfree_bslots = 0;
}

/* The sink of a byte slot: what is written counts toward the client's
 * output at once (max-output-buffer, backpressure). */
static char *bslot_reserve(void *ctx, size_t n)
{
    ks_bslot *b = ctx;
    return kt_buf_reserve(&b->out, n);
}

static void bslot_commit(void *ctx, size_t n)
{
    ks_bslot *b = ctx;
    kt_buf_commit(&b->out, n);
    if (b->slot.c)
        b->slot.c->held += n;
}

/* ---- the FIFO ---------------------------------------------------------------------- */

static void fifo_push(ks_conn *c, ks_slot *s)
{
    s->next = NULL;
    s->c = c;
    if (c->tail)
        c->tail->next = s;
    else
        c->head = s;
    c->tail = s;
}

kt_out *ks_reply(ks_conn *c)
{
    ks_server *srv = c->srv;
    if (srv == NULL || (c->flags & KS_C_CLOSED))
        return NULL;
    if (c->head == NULL && !(c->flags & KS_C_HOLD)) {
        srv->out = kt_stream_out(c->s);
        return &srv->out;
    }
    /* Behind something owed: into the last byte slot, or a new one. */
    ks_bslot *b = c->tail && c->tail->bytes ? (ks_bslot *)c->tail : NULL;
    if (b == NULL) {
        if ((b = bslot_get(srv)) == NULL) {
            ks_conn_close(c, KT_CLOSE_NOW);
            return NULL;
        }
        fifo_push(c, &b->slot);
    }
    b->n++;
    c->pending++;
    srv->out = (kt_out){ bslot_reserve, bslot_commit, b };
    return &srv->out;
}

void ks_defer(ks_conn *c, ks_slot *s)
{
    s->ready = false;
    s->bytes = false;
    s->hold = 0;
    fifo_push(c, s);
    c->pending++;
}

void ks_slot_hold(ks_slot *s, size_t bytes)
{
    s->hold += bytes;
    if (s->c)
        s->c->pending_bytes += bytes;
}

void ks_slot_ready(ks_slot *s)
{
    s->ready = true;
    if (s->c && s->c->head == s)
        ks_conn_flush(s->c);
}

/* Replies kept for c (sent to the stream or parked in order) past
 * max-output-buffer: a client that does not read. Close it. */
/* c passed one of its limits: say which, count it, close it. */
static void close_at_limit(ks_conn *c, const char *what, const char *option, uint64_t limit,
                           uint64_t *counter, kt_close_mode mode)
{
    char peer[64];
    kt_log_notice("closing client id=%llu %s: %s over %llu bytes (%s)", (unsigned long long)c->id,
                  kt_stream_peer(c->s, peer, sizeof peer), what, (unsigned long long)limit, option);
    (*counter)++;
    ks_conn_close(c, mode);
}

static bool over_output_limit(ks_conn *c)
{
    ks_server *srv = c->srv;
    if (kt_stream_pending(c->s) + c->held <= srv->sc->max_output_buffer)
        return false;
    close_at_limit(c, "output buffer", "max-output-buffer", srv->sc->max_output_buffer,
                   &srv->st.closed_output, KT_CLOSE_RESET);
    return true;
}

void ks_conn_flush(ks_conn *c)
{
    ks_server *srv = c->srv;
    if (srv == NULL || (c->flags & (KS_C_CLOSED | KS_C_HOLD)))
        return;
    kt_out o = kt_stream_out(c->s);
    ks_slot *s;
    while ((s = c->head) != NULL && s->ready) {
        c->head = s->next;
        if (c->head == NULL)
            c->tail = NULL;
        s->next = NULL;
        s->c = NULL;
        if (s->bytes) {
            ks_bslot *b = (ks_bslot *)s;
            (void)kt_stream_write(c->s, b->out.data, b->out.len);
            c->held -= b->out.len;
            c->pending -= b->n;
            bslot_put(srv, b);
        } else {
            c->pending--;
            c->pending_bytes -= s->hold;
            srv->d->emit(c, s, &o); /* may close c or hold its output */
            if (c->flags & (KS_C_CLOSED | KS_C_HOLD))
                break;
        }
    }
    if ((c->flags & KS_C_CLOSED) || over_output_limit(c))
        return;
    if (c->head == NULL && !(c->flags & KS_C_HOLD) && (c->flags & KS_C_FINISH)) {
        ks_conn_close(c, KT_CLOSE_FLUSH);
        return;
    }
    ks_conn_update_reading(c);
}

/* ---- replies --------------------------------------------------------------------------- */

static void verror(ks_conn *c, const char *fmt, va_list ap)
{
    kt_out *o = ks_reply(c);
    if (o)
        (void)kt_resp_verror(o, fmt, ap);
}

void ks_error(ks_conn *c, const char *fmt, ...)
{
    va_list ap;
    if (c->srv)
        c->srv->st.err_other++;
    va_start(ap, fmt);
    verror(c, fmt, ap);
    va_end(ap);
}

void ks_error_quiet(ks_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror(c, fmt, ap);
    va_end(ap);
}

void ks_reply_ok(ks_conn *c)
{
    kt_out *o = ks_reply(c);
    if (o)
        (void)kt_resp_simple(o, "OK");
}

void ks_reply_int(ks_conn *c, int64_t v)
{
    kt_out *o = ks_reply(c);
    if (o)
        (void)kt_resp_int(o, v);
}

void ks_reply_bulk(ks_conn *c, const void *p, size_t n)
{
    kt_out *o = ks_reply(c);
    if (o)
        (void)kt_resp_bulk(o, p, n);
}

void ks_reply_lines(ks_conn *c, const char *const *lines)
{
    size_t n = 0;
    while (lines[n])
        n++;
    kt_out *o = ks_reply(c);
    if (o == NULL)
        return;
    (void)kt_resp_array(o, n);
    for (size_t i = 0; i < n; i++)
        (void)kt_resp_simple(o, lines[i]);
}

/* ---- fairness ------------------------------------------------------------------------------ */

/* End of an iteration: the clients that yielded in it read again (their
 * kept input is presented in the next one). */
void ks__resume_cb(kt_defer *d, void *arg)
{
    ks_server *srv = arg;
    (void)d;
    ks_conn *c = srv->yielded;
    srv->yielded = NULL;
    while (c) {
        ks_conn *next = c->ynext;
        c->ynext = NULL;
        c->flags &= ~KS_C_YIELD;
        ks_conn_update_reading(c);
        c = next;
    }
}

/* Has c used its slice of this iteration? */
static bool slice_spent(ks_conn *c)
{
    kt_loop_stats ls;
    kt_loop_get_stats(c->srv->loop, &ls);
    if (c->slice_iter != (uint32_t)ls.iterations) {
        c->slice_iter = (uint32_t)ls.iterations;
        c->slice_used = 0;
    }
    return c->slice_used >= KS_CONN_SLICE;
}

static void yield(ks_conn *c)
{
    ks_server *srv = c->srv;
    c->flags |= KS_C_YIELD;
    c->ynext = srv->yielded;
    srv->yielded = c;
    srv->st.yields++;
    (void)kt_loop_defer(&srv->resume);
    ks_conn_update_reading(c);
}

/* c closes: off the yield list. */
static void yield_forget(ks_conn *c)
{
    if (!(c->flags & KS_C_YIELD))
        return;
    for (ks_conn **p = &c->srv->yielded; *p; p = &(*p)->ynext) {
        if (*p == c) {
            *p = c->ynext;
            break;
        }
    }
    c->ynext = NULL;
    c->flags &= ~KS_C_YIELD;
}

/* ---- reading ------------------------------------------------------------------------------ */

/* Backpressure: what c holds is at a limit. */
static bool must_pause(const ks_conn *c)
{
    const ks_server *srv = c->srv;
    const ks_config *sc = srv->sc;
    return c->pending >= (uint64_t)sc->max_pending || kt_stream_write_blocked(c->s) ||
           c->held > srv->high_water ||
           (sc->max_pending_bytes && c->pending_bytes && c->pending_bytes >= sc->max_pending_bytes);
}

void ks_conn_update_reading(ks_conn *c)
{
    if (c->srv == NULL || (c->flags & KS_C_CLOSED))
        return;
    /* A NOREAD connection is still read (its input dropped) so that the
     * peer's close is noticed; a FROZEN or IDLE one is not read at all. */
    bool busy = !(c->flags & KS_C_NOREAD) && must_pause(c);
    bool want = !(c->flags & (KS_C_FROZEN | KS_C_IDLE | KS_C_YIELD)) && !busy;
    if (want && (c->flags & KS_C_PAUSED)) {
        if (kt_stream_read_start(c->s) < 0) {
            ks_conn_close(c, KT_CLOSE_NOW);
            return;
        }
        c->flags &= ~KS_C_PAUSED;
    } else if (!want && !(c->flags & KS_C_PAUSED)) {
        c->flags |= KS_C_PAUSED;
        if (busy)
            c->srv->st.paused++;
        kt_stream_read_stop(c->s);
    }
}

/* Malformed input: Redis's answer after the replies owed, then close. */
static void protocol_error(ks_conn *c, const char *why)
{
    if (why == NULL)
        why = "invalid request";
    c->srv->st.err_protocol++;
    kt_log_info("client id=%llu: protocol error: %s", (unsigned long long)c->id, why);
    ks_error_quiet(c, "ERR Protocol error: %s", why);
    ks_conn_finish(c);
}

static size_t conn_read_cb(kt_stream *s, const char *data, size_t len, void *arg)
{
    ks_conn *c = arg;
    ks_server *srv = c->srv;
    size_t off = 0;
    (void)s;
    if (srv == NULL || (c->flags & (KS_C_CLOSED | KS_C_NOREAD)))
        return len;
    c->quiet = 0;
    c->flags &= ~KS_C_PARTIAL;
    if (c->req == NULL && (c->req = kt_calloc(1, sizeof *c->req)) == NULL) {
        kt_log_warning("closing client id=%llu: out of memory for its request",
                       (unsigned long long)c->id);
        ks_conn_close(c, KT_CLOSE_NOW);
        return len;
    }
    while (off < len) {
        if (c->flags & (KS_C_FROZEN | KS_C_PAUSED))
            break;
        if (must_pause(c)) {
            ks_conn_update_reading(c);
            break;
        }
        if (slice_spent(c)) {
            yield(c);
            break;
        }
        const char *err = NULL;
        ssize_t r = kt_resp_parse_request(data + off, len - off, &srv->lim, c->req, &err);
        if (r == KT_RESP_INCOMPLETE) {
            if (len - off > srv->sc->max_query_buffer) {
                /* unparsed input past max-query-buffer: closed, as Redis does */
                close_at_limit(c, "query buffer", "max-query-buffer", srv->sc->max_query_buffer,
                               &srv->st.closed_query, KT_CLOSE_NOW);
                return len;
            }
            c->flags |= KS_C_PARTIAL;
            break;
        }
        if (r < 0) {
            protocol_error(c, err);
            return len;
        }
        off += (size_t)r;
        /* past the slice the next pass yields: no need to count further */
        c->slice_used += (size_t)r < KS_CONN_SLICE ? (uint32_t)r : KS_CONN_SLICE;
        if (c->req->argc == 0)
            continue; /* empty line, *0, *-1 */
        ks__touch(c);
        ks_dispatch(c, c->req->argv, c->req->argc);
        if (c->flags & (KS_C_CLOSED | KS_C_NOREAD))
            return len; /* QUIT or worse: the rest is not for us */
        if (c->held > srv->sc->max_output_buffer && over_output_limit(c))
            return len;
    }
    if (off == len && c->req && c->req->cap > KS_REQ_KEEP_ARGS)
        kt_resp_req_free(c->req);
    if (over_output_limit(c))
        return len;
    return off;
}

static void conn_eof_cb(kt_stream *s, void *arg)
{
    ks_conn *c = arg;
    (void)s;
    if (c->srv == NULL || (c->flags & KS_C_CLOSED))
        return;
    /* Half-close: answer what was asked, then close; unless some answer
     * will never come (a fault), then close now. */
    if (c->srv->d->stuck && c->srv->d->stuck(c)) {
        ks_conn_close(c, KT_CLOSE_NOW);
        return;
    }
    ks_conn_finish(c);
}

static void conn_error_cb(kt_stream *s, int err, void *arg)
{
    (void)s;
    (void)err;
    ks_conn_close(arg, KT_CLOSE_NOW);
}

static void conn_drain_cb(kt_stream *s, void *arg)
{
    (void)s;
    ks_conn_update_reading(arg);
}

static void conn_close_cb(kt_stream *s, void *arg)
{
    ks_conn *c = arg;
    ks_server *srv = c->srv;
    (void)s;
    if (srv)
        unlink_from(&srv->closing, NULL, c);
    kt_free(c->name);
    if (c->req) {
        kt_resp_req_free(c->req);
        kt_free(c->req);
    }
    kt_free(c);
    if (srv)
        ks__conn_gone(srv);
}

/* ---- closing and the daemon's controls ------------------------------------------------- */

void ks_conn_finish(ks_conn *c)
{
    if (c->flags & KS_C_CLOSED)
        return;
    c->flags |= KS_C_FINISH | KS_C_NOREAD;
    if (c->head == NULL && !(c->flags & KS_C_HOLD))
        ks_conn_close(c, KT_CLOSE_FLUSH);
    else
        ks_conn_update_reading(c);
}

void ks_conn_close(ks_conn *c, kt_close_mode mode)
{
    ks_server *srv = c->srv;
    if (c->flags & KS_C_CLOSED)
        return;
    c->flags |= KS_C_CLOSED;
    if (srv) {
        yield_forget(c);
        ks__list_unlink(srv, c);
        srv->nclients--;
        /* kept on the closing list until its stream is done (the server
         * may be freed first: then it forgets the server) */
        c->next = srv->closing;
        if (srv->closing)
            srv->closing->prev = c;
        srv->closing = c;
        srv->nclosing++;
        /* The replies owed go: byte slots now, deferred ones to the daemon
         * (which cancels the work behind them). */
        ks_slot *s = c->head;
        c->head = c->tail = NULL;
        while (s) {
            ks_slot *next = s->next;
            s->next = NULL;
            s->c = NULL;
            if (s->bytes)
                bslot_put(srv, (ks_bslot *)s);
            else
                srv->d->drop(s);
            s = next;
        }
        c->pending = 0;
        c->pending_bytes = 0;
        c->held = 0;
        if (srv->d->on_close)
            srv->d->on_close(c);
    }
    kt_stream_close(c->s, mode);
}

void ks_conn_noread(ks_conn *c)
{
    c->flags |= KS_C_NOREAD;
    ks_conn_update_reading(c);
}

void ks_conn_freeze(ks_conn *c, bool on)
{
    if (on)
        c->flags |= KS_C_FROZEN;
    else
        c->flags &= ~KS_C_FROZEN;
    ks_conn_update_reading(c);
}

void ks_conn_hold(ks_conn *c, bool on)
{
    if (on) {
        c->flags |= KS_C_HOLD;
        return;
    }
    c->flags &= ~KS_C_HOLD;
    ks_conn_flush(c);
}

void ks_conn_start(ks_conn *c)
{
    c->flags &= ~KS_C_IDLE;
    ks_conn_update_reading(c);
}

/* ---- CLIENT LIST ------------------------------------------------------------------------------ */

void ks_conn_describe(const ks_conn *c, kt_buf *out)
{
    char line[512], peer[96];
    uint64_t now = kt_loop_now(c->srv->loop);
    int n = snprintf(line, sizeof line,
                     "id=%llu addr=%s name=%s age=%llu idle=%llu pending=%u obl=%zu qbuf=%zu "
                     "held=%zu pbytes=%zu\n",
                     (unsigned long long)c->id, kt_stream_peer(c->s, peer, sizeof peer),
                     c->name ? c->name : "", (unsigned long long)((now - c->created) / KT_SEC(1)),
                     (unsigned long long)((now - c->last) / KT_SEC(1)), (unsigned)c->pending,
                     kt_stream_pending(c->s), kt_stream_buffered(c->s), c->held, c->pending_bytes);
    if (n > 0)
        (void)kt_buf_append(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}
