/*
 * server-info.c - INFO in Redis's format ("# Section", "key:value", CRLF
 * line ends) over the daemon's sections, and the lines every server's
 * sections share, from the counters in ks_server.
 */
#include "config.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/utsname.h>
#include "server-int.h"

void ks_info_add(kt_buf *out, const char *fmt, ...)
{
    char line[2048]; /* a pool's line in kettled's INFO can be long */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        (void)kt_buf_append(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

uint64_t ks_rss_bytes(void)
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

void ks_info_server(ks_server *srv, kt_buf *out)
{
    struct utsname u;
    uint64_t up = (kt_loop_now(srv->loop) - srv->started_ns) / KT_SEC(1);
    char addrs[512] = "", port[16] = "0";
    size_t n = 0;
    for (size_t i = 0; i < srv->nls && n < sizeof addrs - 1; i++) {
        char s[128];
        kt_addr_format(&srv->ls[i].addr, s, sizeof s);
        n += (size_t)snprintf(addrs + n, sizeof addrs - n, "%s%s", n ? "," : "", s);
        const char *colon = strrchr(s, ':');
        if (i == 0 && colon && strncmp(s, "unix:", 5) != 0)
            snprintf(port, sizeof port, "%s", colon + 1);
    }
    if (uname(&u) < 0)
        memset(&u, 0, sizeof u);
    const char *fb = kt_loop_fallback_reason(srv->loop);
    ks_info_add(out, "server_name:%s\r\n", srv->d->name);
    ks_info_add(out, "kettle_version:%s\r\n", KT_VERSION_STRING);
    ks_info_add(out, "os:%s %s %s\r\n", u.sysname, u.release, u.machine);
    ks_info_add(out, "arch_bits:%d\r\n", (int)(8 * sizeof(void *)));
    ks_info_add(out, "io_backend:%s\r\n", kt_loop_backend(srv->loop));
    if (fb)
        ks_info_add(out, "io_fallback_reason:%s\r\n", fb);
    ks_info_add(out, "process_id:%ld\r\n", (long)getpid());
    ks_info_add(out, "listening:%s\r\n", addrs);
    ks_info_add(out, "tcp_port:%s\r\n", port);
    ks_info_add(out, "uptime_in_seconds:%llu\r\n", (unsigned long long)up);
    ks_info_add(out, "uptime_in_days:%llu\r\n", (unsigned long long)(up / 86400));
}

void ks_info_clients(ks_server *srv, kt_buf *out)
{
    uint64_t paused = 0, owed = 0;
    for (const ks_conn *c = srv->head; c; c = c->next) {
        paused += (c->flags & (KS_C_PAUSED | KS_C_FROZEN | KS_C_IDLE | KS_C_NOREAD | KS_C_YIELD)) ==
                  KS_C_PAUSED;
        owed += c->pending;
    }
    ks_info_add(out, "connected_clients:%zu\r\n", srv->nclients);
    ks_info_add(out, "maxclients:%lld\r\n", (long long)srv->sc->maxclients);
    ks_info_add(out, "blocked_clients:%zu\r\n", ks_server_blocked(srv));
    ks_info_add(out, "paused_clients:%llu\r\n", (unsigned long long)paused);
    ks_info_add(out, "replies_owed:%llu\r\n", (unsigned long long)owed);
    ks_info_add(out, "rejected_connections:%llu\r\n", (unsigned long long)srv->st.rejected);
    ks_info_add(out, "draining:%d\r\n", srv->state == KS_DRAINING ? 1 : 0);
}

void ks_info_memory(ks_server *srv, kt_buf *out)
{
    char h[32];
    uint64_t rss = ks_rss_bytes(), q, o, p;
    human(h, sizeof h, rss);
    ks_server_client_bytes(srv, &q, &o, &p);
    ks_info_add(out, "used_memory_rss:%llu\r\n", (unsigned long long)rss);
    ks_info_add(out, "used_memory_rss_human:%s\r\n", h);
    ks_info_add(out, "clients_query_bytes:%llu\r\n", (unsigned long long)q);
    ks_info_add(out, "clients_output_bytes:%llu\r\n", (unsigned long long)o);
    ks_info_add(out, "clients_pending_bytes:%llu\r\n", (unsigned long long)p);
    ks_info_add(out, "memory_trims:%llu\r\n", (unsigned long long)srv->st.trims);
}

void ks_info_stats(ks_server *srv, kt_buf *out)
{
    const ks_stats *s = &srv->st;
    ks_info_add(out, "total_connections_received:%llu\r\n", (unsigned long long)s->connections);
    ks_info_add(out, "total_commands_processed:%llu\r\n", (unsigned long long)s->commands);
    ks_info_add(out, "errors_protocol:%llu\r\n", (unsigned long long)s->err_protocol);
    ks_info_add(out, "errors_unknown_command:%llu\r\n", (unsigned long long)s->err_unknown);
    ks_info_add(out, "errors_arity:%llu\r\n", (unsigned long long)s->err_arity);
    ks_info_add(out, "errors_auth:%llu\r\n", (unsigned long long)(s->err_noauth + s->err_wrongpass));
    ks_info_add(out, "errors_other:%llu\r\n", (unsigned long long)s->err_other);
    ks_info_add(out, "clients_closed_idle:%llu\r\n", (unsigned long long)s->closed_idle);
    ks_info_add(out, "clients_closed_output_limit:%llu\r\n", (unsigned long long)s->closed_output);
    ks_info_add(out, "clients_closed_query_limit:%llu\r\n", (unsigned long long)s->closed_query);
    ks_info_add(out, "clients_closed_memory_limit:%llu\r\n", (unsigned long long)s->closed_memory);
    ks_info_add(out, "clients_paused_reading:%llu\r\n", (unsigned long long)s->paused);
    ks_info_add(out, "clients_yielded:%llu\r\n", (unsigned long long)s->yields);
}

void ks_info_calls(ks_server *srv, kt_buf *out)
{
    size_t n = ks_cmd_count(srv);
    for (size_t i = 0; i < n; i++)
        ks_info_add(out, "cmd_%s:%llu\r\n", ks_cmd_at(srv, i)->name,
                    (unsigned long long)srv->calls[i]);
}

void ks_info_commandstats(ks_server *srv, kt_buf *out)
{
    size_t n = ks_cmd_count(srv);
    for (size_t i = 0; i < n; i++)
        if (srv->calls[i])
            ks_info_add(out, "cmdstat_%s:calls=%llu\r\n", ks_cmd_at(srv, i)->name,
                        (unsigned long long)srv->calls[i]);
}

void ks_info_loop(ks_server *srv, kt_buf *out)
{
    kt_loop_stats ls;
    kt_loop_get_stats(srv->loop, &ls);
    ks_info_add(out, "io_backend:%s\r\n", kt_loop_backend(srv->loop));
    ks_info_add(out, "iterations:%llu\r\n", (unsigned long long)ls.iterations);
    ks_info_add(out, "longest_iteration_us:%llu\r\n",
                (unsigned long long)(ls.longest_iteration_ns / KT_USEC(1)));
    ks_info_add(out, "timers_pending:%llu\r\n", (unsigned long long)ls.timers_pending);
    ks_info_add(out, "streams:%llu\r\n", (unsigned long long)ls.streams);
    ks_info_add(out, "futures_live:%llu\r\n", (unsigned long long)ls.futures_live);
    /* io-batch-wait in effect (0 where the backend cannot) and the waits it made */
    ks_info_add(out, "io_batch_wait_us:%llu\r\n", (unsigned long long)(srv->batch_wait / KT_USEC(1)));
    ks_info_add(out, "batch_waits:%llu\r\n", (unsigned long long)ls.batch_waits);
    /* how late the 100 ms cron tick ran: smoothed, and the worst of the last 10-20 s */
    ks_info_add(out, "loop_lag_us:%llu\r\n", (unsigned long long)(ks_lag_avg(srv) / KT_USEC(1)));
    ks_info_add(out, "loop_lag_max_us:%llu\r\n", (unsigned long long)(ks_lag_max(srv) / KT_USEC(1)));
}

void ks_info(ks_conn *c, const kt_resp_arg *argv, size_t argc, const ks_info_section *secs)
{
    size_t nsec = 0;
    while (secs[nsec].name)
        nsec++;
    bool all = argc <= 1;
    for (size_t i = 1; i < argc; i++)
        if (ks_arg_is(&argv[i], "all") || ks_arg_is(&argv[i], "default") ||
            ks_arg_is(&argv[i], "everything"))
            all = true;
    kt_buf b = { 0 };
    for (size_t k = 0; k < nsec; k++) {
        bool pick = all;
        for (size_t i = 1; i < argc && !pick; i++)
            pick = ks_arg_is(&argv[i], secs[k].name);
        if (!pick)
            continue;
        ks_info_add(&b, "%s# %s\r\n", b.len ? "\r\n" : "", secs[k].title);
        secs[k].fn(c->srv, &b);
    }
    ks_reply_bulk(c, b.data, b.len);
    kt_buf_free(&b);
}
