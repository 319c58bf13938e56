/*
 * db.c - the kettle-db server: life cycle, configuration, and what the
 * server core asks of it at accept time, with the whole-server faults:
 *
 *   listener ─accept─▶ pre_accept: refuse (reset at once)
 *                       │
 *                       ▼ core: maxclients, a connection
 *                     on_accept: slow-accept (parked unread, one per
 *                       │        pause), stop-reading (frozen)
 *                       ▼
 *                     read by the core ─▶ commands (cmd.c) ─▶ requests
 *                                         with delay timers (req.c)
 *
 * Bad input on one connection gets Redis's error and closes that
 * connection only; a connection that sends faster than it is answered is
 * paused (max-pending, output high-water mark), never allowed to grow
 * without bound: the core does both.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "kdb.h"

static void accept_timer_cb(kt_timer *t, void *arg);

/* ---- the core's hooks at accept and close ------------------------------------- */

static bool pre_accept(ks_server *core)
{
    kdb_server *srv = core->data;
    if (srv->faults.f[KDB_F_REFUSE].prob > 0 &&
        kt_rng_chance(&srv->fault_rng, srv->faults.f[KDB_F_REFUSE].prob)) {
        srv->st.refused++;
        srv->st.faults[KDB_F_REFUSE]++;
        return false;
    }
    return true;
}

/* slow-accept: after an accept, with the probability, the server takes no
 * new connection for PAUSE. Connections handed over meanwhile (io_uring's
 * multishot accept may deliver a few after the listener is paused) are
 * parked unread and taken one per pause, so that clients see exactly one
 * accept per PAUSE. */
static void maybe_pause_accepting(kdb_server *srv)
{
    const kdb_fault *sa = &srv->faults.f[KDB_F_SLOW_ACCEPT];
    if (sa->prob <= 0 || srv->accept_paused || !kt_rng_chance(&srv->fault_rng, sa->prob))
        return;
    srv->st.faults[KDB_F_SLOW_ACCEPT]++;
    srv->accept_paused = true;
    ks_server_pause_accept(&srv->core, true);
    (void)kt_timer_start(&srv->accept_timer, sa->ns, 0);
}

/* c becomes a served connection: maybe frozen (stop-reading), else read. */
static void admit(kdb_server *srv, kdb_conn *c)
{
    c->flags &= ~KDB_CF_PARKED;
    if (srv->faults.f[KDB_F_STOP_READING].prob > 0 &&
        kt_rng_chance(&srv->fault_rng, srv->faults.f[KDB_F_STOP_READING].prob)) {
        c->core.flags |= KS_C_FROZEN;
        srv->st.faults[KDB_F_STOP_READING]++;
    }
    maybe_pause_accepting(srv);
}

static bool on_accept(ks_conn *core)
{
    kdb_server *srv = kdb_of(core);
    kdb_conn *c = (kdb_conn *)core;
    kdb_conn_init(srv, c);
    if (srv->accept_paused) {
        c->flags |= KDB_CF_PARKED;
        if (srv->parked_tail)
            srv->parked_tail->pnext = c;
        else
            srv->parked = c;
        srv->parked_tail = c;
        return false;
    }
    admit(srv, c);
    return true;
}

static void on_close(ks_conn *core)
{
    kdb_server *srv = kdb_of(core);
    kdb_conn *c = (kdb_conn *)core;
    if (c->flags & KDB_CF_PARKED) {
        kdb_conn **pp = &srv->parked, *last = NULL;
        while (*pp && *pp != c) {
            last = *pp;
            pp = &last->pnext;
        }
        if (*pp) {
            *pp = c->pnext;
            if (srv->parked_tail == c)
                srv->parked_tail = last;
        }
    }
    kdb_conn_release(c);
    /* freed worker slots go to whoever waits */
    kdb_workers_kick(srv);
}

static void accept_timer_cb(kt_timer *t, void *arg)
{
    kdb_server *srv = arg;
    (void)t;
    if (srv->accept_paused) {
        srv->accept_paused = false;
        while (!srv->accept_paused && srv->parked) {
            kdb_conn *c = srv->parked;
            srv->parked = c->pnext;
            if (srv->parked == NULL)
                srv->parked_tail = NULL;
            c->pnext = NULL;
            admit(srv, c);
            ks_conn_start(&c->core);
        }
        if (!srv->accept_paused)
            ks_server_pause_accept(&srv->core, false);
    }
    if (!srv->refusing && ks_server_reopen_listeners(&srv->core) < 0)
        (void)kt_timer_start(&srv->accept_timer, KT_MSEC(100), 0); /* retry re-listening */
}

/* ---- whole-server faults -------------------------------------------------------- */

