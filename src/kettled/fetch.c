/*
 * fetch.c - flights: what kd_pool_fetch starts, shares and settles.
 *
 *   kd_pool_fetch(key)
 *        │ ring: hash(key) -> group (skipping groups with no live replica)
 *        ├─ singleflight: a flight of key in the group? join it (a waiter)
 *        ▼
 *   new flight ── attempt on a replica (power of two choices on load)
 *        │           queued on the replica; the pool sends the queue at the
 *        │           end of the iteration, as GET or MGET (conn.c)
 *        ├─ hedge timer: still unanswered after the hedge delay and within
 *        │               budget? a second attempt on another replica
 *        ├─ an answer (value, nil, error reply) settles every waiter; the
 *        │  other attempt is abandoned (its reply is read and dropped)
 *        └─ a connection error: retried once on another replica, unless
 *           the other attempt is still out; otherwise every waiter fails
 *
 * A waiter that cancels is unhooked; the flight goes on while one waiter
 * is left and is abandoned with the last: a queued attempt is dropped, a
 * sent one's reply is read and thrown away. Each waiter keeps its own
 * deadline (the caller's kt_timeout around its own future).
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "pool-int.h"

#define FREE_MAX 4096
/* With too few samples for the hedge percentile, flights are looked at
 * (and left unhedged) this long after they start. */
#define HEDGE_RECHECK KT_MSEC(10)

static void hedge_timer_cb(kt_timer *t, void *arg);

/* ---- free lists ------------------------------------------------------------------- */

static void *free_get(kd_freelist *l, size_t size)
{
    void *o = l->head;
    if (o == NULL)
        return kt_malloc(size);
    l->head = *(void **)o;
    l->n--;
    return o;
}

static void free_put(kd_freelist *l, void *o)
{
    if (l->n >= FREE_MAX) {
        kt_free(o);
        return;
    }
    *(void **)o = l->head;
    l->head = o;
    l->n++;
}

static void free_drain(kd_freelist *l)
{
    while (l->head) {
        void *o = l->head;
        l->head = *(void **)o;
        kt_free(o);
    }
    l->n = 0;
}

static kd_flight *flight_get(kd_pool *p)
{
    kd_flight *fl = free_get(&p->free_fl, sizeof *fl);
    if (fl)
        memset(fl, 0, offsetof(kd_flight, inl));
    return fl;
}

static void flight_put(kd_pool *p, kd_flight *fl)
{
    if (fl->key != fl->inl)
        kt_free(fl->key);
    free_put(&p->free_fl, fl);
}

static void waiter_put(kd_pool *p, kd_waiter *w)
{
    if (w == &w->fl->w0)
        w->f = NULL;
    else
        free_put(&p->free_w, w);
}

void kd_att_free(kd_att *a)
{
    kd_replica *r = a->r;
    r->held -= a->cost;
    r->load--;
    free_put(&r->pool->free_att, a);
}

void kd_fetch_free_lists(kd_pool *p)
{
    free_drain(&p->free_fl);
    free_drain(&p->free_w);
    free_drain(&p->free_att);
}

/* ---- the singleflight table --------------------------------------------------------------- */

static kd_flight *table_find(const kd_group *g, uint64_t h, const char *key, size_t len)
{
    for (kd_flight *fl = g->tab[h & g->tab_mask]; fl; fl = fl->hnext)
        if (fl->hash == h && fl->len == len && memcmp(fl->key, key, len) == 0)
            return fl;
    return NULL;
}

/* Rehash into `size` buckets (a power of two). 0 or -ENOMEM (unchanged). */
static int table_resize(kd_group *g, uint32_t size)
{
    kd_flight **t = kt_calloc(size, sizeof *t);
    if (t == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; g->tab && i <= g->tab_mask; i++) {
        for (kd_flight *fl = g->tab[i], *next; fl; fl = next) {
            next = fl->hnext;
            fl->hnext = t[fl->hash & (size - 1)];
            t[fl->hash & (size - 1)] = fl;
        }
    }
    kt_free(g->tab);
    g->tab = t;
    g->tab_mask = size - 1;
    return 0;
}

