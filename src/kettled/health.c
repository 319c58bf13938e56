/*
 * health.c - one notion of a replica's health, shared by the stall
 * watchdog, hedged reads and ejection.
 *
 * Each replica keeps a sliding window (health-window, cut into slices) of
 * its replies' latency, per key, in a small log-linear histogram, and of
 * its commands answered and failed. From it:
 *
 *   stall threshold  a connection whose oldest reply waits longer than
 *                    stall-factor x the recent p99 of its commands (at
 *                    least stall-floor, at most backend-timeout) is failed
 *                    early (per command, not per key: a batch is one wait);
 *   hedge delay      the group's recent pNN (hedge-after), and the hedge
 *                    budget: hedges stay under hedge-max-extra of the
 *                    group's fetches over the window;
 *   ejection         eject-after failures in a row, or a failure share of
 *                    eject-failure-rate over at least eject-min-requests in
 *                    the window, takes the replica out for eject-time
 *                    (doubling while it keeps failing, up to eject-time-max);
 *                    so does a stall while the server answers nothing on
 *                    any of its connections, another one waiting too (it
 *                    has stopped, or the way to it has), or while each of
 *                    its other connections is stuck too (its oldest reply
 *                    has waited half the threshold, or it stalled less
 *                    than a threshold ago): its other connections would
 *                    only stall in turn;
 *                    failures are failures to answer (refused, reset,
 *                    closed, stalled, garbage): an error reply is an answer;
 *   return           after that it is probed (a burst of GET 0 on its own
 *                    connection, no live traffic) and comes back when every
 *                    probe is answered; a lost probe or a failed connection
 *                    ejects it again, for longer.
 *
 * The last replica taking fetches is never ejected. Every decision is
 * logged once and counted in INFO.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "pool-int.h"

/* An ejected replica comes back when a burst of this many probes, sent at
 * once on one connection, is answered in full: a server failing 5% of its
 * requests passes one burst in twenty (with 30 it passed one in five, and
 * came back to stall its clients again), a healthy one every time. */
#define PROBE_BURST 60

static void probe_failed(kd_replica *r, const char *what);

/* ---- the histogram ---------------------------------------------------------------- */

static uint32_t lh_index(uint64_t v)
{
    if (v < KD_LH_SUB)
        return (uint32_t)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 4 */
    uint32_t sub = (uint32_t)(v >> (e - 4)) & (KD_LH_SUB - 1);
    uint32_t i = KD_LH_SUB + (e - 4) * KD_LH_SUB + sub;
    return i < KD_LH_N ? i : KD_LH_N - 1;
}

/* The smallest value of bucket i (exact below 32). */
static uint64_t lh_low(uint32_t i)
{
    if (i < KD_LH_SUB)
        return i;
    uint32_t e = (i - KD_LH_SUB) / KD_LH_SUB + 4, sub = (i - KD_LH_SUB) % KD_LH_SUB;
    return (uint64_t)(KD_LH_SUB + sub) << (e - 4);
}

/* The middle of bucket i. */
static uint64_t lh_mid(uint32_t i)
{
    return i < 2 * KD_LH_SUB ? lh_low(i) : lh_low(i) + (lh_low(i + 1) - lh_low(i)) / 2;
}

void kd_lh_add(kd_lh *h, uint64_t v, uint32_t n)
{
    h->c[lh_index(v)] += n;
    h->n += n;
}

uint64_t kd_lh_percentile(const kd_lh *h, double pct)
{
    if (h->n == 0)
        return 0;
    double want = pct / 100.0 * (double)h->n;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < KD_LH_N; i++) {
        seen += h->c[i];
        if (seen >= rank)
            return lh_low(i);
    }
    return lh_low(KD_LH_N - 1);
}

double kd_lh_mean(const kd_lh *h)
{
    if (h->n == 0)
        return 0;
    double s = 0;
    for (uint32_t i = 0; i < KD_LH_N; i++)
        if (h->c[i])
            s += (double)h->c[i] * (double)lh_mid(i);
    return s / (double)h->n;
}

