/*
 * pool.c - the backend pool: database servers on a consistent-hash ring,
 * each with a few pipelined connections (conn.c) and a bounded queue.
 *
 *   kd_pool_fetch(key)
 *        │ ring: hash(key) -> server (skipping ejected ones)
 *        ▼
 *   server ──── pick: the UP connection with the fewest outstanding
 *        │            that has room (< backend-pipeline)
 *        │
 *        ├─ room ──▶ conn: "GET key" queued on the stream ──TCP──▶ database
 *        │           ring: [f1][f2][ ][f4] ◀── replies, in order: each
 *        │                 oldest ──▶ newest    settles the oldest slot
 *        │                 (a cancelled slot is kept: its reply is dropped)
 *        │
 *        ├─ no room ─▶ queue: [q1]-[q2]-...   (bounded: backend-queue-limit)
 *        │             drained as replies free slots or connections come up
 *        │
 *        └─ down / ejected / queue full ──▶ the future fails at once
 *
 * Failure of a connection fails its waiters, backs off (exponentially,
 * with jitter) and reconnects; eject-after failures in a row take the
 * server off the ring for eject-time. Nothing here allocates per fetch in
 * steady state: futures come from the loop's free list, ring slots are
 * reused, queue items have a free list.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "pool-int.h"

#define KD_FREE_Q_MAX 4096

static void reaper_cb(kt_timer *t, void *arg);

int kd_pool_new(kt_loop *loop, kd_pool **out)
{
    kd_pool *p = kt_calloc(1, sizeof *p);
    if (p == NULL)
        return -ENOMEM;
    p->loop = loop;
    p->lim = kt_resp_default_limits;
    p->lim.max_bulk = 64u << 20;
    p->lim.max_depth = 8;
    p->rng = kt_clock_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
    kt_timer_init(loop, &p->reaper, reaper_cb, p);
    *out = p;
    return 0;
}

static uint64_t rnd(kd_pool *p)
{
    uint64_t x = p->rng; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return p->rng = x;
}

uint64_t kd_pool_backoff(kd_pool *p, uint32_t fails)
{
    uint64_t lo = p->prm.retry_min, hi = p->prm.retry_max;
    uint32_t shift = fails > 1 ? fails - 1 : 0;
    uint64_t d = lo;
    while (shift-- && d < hi)
        d *= 2;
    if (d > hi)
        d = hi;
    if (d < 2)
        return d ? d : 1;
    /* "equal jitter": half fixed, half random, so that the connections of a
     * pool (and pools of several daemons) do not retry in lockstep */
    return d / 2 + rnd(p) % (d / 2 + 1);
}

/* ---- servers ------------------------------------------------------------------ */

static bool backend_live(const kd_backend *b, uint64_t now)
{
    return !b->ejected || now >= b->eject_until;
}

static bool ring_live_cb(uint32_t i, void *arg)
{
    kd_pool *p = arg;
    return backend_live(p->srv[i], kt_loop_now(p->loop));
}

static kd_backend *backend_new(kd_pool *p, const char *name, const kt_addr *addr)
{
    kd_backend *b = kt_calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->conns = kt_calloc(p->prm.connections, sizeof *b->conns);
    if (b->conns == NULL) {
        kt_free(b);
        return NULL;
    }
    b->pool = p;
    snprintf(b->name, sizeof b->name, "%s", name);
    b->addr = *addr;
    b->nconns = p->prm.connections;
    kt_hist_init(&b->hist);
    for (uint32_t i = 0; i < b->nconns; i++)
        kd_conn_init(&b->conns[i], b);
    return b;
}

static void backend_start(kd_backend *b)
{
    for (uint32_t i = 0; i < b->nconns; i++)
        kd_conn_start(&b->conns[i]);
}

static void backend_free(kd_backend *b, const char *msg)
{
    kd_backend_fail_queue(b, -ESHUTDOWN, msg);
    for (uint32_t i = 0; i < b->nconns; i++)
        kd_conn_close(&b->conns[i], msg);
    kd_pool *p = b->pool;
    p->retired_failed += b->st.failed;
    kt_free(b->conns);
    kt_free(b);
}