static void table_insert(kd_group *g, kd_flight *fl)
{
    /* load factor 1; a failed resize keeps the smaller table (or none:
     * the flight is then simply not shared) */
    if ((g->tab == NULL || g->ntab >= g->tab_mask + 1) &&
        table_resize(g, g->tab ? (g->tab_mask + 1) * 2 : 64) < 0 && g->tab == NULL)
        return;
    uint32_t b = (uint32_t)(fl->hash & g->tab_mask);
    fl->hnext = g->tab[b];
    g->tab[b] = fl;
    fl->in_table = true;
    g->ntab++;
}

static void table_remove(kd_group *g, kd_flight *fl)
{
    kd_flight **pp = &g->tab[fl->hash & g->tab_mask];
    while (*pp != fl)
        pp = &(*pp)->hnext;
    *pp = fl->hnext;
    fl->in_table = false;
    g->ntab--;
    /* give memory back after a burst */
    if (g->tab_mask + 1 > 64 && g->ntab < (g->tab_mask + 1) / 8)
        (void)table_resize(g, (g->tab_mask + 1) / 2);
}

/* ---- attempts ------------------------------------------------------------------------------ */

void kd_queue_unlink(kd_replica *r, kd_att *a)
{
    if (a->prev)
        a->prev->next = a->next;
    else
        r->qhead = a->next;
    if (a->next)
        a->next->prev = a->prev;
    else
        r->qtail = a->prev;
    r->qlen--;
}

/* A new attempt of fl on r, queued for the end of the iteration. */
static kd_att *att_start(kd_flight *fl, kd_replica *r, bool hedge)
{
    kd_att *a = free_get(&r->pool->free_att, sizeof *a);
    if (a == NULL)
        return NULL;
    memset(a, 0, sizeof *a);
    a->fl = fl;
    a->r = r;
    a->state = KD_ATT_QUEUED;
    a->hedge = hedge;
    a->cost = fl->len + KD_FETCH_COST;
    r->held += a->cost;
    r->load++;
    r->st.fetches++;
    a->prev = r->qtail;
    if (r->qtail)
        r->qtail->next = a;
    else
        r->qhead = a;
    r->qtail = a;
    r->qlen++;
    kd_pool_mark(r);
    return a;
}

/* Nobody wants a any more: a queued one goes, a sent one's reply will be
 * dropped once no attempt of its command is wanted. */
static void att_abandon(kd_att *a)
{
    a->fl = NULL;
    if (a->state == KD_ATT_QUEUED) {
        kd_queue_unlink(a->r, a);
        kd_att_free(a);
        return;
    }
    kd_cmd *cmd = kt_pconn_slot(&a->conn->pc, a->seq);
    if (cmd && --cmd->live == 0)
        kt_pconn_drop(&a->conn->pc, a->seq);
}

/* Take a off its flight; true if the flight still has another attempt out. */
static bool att_detach(kd_att *a)
{
    kd_flight *fl = a->fl;
    int i = fl->att[0] == a ? 0 : 1;
    fl->att[i] = NULL;
    a->fl = NULL;
    return fl->att[1 - i] != NULL;
}

/* ---- flights ---------------------------------------------------------------------------------- */

static void flight_free(kd_flight *fl)
{
    kd_group *g = fl->g;
    for (int i = 0; i < 2; i++) {
        kd_att *a = fl->att[i];
        if (a) {
            fl->att[i] = NULL;
            att_abandon(a);
        }
    }
    if (fl->in_table)
        table_remove(g, fl);
    if (g->hcursor == fl)
        g->hcursor = fl->next;
    if (fl->prev)
        fl->prev->next = fl->next;
    else
        g->fhead = fl->next;
    if (fl->next)
        fl->next->prev = fl->prev;
    else
        g->ftail = fl->prev;
    g->nflights--;
    flight_put(g->pool, fl);
}

static void waiter_unlink(kd_flight *fl, kd_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        fl->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    fl->nwaiters--;
}

static void waiter_cancel_cb(kt_future *f, void *arg)
{
    kd_waiter *w = arg;
    kd_flight *fl = w->fl;
    kd_group *g = fl->g;
    waiter_unlink(fl, w);
    waiter_put(g->pool, w);
    kt_future_unref(f);
    g->st.cancelled++;
    if (fl->nwaiters == 0)
        flight_free(fl);
}

