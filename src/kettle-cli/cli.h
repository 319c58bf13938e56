/*
 * cli.h - what kettle-cli's command runner (main.c) and its prompt
 * (repl.c) share.
 */
#ifndef KC_CLI_H
#define KC_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "conn.h"

typedef struct kc_opts {
    const char *host;      /* -h (default 127.0.0.1) */
    int port;              /* -p (default 7379) */
    const char *path;      /* -s: a unix socket instead of host:port */
    const char *user;      /* --user: AUTH user password */
    const char *password;  /* -a */
    bool raw;              /* --raw */
    uint64_t timeout_ns;   /* --timeout: connect and each reply; 0 = connect 10 s, replies unbounded */
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

#endif
