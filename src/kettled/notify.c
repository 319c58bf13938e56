/*
 * notify.c - service-manager integration (see notify.h). With libsystemd:
 * sd_notify for READY/RELOADING/STOPPING/STATUS/WATCHDOG and sd_listen_fds
 * for socket activation; without it, nothing happens and no socket is
 * inherited. Everything the daemon tells its manager goes through here.
 *
 * The watchdog ping is a repeating timer on the daemon's own loop, not a
 * thread: when the loop stalls (a callback that never returns, a blocked
 * write to a full log pipe) the pings stop and the manager restarts us.
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif
#include "kd.h"
#include "notify.h"

#define KD_STATUS_EVERY KT_SEC(1) /* how often the STATUS text is recomputed */

#ifdef HAVE_SYSTEMD
static struct {
    kt_timer watchdog;    /* WATCHDOG=1 at half the manager's interval */
    kt_timer status;      /* STATUS= refresh, sent only when it changed */
    bool timers;          /* the two timers were initialised */
    char last[256];       /* the STATUS text last sent */
} kd__n;

static void watchdog_cb(kt_timer *t, void *arg)
{
    (void)t;
    (void)arg;
    (void)sd_notify(0, "WATCHDOG=1");
}

/* Backends by state, read from the same text INFO's Backend section shows
 * ("backendN:addr=...,state=up,..."), so STATUS and INFO never disagree. */
static void count_backends(const kd_server *srv, unsigned *up, unsigned *total, unsigned *ejected)
{
    kt_buf b = { 0 };
    *up = *total = *ejected = 0;
    if (srv->pool == NULL)
        return;
    kd_pool_info(srv->pool, &b);
    if (kt_buf_append(&b, "", 1) < 0) { /* NUL-terminate for strstr */
        kt_buf_free(&b);
        return;
    }
    for (const char *p = b.data; (p = strstr(p, ",state=")) != NULL;) {
        p += strlen(",state=");
        if (strncmp(p, "retiring", 8) == 0)
            continue;
        (*total)++;
        if (strncmp(p, "up,", 3) == 0)
            (*up)++;
        else if (strncmp(p, "ejected,", 8) == 0)
            (*ejected)++;
    }
    kt_buf_free(&b);
}

static void status_text(const kd_server *srv, char *buf, size_t len)
{
    unsigned up, total, ejected;
    size_t nclients = srv->core.nclients;
    if (srv->core.state != KS_RUNNING) {
        snprintf(buf, len, "STATUS=draining: %zu client%s left", nclients, nclients == 1 ? "" : "s");
        return;
    }
    count_backends(srv, &up, &total, &ejected);
    int n = snprintf(buf, len, "STATUS=%zu client%s (%zu awaiting the database); ", nclients,
                     nclients == 1 ? "" : "s", ks_server_blocked(&srv->core));
    if (n < 0 || (size_t)n >= len)
        return;
    if (srv->embedded)
        snprintf(buf + n, len - (size_t)n, "embedded database %s", up ? "up" : "down");
    else if (ejected)
        snprintf(buf + n, len - (size_t)n, "backends %u/%u up, %u ejected", up, total, ejected);
    else
        snprintf(buf + n, len - (size_t)n, "backends %u/%u up", up, total);
}

static void status_cb(kt_timer *t, void *arg)
{
    char text[sizeof kd__n.last];
    (void)t;
    status_text(arg, text, sizeof text);
    if (strcmp(text, kd__n.last) == 0)
        return;
    memcpy(kd__n.last, text, sizeof text);
    (void)sd_notify(0, text);
}
#endif /* HAVE_SYSTEMD */