static int waiter_add(kd_flight *fl, kt_future *f)
{
    kd_waiter *w = fl->w0.f == NULL ? &fl->w0 : free_get(&fl->g->pool->free_w, sizeof *w);
    if (w == NULL)
        return -ENOMEM;
    w->f = f;
    w->fl = fl;
    w->prev = NULL;
    w->next = fl->waiters;
    if (fl->waiters)
        fl->waiters->prev = w;
    fl->waiters = w;
    fl->nwaiters++;
    kt_future_ref(f);
    kt_future_on_cancel(f, waiter_cancel_cb, w);
    return 0;
}

static kd_flight *flight_new(kd_group *g, const char *key, size_t len, uint64_t h)
{
    kd_pool *p = g->pool;
    kd_flight *fl = flight_get(p);
    if (fl == NULL)
        return NULL;
    fl->key = fl->inl;
    if (len > sizeof fl->inl && (fl->key = kt_malloc(len)) == NULL) {
        fl->key = fl->inl;
        flight_put(p, fl);
        return NULL;
    }
    memcpy(fl->key, key, len);
    fl->len = (uint32_t)len;
    fl->g = g;
    fl->hash = h;
    fl->started = kt_loop_now(p->loop);
    fl->prev = g->ftail;
    if (g->ftail)
        g->ftail->next = fl;
    else
        g->fhead = fl;
    g->ftail = fl;
    g->nflights++;
    return fl;
}

