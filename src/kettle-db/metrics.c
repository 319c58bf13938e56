/*
 * metrics.c - kettle-db's own Prometheus families, after the server core's
 * (server-metrics.c: commands by name, errors, clients, loop lag,
 * process), from the counters INFO's "# Stats", "# Delay" and "# Faults"
 * show:
 *
 *   kettle_db_requests_served_total        keys answered after their delay
 *   kettle_db_requests_in_service, _requests_queued, _requests_stalled
 *   kettle_db_replies_total, kettle_db_refused_connections_total
 *   kettle_db_faults_total{fault}, kettle_db_fault_probability{fault}
 *   kettle_db_delay_scheduled_seconds, _delay_actual_seconds,
 *   kettle_db_delay_lateness_seconds      histograms of the reply delays
 */
#include "config.h"
#include "kdb.h"
#include "metrics.h"

void kdb_metrics(ks_server *core, kt_metrics *m, const char *pre)
{
    kdb_server *srv = core->data;
    kt_metrics_counter(m, pre, "requests_served_total",
                       "Keys answered after their delay (each key of an MGET counts).",
                       srv->st.served);
    kt_metrics_gauge(m, pre, "requests_in_service", "Keys whose delay is running now.",
                     (double)srv->in_service);
    kt_metrics_gauge(m, pre, "requests_queued",
                     "Keys waiting for a worker slot (workers) before their delay starts.",
                     (double)srv->nqueued);
    kt_metrics_gauge(m, pre, "requests_stalled",
                     "Requests the stall fault keeps from ever being answered.",
                     (double)srv->stalled);
    kt_metrics_counter(m, pre, "replies_total", "Replies sent.", srv->st.replies);
    kt_metrics_counter(m, pre, "refused_connections_total",
                       "Connections accepted then reset by the refuse fault.", srv->st.refused);

    kt_metrics_family(m, pre, "faults_total", KT_METRIC_COUNTER,
                      "Injected faults that fired, by name.");
    for (int k = 0; k < KDB_F_COUNT; k++) {
        kt_label l = { "fault", kdb_fault_name((kdb_fault_kind)k) };
        kt_metrics_sample_u64(m, &l, 1, srv->st.faults[k]);
    }
    kt_metrics_family(m, pre, "fault_probability", KT_METRIC_GAUGE,
                      "The probability each fault is set to now (0: off).");
    for (int k = 0; k < KDB_F_COUNT; k++) {
        kt_label l = { "fault", kdb_fault_name((kdb_fault_kind)k) };
        kt_metrics_sample(m, &l, 1, srv->faults.f[k].prob);
    }
    kt_metrics_gauge(m, pre, "refusing", "1 while the refuse fault keeps the listeners closed.",
                     srv->refusing);

    kt_metrics_family(m, pre, "delay_scheduled_seconds", KT_METRIC_HISTOGRAM,
                      "Reply delays drawn from the latency model.");
    kt_metrics_hist_ns(m, NULL, 0, &srv->h_sched);
    kt_metrics_family(m, pre, "delay_actual_seconds", KT_METRIC_HISTOGRAM,
                      "Reply delays as they ran: the timer's firing minus the service start.");
    kt_metrics_hist_ns(m, NULL, 0, &srv->h_actual);
    kt_metrics_family(m, pre, "delay_lateness_seconds", KT_METRIC_HISTOGRAM,
                      "How much later than scheduled each delay ended.");
    kt_metrics_hist_ns(m, NULL, 0, &srv->h_late);
}
