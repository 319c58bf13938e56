/*
 * main.c - kettle-cli: send one command to kettled (or any RESP server) and
 * print the reply as redis-cli does; with no command, read commands from a
 * prompt (or from stdin when it is not a terminal); or watch the server
 * with --stat or --latency* until Ctrl-C.
 *
 *   kettle-cli [-h HOST] [-p PORT] [-a PASSWORD] [--raw] COMMAND ARG...
 *   kettle-cli --stat | --latency | --latency-history | --latency-dist
 *              [-i SECONDS] [COMMAND ARG...]
 *
 * Exit status: 0, or 1 on an error reply or a connection failure (the
 * reason on stderr).
 */
#include "config.h"
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <kettle/common.h>
#include <kettle/resp.h>
#include "cli.h"
#include "docs.h"
#include "format.h"
#include "opt.h"

static void usage(FILE *f)
{
    fprintf(f,
        "Usage: kettle-cli [OPTIONS] [COMMAND [ARG...]]\n"
        "Send COMMAND to a kettle (or any RESP) server and print the reply as\n"
        "redis-cli does. With no command, read commands from a prompt with line\n"
        "editing, history (~/.kettle_history, or $KETTLE_HISTFILE), Tab completion\n"
        "and \"help\", or one per line from stdin when it is not a terminal.\n"
        "\"help\" lists the server's commands, \"help COMMAND\" shows one.\n"
        "\n"
        "  -h HOST            server host name or address (default 127.0.0.1)\n"
        "  -p PORT            server port (default 7379)\n"
        "  -s SOCKET          connect to a unix socket instead\n"
        "  -a PASSWORD        send AUTH PASSWORD first\n"
        "      --user USER    send AUTH USER PASSWORD instead\n"
        "      --raw          print replies raw: strings as they are, one per line\n"
        "      --no-raw       print the standard form (the default)\n"
        "      --timeout D    limit for connecting and for each reply, e.g. 2s, 500ms\n"
        "                     (default: 10 s to connect, replies unbounded)\n"
        "\n"
        "Views that refresh until Ctrl-C:\n"
        "      --stat         a line of the server's figures per interval (kettled:\n"
        "                     requests, clients, fetches, failures, backends ...)\n"
        "      --latency      round trips of PING (or of COMMAND ARG...): min, max,\n"
        "                     avg in ms and the number of samples\n"
        "      --latency-history  the same, a new line per interval (default 15 s)\n"
        "      --latency-dist     a line per interval: where the round trips fell\n"
        "  -i SECONDS         the interval of a view (default 1; 15 for history)\n"
        "      --help         this text\n"
        "      --version      the version\n"
        "\n"
        "Unlike redis-cli, the output form does not change when stdout is not a\n"
        "terminal, and an error reply makes the exit status 1 (the error goes to\n"
        "stderr).\n");
}

int kc_open(kc_conn *c, const kc_opts *o)
{
    const char *why = NULL;
    uint64_t cto = o->timeout_ns ? o->timeout_ns : KT_SEC(10);
    int rc = kc_connect(c, o->host, o->port, o->path, cto, &why);
    if (rc < 0) {
        fprintf(stderr, "Could not connect to %s: %s\n", c->name, why ? why : strerror(-rc));
        return -1;
    }
    c->timeout_ns = o->timeout_ns;
    if (o->password == NULL)
        return 0;

    char *argv[3] = { "AUTH", (char *)o->user, (char *)o->password };
    size_t lens[3] = { 4, 0, strlen(o->password) };
    size_t argc = 2;
    if (o->user != NULL) {
        lens[1] = strlen(o->user);
        argc = 3;
    } else {
        argv[1] = argv[2];
        lens[1] = lens[2];
    }
    kt_resp_arg args[3];
    for (size_t i = 0; i < argc; i++)
        args[i] = (kt_resp_arg){ argv[i], lens[i] };
    kt_resp_reply r = { 0 };
    rc = kc_send(c, argc, args);
    if (rc == 0)
        rc = kc_read_reply(c, &r, &why);
    if (rc < 0) {
        fprintf(stderr, "AUTH failed: %s\n", rc == -EPROTO && why ? why : strerror(-rc));
    } else if (r.nodes[0].type == KT_RESP_ERROR_REPLY) {
        fprintf(stderr, "AUTH failed: %.*s\n", (int)r.nodes[0].len, r.nodes[0].p);
        rc = -EACCES;
    }
    kt_resp_reply_free(&r);
    if (rc < 0) {
        kc_close(c);
        return -1;
    }
    return 0;
}

