/*
 * 06-kettle.c - get_numbers() the way kettled does it: libkettle's reactor,
 * streams and futures, and kt_all() over three fetches.
 *
 * What 03-05 built by hand is now the library's job:
 *   - the poll() loop is a kt_loop (epoll or io_uring underneath), which
 *     wakes only the stream whose socket is ready, and keeps timers;
 *   - the per-fetch state machine is a kt_stream plus a few callbacks:
 *     connected -> queue the request; bytes arrived -> parse;
 *   - the result is a kt_future, resolved by the callback that parsed the
 *     reply. Nobody polls it: resolving it queues its continuations, and the
 *     loop runs them in the same iteration (push, not pull, unlike 04);
 *   - the combinators are the explanation's: kt_all() gathers the three,
 *     kt_timeout() bounds the whole thing and cancels what is still pending;
 *   - the request is encoded and the reply parsed by libkettle's RESP codec.
 *
 * fetch(loop, addr, n) below is the asynchronous get_number(n): it returns
 * at once with a future, and get_numbers() is kt_all() over three of them.
 * Each fetch uses its own connection: the database answers one connection's
 * requests in order, so three requests pipelined on one connection would
 * come back after 100, 300 and 600 ms (see README.md, head-of-line blocking).
 *
 * Usage: 06-kettle [HOST:PORT]   (default 127.0.0.1:7380)
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kettle/common.h>
#include <kettle/loop.h>
#include <kettle/future.h>
#include <kettle/resp.h>
#include <kettle/stream.h>

#define DEFAULT_ADDR "127.0.0.1:7380"
#define TIMEOUT KT_SEC(10) /* give up on a silent database after this long */
#define NFETCH 3

static uint64_t start_ns;

static long elapsed_ms(void)
{
    return (long)((kt_clock_ns() - start_ns) / 1000000u);
}

/* ---- fetch(n): a future for one number ------------------------------------ */

/* One fetch in flight: its connection and the future it will settle. The
 * stream's callbacks are this fetch's state machine; the library calls the
 * right one when something happens. */
struct fetch {
    kt_future *fut;       /* our reference; dropped in on_close */
    kt_stream *stream;
    int n;
    kt_resp_reply reply;  /* the parser's output (reused memory) */
    char addr[64];        /* for messages */
};

static void fetch_close(struct fetch *f)
{
    kt_stream_close(f->stream, KT_CLOSE_NOW); /* on_close runs later */
}

static void fetch_on_connect(kt_stream *s, int status, void *arg)
{
    struct fetch *f = arg;
    if (status < 0) {
        kt_future_fail(f->fut, status, "GET %d: connect to %s: %s", f->n, f->addr,
                       strerror(-status));
        fetch_close(f);
        return;
    }
    char num[16];
    int nlen = snprintf(num, sizeof num, "%d", f->n);
    kt_resp_arg argv[2] = { { "GET", 3 }, { num, (size_t)nlen } };
    /* Encoded straight into the stream's output queue. Queued, not sent:
     * the loop flushes every stream's output once, at the end of the
     * iteration. */
    kt_out out = kt_stream_out(s);
    int rc = kt_resp_command(&out, 2, argv);
    if (rc == 0)
        rc = kt_stream_read_start(s);
    if (rc < 0) {
        kt_future_fail(f->fut, rc, "GET %d: %s", f->n, strerror(-rc));
        fetch_close(f);
    }
}

/* The number a GET reply carries: a bulk string "7" or an integer :7.
 * 0, or -1 when the reply is something else. */
static int reply_number(const kt_resp_node *r, int64_t *value)
{
    if (r->type == KT_RESP_INTEGER) {
        *value = r->i;
        return 0;
    }
    if (r->type == KT_RESP_BULK && kt_parse_i64(r->p, r->len, value) == 0)
        return 0;
    return -1;
}

/* Bytes arrived. Return what was used; the stream keeps the rest and hands
 * it back, with more, next time. */