/* The UP connection with the fewest outstanding that has room. Chosen per
 * fetch, so that the keys of one MGET spread over the connections: a
 * database answers each connection in order, and one slow reply holds up
 * every reply behind it on its connection (with redis-server, which
 * answers at once, one connection batches best: backend-connections 1). */
kd_conn *kd_backend_pick(kd_backend *b)
{
    kd_conn *best = NULL;
    uint32_t limit = b->pool->prm.pipeline;
    for (uint32_t i = 0; i < b->nconns; i++) {
        kd_conn *c = &b->conns[i];
        if (c->state == KD_CONN_UP && c->count < limit && (best == NULL || c->count < best->count))
            best = c;
    }
    return best;
}

/* Ejecting moves a server's keys to its ring neighbours; with nobody
 * left to take them it would only delay the recovery (a server that is
 * down already fails its fetches at once), so the last one stays. */
static bool others_live(const kd_pool *p, const kd_backend *b, uint64_t now)
{
    for (size_t i = 0; i < p->nsrv; i++)
        if (p->srv[i] != b && backend_live(p->srv[i], now))
            return true;
    return false;
}

void kd_backend_failed(kd_backend *b, bool counts, const char *what)
{
    kd_pool *p = b->pool;
    uint64_t now = kt_loop_now(p->loop);
    char msg[320];
    b->st.conn_failures++;
    snprintf(b->last_error, sizeof b->last_error, "%s", what);
    if (counts)
        b->fails++;
    if (!b->warned) {
        kt_log_warning("backend %s: %s", b->name, what);
        b->warned = true;
    } else {
        kt_log_info("backend %s: %s", b->name, what);
    }
    if (b->retiring)
        return;
    if (p->prm.eject_after && b->fails >= p->prm.eject_after && backend_live(b, now) &&
        others_live(p, b, now)) {
        b->ejected = true;
        b->eject_until = now + p->prm.eject_time;
        b->st.ejections++;
        kt_log_warning("backend %s: ejected for %llu ms after %u failures in a row (%s)",
                       b->name, (unsigned long long)(p->prm.eject_time / KT_MSEC(1)),
                       (unsigned)b->fails, what);
        snprintf(msg, sizeof msg, "ERR backend %s is ejected: %s", b->name, what);
        kd_backend_fail_queue(b, -EHOSTDOWN, msg);
    }
    if (b->up == 0 && b->connecting == 0 && b->qlen) {
        snprintf(msg, sizeof msg, "ERR backend %s is down: %s", b->name, what);
        kd_backend_fail_queue(b, -EHOSTDOWN, msg);
    }
}

void kd_backend_healthy(kd_backend *b)
{
    if (b->warned)
        kt_log_notice("backend %s: serving again", b->name);
    b->fails = 0;
    b->warned = false;
    b->ejected = false;
}

/* ---- the wait queue -------------------------------------------------------------- */

static void qitem_free(kd_pool *p, kd_qitem *q)
{
    if (q->key != q->inl)
        kt_free(q->key);
    if (p->nfree_q < KD_FREE_Q_MAX) {
        q->next = p->free_q;
        p->free_q = q;
        p->nfree_q++;
    } else {
        kt_free(q);
    }
}

static void queue_unlink(kd_backend *b, kd_qitem *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        b->qhead = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        b->qtail = q->prev;
    b->qlen--;
}

static void queue_cancel_cb(kt_future *f, void *arg)
{
    kd_qitem *q = arg;
    kd_backend *b = q->b;
    queue_unlink(b, q);
    b->st.cancelled++;
    qitem_free(b->pool, q);
    kt_future_unref(f);
}

