/*
 * notify.h - kettled's life-cycle events for a service manager, and the
 * listening sockets it may hand over (socket activation), in one place.
 * Without systemd support built in these are no-ops.
 *
 * The contract with a `Type=notify` unit (systemd/kettled.service):
 *   READY=1            once every listener is accepting (server.c)
 *   STATUS=...         with READY, then whenever the picture changes
 *                      (checked each second): clients, backends up/total
 *   RELOADING=1        SIGHUP received; MONOTONIC_USEC= is added here
 *   READY=1            the reload is done (or failed: old config kept)
 *   STOPPING=1         the drain has begun
 *   WATCHDOG=1         every WATCHDOG_USEC/2, from a timer on the loop:
 *                      a stalled loop stops pinging and is restarted
 */
#ifndef KD_NOTIFY_H
#define KD_NOTIFY_H

#include <kettle/kettle.h>

struct kd_server;

/* Once the loop exists and the listeners accept: start the watchdog
 * pings (when the manager asked for them) and the STATUS refresh, which
 * reads srv's clients and backends. */
void kd_notify_init(struct kd_server *srv);
/* A state change in sd_notify(3) form: "READY=1", "RELOADING=1",
 * "STOPPING=1", "STATUS=text" (several separated by newlines). A
 * message holding RELOADING=1 gets MONOTONIC_USEC= appended. */
void kd_notify(const char *state);
/* The same with a printf format. */
void kd_notifyf(const char *fmt, ...) KT_PRINTF(1, 2);
/* Stop the timers kd_notify_init started. */
void kd_notify_done(void);
/* "systemd support: on (...)" or "systemd support: off", for --version. */
const char *kd_notify_support(void);

/* Listening sockets passed by the service manager: their number (0 when
 * none; each checked to be a listening stream socket, close-on-exec set)
 * with the descriptors in *fds (kt_malloc'd, the caller frees it), or a
 * negative errno (logged; the passed descriptors are closed then). */
int kd_listen_inherited(int **fds);

#endif