/* Settle one waiter's future with reply node n from replica r. */
static void deliver(kt_future *f, const kt_resp_node *n, kd_replica *r)
{
    int64_t v;
    switch (n->type) {
    case KT_RESP_BULK:
    case KT_RESP_STRING:
        if (n->len && n->len <= 20 && kt_parse_i64(n->p, n->len, &v) == 0 &&
            (n->p[0] != '0' || n->len == 1) && (n->p[0] != '-' || (n->len > 1 && n->p[1] != '0'))) {
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
        (void)kt_future_fail(f, -ENOENT, NULL);
        break;
    case KT_RESP_ERROR_REPLY:
        (void)kt_future_fail(f, -EREMOTEIO, "%.*s (backend %s)", (int)(n->len > 512 ? 512 : n->len),
                             n->p, r->name);
        break;
    default:
        (void)kt_future_fail(f, -EPROTO, "ERR backend %s: unexpected reply type '%c' to GET",
                             r->name, n->type);
        break;
    }
}

/* Settle every waiter of fl, with node n from r, or with err and msg
 * (n NULL), then free fl (abandoning any other attempt). */
static void flight_settle(kd_flight *fl, const kt_resp_node *n, kd_replica *r, int err,
                          const char *msg)
{
    kd_pool *p = fl->g->pool;
    while (fl->waiters) {
        kd_waiter *w = fl->waiters;
        kt_future *f = w->f;
        waiter_unlink(fl, w);
        waiter_put(p, w);
        /* a future cancelled but whose hook has not run yet (a cancel
         * cascade in progress) must not reach w again */
        kt_future_on_cancel(f, NULL, NULL);
        if (kt_future_state_of(f) == KT_FUTURE_PENDING) {
            if (n)
                deliver(f, n, r);
            else
                (void)kt_future_fail(f, err, "%s", msg);
        }
        kt_future_unref(f);
    }
    flight_free(fl);
}

void kd_att_answer(kd_att *a, const kt_resp_node *n)
{
    kd_flight *fl = a->fl;
    kd_replica *r = a->r;
    kd_group *g = fl->g;
    if (n->type == KT_RESP_NIL)
        r->st.nils++;
    else if (n->type == KT_RESP_ERROR_REPLY)
        r->st.errors++;
    bool other = att_detach(a);
    /* An error from one replica while the other may still answer well:
     * wait for the other. */
    if (other && n->type == KT_RESP_ERROR_REPLY)
        return;
    if (a->hedge) {
        g->st.hedges_won++;
        r->st.hedges_won++;
    }
    flight_settle(fl, n, r, 0, NULL);
}

/* May r take a fetch of len bytes more (retries and hedges: quietly)? */
static bool fits(const kd_replica *r, size_t len)
{
    const kd_pool_params *prm = &r->pool->prm;
    return r->qlen < prm->queue_limit && r->held + len + KD_FETCH_COST <= prm->queue_bytes;
}

void kd_att_failed(kd_att *a, int err, const char *msg, bool retryable)
{
    kd_flight *fl = a->fl;
    kd_group *g = fl->g;
    a->r->st.failed++;
    if (att_detach(a))
        return; /* the other attempt may still answer */
    if (retryable && !fl->retried) {
        kd_replica *r2 = kd_group_pick(g, a->r);
        if (r2 && fits(r2, fl->len)) {
            kd_att *b = att_start(fl, r2, false);
            if (b) {
                fl->retried = true;
                fl->att[0] = b;
                g->st.retries++;
                r2->st.retries++;
                return;
            }
        }
    }
    g->st.failed += fl->nwaiters;
    flight_settle(fl, NULL, NULL, err, msg);
}

void kd_queue_fail(kd_replica *r, int err, const char *msg, bool retryable)
{
    /* Take the whole queue first: a retry may queue on another replica,
     * never on this one (it is not usable, or the pick excludes it). */
    kd_att *a = r->qhead;
    r->qhead = r->qtail = NULL;
    r->qlen = 0;
    while (a) {
        kd_att *next = a->next;
        if (a->fl)
            kd_att_failed(a, err, msg, retryable);
        kd_att_free(a);
        a = next;
    }
}

void kd_group_fail_all(kd_group *g, int err, const char *msg)
{
    while (g->fhead) {
        g->st.failed += g->fhead->nwaiters;
        flight_settle(g->fhead, NULL, NULL, err, msg);
    }
}

/* ---- hedged reads ------------------------------------------------------------------------------- */

static bool hedging(const kd_group *g)
{
    const kd_pool_params *prm = &g->pool->prm;
    return g->nreps >= 2 && !g->retiring && (prm->hedge_pct > 0 || prm->hedge_after > 0);
}

static void hedge_watch(kd_group *g, kd_flight *fl)
{
    if (g->hcursor == NULL)
        g->hcursor = fl;
    if (!kt_timer_active(&g->hedge_timer)) {
        uint64_t d = kd_health_hedge_ns(g);
        (void)kt_timer_start(&g->hedge_timer, d ? d : HEDGE_RECHECK, 0);
    }
}

/* Look at the flights in start order: each one still out after the hedge
 * delay gets a second attempt on another replica, within the budget. */
static void hedge_timer_cb(kt_timer *t, void *arg)
{
    kd_group *g = arg;
    kd_pool *p = g->pool;
    uint64_t now = kt_loop_now(p->loop);
    (void)t;
    if (!hedging(g)) {
        g->hcursor = NULL;
        return;
    }
    uint64_t d = kd_health_hedge_ns(g);
    kd_flight *fl;
    while ((fl = g->hcursor) != NULL) {
        uint64_t due = fl->started + (d ? d : HEDGE_RECHECK);
        if (now < due) {
            (void)kt_timer_start(&g->hedge_timer, due - now, 0);
            return;
        }
        g->hcursor = fl->next;
        if (d == 0 || fl->att[0] == NULL || fl->att[1] != NULL)
            continue;
        if (!kd_health_hedge_budget(g)) {
            g->st.budget_exhausted++;
            continue;
        }
        kd_replica *r2 = kd_group_pick(g, fl->att[0]->r);
        if (r2 == NULL || !fits(r2, fl->len))
            continue;
        if ((fl->att[1] = att_start(fl, r2, true)) == NULL)
            continue;
        g->st.hedges++;
        r2->st.hedges++;
        kd_slice *s = kd_window_slice(&g->win, now);
        s->hedges++;
        g->win.tot.hedges++;
    }
}

void kd_group_init_fetch(kd_group *g)
{
    kt_timer_init(g->pool->loop, &g->hedge_timer, hedge_timer_cb, g);
}

void kd_group_free_fetch(kd_group *g)
{
    kt_timer_stop(&g->hedge_timer);
    kt_free(g->tab);
    g->tab = NULL;
    g->tab_mask = 0;
    g->ntab = 0;
}

/* ---- kd_pool_fetch ----------------------------------------------------------------------------- */

static bool ring_live_cb(uint32_t i, void *arg)
{
    kd_pool *p = arg;
    return kd_group_live(p->groups[i]);
}

/* The group has no replica taking fetches: say why, naming them. */
static void fail_down(kd_group *g, kt_future *f)
{
    kd_replica *r = g->reps[0];
    uint64_t now = kt_loop_now(g->pool->loop);
    for (uint32_t i = 0; i < g->nreps; i++)
        if (g->reps[i]->state == KD_REP_LIVE) {
            r = g->reps[i];
            break;
        }
    g->st.failed++;
    const char *why = r->last_error[0] ? r->last_error : "not connected";
    if (r->state == KD_REP_EJECTED && g->nreps == 1)
        (void)kt_future_fail(f, -EHOSTDOWN, "ERR backend %s is ejected for %llu ms more: %s",
                             r->name,
                             (unsigned long long)((r->eject_until > now ? r->eject_until - now : 0) /
                                                  KT_MSEC(1)), why);
    else if (r->state == KD_REP_PROBING && g->nreps == 1)
        (void)kt_future_fail(f, -EHOSTDOWN, "ERR backend %s is ejected, being probed: %s", r->name,
                             why);
    else if (g->nreps == 1)
        (void)kt_future_fail(f, -EHOSTDOWN, "ERR backend %s is down: %s", r->name, why);
    else
        (void)kt_future_fail(f, -EHOSTDOWN, "ERR backend %s: no replica is up (%s: %s)", g->name,
                             r->name, why);
}

/* Keys r's connections could take in this iteration beyond its queue. */
static uint64_t room_keys(const kd_replica *r)
{
    const kd_pool_params *prm = &r->pool->prm;
    uint64_t room = 0;
    for (uint32_t i = 0; i < r->nconns; i++) {
        const kd_conn *c = &r->conns[i];
        if (kd_conn_has_room(c))
            room += (uint64_t)(prm->pipeline - kt_pconn_outstanding(&c->pc)) * prm->batch;
    }
    return room;
}

/* The bounds on what waits for r: false (f failed) past one of them. */
static bool admit(kd_replica *r, size_t len, kt_future *f)
{
    const kd_pool_params *prm = &r->pool->prm;
    if (r->qlen >= prm->queue_limit && r->qlen >= prm->queue_limit + room_keys(r)) {
        r->g->st.failed++;
        (void)kt_future_fail(f, -EAGAIN,
                             "ERR backend %s is overloaded: %u fetches already wait "
                             "(backend-queue-limit)", r->name, (unsigned)r->qlen);
        return false;
    }
    if (r->held + len + KD_FETCH_COST > prm->queue_bytes) {
        r->g->st.failed++;
        (void)kt_future_fail(f, -EAGAIN,
                             "ERR backend %s is overloaded: %llu bytes of fetches held "
                             "(backend-queue-bytes)", r->name, (unsigned long long)r->held);
        return false;
    }
    return true;
}

kt_future *kd_pool_fetch(kd_pool *p, const char *key, size_t len)
{
    kt_future *f = kt_future_new(p->loop);
    if (f == NULL)
        return NULL;
    if (p->ngroups == 0) {
        (void)kt_future_fail(f, -ESHUTDOWN, "ERR no backend configured");
        return f;
    }
    uint64_t h = kd_hash(key, len);
    kd_group *g = p->ngroups == 1 ? p->groups[0]
                                  : p->groups[kd_ring_lookup_hash(&p->ring, h, ring_live_cb, p)];
    g->st.fetches++;
    if (p->prm.singleflight && g->tab) {
        kd_flight *fl = table_find(g, h, key, len);
        if (fl) {
            if (waiter_add(fl, f) < 0) {
                g->st.failed++;
                (void)kt_future_fail(f, -ENOMEM, "ERR out of memory");
            } else {
                g->st.joins++;
            }
            return f;
        }
    }
    kd_replica *r = kd_group_pick(g, NULL);
    if (r == NULL) {
        fail_down(g, f);
        return f;
    }
    if (!admit(r, len, f))
        return f;
    kd_flight *fl = flight_new(g, key, len, h);
    if (fl == NULL || (fl->att[0] = att_start(fl, r, false)) == NULL) {
        if (fl)
            flight_free(fl);
        g->st.failed++;
        (void)kt_future_fail(f, -ENOMEM, "ERR out of memory");
        return f;
    }
    (void)waiter_add(fl, f); /* w0: cannot fail */
    if (p->prm.singleflight)
        table_insert(g, fl);
    kd_slice *s = kd_window_slice(&g->win, fl->started);
    s->fetches++;
    g->win.tot.fetches++;
    if (hedging(g))
        hedge_watch(g, fl);
    return f;
}
