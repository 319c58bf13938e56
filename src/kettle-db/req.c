/*
 * req.c - kettle-db's requests: where the database's slowness lives.
 *
 * A GET (or each key of an MGET) is "in service" while a kt_timer embedded
 * in its request runs its delay; with `workers K` at most K are, the rest
 * wait in the server's FIFO. Replies leave each connection in request order:
 * a ready request waits until everything before it has been written, so one
 * slow request holds back the replies behind it on its connection
 * (head-of-line blocking, exactly as a pipelined Redis connection behaves).
 * Per-request faults act here, when the faulty reply is due.
 *
 * Requests come from a per-server free list filled in slabs, so the steady
 * state allocates nothing per request.
 */
#include "config.h"
#include <errno.h>
#include <string.h>
#include "kdb.h"

#define SLAB_REQS 1024

kdb_req *kdb_req_get(kdb_server *srv)
{
    if (srv->free_reqs == NULL) {
        void **slabs = kt_realloc(srv->slabs, (srv->nslabs + 1) * sizeof *slabs);
        if (slabs == NULL)
            return NULL;
        srv->slabs = slabs;
        kdb_req *slab = kt_calloc(SLAB_REQS, sizeof *slab);
        if (slab == NULL)
            return NULL;
        srv->slabs[srv->nslabs++] = slab;
        for (size_t i = 0; i < SLAB_REQS; i++) {
            slab[i].next = srv->free_reqs;
            srv->free_reqs = &slab[i];
        }
        srv->reqs_total += SLAB_REQS;
        srv->reqs_free += SLAB_REQS;
    }
    kdb_req *r = srv->free_reqs;
    srv->free_reqs = r->next;
    srv->reqs_free--;
    memset(r, 0, sizeof *r);
    return r;
}

void kdb_req_put(kdb_server *srv, kdb_req *r)
{
    if (r->kind == KDB_REQ_TEXT && (r->flags & KDB_RF_FREE_TEXT))
        kt_free((char *)r->u.text);
    r->kind = 0;
    r->next = srv->free_reqs;
    srv->free_reqs = r;
    srv->reqs_free++;
}

void kdb_reqs_destroy(kdb_server *srv)
{
    for (size_t i = 0; i < srv->nslabs; i++)
        kt_free(srv->slabs[i]);
    kt_free(srv->slabs);
    srv->slabs = NULL;
    srv->nslabs = 0;
    srv->free_reqs = NULL;
}

static kdb_conn *req_conn(const kdb_req *r)
{
    if (r->kind == KDB_REQ_KEY)
        return r->up.parent ? r->up.parent->up.conn : NULL;
    return r->up.conn;
}

static void append(kdb_conn *c, kdb_req *r)
{
    r->next = NULL;
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->npending++;
}

/* ---- service: delays and worker slots ------------------------------------ */

/* The monotonic clock, read afresh every CLOCK_EVERY calls (and never
 * older than this iteration's loop time): at 100,000 requests in flight a
 * clock read per event costs more than the rest of the event, while the
 * cached value is at most CLOCK_EVERY events (a few microseconds) old. */
#define CLOCK_EVERY 16

static uint64_t clock_now(kdb_server *srv)
{
    uint64_t lnow = kt_loop_now(srv->loop);
    if (++srv->clock_uses >= CLOCK_EVERY || srv->clock_cache < lnow) {
        srv->clock_uses = 0;
        srv->clock_cache = kt_clock_ns();
    }
    return srv->clock_cache > lnow ? srv->clock_cache : lnow;
}

static void complete(kdb_server *srv, kdb_req *r);

static void req_timer_cb(kt_timer *t, void *arg)
{
    kdb_req *r = arg;
    kdb_conn *c = req_conn(r);
    kdb_server *srv = c->srv;
    (void)t;
    complete(srv, r);
    kdb_workers_kick(srv);
}

