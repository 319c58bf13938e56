/*
 * repl.c - kettle-cli without a command: a prompt with line editing and a
 * history file (libedit, when configure found it), or one command per line
 * from stdin when stdin is not a terminal.
 *
 * A lost connection is not fatal at the prompt: it shows "not connected>"
 * and the next command reconnects first.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <kettle/common.h>
#ifdef HAVE_LIBEDIT
#include <editline/readline.h>
#endif
#include "cli.h"
#include "split.h"

#define KC_HISTORY_MAX 1000 /* lines kept in the history file */

/* The history file: $KETTLE_HISTFILE (empty: none), else ~/.kettle_history. */
static char *history_path(void)
{
    const char *env = getenv("KETTLE_HISTFILE");
    if (env != NULL)
        return *env ? kt_strdup(env) : NULL;
    const char *home = getenv("HOME");
    if (home == NULL || *home == '\0')
        return NULL;
    size_t n = strlen(home) + sizeof("/.kettle_history");
    char *p = kt_malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/.kettle_history", home);
    return p;
}

/* Read one line (without its newline) into a kt_malloc'd string; NULL at
 * the end of input. */
static char *read_line(bool tty, const char *prompt)
{
#ifdef HAVE_LIBEDIT
    if (tty) {
        char *l = readline(prompt);
        if (l == NULL)
            return NULL;
        char *copy = kt_strdup(l);
        free(l); /* readline's memory is the C library's */
        return copy;
    }
#endif
    if (tty) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    char *copy = kt_strndup(line, (size_t)n);
    free(line);
    return copy;
}

int kc_repl(kc_conn *c, const kc_opts *o)
{
    bool tty = isatty(STDIN_FILENO);
    char *hist = tty ? history_path() : NULL;
    char prompt[320];
    int status = 0;

#ifdef HAVE_LIBEDIT
    if (hist != NULL) {
        stifle_history(KC_HISTORY_MAX);
        read_history(hist);
    }
#endif
    for (;;) {
        if (c->fd >= 0)
            snprintf(prompt, sizeof(prompt), "%s> ", c->name);
        else
            snprintf(prompt, sizeof(prompt), "not connected> ");
        char *line = read_line(tty, prompt);
        if (line == NULL)
            break;
        kt_args args;
        const char *why = NULL;
        int rc = kt_split(line, strlen(line), &args, &why);
        if (rc < 0) {
            fprintf(tty ? stdout : stderr, "Invalid argument(s): %s\n", why);
            status = 1;
        } else if (args.n > 0) {
            const char *cmd = args.v[0];
            if (strcasecmp(cmd, "quit") == 0 || strcasecmp(cmd, "exit") == 0) {
                kt_args_free(&args);
                kt_free(line);
                break;
            }
#ifdef HAVE_LIBEDIT
            /* passwords stay out of the history file */
            if (tty && strcasecmp(cmd, "auth") != 0) {
                add_history(line);
                if (hist != NULL)
                    write_history(hist);
            }
#endif
            if (c->fd < 0 && kc_open(c, o) < 0) {
                status = 1;
            } else if (kc_run(c, o, args.n, args.v, args.len, stdout, NULL) != KC_OK) {
                status = 1;
            }
        }
        kt_args_free(&args);
        kt_free(line);
    }
    kt_free(hist);
    /* at a terminal, a failed command is not the session's failure */
    return tty ? 0 : status;
}