/* The text of a failure while talking to the server. */
static const char *failure(int rc, const char *why)
{
    if (rc == -ECONNRESET)
        return "Server closed the connection";
    if (rc == -ETIMEDOUT)
        return "timed out waiting for the reply";
    if (rc == -EPROTO)
        return why ? why : "protocol error";
    return strerror(-rc);
}

int kc_run(kc_conn *c, const kc_opts *o, size_t argc, char *const *argv, const size_t *lens,
           FILE *out, FILE *err)
{
    kt_resp_arg stack[16], *args = stack;
    kt_resp_reply r = { 0 };
    kt_buf text = { 0 };
    const char *why = NULL;
    int rc, result = KC_FAILED;

    if (argc > 16 && (args = kt_calloc(argc, sizeof(*args))) == NULL) {
        fprintf(stderr, "Error: out of memory\n");
        return KC_FAILED;
    }
    for (size_t i = 0; i < argc; i++)
        args[i] = (kt_resp_arg){ argv[i], lens[i] };
    rc = kc_send(c, argc, args);
    if (rc == 0)
        rc = kc_read_reply(c, &r, &why);
    if (rc < 0) {
        fprintf(stderr, "Error: %s\n", failure(rc, why));
        kc_close(c);
        goto out;
    }
    /* a text blob prints as its bytes in both forms, as redis-cli prints it */
    int form = kc_text_command(argc, argv) ? KC_FORM_TEXT : o->raw ? KC_FORM_RAW : KC_FORM_STANDARD;
    if (kc_format_reply(&text, &r, form) < 0) {
        fprintf(stderr, "Error: out of memory\n");
        goto out;
    }
    result = r.nodes[0].type == KT_RESP_ERROR_REPLY ? KC_ERROR_REPLY : KC_OK;
    FILE *to = result == KC_ERROR_REPLY && err != NULL ? err : out;
    fwrite(text.data, 1, text.len, to);
    fflush(to);
out:
    if (args != stack)
        kt_free(args);
    kt_buf_free(&text);
    kt_resp_reply_free(&r);
    return result;
}

/* `kettle-cli help [COMMAND]`: the server's COMMAND DOCS, as at the prompt. */
static int one_shot_help(kc_conn *c, const kc_opts *o, size_t argc, char *const *argv)
{
    kc_docs d = { 0 };
    const char *why = NULL;
    if (kc_open(c, o) < 0)
        return 1;
    int rc = kc_docs_load(&d, c, &why);
    if (rc < 0)
        fprintf(stderr, "Error: %s\n", failure(rc, why));
    else
        rc = kc_help(&d, stdout, argc, argv);
    kc_docs_free(&d);
    return rc == 0 ? 0 : 1;
}

/* --stat and --latency*: the server may be down at first; the views wait
 * for it. */
static int run_view(kc_conn *c, const kc_opts *o, int argc, char **argv)
{
    size_t n = (size_t)argc;
    size_t *lens = kt_calloc(n ? n : 1, sizeof(*lens));
    if (lens == NULL)
        return 1;
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(argv[i]);
    kc_open(c, o);
    int status = o->mode == KC_MODE_STAT ? kc_stat(c, o) : kc_latency(c, o, n, argv, lens);
    kt_free(lens);
    return status;
}

