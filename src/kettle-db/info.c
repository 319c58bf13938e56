/*
 * info.c - kettle-db's INFO, in Redis's format ("# Section", "key:value",
 * CRLF line ends). Sections: server, clients, stats, delay, faults,
 * memory, loop. The delay section holds the reply-delay accuracy: the
 * scheduled delays, the actual ones (timer fire - service start, on the
 * monotonic clock) and the lateness (actual - scheduled).
 */
#include "config.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include "kdb.h"

static void put(kt_buf *b, const char *fmt, ...) KT_PRINTF(2, 3);
static void put(kt_buf *b, const char *fmt, ...)
{
    va_list ap;
    char tmp[512];
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof tmp)
        n = sizeof tmp - 1;
    kt_buf_append(b, tmp, (size_t)n);
}

static bool want(const char *sec, size_t len, const char *name)
{
    if (sec == NULL)
        return true;
    if ((len == 3 && strncasecmp(sec, "all", 3) == 0) ||
        (len == 7 && strncasecmp(sec, "default", 7) == 0) ||
        (len == 10 && strncasecmp(sec, "everything", 10) == 0))
        return true;
    return strlen(name) == len && strncasecmp(sec, name, len) == 0;
}

static uint64_t rss_bytes(void)
{
    unsigned long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%lu %lu", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void hist_lines(kt_buf *b, const char *name, const kt_hist *h)
{
    put(b, "%s_p50_us:%.1f\r\n", name, (double)kt_hist_percentile(h, 50) / 1e3);
    put(b, "%s_p99_us:%.1f\r\n", name, (double)kt_hist_percentile(h, 99) / 1e3);
    put(b, "%s_p999_us:%.1f\r\n", name, (double)kt_hist_percentile(h, 99.9) / 1e3);
    put(b, "%s_max_us:%.1f\r\n", name, (double)kt_hist_max(h) / 1e3);
}

int kdb_info(kdb_server *srv, const char *sec, size_t seclen, char **out, size_t *outlen)
{
    kt_buf b = { 0 };
    uint64_t now = kt_loop_now(srv->loop);
    uint64_t up = now > srv->started ? (now - srv->started) / 1000000000ull : 0;
    bool first = true;
#define SECTION(title)                    \
    do {                                  \
        put(&b, "%s# %s\r\n", first ? "" : "\r\n", title); \
        first = false;                    \
    } while (0)

    if (want(sec, seclen, "server")) {
        char a[128] = "";
        if (srv->nls)
            kt_addr_format(&srv->ls[0].addr, a, sizeof a);
        SECTION("Server");
        put(&b, "kettle_db_version:%s\r\n", KT_VERSION_STRING);
        put(&b, "io_backend:%s\r\n", kt_loop_backend(srv->loop));
        put(&b, "process_id:%ld\r\n", (long)getpid());
        put(&b, "listen:%s\r\n", a);
        put(&b, "tcp_port:%s\r\n", strrchr(a, ':') ? strrchr(a, ':') + 1 : "0");
        put(&b, "uptime_in_seconds:%llu\r\n", (unsigned long long)up);
        put(&b, "uptime_in_days:%llu\r\n", (unsigned long long)(up / 86400));
        put(&b, "latency_model:%s\r\n", srv->lat.text);
        put(&b, "seed:%llu\r\n", (unsigned long long)srv->seed);
        put(&b, "workers:%lld\r\n", (long long)srv->cfg.workers);
        put(&b, "keyspace:%lld\r\n", (long long)srv->cfg.keyspace);
        put(&b, "max_delay_ms:%llu\r\n", (unsigned long long)(srv->cfg.max_delay / 1000000ull));
        put(&b, "admin:%s\r\n", !srv->cfg.admin ? "disabled"
                                 : srv->cfg.admin_password && srv->cfg.admin_password[0] ? "password"
                                                                                          : "enabled");
    }
    if (want(sec, seclen, "clients")) {
        uint64_t frozen = 0, paused = 0, owed = 0;
        for (kdb_conn *c = srv->conns; c; c = c->next) {
            frozen += (c->flags & KDB_CF_FROZEN) != 0;
            paused += (c->flags & (KDB_CF_PAUSED | KDB_CF_FROZEN)) == KDB_CF_PAUSED;
            owed += c->npending;
        }
        SECTION("Clients");
        put(&b, "connected_clients:%zu\r\n", srv->nconns);
        put(&b, "maxclients:%lld\r\n", (long long)srv->cfg.maxclients);
        put(&b, "rejected_connections:%llu\r\n", (unsigned long long)srv->st.rejected);
        put(&b, "frozen_clients:%llu\r\n", (unsigned long long)frozen);
        put(&b, "paused_clients:%llu\r\n", (unsigned long long)paused);
        put(&b, "replies_owed:%llu\r\n", (unsigned long long)owed);
    }
    if (want(sec, seclen, "stats")) {
        SECTION("Stats");
        put(&b, "total_connections_received:%llu\r\n", (unsigned long long)srv->st.connections);
        put(&b, "total_commands_processed:%llu\r\n", (unsigned long long)srv->st.commands);
        put(&b, "requests_served:%llu\r\n", (unsigned long long)srv->st.served);
        put(&b, "requests_in_service:%llu\r\n", (unsigned long long)srv->in_service);
        put(&b, "requests_queued:%llu\r\n", (unsigned long long)srv->nqueued);
        put(&b, "requests_stalled:%llu\r\n", (unsigned long long)srv->stalled);
        put(&b, "replies_sent:%llu\r\n", (unsigned long long)srv->st.replies);
        put(&b, "protocol_errors:%llu\r\n", (unsigned long long)srv->st.protocol_errors);
        put(&b, "closed_query_buffer:%llu\r\n", (unsigned long long)srv->st.closed_query_buffer);
        put(&b, "closed_output_buffer:%llu\r\n", (unsigned long long)srv->st.closed_output_buffer);
        put(&b, "refused_connections:%llu\r\n", (unsigned long long)srv->st.refused);
        put(&b, "auth_failures:%llu\r\n", (unsigned long long)srv->st.auth_failures);
    }
    if (want(sec, seclen, "delay")) {
        SECTION("Delay");
        put(&b, "delay_samples:%llu\r\n", (unsigned long long)kt_hist_count(&srv->h_late));
        hist_lines(&b, "delay_scheduled", &srv->h_sched);
        hist_lines(&b, "delay_actual", &srv->h_actual);
        hist_lines(&b, "delay_lateness", &srv->h_late);
    }
    if (want(sec, seclen, "faults")) {
        char d[200], active[1024] = "";
        size_t an = 0;
        SECTION("Faults");
        for (int k = 0; k < KDB_F_COUNT; k++) {
            const kdb_fault *f = &srv->faults.f[k];
            char key[32];
            snprintf(key, sizeof key, "%s", kdb_fault_name((kdb_fault_kind)k));
            for (char *p = key; *p; p++)
                if (*p == '-')
                    *p = '_';
            put(&b, "fault_%s_probability:%g\r\n", key, f->prob);
            put(&b, "fault_%s_count:%llu\r\n", key, (unsigned long long)srv->st.faults[k]);
            if (f->prob > 0 && an < sizeof active) {
                int w = snprintf(active + an, sizeof active - an, "%s%s", an ? "," : "",
                                 kdb_fault_describe((kdb_fault_kind)k, f, d, sizeof d));
                if (w > 0)
                    an += (size_t)w;
            }
        }
        put(&b, "refusing:%d\r\n", srv->refusing ? 1 : 0);
        put(&b, "faults_active:%s\r\n", active);
    }
    if (want(sec, seclen, "memory")) {
        SECTION("Memory");
        put(&b, "used_memory_rss:%llu\r\n", (unsigned long long)rss_bytes());
        put(&b, "requests_allocated:%zu\r\n", srv->reqs_total);
        put(&b, "requests_free:%zu\r\n", srv->reqs_free);
        put(&b, "request_struct_bytes:%zu\r\n", sizeof(kdb_req));
    }
    if (want(sec, seclen, "loop")) {
        kt_loop_stats ls;
        kt_loop_get_stats(srv->loop, &ls);
        SECTION("Loop");
        put(&b, "loop_iterations:%llu\r\n", (unsigned long long)ls.iterations);
        put(&b, "loop_longest_iteration_us:%.1f\r\n", (double)ls.longest_iteration_ns / 1e3);
        put(&b, "timers_pending:%llu\r\n", (unsigned long long)ls.timers_pending);
        put(&b, "streams:%llu\r\n", (unsigned long long)ls.streams);
    }
#undef SECTION
    if (b.data == NULL && kt_buf_reserve(&b, 1) == NULL)
        return -ENOMEM;
    *out = b.data;
    *outlen = b.len;
    return 0;
}