/* ---- the window ----------------------------------------------------------------------- */

int kd_window_init(kd_window *w, uint64_t window_ns)
{
    memset(w, 0, sizeof *w);
    w->slice_ns = window_ns / KD_WIN_SLICES;
    if (w->slice_ns == 0)
        w->slice_ns = 1;
    return 0;
}

static void slice_clear(kd_window *w, uint32_t k)
{
    kd_slice *s = &w->s[k];
    w->tot.ok -= s->ok;
    w->tot.fail -= s->fail;
    w->tot.fetches -= s->fetches;
    w->tot.hedges -= s->hedges;
    memset(s, 0, sizeof *s);
    kd_lh *h = &w->lat[k];
    if (h->n) {
        for (uint32_t i = 0; i < KD_LH_N; i++)
            w->sum.c[i] -= h->c[i];
        w->sum.n -= h->n;
        memset(h, 0, sizeof *h);
    }
}

void kd_window_advance(kd_window *w, uint64_t now)
{
    uint64_t idx = now / w->slice_ns;
    if (idx <= w->cur)
        return;
    uint64_t steps = idx - w->cur;
    if (steps > KD_WIN_SLICES)
        steps = KD_WIN_SLICES;
    for (uint64_t k = 1; k <= steps; k++)
        slice_clear(w, (uint32_t)((w->cur + k) % KD_WIN_SLICES));
    w->cur = idx;
}

kd_slice *kd_window_slice(kd_window *w, uint64_t now)
{
    kd_window_advance(w, now);
    return &w->s[w->cur % KD_WIN_SLICES];
}

void kd_window_latency(kd_window *w, uint64_t now, uint64_t ns, uint32_t n)
{
    kd_window_advance(w, now);
    uint64_t us = ns / 1000u;
    kd_lh_add(&w->lat[w->cur % KD_WIN_SLICES], us, n);
    kd_lh_add(&w->sum, us, n);
}

uint64_t kd_window_percentile(kd_window *w, uint64_t now, double pct)
{
    kd_window_advance(w, now);
    if (w->sum.n < KD_WIN_MIN_SAMPLES)
        return 0;
    return kd_lh_percentile(&w->sum, pct) * 1000u;
}

/* ---- replicas: picking ------------------------------------------------------------------ */

bool kd_replica_usable(const kd_replica *r)
{
    return r->state == KD_REP_LIVE && !r->retiring && (r->up || r->connecting);
}

bool kd_group_live(const kd_group *g)
{
    for (uint32_t i = 0; i < g->nreps; i++)
        if (g->reps[i]->state == KD_REP_LIVE)
            return true;
    return false;
}

kd_replica *kd_group_pick(kd_group *g, const kd_replica *not)
{
    kd_replica *cand[64];
    uint32_t n = 0;
    for (uint32_t i = 0; i < g->nreps && n < 64; i++)
        if (g->reps[i] != not && kd_replica_usable(g->reps[i]))
            cand[n++] = g->reps[i];
    if (n <= 1)
        return n ? cand[0] : NULL;
    if (n == 2)
        return cand[1]->load < cand[0]->load ? cand[1] : cand[0];
    uint32_t a = (uint32_t)kd_pool_rand(g->pool, n), b = (uint32_t)kd_pool_rand(g->pool, n - 1);
    if (b >= a)
        b++;
    return cand[b]->load < cand[a]->load ? cand[b] : cand[a];
}

bool kd_health_others_live(const kd_pool *p, const kd_replica *r)
{
    for (size_t i = 0; i < p->ngroups; i++) {
        const kd_group *g = p->groups[i];
        for (uint32_t j = 0; j < g->nreps; j++)
            if (g->reps[j] != r && g->reps[j]->state == KD_REP_LIVE)
                return true;
    }
    return false;
}

/* ---- thresholds ---------------------------------------------------------------------------- */

