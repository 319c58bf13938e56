/*
 * poolinfo.c - what the pool shows in INFO's "# Backend" section: a line
 * per group (fetches, singleflight joins, hedges, retries, budget) and a
 * line per replica (state, connections, batches and keys per batch,
 * latency, failures, ejections and their cause), and the totals INFO's
 * "# Stats" section adds up.
 */
#include "config.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "pool-int.h"
#include "server.h" /* ks_info_add */

const char *kd_replica_state_name(const kd_replica *r)
{
    if (r->retiring)
        return "retiring";
    if (r->state == KD_REP_EJECTED)
        return "ejected";
    if (r->state == KD_REP_PROBING)
        return "probing";
    if (r->up)
        return "up";
    if (r->connecting)
        return "connecting";
    return "down";
}

#define U(x) ((unsigned long long)(x))

/* A value for a "k=v,k=v" line: commas (and line breaks) would split it. */
static const char *text(char *buf, size_t size, const char *s)
{
    snprintf(buf, size, "%s", s[0] ? s : "none");
    for (char *p = buf; *p; p++)
        if (*p == ',' || *p == '\r' || *p == '\n')
            *p = ';';
    return buf;
}

static void group_line(kt_buf *out, size_t k, kd_group *g)
{
    kd_pool *p = g->pool;
    uint64_t now = kt_loop_now(p->loop);
    uint32_t live = 0;
    for (uint32_t i = 0; i < g->nreps; i++)
        live += g->reps[i]->state == KD_REP_LIVE;
    uint64_t hedge = g->nreps >= 2 ? kd_health_hedge_ns(g) : 0;
    char addrs[sizeof g->name];
    text(addrs, sizeof addrs, g->name);
    ks_info_add(out,
           "group%zu:addrs=%s,replicas=%u,live=%u,health=%s,fetches=%llu,joins=%llu,"
           "failed=%llu,cancelled=%llu,flights=%u,hedges=%llu,hedges_won=%llu,"
           "hedge_budget_exhausted=%llu,retries=%llu,hedge_delay_us=%.1f,recent_p95_us=%.1f\r\n",
           k, addrs, (unsigned)g->nreps, (unsigned)live,
           g->retiring ? "retiring" : live == g->nreps ? "up" : live ? "degraded" : "down",
           U(g->st.fetches), U(g->st.joins), U(g->st.failed), U(g->st.cancelled),
           (unsigned)g->nflights, U(g->st.hedges), U(g->st.hedges_won),
           U(g->st.budget_exhausted), U(g->st.retries), (double)hedge / 1e3,
           (double)kd_window_percentile(&g->win, now, 95) / 1e3);
}