static size_t fetch_on_read(kt_stream *s, const char *data, size_t len, void *arg)
{
    struct fetch *f = arg;
    const char *why = "bad reply";
    ssize_t used = kt_resp_parse_reply(data, len, NULL, &f->reply, &why);
    if (used == KT_RESP_INCOMPLETE)
        return 0; /* wait for more; these bytes come back with the rest */

    int64_t value = 0;
    if (used < 0)
        kt_future_fail(f->fut, -EPROTO, "GET %d: %s", f->n, why);
    else if (f->reply.nodes[0].type == KT_RESP_ERROR_REPLY)
        kt_future_fail(f->fut, -EPROTO, "GET %d: the database replied %.*s", f->n,
                       (int)f->reply.nodes[0].len, f->reply.nodes[0].p);
    else if (reply_number(&f->reply.nodes[0], &value) < 0)
        kt_future_fail(f->fut, -EPROTO, "GET %d: the reply is not a number", f->n);
    else if (value != f->n)
        kt_future_fail(f->fut, -EPROTO, "GET %d: the database answered %lld", f->n,
                       (long long)value);
    else
        kt_future_resolve_i64(f->fut, value); /* continuations run later, from the loop */
    fetch_close(f);
    return len;
}

static void fetch_on_eof(kt_stream *s, void *arg)
{
    struct fetch *f = arg;
    kt_future_fail(f->fut, -ECONNRESET, "GET %d: %s closed the connection", f->n, f->addr);
    fetch_close(f);
}

static void fetch_on_error(kt_stream *s, int err, void *arg)
{
    struct fetch *f = arg;
    kt_future_fail(f->fut, err, "GET %d: %s: %s", f->n, f->addr, strerror(-err));
    fetch_close(f);
}

static void fetch_on_close(kt_stream *s, void *arg)
{
    struct fetch *f = arg;
    kt_future_on_cancel(f->fut, NULL, NULL); /* f is going away */
    kt_future_unref(f->fut);
    kt_resp_reply_free(&f->reply);
    free(f);
}

/* The consumer cancelled (kt_timeout fired): drop the connection. */
static void fetch_cancel_cb(kt_future *fut, void *arg)
{
    fetch_close(arg);
}

static const kt_stream_cbs fetch_cbs = {
    .on_read = fetch_on_read,
    .on_eof = fetch_on_eof,
    .on_error = fetch_on_error,
    .on_connect = fetch_on_connect,
    .on_close = fetch_on_close,
};

/*
 * Start fetching n from addr and return at once with a future (the caller
 * owns one reference) that resolves with n, or fails with a message.
 * NULL only when out of memory.
 */
static kt_future *fetch(kt_loop *loop, const kt_addr *addr, int n)
{
    kt_future *fut = kt_future_new(loop);
    if (!fut)
        return NULL;
    struct fetch *f = calloc(1, sizeof *f);
    if (!f) {
        kt_future_fail(fut, -ENOMEM, "GET %d: out of memory", n);
        return fut;
    }
    f->fut = fut;
    f->n = n;
    kt_addr_format(addr, f->addr, sizeof f->addr);
    int rc = kt_stream_connect(loop, addr, TIMEOUT, &fetch_cbs, f, &f->stream);
    if (rc < 0) { /* no callback will run: clean up here */
        kt_future_fail(fut, rc, "GET %d: connect to %s: %s", n, f->addr, strerror(-rc));
        free(f);
        return fut;
    }
    kt_future_ref(fut); /* the fetch's own reference, until on_close */
    kt_future_on_cancel(fut, fetch_cancel_cb, f);
    return fut;
}

/* ---- get_numbers() -------------------------------------------------------- */

/* Continuation of each fetch: print the number as it arrives. */
static void got_cb(kt_future *f, void *arg)
{
    if (kt_future_state_of(f) == KT_FUTURE_RESOLVED)
        printf("[%4ld ms] got %lld\n", elapsed_ms(), (long long)kt_future_i64(f));
}