uint64_t kd_health_stall_ns(kd_replica *r)
{
    kd_pool *p = r->pool;
    const kd_pool_params *prm = &p->prm;
    uint64_t now = kt_loop_now(p->loop);
    if (prm->backend_timeout == 0)
        return 0;
    if (r->stall_ns == 0)
        r->stall_ns = prm->backend_timeout;
    kd_window_advance(&r->win, now);
    /* Computed once per slice, and only from a live replica's own
     * traffic: while it is out, the last figure holds (probes use it). */
    if (r->state != KD_REP_LIVE || r->win.cur == r->stall_slice)
        return r->stall_ns;
    uint64_t p99 = kd_window_percentile(&r->win, now, 99);
    if (p99 == 0)
        return r->stall_ns; /* too few samples: asked again at the next reply */
    r->stall_slice = r->win.cur;
    r->p99_ns = p99;
    double t = (double)p99 * prm->stall_factor;
    uint64_t ns = t > (double)prm->backend_timeout ? prm->backend_timeout : (uint64_t)t;
    if (ns < prm->stall_floor)
        ns = prm->stall_floor;
    if (ns > prm->backend_timeout)
        ns = prm->backend_timeout;
    if (ns != r->stall_ns) {
        r->stall_ns = ns;
        for (uint32_t i = 0; i < r->nconns; i++)
            kt_pconn_set_timeout(&r->conns[i].pc, ns);
    }
    return ns;
}

uint64_t kd_health_hedge_ns(kd_group *g)
{
    const kd_pool_params *prm = &g->pool->prm;
    if (prm->hedge_pct <= 0)
        return prm->hedge_after;
    uint64_t now = kt_loop_now(g->pool->loop);
    kd_window_advance(&g->win, now);
    if (g->win.cur != g->hedge_slice || g->hedge_ns == 0) {
        g->hedge_slice = g->win.cur;
        g->hedge_ns = kd_window_percentile(&g->win, now, prm->hedge_pct);
    }
    return g->hedge_ns;
}

bool kd_health_hedge_budget(kd_group *g)
{
    kd_window *w = &g->win;
    kd_window_advance(w, kt_loop_now(g->pool->loop));
    return (double)(w->tot.hedges + 1) <= g->pool->prm.hedge_max_extra * (double)w->tot.fetches;
}

/* ---- outcomes -------------------------------------------------------------------------------- */

void kd_health_reply(kd_replica *r, uint64_t ns, uint32_t n)
{
    kd_pool *p = r->pool;
    uint64_t now = kt_loop_now(p->loop);
    kd_slice *s = kd_window_slice(&r->win, now);
    s->ok++;
    r->win.tot.ok++;
    r->last_reply = now;
    kd_window_latency(&r->win, now, ns, 1); /* per command; the group's per key */
    if (n)
        kd_window_latency(&r->g->win, now, ns, n);
    kt_hist_record(&r->hist, ns);
    if (r->state != KD_REP_LIVE)
        return;
    r->fails = 0;
    if (r->warned) {
        kt_log_notice("backend %s: serving again", r->name);
        r->warned = false;
    }
    /* A healthy spell as long as the first ejection forgives the past:
     * the next ejection starts short again. */
    if (r->ejected_in_row && now >= r->eject_until + p->prm.eject_time)
        r->ejected_in_row = 0;
    (void)kd_health_stall_ns(r);
}

static void eject(kd_replica *r, int why, const char *cause)
{
    kd_pool *p = r->pool;
    uint64_t now = kt_loop_now(p->loop);
    uint64_t d = p->prm.eject_time;
    for (uint32_t i = 0; i < r->ejected_in_row && d < p->prm.eject_time_max; i++)
        d *= 2;
    if (d > p->prm.eject_time_max && p->prm.eject_time_max >= p->prm.eject_time)
        d = p->prm.eject_time_max;
    if (d == 0)
        d = 1;
    r->ejected_in_row++;
    r->state = KD_REP_EJECTED;
    r->probe_out = 0;
    r->probe_round++;
    r->eject_until = now + d;
    r->st.ejections++;
    if (why == 0)
        r->st.ej_consecutive++;
    else if (why == 1)
        r->st.ej_rate++;
    else
        r->st.ej_probe++;
    snprintf(r->eject_cause, sizeof r->eject_cause, "%s", cause);
    kt_log_warning("backend %s: ejected for %llu ms: %s (last error: %s)", r->name,
                   (unsigned long long)(d / KT_MSEC(1)), cause,
                   r->last_error[0] ? r->last_error : "none");
    (void)kt_timer_start(&r->eject_timer, d, 0);
    char msg[320];
    snprintf(msg, sizeof msg, "ERR backend %s is ejected: %s", r->name, cause);
    kd_queue_fail(r, -EHOSTDOWN, msg, true);
}

