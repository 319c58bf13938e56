/*
 * pool.c - the backend pool: groups of replicas on a consistent-hash ring,
 * each replica with a few pipelined connections (conn.c), their health
 * (health.c) and the flights that fetch through them (fetch.c).
 *
 *   kd_pool_fetch(key) ──ring──▶ group "db1:7380,db2:7380"
 *                                  │ singleflight table, hedge timer
 *                    power of two  ▼ choices on load
 *            replica db1 ─────────────────────── replica db2
 *            queue [a][b][c]  ◀─ this iteration's fetches
 *              │ end of the iteration (pool_flush): up to backend-batch
 *              ▼ keys per command, to the connection with the fewest
 *            conn 0: [MGET a b c][GET d] ──TCP──▶ database
 *            conn 1: [MGET e f]            ◀── replies in order: each
 *                                              settles its command's keys
 *
 * What waits for a replica is bounded: backend-queue-limit fetches queued
 * beyond what its connections can take, backend-queue-bytes of fetches held
 * (queued or sent), backend-output-limit unsent bytes per connection.
 * Nothing here allocates per fetch in steady state: futures, flights,
 * waiters and attempts come from free lists, connection rings are reused.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pool-int.h"

static void reaper_cb(kt_timer *t, void *arg);
static void flush_cb(kt_defer *d, void *arg);

int kd_pool_new(kt_loop *loop, kd_pool **out)
{
    kd_pool *p = kt_calloc(1, sizeof *p);
    if (p == NULL)
        return -ENOMEM;
    p->loop = loop;
    p->lim = kt_resp_default_limits;
    p->lim.max_bulk = 64u << 20;
    p->lim.max_depth = 8;
    (void)kt_rng_seed_random(&p->rng);
    kt_timer_init(loop, &p->reaper, reaper_cb, p);
    kt_defer_init(loop, &p->flush, flush_cb, p);
    *out = p;
    return 0;
}

uint64_t kd_pool_rand(kd_pool *p, uint64_t n)
{
    return kt_rng_below(&p->rng, n);
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
    return d / 2 + kd_pool_rand(p, d / 2 + 1);
}

/* ---- option values ------------------------------------------------------------------------ */

int kd_pool_parse_share(const char *v, double *out, const char **why)
{
    char *end;
    double x = strtod(v, &end);
    bool pct = *end == '%';
    if (pct)
        end++;
    if (end == v || *end != '\0' || x < 0 || (pct ? x > 100 : x > 1)) {
        *why = "expected a share: a percentage (5%) or a fraction (0.05)";
        return -EINVAL;
    }
    *out = pct ? x / 100 : x;
    return 0;
}

int kd_pool_parse_hedge(const char *v, kd_pool_params *prm, const char **why)
{
    prm->hedge_pct = 0;
    prm->hedge_after = 0;
    if (strcmp(v, "off") == 0 || strcmp(v, "no") == 0)
        return 0;
    if (v[0] == 'p' || v[0] == 'P') {
        char *end;
        double x = strtod(v + 1, &end);
        if (end != v + 1 && *end == '\0' && x > 0 && x < 100) {
            prm->hedge_pct = x;
            return 0;
        }
    } else if (kt_parse_duration(v, KT_MSEC(1), &prm->hedge_after) == 0 && prm->hedge_after) {
        return 0;
    }
    *why = "expected off, a percentile of recent latency (p95, p99.9) or a duration (20ms)";
    return -EINVAL;
}

int kd_pool_check_hedge(const char *v, const char **why)
{
    kd_pool_params prm;
    return kd_pool_parse_hedge(v, &prm, why);
}

int kd_pool_check_share(const char *v, const char **why)
{
    double x;
    return kd_pool_parse_share(v, &x, why);
}

/* Split a backend line at commas into addresses (blanks around them
 * dropped), each checked; the normalised line into norm. Returns the
 * count, or -EINVAL with *why set. */
static int split_line(const char *line, char addrs[][128], int max, char *norm, size_t nsize,
                      const char **why)
{
    int n = 0;
    size_t nl = 0;
    const char *s = line;
    for (;;) {
        while (*s == ' ' || *s == '\t')
            s++;
        const char *e = s;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        kt_addr a;
        if (t == s || (size_t)(t - s) >= 128 || n == max) {
            *why = n == max ? "too many replicas in one backend line (64 at most)"
                            : "a backend is ADDR:PORT, or replicas ADDR:PORT,ADDR:PORT,...";
            return -EINVAL;
        }
        memcpy(addrs[n], s, (size_t)(t - s));
        addrs[n][t - s] = '\0';
        if (kt_addr_parse(addrs[n], &a) < 0) {
            *why = "a backend is not an address (ADDR:PORT or unix:PATH)";
            return -EINVAL;
        }
        for (int i = 0; i < n; i++)
            if (strcmp(addrs[i], addrs[n]) == 0) {
                *why = "the same backend is listed twice";
                return -EINVAL;
            }
        int w = snprintf(norm + nl, nsize - nl, "%s%s", n ? "," : "", addrs[n]);
        if (w < 0 || (size_t)w >= nsize - nl) {
            *why = "backend line too long";
            return -EINVAL;
        }
        nl += (size_t)w;
        n++;
        if (*e == '\0')
            return n;
        s = e + 1;
    }
}

