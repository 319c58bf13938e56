/*
 * test-server.c - the RESP server core (src/common/server.h) in-process,
 * with a small daemon of its own: DEFER tag [bytes] leaves a reply the test
 * settles when it chooses (holding bytes toward max-pending-bytes), ADMIN
 * needs the admin password. A client is one end of a socketpair handed to
 * the server as a listener would hand it.
 *
 * Checked: an immediate reply goes straight out, or waits in order behind
 * a deferred one; the FIFO's order; backpressure on max-pending and on
 * max-pending-bytes (one larger request still served alone); parked
 * replies counted toward max-output-buffer as they are written; the
 * protocol-error-then-close path; the command table (unknown, arity, the
 * two auth policies, COMMAND COUNT); the drain (what was sent is answered,
 * a cut-short drain counts what was lost); fairness (a client pipelining
 * large requests yields to another one after its slice of an iteration).
 *
 * Waits are loop runs that end on a state, bounded by a deadline timer
 * that fails the test.
 */
#include "config.h"
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <cmocka.h>
#include <kettle/kettle.h>
#include "server.h"

/* ---- the test daemon -------------------------------------------------------- */

typedef struct tcfg {
    ks_config srv;
} tcfg;

static const kt_opt topts[] = {
    KS_OPT_LISTEN(tcfg, srv, "127.0.0.1:0"),
    KS_OPT_LIMITS(tcfg, srv, "100", "64kb", "1000"),
    KS_OPT_MAX_PENDING_BYTES(tcfg, srv, "0", "bytes held"),
    KS_OPT_SHUTDOWN_TIMEOUT(tcfg, srv, "0"),
    { "admin", KT_OPT_BOOL, KS_OFF(tcfg, srv, admin), "yes", "admin", 0, 0, 0, NULL, 0 },
    { "password", KT_OPT_STR, KS_OFF(tcfg, srv, password), NULL, "password", 0, 0, 0, NULL,
      KT_OPT_RUNTIME | KT_OPT_SECRET },
    KT_OPT_END,
};

typedef struct dslot {
    ks_slot slot;
    char tag[32];
} dslot;

#define MAX_DEFERRED 64

typedef struct world {
    kt_loop *loop;
    ks_server srv;
    tcfg cfg;
    int fd;                       /* the client's end */
    ks_conn *conn;                /* the server's end, once adopted */
    dslot *deferred[MAX_DEFERRED]; /* in arrival order; NULL once settled */
    size_t ndeferred;
    int dropped, emitted, drained;
    char in[65536];               /* what the client received */
    size_t inlen;
    bool peer_closed;
} world;

static world *W;

static void cmd_defer(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    dslot *d = calloc(1, sizeof *d);
    assert_non_null(d);
    snprintf(d->tag, sizeof d->tag, "%.*s", (int)argv[1].len, argv[1].p);
    ks_defer(c, &d->slot);
    if (argc == 3)
        ks_slot_hold(&d->slot, (size_t)atoi(argv[2].p));
    assert_true(W->ndeferred < MAX_DEFERRED);
    W->deferred[W->ndeferred++] = d;
}

static void cmd_admin(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    (void)argv;
    (void)argc;
    ks_reply_ok(c);
}

static const ks_arg a_none[] = { { NULL, NULL, 0 } };
static const ks_cmd tcmds[] = {
    { "defer", -2, 0, cmd_defer, "test", "0", "a reply settled later", a_none, 0, 0, 0 },
    { "admin", 1, KS_CMD_ADMIN, cmd_admin, "test", "0", "an admin command", a_none, 0, 0, 0 },
    { NULL, 0, 0, NULL, NULL, NULL, NULL, NULL, 0, 0, 0 },
};

static void t_emit(ks_conn *c, ks_slot *s, kt_out *o)
{
    dslot *d = (dslot *)s;
    (void)c;
    (void)kt_resp_bulk(o, d->tag, strlen(d->tag));
    W->emitted++;
    free(d);
}