void kd_health_failure(kd_replica *r, uint32_t events, bool consecutive, const char *what)
{
    kd_pool *p = r->pool;
    const kd_pool_params *prm = &p->prm;
    uint64_t now = kt_loop_now(p->loop);
    uint32_t k = events ? events : 1;
    bool silent = r->silent, stuck = r->stuck;
    r->silent = r->stuck = false;
    kd_slice *s = kd_window_slice(&r->win, now);
    s->fail += k;
    r->win.tot.fail += k;
    snprintf(r->last_error, sizeof r->last_error, "%s", what);
    if (consecutive)
        r->fails++;
    if (r->state == KD_REP_PROBING && !r->retiring) {
        r->probe_round++; /* what is left of the burst no longer counts */
        r->probe_out = 0;
        probe_failed(r, what);
        return;
    }
    if (r->retiring || r->state != KD_REP_LIVE)
        return;
    char cause[96];
    int why = -1;
    uint32_t total = r->win.tot.ok + r->win.tot.fail;
    if (silent && prm->eject_after) {
        snprintf(cause, sizeof cause, "no reply on any connection for %llu ms",
                 (unsigned long long)((now - r->last_reply) / KT_MSEC(1)));
        why = 0;
    } else if (stuck && prm->eject_after) {
        snprintf(cause, sizeof cause, "every connection stalled (no reply within %llu ms)",
                 (unsigned long long)(r->stall_ns / KT_MSEC(1)));
        why = 0;
    } else if (prm->eject_after && r->fails >= prm->eject_after) {
        snprintf(cause, sizeof cause, "%u failures in a row", (unsigned)r->fails);
        why = 0;
    } else if (prm->eject_rate > 0 && total >= prm->eject_min_requests &&
               (double)r->win.tot.fail >= prm->eject_rate * (double)total) {
        snprintf(cause, sizeof cause, "%u of %u requests failed in the last %llu ms",
                 (unsigned)r->win.tot.fail, (unsigned)total,
                 (unsigned long long)(r->win.slice_ns * KD_WIN_SLICES / KT_MSEC(1)));
        why = 1;
    }
    if (why >= 0 && kd_health_others_live(p, r))
        eject(r, why, cause);
}

/* Is every connection of r but c stuck, at least one of them? A
 * connection is stuck when its oldest reply has waited half the stall
 * threshold, or when the watchdog failed it less than a threshold ago and it has served
 * nothing since; one that waits less is not (the server answers on it),
 * and an idle one tells nothing either way. */
static bool others_stuck(kd_replica *r, const kd_conn *c, uint64_t now)
{
    uint64_t threshold = c->pc.timeout;
    uint32_t stuck = 0;
    for (uint32_t i = 0; i < r->nconns; i++) {
        kd_conn *o = &r->conns[i];
        uint64_t sent = now;
        if (o == c)
            continue;
        if (kt_pconn_outstanding(&o->pc) > 0 && kt_pconn_oldest(&o->pc, &sent) != NULL) {
            if (now < sent || now - sent < threshold / 2)
                return false;
            stuck++;
        } else if (o->stalled_at && now - o->stalled_at < threshold) {
            stuck++;
        }
    }
    return stuck > 0;
}

