/*
 * metrics.c - kettled's own Prometheus families, after the server core's
 * (server-metrics.c: commands by name, errors, clients, loop lag,
 * process). From the counters INFO's "# Stats" and "# Backend" show:
 *
 *   kettled_request_duration_seconds{cmd}
 *                      fetch commands, from parsing to the reply being ready
 *   kettled_request_timeouts_total, kettled_reloads_total{result}
 *   kettled_fetches_total ... kettled_hedges_total
 *                      the pool's totals: fetches, failures, cancellations,
 *                      singleflight joins, hedges, retries, batches
 *   kettled_fetches_outstanding, kettled_fetches_queued
 *   kettled_backend_up{backend}, kettled_backend_state{backend,state}
 *   kettled_backend_*_total{backend}, kettled_backend_fetch_duration_seconds{backend}
 *                      per database server (replica), as INFO's backendN lines
 *
 * Only the servers of the configured backend lines are listed: a server a
 * reload removed drops out at once (its last fetches still count in the
 * totals).
 */
#include "config.h"
#include <string.h>
#include "kd.h"
#include "metrics.h"
#include "pool-int.h"

static const char *const kind_names[] = { "get", "mget", "mgetseq", "mgetany" };

void kd_metrics_init(kd_server *srv)
{
    for (size_t i = 0; i < KD_REQ_KINDS; i++)
        kt_hist_init(&srv->req_hist[i]);
}

void kd_metrics_request_done(kd_req *r)
{
    kd_server *srv = r->srv;
    if (r->kind >= 1 && r->kind <= KD_REQ_KINDS)
        kt_hist_record(&srv->req_hist[r->kind - 1], kt_loop_now(srv->loop) - r->started);
}

/* ---- per backend ------------------------------------------------------------------ */

typedef uint64_t (*rep_field)(const kd_replica *r);

#define FIELD(name, expr)                                                                     \
    static uint64_t f_##name(const kd_replica *r) { return (expr); }
FIELD(fetches, r->st.fetches)
FIELD(replies, r->st.replies)
FIELD(nils, r->st.nils)
FIELD(errors, r->st.errors)
FIELD(failed, r->st.failed)
FIELD(cancelled, r->st.cancelled)
FIELD(batches, r->st.batches)
FIELD(keys, r->st.keys)
FIELD(conn_failures, r->st.conn_failures)
FIELD(stalls, r->st.stalls)
FIELD(connects, r->st.connects)
FIELD(probes, r->st.probes)
FIELD(hedges, r->st.hedges)
FIELD(hedges_won, r->st.hedges_won)
FIELD(up, r->up)
FIELD(load, r->load)
FIELD(qlen, r->qlen)
FIELD(held, r->held)
FIELD(isup, r->state == KD_REP_LIVE && r->up > 0)

static const struct rep_family {
    const char *name;
    kt_metric_type type;
    rep_field get;
    const char *help;
} rep_families[] = {
    { "backend_up", KT_METRIC_GAUGE, f_isup,
      "1 while the database server takes fetches (not ejected, a connection up), else 0." },
    { "backend_connections", KT_METRIC_GAUGE, f_up, "Connections to the server that are up." },
    { "backend_outstanding", KT_METRIC_GAUGE, f_load,
      "Fetches queued for or sent to the server and not answered yet." },
    { "backend_queued", KT_METRIC_GAUGE, f_qlen, "Fetches waiting to be sent to the server." },
    { "backend_held_bytes", KT_METRIC_GAUGE, f_held,
      "Bytes held for the server's fetches (backend-queue-bytes counts them)." },
    { "backend_fetches_total", KT_METRIC_COUNTER, f_fetches, "Fetches sent to the server." },
    { "backend_replies_total", KT_METRIC_COUNTER, f_replies,
      "Replies read from the server (those nobody waited for any more included)." },
    { "backend_nil_replies_total", KT_METRIC_COUNTER, f_nils, "Nil replies (no such key)." },
    { "backend_error_replies_total", KT_METRIC_COUNTER, f_errors,
      "Error replies from the server." },
    { "backend_fetch_failures_total", KT_METRIC_COUNTER, f_failed,
      "Fetches to the server failed by kettled (connection lost, down, queue full)." },
    { "backend_fetch_cancellations_total", KT_METRIC_COUNTER, f_cancelled,
      "Fetches to the server cancelled by their requester." },
    { "backend_commands_total", KT_METRIC_COUNTER, f_batches,
      "Commands sent to the server (one GET, or one MGET for a batch)." },
    { "backend_keys_total", KT_METRIC_COUNTER, f_keys, "Keys in the commands sent." },
    { "backend_connection_failures_total", KT_METRIC_COUNTER, f_conn_failures,
      "Connections to the server that failed (refused, reset, closed, stalled)." },
    { "backend_stalls_total", KT_METRIC_COUNTER, f_stalls,
      "Connections failed because their oldest reply was late past the stall threshold." },
    { "backend_connects_total", KT_METRIC_COUNTER, f_connects, "Connections established." },
    { "backend_probes_total", KT_METRIC_COUNTER, f_probes, "Probes sent while ejected." },
    { "backend_hedges_total", KT_METRIC_COUNTER, f_hedges, "Hedged fetches sent to the server." },
    { "backend_hedges_won_total", KT_METRIC_COUNTER, f_hedges_won,
      "Hedged fetches the server answered first." },
};

