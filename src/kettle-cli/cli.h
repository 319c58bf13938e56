/*
 * cli.h - what kettle-cli's parts share: the command runner (main.c), the
 * prompt (repl.c), and the views that refresh until Ctrl-C: --stat
 * (stat.c) and --latency, --latency-history, --latency-dist (latency.c).
 */
#ifndef KC_CLI_H
#define KC_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "conn.h"

/* What kettle-cli does. */
enum {
    KC_MODE_COMMAND = 0,     /* a command, or the prompt */
    KC_MODE_STAT,            /* --stat */
    KC_MODE_LATENCY,         /* --latency */
    KC_MODE_LATENCY_HISTORY, /* --latency-history */
    KC_MODE_LATENCY_DIST,    /* --latency-dist */
};

typedef struct kc_opts {
    const char *host;      /* -h (default 127.0.0.1) */
    int port;              /* -p (default 7379) */
    const char *path;      /* -s: a unix socket instead of host:port */
    const char *user;      /* --user: AUTH user password */
    const char *password;  /* -a */
    bool raw;              /* --raw */
    uint64_t timeout_ns;   /* --timeout: connect and each reply; 0 = connect 10 s, replies unbounded */
    int mode;              /* KC_MODE_* */
    uint64_t interval_ns;  /* -i: a view's interval; 0 = the view's default */
} kc_opts;

/* Outcome of one command. */
enum { KC_OK = 0, KC_ERROR_REPLY = 1, KC_FAILED = 2 };

/* Connect and authenticate. Problems are printed to stderr. 0 or -1. */
int kc_open(kc_conn *c, const kc_opts *o);

/* Send argv, read the reply, print it: to out, or to err when the reply is
 * an error and err is not NULL. Connection problems are printed to stderr
 * as "Error: <reason>" and close c. Returns KC_OK, KC_ERROR_REPLY or
 * KC_FAILED. */
int kc_run(kc_conn *c, const kc_opts *o, size_t argc, char *const *argv, const size_t *lens,
           FILE *out, FILE *err);

/* Commands read from stdin: a prompt with line editing and history when
 * stdin is a terminal, else one command per line. Returns the exit status:
 * 0, or 1 when reading from a pipe and some command failed. */
int kc_repl(kc_conn *c, const kc_opts *o);

/* Set by SIGINT or SIGTERM once kc_catch_stop() has run: a view then
 * finishes its line and exits 0. */
extern volatile sig_atomic_t kc_stop;
void kc_catch_stop(void);
/* Sleep until the monotonic deadline (ns). 0, or -EINTR when stopped. */
int kc_pause_until(uint64_t deadline);

/* --stat: one line of the server's INFO figures per interval (default
 * 1 s), a header every 20 lines, until stopped. Returns the exit status. */
int kc_stat(kc_conn *c, const kc_opts *o);

/* --latency, --latency-history, --latency-dist (o->mode): time argv (PING
 * when argc is 0) again and again until stopped. Returns the exit status. */
int kc_latency(kc_conn *c, const kc_opts *o, size_t argc, char *const *argv,
               const size_t *lens);

#endif
