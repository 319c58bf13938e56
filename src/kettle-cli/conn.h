/*
 * conn.h - kettle-cli's connection: one blocking socket (TCP or unix),
 * a request written whole, a reply read until it parses.
 *
 * A one-shot client waits for exactly one thing at a time, so plain
 * blocking I/O with poll() for the time limits is the simplest correct
 * design; the reactor is kettle-bench's business.
 */
#ifndef KC_CONN_H
#define KC_CONN_H

#include <signal.h>
#include <stdint.h>
#include <kettle/resp.h>

typedef struct kc_conn {
    int fd;               /* -1 when not connected */
    kt_buf in;            /* received bytes not yet consumed */
    size_t consumed;      /* bytes of in taken by the last reply */
    uint64_t timeout_ns;  /* per reply; 0 = wait as long as it takes */
    char name[300];       /* "host:port" or the socket path, for messages */
    volatile sig_atomic_t *stop; /* when set and *stop, a signal ends a wait: -EINTR */
} kc_conn;

/* Connect to host:port (a name or numeric address, resolved with
 * getaddrinfo), or to the unix socket path when it is not NULL, within
 * connect_ns. 0 or negative errno; *why set to a static text when the
 * failure is not an errno of its own (name resolution). */
int kc_connect(kc_conn *c, const char *host, int port, const char *path,
               uint64_t connect_ns, const char **why);

/* Send a command: an array of argc bulk strings. 0 or negative errno. */
int kc_send(kc_conn *c, size_t argc, const kt_resp_arg *argv);

/* Read the next reply into r (nodes point into c->in until the next call).
 * 0; -ETIMEDOUT; -ECONNRESET when the server closed; -EPROTO with *why on
 * a malformed reply; -EINTR when c->stop was raised; another negative
 * errno. */
int kc_read_reply(kc_conn *c, kt_resp_reply *r, const char **why);

/* Close the socket (keeps the name); harmless when not connected. */
void kc_close(kc_conn *c);

/* Release everything. */
void kc_conn_free(kc_conn *c);

#endif
