/*
 * kettle-fetch.h - fetch(n) with libkettle: the asynchronous get_number(n)
 * that 06-kettle.c gathers with kt_all() and 08-work-stealing.c feeds to
 * its thread pool.
 *
 * What 03 built by hand is here the library's job. The poll() loop is a
 * kt_loop (io_uring or epoll underneath), which wakes only the streams
 * whose sockets are ready. The per-connection state machine is a kt_stream
 * plus a few callbacks; the result of a fetch is a kt_future, resolved by
 * the callback that parsed its reply. Nobody polls it: resolving it queues
 * its continuations, and the loop runs them in the same iteration (push,
 * where 04 pulled). Requests are encoded and replies parsed by libkettle's
 * RESP codec.
 *
 * A connection may carry several fetches at once (pipelining), as kettled's
 * connections to its databases do:
 *
 *     fetch(c, 7) ──GET 7──▶ ┌ conn ─────────────────────┐ ──▶ kettle-db
 *     fetch(c, 9) ──GET 9──▶ │ stream, FIFO: [7] → [9]   │
 *                            └───────────────────────────┘ ◀── 7, then 9
 *
 * RESP has no request ids: the database answers one connection's requests
 * in order, so the first reply belongs to the oldest fetch, the head of the
 * FIFO. It also means that a fetch waits for every reply ahead of it on
 * its connection (README.md, head-of-line blocking): free with equal
 * delays, costly with unequal ones. With one fetch per connection nothing
 * waits behind anything, at the price of a socket each.
 *
 * A connection closes once its FIFO is empty: the examples issue every
 * fetch before the loop runs, so by then its work is done.
 *
 * Like fetch.h, a header of static functions, included by one program at a
 * time.
 */
#ifndef EXAMPLES_KETTLE_FETCH_H
#define EXAMPLES_KETTLE_FETCH_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kettle/common.h>
#include <kettle/future.h>
#include <kettle/loop.h>
#include <kettle/resp.h>
#include <kettle/stream.h>

struct fetch;

/* A connection to the database and the fetches waiting on it. */
struct conn {
    kt_stream *stream;
    const kt_addr *addr;       /* the database (the caller's; outlives the connection) */
    struct fetch *head, *tail; /* requests sent, replies awaited, oldest first */
    kt_resp_reply reply;       /* the parser's output (memory reused) */
};

/* One fetch: a request on a connection and the future its reply settles. */
struct fetch {
    kt_future *fut;     /* the fetch's own reference, until it is settled */
    struct conn *conn;
    struct fetch *next; /* the next younger fetch on the connection */
    int n;              /* the number asked for */
};

static void conn_close(struct conn *c)
{
    kt_stream_close(c->stream, KT_CLOSE_NOW); /* on_close runs later */
}

/* Take the oldest fetch off c: its reply is the one that came. */
static struct fetch *conn_pop(struct conn *c)
{
    struct fetch *f = c->head;
    c->head = f->next;
    if (!c->head)
        c->tail = NULL;
    return f;
}

/* f is settled (or given up on): let its future go. */
static void fetch_release(struct fetch *f)
{
    kt_future_on_cancel(f->fut, NULL, NULL); /* f is going away */
    kt_future_unref(f->fut);
    free(f);
}

/* Fail every fetch waiting on c with "GET n from ADDR: why" (printf-like)
 * and close c. */