#define MAX_REPLICAS 64

int kd_pool_check_backend(const char *v, const char **why)
{
    char (*addrs)[128] = kt_malloc(MAX_REPLICAS * sizeof *addrs);
    char norm[512];
    if (addrs == NULL) {
        *why = "out of memory";
        return -ENOMEM;
    }
    int n = split_line(v, addrs, MAX_REPLICAS, norm, sizeof norm, why);
    kt_free(addrs);
    return n < 0 ? n : 0;
}

/* ---- the end-of-iteration flush -------------------------------------------------------------- */

/*
 * The pool sends each replica's queue once per loop iteration, at its end
 * (kt_loop_defer: after the iteration's reads and the continuations they
 * set off, before the writes are flushed), so that the fetches of every
 * client in it leave together as one MGET.
 */
void kd_pool_mark(kd_replica *r)
{
    if (r->dirty)
        return;
    r->dirty = true;
    r->next_dirty = r->pool->dirty;
    r->pool->dirty = r;
    (void)kt_loop_defer(&r->pool->flush);
}

/*
 * The connection for the next command. A database answers each connection
 * in order, so one slow reply holds up every reply behind it: a connection
 * whose oldest command has waited longer than the replica's recent p99 is
 * probably stuck behind one, and is taken only when every other is too.
 * Then the fewest commands outstanding; among equals, the youngest oldest.
 */
static kd_conn *pick_conn(kd_replica *r)
{
    kd_conn *best = NULL;
    uint32_t bo = 0;
    uint64_t bs = 0;
    bool bstuck = true;
    uint64_t now = kt_loop_now(r->pool->loop);
    uint64_t late = r->p99_ns ? r->p99_ns : UINT64_MAX;
    for (uint32_t i = 0; i < r->nconns; i++) {
        kd_conn *c = &r->conns[i];
        if (!kd_conn_has_room(c))
            continue;
        uint32_t o = kt_pconn_outstanding(&c->pc);
        uint64_t sent = UINT64_MAX;
        (void)kt_pconn_oldest(&c->pc, &sent);
        bool stuck = o && now > sent && now - sent > late;
        if (best == NULL || (bstuck && !stuck) ||
            (stuck == bstuck && (o < bo || (o == bo && sent > bs)))) {
            best = c;
            bo = o;
            bs = sent;
            bstuck = stuck;
        }
    }
    return best;
}

static void replica_flush(kd_replica *r)
{
    uint32_t batch = r->pool->prm.batch ? r->pool->prm.batch : 1;
    kd_conn *c;
    while (r->qlen && (c = pick_conn(r)) != NULL)
        if (kd_conn_send_batch(c, r->qlen < batch ? r->qlen : batch) < 0)
            break; /* out of memory: what is left waits for the next pass */
    if (r->qlen && r->up == 0 && r->connecting == 0) {
        char msg[320];
        snprintf(msg, sizeof msg, "ERR backend %s is down: %s", r->name,
                 r->last_error[0] ? r->last_error : "not connected");
        kd_queue_fail(r, -EHOSTDOWN, msg, true);
    }
}

static void pool_flush(kd_pool *p)
{
    kd_replica *r;
    while ((r = p->dirty) != NULL) {
        p->dirty = r->next_dirty;
        r->dirty = false;
        replica_flush(r);
    }
}

static void flush_cb(kt_defer *d, void *arg)
{
    (void)d;
    pool_flush(arg);
}

/* ---- replicas and groups ---------------------------------------------------------------------------- */

static kd_replica *replica_new(kd_pool *p, kd_group *g, const char *name)
{
    kd_replica *r = kt_calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->pool = p;
    r->g = g;
    snprintf(r->name, sizeof r->name, "%s", name);
    (void)kt_addr_parse(name, &r->addr); /* checked by split_line */
    r->nconns = p->prm.connections;
    kd_replica_init_health(r);
    if ((r->conns = kt_calloc(r->nconns, sizeof *r->conns)) == NULL) {
        kt_free(r);
        return NULL;
    }
    for (uint32_t i = 0; i < r->nconns; i++) {
        if (kd_conn_init(&r->conns[i], r) < 0) {
            while (i--)
                kd_conn_free(&r->conns[i]);
            kt_free(r->conns);
            kt_free(r);
            return NULL;
        }
    }
    return r;
}

