/*
 * server-lag.c - loop lag: how late the server's cron tick runs.
 *
 * The cron is a one-shot timer re-armed at every tick, KS_LAG_TICK ahead
 * of the loop time it was armed at. When it fires, the monotonic clock
 * (read afresh, not the loop's cached time, so that the dispatch before
 * the timers counts) minus that due time is how long the loop kept the
 * tick waiting: a callback that blocked, a burst of I/O that took a while,
 * or a process that did not get the CPU. Every client's request waited
 * as long. The backend's own wait granularity (a millisecond with epoll)
 * shows as a floor of about that much.
 *
 * Kept: the last value, a smoothed one (exponential, weight 1/8 per tick:
 * about a second), and the largest over the last 10 to 20 s (two 10 s
 * windows). INFO shows them as loop_lag_us and loop_lag_max_us; the
 * metrics as <daemon>_loop_lag_seconds and _loop_lag_max_seconds.
 */
#include "config.h"
#include <string.h>
#include "server-int.h"

#define LAG_WINDOW KT_SEC(10)

void ks__lag_start(ks_server *srv)
{
    ks_lag *l = &srv->lag;
    memset(l, 0, sizeof *l);
    l->window_start = kt_loop_now(srv->loop);
    l->due = l->window_start + KS_LAG_TICK;
    (void)kt_timer_start(&srv->cron, KS_LAG_TICK, 0);
}

bool ks__lag_tick(ks_server *srv)
{
    ks_lag *l = &srv->lag;
    uint64_t now = kt_clock_ns();
    uint64_t lag = now > l->due ? now - l->due : 0;
    l->last_ns = lag;
    /* the first tick sets the average; then 7/8 old, 1/8 new */
    l->avg_ns = l->ticks == 0 ? lag : l->avg_ns - l->avg_ns / 8 + lag / 8;
    uint64_t loop_now = kt_loop_now(srv->loop);
    if (loop_now >= l->window_start + LAG_WINDOW) {
        /* a window with no tick at all (the loop stalled past it) leaves
         * nothing to remember but this tick */
        l->max_ns[1] = loop_now >= l->window_start + 2 * LAG_WINDOW ? 0 : l->max_ns[0];
        l->max_ns[0] = 0;
        l->window_start = loop_now;
    }
    if (lag > l->max_ns[0])
        l->max_ns[0] = lag;
    l->ticks++;
    l->due = loop_now + KS_LAG_TICK;
    (void)kt_timer_start(&srv->cron, KS_LAG_TICK, 0);
    return l->ticks % KS_CRON_TICKS == 0;
}

uint64_t ks_lag_avg(const ks_server *srv)
{
    return srv->lag.avg_ns;
}

uint64_t ks_lag_max(const ks_server *srv)
{
    const ks_lag *l = &srv->lag;
    return l->max_ns[0] > l->max_ns[1] ? l->max_ns[0] : l->max_ns[1];
}