static void replica_line(kt_buf *out, size_t k, size_t gi, kd_replica *r)
{
    kd_pool *p = r->pool;
    uint64_t now = kt_loop_now(p->loop);
    const kt_hist *h = &r->hist;
    kd_window_advance(&r->win, now);
    uint32_t tot = r->win.tot.ok + r->win.tot.fail;
    char cause[sizeof r->eject_cause], last[sizeof r->last_error];
    ks_info_add(out,
           "backend%zu:addr=%s,group=%zu,state=%s,connections=%u/%u,outstanding=%u,queued=%u,"
           "held_bytes=%llu,fetches=%llu,replies=%llu,nils=%llu,errors=%llu,failed=%llu,"
           "cancelled=%llu,batches=%llu,keys_per_batch_mean=%.2f,keys_per_batch_p99=%llu,"
           "hedges=%llu,hedges_won=%llu,retries=%llu,conn_failures=%llu,stalls=%llu,"
           "ejections=%llu,ejections_consecutive=%llu,ejections_rate=%llu,ejections_probe=%llu,"
           "eject_cause=%s,probes=%llu,connects=%llu,stall_threshold_ms=%.1f,"
           "recent_requests=%u,recent_failures=%u,recent_p99_us=%.1f,"
           "latency_p50_us=%.1f,latency_p99_us=%.1f,latency_p999_us=%.1f,latency_max_us=%.1f,"
           "last_error=%s\r\n",
           k, r->name, gi, kd_replica_state_name(r), (unsigned)r->up, (unsigned)r->nconns,
           (unsigned)r->load, (unsigned)r->qlen, U(r->held), U(r->st.fetches), U(r->st.replies),
           U(r->st.nils), U(r->st.errors), U(r->st.failed), U(r->st.cancelled), U(r->st.batches),
           kd_lh_mean(&r->batch_keys), U(kd_lh_percentile(&r->batch_keys, 99)), U(r->st.hedges),
           U(r->st.hedges_won), U(r->st.retries), U(r->st.conn_failures), U(r->st.stalls),
           U(r->st.ejections), U(r->st.ej_consecutive), U(r->st.ej_rate), U(r->st.ej_probe),
           text(cause, sizeof cause, r->eject_cause), U(r->st.probes), U(r->st.connects),
           (double)r->stall_ns / 1e6, (unsigned)tot, (unsigned)r->win.tot.fail,
           (double)kd_window_percentile(&r->win, now, 99) / 1e3,
           kt_hist_percentile(h, 50) / 1e3, kt_hist_percentile(h, 99) / 1e3,
           kt_hist_percentile(h, 99.9) / 1e3, kt_hist_max(h) / 1e3,
           text(last, sizeof last, r->last_error));
}

/* Every group, live ones first, then the retiring. */
static kd_group *group_at(const kd_pool *p, size_t i, kd_group **retired)
{
    if (i < p->ngroups)
        return p->groups[i];
    *retired = *retired ? (*retired)->next_retired : p->retired;
    return *retired;
}

void kd_pool_info(kd_pool *p, kt_buf *out)
{
    kd_group *g, *ret = NULL;
    size_t k = 0;
    ks_info_add(out, "backends:%zu\r\ngroups:%zu\r\n", p->nreplicas, p->ngroups);
    for (size_t i = 0; (g = group_at(p, i, &ret)) != NULL; i++)
        group_line(out, i, g);
    ret = NULL;
    for (size_t i = 0; (g = group_at(p, i, &ret)) != NULL; i++)
        for (uint32_t j = 0; j < g->nreps; j++)
            replica_line(out, k++, i, g->reps[j]);
}

void kd_pool_totals_get(const kd_pool *p, kd_pool_totals *t)
{
    kd_group *g, *ret = NULL;
    memset(t, 0, sizeof *t);
    t->failed = p->retired_failed;
    for (size_t i = 0; (g = group_at(p, i, &ret)) != NULL; i++) {
        t->fetches += g->st.fetches;
        t->failed += g->st.failed;
        t->cancelled += g->st.cancelled;
        t->joins += g->st.joins;
        t->hedges += g->st.hedges;
        t->hedges_won += g->st.hedges_won;
        t->retries += g->st.retries;
        for (uint32_t j = 0; j < g->nreps; j++) {
            const kd_replica *r = g->reps[j];
            t->replies += r->st.replies;
            t->nils += r->st.nils;
            t->errors += r->st.errors;
            t->conn_failures += r->st.conn_failures;
            t->ejections += r->st.ejections;
            t->queued += r->qlen;
            t->outstanding += r->load;
            t->batches += r->st.batches;
            t->keys_sent += r->st.keys;
        }
    }
}

void kd_pool_reset_stats(kd_pool *p)
{
    p->retired_failed = 0;
    for (size_t i = 0; i < p->ngroups; i++) {
        kd_group *g = p->groups[i];
        memset(&g->st, 0, sizeof g->st);
        for (uint32_t j = 0; j < g->nreps; j++) {
            kd_replica *r = g->reps[j];
            memset(&r->st, 0, sizeof r->st);
            kt_hist_reset(&r->hist);
            memset(&r->batch_keys, 0, sizeof r->batch_keys);
        }
    }
}