static void t_drop(ks_slot *s)
{
    W->dropped++;
    free(s);
}

static int t_apply(ks_server *srv, void *next, const char **why)
{
    (void)why;
    kt_opt_free(topts, srv->cfg);
    memcpy(srv->cfg, next, sizeof(tcfg));
    return 0;
}

static void t_drained(ks_server *srv)
{
    (void)srv;
    W->drained++;
}

/* Not const: a test switches its auth policy. */
static ks_daemon tdaemon = {
    .name = "testd", .cmds = tcmds, .auth = KS_AUTH_ALL, .options = topts,
    .cfg_size = sizeof(tcfg), .pause_divisor = 4,
    .emit = t_emit, .drop = t_drop, .config_apply = t_apply, .drained = t_drained,
};

/* ---- driving it ------------------------------------------------------------------ */

static void deadline_cb(kt_timer *t, void *arg)
{
    (void)t;
    fail_msg("deadline passed: %s", (const char *)arg);
}

/* Take what the client has received so far. */
static void drain_client(world *w)
{
    for (;;) {
        ssize_t n = recv(w->fd, w->in + w->inlen, sizeof w->in - w->inlen - 1, MSG_DONTWAIT);
        if (n > 0) {
            w->inlen += (size_t)n;
            w->in[w->inlen] = '\0';
            continue;
        }
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            w->peer_closed = true;
        return;
    }
}

typedef bool (*pred_fn)(world *w, const void *arg);

/* Run the loop until pred holds; fail after 10 s. */
static void run_until(world *w, pred_fn pred, const void *arg, const char *what)
{
    kt_timer dl;
    kt_timer_init(w->loop, &dl, deadline_cb, (void *)what);
    assert_int_equal(kt_timer_start(&dl, KT_SEC(10), 0), 0);
    for (;;) {
        drain_client(w);
        if (pred(w, arg))
            break;
        assert_int_equal(kt_loop_run(w->loop, KT_RUN_ONCE), 0);
    }
    kt_timer_stop(&dl);
}

/* A few iterations with nothing left to wait for: the server has seen and
 * done all it can with what was sent. */
static void settle(world *w)
{
    for (int i = 0; i < 20; i++)
        (void)kt_loop_run(w->loop, KT_RUN_NOWAIT);
    drain_client(w);
}

static bool got_bytes(world *w, const void *arg)
{
    return w->inlen >= strlen(arg);
}

/* The client receives exactly want (and it is taken off). */
static void expect(world *w, const char *want)
{
    run_until(w, got_bytes, want, want);
    size_t n = strlen(want);
    if (memcmp(w->in, want, n) != 0)
        fail_msg("got %.*s, wanted %s", (int)w->inlen, w->in, want);
    memmove(w->in, w->in + n, w->inlen - n + 1);
    w->inlen -= n;
}

static void send_str(world *w, const char *s)
{
    assert_int_equal(send(w->fd, s, strlen(s), 0), (ssize_t)strlen(s));
}

static bool adopted(world *w, const void *arg)
{
    (void)arg;
    return w->srv.head != NULL;
}

/* A fresh server with cfg edits ("name", "value", ..., NULL) and a client. */
static world *setup(const char *first, ...)
{
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    W = w;
    assert_int_equal(kt_loop_new(&w->loop, NULL), 0);
    assert_int_equal(kt_opt_defaults(topts, &w->cfg), 0);
    va_list ap;
    va_start(ap, first);
    for (const char *name = first; name; name = va_arg(ap, const char *)) {
        const char *why;
        assert_int_equal(kt_opt_set(topts, &w->cfg, name, va_arg(ap, const char *), &why), 0);
    }
    va_end(ap);
    assert_int_equal(ks_server_init(&w->srv, w->loop, &tdaemon, w, &w->cfg, &w->cfg.srv), 0);
    int sv[2];
    kt_stream *s;
    static const kt_stream_cbs none = { 0 };
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    w->fd = sv[1];
    assert_int_equal(kt_stream_open_fd(w->loop, sv[0], &none, NULL, &s), 0);
    ks_server_adopt(&w->srv, s);
    run_until(w, adopted, NULL, "adopted");
    w->conn = w->srv.head;
    return w;
}

