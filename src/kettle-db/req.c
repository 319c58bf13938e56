/*
 * req.c - kettle-db's requests: where the database's slowness lives.
 *
 * A GET (or each key of an MGET) is "in service" while a kt_timer embedded
 * in its request runs its delay; with `workers K` at most K are, the rest
 * wait in the server's FIFO. A GET or MGET is a deferred slot in its
 * connection's reply FIFO (server.h): ready once its delay is over, written
 * once everything before it has been, so one slow request holds back the
 * replies behind it on its connection (head-of-line blocking, exactly as a
 * pipelined Redis connection behaves). reply.c writes it.
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

/* The connection a request answers on, NULL once it has gone. */
static ks_conn *req_conn(const kdb_req *r)
{
    if (r->kind == KDB_REQ_KEY)
        return r->parent ? r->parent->slot.c : NULL;
    return r->slot.c;
}

/* The GET after r in its connection's FIFO, if the next slot is one. */
static kdb_req *next_get(const kdb_req *r)
{
    ks_slot *n = r->slot.next;
    if (n == NULL || n->bytes || ((kdb_req *)n)->kind != KDB_REQ_GET)
        return NULL;
    return (kdb_req *)n;
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
    kdb_server *srv = r->srv;
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
        kdb_req **link = srv->wq_tail ? &srv->wq_tail->qnext : &srv->wq_head;
        r->state = KDB_RS_QUEUED;
        r->qnext = NULL;
        *link = srv->wq_tail = r;
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
    if (r->kind == KDB_REQ_GET)
        r->slot.ready = true; /* written when due (ks_slot_ready or a flush) */
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
        top = r->parent;
        if (--top->remaining > 0)
            return;
        top->state = KDB_RS_READY;
    } else if (r->kind == KDB_REQ_GET) {
        for (kdb_req *n = next_get(r); n && (n->flags & KDB_RF_CHAINED) && n->state == KDB_RS_SERVICE;
             n = next_get(n)) {
            n->flags &= ~KDB_RF_CHAINED;
            if (n->sched > now && arm(srv, n))
                break;
            mark_done(srv, n, now);
        }
    }
    ks_slot_ready(&top->slot);
}

void kdb_req_abandon(kdb_server *srv, kdb_req *r)
{
    if (r->state == KDB_RS_SERVICE) {
        kt_timer_stop(&r->timer);
        srv->in_service--;
    } else if (r->state == KDB_RS_STALLED) {
        srv->stalled--;
    }
}

/* ---- submitting ------------------------------------------------------------ */

/* A stalled request is never answered: counted, and its connection is
 * stuck (closed at once on EOF and at shutdown). */
static void stall(kdb_server *srv, ks_conn *c, kdb_req *r)
{
    r->state = KDB_RS_STALLED;
    srv->stalled++;
    srv->st.faults[KDB_F_STALL]++;
    ((kdb_conn *)c)->nstalled++;
}

int kdb_submit_get(ks_conn *c, int64_t key, bool bad)
{
    kdb_server *srv = kdb_of(c);
    if (bad) {
        ks_error(c, "ERR key is not a decimal integer");
        return 0;
    }
    uint8_t fault = (uint8_t)kdb_faults_roll(&srv->faults, &srv->fault_rng);
    /* No delay: answer straight away (behind what is owed, in order). */
    if (fault == KDB_F_NONE && srv->lat.kind == KDB_LAT_NONE && srv->cfg.workers <= 0) {
        kt_out *o = ks_reply(c);
        if (o == NULL)
            return 0;
        srv->st.served++;
        srv->st.replies++;
        if (key >= 0 && key < srv->cfg.keyspace)
            return kt_resp_bulk_i64(o, key);
        return kt_resp_nil(o);
    }
    kdb_req *r = kdb_req_get(srv);
    if (r == NULL)
        return -ENOMEM;
    ks_slot *tail = c->tail;
    kdb_req *prev = tail && !tail->bytes ? (kdb_req *)tail : NULL;
    r->kind = KDB_REQ_GET;
    r->key = key;
    r->fault = fault;
    r->srv = srv;
    ks_defer(c, &r->slot);
    if (fault == KDB_F_STALL) {
        stall(srv, c, r);
        return 0;
    }
    start(srv, r, prev);
    return 0;
}

static void mget_ready(kdb_req *m)
{
    m->state = KDB_RS_READY;
    ks_slot_ready(&m->slot);
}

int kdb_submit_mget(ks_conn *c, const kt_resp_arg *keys, size_t n)
{
    kdb_server *srv = kdb_of(c);
    kdb_req *m = kdb_req_get(srv);
    if (m == NULL)
        return -ENOMEM;
    m->kind = KDB_REQ_MGET;
    m->srv = srv;
    m->fault = (uint8_t)kdb_faults_roll(&srv->faults, &srv->fault_rng);
    m->len = (uint32_t)n;
    /* build the keys first: on ENOMEM nothing has started */
    kdb_req *last = NULL;
    for (size_t i = 0; i < n; i++) {
        kdb_req *k = kdb_req_get(srv);
        if (k == NULL) {
            while ((k = m->keys)) {
                m->keys = k->next;
                kdb_req_put(srv, k);
            }
            kdb_req_put(srv, m);
            return -ENOMEM;
        }
        k->kind = KDB_REQ_KEY;
        k->parent = m;
        k->srv = srv;
        if (kt_parse_i64(keys[i].p, keys[i].len, &k->key) < 0) {
            k->flags |= KDB_RF_BADKEY;
            k->state = KDB_RS_READY;
        } else {
            m->remaining++;
        }
        if (last)
            last->next = k;
        else
            m->keys = k;
        last = k;
    }
    ks_defer(c, &m->slot);
    if (m->fault == KDB_F_STALL) {
        stall(srv, c, m);
        return 0;
    }
    if (m->remaining == 0) {
        mget_ready(m);
        return 0;
    }
    /* Count one extra so that keys completing at once (zero delay) cannot
     * flush, and free, m while this loop still walks its keys. */
    m->remaining++;
    for (kdb_req *k = m->keys; k; k = k->next)
        if (!(k->flags & KDB_RF_BADKEY))
            start(srv, k, NULL);
    if (--m->remaining == 0)
        mget_ready(m);
    return 0;
}
