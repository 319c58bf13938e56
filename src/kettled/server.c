/*
 * server.c - the daemon's life: start (loop, embedded database, pool,
 * listeners, signals), accepting with maxclients, the idle sweep, reload
 * (SIGHUP, CONFIG SET), and the drain on SIGTERM/SIGINT:
 *
 *   running ──SIGTERM──▶ draining: listeners closed, clients stop reading,
 *      ▲                 each closes once its pending replies are sent
 *      │                   │ last client gone          │ shutdown-timeout
 *   SIGHUP: reload         ▼                           ▼ or a second signal
 *   (old config kept     loop stops, exit 0 ◀── every client closed now
 *    when invalid)
 */
#include "config.h"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include "kd.h"
#include "db.h"
#include "notify.h"

kd_server *kd_srv;

/* ---- applying a configuration ------------------------------------------------- */

static void limits_from(kt_resp_limits *lim, const kd_config *cfg)
{
    *lim = kt_resp_default_limits;
    lim->max_inline = (size_t)cfg->max_inline;
    lim->max_bulk = (size_t)cfg->max_bulk;
    lim->max_args = (size_t)cfg->max_args;
}

static void pool_params_from(kd_pool_params *p, const kd_config *cfg)
{
    p->connections = (uint32_t)cfg->backend_connections;
    p->pipeline = (uint32_t)cfg->backend_pipeline;
    p->queue_limit = (uint32_t)cfg->backend_queue_limit;
    p->eject_after = (uint32_t)cfg->eject_after;
    p->points = (uint32_t)cfg->hash_points;
    p->connect_timeout = cfg->connect_timeout;
    p->backend_timeout = cfg->backend_timeout;
    p->retry_min = cfg->backend_retry_min;
    p->retry_max = cfg->backend_retry_max;
    p->eject_time = cfg->eject_time;
    p->batch = (uint32_t)cfg->backend_batch;
    p->singleflight = cfg->singleflight;
    p->queue_bytes = cfg->backend_queue_bytes;
    p->output_limit = cfg->backend_output_limit;
    p->stall_factor = cfg->stall_factor;
    p->stall_floor = cfg->stall_floor;
    p->eject_min_requests = (uint32_t)cfg->eject_min_requests;
    p->eject_time_max = cfg->eject_time_max < cfg->eject_time ? cfg->eject_time
                                                              : cfg->eject_time_max;
    p->window = cfg->health_window;
    const char *why; /* the option table checked these */
    (void)kd_pool_parse_hedge(cfg->hedge_after, p, &why);
    (void)kd_pool_parse_share(cfg->hedge_max_extra, &p->hedge_max_extra, &why);
    (void)kd_pool_parse_share(cfg->eject_failure_rate, &p->eject_rate, &why);
}

/* The simulated database inside this process, on an ephemeral loopback
 * port: the pool reaches it over a real socket like any other server. */
static int start_embedded(kd_server *srv, const kd_config *cfg)
{
    size_t n = cfg->embedded_option.n;
    const char **opts = kt_calloc(2 * n + 3, sizeof *opts);
    char **words = kt_calloc(n ? n : 1, sizeof *words);
    int r = -ENOMEM;
    if (opts == NULL || words == NULL)
        goto out;
    size_t k = 0;
    opts[k++] = "latency";
    opts[k++] = cfg->embedded_latency ? cfg->embedded_latency : "none";
    for (size_t i = 0; i < n; i++) {
        if ((words[i] = kt_strdup(cfg->embedded_option.items[i])) == NULL)
            goto out;
        char *sp = strchr(words[i], ' ');
        if (sp == NULL) {
            r = -EINVAL;
            goto out;
        }
        *sp = '\0';
        opts[k++] = words[i];
        opts[k++] = sp + 1;
    }
    opts[k] = NULL;
    if ((r = kdb_server_start(srv->loop, "127.0.0.1:0", opts, &srv->embedded)) < 0) {
        kt_log_error("cannot start the embedded database: %s", strerror(-r));
        goto out;
    }
    kt_addr a;
    if ((r = kdb_server_addr(srv->embedded, &a)) < 0)
        goto out;
    kt_addr_format(&a, srv->embedded_addr, sizeof srv->embedded_addr);
    kt_log_notice("no backend configured: serving from the embedded simulated database at %s "
                  "(latency %s)", srv->embedded_addr, opts[1]);
out:
    for (size_t i = 0; words && i < n; i++)
        kt_free(words[i]);
    kt_free(words);
    kt_free(opts);
    return r;
}