/* Continuation of kt_timeout(kt_all(...)): everything has settled. */
static void all_done_cb(kt_future *f, void *arg)
{
    kt_loop_stop(kt_future_loop(f));
}

int main(int argc, char **argv)
{
    const char *spec = argc > 1 ? argv[1] : DEFAULT_ADDR;
    if (argc > 2 || spec[0] == '-') {
        fprintf(stderr, "usage: %s [HOST:PORT]   (default %s)\n", argv[0], DEFAULT_ADDR);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    start_ns = kt_clock_ns();

    kt_addr addr;
    if (kt_addr_parse(spec, &addr) < 0) {
        fprintf(stderr, "bad address '%s': expected IP:PORT or localhost:PORT\n", spec);
        return 1;
    }
    kt_loop *loop;
    int rc = kt_loop_new(&loop, NULL);
    if (rc < 0) {
        fprintf(stderr, "cannot create the event loop: %s\n", strerror(-rc));
        return 1;
    }

    /* get_numbers(): three fetches started at once, gathered by kt_all,
     * bounded by kt_timeout. Nothing has happened on the network yet when
     * these calls return; the loop does it all. */
    kt_future *fs[NFETCH] = { NULL };
    int ok = 1;
    for (int i = 0; i < NFETCH; i++) {
        fs[i] = fetch(loop, &addr, i + 1);
        ok = ok && fs[i] && kt_future_then(fs[i], got_cb, NULL) == 0;
    }
    kt_future *all = ok ? kt_all(loop, fs, NFETCH) : NULL;
    kt_future *bounded = all ? kt_timeout(all, TIMEOUT) : NULL;
    if (!bounded || kt_future_then(bounded, all_done_cb, NULL) < 0) {
        fprintf(stderr, "out of memory\n");
        ok = 0;
    } else {
        printf("[%4ld ms] started kt_all(fetch(1), fetch(2), fetch(3)) against %s on %s\n",
               elapsed_ms(), spec, kt_loop_backend(loop));
        rc = kt_loop_run(loop, KT_RUN_DEFAULT);
        if (rc < 0) {
            fprintf(stderr, "event loop failed: %s\n", strerror(-rc));
            ok = 0;
        }
    }

    /* Per-item results: kt_all never fails, each input says how it went. */
    if (bounded && kt_future_state_of(bounded) != KT_FUTURE_RESOLVED) {
        fprintf(stderr, "%s\n", kt_future_error(bounded) == -ETIMEDOUT
                                    ? "timed out waiting for the database"
                                    : kt_future_errmsg(bounded));
        ok = 0;
    }
    for (int i = 0; all && i < NFETCH; i++) {
        kt_future *item = kt_all_item(all, i);
        if (kt_future_state_of(item) == KT_FUTURE_FAILED ||
            (ok && kt_future_state_of(item) != KT_FUTURE_RESOLVED)) {
            fprintf(stderr, "%s\n", kt_future_errmsg(item) ? kt_future_errmsg(item)
                                                          : "fetch cancelled");
            ok = 0;
        }
    }
    if (ok)
        printf("total: %ld ms\n", elapsed_ms());

    /* Tear down: drop our references, cancel anything still running (only
     * after an error), and let the loop finish closing the streams. */
    if (bounded)
        kt_future_unref(bounded);
    if (all)
        kt_future_unref(all);
    for (int i = 0; i < NFETCH; i++) {
        if (fs[i]) {
            kt_future_cancel(fs[i]);
            kt_future_unref(fs[i]);
        }
    }
    kt_loop_stats st;
    for (int spins = 0; spins < 100; spins++) {
        kt_loop_get_stats(loop, &st);
        if (st.streams == 0 && st.futures_live == 0)
            break;
        kt_loop_run(loop, KT_RUN_NOWAIT);
    }
    kt_loop_free(loop);
    return ok ? 0 : 1;
}