int main(int argc, char **argv)
{
    enum { OPT_HELP = 256, OPT_VERSION, OPT_RAW, OPT_NORAW, OPT_TIMEOUT, OPT_USER, OPT_STAT,
           OPT_LATENCY, OPT_LATENCY_HISTORY, OPT_LATENCY_DIST };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, OPT_HELP },
        { "version", no_argument, NULL, OPT_VERSION },
        { "raw", no_argument, NULL, OPT_RAW },
        { "no-raw", no_argument, NULL, OPT_NORAW },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "user", required_argument, NULL, OPT_USER },
        { "stat", no_argument, NULL, OPT_STAT },
        { "latency", no_argument, NULL, OPT_LATENCY },
        { "latency-history", no_argument, NULL, OPT_LATENCY_HISTORY },
        { "latency-dist", no_argument, NULL, OPT_LATENCY_DIST },
        { "host", required_argument, NULL, 'h' },
        { "port", required_argument, NULL, 'p' },
        { "socket", required_argument, NULL, 's' },
        { "pass", required_argument, NULL, 'a' },
        { NULL, 0, NULL, 0 },
    };
    kc_opts o = { .host = "127.0.0.1", .port = 7379 };
    int opt;
    int64_t v;

    signal(SIGPIPE, SIG_IGN);
    /* '+': options end at the command, so "SET k -1" keeps its -1 */
    while ((opt = getopt_long(argc, argv, "+h:p:s:a:i:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            o.host = optarg;
            break;
        case 'p':
            if (kt_parse_i64(optarg, strlen(optarg), &v) < 0 || v < 1 || v > 65535) {
                fprintf(stderr, "kettle-cli: invalid port '%s'\n", optarg);
                return 2;
            }
            o.port = (int)v;
            break;
        case 's':
            o.path = optarg;
            break;
        case 'a':
            o.password = optarg;
            break;
        case OPT_USER:
            o.user = optarg;
            break;
        case OPT_RAW:
            o.raw = true;
            break;
        case OPT_NORAW:
            o.raw = false;
            break;
        case OPT_TIMEOUT:
            if (kt_parse_duration(optarg, KT_SEC(1), &o.timeout_ns) < 0) {
                fprintf(stderr, "kettle-cli: invalid --timeout '%s' (e.g. 2s, 500ms)\n", optarg);
                return 2;
            }
            break;
        case OPT_STAT:
            o.mode = KC_MODE_STAT;
            break;
        case OPT_LATENCY:
            o.mode = KC_MODE_LATENCY;
            break;
        case OPT_LATENCY_HISTORY:
            o.mode = KC_MODE_LATENCY_HISTORY;
            break;
        case OPT_LATENCY_DIST:
            o.mode = KC_MODE_LATENCY_DIST;
            break;
        case 'i': {
            double sec;
            if (kt_opt_parse_double(optarg, &sec) < 0 || !(sec >= 0.01 && sec <= 86400)) {
                fprintf(stderr, "kettle-cli: invalid -i '%s' (seconds, e.g. 1, 0.5)\n", optarg);
                return 2;
            }
            o.interval_ns = (uint64_t)(sec * 1e9);
            break;
        }
        case OPT_HELP:
            usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("kettle-cli %s\n", KT_VERSION_STRING);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (o.user != NULL && o.password == NULL) {
        fprintf(stderr, "kettle-cli: --user needs -a PASSWORD\n");
        return 2;
    }

    kc_conn c = { .fd = -1 };
    int status;
    if (o.mode == KC_MODE_STAT && optind < argc) {
        fprintf(stderr, "kettle-cli: --stat takes no command\n");
        return 2;
    }
    if (o.mode != KC_MODE_COMMAND) {
        status = run_view(&c, &o, argc - optind, argv + optind);
    } else if (optind < argc && (strcasecmp(argv[optind], "help") == 0 || strcmp(argv[optind], "?") == 0)) {
        status = one_shot_help(&c, &o, (size_t)(argc - optind - 1), argv + optind + 1);
    } else if (optind < argc) {
        size_t n = (size_t)(argc - optind);
        size_t *lens = kt_calloc(n, sizeof(*lens));
        if (lens == NULL) {
            fprintf(stderr, "kettle-cli: out of memory\n");
            return 1;
        }
        for (size_t i = 0; i < n; i++)
            lens[i] = strlen(argv[optind + (int)i]);
        status = 1;
        if (kc_open(&c, &o) == 0)
            status = kc_run(&c, &o, n, argv + optind, lens, stdout, stderr) == KC_OK ? 0 : 1;
        kt_free(lens);
    } else {
        /* the prompt reconnects by itself: a server down at start is not fatal there */
        if (kc_open(&c, &o) < 0 && !isatty(STDIN_FILENO)) {
            kc_conn_free(&c);
            return 1;
        }
        status = kc_repl(&c, &o);
    }
    kc_conn_free(&c);
    return status;
}
