/*
 * info.c - kettle-db's INFO sections, in Redis's format through the server
 * core (ks_info): server, clients, stats, delay, faults, memory, loop. The
 * delay section holds the reply-delay accuracy: the scheduled delays, the
 * actual ones (timer fire - service start, on the monotonic clock) and the
 * lateness (actual - scheduled). A few lines keep the names they had
 * before the core counted them (protocol_errors, closed_query_buffer, ...).
 */
#include "config.h"
#include <stdio.h>
#include <string.h>
#include "kdb.h"

#define U(x) ((unsigned long long)(x))

static void sec_server(ks_server *core, kt_buf *b)
{
    kdb_server *srv = core->data;
    char a[128] = "";
    kt_addr addr;
    if (ks_server_addr(core, 0, &addr) == 0)
        kt_addr_format(&addr, a, sizeof a);
    ks_info_server(core, b);
    ks_info_add(b, "kettle_db_version:%s\r\n", KT_VERSION_STRING);
    ks_info_add(b, "listen:%s\r\n", a);
    ks_info_add(b, "latency_model:%s\r\n", srv->lat.text);
    ks_info_add(b, "seed:%llu\r\n", U(srv->seed));
    ks_info_add(b, "workers:%lld\r\n", (long long)srv->cfg.workers);
    ks_info_add(b, "keyspace:%lld\r\n", (long long)srv->cfg.keyspace);
    ks_info_add(b, "max_delay_ms:%llu\r\n", U(srv->cfg.max_delay / 1000000ull));
    const char *pw = srv->cfg.srv.password;
    ks_info_add(b, "admin:%s\r\n", !srv->cfg.srv.admin ? "disabled" : pw && pw[0] ? "password" : "enabled");
}

static void sec_clients(ks_server *core, kt_buf *b)
{
    uint64_t frozen = 0;
    for (const ks_conn *c = core->head; c; c = c->next)
        frozen += (c->flags & KS_C_FROZEN) != 0;
    ks_info_clients(core, b);
    ks_info_add(b, "frozen_clients:%llu\r\n", U(frozen));
}

static void sec_stats(ks_server *core, kt_buf *b)
{
    kdb_server *srv = core->data;
    ks_info_stats(core, b);
    ks_info_add(b, "requests_served:%llu\r\n", U(srv->st.served));
    ks_info_add(b, "requests_in_service:%llu\r\n", U(srv->in_service));
    ks_info_add(b, "requests_queued:%llu\r\n", U(srv->nqueued));
    ks_info_add(b, "requests_stalled:%llu\r\n", U(srv->stalled));
    ks_info_add(b, "replies_sent:%llu\r\n", U(srv->st.replies));
    ks_info_add(b, "refused_connections:%llu\r\n", U(srv->st.refused));
    ks_info_add(b, "protocol_errors:%llu\r\n", U(core->st.err_protocol));
    ks_info_add(b, "closed_query_buffer:%llu\r\n", U(core->st.closed_query));
    ks_info_add(b, "closed_output_buffer:%llu\r\n", U(core->st.closed_output));
    ks_info_add(b, "closed_clients_memory:%llu\r\n", U(core->st.closed_memory));
    ks_info_add(b, "auth_failures:%llu\r\n", U(core->st.err_wrongpass));
}

static void hist_lines(kt_buf *b, const char *name, const kt_hist *h)
{
    ks_info_add(b, "%s_p50_us:%.1f\r\n", name, (double)kt_hist_percentile(h, 50) / 1e3);
    ks_info_add(b, "%s_p99_us:%.1f\r\n", name, (double)kt_hist_percentile(h, 99) / 1e3);
    ks_info_add(b, "%s_p999_us:%.1f\r\n", name, (double)kt_hist_percentile(h, 99.9) / 1e3);
    ks_info_add(b, "%s_max_us:%.1f\r\n", name, (double)kt_hist_max(h) / 1e3);
}

static void sec_delay(ks_server *core, kt_buf *b)
{
    kdb_server *srv = core->data;
    ks_info_add(b, "delay_samples:%llu\r\n", U(kt_hist_count(&srv->h_late)));
    hist_lines(b, "delay_scheduled", &srv->h_sched);
    hist_lines(b, "delay_actual", &srv->h_actual);
    hist_lines(b, "delay_lateness", &srv->h_late);
}

static void sec_faults(ks_server *core, kt_buf *b)
{
    kdb_server *srv = core->data;
    char d[200], active[1024] = "";
    size_t an = 0;
    for (int k = 0; k < KDB_F_COUNT; k++) {
        const kdb_fault *f = &srv->faults.f[k];
        char key[32];
        snprintf(key, sizeof key, "%s", kdb_fault_name((kdb_fault_kind)k));
        for (char *p = key; *p; p++)
            if (*p == '-')
                *p = '_';
        ks_info_add(b, "fault_%s_probability:%g\r\n", key, f->prob);
        ks_info_add(b, "fault_%s_count:%llu\r\n", key, U(srv->st.faults[k]));
        if (f->prob > 0 && an < sizeof active) {
            int w = snprintf(active + an, sizeof active - an, "%s%s", an ? "," : "",
                             kdb_fault_describe((kdb_fault_kind)k, f, d, sizeof d));
            if (w > 0)
                an += (size_t)w;
        }
    }
    ks_info_add(b, "refusing:%d\r\n", srv->refusing ? 1 : 0);
    ks_info_add(b, "faults_active:%s\r\n", active);
}

static void sec_memory(ks_server *core, kt_buf *b)
{
    kdb_server *srv = core->data;
    ks_info_memory(core, b);
    ks_info_add(b, "requests_allocated:%zu\r\n", srv->reqs_total);
    ks_info_add(b, "requests_free:%zu\r\n", srv->reqs_free);
    ks_info_add(b, "request_struct_bytes:%zu\r\n", sizeof(kdb_req));
}

static void sec_loop(ks_server *core, kt_buf *b)
{
    kt_loop_stats ls;
    kt_loop_get_stats(core->loop, &ls);
    ks_info_loop(core, b);
    ks_info_add(b, "loop_iterations:%llu\r\n", U(ls.iterations));
    ks_info_add(b, "loop_longest_iteration_us:%.1f\r\n", (double)ls.longest_iteration_ns / 1e3);
}

const ks_info_section kdb_info_sections[] = {
    { "server", "Server", sec_server },   { "clients", "Clients", sec_clients },
    { "stats", "Stats", sec_stats },      { "delay", "Delay", sec_delay },
    { "faults", "Faults", sec_faults },   { "memory", "Memory", sec_memory },
    { "loop", "Loop", sec_loop },         { NULL, NULL, NULL },
};
