/*
 * bench-backends.c - a PING server on libkettle, to compare the I/O
 * backends with everything else equal. It speaks just enough RESP for
 * redis-benchmark: PING (inline or multibulk) answers +PONG, CONFIG GET
 * answers an empty value, anything else an error. Replies of one read are
 * queued together and flushed once at the end of the iteration, as kettled
 * does. bench/bench-backends.py drives one server per backend and reads
 * their CPU time from /proc/PID/stat.
 *
 *   bench-backends [--io auto|epoll|io_uring|libevent] [--listen ADDR]
 *                  [--uring-buffers N] [--uring-entries N]
 *
 * Prints "listening on ADDR:PORT (io NAME)"; SIGTERM/SIGINT stop it.
 */
#include "config.h"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <kettle/kettle.h>

#define BK_MAX_ARGS   8
#define BK_MAX_INLINE 4096   /* an inline command longer than this is an error */
#define BK_MAX_BULK   65536

struct bk_arg {
    const char *p;
    size_t len;
};

/* Parse one command at p. Returns bytes used, 0 if incomplete, -1 on a
 * protocol error; fills argv (pointing into p) and *argc. */
static long bk_parse(const char *p, size_t len, struct bk_arg *argv, int *argc)
{
    const char *nl = memchr(p, '\n', len);
    if (nl == NULL)
        return len > BK_MAX_INLINE ? -1 : 0;
    *argc = 0;
    if (p[0] != '*') { /* inline: words separated by spaces */
        const char *e = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
        for (const char *q = p; q < e && *argc < BK_MAX_ARGS;) {
            while (q < e && *q == ' ')
                q++;
            const char *w = q;
            while (q < e && *q != ' ')
                q++;
            if (q > w)
                argv[(*argc)++] = (struct bk_arg){ w, (size_t)(q - w) };
        }
        return nl - p + 1;
    }
    long n = 0;
    for (const char *q = p + 1; *q != '\r' && *q != '\n'; q++) {
        if (*q < '0' || *q > '9' || n > BK_MAX_ARGS)
            return -1;
        n = n * 10 + (*q - '0');
    }
    if (n < 1 || n > BK_MAX_ARGS)
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
            if (*d < '0' || *d > '9' || blen > BK_MAX_BULK)
                return -1;
            blen = blen * 10 + (*d - '0');
        }
        q = l + 1;
        if (end - q < blen + 2)
            return 0;
        argv[(*argc)++] = (struct bk_arg){ q, (size_t)blen };
        q += blen + 2;
    }
    return q - p;
}

static bool bk_is(const struct bk_arg *a, const char *word)
{
    return a->len == strlen(word) && strncasecmp(a->p, word, a->len) == 0;
}

static size_t bk_read_cb(kt_stream *s, const char *data, size_t len, void *arg)
{
    (void)arg;
    size_t used = 0;
    while (used < len) {
        struct bk_arg argv[BK_MAX_ARGS];
        int argc;
        long n = bk_parse(data + used, len - used, argv, &argc);
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
        if (bk_is(&argv[0], "PING")) {
            kt_stream_write(s, "+PONG\r\n", 7);
        } else if (argc == 3 && bk_is(&argv[0], "CONFIG") && bk_is(&argv[1], "GET")) {
            char out[128];
            int olen = snprintf(out, sizeof(out), "*2\r\n$%zu\r\n%.*s\r\n$0\r\n\r\n", argv[2].len,
                                (int)(argv[2].len < 64 ? argv[2].len : 64), argv[2].p);
            kt_stream_write(s, out, (size_t)olen);
        } else {
            static const char err[] = "-ERR unknown command\r\n";
            kt_stream_write(s, err, sizeof(err) - 1);
        }
    }
    return used;
}

static void bk_eof_cb(kt_stream *s, void *arg)
{
    (void)arg;
    kt_stream_close(s, KT_CLOSE_FLUSH);
}

static void bk_error_cb(kt_stream *s, int err, void *arg)
{
    (void)err;
    (void)arg;
    kt_stream_close(s, KT_CLOSE_NOW);
}

static void bk_accept_cb(kt_listener *l, kt_stream *s, void *arg)
{
    (void)l;
    (void)arg;
    static const kt_stream_cbs cbs = { .on_read = bk_read_cb, .on_eof = bk_eof_cb,
                                       .on_error = bk_error_cb };
    kt_stream_set_cbs(s, &cbs, NULL);
    if (kt_stream_read_start(s) < 0)
        kt_stream_close(s, KT_CLOSE_NOW);
}

static void bk_signal_cb(kt_loop *loop, int signo, void *arg)
{
    (void)signo;
    (void)arg;
    kt_loop_stop(loop);
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0", *io = "auto";
    kt_loop_options opts = { 0 };
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen = argv[++i];
        } else if (strcmp(argv[i], "--io") == 0 && i + 1 < argc) {
            io = argv[++i];
        } else if (strcmp(argv[i], "--uring-buffers") == 0 && i + 1 < argc) {
            opts.uring_buffers = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--uring-entries") == 0 && i + 1 < argc) {
            opts.uring_entries = (unsigned)strtoul(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: %s [--io auto|epoll|io_uring|libevent] [--listen ADDR:PORT]"
                            " [--uring-buffers N] [--uring-entries N]\n", argv[0]);
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    kt_log_set_ident("bench-backends");
    if (kt_io_parse(io, &opts.io) < 0) {
        kt_log_error("--io %s: unknown I/O backend", io);
        return 2;
    }
    kt_loop *loop;
    int rc = kt_loop_new(&loop, &opts);
    if (rc < 0) {
        kt_log_error("cannot start the %s I/O backend: %s", io, strerror(-rc));
        return 1;
    }
    kt_addr addr;
    kt_listener *l = NULL;
    if ((rc = kt_addr_parse(listen, &addr)) < 0 ||
        (rc = kt_listen(loop, &addr, 0, bk_accept_cb, NULL, &l)) < 0 ||
        (rc = kt_listener_addr(l, &addr)) < 0) {
        kt_log_error("listen %s: %s", listen, strerror(-rc));
        kt_loop_free(loop);
        return 1;
    }
    kt_loop_signal(loop, SIGTERM, bk_signal_cb, NULL);
    kt_loop_signal(loop, SIGINT, bk_signal_cb, NULL);
    char buf[128];
    kt_log_notice("listening on %s (io %s)", kt_addr_format(&addr, buf, sizeof(buf)),
                  kt_loop_backend(loop));
    rc = kt_loop_run(loop, KT_RUN_DEFAULT);
    kt_listener_close(l);
    kt_loop_free(loop);
    return rc < 0 ? 1 : 0;
}