/* Options that need a restart keep their running value; say so. */
static int keep_restart_options(kd_server *srv, kd_config *cfg)
{
    char val[4096];
    const char *why;
    for (const kt_opt *o = kd_options; o->name; o++) {
        if (o->flags & (KT_OPT_RUNTIME | KT_OPT_NOFILE))
            continue;
        if (!kd_config_differs(&srv->cfg, cfg, o->name))
            continue;
        kt_log_warning("option %s changed: it takes effect at the next start", o->name);
        if (kt_opt_get(kd_options, &srv->cfg, o->name, val, sizeof val) == NULL)
            continue;
        if (o->type == KT_OPT_LIST) {
            (void)kt_opt_set(kd_options, cfg, o->name, "", &why);
            for (char *tok = strtok(val, " "); tok; tok = strtok(NULL, " "))
                if (kt_opt_set(kd_options, cfg, o->name, tok, &why) < 0)
                    return -ENOMEM;
        } else if (kt_opt_set(kd_options, cfg, o->name, val, &why) < 0) {
            return -ENOMEM;
        }
    }
    return 0;
}

int kd_server_apply(kd_server *srv, kd_config *cfg, const char **why)
{
    bool initial = srv->pool == NULL;
    if (!initial && keep_restart_options(srv, cfg) < 0) {
        *why = "out of memory";
        return -ENOMEM;
    }
    kt_log_level level;
    if (kt_log_parse_level(cfg->log_level, &level) < 0) {
        *why = "bad log-level";
        return -EINVAL;
    }
    if (initial && kd_pool_new(srv->loop, &srv->pool) < 0) {
        *why = "out of memory";
        return -ENOMEM;
    }
    /* No backend: the embedded database (started on first need, kept
     * for the life of the process). */
    const char *const *addrs = (const char *const *)cfg->backend.items;
    size_t n = cfg->backend.n;
    const char *emb[1];
    if (n == 0) {
        if (srv->embedded == NULL && start_embedded(srv, cfg) < 0) {
            *why = "the embedded database did not start";
            return -EINVAL;
        }
        emb[0] = srv->embedded_addr;
        addrs = emb;
        n = 1;
    }
    kd_pool_params prm;
    pool_params_from(&prm, cfg);
    int r = kd_pool_configure(srv->pool, &prm, addrs, n, why);
    if (r < 0)
        return r;

    kt_log_set_level(level);
    limits_from(&srv->lim, cfg);
    if (!initial)
        kd_config_free(&srv->cfg);
    srv->cfg = *cfg;
    memset(cfg, 0, sizeof *cfg);
    return 0;
}

void kd_server_reload(kd_server *srv)
{
    kd_config next;
    const char *why = "invalid option (see above)";
    kd_notify("RELOADING=1");
    kt_log_notice("SIGHUP: reloading the configuration");
    if (kd_config_load(&next, srv->argc, srv->argv) < 0 || kd_config_validate(&next, &why) < 0 ||
        kd_server_apply(srv, &next, &why) < 0) {
        kt_log_error("reload failed, keeping the running configuration: %s", why);
        kd_config_free(&next);
        kd_notify("READY=1\nSTATUS=reload failed: running configuration kept");
        return;
    }
    kt_log_notice("configuration reloaded");
    kd_notify("READY=1\nSTATUS=configuration reloaded");
}

/* ---- listeners ------------------------------------------------------------------ */