static void teardown(world *w)
{
    ks_server_free(&w->srv);
    close(w->fd);
    for (int i = 0; i < 50; i++)
        (void)kt_loop_run(w->loop, KT_RUN_NOWAIT);
    for (size_t i = 0; i < w->ndeferred; i++)
        assert_null(w->deferred[i]); /* every one was emitted or dropped */
    kt_opt_free(topts, &w->cfg);
    kt_loop_free(w->loop);
    free(w);
    W = NULL;
}

/* Settle the i-th deferred reply. */
static void settle_deferred(world *w, size_t i)
{
    dslot *d = w->deferred[i];
    assert_non_null(d);
    w->deferred[i] = NULL;
    if (d->slot.c == NULL) {
        free(d); /* its connection is gone (counted as dropped already) */
        return;
    }
    ks_slot_ready(&d->slot);
}

/* t_drop freed them: forget the pointers. */
static void forget_dropped(world *w)
{
    for (size_t i = 0; i < w->ndeferred; i++)
        w->deferred[i] = NULL;
}

/* ---- the tests ----------------------------------------------------------------------- */

static void test_immediate_reply_goes_straight_out(void **state)
{
    (void)state;
    world *w = setup(NULL);
    send_str(w, "PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n");
    expect(w, "+PONG\r\n$2\r\nhi\r\n");
    assert_null(w->conn->head);
    assert_int_equal(w->conn->held, 0);
    assert_int_equal(w->conn->pending, 0);
    teardown(w);
}

static void test_fifo_order(void **state)
{
    (void)state;
    world *w = setup(NULL);
    send_str(w, "DEFER a\r\nPING\r\nECHO x\r\nDEFER b\r\nECHO y\r\n");
    settle(w);
    assert_int_equal(w->inlen, 0);  /* everything waits behind DEFER a */
    assert_int_equal(w->conn->pending, 5);
    assert_int_equal(w->conn->held, strlen("+PONG\r\n$1\r\nx\r\n$1\r\ny\r\n")); /* counted as written */
    settle_deferred(w, 1);          /* b first: still behind a */
    settle(w);
    assert_int_equal(w->inlen, 0);
    settle_deferred(w, 0);
    expect(w, "$1\r\na\r\n+PONG\r\n$1\r\nx\r\n$1\r\nb\r\n$1\r\ny\r\n");
    assert_int_equal(w->conn->pending, 0);
    assert_int_equal(w->conn->held, 0);
    assert_int_equal(w->emitted, 2);
    teardown(w);
}

static bool n_deferred(world *w, const void *arg)
{
    return w->ndeferred >= *(const size_t *)arg;
}

static void test_backpressure_max_pending(void **state)
{
    (void)state;
    world *w = setup("max-pending", "2", NULL);
    send_str(w, "DEFER 1\r\nDEFER 2\r\nDEFER 3\r\nDEFER 4\r\nDEFER 5\r\n");
    settle(w);
    assert_int_equal(w->ndeferred, 2);             /* reading paused at 2 owed */
    assert_true(w->conn->flags & KS_C_PAUSED);
    assert_true(w->srv.st.paused >= 1);
    settle_deferred(w, 0);
    settle_deferred(w, 1);
    static const size_t four = 4, five = 5;
    run_until(w, n_deferred, &four, "two more read");
    settle(w);
    assert_int_equal(w->ndeferred, 4); /* and paused again */
    settle_deferred(w, 2);
    run_until(w, n_deferred, &five, "the last read");
    settle_deferred(w, 3);
    settle_deferred(w, 4);
    expect(w, "$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n$1\r\n4\r\n$1\r\n5\r\n");
    teardown(w);
}

