/*
 * server-metrics.c - metrics-listen: the Prometheus endpoint of a daemon
 * (metrics.h) on the server's own loop, and the families every server
 * has, from the same counters INFO shows:
 *
 *   <daemon>_commands_total{cmd}        commands run, by name (INFO cmd_*)
 *   <daemon>_errors_total{kind}         error replies by kind
 *   <daemon>_connections_total, _rejected_connections_total
 *   <daemon>_clients_closed_total{reason}, _client_read_pauses_total
 *   <daemon>_connected_clients, _blocked_clients, _maxclients
 *   <daemon>_client_buffer_bytes{kind}  what clients make it hold now
 *   <daemon>_loop_lag_seconds, _loop_lag_max_seconds, _loop_iterations_total,
 *   _loop_batch_waits_total
 *   <daemon>_metrics_scrapes_total ...  the endpoint's own counters
 *   process_*                           CPU, RSS, descriptors, start time
 *
 * then the daemon's own (ks_daemon.metrics). <daemon> is the daemon's name
 * with '-' as '_': kettled_, kettle_db_.
 *
 * The endpoint moves in two steps (prepare, commit) so a reload or CONFIG
 * SET that fails elsewhere leaves the old one in force.
 */
#include "config.h"
#include <errno.h>
#include <string.h>
#include "metrics.h"
#include "server-int.h"

int ks_check_metrics_addr(const char *v, const char **why)
{
    kt_addr a;
    if (v == NULL || v[0] == '\0')
        return 0;
    if (strncmp(v, "unix:", 5) == 0 || kt_addr_parse(v, &a) < 0) {
        *why = "expected ADDR:PORT or [IPV6]:PORT (empty: off)";
        return -EINVAL;
    }
    return 0;
}

/* ---- the core's families --------------------------------------------------------------- */

static void counter_l(kt_metrics *m, const char *p, const char *name, const char *help,
                      const char *label, const char *const *values, const uint64_t *v, size_t n)
{
    kt_metrics_family(m, p, name, KT_METRIC_COUNTER, help);
    for (size_t i = 0; i < n; i++) {
        kt_label l = { label, values[i] };
        kt_metrics_sample_u64(m, &l, 1, v[i]);
    }
}

static void core_metrics(ks_server *srv, kt_metrics *m, const char *p)
{
    const ks_stats *s = &srv->st;
    kt_metrics_family(m, p, "commands_total", KT_METRIC_COUNTER,
                      "Commands run, by name (arity and authentication checked).");
    size_t n = ks_cmd_count(srv);
    for (size_t i = 0; i < n; i++) {
        kt_label l = { "cmd", ks_cmd_at(srv, i)->name };
        kt_metrics_sample_u64(m, &l, 1, srv->calls[i]);
    }
    static const char *const ekinds[] = { "protocol", "unknown_command", "arity", "noauth",
                                          "wrongpass", "other" };
    uint64_t ev[] = { s->err_protocol, s->err_unknown, s->err_arity, s->err_noauth,
                      s->err_wrongpass, s->err_other };
    counter_l(m, p, "errors_total",
              "Error replies to clients, by kind (protocol errors also close the client).",
              "kind", ekinds, ev, 6);
    kt_metrics_counter(m, p, "connections_total", "Client connections accepted.",
                       s->connections);
    kt_metrics_counter(m, p, "rejected_connections_total",
                       "Client connections refused (maxclients, or while draining).", s->rejected);
    static const char *const reasons[] = { "idle", "output_buffer", "query_buffer",
                                           "clients_memory" };
    uint64_t cv[] = { s->closed_idle, s->closed_output, s->closed_query, s->closed_memory };
    counter_l(m, p, "clients_closed_total",
              "Clients closed by the server: idle-timeout, max-output-buffer, max-query-buffer, "
              "max-clients-memory.",
              "reason", reasons, cv, 4);
    kt_metrics_counter(m, p, "client_read_pauses_total",
                       "Times reading from a client paused for backpressure.", s->paused);
    kt_metrics_counter(m, p, "memory_trims_total", "Times freed memory was given back.",
                       s->trims);
    kt_metrics_gauge(m, p, "connected_clients", "Clients connected now.", (double)srv->nclients);
    kt_metrics_gauge(m, p, "blocked_clients",
                     "Clients waiting for a deferred reply (a fetch, a delay).",
                     (double)ks_server_blocked(srv));
    kt_metrics_gauge(m, p, "maxclients", "The maxclients limit.", (double)srv->sc->maxclients);
    uint64_t q, o, pb;
    ks_server_client_bytes(srv, &q, &o, &pb);
    static const char *const bkinds[] = { "query", "output", "pending" };
    uint64_t bv[] = { q, o, pb };
    kt_metrics_family(m, p, "client_buffer_bytes", KT_METRIC_GAUGE,
                      "Bytes clients make the server hold now: unparsed input, unsent output, "
                      "requests in flight.");
    for (size_t i = 0; i < 3; i++) {
        kt_label l = { "kind", bkinds[i] };
        kt_metrics_sample_u64(m, &l, 1, bv[i]);
    }
    kt_metrics_gauge(m, p, "loop_lag_seconds",
                     "How late the event loop ran its 100 ms tick, smoothed over about 1 s.",
                     (double)ks_lag_avg(srv) / 1e9);
    kt_metrics_gauge(m, p, "loop_lag_max_seconds",
                     "The latest the event loop ran its tick over the last 10 to 20 s.",
                     (double)ks_lag_max(srv) / 1e9);
    kt_loop_stats ls;
    kt_loop_get_stats(srv->loop, &ls);
    kt_metrics_counter(m, p, "loop_iterations_total", "Event loop iterations.", ls.iterations);
    kt_metrics_counter(m, p, "loop_batch_waits_total",
                       "Waits of the busy event loop that let the kernel gather completions "
                       "(io-batch-wait).", ls.batch_waits);
    if (srv->metrics) {
        kt_metrics_stats ms;
        kt_metrics_server_stats(srv->metrics, &ms);
        kt_metrics_counter(m, p, "metrics_scrapes_total", "Scrapes of this endpoint answered.",
                           ms.scrapes);
        kt_metrics_counter(m, p, "metrics_errors_total",
                           "Requests to this endpoint answered with an error status.", ms.errors);
        kt_metrics_counter(m, p, "metrics_timeouts_total",
                           "Scraper connections reset by the endpoint's read or write timeout.",
                           ms.timeouts);
    }
    kt_metrics_family(m, p, "build_info", KT_METRIC_GAUGE,
                      "Always 1: the daemon's version and its I/O backend as labels.");
    kt_label bl[] = { { "version", KT_VERSION_STRING },
                      { "io_backend", kt_loop_backend(srv->loop) } };
    kt_metrics_sample(m, bl, 2, 1);
    kt_metrics_process(m);
}

