/*
 * info.c - INFO in Redis's format: "# Section" headers, "key:value" lines,
 * CRLF line ends. Sections: server, clients, memory, cpu, stats,
 * commandstats, backend, loop. No argument, "default", "all" or
 * "everything" give them all; unknown sections give nothing (as Redis).
 */
#include "config.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include "kd.h"

static void add(kt_buf *out, const char *fmt, ...) KT_PRINTF(2, 3);
static void add(kt_buf *out, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        (void)kt_buf_append(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

uint64_t kd_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, rss = 0;
    if (f == NULL)
        return 0;
    if (fscanf(f, "%llu %llu", &size, &rss) != 2)
        rss = 0;
    fclose(f);
    return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void human(char *buf, size_t size, uint64_t bytes)
{
    if (bytes >= (1ull << 30))
        snprintf(buf, size, "%.2fG", (double)bytes / (1ull << 30));
    else if (bytes >= (1ull << 20))
        snprintf(buf, size, "%.2fM", (double)bytes / (1ull << 20));
    else if (bytes >= 1024)
        snprintf(buf, size, "%.2fK", (double)bytes / 1024);
    else
        snprintf(buf, size, "%lluB", (unsigned long long)bytes);
}

static void sec_server(kd_server *srv, kt_buf *out)
{
    struct utsname u;
    uint64_t up = (kt_loop_now(srv->loop) - srv->started_ns) / KT_SEC(1);
    char addrs[512] = "";
    size_t n = 0;
    for (size_t i = 0; i < srv->nls && n < sizeof addrs - 1; i++) {
        kt_addr a;
        char s[128];
        if (kt_listener_addr(srv->ls[i], &a) == 0)
            n += (size_t)snprintf(addrs + n, sizeof addrs - n, "%s%s", n ? "," : "",
                                  kt_addr_format(&a, s, sizeof s));
    }
    if (uname(&u) < 0)
        memset(&u, 0, sizeof u);
    const char *fb = kt_loop_fallback_reason(srv->loop);
    add(out, "# Server\r\n");
    add(out, "kettle_version:%s\r\n", KT_VERSION_STRING);
    add(out, "server_name:kettled\r\n");
    add(out, "os:%s %s %s\r\n", u.sysname, u.release, u.machine);
    add(out, "arch_bits:%d\r\n", (int)(8 * sizeof(void *)));
    add(out, "io_backend:%s\r\n", kt_loop_backend(srv->loop));
    if (fb)
        add(out, "io_fallback_reason:%s\r\n", fb);
    add(out, "process_id:%ld\r\n", (long)getpid());
    add(out, "listening:%s\r\n", addrs);
    add(out, "uptime_in_seconds:%llu\r\n", (unsigned long long)up);
    add(out, "uptime_in_days:%llu\r\n", (unsigned long long)(up / 86400));
    add(out, "config_file:%s\r\n", srv->cfg.config ? srv->cfg.config : "");
    add(out, "database:%s%s\r\n", srv->embedded ? "embedded " : "",
        srv->embedded ? srv->embedded_addr : "external");
    add(out, "\r\n");
}

static void sec_clients(kd_server *srv, kt_buf *out)
{
    add(out, "# Clients\r\n");
    add(out, "connected_clients:%zu\r\n", srv->nclients);
    add(out, "maxclients:%lld\r\n", (long long)srv->cfg.maxclients);
    add(out, "blocked_clients:%zu\r\n", kd_clients_blocked(srv));
    add(out, "rejected_connections:%llu\r\n", (unsigned long long)srv->st.rejected);
    add(out, "total_connections_received:%llu\r\n", (unsigned long long)srv->st.connections);
    add(out, "draining:%d\r\n", srv->draining ? 1 : 0);
    add(out, "\r\n");
}

static void sec_memory(kd_server *srv, kt_buf *out)
{
    char h[32];
    uint64_t rss = kd_rss_bytes();
    (void)srv;
    human(h, sizeof h, rss);
    add(out, "# Memory\r\n");
    add(out, "used_memory_rss:%llu\r\n", (unsigned long long)rss);
    add(out, "used_memory_rss_human:%s\r\n", h);
    add(out, "\r\n");
}

static void sec_cpu(kd_server *srv, kt_buf *out)
{
    struct rusage ru;
    (void)srv;
    if (getrusage(RUSAGE_SELF, &ru) < 0)
        memset(&ru, 0, sizeof ru);
    add(out, "# CPU\r\n");
    add(out, "used_cpu_sys:%ld.%06ld\r\n", (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec);
    add(out, "used_cpu_user:%ld.%06ld\r\n", (long)ru.ru_utime.tv_sec, (long)ru.ru_utime.tv_usec);
    add(out, "\r\n");
}

static void sec_stats(kd_server *srv, kt_buf *out)
{
    const kd_stats *s = &srv->st;
    kd_pool_totals t;
    kd_pool_totals_get(srv->pool, &t);
    add(out, "# Stats\r\n");
    add(out, "total_connections_received:%llu\r\n", (unsigned long long)s->connections);
    add(out, "total_commands_processed:%llu\r\n", (unsigned long long)s->commands);
    for (size_t i = 0; i < kd_ncmds; i++)
        add(out, "cmd_%s:%llu\r\n", kd_cmds[i].name, (unsigned long long)kd_cmds[i].calls);
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
    add(out, "errors_protocol:%llu\r\n", (unsigned long long)s->err_protocol);
    add(out, "errors_unknown_command:%llu\r\n", (unsigned long long)s->err_unknown);
    add(out, "errors_arity:%llu\r\n", (unsigned long long)s->err_arity);
    add(out, "errors_auth:%llu\r\n", (unsigned long long)s->err_auth);
    add(out, "errors_other:%llu\r\n", (unsigned long long)s->err_other);
    add(out, "errors_backend:%llu\r\n", (unsigned long long)s->err_backend);
    add(out, "nil_values:%llu\r\n", (unsigned long long)s->nil_values);
    add(out, "clients_closed_idle:%llu\r\n", (unsigned long long)s->closed_idle);
    add(out, "clients_closed_output_limit:%llu\r\n", (unsigned long long)s->closed_output);
    add(out, "clients_closed_query_limit:%llu\r\n", (unsigned long long)s->closed_query);
    add(out, "clients_paused_reading:%llu\r\n", (unsigned long long)s->paused);
    add(out, "\r\n");
}

static void sec_commandstats(kd_server *srv, kt_buf *out)
{
    (void)srv;
    add(out, "# Commandstats\r\n");
    for (size_t i = 0; i < kd_ncmds; i++)
        if (kd_cmds[i].calls)
            add(out, "cmdstat_%s:calls=%llu\r\n", kd_cmds[i].name,
                (unsigned long long)kd_cmds[i].calls);
    add(out, "\r\n");
}

static void sec_backend(kd_server *srv, kt_buf *out)
{
    add(out, "# Backend\r\n");
    kd_pool_info(srv->pool, out);
    add(out, "\r\n");
}

static void sec_loop(kd_server *srv, kt_buf *out)
{
    kt_loop_stats ls;
    kt_loop_get_stats(srv->loop, &ls);
    add(out, "# Loop\r\n");
    add(out, "io_backend:%s\r\n", kt_loop_backend(srv->loop));
    add(out, "iterations:%llu\r\n", (unsigned long long)ls.iterations);
    add(out, "longest_iteration_us:%llu\r\n",
        (unsigned long long)(ls.longest_iteration_ns / KT_USEC(1)));
    add(out, "timers_pending:%llu\r\n", (unsigned long long)ls.timers_pending);
    add(out, "streams:%llu\r\n", (unsigned long long)ls.streams);
    add(out, "futures_live:%llu\r\n", (unsigned long long)ls.futures_live);
    add(out, "\r\n");
}

static const struct {
    const char *name;
    void (*fn)(kd_server *srv, kt_buf *out);
} sections[] = {
    { "server", sec_server },   { "clients", sec_clients },
    { "memory", sec_memory },   { "cpu", sec_cpu },
    { "stats", sec_stats },     { "commandstats", sec_commandstats },
    { "backend", sec_backend }, { "loop", sec_loop },
};
#define NSECTIONS (sizeof sections / sizeof sections[0])

static bool is(const kt_resp_arg *a, const char *s)
{
    return a->len == strlen(s) && strncasecmp(a->p, s, a->len) == 0;
}

void kd_info(kd_server *srv, const kt_resp_arg *want, size_t n, kt_buf *out)
{
    bool pick[NSECTIONS] = { false };
    bool all = n == 0;
    for (size_t i = 0; i < n; i++) {
        if (is(&want[i], "all") || is(&want[i], "default") || is(&want[i], "everything"))
            all = true;
        for (size_t k = 0; k < NSECTIONS; k++)
            if (is(&want[i], sections[k].name))
                pick[k] = true;
    }
    for (size_t k = 0; k < NSECTIONS; k++)
        if (all || pick[k])
            sections[k].fn(srv, out);
    /* Redis ends the text without the last empty line */
    if (out->len >= 2 && out->data[out->len - 2] == '\r')
        out->len -= 2;
}