/* Each configured group's replicas, in INFO's order. */
#define EACH_REPLICA(p, r)                                                                    \
    for (size_t gi_ = 0; gi_ < (p)->ngroups; gi_++)                                           \
        for (uint32_t ri_ = 0; ri_ < (p)->groups[gi_]->nreps &&                               \
                               ((r) = (p)->groups[gi_]->reps[ri_]) != NULL; ri_++)

static void backend_metrics(kd_pool *p, kt_metrics *m, const char *pre)
{
    kd_replica *r;
    for (size_t i = 0; i < sizeof rep_families / sizeof rep_families[0]; i++) {
        const struct rep_family *f = &rep_families[i];
        kt_metrics_family(m, pre, f->name, f->type, f->help);
        EACH_REPLICA(p, r) {
            kt_label l = { "backend", r->name };
            kt_metrics_sample_u64(m, &l, 1, f->get(r));
        }
    }
    static const char *const states[] = { "up", "connecting", "down", "ejected", "probing" };
    kt_metrics_family(m, pre, "backend_state", KT_METRIC_GAUGE,
                      "1 for the state the database server is in (INFO backend state=), else 0.");
    EACH_REPLICA(p, r) {
        const char *now = kd_replica_state_name(r);
        for (size_t k = 0; k < sizeof states / sizeof states[0]; k++) {
            kt_label l[] = { { "backend", r->name }, { "state", states[k] } };
            kt_metrics_sample(m, l, 2, strcmp(now, states[k]) == 0);
        }
    }
    kt_metrics_family(m, pre, "backend_ejections_total", KT_METRIC_COUNTER,
                      "Times the server was ejected, by cause: failures in a row, failure rate, "
                      "a failed probe.");
    EACH_REPLICA(p, r) {
        const char *why[] = { "consecutive", "rate", "probe" };
        uint64_t v[] = { r->st.ej_consecutive, r->st.ej_rate, r->st.ej_probe };
        for (size_t k = 0; k < 3; k++) {
            kt_label l[] = { { "backend", r->name }, { "cause", why[k] } };
            kt_metrics_sample_u64(m, l, 2, v[k]);
        }
    }
    kt_metrics_family(m, pre, "backend_fetch_duration_seconds", KT_METRIC_HISTOGRAM,
                      "Time from sending a command to the server to its reply.");
    EACH_REPLICA(p, r) {
        kt_label l = { "backend", r->name };
        kt_metrics_hist_ns(m, &l, 1, &r->hist);
    }
}

/* ---- kettled's families --------------------------------------------------------------- */

void kd_metrics(ks_server *core, kt_metrics *m, const char *pre)
{
    kd_server *srv = core->data;
    kd_pool_totals t;
    kd_pool_totals_get(srv->pool, &t);

    kt_metrics_family(m, pre, "request_duration_seconds", KT_METRIC_HISTOGRAM,
                      "Fetch commands, from being parsed to their reply being ready "
                      "(request-timeout included).");
    for (size_t i = 0; i < KD_REQ_KINDS; i++) {
        kt_label l = { "cmd", kind_names[i] };
        kt_metrics_hist_ns(m, &l, 1, &srv->req_hist[i]);
    }
    kt_metrics_counter(m, pre, "request_timeouts_total",
                       "Requests that reached request-timeout.", srv->st.timeouts);
    kt_metrics_counter(m, pre, "nil_values_total", "Values answered with nil (no such key).",
                       srv->st.nil_values);
    kt_metrics_counter(m, pre, "backend_error_values_total",
                       "Values answered with an error from or about a database server.",
                       srv->st.err_backend);
    kt_metrics_family(m, pre, "reloads_total", KT_METRIC_COUNTER,
                      "Configuration reloads (SIGHUP), by result.");
    kt_label ok = { "result", "ok" }, failed = { "result", "failed" };
    kt_metrics_sample_u64(m, &ok, 1, srv->st.reloads);
    kt_metrics_sample_u64(m, &failed, 1, srv->st.reload_failures);

    kt_metrics_counter(m, pre, "fetches_total", "Fetches asked of the pool.", t.fetches);
    kt_metrics_counter(m, pre, "fetch_failures_total",
                       "Fetches failed by the pool (connection lost, server down, queue full).",
                       t.failed);
    kt_metrics_counter(m, pre, "fetch_cancellations_total",
                       "Fetches cancelled by their requester (deadline, MGETANY, client gone).",
                       t.cancelled);
    kt_metrics_counter(m, pre, "singleflight_joins_total",
                       "Fetches that joined one of the same key already on its way.", t.joins);
    kt_metrics_counter(m, pre, "hedges_total",
                       "Fetches also sent to a second replica after hedge-after.", t.hedges);
    kt_metrics_counter(m, pre, "hedges_won_total", "Hedges answered before the first attempt.",
                       t.hedges_won);
    kt_metrics_counter(m, pre, "fetch_retries_total",
                       "Fetches retried on another replica after a connection failure.",
                       t.retries);
    kt_metrics_counter(m, pre, "backend_batches_total",
                       "Commands sent to the database servers (GET, or MGET for a batch).",
                       t.batches);
    kt_metrics_counter(m, pre, "backend_batched_keys_total", "Keys in those commands.",
                       t.keys_sent);
    kt_metrics_gauge(m, pre, "fetches_outstanding",
                     "Fetches queued or sent and not answered yet.", (double)t.outstanding);
    kt_metrics_gauge(m, pre, "fetches_queued", "Fetches waiting for room on a connection.",
                     (double)t.queued);
    kt_metrics_gauge(m, pre, "backends", "Database servers configured.",
                     (double)srv->pool->nreplicas);
    backend_metrics(srv->pool, m, pre);
}