/* Arm r's timer for r->sched; false if the timer heap could not grow. */
static bool arm(kdb_server *srv, kdb_req *r)
{
    uint64_t lnow = kt_loop_now(srv->loop);
    if (kt_timer_start(&r->timer, r->sched > lnow ? r->sched - lnow : 0, 0) == 0)
        return true;
    kt_log_warning("timer start failed: answering without delay");
    return false;
}

/*
 * Start r's delay (it has a worker slot). prev: the request before r on
 * its connection when r was submitted, or NULL.
 *
 * Chaining: a GET that is due no earlier than the GET before it on the
 * same connection cannot be due while that one is pending, so its timer
 * is armed only when that one completes (complete() walks the chain).
 * Every request keeps its own timer and completes at its own deadline,
 * exactly as if it were armed at once; but with a fixed delay and deep
 * pipelines the heap holds about one timer per connection instead of one
 * per request, which keeps 100,000 requests in flight cheap to fire.
 */
static void begin_service(kdb_server *srv, kdb_req *r, kdb_req *prev)
{
    srv->in_service++;
    r->state = KDB_RS_SERVICE;
    r->delay = kdb_latency_sample(&srv->lat, &srv->lat_rng, r->key, srv->cfg.max_delay);
    if (r->delay == 0) {
        r->sched = kt_loop_now(srv->loop);
        complete(srv, r);
        return;
    }
    /* The delay counts from now, not from the start of this iteration: a
     * request parsed late in a long read batch is due later, so deadlines
     * stay as spread out as arrivals were. */
    r->sched = clock_now(srv) + r->delay;
    kt_hist_record(&srv->h_sched, r->delay);
    kt_timer_init(srv->loop, &r->timer, req_timer_cb, r);
    if (r->kind == KDB_REQ_GET && prev && prev->kind == KDB_REQ_GET &&
        prev->state == KDB_RS_SERVICE && prev->sched <= r->sched) {
        r->flags |= KDB_RF_CHAINED;
        return;
    }
    if (!arm(srv, r))
        complete(srv, r);
}

/* A worker slot, or the FIFO. */
static void start(kdb_server *srv, kdb_req *r, kdb_req *prev)
{
    if (srv->cfg.workers > 0 && (srv->in_service >= (uint64_t)srv->cfg.workers || srv->wq_head)) {
        r->state = KDB_RS_QUEUED;
        r->qnext = NULL;
        if (srv->wq_tail)
            srv->wq_tail->qnext = r;
        else
            srv->wq_head = r;
        srv->wq_tail = r;
        srv->nqueued++;
        return;
    }
    begin_service(srv, r, prev);
}

void kdb_workers_kick(kdb_server *srv)
{
    while (!srv->stopping && srv->wq_head && (srv->cfg.workers <= 0 || srv->in_service < (uint64_t)srv->cfg.workers)) {
        kdb_req *r = srv->wq_head;
        srv->wq_head = r->qnext;
        if (srv->wq_head == NULL)
            srv->wq_tail = NULL;
        srv->nqueued--;
        if (req_conn(r) == NULL) {
            /* its connection went away while it waited */
            kdb_req_put(srv, r);
            continue;
        }
        begin_service(srv, r, NULL);
    }
}

/* r's delay is over at now: account for it and mark it ready. */
static void mark_done(kdb_server *srv, kdb_req *r, uint64_t now)
{
    srv->in_service--;
    srv->st.served++;
    if (r->delay) {
        uint64_t begin = r->sched - r->delay;
        uint64_t actual = now > begin ? now - begin : 0;
        uint64_t late = actual > r->delay ? actual - r->delay : 0;
        kt_hist_record(&srv->h_actual, actual);
        kt_hist_record(&srv->h_late, late);
    }
    r->state = KDB_RS_READY;
}

/* r's delay is over (or was zero): record its accuracy, mark it ready, let
 * the GETs chained behind it complete or arm, and write whatever became
 * due. May close the connection and free r. */
