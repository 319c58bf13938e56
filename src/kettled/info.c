/*
 * info.c - kettled's INFO sections, in Redis's format through the server
 * core (ks_info): server, clients, memory, cpu, stats, commandstats,
 * backend, loop. The lines every server shares come from the core; these
 * add the pool's and kettled's own counters.
 */
#include "config.h"
#include <string.h>
#include <sys/resource.h>
#include "kd.h"

#define add ks_info_add

static void sec_server(ks_server *core, kt_buf *out)
{
    kd_server *srv = core->data;
    ks_info_server(core, out);
    add(out, "config_file:%s\r\n", srv->cfg.config ? srv->cfg.config : "");
    add(out, "database:%s%s\r\n", srv->embedded ? "embedded " : "",
        srv->embedded ? srv->embedded_addr : "external");
}

static void sec_clients(ks_server *core, kt_buf *out)
{
    ks_info_clients(core, out);
    add(out, "total_connections_received:%llu\r\n", (unsigned long long)core->st.connections);
}

static void sec_cpu(ks_server *core, kt_buf *out)
{
    struct rusage ru;
    (void)core;
    if (getrusage(RUSAGE_SELF, &ru) < 0)
        memset(&ru, 0, sizeof ru);
    add(out, "used_cpu_sys:%ld.%06ld\r\n", (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec);
    add(out, "used_cpu_user:%ld.%06ld\r\n", (long)ru.ru_utime.tv_sec, (long)ru.ru_utime.tv_usec);
}

static void sec_stats(ks_server *core, kt_buf *out)
{
    kd_server *srv = core->data;
    const kd_stats *s = &srv->st;
    kd_pool_totals t;
    kd_pool_totals_get(srv->pool, &t);
    ks_info_stats(core, out);
    ks_info_calls(core, out);
    add(out, "fetches:%llu\r\n", (unsigned long long)t.fetches);
    add(out, "fetches_outstanding:%llu\r\n", (unsigned long long)t.outstanding);
    add(out, "fetches_queued:%llu\r\n", (unsigned long long)t.queued);
    add(out, "fetch_replies:%llu\r\n", (unsigned long long)t.replies);
    add(out, "fetch_nils:%llu\r\n", (unsigned long long)t.nils);
    add(out, "fetch_error_replies:%llu\r\n", (unsigned long long)t.errors);
    add(out, "fetch_failures:%llu\r\n", (unsigned long long)t.failed);
    add(out, "fetch_cancellations:%llu\r\n", (unsigned long long)t.cancelled);
    add(out, "backend_connection_failures:%llu\r\n", (unsigned long long)t.conn_failures);
    add(out, "backend_ejections:%llu\r\n", (unsigned long long)t.ejections);
    add(out, "request_timeouts:%llu\r\n", (unsigned long long)s->timeouts);
    add(out, "errors_backend:%llu\r\n", (unsigned long long)s->err_backend);
    add(out, "nil_values:%llu\r\n", (unsigned long long)s->nil_values);
    add(out, "reloads:%llu\r\n", (unsigned long long)s->reloads);
    add(out, "reload_failures:%llu\r\n", (unsigned long long)s->reload_failures);
}

static void sec_backend(ks_server *core, kt_buf *out)
{
    kd_pool_info(((kd_server *)core->data)->pool, out);
}

const ks_info_section kd_info_sections[] = {
    { "server", "Server", sec_server },
    { "clients", "Clients", sec_clients },
    { "memory", "Memory", ks_info_memory },
    { "cpu", "CPU", sec_cpu },
    { "stats", "Stats", sec_stats },
    { "commandstats", "Commandstats", ks_info_commandstats },
    { "backend", "Backend", sec_backend },
    { "loop", "Loop", ks_info_loop },
    { NULL, NULL, NULL },
};