static void replica_free(kd_replica *r, const char *msg)
{
    kd_queue_fail(r, -ESHUTDOWN, msg ? msg : "ERR server shutting down", false);
    for (uint32_t i = 0; i < r->nconns; i++)
        kd_conn_close(&r->conns[i], msg);
    for (uint32_t i = 0; i < r->nconns; i++)
        kd_conn_free(&r->conns[i]);
    kd_replica_stop_health(r);
    if (r->dirty) { /* take it off the flush list */
        for (kd_replica **pp = &r->pool->dirty; *pp; pp = &(*pp)->next_dirty)
            if (*pp == r) {
                *pp = r->next_dirty;
                break;
            }
    }
    kt_free(r->conns);
    kt_free(r);
}

static void group_free(kd_group *g, const char *msg)
{
    kd_group_fail_all(g, -ESHUTDOWN, msg ? msg : "ERR server shutting down");
    for (uint32_t i = 0; i < g->nreps; i++)
        replica_free(g->reps[i], msg);
    kd_group_free_fetch(g);
    g->pool->retired_failed += g->st.failed;
    kt_free(g->reps);
    kt_free(g);
}

static kd_group *group_new(kd_pool *p, const char *norm, char addrs[][128], int n)
{
    kd_group *g = kt_calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->pool = p;
    snprintf(g->name, sizeof g->name, "%s", norm);
    kd_window_init(&g->win, p->prm.window);
    kd_group_init_fetch(g);
    if ((g->reps = kt_calloc((size_t)n, sizeof *g->reps)) == NULL) {
        kt_free(g);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if ((g->reps[i] = replica_new(p, g, addrs[i])) == NULL) {
            group_free(g, NULL);
            return NULL;
        }
        g->nreps++;
    }
    return g;
}

static void group_start(kd_group *g)
{
    for (uint32_t i = 0; i < g->nreps; i++)
        for (uint32_t j = 0; j < g->reps[i]->nconns; j++)
            kd_conn_start(&g->reps[i]->conns[j]);
}

/* A kept group follows the new parameters. */
static void group_apply(kd_group *g, const kd_pool_params *old)
{
    kd_pool *p = g->pool;
    if (old->window != p->prm.window)
        kd_window_init(&g->win, p->prm.window);
    for (uint32_t i = 0; i < g->nreps; i++) {
        kd_replica *r = g->reps[i];
        if (old->window != p->prm.window)
            kd_window_init(&r->win, p->prm.window);
        r->stall_ns = 0; /* recomputed from the new bounds */
        r->stall_slice = UINT64_MAX;
        for (uint32_t j = 0; j < r->nconns; j++)
            kd_conn_apply_params(&r->conns[j]);
        if (r->qlen)
            kd_pool_mark(r);
    }
    g->hedge_ns = 0;
    g->hedge_slice = UINT64_MAX;
}

/* Taken off the ring: no new fetches; queued ones fail (serving them
 * elsewhere would change which server holds a key mid-flight), sent ones
 * complete, idle connections close now. The reaper frees it once drained. */
static void retire(kd_pool *p, kd_group *g)
{
    g->retiring = true;
    kt_timer_stop(&g->hedge_timer);
    g->hcursor = NULL;
    for (uint32_t i = 0; i < g->nreps; i++) {
        kd_replica *r = g->reps[i];
        char msg[200];
        snprintf(msg, sizeof msg, "ERR backend %s was removed from the configuration", r->name);
        r->retiring = true;
        kd_replica_stop_health(r);
        kd_queue_fail(r, -ESHUTDOWN, msg, false);
        for (uint32_t j = 0; j < r->nconns; j++)
            if (kt_pconn_outstanding(&r->conns[j].pc) == 0)
                kd_conn_close(&r->conns[j], NULL);
    }
    g->next_retired = p->retired;
    p->retired = g;
    if (!kt_timer_active(&p->reaper))
        (void)kt_timer_start(&p->reaper, KT_MSEC(100), KT_MSEC(100));
}

static bool group_drained(const kd_group *g)
{
    if (g->nflights)
        return false;
    for (uint32_t i = 0; i < g->nreps; i++)
        if (g->reps[i]->load)
            return false;
    return true;
}

/* Free retired groups once nothing is outstanding on them (bounded by the
 * stall threshold, which fails a connection whose replies stopped). */
static void reaper_cb(kt_timer *t, void *arg)
{
    kd_pool *p = arg;
    for (kd_group **pp = &p->retired; *pp;) {
        kd_group *g = *pp;
        if (group_drained(g)) {
            *pp = g->next_retired;
            kt_log_info("backend %s: retired", g->name);
            group_free(g, NULL);
        } else {
            pp = &g->next_retired;
        }
    }
    if (p->retired == NULL)
        kt_timer_stop(t);
}