static void complete(kdb_server *srv, kdb_req *r)
{
    uint64_t now = clock_now(srv);
    mark_done(srv, r, now);
    kdb_req *top = r;
    if (r->kind == KDB_REQ_KEY) {
        top = r->up.parent;
        if (--top->remaining > 0)
            return;
        top->state = KDB_RS_READY;
    } else if (r->kind == KDB_REQ_GET) {
        for (kdb_req *n = r->next; n && (n->flags & KDB_RF_CHAINED) && n->state == KDB_RS_SERVICE;
             n = n->next) {
            n->flags &= ~KDB_RF_CHAINED;
            if (n->sched > now && arm(srv, n))
                break;
            mark_done(srv, n, now);
        }
    }
    kdb_conn *c = top->up.conn;
    if (c->head == top)
        kdb_conn_flush(c);
}

/* ---- submitting ------------------------------------------------------------ */

static bool can_write_now(const kdb_conn *c)
{
    return c->head == NULL &&
           !(c->flags & (KDB_CF_OUT_DEAD | KDB_CF_TRICKLE | KDB_CF_CLOSING | KDB_CF_RESETTING));
}

static void write_value(kdb_conn *c, kt_out *o, const kdb_req *r)
{
    if (r->flags & KDB_RF_BADKEY)
        kt_resp_error(o, "ERR key is not a decimal integer");
    else if (r->key >= 0 && r->key < c->srv->cfg.keyspace)
        kt_resp_bulk_i64(o, r->key);
    else
        kt_resp_nil(o);
}

int kdb_submit_get(kdb_conn *c, int64_t key, bool bad)
{
    kdb_server *srv = c->srv;
    if (bad)
        return kdb_reply_static(c, "-ERR key is not a decimal integer\r\n", 0);
    uint8_t fault = (uint8_t)kdb_faults_roll(&srv->faults, &srv->fault_rng);
    /* The common case of no delay and nothing owed: answer straight away. */
    if (fault == KDB_F_NONE && srv->lat.kind == KDB_LAT_NONE && srv->cfg.workers <= 0 &&
        can_write_now(c)) {
        kt_out o = kt_stream_out(c->s);
        srv->st.served++;
        if (key >= 0 && key < srv->cfg.keyspace)
            return kt_resp_bulk_i64(&o, key);
        return kt_resp_nil(&o);
    }
    kdb_req *r = kdb_req_get(srv);
    if (r == NULL)
        return -ENOMEM;
    kdb_req *prev = c->tail;
    r->kind = KDB_REQ_GET;
    r->key = key;
    r->fault = fault;
    r->up.conn = c;
    append(c, r);
    if (fault == KDB_F_STALL) {
        r->state = KDB_RS_STALLED;
        srv->stalled++;
        srv->st.faults[KDB_F_STALL]++;
        return 0;
    }
    start(srv, r, prev);
    return 0;
}