static void test_backpressure_max_pending_bytes(void **state)
{
    (void)state;
    world *w = setup("max-pending-bytes", "250", NULL);
    /* alone, a request holding more than the limit is served */
    send_str(w, "DEFER big 1000\r\nDEFER a 100\r\n");
    settle(w);
    assert_int_equal(w->ndeferred, 1);
    assert_int_equal(w->conn->pending_bytes, 1000);
    settle_deferred(w, 0);
    static const size_t two = 2;
    run_until(w, n_deferred, &two, "read again once it was answered");
    send_str(w, "DEFER b 100\r\nDEFER c 100\r\nDEFER d 100\r\n");
    settle(w);
    /* a (100) + b (200) < 250: c is read too (300), then reading pauses */
    assert_int_equal(w->ndeferred, 4);
    assert_int_equal(w->conn->pending_bytes, 300);
    assert_true(w->conn->flags & KS_C_PAUSED);
    settle_deferred(w, 1);
    static const size_t five = 5;
    run_until(w, n_deferred, &five, "d read");
    for (size_t i = 2; i < 5; i++)
        settle_deferred(w, i);
    expect(w, "$3\r\nbig\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n");
    assert_int_equal(w->conn->pending_bytes, 0);
    teardown(w);
}

static bool closed_output(world *w, const void *arg)
{
    (void)arg;
    return w->srv.st.closed_output == 1;
}

/* ECHO of n bytes of 'x' into buf. */
static const char *echo_of(char *buf, size_t size, size_t n)
{
    int h = snprintf(buf, size, "*2\r\n$4\r\nECHO\r\n$%zu\r\n", n);
    assert_true(h > 0 && (size_t)h + n + 3 <= size);
    memset(buf + h, 'x', n);
    memcpy(buf + h + n, "\r\n", 3);
    return buf;
}

static void test_parked_replies_count_toward_the_output_limit(void **state)
{
    (void)state;
    char big[8192];
    world *w = setup("max-output-buffer", "4096", NULL);
    send_str(w, "DEFER slow\r\n");
    send_str(w, echo_of(big, sizeof big, 3000));
    send_str(w, "PING\r\n");
    settle(w);
    /* counted as written, while it waits: reading pauses above the mark */
    assert_int_equal(w->conn->held, strlen("$3000\r\n") + 3000 + 2);
    assert_true(w->conn->flags & KS_C_PAUSED);
    assert_int_equal(w->srv.st.closed_output, 0);
    settle_deferred(w, 0);
    expect(w, "$4\r\nslow\r\n$3000\r\n");
    teardown(w);

    /* one parked reply past the limit closes the client */
    w = setup("max-output-buffer", "4096", NULL);
    send_str(w, "DEFER slow\r\n");
    send_str(w, echo_of(big, sizeof big, 5000));
    run_until(w, closed_output, NULL, "closed at max-output-buffer");
    assert_int_equal(w->dropped, 1);
    forget_dropped(w);
    teardown(w);
}

static bool peer_closed(world *w, const void *arg)
{
    (void)arg;
    return w->peer_closed;
}

static void test_protocol_error_after_earlier_replies(void **state)
{
    (void)state;
    world *w = setup(NULL);
    send_str(w, "DEFER a\r\n*1\r\n$x\r\nPING\r\n");
    settle(w);
    assert_int_equal(w->inlen, 0);
    assert_int_equal(w->srv.st.err_protocol, 1);
    settle_deferred(w, 0);
    expect(w, "$1\r\na\r\n-ERR Protocol error: invalid bulk length\r\n");
    run_until(w, peer_closed, NULL, "closed after the error");
    assert_int_equal(w->inlen, 0); /* the PING after it was not answered */
    teardown(w);
}