__attribute__((format(printf, 3, 4))) static void conn_fail(struct conn *c, int err,
                                                            const char *fmt, ...)
{
    char why[160], addr[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    kt_addr_format(c->addr, addr, sizeof addr);
    while (c->head) {
        struct fetch *f = conn_pop(c);
        kt_future_fail(f->fut, err, "GET %d from %s: %s", f->n, addr, why);
        fetch_release(f);
    }
    conn_close(c);
}

static void conn_on_connect(kt_stream *s, int status, void *arg)
{
    if (status < 0)
        conn_fail(arg, status, "connect: %s", strerror(-status));
    /* Connected: the requests queued meanwhile go out now, by themselves. */
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

/* Bytes arrived: settle the oldest fetch with each whole reply. Returns
 * what was used; the stream keeps the rest (a reply cut in two) and hands
 * it back, with more, next time. */
static size_t conn_on_read(kt_stream *s, const char *data, size_t len, void *arg)
{
    struct conn *c = arg;
    size_t used = 0;
    while (used < len) {
        const char *why = "bad reply";
        ssize_t r = kt_resp_parse_reply(data + used, len - used, NULL, &c->reply, &why);
        if (r == KT_RESP_INCOMPLETE)
            break; /* wait for more */
        if (r < 0 || !c->head) {
            conn_fail(c, -EPROTO, "%s", r < 0 ? why : "a reply nobody asked for");
            return len;
        }
        used += (size_t)r;
        struct fetch *f = conn_pop(c);
        const kt_resp_node *node = &c->reply.nodes[0];
        int64_t value = 0;
        if (node->type == KT_RESP_ERROR_REPLY)
            kt_future_fail(f->fut, -EPROTO, "GET %d: the database replied %.*s", f->n,
                           (int)node->len, node->p);
        else if (reply_number(node, &value) < 0 || value != f->n)
            kt_future_fail(f->fut, -EPROTO, "GET %d: the database answered something else",
                           f->n);
        else
            kt_future_resolve_i64(f->fut, value); /* continuations run later, from the loop */
        fetch_release(f);
    }
    if (!c->head)
        conn_close(c); /* nothing left to wait for */
    return used;
}

static void conn_on_eof(kt_stream *s, void *arg)
{
    conn_fail(arg, -ECONNRESET, "the database closed the connection");
}

static void conn_on_error(kt_stream *s, int err, void *arg)
{
    conn_fail(arg, err, "%s", strerror(-err));
}

static void conn_on_close(kt_stream *s, void *arg)
{
    struct conn *c = arg;
    while (c->head) { /* closed by a cancel: the rest are given up too */
        struct fetch *f = conn_pop(c);
        kt_future_fail(f->fut, -ECANCELED, "GET %d: its connection was closed", f->n);
        fetch_release(f);
    }
    kt_resp_reply_free(&c->reply);
    free(c);
}

static const kt_stream_cbs conn_cbs = {
    .on_read = conn_on_read,
    .on_eof = conn_on_eof,
    .on_error = conn_on_error,
    .on_connect = conn_on_connect,
    .on_close = conn_on_close,
};

/*
 * Open a connection to addr (which must outlive it); timeout_ns bounds the
 * connect. Fetches can be queued on it at once. 0 with *out set, or a
 * negative errno (-EMFILE when out of descriptors, -ENOMEM).
 */
static int conn_open(kt_loop *loop, const kt_addr *addr, uint64_t timeout_ns, struct conn **out)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->addr = addr;
    int rc = kt_stream_connect(loop, addr, timeout_ns, &conn_cbs, c, &c->stream);
    if (rc == 0)
        rc = kt_stream_read_start(c->stream); /* takes effect once connected */
    if (rc < 0) {
        if (c->stream)
            kt_stream_close(c->stream, KT_CLOSE_NOW); /* on_close frees c */
        else
            free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* The consumer cancelled (a kt_timeout fired): the request is out and
 * cannot be taken back, so drop the connection, and with it the fetches
 * behind this one. */
static void fetch_cancel_cb(kt_future *fut, void *arg)
{
    struct fetch *f = arg;
    conn_close(f->conn);
}

/*
 * Fetch n over c: queue `GET n` on the connection (sent at the end of the
 * loop iteration, or once connected) and return at once with a future
 * (the caller owns one reference) that resolves with n, or fails with a
 * message. NULL when out of memory.
 */
static kt_future *fetch(struct conn *c, int n)
{
    kt_future *fut = kt_future_new(kt_stream_loop(c->stream));
    struct fetch *f = malloc(sizeof *f);
    char num[16];
    int nlen = snprintf(num, sizeof num, "%d", n);
    kt_resp_arg argv[2] = { { "GET", 3 }, { num, (size_t)nlen } };
    kt_out out = kt_stream_out(c->stream);
    if (!fut || !f || kt_resp_command(&out, 2, argv) < 0) {
        if (fut)
            kt_future_unref(fut);
        free(f);
        return NULL;
    }
    *f = (struct fetch){ .fut = fut, .conn = c, .n = n };
    if (c->tail)
        c->tail->next = f;
    else
        c->head = f;
    c->tail = f;
    kt_future_ref(fut); /* the fetch's own reference */
    kt_future_on_cancel(fut, fetch_cancel_cb, f);
    return fut;
}

/* The start of 06's and 08's main(): the command line into *ex (exits 2
 * on bad usage), the database's address, the arrays of n futures and of
 * the connections, the report, the descriptor limit raised (one socket per
 * fetch; before the loop sizes its tables), and the loop. Exits 1 on
 * failure. */
static kt_loop *kettle_start(int argc, char **argv, struct example *ex, kt_addr *addr,
                             kt_future ***fs, struct conn ***conns, struct numbers *nums)
{
    example_init(argc, argv, ex, EX_WITH_CONNS);
    if (kt_addr_parse(ex->addr, addr) < 0) {
        fprintf(stderr, "bad address '%s': expected IP:PORT or localhost:PORT\n", ex->addr);
        exit(1);
    }
    *fs = calloc((size_t)ex->n, sizeof **fs);
    *conns = calloc((size_t)ex->conns, sizeof **conns);
    if (!*fs || !*conns || numbers_init(nums, ex) < 0)
        exit(1);
    fd_limit_raise();
    kt_loop *loop;
    int rc = kt_loop_new(&loop, NULL);
    if (rc < 0) {
        fprintf(stderr, "cannot create the event loop: %s\n", strerror(-rc));
        exit(1);
    }
    return loop;
}

/* The end of a program: with every future settled or cancelled (which
 * closes its connection) and every timer stopped, the run returns once the
 * closes have finished, and the loop is empty. kt_loop_close() answers
 * -EBUSY when it is not: something was left open. */
static void loop_finish(kt_loop *loop)
{
    int rc = kt_loop_run(loop, KT_RUN_DEFAULT);
    if (rc == 0)
        rc = kt_loop_close(loop);
    if (rc < 0) {
        example_error("the loop did not end empty: %s", strerror(-rc));
        kt_loop_free(loop); /* closes what is left */
    }
}

#endif /* EXAMPLES_KETTLE_FETCH_H */