int kdb_submit_mget(kdb_conn *c, const kt_resp_arg *keys, size_t n)
{
    kdb_server *srv = c->srv;
    kdb_req *m = kdb_req_get(srv);
    if (m == NULL)
        return -ENOMEM;
    m->kind = KDB_REQ_MGET;
    m->up.conn = c;
    m->fault = (uint8_t)kdb_faults_roll(&srv->faults, &srv->fault_rng);
    m->len = (uint32_t)n;
    /* build the keys first: on ENOMEM nothing has started */
    kdb_req *last = NULL;
    for (size_t i = 0; i < n; i++) {
        kdb_req *k = kdb_req_get(srv);
        if (k == NULL) {
            while ((k = m->u.keys)) {
                m->u.keys = k->next;
                kdb_req_put(srv, k);
            }
            kdb_req_put(srv, m);
            return -ENOMEM;
        }
        k->kind = KDB_REQ_KEY;
        k->up.parent = m;
        if (kt_parse_i64(keys[i].p, keys[i].len, &k->key) < 0) {
            k->flags |= KDB_RF_BADKEY;
            k->state = KDB_RS_READY;
        } else {
            m->remaining++;
        }
        if (last)
            last->next = k;
        else
            m->u.keys = k;
        last = k;
    }
    append(c, m);
    if (m->fault == KDB_F_STALL) {
        m->state = KDB_RS_STALLED;
        srv->stalled++;
        srv->st.faults[KDB_F_STALL]++;
        return 0;
    }
    if (m->remaining == 0) {
        m->state = KDB_RS_READY;
        if (c->head == m)
            kdb_conn_flush(c);
        return 0;
    }
    /* Count one extra so that keys completing at once (zero delay) cannot
     * flush, and free, m while this loop still walks its keys. */
    m->remaining++;
    for (kdb_req *k = m->u.keys; k; k = k->next)
        if (!(k->flags & KDB_RF_BADKEY))
            start(srv, k, NULL);
    if (--m->remaining == 0) {
        m->state = KDB_RS_READY;
        if (c->head == m)
            kdb_conn_flush(c);
    }
    return 0;
}

int kdb_reply(kdb_conn *c, const char *data, size_t len, unsigned flags)
{
    if (c->flags & (KDB_CF_CLOSING | KDB_CF_OUT_DEAD))
        return 0;
    if (can_write_now(c)) {
        int r = kt_stream_write(c->s, data, len);
        if (flags & KDB_RF_CLOSE)
            kdb_conn_close(c, KT_CLOSE_FLUSH);
        return r;
    }
    char *copy = kt_malloc(len ? len : 1);
    kdb_req *r = copy ? kdb_req_get(c->srv) : NULL;
    if (r == NULL) {
        kt_free(copy);
        return -ENOMEM;
    }
    memcpy(copy, data, len);
    r->kind = KDB_REQ_TEXT;
    r->u.text = copy;
    r->len = (uint32_t)len;
    r->flags = (uint8_t)(flags | KDB_RF_FREE_TEXT);
    r->state = KDB_RS_READY;
    r->fault = KDB_F_NONE;
    r->up.conn = c;
    append(c, r);
    return 0;
}

int kdb_reply_static(kdb_conn *c, const char *text, unsigned flags)
{
    if (c->flags & (KDB_CF_CLOSING | KDB_CF_OUT_DEAD))
        return 0;
    if (can_write_now(c))
        return kdb_reply(c, text, strlen(text), flags);
    kdb_req *r = kdb_req_get(c->srv);
    if (r == NULL)
        return -ENOMEM;
    r->kind = KDB_REQ_TEXT;
    r->u.text = text;
    r->len = (uint32_t)strlen(text);
    r->flags = (uint8_t)flags;
    r->state = KDB_RS_READY;
    r->fault = KDB_F_NONE;
    r->up.conn = c;
    append(c, r);
    return 0;
}

/* ---- the reply path ----------------------------------------------------------- */

/* Encode r's normal reply into o. */
static void encode(kdb_conn *c, kt_out *o, const kdb_req *r)
{
    switch (r->kind) {
    case KDB_REQ_GET:
        write_value(c, o, r);
        break;
    case KDB_REQ_MGET:
        kt_resp_array(o, r->len);
        for (const kdb_req *k = r->u.keys; k; k = k->next)
            write_value(c, o, k);
        break;
    case KDB_REQ_TEXT: {
        char *p = o->reserve(o->ctx, r->len);
        if (p) {
            memcpy(p, r->u.text, r->len);
            o->commit(o->ctx, r->len);
        }
        break;
    }
    default:
        break;
    }
}

static void send_trickle_slice(kdb_conn *c)
{
    kdb_server *srv = c->srv;
    uint32_t slice = srv->faults.f[KDB_F_TRICKLE].n ? srv->faults.f[KDB_F_TRICKLE].n : 1;
    uint32_t n = c->tlen - c->toff < slice ? c->tlen - c->toff : slice;
    kt_stream_write(c->s, c->tbuf + c->toff, n);
    c->toff += n;
}