static void test_command_table_and_auth(void **state)
{
    (void)state;
    world *w = setup("password", "pw", NULL);
    char count[32];
    snprintf(count, sizeof count, ":%zu\r\n", ks_cmd_count(&w->srv));
    assert_true(ks_cmd_count(&w->srv) > 2); /* the daemon's two and the shared ones */
    assert_non_null(ks_cmd_find(&w->srv, "PiNg", 4, NULL));
    assert_null(ks_cmd_find(&w->srv, "pin", 3, NULL));
    send_str(w, "NOPE a b\r\nECHO\r\nPING\r\nAUTH bad\r\nAUTH pw\r\nAUTH bad\r\nPING\r\n"
                "COMMAND COUNT\r\nHELLO 3\r\n");
    expect(w, "-ERR unknown command 'NOPE', with args beginning with: 'a' 'b' \r\n"
              "-ERR wrong number of arguments for 'echo' command\r\n"
              "-NOAUTH Authentication required.\r\n"
              "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
              "+OK\r\n"
              "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
              "+PONG\r\n");
    expect(w, count);
    expect(w, "-NOPROTO unsupported protocol version (testd speaks RESP2 only)\r\n");
    assert_int_equal(w->srv.st.err_unknown, 1);
    assert_int_equal(w->srv.st.err_arity, 1);
    assert_int_equal(w->srv.st.err_noauth, 1);
    assert_int_equal(w->srv.st.err_wrongpass, 2);
    teardown(w);

    /* the admin policy: only ADMIN commands are guarded */
    tdaemon.auth = KS_AUTH_ADMIN;
    w = setup("password", "pw", NULL);
    send_str(w, "PING\r\nADMIN\r\nAUTH pw\r\nADMIN\r\nCONFIG SET admin no\r\n");
    expect(w, "+PONG\r\n-NOAUTH Authentication required.\r\n+OK\r\n+OK\r\n"
              "-ERR CONFIG SET failed (possibly related to argument 'admin') - "
              "can't set immutable config\r\n");
    teardown(w);
    w = setup("admin", "no", NULL);
    send_str(w, "ADMIN\r\nCONFIG GET *\r\n");
    expect(w, "-ERR admin commands are disabled (admin no)\r\n"
              "-ERR admin commands are disabled (admin no)\r\n");
    teardown(w);
    tdaemon.auth = KS_AUTH_ALL;
}

static bool is_drained(world *w, const void *arg)
{
    (void)arg;
    return w->drained > 0;
}

static void test_drain_answers_what_was_sent(void **state)
{
    (void)state;
    world *w = setup("max-pending", "1", NULL);
    send_str(w, "DEFER a\r\nDEFER b\r\n");
    settle(w);
    assert_int_equal(w->ndeferred, 1); /* b waits unread behind max-pending */
    ks_server_shutdown(&w->srv);
    settle(w);
    assert_int_equal(w->srv.state, KS_DRAINING);
    assert_false(w->peer_closed);
    settle_deferred(w, 0);
    static const size_t two = 2;
    run_until(w, n_deferred, &two, "b read during the drain");
    settle_deferred(w, 1);
    expect(w, "$1\r\na\r\n$1\r\nb\r\n");
    run_until(w, is_drained, NULL, "drained");
    run_until(w, peer_closed, NULL, "the client closed");
    assert_int_equal(w->srv.lost.clients, 0);
    teardown(w);

    /* cut short: the request owed and the one unread are counted */
    w = setup("max-pending", "1", NULL);
    send_str(w, "DEFER a\r\nDEFER b\r\n");
    settle(w);
    ks_server_shutdown(&w->srv);
    settle(w);
    ks_server_shutdown(&w->srv);
    assert_int_equal(w->drained, 1);
    assert_int_equal(w->srv.lost.clients, 1);
    assert_int_equal(w->srv.lost.requests, 1);
    assert_true(w->srv.lost.unread_bytes >= strlen("DEFER b\r\n"));
    assert_int_equal(w->dropped, 1);
    forget_dropped(w);
    teardown(w);
}