void kd_health_overdue(kd_conn *c, uint64_t waited)
{
    kd_replica *r = c->r;
    uint64_t now = kt_loop_now(r->pool->loop);
    r->st.stalls++;
    /* Silent: nothing came back from the server, on any connection, for
     * as long as this reply has waited, while another connection waits
     * for it too. Stuck: the server may have answered a little since this
     * reply was sent, but every other connection is stuck too (a server
     * that stalls one request in twenty holds up each connection within a
     * few dozen): its next connections would only stall in turn. One
     * connection alone proves less (a reply stuck at the head of its
     * pipeline), and is left to the counts. */
    bool other = false;
    for (uint32_t i = 0; i < r->nconns && !other; i++)
        other = &r->conns[i] != c && kt_pconn_outstanding(&r->conns[i].pc) > 0;
    r->silent = other && now - r->last_reply >= waited;
    r->stuck = !r->silent && others_stuck(r, c, now);
    c->stalled_at = now;
    /* The text keeps the threshold, not the wait: the same stall logs
     * the same line. */
    kt_pconn_fail(&c->pc, -ETIMEDOUT, "no reply within %llu ms",
                  (unsigned long long)(c->pc.timeout / KT_MSEC(1)));
    r->silent = r->stuck = false; /* taken by kd_health_failure, or not for it */
}

/* ---- ejection's end: probing ----------------------------------------------------------------- */

/* Send a burst of probes on one connection that is up, or bring one up
 * (kd_health_conn_up sends them then). */
static void send_probe(kd_replica *r)
{
    for (uint32_t i = 0; i < r->nconns && r->probe_out == 0; i++) {
        kd_conn *c = &r->conns[i];
        if (kt_pconn_state_of(&c->pc) != KT_PCONN_UP)
            continue;
        for (uint32_t k = 0; k < PROBE_BURST && kd_conn_send_probe(c, r->probe_round) == 0; k++)
            r->probe_out++;
        r->st.probes += r->probe_out;
    }
    if (r->probe_out == 0)
        for (uint32_t i = 0; i < r->nconns; i++)
            kd_conn_kick(&r->conns[i]);
}

static void eject_timer_cb(kt_timer *t, void *arg)
{
    kd_replica *r = arg;
    (void)t;
    if (r->state != KD_REP_EJECTED || r->retiring)
        return;
    r->state = KD_REP_PROBING;
    r->probes_ok = 0;
    r->probe_out = 0;
    r->probe_round++;
    kt_log_info("backend %s: ejection over, probing", r->name);
    send_probe(r);
}

void kd_health_conn_up(kd_replica *r, kd_conn *c)
{
    (void)c;
    if (r->state == KD_REP_PROBING && r->probe_out == 0)
        send_probe(r);
}

static void probe_failed(kd_replica *r, const char *what)
{
    char cause[200];
    snprintf(cause, sizeof cause, "probe failed: %s", what);
    if (kd_health_others_live(r->pool, r)) {
        eject(r, 2, cause);
        return;
    }
    /* Nobody else takes fetches: back to live, where its fetches fail
     * fast while it is down. */
    r->state = KD_REP_LIVE;
    kt_log_notice("backend %s: back without probes (no other server is up): %s", r->name, what);
}

void kd_health_probe_done(kd_replica *r, uint32_t round, bool ok)
{
    if (round != r->probe_round)
        return; /* from an earlier burst */
    if (r->probe_out)
        r->probe_out--;
    if (r->state != KD_REP_PROBING || r->retiring)
        return;
    if (!ok) {
        probe_failed(r, r->last_error);
        return;
    }
    if (++r->probes_ok < PROBE_BURST)
        return;
    r->state = KD_REP_LIVE;
    r->fails = 0;
    r->warned = false;
    kt_log_notice("backend %s: back, %u probes answered", r->name, (unsigned)r->probes_ok);
    if (r->qlen)
        kd_pool_mark(r);
}

void kd_replica_init_health(kd_replica *r)
{
    kd_window_init(&r->win, r->pool->prm.window);
    kt_timer_init(r->pool->loop, &r->eject_timer, eject_timer_cb, r);
    kt_hist_init(&r->hist);
}

void kd_replica_stop_health(kd_replica *r)
{
    kt_timer_stop(&r->eject_timer);
}