static void conn_timer_cb(kt_timer *t, void *arg)
{
    kdb_conn *c = arg;
    (void)t;
    if (c->srv == NULL || (c->flags & KDB_CF_CLOSING))
        return;
    if (c->flags & KDB_CF_RESETTING) {
        /* earlier replies must reach the peer before the RST does (but a
         * peer that never reads gets its RST after about a second) */
        if (kt_stream_pending(c->s) > 0 && ++c->reset_polls < 1000) {
            kt_timer_start(&c->timer, KT_MSEC(1), 0);
            return;
        }
        kdb_conn_close(c, KT_CLOSE_RESET);
        return;
    }
    if (c->flags & KDB_CF_TRICKLE) {
        send_trickle_slice(c);
        if (c->toff < c->tlen) {
            kt_timer_start(&c->timer, c->srv->faults.f[KDB_F_TRICKLE].ns, 0);
            return;
        }
        kt_free(c->tbuf);
        c->tbuf = NULL;
        c->flags &= ~KDB_CF_TRICKLE;
        kdb_conn_flush(c);
    }
}

/* Encode r's reply into a private buffer (for cut and trickle). */
static int encode_to_buf(kdb_conn *c, const kdb_req *r, kt_buf *b)
{
    kt_out o = kt_buf_out(b);
    encode(c, &o, r);
    return b->len > 0 ? 0 : -ENOMEM;
}

/* Write r's reply, or act out its fault. */
static void emit(kdb_conn *c, kdb_req *r)
{
    kdb_server *srv = c->srv;
    kt_out o = kt_stream_out(c->s);
    kdb_fault *f = r->fault < KDB_F_COUNT ? &srv->faults.f[r->fault] : NULL;
    if (r->fault < KDB_F_COUNT)
        srv->st.faults[r->fault]++;
    switch (r->fault) {
    case KDB_F_NONE:
        encode(c, &o, r);
        srv->st.replies++;
        break;
    case KDB_F_ERROR:
        kt_resp_error(&o, "%s", f->msg[0] ? f->msg : "ERR injected fault");
        break;
    case KDB_F_CLOSE:
        kdb_conn_close(c, KT_CLOSE_FLUSH);
        break;
    case KDB_F_RESET:
        c->flags |= KDB_CF_RESETTING | KDB_CF_NOREAD;
        kdb_conn_update_reading(c);
        kt_timer_start(&c->timer, 0, 0);
        break;
    case KDB_F_GARBAGE: {
        uint32_t n = f->n ? f->n : 16;
        char *p = o.reserve(o.ctx, n);
        if (p == NULL)
            break;
        /* '@' is no RESP2 or RESP3 type byte: the first byte already fails */
        p[0] = '@';
        for (uint32_t i = 1; i < n; i++)
            p[i] = (char)(kdb_rng_next(&srv->fault_rng) >> 56);
        o.commit(o.ctx, n);
        break;
    }
    case KDB_F_CUT: {
        kt_buf b = { 0 };
        if (encode_to_buf(c, r, &b) == 0) {
            size_t k = f->n < b.len ? f->n : b.len - 1;
            kt_stream_write(c->s, b.data, k);
        }
        kt_buf_free(&b);
        /* nothing more leaves this connection, and nothing more is read */
        c->flags |= KDB_CF_OUT_DEAD | KDB_CF_NOREAD;
        kdb_conn_update_reading(c);
        break;
    }
    case KDB_F_TRICKLE: {
        kt_buf b = { 0 };
        if (encode_to_buf(c, r, &b) < 0 || b.len > UINT32_MAX) {
            kt_buf_free(&b);
            break;
        }
        c->tbuf = b.data;
        c->tlen = (uint32_t)b.len;
        c->toff = 0;
        c->flags |= KDB_CF_TRICKLE;
        send_trickle_slice(c);
        if (c->toff < c->tlen) {
            kt_timer_start(&c->timer, f->ns, 0);
        } else {
            kt_free(c->tbuf);
            c->tbuf = NULL;
            c->flags &= ~KDB_CF_TRICKLE;
        }
        break;
    }
    default:
        encode(c, &o, r);
        break;
    }
}

