/*
 * ping-server.h - a tiny RESP server on libkettle's public API, for
 * bench/bench-backends (the I/O backends compared with everything else
 * equal) and test-fallback's --serve mode. It speaks just enough RESP for
 * redis-benchmark and for a test asking which backend serves: PING
 * (inline or multibulk) answers +PONG, INFO its io_backend, CONFIG GET an
 * empty value, anything else an error. Replies of one read are queued
 * together and flushed once at the end of the iteration, as kettled does.
 *
 * ping_serve() logs "listening on ADDR:PORT (io NAME)" and runs until
 * SIGTERM or SIGINT; it returns the program's exit status.
 */
#ifndef KETTLE_TESTS_PING_SERVER_H
#define KETTLE_TESTS_PING_SERVER_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <kettle/kettle.h>

#define PS_MAX_ARGS   8
#define PS_MAX_INLINE 4096 /* an inline command longer than this is an error */
#define PS_MAX_BULK   65536

struct ps_arg {
    const char *p;
    size_t len;
};

/* Parse one command at p. Returns bytes used, 0 if incomplete, -1 on a
 * protocol error; fills argv (pointing into p) and *argc. */
static long ps_parse(const char *p, size_t len, struct ps_arg *argv, int *argc)
{
    const char *nl = memchr(p, '\n', len);
    if (nl == NULL)
        return len > PS_MAX_INLINE ? -1 : 0;
    *argc = 0;
    if (p[0] != '*') { /* inline: words separated by spaces */
        const char *e = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
        for (const char *q = p; q < e && *argc < PS_MAX_ARGS;) {
            while (q < e && *q == ' ')
                q++;
            const char *w = q;
            while (q < e && *q != ' ')
                q++;
            if (q > w)
                argv[(*argc)++] = (struct ps_arg){ w, (size_t)(q - w) };
        }
        return nl - p + 1;
    }
    long n = 0;
    for (const char *q = p + 1; *q != '\r' && *q != '\n'; q++) {
        if (*q < '0' || *q > '9' || n > PS_MAX_ARGS)
            return -1;
        n = n * 10 + (*q - '0');
    }
    if (n < 1 || n > PS_MAX_ARGS)
        return -1;
    const char *q = nl + 1, *end = p + len;
    for (long i = 0; i < n; i++) {
        const char *l = memchr(q, '\n', (size_t)(end - q));
        if (l == NULL)
            return 0;
        if (*q != '$')
            return -1;
        long blen = 0;
        for (const char *d = q + 1; *d != '\r' && *d != '\n'; d++) {
            if (*d < '0' || *d > '9' || blen > PS_MAX_BULK)
                return -1;
            blen = blen * 10 + (*d - '0');
        }
        q = l + 1;
        if (end - q < blen + 2)
            return 0;
        argv[(*argc)++] = (struct ps_arg){ q, (size_t)blen };
        q += blen + 2;
    }
    return q - p;
}

static bool ps_is(const struct ps_arg *a, const char *word)
{
    return a->len == strlen(word) && strncasecmp(a->p, word, a->len) == 0;
}

/* The answer to a command other than PING into out; its length. */
static int ps_answer(kt_stream *s, const struct ps_arg *argv, int argc, char *out, size_t cap)
{
    if (ps_is(&argv[0], "INFO")) {
        char body[128];
        int blen = snprintf(body, sizeof(body), "# Server\r\nio_backend:%s\r\n",
                            kt_loop_backend(kt_stream_loop(s)));
        return snprintf(out, cap, "$%d\r\n%s\r\n", blen, body);
    }
    if (argc == 3 && ps_is(&argv[0], "CONFIG") && ps_is(&argv[1], "GET"))
        return snprintf(out, cap, "*2\r\n$%zu\r\n%.*s\r\n$0\r\n\r\n", argv[2].len,
                        (int)(argv[2].len < 64 ? argv[2].len : 64), argv[2].p);
    return snprintf(out, cap, "-ERR unknown command '%.*s'\r\n",
                    (int)(argv[0].len < 64 ? argv[0].len : 64), argv[0].p);
}