static int queue_push(kd_backend *b, const char *key, size_t len, kt_future *f)
{
    kd_pool *p = b->pool;
    kd_qitem *q = p->free_q;
    if (q) {
        p->free_q = q->next;
        p->nfree_q--;
    } else if ((q = kt_malloc(sizeof *q)) == NULL) {
        return -ENOMEM;
    }
    q->key = q->inl;
    if (len > sizeof q->inl && (q->key = kt_malloc(len)) == NULL) {
        q->key = q->inl;
        qitem_free(p, q);
        return -ENOMEM;
    }
    memcpy(q->key, key, len);
    q->len = (uint32_t)len;
    q->b = b;
    q->f = f;
    kt_future_ref(f);
    kt_future_on_cancel(f, queue_cancel_cb, q);
    q->next = NULL;
    q->prev = b->qtail;
    if (b->qtail)
        b->qtail->next = q;
    else
        b->qhead = q;
    b->qtail = q;
    b->qlen++;
    return 0;
}

void kd_backend_drain_queue(kd_backend *b)
{
    kd_conn *c;
    while (b->qhead && (c = kd_backend_pick(b)) != NULL) {
        kd_qitem *q = b->qhead;
        queue_unlink(b, q);
        kt_future_on_cancel(q->f, NULL, NULL);
        if (kd_conn_send(c, q->key, q->len, q->f) < 0) {
            (void)kt_future_fail(q->f, -ENOMEM, "ERR out of memory");
            b->st.failed++;
        }
        kt_future_unref(q->f);
        qitem_free(b->pool, q);
    }
}

void kd_backend_fail_queue(kd_backend *b, int err, const char *msg)
{
    while (b->qhead) {
        kd_qitem *q = b->qhead;
        queue_unlink(b, q);
        (void)kt_future_fail(q->f, err, "%s", msg);
        b->st.failed++;
        kt_future_unref(q->f);
        qitem_free(b->pool, q);
    }
}

/* ---- fetch --------------------------------------------------------------------------- */

kt_future *kd_pool_fetch(kd_pool *p, const char *key, size_t len)
{
    kt_future *f = kt_future_new(p->loop);
    if (f == NULL)
        return NULL;
    if (p->nsrv == 0) {
        (void)kt_future_fail(f, -ESHUTDOWN, "ERR no backend configured");
        return f;
    }
    kd_backend *b = p->nsrv == 1 ? p->srv[0]
                                 : p->srv[kd_ring_lookup(&p->ring, key, len, ring_live_cb, p)];
    b->st.fetches++;
    kd_conn *c = kd_backend_pick(b);
    if (c) {
        if (kd_conn_send(c, key, len, f) < 0) {
            b->st.failed++;
            (void)kt_future_fail(f, -ENOMEM, "ERR out of memory");
        }
        return f;
    }
    uint64_t now = kt_loop_now(p->loop);
    if (!backend_live(b, now)) {
        b->st.failed++;
        (void)kt_future_fail(f, -EHOSTDOWN, "ERR backend %s is ejected for %llu ms more: %s",
                             b->name, (unsigned long long)((b->eject_until - now) / KT_MSEC(1)),
                             b->last_error);
        return f;
    }
    if (b->up == 0 && b->connecting == 0) {
        b->st.failed++;
        (void)kt_future_fail(f, -EHOSTDOWN, "ERR backend %s is down: %s", b->name,
                             b->last_error[0] ? b->last_error : "not connected");
        return f;
    }
    if (b->qlen >= p->prm.queue_limit) {
        b->st.failed++;
        (void)kt_future_fail(f, -EAGAIN,
                             "ERR backend %s is overloaded: %u fetches already wait "
                             "(backend-queue-limit)", b->name, (unsigned)b->qlen);
        return f;
    }
    if (queue_push(b, key, len, f) < 0) {
        b->st.failed++;
        (void)kt_future_fail(f, -ENOMEM, "ERR out of memory");
    }
    return f;
}

/* ---- configuration ---------------------------------------------------------------------- */