static void free_req(kdb_server *srv, kdb_req *r)
{
    if (r->kind == KDB_REQ_MGET) {
        kdb_req *k;
        while ((k = r->u.keys)) {
            r->u.keys = k->next;
            kdb_req_put(srv, k);
        }
    }
    kdb_req_put(srv, r);
}

void kdb_conn_init_timer(kdb_conn *c)
{
    kt_timer_init(c->srv->loop, &c->timer, conn_timer_cb, c);
}

void kdb_conn_flush(kdb_conn *c)
{
    kdb_server *srv = c->srv;
    const uint32_t stop = KDB_CF_OUT_DEAD | KDB_CF_TRICKLE | KDB_CF_CLOSING | KDB_CF_RESETTING;
    kdb_req *r;
    if (srv == NULL || (c->flags & stop))
        return;
    while ((r = c->head) && r->state == KDB_RS_READY) {
        c->head = r->next;
        if (c->head == NULL)
            c->tail = NULL;
        c->npending--;
        bool close_after = (r->flags & KDB_RF_CLOSE) != 0;
        emit(c, r);
        free_req(srv, r);
        if (close_after && !(c->flags & KDB_CF_CLOSING))
            kdb_conn_close(c, KT_CLOSE_FLUSH);
        if (c->flags & stop)
            break;
    }
    if (kdb_conn_check_output(c))
        return;
    /* replies left: reading may resume (pausing is on_read's business) */
    if (c->flags & KDB_CF_PAUSED)
        kdb_conn_update_reading(c);
}

bool kdb_conn_check_output(kdb_conn *c)
{
    kdb_server *srv = c->srv;
    if (srv == NULL || (c->flags & KDB_CF_CLOSING))
        return true;
    if (kt_stream_pending(c->s) <= srv->cfg.max_output_buffer)
        return false;
    char peer[64];
    kt_log_notice("closing client %s: output buffer over %llu bytes",
                  kt_stream_peer(c->s, peer, sizeof peer),
                  (unsigned long long)srv->cfg.max_output_buffer);
    srv->st.closed_output_buffer++;
    kdb_conn_close(c, KT_CLOSE_NOW);
    return true;
}

void kdb_conn_drop_reqs(kdb_conn *c)
{
    kdb_server *srv = c->srv;
    kdb_req *r;
    while ((r = c->head)) {
        c->head = r->next;
        if (r->kind == KDB_REQ_MGET) {
            kdb_req *k;
            while ((k = r->u.keys)) {
                r->u.keys = k->next;
                if (k->state == KDB_RS_QUEUED) {
                    k->up.parent = NULL; /* freed when it leaves the FIFO */
                    continue;
                }
                if (k->state == KDB_RS_SERVICE) {
                    kt_timer_stop(&k->timer);
                    srv->in_service--;
                }
                kdb_req_put(srv, k);
            }
        }
        if (r->state == KDB_RS_QUEUED) {
            r->up.conn = NULL;
            continue;
        }
        if (r->state == KDB_RS_SERVICE) {
            kt_timer_stop(&r->timer);
            srv->in_service--;
        }
        if (r->state == KDB_RS_STALLED)
            srv->stalled--;
        kdb_req_put(srv, r);
    }
    c->tail = NULL;
    c->npending = 0;
    kt_timer_stop(&c->timer);
    kt_free(c->tbuf);
    c->tbuf = NULL;
    /* freed worker slots go to whoever waits */
    kdb_workers_kick(srv);
}