/* Bytes waiting on fd, read and counted. */
static size_t drain_fd(int fd)
{
    char buf[65536];
    size_t got = 0;
    ssize_t n;
    while ((n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0)
        got += (size_t)n;
    return got;
}

#define BIG_ARG 10000
#define BIG_REQS 16

static void test_large_requests_yield_to_another_client(void **state)
{
    (void)state;
    world *w = setup("max-output-buffer", "16mb", NULL);
    /* A second client pipelines BIG_REQS ECHOs of BIG_ARG bytes, about
     * 2.5 slices, all sent before anything runs. */
    int sv[2];
    kt_stream *s;
    static const kt_stream_cbs none = { 0 };
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int big = 1 << 20;
    (void)setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    (void)setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    char head[64];
    int hn = snprintf(head, sizeof head, "*2\r\n$4\r\nECHO\r\n$%d\r\n", BIG_ARG);
    size_t one = (size_t)hn + BIG_ARG + 2;
    char *req = malloc(one * BIG_REQS);
    assert_non_null(req);
    for (int i = 0; i < BIG_REQS; i++) {
        char *p = req + one * (size_t)i;
        memcpy(p, head, (size_t)hn);
        memset(p + hn, 'a' + i, BIG_ARG);
        memcpy(p + hn + BIG_ARG, "\r\n", 2);
    }
    assert_true(one * BIG_REQS > 2 * KS_CONN_SLICE);
    assert_int_equal(send(sv[1], req, one * BIG_REQS, 0), (ssize_t)(one * BIG_REQS));
    free(req);
    /* the probe's request is in its socket before the server looks */
    send_str(w, "PING\r\n");
    assert_int_equal(kt_stream_open_fd(w->loop, sv[0], &none, NULL, &s), 0);
    ks_server_adopt(&w->srv, s);

    size_t reply = (size_t)snprintf(head, sizeof head, "$%d\r\n", BIG_ARG) + BIG_ARG + 2;
    size_t big_got = 0;
    kt_timer dl;
    kt_timer_init(w->loop, &dl, deadline_cb, (void *)"the probe's reply");
    assert_int_equal(kt_timer_start(&dl, KT_SEC(10), 0), 0);
    while (w->inlen < strlen("+PONG\r\n")) {
        assert_int_equal(kt_loop_run(w->loop, KT_RUN_ONCE), 0);
        big_got += drain_fd(sv[1]);
        drain_client(w);
    }
    kt_timer_stop(&dl);
    assert_string_equal(w->in, "+PONG\r\n");
    /* the probe was answered while the large requests were still being
     * served: the pipelining client had to yield */
    assert_true(big_got < reply * BIG_REQS);
    assert_true(w->srv.st.yields >= 1);
    /* and it is served in full afterwards */
    kt_timer_init(w->loop, &dl, deadline_cb, (void *)"the large replies");
    assert_int_equal(kt_timer_start(&dl, KT_SEC(10), 0), 0);
    while (big_got < reply * BIG_REQS) {
        assert_int_equal(kt_loop_run(w->loop, KT_RUN_ONCE), 0);
        big_got += drain_fd(sv[1]);
    }
    kt_timer_stop(&dl);
    assert_int_equal(big_got, reply * BIG_REQS);
    assert_null(w->srv.yielded);
    close(sv[1]);
    teardown(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_immediate_reply_goes_straight_out),
        cmocka_unit_test(test_fifo_order),
        cmocka_unit_test(test_backpressure_max_pending),
        cmocka_unit_test(test_backpressure_max_pending_bytes),
        cmocka_unit_test(test_parked_replies_count_toward_the_output_limit),
        cmocka_unit_test(test_protocol_error_after_earlier_replies),
        cmocka_unit_test(test_command_table_and_auth),
        cmocka_unit_test(test_drain_answers_what_was_sent),
        cmocka_unit_test(test_large_requests_yield_to_another_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