static void retire(kd_pool *p, kd_backend *b)
{
    b->retiring = true;
    /* Its queued fetches cannot be served elsewhere without changing
     * which server holds a key mid-flight: fail them now. Sent ones
     * complete normally. */
    char msg[200];
    snprintf(msg, sizeof msg, "ERR backend %s was removed from the configuration", b->name);
    kd_backend_fail_queue(b, -ESHUTDOWN, msg);
    for (uint32_t i = 0; i < b->nconns; i++) {
        kd_conn *c = &b->conns[i];
        if (c->count == 0)
            kd_conn_close(c, NULL);
    }
    b->next_retired = p->retired;
    p->retired = b;
    if (!kt_timer_active(&p->reaper))
        (void)kt_timer_start(&p->reaper, KT_MSEC(100), KT_MSEC(100));
}

/* Free retired servers once nothing is outstanding on them (bounded by
 * backend-timeout, which fails a connection whose replies stopped). */
static void reaper_cb(kt_timer *t, void *arg)
{
    kd_pool *p = arg;
    for (kd_backend **pp = &p->retired; *pp;) {
        kd_backend *b = *pp;
        if (b->outstanding == 0) {
            *pp = b->next_retired;
            kt_log_info("backend %s: retired", b->name);
            backend_free(b, NULL);
        } else {
            pp = &b->next_retired;
        }
    }
    if (p->retired == NULL)
        kt_timer_stop(t);
}

int kd_pool_configure(kd_pool *p, const kd_pool_params *prm, const char *const *addrs, size_t n,
                      const char **why)
{
    if (n == 0 || prm->connections == 0 || prm->pipeline == 0) {
        *why = "a pool needs at least one server, connection and pipeline slot";
        return -EINVAL;
    }
    kt_addr *ka = kt_calloc(n, sizeof *ka);
    kd_backend **srv = kt_calloc(n, sizeof *srv);
    bool *fresh = kt_calloc(n, sizeof *fresh);
    bool *kept = kt_calloc(p->nsrv ? p->nsrv : 1, sizeof *kept);
    kd_ring ring = { NULL, 0 };
    int r = -ENOMEM;
    *why = "out of memory";
    if (ka == NULL || srv == NULL || fresh == NULL || kept == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (kt_addr_parse(addrs[i], &ka[i]) < 0) {
            *why = "a backend is not an address (ADDR:PORT or unix:PATH)";
            r = -EINVAL;
            goto out;
        }
    }
    if (kd_ring_build(&ring, addrs, n, prm->points) < 0)
        goto out;

    /* Phase 1, undoable: keep the servers listed again (same address, same
     * number of connections), make the others. */
    bool reshape = p->nsrv > 0 && prm->connections != p->prm.connections;
    kd_pool_params old = p->prm;
    p->prm = *prm; /* new servers are built with the new shape */
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < p->nsrv && !reshape; j++) {
            if (!kept[j] && strcmp(p->srv[j]->name, addrs[i]) == 0) {
                srv[i] = p->srv[j];
                kept[j] = true;
                break;
            }
        }
        if (srv[i] == NULL) {
            if ((srv[i] = backend_new(p, addrs[i], &ka[i])) == NULL) {
                for (size_t k = 0; k < i; k++)
                    if (fresh[k])
                        backend_free(srv[k], NULL);
                p->prm = old;
                kd_ring_free(&ring);
                goto out;
            }
            fresh[i] = true;
        }
    }

    /* Phase 2: commit. */
    for (size_t j = 0; j < p->nsrv; j++)
        if (!kept[j])
            retire(p, p->srv[j]);
    kt_free(p->srv);
    kd_ring_free(&p->ring);
    p->srv = srv;
    srv = NULL;
    p->nsrv = n;
    p->ring = ring;
    for (size_t i = 0; i < n; i++)
        if (fresh[i])
            backend_start(p->srv[i]);
    r = 0;
out:
    kt_free(ka);
    kt_free(srv);
    kt_free(fresh);
    kt_free(kept);
    return r;
}

/* ---- INFO ------------------------------------------------------------------------------- */

static const char *backend_state(const kd_backend *b, uint64_t now)
{
    if (b->retiring)
        return "retiring";
    if (!backend_live(b, now))
        return "ejected";
    if (b->up)
        return "up";
    if (b->connecting)
        return "connecting";
    return "down";
}