static void accept_cb(kt_listener *l, kt_stream *s, void *arg)
{
    (void)l;
    kd_client_accept(arg, s);
}

static int add_listener(kd_server *srv, kt_listener *l)
{
    kt_listener **ls = kt_realloc(srv->ls, (srv->nls + 1) * sizeof *ls);
    if (ls == NULL) {
        kt_listener_close(l);
        return -ENOMEM;
    }
    srv->ls = ls;
    srv->ls[srv->nls++] = l;
    kt_addr a;
    char buf[128];
    if (kt_listener_addr(l, &a) == 0)
        kt_log_notice("listening on %s", kt_addr_format(&a, buf, sizeof buf));
    return 0;
}

/* Every listener is made here: sockets handed over by the service
 * manager when there are some, otherwise the `listen` addresses. */
static int listen_all(kd_server *srv)
{
    int *fds = NULL;
    int n = kd_listen_inherited(&fds);
    int r = 0;
    if (n > 0) {
        for (int i = 0; i < n && r == 0; i++) {
            kt_listener *l;
            if ((r = kt_listen_fd(srv->loop, fds[i], accept_cb, srv, &l)) < 0)
                kt_log_error("inherited socket %d: %s", fds[i], strerror(-r));
            else
                r = add_listener(srv, l);
        }
        kt_free(fds);
        return r;
    }
    if (n < 0)
        kt_log_warning("inherited sockets: %s (using listen)", strerror(-n));
    for (size_t i = 0; i < srv->cfg.listen.n && r == 0; i++) {
        kt_addr a;
        kt_listener *l;
        const char *spec = srv->cfg.listen.items[i];
        if ((r = kt_addr_parse(spec, &a)) < 0) {
            kt_log_error("listen '%s': not an address", spec);
        } else if ((r = kt_listen(srv->loop, &a, (int)srv->cfg.backlog, accept_cb, srv, &l)) < 0) {
            kt_log_error("cannot listen on %s: %s", spec, strerror(-r));
        } else {
            r = add_listener(srv, l);
        }
    }
    return r;
}

static void close_listeners(kd_server *srv)
{
    for (size_t i = 0; i < srv->nls; i++)
        kt_listener_close(srv->ls[i]);
    kt_free(srv->ls);
    srv->ls = NULL;
    srv->nls = 0;
}

/* Like Redis: ask for enough descriptors for maxclients, and say so when
 * the hard limit does not allow it (clients past it meet EMFILE). */
static void raise_nofile(kd_server *srv)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)srv->cfg.maxclients + 64 +
                  (rlim_t)(srv->cfg.backend.n ? srv->cfg.backend.n : 2) *
                      (rlim_t)srv->cfg.backend_connections;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
        return;
    rlim_t got = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    rl.rlim_cur = got;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0)
        got = rl.rlim_cur;
    if (got < want)
        kt_log(got < (rlim_t)srv->cfg.maxclients ? KT_LOG_WARNING : KT_LOG_INFO,
               "maxclients %lld wants about %llu file descriptors but the limit is %llu: "
               "connections past it are refused", (long long)srv->cfg.maxclients,
               (unsigned long long)want, (unsigned long long)got);
}

/* ---- signals and the drain -------------------------------------------------------- */

static void signal_cb(kt_loop *loop, int signo, void *arg)
{
    (void)loop;
    if (signo == SIGHUP)
        kd_server_reload(arg);
    else
        kd_server_shutdown(arg);
}

static void drain_timer_cb(kt_timer *t, void *arg)
{
    kd_server *srv = arg;
    (void)t;
    kt_log_warning("shutdown-timeout: closing %zu clients with requests still in flight",
                   srv->nclients);
    kd_clients_close_all(srv);
    kt_loop_stop(srv->loop);
}