void kdb_server_set_fault(kdb_server *srv, kdb_fault_kind kind, const kdb_fault *f, ks_conn *from)
{
    kdb_faults_set(&srv->faults, kind, f);
    switch (kind) {
    case KDB_F_REFUSE:
        if (f->prob >= 1.0 && !srv->refusing) {
            srv->refusing = true;
            ks_server_close_listeners(&srv->core);
            kt_log_notice("fault refuse: listeners closed, connections are refused");
        } else if (f->prob < 1.0 && srv->refusing) {
            srv->refusing = false;
            if (ks_server_reopen_listeners(&srv->core) < 0)
                (void)kt_timer_start(&srv->accept_timer, KT_MSEC(100), 0);
            kt_log_notice("fault refuse cleared: listening again");
        }
        break;
    case KDB_F_STOP_READING:
        for (ks_conn *c = srv->core.head; c; c = c->next) {
            if (f->prob > 0 && f->n && c != from && !(c->flags & KS_C_FROZEN) &&
                kt_rng_chance(&srv->fault_rng, f->prob)) {
                ks_conn_freeze(c, true);
                srv->st.faults[KDB_F_STOP_READING]++;
            } else if (f->prob <= 0) {
                ks_conn_freeze(c, false);
            }
        }
        break;
    case KDB_F_SLOW_ACCEPT:
        if (f->prob <= 0 && srv->accept_paused) {
            kt_timer_stop(&srv->accept_timer);
            accept_timer_cb(&srv->accept_timer, srv);
        }
        break;
    default:
        break;
    }
}

void kdb_server_clear_faults(kdb_server *srv)
{
    kdb_fault off = { 0 };
    for (int k = 0; k < KDB_F_COUNT; k++)
        kdb_server_set_fault(srv, (kdb_fault_kind)k, &off, NULL);
}

/* ---- configuration ------------------------------------------------------------- */

static void reseed(kdb_server *srv)
{
    if (srv->cfg.seed == 0) {
        srv->seed = kt_rng_seed_random(&srv->lat_rng);
    } else {
        srv->seed = (uint64_t)srv->cfg.seed;
        kt_rng_seed(&srv->lat_rng, srv->seed);
    }
    kt_rng_seed(&srv->fault_rng, srv->seed ^ 0x6b6574746c652d66ull);
    srv->applied_seed = srv->cfg.seed;
}

void kdb_server_apply(kdb_server *srv)
{
    const char *why;
    kdb_latency m;
    if (srv->cfg.latency && kdb_latency_parse(srv->cfg.latency, &m, &why) == 0)
        srv->lat = m;
    if (srv->cfg.seed != srv->applied_seed)
        reseed(srv);
    /* limits and backpressure on every connection; more workers (or
     * unlimited) start waiting requests */
    ks_server_apply(&srv->core);
    kdb_workers_kick(srv);
}

/* CONFIG SET: every value was checked by the option table. */
static int config_apply(ks_server *core, void *next_cfg, const char **why)
{
    kdb_server *srv = core->data;
    kdb_cfg *next = next_cfg;
    ks_metrics_change mc;
    int r = ks_metrics_prepare(core, next->srv.metrics_listen, &mc, why);
    if (r < 0)
        return r;
    /* the log level is the process's (kettled's, when embedded): only an
     * explicit change touches it */
    const char *was = srv->cfg.srv.log_level ? srv->cfg.srv.log_level : "";
    kt_log_level lvl;
    if (strcmp(next->srv.log_level ? next->srv.log_level : "", was) != 0 &&
        kt_log_parse_level(next->srv.log_level, &lvl) == 0)
        kt_log_set_level(lvl);
    kt_opt_free(kdb_options, &srv->cfg);
    srv->cfg = *next;
    ks_metrics_commit(core, &mc);
    kdb_server_apply(srv);
    return 0;
}

static void resetstat(ks_server *core)
{
    kdb_server *srv = core->data;
    memset(&srv->st, 0, sizeof srv->st);
    kt_hist_reset(&srv->h_sched);
    kt_hist_reset(&srv->h_actual);
    kt_hist_reset(&srv->h_late);
}

static const ks_daemon kettle_db = {
    .name = "kettle-db",
    .cmds = kdb_cmds,
    .auth = KS_AUTH_ADMIN,
    .conn_size = sizeof(kdb_conn),
    .options = kdb_options,
    .cfg_size = sizeof(kdb_cfg),
    .pre_accept = pre_accept,
    .on_accept = on_accept,
    .on_close = on_close,
    .emit = kdb_emit,
    .drop = kdb_drop,
    .stuck = kdb_stuck,
    .config_apply = config_apply,
    .resetstat = resetstat,
    .metrics = kdb_metrics,
};

/* ---- life cycle ------------------------------------------------------------------ */

/* The faults of the `fault` option, parsed before anything starts. */
static int parse_start_faults(const kdb_cfg *cfg, kdb_fault *faults, bool *have)
{
    const char *why = NULL;
    for (size_t i = 0; i < cfg->fault.n; i++) {
        kdb_fault_kind k;
        kdb_fault f;
        if (kdb_fault_parse_line(cfg->fault.items[i], &k, &f, &why) < 0) {
            kt_log_error("fault '%s': %s", cfg->fault.items[i], why);
            return -EINVAL;
        }
        faults[k] = f;
        have[k] = true;
    }
    return 0;
}