static void append(kt_buf *out, const char *fmt, ...) KT_PRINTF(2, 3);
static void append(kt_buf *out, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        (void)kt_buf_append(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

void kd_pool_info(const kd_pool *p, kt_buf *out)
{
    uint64_t now = kt_loop_now(p->loop);
    append(out, "backends:%zu\r\n", p->nsrv);
    size_t k = 0;
    for (int pass = 0; pass < 2; pass++) {
        const kd_backend *b = NULL;
        size_t i = 0;
        for (;;) {
            if (pass == 0) {
                if (i >= p->nsrv)
                    break;
                b = p->srv[i++];
            } else {
                b = b ? b->next_retired : p->retired;
                if (b == NULL)
                    break;
            }
            const kt_hist *h = &b->hist;
            append(out,
                   "backend%zu:addr=%s,state=%s,connections=%u/%u,outstanding=%llu,queued=%u,"
                   "fetches=%llu,replies=%llu,nils=%llu,errors=%llu,failed=%llu,cancelled=%llu,"
                   "conn_failures=%llu,stalls=%llu,ejections=%llu,connects=%llu,"
                   "latency_p50_us=%.1f,latency_p99_us=%.1f,latency_p999_us=%.1f,"
                   "latency_max_us=%.1f,last_error=%s\r\n",
                   k++, b->name, backend_state(b, now), (unsigned)b->up, (unsigned)b->nconns,
                   (unsigned long long)b->outstanding, (unsigned)b->qlen,
                   (unsigned long long)b->st.fetches, (unsigned long long)b->st.replies,
                   (unsigned long long)b->st.nils, (unsigned long long)b->st.errors,
                   (unsigned long long)b->st.failed, (unsigned long long)b->st.cancelled,
                   (unsigned long long)b->st.conn_failures, (unsigned long long)b->st.stalls,
                   (unsigned long long)b->st.ejections, (unsigned long long)b->st.connects,
                   kt_hist_percentile(h, 50) / 1e3, kt_hist_percentile(h, 99) / 1e3,
                   kt_hist_percentile(h, 99.9) / 1e3, kt_hist_max(h) / 1e3,
                   b->last_error[0] ? b->last_error : "none");
        }
    }
}

void kd_pool_totals_get(const kd_pool *p, kd_pool_totals *t)
{
    memset(t, 0, sizeof *t);
    t->failed = p->retired_failed;
    for (int pass = 0; pass < 2; pass++) {
        const kd_backend *b = NULL;
        size_t i = 0;
        for (;;) {
            if (pass == 0) {
                if (i >= p->nsrv)
                    break;
                b = p->srv[i++];
            } else {
                b = b ? b->next_retired : p->retired;
                if (b == NULL)
                    break;
            }
            t->fetches += b->st.fetches;
            t->replies += b->st.replies;
            t->nils += b->st.nils;
            t->errors += b->st.errors;
            t->failed += b->st.failed;
            t->cancelled += b->st.cancelled;
            t->conn_failures += b->st.conn_failures;
            t->ejections += b->st.ejections;
            t->queued += b->qlen;
            t->outstanding += b->outstanding;
        }
    }
}

void kd_pool_reset_stats(kd_pool *p)
{
    p->retired_failed = 0;
    for (size_t i = 0; i < p->nsrv; i++) {
        memset(&p->srv[i]->st, 0, sizeof p->srv[i]->st);
        kt_hist_reset(&p->srv[i]->hist);
    }
}

void kd_pool_free(kd_pool *p)
{
    if (p == NULL)
        return;
    const char *msg = "ERR server shutting down";
    for (size_t i = 0; i < p->nsrv; i++)
        backend_free(p->srv[i], msg);
    while (p->retired) {
        kd_backend *b = p->retired;
        p->retired = b->next_retired;
        backend_free(b, msg);
    }
    kt_timer_stop(&p->reaper);
    kt_free(p->srv);
    kd_ring_free(&p->ring);
    while (p->free_q) {
        kd_qitem *q = p->free_q;
        p->free_q = q->next;
        kt_free(q);
    }
    kt_free(p);
}