void kd_server_shutdown(kd_server *srv)
{
    if (srv->draining) {
        kt_log_notice("second signal: exiting now");
        kd_clients_close_all(srv);
        kt_loop_stop(srv->loop);
        return;
    }
    srv->draining = true;
    kd_notify("STOPPING=1");
    kt_log_notice("shutting down: finishing the requests of %zu clients (shutdown-timeout %llu ms)",
                  srv->nclients, (unsigned long long)(srv->cfg.shutdown_timeout / KT_MSEC(1)));
    close_listeners(srv);
    kd_clients_finish_all(srv);
    if (srv->nclients == 0 && srv->nclosing == 0)
        kt_loop_stop(srv->loop);
    else if (srv->cfg.shutdown_timeout)
        (void)kt_timer_start(&srv->drain_timer, srv->cfg.shutdown_timeout, 0);
}

void kd_server_client_gone(kd_server *srv)
{
    if (srv->draining && srv->nclients == 0 && srv->nclosing == 0)
        kt_loop_stop(srv->loop);
}

static void cron_cb(kt_timer *t, void *arg)
{
    (void)t;
    kd_clients_sweep(arg);
}

/* ---- start and stop ------------------------------------------------------------------ */

int kd_server_start(kd_server *srv)
{
    kt_loop_options lo = { 0 };
    kd_config cfg = srv->cfg;
    const char *why = NULL;
    int r;
    if ((r = kt_io_parse(cfg.io, &lo.io)) < 0)
        return r;
    if ((r = kt_loop_new(&srv->loop, &lo)) < 0) {
        kt_log_error("cannot create the event loop (%s): %s", cfg.io, strerror(-r));
        return r;
    }
    srv->started_ns = kt_loop_now(srv->loop);
    srv->started = time(NULL);
    kt_timer_init(srv->loop, &srv->cron, cron_cb, srv);
    kt_timer_init(srv->loop, &srv->drain_timer, drain_timer_cb, srv);
    raise_nofile(srv);

    memset(&srv->cfg, 0, sizeof srv->cfg); /* apply moves cfg back in */
    if ((r = kd_server_apply(srv, &cfg, &why)) < 0) {
        kt_log_error("%s", why);
        srv->cfg = cfg;
        return r;
    }
    if ((r = listen_all(srv)) < 0)
        return r;
    int sigs[] = { SIGTERM, SIGINT, SIGHUP };
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if ((r = kt_loop_signal(srv->loop, sigs[i], signal_cb, srv)) < 0) {
            kt_log_error("cannot watch signal %d: %s", sigs[i], strerror(-r));
            return r;
        }
    (void)kt_timer_start(&srv->cron, KT_MSEC(500), KT_MSEC(500));
    kd_notify_init(srv->loop);
    kt_log_notice("kettled %s ready: io backend %s, %zu backend%s%s", KT_VERSION_STRING,
                  kt_loop_backend(srv->loop), srv->cfg.backend.n ? srv->cfg.backend.n : 1,
                  srv->cfg.backend.n == 1 || srv->cfg.backend.n == 0 ? "" : "s",
                  srv->embedded ? " (embedded)" : "");
    kd_notifyf("READY=1\nSTATUS=serving on %zu listener%s", srv->nls, srv->nls == 1 ? "" : "s");
    return 0;
}

void kd_server_stop(kd_server *srv)
{
    if (srv->loop == NULL)
        return;
    kd_notify_done();
    close_listeners(srv);
    kd_clients_close_all(srv);
    kd_pool_free(srv->pool);
    srv->pool = NULL;
    if (srv->embedded) {
        kdb_server_stop(srv->embedded);
        srv->embedded = NULL;
    }
    kt_timer_stop(&srv->cron);
    kt_timer_stop(&srv->drain_timer);
    for (int i = 0; i < 1000; i++) {
        kt_loop_stats st;
        (void)kt_loop_run(srv->loop, KT_RUN_NOWAIT);
        kt_loop_get_stats(srv->loop, &st);
        if (st.streams == 0 && st.futures_live == 0)
            break;
    }
    kt_resp_req_free(&srv->req);
    kt_free(srv->fs);
    srv->fs = NULL;
    kd_reqs_free_all();
    kt_loop_free(srv->loop);
    srv->loop = NULL;
}