void kd_notify_init(kd_server *srv)
{
#ifdef HAVE_SYSTEMD
    uint64_t usec = 0;
    kd__n.last[0] = '\0';
    if (getenv("NOTIFY_SOCKET") == NULL)
        return; /* no manager listening: no timers, no wake-ups */
    kt_timer_init(srv->loop, &kd__n.watchdog, watchdog_cb, NULL);
    kt_timer_init(srv->loop, &kd__n.status, status_cb, srv);
    kd__n.timers = true;
    /* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID, if set, is us */
    int r = sd_watchdog_enabled(0, &usec);
    if (r < 0) {
        kt_log_warning("watchdog: ignoring WATCHDOG_USEC: %s", strerror(-r));
    } else if (r > 0 && usec > 0) {
        uint64_t half = usec / 2 < 86400000000ull ? usec / 2 : 86400000000ull; /* <= 1 day */
        uint64_t every = half * 1000;
        if (kt_timer_start(&kd__n.watchdog, every, every) < 0)
            kt_log_error("watchdog: cannot start the ping timer: out of memory");
        else
            kt_log_info("watchdog: pinging every %llu ms", (unsigned long long)(every / KT_MSEC(1)));
    }
    (void)kt_timer_start(&kd__n.status, KD_STATUS_EVERY, KD_STATUS_EVERY);
#else
    (void)srv;
#endif
}

void kd_notify(const char *state)
{
#ifdef HAVE_SYSTEMD
    char buf[600];
    const char *p = strstr(state, "RELOADING=1");
    if (p != NULL && (p == state || p[-1] == '\n') && (p[11] == '\0' || p[11] == '\n')) {
        /* systemd 253 and later want the monotonic time of the reload
         * request next to RELOADING=1 (older ones ignore it) */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int n = snprintf(buf, sizeof buf, "%s\nMONOTONIC_USEC=%llu", state,
                         (unsigned long long)ts.tv_sec * 1000000ull +
                             (unsigned long long)ts.tv_nsec / 1000ull);
        if (n > 0 && (size_t)n < sizeof buf)
            state = buf;
    }
    (void)sd_notify(0, state);
    /* the manager now shows another STATUS: send ours again at the next tick */
    if (strncmp(state, "STATUS=", 7) == 0 || strstr(state, "\nSTATUS=") != NULL)
        kd__n.last[0] = '\0';
#else
    (void)state;
#endif
}

void kd_notifyf(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    kd_notify(buf);
}

void kd_notify_done(void)
{
#ifdef HAVE_SYSTEMD
    if (kd__n.timers) {
        kt_timer_stop(&kd__n.watchdog);
        kt_timer_stop(&kd__n.status);
        kd__n.timers = false;
    }
#endif
}

const char *kd_notify_support(void)
{
#ifdef HAVE_SYSTEMD
    return "systemd support: on (sd_notify, watchdog, socket activation)";
#else
    return "systemd support: off (built without libsystemd)";
#endif
}

int kd_listen_inherited(int **fds)
{
    *fds = NULL;
#ifdef HAVE_SYSTEMD
    char **names = NULL;
    /* unsets LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES and sets close-on-exec */
    int n = sd_listen_fds_with_names(1, &names);
    if (n <= 0) {
        if (n < 0)
            kt_log_error("socket activation: %s", strerror(-n));
        return n;
    }
    int *v = kt_calloc((size_t)n, sizeof *v);
    int r = v ? n : -ENOMEM;
    for (int i = 0; i < n; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        if (r > 0 && sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
            kt_log_error("socket activation: descriptor %d (%s) is not a listening stream socket "
                         "(the socket unit wants ListenStream=)", fd,
                         names && names[i] ? names[i] : "unnamed");
            r = -EINVAL;
        }
        if (v)
            v[i] = fd;
    }
    if (r > 0)
        kt_log_notice("socket activation: %d listening socket%s from the service manager "
                      "(the listen option is not used)", n, n == 1 ? "" : "s");
    else
        for (int i = 0; i < n; i++)
            close(SD_LISTEN_FDS_START + i);
    for (int i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    if (r < 0) {
        kt_free(v);
        return r;
    }
    *fds = v;
    return n;
#else
    return 0;
#endif
}
