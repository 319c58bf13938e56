/*
 * db.h - the simulated slow database as an embeddable server.
 *
 * kettle-db's main.c is a thin shell around this API, and kettled starts the
 * same server inside its own process when no backend is configured. A server
 * lives on one kt_loop and answers RESP requests (GET n, MGET, PING, ECHO,
 * INFO, DBSIZE, QUIT, CONFIG, FAULT, AUTH) after simulated delays, with
 * fault injection. Everything runs on the loop's thread.
 */
#ifndef KDB_DB_H
#define KDB_DB_H

#include <kettle/kettle.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kdb_server kdb_server;

/*
 * Start a simulated database on loop, listening on listen_addr
 * ("127.0.0.1:0" for an ephemeral port; NULL for the `listen` option's
 * value, default 127.0.0.1:7380). opts: NULL-terminated name, value pairs
 * using the config-file option names (e.g. {"latency", "fixed 1ms", NULL}),
 * applied over the defaults; NULL for defaults. A "listen" pair adds a
 * listener. Errors are logged. *out is owned by the caller and released with
 * kdb_server_stop(). 0, -EINVAL (bad option), or another negative errno.
 */
int kdb_server_start(kt_loop *loop, const char *listen_addr, const char *const *opts,
                     kdb_server **out);

/* The bound address of the first listener (useful with port 0). 0 or -ENOENT. */
int kdb_server_addr(const kdb_server *s, kt_addr *out);

/* Close the listeners and every connection, drop pending requests, and free
 * the server. The closes finish in the loop: a kt_loop_run(KT_RUN_DEFAULT)
 * afterwards returns once they have (when nothing else is live), and
 * kt_loop_close() then succeeds. NULL is harmless. */
void kdb_server_stop(kdb_server *s);

#ifdef __cplusplus
}
#endif
#endif
