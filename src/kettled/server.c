/*
 * server.c - kettled's life: start (loop, server core, embedded database
 * or pool, listeners, signals), reload (SIGHUP, CONFIG SET) and stop. The
 * clients, the limits and the drain on SIGTERM/SIGINT are the server
 * core's (server.h):
 *
 *   running ──SIGTERM──▶ draining: listeners closed; each client is read
 *      ▲                 and answered until it has sent nothing more, then
 *      │                 closed
 *   SIGHUP: reload         │ last client gone          │ shutdown-timeout
 *   (old config kept       ▼                           ▼ or a second signal
 *    when invalid)       loop stops, exit 0       the rest closed; exit 3 if
 *                                                 requests were unanswered
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

/* ---- applying a configuration ------------------------------------------------- */

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

/* The embedded database is for a kettled started without any backend: a
 * reload or CONFIG SET never switches to it, nor away from it. */
static int check_switch(const kd_server *srv, const kd_config *cfg, const char **why)
{
    if (srv->embedded && cfg->backend.n) {
        *why = "kettled was started without a backend and serves from its embedded database; "
               "configuring backends takes a restart";
        return -EINVAL;
    }
    if (!srv->embedded && cfg->backend.n == 0) {
        *why = "no backend configured: kettled does not switch to its embedded database while "
               "running (restart it without a backend for that)";
        return -EINVAL;
    }
    return 0;
}

int kd_server_apply(kd_server *srv, kd_config *cfg, const char **why)
{
    bool initial = srv->pool == NULL;
    int r;
    if (!initial && keep_restart_options(srv, cfg) < 0) {
        *why = "out of memory";
        return -ENOMEM;
    }
    kt_log_level level;
    if (kt_log_parse_level(cfg->srv.log_level, &level) < 0) {
        *why = "bad log-level";
        return -EINVAL;
    }
    if (!initial && (r = check_switch(srv, cfg, why)) < 0)
        return r;
    if (initial && kd_pool_new(srv->loop, &srv->pool) < 0) {
        *why = "out of memory";
        return -ENOMEM;
    }
    /* No backend at start: the embedded database. */
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
    ks_metrics_change mc;
    if ((r = ks_metrics_prepare(&srv->core, cfg->srv.metrics_listen, &mc, why)) < 0)
        return r;
    if ((r = kd_pool_configure(srv->pool, &prm, addrs, n, why)) < 0) {
        ks_metrics_abort(&mc);
        return r;
    }
    ks_metrics_commit(&srv->core, &mc);

    kt_log_set_level(level);
    if (!initial)
        kd_config_free(&srv->cfg);
    srv->cfg = *cfg;
    memset(cfg, 0, sizeof *cfg);
    if (!initial)
        ks_server_apply(&srv->core);
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
        srv->st.reload_failures++;
        kd_config_free(&next);
        kd_notify("READY=1\nSTATUS=reload failed: running configuration kept");
        return;
    }
    srv->st.reloads++;
    kt_log_notice("configuration reloaded");
    kd_notify("READY=1\nSTATUS=configuration reloaded");
}

/* ---- listeners -------------------------------------------------------------------- */

/* Sockets handed over by the service manager when there are some,
 * otherwise the `listen` addresses. */
static int listen_all(kd_server *srv)
{
    int *fds = NULL;
    int n = kd_listen_inherited(&fds);
    if (n < 0)
        kt_log_warning("inherited sockets: %s (using listen)", strerror(-n));
    int r = ks_server_listen(&srv->core, fds, n > 0 ? (size_t)n : 0);
    kt_free(fds);
    return r;
}

/* Like Redis: ask for enough descriptors for maxclients, and say so when
 * the hard limit does not allow it (clients past it meet EMFILE). */
static void raise_nofile(kd_server *srv)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)srv->cfg.srv.maxclients + 64 +
                  (rlim_t)(srv->cfg.backend.n ? srv->cfg.backend.n : 2) *
                      (rlim_t)srv->cfg.backend_connections;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
        return;
    rlim_t got = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    rl.rlim_cur = got;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0)
        got = rl.rlim_cur;
    if (got < want)
        kt_log(got < (rlim_t)srv->cfg.srv.maxclients ? KT_LOG_WARNING : KT_LOG_INFO,
               "maxclients %lld wants about %llu file descriptors but the limit is %llu: "
               "connections past it are refused", (long long)srv->cfg.srv.maxclients,
               (unsigned long long)want, (unsigned long long)got);
}