static size_t ps_read_cb(kt_stream *s, const char *data, size_t len, void *arg)
{
    (void)arg;
    size_t used = 0;
    while (used < len) {
        struct ps_arg argv[PS_MAX_ARGS];
        int argc;
        long n = ps_parse(data + used, len - used, argv, &argc);
        if (n == 0)
            break;
        if (n < 0) {
            static const char err[] = "-ERR Protocol error\r\n";
            kt_stream_write(s, err, sizeof(err) - 1);
            kt_stream_close(s, KT_CLOSE_FLUSH);
            return len;
        }
        used += (size_t)n;
        if (argc == 0)
            continue;
        if (ps_is(&argv[0], "PING")) { /* what the benchmark sends: no formatting */
            kt_stream_write(s, "+PONG\r\n", 7);
            continue;
        }
        char out[256];
        int olen = ps_answer(s, argv, argc, out, sizeof(out));
        kt_stream_write(s, out, (size_t)olen);
    }
    return used;
}

/* The peer's FIN: what was queued is still sent. An error: closed at once. */
static void ps_eof_cb(kt_stream *s, void *arg)
{
    (void)arg;
    kt_stream_close(s, KT_CLOSE_FLUSH);
}

static void ps_error_cb(kt_stream *s, int err, void *arg)
{
    (void)arg;
    kt_log_info("a connection failed: %s", strerror(-err));
    kt_stream_close(s, KT_CLOSE_NOW);
}

static void ps_accept_cb(kt_listener *l, kt_stream *s, void *arg)
{
    static const kt_stream_cbs cbs = { .on_read = ps_read_cb, .on_eof = ps_eof_cb,
                                       .on_error = ps_error_cb };
    (void)l;
    kt_stream_set_cbs(s, &cbs, arg);
    if (kt_stream_read_start(s) < 0)
        kt_stream_close(s, KT_CLOSE_NOW);
}

static void ps_signal_cb(kt_loop *loop, int signo, void *arg)
{
    (void)signo;
    (void)arg;
    kt_loop_stop(loop);
}

/* Serve on listen with the I/O backend io (opts may carry more), logging
 * as ident; the exit status: 0, 1 on a failure, 2 on an unknown backend. */
static int ping_serve(const char *ident, const char *listen, const char *io, kt_loop_options *opts)
{
    kt_log_set_ident(ident);
    if (kt_io_parse(io, &opts->io) < 0) {
        kt_log_error("--io %s: unknown I/O backend", io);
        return 2;
    }
    kt_loop *loop;
    int rc = kt_loop_new(&loop, opts);
    if (rc < 0) {
        kt_log_error("cannot start the %s I/O backend: %s", io, strerror(-rc));
        return 1;
    }
    kt_addr addr;
    kt_listener *l = NULL;
    if ((rc = kt_addr_parse(listen, &addr)) < 0 ||
        (rc = kt_listen(loop, &addr, 0, ps_accept_cb, NULL, &l)) < 0 ||
        (rc = kt_listener_addr(l, &addr)) < 0) {
        kt_log_error("listen %s: %s", listen, strerror(-rc));
        if (l)
            kt_listener_close(l);
        kt_loop_free(loop);
        return 1;
    }
    kt_loop_signal(loop, SIGTERM, ps_signal_cb, NULL);
    kt_loop_signal(loop, SIGINT, ps_signal_cb, NULL);
    char buf[128];
    kt_log_notice("listening on %s (io %s)", kt_addr_format(&addr, buf, sizeof(buf)),
                  kt_loop_backend(loop));
    rc = kt_loop_run(loop, KT_RUN_DEFAULT);
    kt_listener_close(l);
    kt_loop_free(loop);
    return rc < 0 ? 1 : 0;
}

#endif