/* ---- configuration ------------------------------------------------------------------------------- */

int kd_pool_configure(kd_pool *p, const kd_pool_params *prm, const char *const *lines, size_t n,
                      const char **why)
{
    if (n == 0 || prm->connections == 0 || prm->pipeline == 0 || prm->batch == 0) {
        *why = "a pool needs at least one server, connection, pipeline slot and batch key";
        return -EINVAL;
    }
    char (*addrs)[128] = kt_malloc(MAX_REPLICAS * sizeof *addrs);
    char (*norm)[512] = kt_calloc(n, sizeof *norm);
    int *counts = kt_calloc(n, sizeof *counts);
    kd_group **gs = kt_calloc(n, sizeof *gs);
    bool *fresh = kt_calloc(n, sizeof *fresh);
    bool *kept = kt_calloc(p->ngroups ? p->ngroups : 1, sizeof *kept);
    kd_ring ring = { NULL, 0 };
    int r = -ENOMEM;
    *why = "out of memory";
    if (addrs == NULL || norm == NULL || counts == NULL || gs == NULL || fresh == NULL ||
        kept == NULL)
        goto out;
    /* Check every line, and that no address is listed twice anywhere. */
    for (size_t i = 0; i < n; i++) {
        if ((counts[i] = split_line(lines[i], addrs, MAX_REPLICAS, norm[i], sizeof norm[i], why)) < 0) {
            r = -EINVAL;
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++) {
            char a[512], b[512];
            snprintf(a, sizeof a, ",%s,", norm[i]);
            snprintf(b, sizeof b, "%s", norm[j]);
            for (char *tok = strtok(b, ","); tok; tok = strtok(NULL, ",")) {
                char pat[140];
                snprintf(pat, sizeof pat, ",%s,", tok);
                if (strstr(a, pat)) {
                    *why = "the same backend is listed twice";
                    r = -EINVAL;
                    goto out;
                }
            }
        }
    }
    {
        const char **names = kt_calloc(n, sizeof *names);
        if (names == NULL)
            goto out;
        for (size_t i = 0; i < n; i++)
            names[i] = norm[i];
        int e = kd_ring_build(&ring, names, n, prm->points);
        kt_free(names);
        if (e < 0)
            goto out;
    }

    /* Phase 1, undoable: keep the groups listed again under the same line
     * (and with the same number of connections), make the others. */
    bool reshape = p->ngroups > 0 && prm->connections != p->prm.connections;
    kd_pool_params old = p->prm;
    p->prm = *prm; /* new groups are built with the new shape */
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < p->ngroups && !reshape; j++) {
            if (!kept[j] && strcmp(p->groups[j]->name, norm[i]) == 0) {
                gs[i] = p->groups[j];
                kept[j] = true;
                break;
            }
        }
        if (gs[i] == NULL) {
            (void)split_line(lines[i], addrs, MAX_REPLICAS, norm[i], sizeof norm[i], why);
            if ((gs[i] = group_new(p, norm[i], addrs, counts[i])) == NULL) {
                for (size_t k = 0; k < i; k++)
                    if (fresh[k])
                        group_free(gs[k], NULL);
                p->prm = old;
                kd_ring_free(&ring);
                *why = "out of memory";
                goto out;
            }
            fresh[i] = true;
        }
    }

    /* Phase 2: commit. */
    for (size_t j = 0; j < p->ngroups; j++)
        if (!kept[j])
            retire(p, p->groups[j]);
    kt_free(p->groups);
    kd_ring_free(&p->ring);
    p->groups = gs;
    gs = NULL;
    p->ngroups = n;
    p->ring = ring;
    p->nreplicas = 0;
    for (size_t i = 0; i < n; i++) {
        p->nreplicas += p->groups[i]->nreps;
        if (fresh[i])
            group_start(p->groups[i]);
        else
            group_apply(p->groups[i], &old);
    }
    r = 0;
out:
    kt_free(addrs);
    kt_free(norm);
    kt_free(counts);
    kt_free(gs);
    kt_free(fresh);
    kt_free(kept);
    return r;
}

void kd_pool_free(kd_pool *p)
{
    if (p == NULL)
        return;
    const char *msg = "ERR server shutting down";
    for (size_t i = 0; i < p->ngroups; i++)
        group_free(p->groups[i], msg);
    while (p->retired) {
        kd_group *g = p->retired;
        p->retired = g->next_retired;
        group_free(g, msg);
    }
    kt_timer_stop(&p->reaper);
    kt_defer_cancel(&p->flush);
    kt_free(p->groups);
    kd_ring_free(&p->ring);
    kd_fetch_free_lists(p);
    kt_free(p);
}