static int render_cb(kt_metrics *m, void *arg)
{
    ks_server *srv = arg;
    char prefix[64];
    size_t n = 0;
    for (const char *c = srv->d->name; *c && n < sizeof prefix - 2; c++)
        prefix[n++] = *c == '-' ? '_' : *c;
    prefix[n++] = '_';
    prefix[n] = '\0';
    core_metrics(srv, m, prefix);
    if (srv->d->metrics)
        srv->d->metrics(srv, m, prefix);
    return 0;
}

/* ---- the endpoint's life -------------------------------------------------------------- */

static bool same(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

int ks_metrics_prepare(ks_server *srv, const char *addr, ks_metrics_change *next,
                       const char **why)
{
    memset(next, 0, sizeof *next);
    if (same(addr, srv->metrics_addr))
        return 0;
    next->change = true;
    if (addr == NULL || addr[0] == '\0')
        return 0;
    if ((next->addr = kt_strdup(addr)) == NULL) {
        *why = "out of memory";
        return -ENOMEM;
    }
    int r = kt_metrics_listen(srv->loop, addr, NULL, render_cb, srv, &next->ms);
    if (r < 0) {
        kt_log_error("metrics-listen %s: %s", addr, strerror(-r));
        *why = r == -EADDRINUSE ? "metrics-listen: address already in use"
                                : "metrics-listen: cannot listen on that address";
        kt_free(next->addr);
        next->addr = NULL;
        return r;
    }
    return 0;
}

void ks_metrics_commit(ks_server *srv, ks_metrics_change *next)
{
    if (!next->change)
        return;
    if (srv->metrics) {
        kt_log_notice("metrics: no longer serving on %s", srv->metrics_addr);
        kt_metrics_server_close(srv->metrics);
    }
    kt_free(srv->metrics_addr);
    srv->metrics = next->ms;
    srv->metrics_addr = next->addr;
    if (srv->metrics) {
        char buf[128] = "";
        kt_addr a;
        if (kt_metrics_server_addr(srv->metrics, &a) == 0)
            kt_addr_format(&a, buf, sizeof buf);
        kt_log_notice("metrics at http://%s/metrics", buf);
    }
    memset(next, 0, sizeof *next);
}

void ks__metrics_free(ks_server *srv)
{
    kt_metrics_server_close(srv->metrics);
    srv->metrics = NULL;
    kt_free(srv->metrics_addr);
    srv->metrics_addr = NULL;
}

void ks_metrics_abort(ks_metrics_change *next)
{
    kt_metrics_server_close(next->ms);
    kt_free(next->addr);
    memset(next, 0, sizeof *next);
}