/* ---- signals and the core's hooks ---------------------------------------------------- */

static const int kd_signals[] = { SIGTERM, SIGINT, SIGHUP };

static void signal_cb(kt_loop *loop, int signo, void *arg)
{
    kd_server *srv = arg;
    (void)loop;
    if (signo == SIGHUP) {
        kd_server_reload(srv);
        return;
    }
    if (srv->core.state == KS_RUNNING)
        kd_notify("STOPPING=1");
    ks_server_shutdown(&srv->core);
}

static int config_apply(ks_server *core, void *next, const char **why)
{
    kd_server *srv = core->data;
    int r = kd_config_validate(next, why);
    return r < 0 ? r : kd_server_apply(srv, next, why);
}

static void resetstat(ks_server *core)
{
    kd_server *srv = core->data;
    memset(&srv->st, 0, sizeof srv->st);
    kd_metrics_init(srv);
    kd_pool_reset_stats(srv->pool);
}

static const ks_daemon kettled = {
    .name = "kettled",
    .cmds = kd_cmds,
    .auth = KS_AUTH_ALL,
    .options = kd_options,
    .cfg_size = sizeof(kd_config),
    .pause_divisor = 4,
    .emit = kd_emit,
    .drop = kd_drop,
    .config_apply = config_apply,
    .resetstat = resetstat,
    .metrics = kd_metrics,
};

/* ---- start and stop ------------------------------------------------------------------ */

int kd_server_start(kd_server *srv)
{
    kt_loop_options lo = { 0 };
    kd_config cfg = srv->cfg;
    const char *why = NULL;
    int r;
    if ((r = kt_io_parse(cfg.srv.io, &lo.io)) < 0)
        return r;
    if ((r = kt_loop_new(&srv->loop, &lo)) < 0) {
        kt_log_error("cannot create the event loop (%s): %s", cfg.srv.io, strerror(-r));
        return r;
    }
    memset(&srv->cfg, 0, sizeof srv->cfg); /* apply moves cfg back in */
    kd_metrics_init(srv);
    if ((r = ks_server_init(&srv->core, srv->loop, &kettled, srv, &srv->cfg, &srv->cfg.srv)) < 0 ||
        (r = kd_server_apply(srv, &cfg, &why)) < 0) {
        kt_log_error("%s", why ? why : "out of memory");
        srv->cfg = cfg;
        return r;
    }
    ks_server_apply(&srv->core);
    raise_nofile(srv);
    if ((r = listen_all(srv)) < 0)
        return r;
    for (size_t i = 0; i < sizeof kd_signals / sizeof kd_signals[0]; i++)
        if ((r = kt_loop_signal(srv->loop, kd_signals[i], signal_cb, srv)) < 0) {
            kt_log_error("cannot watch signal %d: %s", kd_signals[i], strerror(-r));
            return r;
        }
    kd_notify_init(srv);
    kt_log_notice("kettled %s ready: io backend %s, %zu backend%s%s", KT_VERSION_STRING,
                  kt_loop_backend(srv->loop), srv->cfg.backend.n ? srv->cfg.backend.n : 1,
                  srv->cfg.backend.n == 1 || srv->cfg.backend.n == 0 ? "" : "s",
                  srv->embedded ? " (embedded)" : "");
    kd_notifyf("READY=1\nSTATUS=serving on %zu listener%s", srv->core.nls,
               srv->core.nls == 1 ? "" : "s");
    return 0;
}

void kd_server_stop(kd_server *srv)
{
    if (srv->loop == NULL)
        return;
    kd_notify_done();
    ks_server_free(&srv->core);
    kd_pool_free(srv->pool);
    srv->pool = NULL;
    if (srv->embedded) {
        kdb_server_stop(srv->embedded);
        srv->embedded = NULL;
    }
    for (size_t i = 0; i < sizeof kd_signals / sizeof kd_signals[0]; i++)
        (void)kt_loop_signal(srv->loop, kd_signals[i], NULL, NULL);
    /* Nothing is left open or armed: the run returns once the closes have
     * finished and the failed fetches' continuations have run. */
    int r = kt_loop_run(srv->loop, KT_RUN_DEFAULT);
    kt_free(srv->fs);
    srv->fs = NULL;
    kd_reqs_free_all(srv);
    if (r < 0 || (r = kt_loop_close(srv->loop)) < 0) {
        kt_log_warning("loop not empty at exit (%s): closing what is left", strerror(-r));
        kt_loop_free(srv->loop);
    }
    srv->loop = NULL;
}