static int start(kt_loop *loop, const kdb_cfg *cfg, bool embedded, kdb_server **out)
{
    const char *why = NULL;
    kdb_fault pending[KDB_F_COUNT];
    bool have[KDB_F_COUNT] = { false };
    int r;
    memset(pending, 0, sizeof pending);
    kdb_server *srv = kt_calloc(1, sizeof *srv);
    if (srv == NULL)
        return -ENOMEM;
    srv->loop = loop;
    srv->embedded = embedded;
    if (kt_opt_copy(kdb_options, &srv->cfg, cfg, sizeof *cfg) < 0) {
        kt_free(srv);
        return -ENOMEM;
    }
    kt_timer_init(loop, &srv->accept_timer, accept_timer_cb, srv);
    if ((r = ks_server_init(&srv->core, loop, &kettle_db, srv, &srv->cfg, &srv->cfg.srv)) < 0)
        goto fail;
    /* Embedded (kettled), the line must not look like the host program's
     * own "listening on" line that scripts wait for. */
    srv->core.listen_note = embedded ? "simulated database at" : "listening on";
    kdb_faults_init(&srv->faults);
    kt_hist_init(&srv->h_sched);
    kt_hist_init(&srv->h_actual);
    kt_hist_init(&srv->h_late);
    if (kdb_latency_parse(srv->cfg.latency ? srv->cfg.latency : "none", &srv->lat, &why) < 0) {
        kt_log_error("latency '%s': %s", srv->cfg.latency, why);
        r = -EINVAL;
        goto fail;
    }
    if ((r = parse_start_faults(&srv->cfg, pending, have)) < 0)
        goto fail;
    srv->applied_seed = -1;
    kdb_server_apply(srv);
    if ((r = ks_server_listen(&srv->core, NULL, 0)) < 0)
        goto fail;
    ks_metrics_change mc;
    if ((r = ks_metrics_prepare(&srv->core, srv->cfg.srv.metrics_listen, &mc, &why)) < 0)
        goto fail;
    ks_metrics_commit(&srv->core, &mc);
    for (int k = 0; k < KDB_F_COUNT; k++) {
        if (have[k]) {
            char d[200];
            kdb_server_set_fault(srv, (kdb_fault_kind)k, &pending[k], NULL);
            kt_log_notice("fault %s", kdb_fault_describe((kdb_fault_kind)k, &pending[k], d, sizeof d));
        }
    }
    *out = srv;
    return 0;
fail:
    kdb_server_stop(srv);
    return r;
}

int kdb_server_start_cfg(kt_loop *loop, const kdb_cfg *cfg, kdb_server **out)
{
    return start(loop, cfg, false, out);
}

int kdb_server_start(kt_loop *loop, const char *listen_addr, const char *const *opts,
                     kdb_server **out)
{
    kdb_cfg cfg;
    const char *why = NULL;
    bool listen_given = listen_addr != NULL;
    int r = kt_opt_defaults(kdb_options, &cfg);
    if (r < 0)
        goto done;
    if (listen_addr) {
        (void)kt_opt_set(kdb_options, &cfg, "listen", "", &why);
        if ((r = kt_opt_set(kdb_options, &cfg, "listen", listen_addr, &why)) < 0) {
            kt_log_error("listen '%s': %s", listen_addr, why);
            goto done;
        }
    }
    for (size_t i = 0; opts && opts[i]; i += 2) {
        if (opts[i + 1] == NULL) {
            kt_log_error("simulated database option %s: no value", opts[i]);
            r = -EINVAL;
            goto done;
        }
        if (strcmp(opts[i], "listen") == 0 && !listen_given) {
            (void)kt_opt_set(kdb_options, &cfg, "listen", "", &why);
            listen_given = true;
        }
        if ((r = kt_opt_set(kdb_options, &cfg, opts[i], opts[i + 1], &why)) < 0) {
            kt_log_error("simulated database option %s '%s': %s", opts[i], opts[i + 1], why);
            r = -EINVAL;
            goto done;
        }
    }
    r = start(loop, &cfg, true, out);
done:
    kt_opt_free(kdb_options, &cfg);
    return r;
}

int kdb_server_addr(const kdb_server *s, kt_addr *out)
{
    if (s == NULL)
        return -ENOENT;
    return ks_server_addr(&s->core, 0, out);
}

void kdb_server_shutdown(kdb_server *srv)
{
    ks_server_shutdown(&srv->core);
}

void kdb_server_stop(kdb_server *srv)
{
    if (srv == NULL)
        return;
    srv->stopping = true;
    kt_timer_stop(&srv->accept_timer);
    ks_server_free(&srv->core);
    kdb_reqs_destroy(srv);
    kt_opt_free(kdb_options, &srv->cfg);
    kt_free(srv);
}
