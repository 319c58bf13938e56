/*
 * test-stream.c - streams and listeners on whichever backend KETTLE_IO
 * names (exit 77 when it cannot run here): echo over TCP and unix sockets,
 * backpressure with 64 MiB through a slow reader, reset, half-close,
 * refused and timed-out connects, the three closes, closing from inside
 * callbacks, the EMFILE back-off, kept input, idle streams holding no
 * buffer, the memory discipline of output blocks and kept input, listener
 * close callbacks, listeners sharing a port, and the batch wait.
 *
 * Waits are loop runs that end on an event; every one is bounded by a
 * deadline timer that fails the test. No external address is ever used.
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <cmocka.h>
#include <kettle/kettle.h>
#include "internal.h" /* to check that idle streams hold no buffer */
#include "unit.h"

/* ---- helpers ------------------------------------------------------------------ */

static void (*on_deadline)(void); /* prints a test's state before failing */

static void deadline_cb(kt_timer *t, void *arg)
{
    (void)t;
    if (on_deadline)
        on_deadline();
    fail_msg("deadline passed: %s", (const char *)arg);
}

/* Run the loop until *flag becomes true; fail after limit_ns. */
static void run_until(kt_loop *loop, const bool *flag, uint64_t limit_ns, const char *what)
{
    if (unit_wait(loop, flag, limit_ns))
        return;
    if (on_deadline)
        on_deadline();
    fail_msg("deadline passed: %s", what);
}

/* Free the loop after checking nothing was left behind. */
static void loop_done(kt_loop *loop)
{
    kt_loop_stats st;
    assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    kt_loop_get_stats(loop, &st);
    assert_int_equal(st.streams, 0);
    assert_int_equal(st.timers_pending, 0);
    kt_loop_free(loop);
}

static kt_addr tcp_any(void)
{
    kt_addr a;
    assert_int_equal(kt_addr_parse("127.0.0.1:0", &a), 0);
    return a;
}

static kt_addr bound_addr(kt_listener *l)
{
    kt_addr a;
    assert_int_equal(kt_listener_addr(l, &a), 0);
    return a;
}

static char unix_dir[64];

static kt_addr unix_addr(const char *name)
{
    char spec[128];
    kt_addr a;
    snprintf(spec, sizeof(spec), "unix:%s/%s", unix_dir, name);
    assert_int_equal(kt_addr_parse(spec, &a), 0);
    return a;
}

/* A blocking client socket connected to a (loopback) kettle listener: the
 * kernel completes the handshake from the backlog. */
static int raw_connect(const kt_addr *a)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (const struct sockaddr *)&a->ss, a->len), 0);
    return fd;
}

/* Read want bytes from a plain non-blocking socket while the loop runs
 * (a completion backend sends only when its loop polls). */
static size_t pump_read(kt_loop *loop, int fd, char *buf, size_t want)
{
    uint64_t end = kt_clock_ns() + KT_SEC(10);
    size_t got = 0;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    while (got < want) {
        assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 1) == 1) {
            ssize_t n = read(fd, buf + got, want - got);
            if (n == 0)
                break;
            if (n > 0)
                got += (size_t)n;
        }
        if (kt_clock_ns() > end)
            fail_msg("pump_read: %zu of %zu bytes", got, want);
    }
    return got;
}

/* The byte stream every bulk test sends: a pseudo-random pattern with a
 * prime period, so misplaced or lost bytes show. */
#define PAT_LEN 65521
static unsigned char pat[PAT_LEN];

static void pat_init(void)
{
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < PAT_LEN; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        pat[i] = (unsigned char)x;
    }
}

/* Fill buf with the pattern at stream offset off. */
static void pat_fill(char *buf, size_t len, uint64_t off)
{
    size_t p = (size_t)(off % PAT_LEN);
    while (len) {
        size_t n = PAT_LEN - p < len ? PAT_LEN - p : len;
        memcpy(buf, pat + p, n);
        buf += n;
        len -= n;
        p = 0;
    }
}

static bool pat_check(const char *buf, size_t len, uint64_t off)
{
    size_t p = (size_t)(off % PAT_LEN);
    while (len) {
        size_t n = PAT_LEN - p < len ? PAT_LEN - p : len;
        if (memcmp(buf, pat + p, n) != 0)
            return false;
        buf += n;
        len -= n;
        p = 0;
    }
    return true;
}

/* One end under test: what it saw. */
struct end {
    kt_loop *loop;
    kt_stream *s;
    char rx[4096];
    size_t rx_len;
    uint64_t rx_total;  /* bytes seen, checked against the pattern if check_pat */
    bool check_pat, pat_ok;
    int reads, eofs, errors, closes, connects, drains;
    int err, connect_status;
    bool eof, closed, connected, failed, done;
    uint64_t last_read_iter;
    int echo;           /* write back what arrives */
    int close_in_read;  /* kt_close_mode + 1: close from inside on_read */
    kt_stream *close_other; /* and close this one too */
    int close_on_eof;   /* kt_close_mode + 1 */
    const char *reply_on_eof;
};

static uint64_t iterations(kt_loop *loop)
{
    kt_loop_stats st;
    kt_loop_get_stats(loop, &st);
    return st.iterations;
}

/* arg, a struct end whose stream has not been closed yet: a callback
 * after on_close is a bug. */
static struct end *live(void *arg)
{
    struct end *e = arg;
    assert_false(e->closed);
    return e;
}

static size_t end_read(kt_stream *s, const char *data, size_t len, void *arg)
{
    struct end *e = live(arg);
    assert_ptr_equal(s, e->s);
    e->reads++;
    e->last_read_iter = iterations(e->loop);
    if (e->check_pat && !pat_check(data, len, e->rx_total))
        e->pat_ok = false;
    e->rx_total += len;
    size_t n = len < sizeof(e->rx) - e->rx_len ? len : sizeof(e->rx) - e->rx_len;
    memcpy(e->rx + e->rx_len, data, n);
    e->rx_len += n;
    if (e->echo)
        assert_int_equal(kt_stream_write(s, data, len), 0);
    if (e->close_other)
        kt_stream_close(e->close_other, KT_CLOSE_NOW);
    if (e->close_in_read) {
        kt_stream_close(s, (kt_close_mode)(e->close_in_read - 1));
        assert_int_equal(kt_stream_write(s, "x", 1), -EPIPE);
        return 0; /* nothing consumed: must not matter after close */
    }
    return len;
}

static void end_eof(kt_stream *s, void *arg)
{
    struct end *e = live(arg);
    e->eofs++;
    e->eof = true;
    if (e->reply_on_eof)
        assert_int_equal(kt_stream_write(s, e->reply_on_eof, strlen(e->reply_on_eof)), 0);
    if (e->close_on_eof)
        kt_stream_close(s, (kt_close_mode)(e->close_on_eof - 1));
}

static void end_error(kt_stream *s, int err, void *arg)
{
    struct end *e = live(arg);
    e->errors++;
    e->err = err;
    e->failed = true;
    kt_stream_close(s, KT_CLOSE_NOW);
}

static void end_connect(kt_stream *s, int status, void *arg)
{
    struct end *e = live(arg);
    e->connects++;
    e->connect_status = status;
    e->connected = true;
    if (status < 0)
        kt_stream_close(s, KT_CLOSE_NOW);
}

static void end_drain(kt_stream *s, void *arg)
{
    struct end *e = live(arg);
    (void)s;
    e->drains++;
}

static void end_close(kt_stream *s, void *arg)
{
    struct end *e = arg;
    assert_ptr_equal(s, e->s);
    e->closes++;
    e->closed = true;
}

static const kt_stream_cbs end_cbs = {
    .on_read = end_read, .on_eof = end_eof, .on_error = end_error,
    .on_connect = end_connect, .on_drain = end_drain, .on_close = end_close,
};

/* e saw eofs on_eof, errors on_error and closes on_close calls (-1: any). */
static void assert_counts(const struct end *e, int eofs, int errors, int closes)
{
    if (eofs >= 0)
        assert_int_equal(e->eofs, eofs);
    if (errors >= 0)
        assert_int_equal(e->errors, errors);
    if (closes >= 0)
        assert_int_equal(e->closes, closes);
}

/* Accept into a struct end (one connection per listener in these tests). */
static void accept_end_cb(kt_listener *l, kt_stream *s, void *arg)
{
    (void)l;
    struct end *e = arg;
    assert_null(e->s);
    e->s = s;
    kt_stream_set_cbs(s, &end_cbs, e);
    assert_int_equal(kt_stream_read_start(s), 0);
}

/* A socketpair whose sv[0] is opened as a stream (cbs, arg) into *s; sv[1]
 * stays a plain socket for the test to play the peer. */
static void open_pair(kt_loop *loop, int sv[2], const kt_stream_cbs *cbs, void *arg, kt_stream **s)
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(kt_stream_open_fd(loop, sv[0], cbs, arg, s), 0);
}

/* A new loop and e opened on one end of a socketpair (end_cbs); *peer is
 * the other end, a plain socket for the test to play the peer. */
static kt_loop *loop_and_end(struct end *e, int *peer)
{
    kt_loop *loop = unit_loop_new();
    int sv[2];
    e->loop = loop;
    open_pair(loop, sv, &end_cbs, e, &e->s);
    *peer = sv[1];
    return loop;
}

/* ---- addresses ------------------------------------------------------------------ */

static void test_addr(void **state)
{
    (void)state;
    kt_addr a;
    char buf[128];
    static const char *const good[][2] = { /* parsed, then formatted */
        { "127.0.0.1:7379", "127.0.0.1:7379" }, { "[::1]:80", "[::1]:80" },
        { "localhost:1", "127.0.0.1:1" }, { ":6379", "0.0.0.0:6379" },
        { "unix:/run/k.sock", "unix:/run/k.sock" }, { "/tmp/x", "unix:/tmp/x" },
    };
    for (size_t i = 0; i < KT__ARRAY_LEN(good); i++) {
        assert_int_equal(kt_addr_parse(good[i][0], &a), 0);
        assert_string_equal(kt_addr_format(&a, buf, sizeof(buf)), good[i][1]);
    }
    assert_int_equal(a.ss.ss_family, AF_UNIX);

    const char *bad[] = { "", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "1.2.3:80",
                          "::1:80", "[::1]80", "[::1]:", "[zz]:1", "example.com:80",
                          "127.0.0.1:8x", "unix:", "127.0.0.1:-1" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(kt_addr_parse(bad[i], &a), -EINVAL);
    char longpath[200];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    assert_int_equal(kt_addr_parse(longpath, &a), -EINVAL);
}

/* ---- echo ------------------------------------------------------------------------ */

struct echo_client {
    struct end e;
    size_t want;
    bool got_all;
};

static size_t echo_client_read(kt_stream *s, const char *data, size_t len, void *arg)
{
    struct echo_client *c = arg;
    if (!pat_check(data, len, c->e.rx_total))
        c->e.pat_ok = false;
    c->e.rx_total += len;
    if (c->e.rx_total == c->want) {
        c->got_all = true;
        kt_stream_close(s, KT_CLOSE_FLUSH);
    }
    return len;
}

static void echo_client_connect(kt_stream *s, int status, void *arg)
{
    struct echo_client *c = arg;
    assert_int_equal(status, 0);
    c->e.connected = true;
    /* Half through kt_stream_write, half through the kt_out sink. */
    char *buf = malloc(c->want);
    assert_non_null(buf);
    pat_fill(buf, c->want, 0);
    size_t half = c->want / 2;
    assert_int_equal(kt_stream_write(s, buf, half), 0);
    kt_out out = kt_stream_out(s);
    for (size_t off = half; off < c->want;) {
        size_t n = c->want - off < 3000 ? c->want - off : 3000;
        char *p = out.reserve(out.ctx, n);
        assert_non_null(p);
        memcpy(p, buf + off, n);
        out.commit(out.ctx, n);
        off += n;
    }
    assert_int_equal(kt_stream_pending(s), c->want);
    free(buf);
    assert_int_equal(kt_stream_read_start(s), 0);
}

static void echo_client_close(kt_stream *s, void *arg)
{
    (void)s;
    struct echo_client *c = arg;
    c->e.closed = true;
}

static void run_echo(const kt_addr *addr)
{
    kt_loop *loop = unit_loop_new();
    struct end srv = { .loop = loop, .echo = 1, .close_on_eof = KT_CLOSE_FLUSH + 1 };
    kt_listener *l;
    assert_int_equal(kt_listen(loop, addr, 0, accept_end_cb, &srv, &l), 0);
    kt_addr where = bound_addr(l);

    struct echo_client c = { .e.loop = loop, .e.pat_ok = true, .want = 1024 * 1024 + 77 };
    kt_stream_cbs cbs = { .on_read = echo_client_read, .on_connect = echo_client_connect,
                          .on_close = echo_client_close, .on_error = end_error };
    assert_int_equal(kt_stream_connect(loop, &where, KT_SEC(5), &cbs, &c, &c.e.s), 0);
    run_until(loop, &c.e.closed, KT_SEC(30), "echo client done");
    run_until(loop, &srv.closed, KT_SEC(30), "echo server done");
    assert_true(c.got_all);
    assert_true(c.e.pat_ok);
    assert_int_equal(c.e.rx_total, c.want);
    assert_int_equal(srv.rx_total, c.want);
    assert_counts(&srv, 1, 0, 1);
    kt_listener_close(l);
    loop_done(loop);
}

static void test_echo_tcp(void **state)
{
    (void)state;
    kt_addr a = tcp_any();
    run_echo(&a);
}

static void test_echo_unix(void **state)
{
    (void)state;
    kt_addr a = unix_addr("echo.sock");
    run_echo(&a);
    struct stat st;
    assert_int_equal(stat(a.ss.ss_family == AF_UNIX ? ((struct sockaddr_un *)&a.ss)->sun_path : "",
                          &st), -1); /* the listener removed its path */
}

/* ---- backpressure: 64 MiB through a slow reader ---------------------------------------- */

#define BULK_TOTAL (64ull * 1024 * 1024)

struct bulk {
    kt_loop *loop;
    kt_stream *s;
    uint64_t sent;
    int drains;
    bool saw_blocked;
    bool closed;
    bool write_error;
    /* reader thread */
    kt_addr addr;
    uint64_t received;
    bool intact;
    bool reader_done;
};

/* Queue pattern bytes until the stream says stop (or all are queued). */
static void bulk_fill(struct bulk *b)
{
    char chunk[64 * 1024];
    while (b->sent < BULK_TOTAL && !kt_stream_write_blocked(b->s)) {
        size_t n = BULK_TOTAL - b->sent < sizeof(chunk) ? (size_t)(BULK_TOTAL - b->sent) : sizeof(chunk);
        pat_fill(chunk, n, b->sent);
        if (kt_stream_write(b->s, chunk, n) < 0) {
            b->write_error = true;
            return;
        }
        b->sent += n;
    }
    if (kt_stream_write_blocked(b->s))
        b->saw_blocked = true;
    if (b->sent == BULK_TOTAL)
        kt_stream_close(b->s, KT_CLOSE_FLUSH);
}

static void bulk_drain(kt_stream *s, void *arg)
{
    (void)s;
    struct bulk *b = arg;
    b->drains++;
    assert_false(kt_stream_write_blocked(s));
    assert_true(kt_stream_pending(s) <= 256 * 1024);
    bulk_fill(b);
}

static void bulk_close(kt_stream *s, void *arg)
{
    (void)s;
    ((struct bulk *)arg)->closed = true;
}

static void bulk_accept(kt_listener *l, kt_stream *s, void *arg)
{
    (void)l;
    struct bulk *b = arg;
    b->s = s;
    kt_stream_cbs cbs = { .on_drain = bulk_drain, .on_close = bulk_close };
    kt_stream_set_cbs(s, &cbs, b);
    kt_stream_set_linger(s, KT_SEC(60));
    bulk_fill(b);
}

static void reader_done_cb(void *arg)
{
    ((struct bulk *)arg)->reader_done = true;
}

/* The slow peer: a plain blocking socket in a thread that reads in small
 * pieces and pauses now and then, until EOF. */
static void *bulk_reader(void *arg)
{
    struct bulk *b = arg;
    int fd = raw_connect(&b->addr);
    char *buf = malloc(16384);
    b->intact = true;
    for (unsigned i = 0;; i++) {
        ssize_t n = read(fd, buf, 16384);
        if (n <= 0)
            break;
        if (!pat_check(buf, (size_t)n, b->received))
            b->intact = false;
        b->received += (uint64_t)n;
        if (i % 64 == 0)
            usleep(1000); /* read slowly: the sender must queue */
    }
    free(buf);
    close(fd);
    kt_loop_post(b->loop, reader_done_cb, b);
    return NULL;
}

static struct bulk *bulk_now;

static void bulk_state(void)
{
    struct bulk *b = bulk_now;
    fprintf(stderr, "bulk: sent %llu received %llu pending %zu blocked %d drains %d\n",
            (unsigned long long)b->sent, (unsigned long long)b->received,
            b->s ? kt_stream_pending(b->s) : 0, b->s ? kt_stream_write_blocked(b->s) : 0,
            b->drains);
}

static void test_backpressure(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct bulk b = { .loop = loop };
    bulk_now = &b;
    on_deadline = bulk_state;
    kt_listener *l;
    kt_addr a = tcp_any();
    assert_int_equal(kt_listen(loop, &a, 0, bulk_accept, &b, &l), 0);
    b.addr = bound_addr(l);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, bulk_reader, &b), 0);
    run_until(loop, &b.reader_done, KT_SEC(120), "64 MiB delivered");
    pthread_join(th, NULL);
    run_until(loop, &b.closed, KT_SEC(10), "sender closed");
    assert_false(b.write_error);
    assert_true(b.saw_blocked);
    assert_true(b.drains >= 1);
    assert_int_equal(b.sent, BULK_TOTAL);
    assert_int_equal(b.received, BULK_TOTAL);
    assert_true(b.intact);
    on_deadline = NULL;
    kt_listener_close(l);
    loop_done(loop);
}

/* ---- failures ------------------------------------------------------------------------ */

/* The peer resets: the reader gets -ECONNRESET through on_error. */
static void rst_accept(kt_listener *l, kt_stream *s, void *arg)
{
    accept_end_cb(l, s, arg);
    struct end *e = arg;
    struct linger lg = { 1, 0 };
    int peer = e->echo; /* the raw client fd, smuggled in */
    assert_int_equal(write(peer, "partial", 7), 7);
    assert_int_equal(setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(peer);
    e->echo = 0;
}

static void test_peer_reset(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct end srv = { .loop = loop };
    kt_listener *l;
    kt_addr a = tcp_any();
    assert_int_equal(kt_listen(loop, &a, 0, rst_accept, &srv, &l), 0);
    kt_addr where = bound_addr(l);
    srv.echo = raw_connect(&where);
    run_until(loop, &srv.closed, KT_SEC(10), "reset seen");
    assert_int_equal(srv.err, -ECONNRESET);
    assert_counts(&srv, 0, 1, 1);
    kt_listener_close(l);
    loop_done(loop);
}

/* A peer that sends as much as the socket takes and then ends (FIN, or RST
 * over TCP) while the loop is still reading: the end must be seen (with
 * io_uring, a multishot receive taking the last bytes could lose it; the
 * backend then receives one shot at a time). Each round is a connection,
 * over a socketpair or TCP. */
static size_t tail_read(kt_stream *s, const char *data, size_t len, void *arg)
{
    size_t n = end_read(s, data, len, arg);
    ((struct end *)arg)->done = true; /* the first bytes have come */
    return n;
}

static const kt_stream_cbs tail_cbs = {
    .on_read = tail_read, .on_eof = end_eof, .on_error = end_error, .on_close = end_close,
};

static void tail_accept(kt_listener *l, kt_stream *s, void *arg)
{
    accept_end_cb(l, s, arg);
    kt_stream_set_cbs(s, &tail_cbs, arg);
}

/* The peer's side of test_tail_then_end, on its own thread so that its
 * bytes and its end race with the loop. It reads {fd, reset} pairs. */
#define TAIL_LEN (2u << 20)

static void *tail_peer(void *arg)
{
    int ctl = *(int *)arg, m[2];
    static char tail[TAIL_LEN];
    while (read(ctl, m, sizeof(m)) == (ssize_t)sizeof(m) && m[0] >= 0) {
        int fd = m[0];
        /* Fill the socket buffers, so that the end arrives while the
         * loop is still reading. */
        size_t off = 0;
        while (off < sizeof(tail)) {
            ssize_t n = send(fd, tail + off, sizeof(tail) - off, MSG_DONTWAIT);
            if (n <= 0)
                break;
            off += (size_t)n;
        }
        if (m[1]) { /* RST: what was not sent yet is dropped */
            struct linger lg = { 1, 0 };
            (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        } else {
            (void)shutdown(fd, SHUT_WR);
        }
        close(fd);
    }
    return NULL;
}

static void test_tail_then_end(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    int ctl[2];
    pthread_t th;
    assert_int_equal(pipe(ctl), 0);
    assert_int_equal(pthread_create(&th, NULL, tail_peer, &ctl[0]), 0);
    kt_listener *l;
    kt_addr a = tcp_any();
    struct end srv;
    assert_int_equal(kt_listen(loop, &a, 0, tail_accept, &srv, &l), 0);
    kt_addr where = bound_addr(l);
    for (int round = 0; round < 16; round++) {
        memset(&srv, 0, sizeof(srv));
        srv.loop = loop;
        srv.close_on_eof = KT_CLOSE_NOW + 1;
        int peer;
        if (round % 2) {
            peer = raw_connect(&where);
        } else {
            int sv[2];
            open_pair(loop, sv, &tail_cbs, &srv, &srv.s);
            assert_int_equal(kt_stream_read_start(srv.s), 0);
            peer = sv[1];
        }
        assert_int_equal(write(peer, "head", 4), 4);
        run_until(loop, &srv.done, KT_SEC(10), "the first bytes");
        assert_int_equal(kt_stream_write(srv.s, "+OK\r\n", 5), 0); /* left unread */
        /* Reading is under way: now the tail and the end. */
        int m[2] = { peer, round % 4 == 1 }; /* TCP: FIN and RST in turn */
        assert_int_equal(write(ctl[1], m, sizeof(m)), (ssize_t)sizeof(m));
        run_until(loop, &srv.closed, KT_SEC(10), "the end after the tail");
        assert_int_equal(srv.eofs + srv.errors, 1);
    }
    int stop[2] = { -1, 0 };
    assert_int_equal(write(ctl[1], stop, sizeof(stop)), (ssize_t)sizeof(stop));
    assert_int_equal(pthread_join(th, NULL), 0);
    close(ctl[0]);
    close(ctl[1]);
    kt_listener_close(l);
    loop_done(loop);
}

/* Nobody listens on a bound port: -ECONNREFUSED; a missing unix path
 * fails at once and is still reported through on_connect, later. */
static void test_connect_refused(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    kt_addr a = tcp_any();
    assert_int_equal(bind(fd, (struct sockaddr *)&a.ss, a.len), 0);
    a.len = sizeof(a.ss);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a.ss, &a.len), 0);

    struct end c = { .loop = loop };
    assert_int_equal(kt_stream_connect(loop, &a, KT_SEC(5), &end_cbs, &c, &c.s), 0);
    assert_false(c.connected); /* never inside the call */
    run_until(loop, &c.closed, KT_SEC(10), "refused");
    assert_int_equal(c.connect_status, -ECONNREFUSED);
    assert_int_equal(c.connects, 1);
    assert_int_equal(c.errors, 0);
    close(fd);

    struct end u = { .loop = loop };
    kt_addr ua = unix_addr("nobody-here.sock");
    assert_int_equal(kt_stream_connect(loop, &ua, 0, &end_cbs, &u, &u.s), 0);
    assert_false(u.connected);
    run_until(loop, &u.closed, KT_SEC(10), "unix refused");
    assert_true(u.connect_status == -ENOENT || u.connect_status == -ECONNREFUSED);
    loop_done(loop);
}

/* A listener whose accept queue is full (backlog 0, one connection queued
 * and never accepted) drops further SYNs: the connect must time out. */
static void test_connect_timeout(void **state)
{
    (void)state;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    kt_addr a = tcp_any();
    assert_int_equal(bind(lfd, (struct sockaddr *)&a.ss, a.len), 0);
    assert_int_equal(listen(lfd, 0), 0);
    a.len = sizeof(a.ss);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a.ss, &a.len), 0);

    /* Fill the queue: connect until one attempt stays in SYN-SENT. */
    int fillers[16], nfill = 0;
    bool full = false;
    while (!full && nfill < 16) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        fillers[nfill++] = fd;
        int rc = connect(fd, (struct sockaddr *)&a.ss, a.len);
        if (rc == 0)
            continue;
        assert_int_equal(errno, EINPROGRESS);
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        if (poll(&p, 1, 200) == 1)
            continue; /* established: the queue had room */
        struct tcp_info ti;
        socklen_t tl = sizeof(ti);
        assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl), 0);
        full = ti.tcpi_state == TCP_SYN_SENT;
    }
    assert_true(full);

    kt_loop *loop = unit_loop_new();
    struct end c = { .loop = loop };
    uint64_t it0 = iterations(loop);
    uint64_t t0 = kt_clock_ns();
    assert_int_equal(kt_stream_connect(loop, &a, KT_MSEC(200), &end_cbs, &c, &c.s), 0);
    run_until(loop, &c.closed, KT_SEC(10), "connect timeout");
    assert_int_equal(c.connect_status, -ETIMEDOUT);
    assert_int_equal(c.connects, 1);
    assert_true(kt_clock_ns() - t0 >= KT_MSEC(200));
    assert_true(iterations(loop) - it0 < 20); /* waited, did not spin */
    loop_done(loop);
    for (int i = 0; i < nfill; i++)
        close(fillers[i]);
    close(lfd);
}

/* ---- half-close and closing ---------------------------------------------------------- */

static void half_connect(kt_stream *s, int status, void *arg)
{
    end_connect(s, status, arg);
    assert_int_equal(kt_stream_write(s, "ping", 4), 0);
    assert_int_equal(kt_stream_shutdown(s), 0);
    assert_int_equal(kt_stream_write(s, "more", 4), -EPIPE);
    assert_int_equal(kt_stream_read_start(s), 0);
}

static void test_half_close(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    /* The server answers only once it has seen the client's FIN. */
    struct end srv = { .loop = loop, .reply_on_eof = "pong", .close_on_eof = KT_CLOSE_FLUSH + 1 };
    kt_listener *l;
    kt_addr a = tcp_any();
    assert_int_equal(kt_listen(loop, &a, 0, accept_end_cb, &srv, &l), 0);
    kt_addr where = bound_addr(l);

    struct end c = { .loop = loop, .close_on_eof = KT_CLOSE_NOW + 1 };
    kt_stream_cbs cbs = end_cbs;
    cbs.on_connect = half_connect;
    assert_int_equal(kt_stream_connect(loop, &where, KT_SEC(5), &cbs, &c, &c.s), 0);
    run_until(loop, &c.closed, KT_SEC(10), "half-close exchange");
    run_until(loop, &srv.closed, KT_SEC(10), "server closed");
    assert_int_equal(srv.rx_len, 4);
    assert_memory_equal(srv.rx, "ping", 4);
    assert_int_equal(srv.eofs, 1);
    assert_int_equal(c.rx_len, 4);
    assert_memory_equal(c.rx, "pong", 4);
    assert_int_equal(c.eofs, 1);
    assert_int_equal(c.errors + srv.errors, 0);
    kt_listener_close(l);
    loop_done(loop);
}

static void flag_close(kt_stream *s, void *arg)
{
    (void)s;
    *(bool *)arg = true;
}

/* KT_CLOSE_FLUSH right after queueing 8 MiB: every byte still arrives. */
struct flush_srv {
    size_t total;
    bool closed;
};

static void flush_accept(kt_listener *l, kt_stream *s, void *arg)
{
    (void)l;
    struct flush_srv *f = arg;
    char *buf = malloc(f->total);
    pat_fill(buf, f->total, 0);
    assert_int_equal(kt_stream_write(s, buf, f->total), 0);
    free(buf);
    kt_stream_cbs cbs = { .on_close = flag_close };
    kt_stream_set_cbs(s, &cbs, &f->closed);
    kt_stream_close(s, KT_CLOSE_FLUSH);
    kt_stream_close(s, KT_CLOSE_FLUSH); /* idempotent */
    assert_int_equal(kt_stream_write(s, "x", 1), -EPIPE);
}

static void test_close_flush(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct flush_srv f = { .total = 8 * 1024 * 1024 };
    kt_listener *l;
    kt_addr a = tcp_any();
    assert_int_equal(kt_listen(loop, &a, 0, flush_accept, &f, &l), 0);
    kt_addr where = bound_addr(l);
    struct end c = { .loop = loop, .check_pat = true, .pat_ok = true,
                     .close_on_eof = KT_CLOSE_NOW + 1 };
    kt_stream_cbs cbs = end_cbs;
    assert_int_equal(kt_stream_connect(loop, &where, KT_SEC(5), &cbs, &c, &c.s), 0);
    assert_int_equal(kt_stream_read_start(c.s), 0); /* before connecting: starts once connected */
    run_until(loop, &c.closed, KT_SEC(30), "flushed bytes read");
    run_until(loop, &f.closed, KT_SEC(30), "flushing server closed");
    assert_int_equal(c.rx_total, f.total);
    assert_true(c.pat_ok);
    assert_counts(&c, 1, 0, -1);
    kt_listener_close(l);
    loop_done(loop);
}

/* The server closes from inside on_read, leaving bytes unconsumed: no
 * callback but on_close follows. */
static void test_close_in_callbacks(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct end srv = { .loop = loop, .close_in_read = KT_CLOSE_NOW + 1 };
    kt_listener *l;
    kt_addr a = tcp_any();
    assert_int_equal(kt_listen(loop, &a, 0, accept_end_cb, &srv, &l), 0);
    kt_addr where = bound_addr(l);

    struct end c1 = { .loop = loop };
    assert_int_equal(kt_stream_connect(loop, &where, KT_SEC(5), &end_cbs, &c1, &c1.s), 0);
    assert_int_equal(kt_stream_read_start(c1.s), 0);
    assert_int_equal(kt_stream_write(c1.s, "hello", 5), 0); /* queued while connecting */
    run_until(loop, &srv.closed, KT_SEC(10), "server closed in on_read");
    assert_int_equal(srv.reads, 1);
    assert_int_equal(srv.eofs + srv.errors, 0);
    assert_int_equal(srv.closes, 1);
    run_until(loop, &c1.eof, KT_SEC(10), "client saw the close");
    kt_stream_close(c1.s, KT_CLOSE_RESET);
    run_until(loop, &c1.closed, KT_SEC(10), "c1 closed");
    assert_int_equal(c1.closes, 1);
    kt_listener_close(l);
    loop_done(loop);
}

/* on_read closes the stream and another one inside the same callback. */
static void test_close_other_in_read(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    int sv[2], sv2[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv2), 0);
    struct end victim = { .loop = loop };
    struct end killer = { .loop = loop, .close_in_read = KT_CLOSE_NOW + 1 };
    assert_int_equal(kt_stream_open_fd(loop, sv[0], &end_cbs, &killer, &killer.s), 0);
    assert_int_equal(kt_stream_open_fd(loop, sv2[0], &end_cbs, &victim, &victim.s), 0);
    killer.close_other = victim.s;
    assert_int_equal(kt_stream_read_start(killer.s), 0);
    assert_int_equal(kt_stream_read_start(victim.s), 0);
    /* Both become readable in the same wait; whichever runs first, the
     * victim never sees a callback after the killer closed it. */
    assert_int_equal(write(sv2[1], "v", 1), 1);
    assert_int_equal(write(sv[1], "k", 1), 1);
    run_until(loop, &victim.closed, KT_SEC(10), "victim closed");
    run_until(loop, &killer.closed, KT_SEC(10), "killer closed");
    assert_int_equal(killer.reads, 1);
    assert_true(victim.reads <= 1);
    assert_int_equal(victim.closes, 1);
    close(sv[1]);
    close(sv2[1]);
    loop_done(loop);
}

/* ---- kept input -------------------------------------------------------------------------- */

struct keeper {
    kt_loop *loop;
    kt_stream *s;
    int calls;
    uint64_t restart_iter, redeliver_iter;
    char seen[64];
    size_t seen_len;
    bool stopped, redelivered, eof, closed;
    kt_timer t;
};

/* First call: consume nothing and stop. Later calls: consume 3 at a time. */
static size_t keeper_read(kt_stream *s, const char *data, size_t len, void *arg)
{
    struct keeper *k = arg;
    k->calls++;
    if (!k->stopped) {
        k->stopped = true;
        kt_stream_read_stop(s);
        return 0;
    }
    if (!k->redelivered) {
        k->redelivered = true;
        k->redeliver_iter = iterations(k->loop);
    }
    size_t n = len < 3 ? len : 3;
    memcpy(k->seen + k->seen_len, data, n);
    k->seen_len += n;
    return n;
}

static void keeper_eof(kt_stream *s, void *arg)
{
    struct keeper *k = arg;
    k->eof = true;
    kt_stream_close(s, KT_CLOSE_NOW);
}

static void keeper_close(kt_stream *s, void *arg)
{
    (void)s;
    ((struct keeper *)arg)->closed = true;
}

static void keeper_restart(kt_timer *t, void *arg)
{
    (void)t;
    struct keeper *k = arg;
    k->restart_iter = iterations(k->loop);
    assert_int_equal(kt_stream_read_start(k->s), 0);
}

static void test_kept_input(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    int sv[2];
    struct keeper k = { .loop = loop };
    kt_stream_cbs cbs = { .on_read = keeper_read, .on_eof = keeper_eof, .on_close = keeper_close };
    open_pair(loop, sv, &cbs, &k, &k.s);
    kt_stream_set_data(k.s, &k);
    assert_ptr_equal(kt_stream_data(k.s), &k);
    kt_stream_set_cbs(k.s, &cbs, &k);
    assert_int_equal(kt_stream_read_start(k.s), 0);
    assert_int_equal(write(sv[1], "abcdefgh", 8), 8);
    run_until(loop, &k.stopped, KT_SEC(10), "first read");
    assert_int_equal(kt_stream_buffered(k.s), 8);
    assert_non_null(k.s->rbuf);
    /* Stopped: nothing is presented, however long we run. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(k.calls, 1);

    /* Restart from a timer: the kept bytes come back in the next iteration,
     * with no new byte from the peer, and are consumed 3 at a time. */
    kt_timer_init(loop, &k.t, keeper_restart, &k);
    assert_int_equal(kt_timer_start(&k.t, KT_MSEC(1), 0), 0);
    run_until(loop, &k.redelivered, KT_SEC(10), "redelivery");
    assert_true(k.redeliver_iter == k.restart_iter + 1);
    assert_int_equal(k.seen_len, 8);
    assert_memory_equal(k.seen, "abcdefgh", 8);
    assert_int_equal(kt_stream_buffered(k.s), 0);
    assert_null(k.s->rbuf); /* consumed all: no buffer held */

    /* Kept input then FIN: the kept bytes are presented before on_eof. */
    assert_int_equal(write(sv[1], "xy", 2), 2);
    shutdown(sv[1], SHUT_WR);
    k.seen_len = 0;
    run_until(loop, &k.eof, KT_SEC(10), "eof");
    assert_int_equal(k.seen_len, 2);
    assert_memory_equal(k.seen, "xy", 2);
    run_until(loop, &k.closed, KT_SEC(10), "closed");
    close(sv[1]);
    loop_done(loop);
}

/* An idle stream (everything consumed, everything sent) holds no buffer. */
static void test_idle_holds_nothing(void **state)
{
    (void)state;
    struct end e = { .echo = 1 };
    int peer;
    kt_loop *loop = loop_and_end(&e, &peer);
    assert_int_equal(kt_stream_read_start(e.s), 0);
    char buf[1000], rb[1000];
    for (int round = 0; round < 3; round++) {
        pat_fill(buf, sizeof(buf), (uint64_t)round * sizeof(buf));
        assert_int_equal(write(peer, buf, sizeof(buf)), (ssize_t)sizeof(buf));
        assert_int_equal(pump_read(loop, peer, rb, sizeof(rb)), sizeof(rb));
        assert_memory_equal(rb, buf, sizeof(buf));
        assert_int_equal(kt_stream_buffered(e.s), 0);
        assert_null(e.s->rbuf);
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0); /* completions retire */
    assert_int_equal(kt_stream_pending(e.s), 0);
    assert_null(e.s->out_head);
    kt_stream_close(e.s, KT_CLOSE_NOW);
    run_until(loop, &e.closed, KT_SEC(5), "closed");
    close(peer);
    loop_done(loop);
}

/* Large pipelined input: 4 MiB sent as fast as the socket takes it, read
 * by a callback that takes messages of `msg` bytes only whole (0: every
 * byte at once), so that kept input grows, is partly consumed (the rest
 * stays in place, rbuf advancing) and grows again; nothing is lost or
 * reordered, and FIN comes after the last byte. */
struct piper {
    kt_loop *loop;
    size_t msg;             /* bytes per message, 0 for a byte stream */
    size_t got;             /* bytes consumed (checked against the pattern) */
    bool bad, eof, closed;
};

static size_t piper_read(kt_stream *s, const char *data, size_t len, void *arg)
{
    struct piper *sl = arg;
    (void)s;
    size_t take = sl->msg ? (len >= sl->msg ? sl->msg : 0) : len;
    if (take) {
        char want[4096];
        for (size_t off = 0; off < take; off += sizeof(want)) {
            size_t n = take - off < sizeof(want) ? take - off : sizeof(want);
            pat_fill(want, n, sl->got + off);
            if (memcmp(data + off, want, n) != 0)
                sl->bad = true;
        }
        sl->got += take;
    }
    return take;
}

static void piper_eof(kt_stream *s, void *arg)
{
    ((struct piper *)arg)->eof = true;
    kt_stream_close(s, KT_CLOSE_NOW);
}

static void piper_close(kt_stream *s, void *arg)
{
    (void)s;
    ((struct piper *)arg)->closed = true;
}

static void pipeline_case(size_t msg)
{
    const size_t total = 4u << 20;
    kt_loop *loop = unit_loop_new();
    struct piper sl = { .loop = loop, .msg = msg };
    kt_stream_cbs cbs = { .on_read = piper_read, .on_eof = piper_eof, .on_close = piper_close };
    int sv[2];
    kt_stream *s;
    open_pair(loop, sv, &cbs, &sl, &s);
    /* A deep socket buffer, so that megabytes wait at once. */
    int big = 4 << 20;
    if (setsockopt(sv[1], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big)) < 0)
        (void)setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK);
    /* Fill the socket before the stream reads at all. */
    static char chunk[256 << 10];
    size_t sent = 0;
    uint64_t end = kt_clock_ns() + KT_SEC(30);
    for (bool started = false; !sl.closed;) {
        while (sent < total) {
            size_t n = total - sent < sizeof(chunk) ? total - sent : sizeof(chunk);
            pat_fill(chunk, n, sent);
            ssize_t w = write(sv[1], chunk, n);
            if (w <= 0)
                break;
            sent += (size_t)w;
            if (sent == total)
                shutdown(sv[1], SHUT_WR);
        }
        if (!started) {
            assert_int_equal(kt_stream_read_start(s), 0);
            started = true;
        }
        assert_int_equal(kt_loop_run(loop, KT_RUN_ONCE), 0);
        if (kt_clock_ns() > end)
            fail_msg("large pipeline (msg %zu): %zu of %zu bytes", msg, sl.got, total);
    }
    assert_false(sl.bad);
    assert_true(sl.eof);
    assert_int_equal(sl.got, msg ? total - total % msg : total); /* an unfinished one stays */
    close(sv[1]);
    loop_done(loop);
}

static void test_large_pipeline(void **state)
{
    (void)state;
    pipeline_case(0);          /* every byte taken at once */
    pipeline_case(1u << 20);   /* 1 MiB messages, taken whole */
    pipeline_case(100000);     /* messages that end mid-read */
}

/* ---- listeners ----------------------------------------------------------------------------- */

struct counter {
    int accepted;
    bool got;
    kt_stream *s[8];
};

static void count_accept(kt_listener *l, kt_stream *s, void *arg)
{
    (void)l;
    struct counter *c = arg;
    c->s[c->accepted++] = s;
    c->got = true;
}

static void test_listener_pause_resume(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct counter cnt = { 0 };
    kt_listener *l;
    kt_addr a = tcp_any();
    assert_int_equal(kt_listen(loop, &a, 0, count_accept, &cnt, &l), 0);
    kt_addr where = bound_addr(l);
    kt_listener_pause(l);
    struct end c = { .loop = loop };
    assert_int_equal(kt_stream_connect(loop, &where, KT_SEC(5), &end_cbs, &c, &c.s), 0);
    run_until(loop, &c.connected, KT_SEC(10), "connected into the backlog");
    assert_int_equal(c.connect_status, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(cnt.accepted, 0);
    assert_int_equal(kt_listener_resume(l), 0);
    run_until(loop, &cnt.got, KT_SEC(10), "accepted after resume");
    assert_int_equal(cnt.accepted, 1);
    char peer[64];
    kt_stream_peer(cnt.s[0], peer, sizeof(peer));
    assert_true(strncmp(peer, "127.0.0.1:", 10) == 0);
    assert_true(kt_stream_fd(cnt.s[0]) >= 0);
    assert_ptr_equal(kt_stream_loop(cnt.s[0]), loop);
    kt_stream_close(cnt.s[0], KT_CLOSE_NOW);
    kt_stream_close(c.s, KT_CLOSE_NOW);
    run_until(loop, &c.closed, KT_SEC(5), "closed");
    kt_listener_close(l);
    kt_listener_close(l); /* idempotent */
    loop_done(loop);
}

/* A stale socket file is replaced; a live socket or a regular file is not. */
static void test_unix_paths(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    kt_addr a = unix_addr("stale.sock");
    const char *path = ((struct sockaddr_un *)&a.ss)->sun_path;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a.ss, a.len), 0);
    close(fd); /* the file stays: a stale socket */
    struct counter cnt = { 0 };
    kt_listener *l, *l2;
    assert_int_equal(kt_listen(loop, &a, 0, count_accept, &cnt, &l), 0);
    assert_int_equal(kt_listen(loop, &a, 0, count_accept, &cnt, &l2), -EADDRINUSE);
    kt_listener_close(l);

    kt_addr f = unix_addr("regular-file");
    const char *fpath = ((struct sockaddr_un *)&f.ss)->sun_path;
    int ffd = open(fpath, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(ffd >= 0);
    close(ffd);
    assert_int_equal(kt_listen(loop, &f, 0, count_accept, &cnt, &l2), -EADDRINUSE);
    assert_int_equal(unlink(fpath), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), -1);
    loop_done(loop);
}

/* ---- EMFILE --------------------------------------------------------------------------------- */

/*
 * In a child with a tiny descriptor limit: connections flood in (from the
 * parent, whose descriptors do not count), the child holds every stream it
 * accepts until it runs out, then must pause accepting (few iterations over
 * the pressure window, not a spin), shed connections, and, once it lets its
 * streams go, accept and serve a new client.
 */
struct emfile {
    kt_loop *loop;
    kt_stream *held[64];
    int nheld;
    bool released, done;
    uint64_t first_accept_iter;
    uint64_t window_iters;
    int ctl;          /* pipe to the parent */
    kt_timer window;
    int served;
    kt_stream *pinged; /* the post-pressure client that sent data */
    struct rlimit saved;
};

static size_t emfile_echo(kt_stream *s, const char *data, size_t len, void *arg)
{
    struct emfile *m = arg;
    m->pinged = s;
    (void)kt_stream_write(s, data, len);
    return len;
}

/* Flood connections the parent closed come and go; the one that sent
 * data ends the test once it was answered. */
static void emfile_eof(kt_stream *s, void *arg)
{
    struct emfile *m = arg;
    if (s == m->pinged) {
        m->served++;
        m->done = true;
    }
    kt_stream_close(s, KT_CLOSE_FLUSH);
}

static void emfile_error(kt_stream *s, int err, void *arg)
{
    (void)err;
    (void)arg;
    kt_stream_close(s, KT_CLOSE_NOW);
}

static void emfile_accept(kt_listener *l, kt_stream *s, void *arg)
{
    (void)l;
    struct emfile *m = arg;
    if (!m->released) {
        if (m->nheld == 0) {
            m->first_accept_iter = iterations(m->loop);
            kt_timer_start(&m->window, KT_MSEC(600), 0);
        }
        if (m->nheld < 64)
            m->held[m->nheld++] = s;
        return;
    }
    kt_stream_cbs cbs = { .on_read = emfile_echo, .on_eof = emfile_eof, .on_error = emfile_error };
    kt_stream_set_cbs(s, &cbs, m);
    kt_stream_read_start(s);
}

/* End of the pressure window: count, let go, tell the parent. */
static void emfile_window(kt_timer *t, void *arg)
{
    (void)t;
    struct emfile *m = arg;
    m->window_iters = iterations(m->loop) - m->first_accept_iter;
    for (int i = 0; i < m->nheld; i++)
        kt_stream_close(m->held[i], KT_CLOSE_NOW);
    if (setrlimit(RLIMIT_NOFILE, &m->saved) < 0) /* the pressure is gone */
        _exit(4);
    m->released = true;
    int msg[2] = { 'R', m->nheld };
    if (write(m->ctl, msg, sizeof(msg)) != (ssize_t)sizeof(msg))
        _exit(3);
}

static int emfile_child(int ctl)
{
    alarm(60); /* a hung child ends the test (the default action kills it) */
    kt_loop *loop;
    if (kt_loop_new(&loop, NULL) < 0)
        return 10;
    struct emfile m = { .loop = loop, .ctl = ctl };
    kt_timer_init(loop, &m.window, emfile_window, &m);
    kt_listener *l;
    kt_addr a;
    kt_addr_parse("127.0.0.1:0", &a);
    if (kt_listen(loop, &a, 0, emfile_accept, &m, &l) < 0)
        return 11;
    kt_addr where;
    memset(&where, 0, sizeof(where)); /* sent whole through the pipe */
    kt_listener_addr(l, &where);
    /* Room for a handful of connections beyond what is open now. */
    int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
    close(probe);
    if (getrlimit(RLIMIT_NOFILE, &m.saved) < 0)
        return 12;
    struct rlimit rl = { .rlim_cur = (rlim_t)probe + 6, .rlim_max = m.saved.rlim_max };
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 12;
    if (write(ctl, &where, sizeof(where)) != (ssize_t)sizeof(where))
        return 13;
    while (!m.done)
        if (kt_loop_run(loop, KT_RUN_ONCE) < 0)
            return 14;
    for (int i = 0; i < 5; i++)
        kt_loop_run(loop, KT_RUN_NOWAIT);
    int rc = 0;
    if (m.nheld < 1 || m.nheld >= 10)
        rc = 20; /* should have run out after a few */
    else if (m.window_iters > 100)
        rc = 21; /* a busy loop */
    else if (m.served != 1)
        rc = 22;
    fprintf(rc ? stderr : stdout, "# emfile child: held %d, iterations over 600 ms of pressure %llu, served %d\n",
            m.nheld, (unsigned long long)m.window_iters, m.served);
    fflush(NULL);
    kt_listener_close(l);
    kt_loop_free(loop);
    return rc;
}

static void test_emfile(void **state)
{
    (void)state;
    int ctl[2];
    assert_int_equal(pipe(ctl), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ctl[0]);
        _exit(emfile_child(ctl[1]));
    }
    close(ctl[1]);
    kt_addr where;
    assert_int_equal(read(ctl[0], &where, sizeof(where)), (ssize_t)sizeof(where));
    /* Flood: the kernel completes these handshakes from the backlog. */
    int flood[40];
    for (int i = 0; i < 40; i++)
        flood[i] = raw_connect(&where);
    int msg[2];
    assert_int_equal(read(ctl[0], msg, sizeof(msg)), (ssize_t)sizeof(msg)); /* the child let go */
    assert_int_equal(msg[0], 'R');
    /* The held ones (just let go) and at least one shed get closed. A
     * backend may complete a close after the call returns (io_uring
     * submits it), so wait for the closes, with a deadline as a net. */
    int closed = 0;
    bool gone[40] = { false };
    for (int tries = 0; closed < msg[1] + 1 && tries < 400; tries++) {
        if (tries > 0)
            (void)poll(NULL, 0, 25);
        for (int i = 0; i < 40; i++) {
            struct pollfd p = { .fd = flood[i], .events = POLLIN };
            char b;
            if (!gone[i] && poll(&p, 1, 0) == 1 && read(flood[i], &b, 1) <= 0) {
                gone[i] = true;
                closed++;
            }
        }
    }
    assert_true(closed >= msg[1] + 1);
    for (int i = 0; i < 40; i++)
        close(flood[i]); /* make room for the next client */
    /* Pressure gone (the child's limit is back): a new client is served. */
    int fd = raw_connect(&where);
    assert_int_equal(write(fd, "ping", 4), 4);
    char buf[8];
    size_t got = 0;
    while (got < 4) {
        ssize_t n = read(fd, buf + got, sizeof(buf) - got);
        assert_true(n > 0);
        got += (size_t)n;
    }
    assert_memory_equal(buf, "ping", 4);
    shutdown(fd, SHUT_WR);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(fd);
    close(ctl[0]);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- misc ------------------------------------------------------------------------------------ */

/* A reservation bigger than a block gets a block of its own. */
static void test_out_big_reserve(void **state)
{
    (void)state;
    struct end e = { 0 };
    int peer;
    kt_loop *loop = loop_and_end(&e, &peer);
    kt_out out = kt_stream_out(e.s);
    size_t n = 100000;
    char *p = out.reserve(out.ctx, n);
    assert_non_null(p);
    pat_fill(p, n, 0);
    out.commit(out.ctx, n);
    p = out.reserve(out.ctx, 10); /* then small ones after it */
    assert_non_null(p);
    pat_fill(p, 10, n);
    out.commit(out.ctx, 10);
    assert_int_equal(kt_stream_pending(e.s), n + 10);
    kt_stream_close(e.s, KT_CLOSE_FLUSH);
    assert_null(out.reserve(out.ctx, 1));
    char *buf = malloc(n + 11);
    size_t got = pump_read(loop, peer, buf, n + 11); /* stops at EOF */
    assert_int_equal(got, n + 10);
    assert_true(pat_check(buf, got, 0));
    free(buf);
    run_until(loop, &e.closed, KT_SEC(5), "closed");
    close(peer);
    loop_done(loop);
}

/* ---- memory discipline ------------------------------------------------------------------- */

/* Blocks in s's output chain; *max_size gets the largest. */
static size_t out_blocks(const kt_stream *s, size_t *max_size)
{
    size_t n = 0;
    *max_size = 0;
    for (const kt__block *b = s->out_head; b; b = b->next, n++)
        if (b->size > *max_size)
            *max_size = b->size;
    return n;
}

/* Output: a short reply takes a small block; a long write spans blocks
 * that grow; a drained stream holds nothing; spares stay bounded and an
 * unused spare is freed by the trim. */
static void test_out_mem(void **state)
{
    (void)state;
    struct end e = { 0 };
    int peer;
    kt_loop *loop = loop_and_end(&e, &peer);
    assert_int_equal(kt__stream_mem(e.s), 0);

    /* A 30-byte reply (through the RESP encoder) holds one small block. */
    kt_out out = kt_stream_out(e.s);
    assert_int_equal(kt_resp_array(&out, 3), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(kt_resp_bulk_i64(&out, 100 + i), 0);
    assert_int_equal(kt_stream_pending(e.s), 31);
    size_t max;
    assert_int_equal(out_blocks(e.s, &max), 1);
    assert_true(kt__stream_mem(e.s) <= 1024);
    char rb[64];
    assert_int_equal(pump_read(loop, peer, rb, 31), 31);
    assert_memory_equal(rb, "*3\r\n$3\r\n100\r\n$3\r\n101\r\n$3\r\n102\r\n", 31);
    for (int i = 0; i < 2; i++)
        assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0); /* completions retire */
    assert_null(e.s->out_head);
    assert_int_equal(kt__stream_mem(e.s), 0);

    /* A reservation past the small block's room: a block that holds it,
     * not one made to measure. */
    assert_int_equal(kt_stream_write(e.s, "+OK\r\n", 5), 0);
    assert_non_null(out.reserve(out.ctx, 8192 + 26));
    out.commit(out.ctx, 0);
    assert_int_equal(out_blocks(e.s, &max), 2);
    assert_int_equal(max, KT__BLOCK_SIZE);
    assert_true(e.s->out_head->size < 1024);

    /* 1 MiB more: blocks grow to the largest class, never beyond. */
    size_t big = 1024 * 1024;
    char *buf = malloc(big + 5);
    assert_non_null(buf);
    pat_fill(buf, big, 0);
    assert_int_equal(kt_stream_write(e.s, buf, big), 0);
    size_t n = out_blocks(e.s, &max);
    assert_true(n >= big / KT__BLOCK_SIZE);
    assert_int_equal(max, KT__BLOCK_SIZE);
    assert_true(kt__stream_mem(e.s) <= big + big / 16);
    assert_int_equal(kt_stream_pending(e.s), big + 5);
    assert_int_equal(pump_read(loop, peer, buf, 5), 5);
    assert_memory_equal(buf, "+OK\r\n", 5);
    assert_int_equal(pump_read(loop, peer, buf, big), big);
    assert_true(pat_check(buf, big, 0));
    free(buf);
    for (int i = 0; i < 2; i++)
        assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(kt_stream_pending(e.s), 0);
    assert_null(e.s->out_head);
    assert_int_equal(kt__stream_mem(e.s), 0);

    /* Spares are bounded: 2 MiB over the three classes. */
    assert_true(kt__blocks_spare(loop) <= 2 * 1024 * 1024);

    /* Two trims with no block taken in between free every spare. */
    kt__blocks_trim(loop);
    kt__blocks_trim(loop);
    assert_int_equal(kt__blocks_spare(loop), 0);
    /* A burst of 2,000 small blocks keeps 1,024 (512 KiB) of them. */
    kt__block *burst[2000];
    for (int i = 0; i < 2000; i++)
        assert_non_null(burst[i] = kt__block_get(loop, 0));
    for (int i = 0; i < 2000; i++)
        kt__block_put(loop, burst[i]);
    assert_int_equal(kt__blocks_spare(loop), 1024 * 512);
    /* A trim frees the spares nobody took since the one before. */
    kt__blocks_trim(loop);
    assert_int_equal(kt__blocks_spare(loop), 1024 * 512); /* all were taken */
    for (int i = 0; i < 24; i++)
        burst[i] = kt__block_get(loop, 0);
    for (int i = 0; i < 24; i++)
        kt__block_put(loop, burst[i]);
    kt__blocks_trim(loop);
    assert_int_equal(kt__blocks_spare(loop), 24 * 512);

    kt_stream_close(e.s, KT_CLOSE_NOW);
    run_until(loop, &e.closed, KT_SEC(5), "closed");
    close(peer);
    loop_done(loop);
}

/* A line reader: consumes whole lines only (0 when none is complete),
 * appending them to what it has seen. */
struct lines {
    struct end e;
    char *seen;
    size_t seen_len, seen_cap;
    size_t lines;
};

static size_t lines_read(kt_stream *s, const char *data, size_t len, void *arg)
{
    (void)s;
    struct lines *l = arg;
    const char *nl = memrchr(data, '\n', len);
    if (nl == NULL)
        return 0;
    size_t n = (size_t)(nl - data) + 1;
    if (l->seen_len + n > l->seen_cap) {
        l->seen_cap = 2 * (l->seen_len + n);
        l->seen = realloc(l->seen, l->seen_cap);
        assert_non_null(l->seen);
    }
    memcpy(l->seen + l->seen_len, data, n);
    l->seen_len += n;
    for (size_t i = 0; i < n; i++)
        l->lines += data[i] == '\n';
    l->e.reads++;
    return n;
}

/* Write all of buf to the plain socket fd while the loop runs. */
static void pump_write(kt_loop *loop, int fd, const char *buf, size_t len)
{
    uint64_t end = kt_clock_ns() + KT_SEC(10);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        }
        assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
        if (kt_clock_ns() > end)
            fail_msg("pump_write: %zu bytes left", len);
    }
}

/* Run the loop until the reader has seen want bytes. */
static void lines_wait(kt_loop *loop, struct lines *l, size_t want)
{
    uint64_t end = kt_clock_ns() + KT_SEC(10);
    while (l->seen_len < want) {
        assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
        if (kt_clock_ns() > end)
            fail_msg("lines_wait: %zu of %zu bytes", l->seen_len, want);
        usleep(100);
    }
}

/* Input: a kept partial line lives in a small block; lines split across
 * reads arrive whole and in order; a 300 KiB line grows rbuf past the
 * block classes; consumed input leaves nothing behind. */
static void test_rbuf_mem(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    int sv[2];
    struct lines l = { .e.loop = loop };
    kt_stream_cbs cbs = { .on_read = lines_read, .on_error = end_error, .on_close = end_close };
    open_pair(loop, sv, &cbs, &l, &l.e.s);
    assert_int_equal(kt_stream_read_start(l.e.s), 0);

    /* A partial line is kept, in a small block. */
    assert_int_equal(write(sv[1], "abc", 3), 3);
    uint64_t end = kt_clock_ns() + KT_SEC(10);
    while (kt_stream_buffered(l.e.s) < 3) {
        assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
        assert_true(kt_clock_ns() < end);
    }
    assert_true(kt__stream_mem(l.e.s) <= 512);
    assert_true(l.e.s->flags & KT__S_RBLOCK);

    /* 4,000 numbered lines in pieces of 777 bytes, so that reads end
     * mid-line, then a partial one. */
    size_t cap = 200000, len = 0;
    char *txt = malloc(cap);
    assert_non_null(txt);
    len += (size_t)snprintf(txt, cap, "abcdef\n");
    for (int i = 0; i < 4000; i++)
        len += (size_t)snprintf(txt + len, cap - len, "line %d of the pipeline, padded\n", i);
    size_t whole = len;
    memcpy(txt + len, "tail", 4);
    len += 4;
    for (size_t off = 3; off < len; off += 777)
        pump_write(loop, sv[1], txt + off, len - off < 777 ? len - off : 777);
    lines_wait(loop, &l, whole);
    assert_int_equal(l.seen_len, whole);
    assert_memory_equal(l.seen, txt, whole);
    assert_int_equal(l.lines, 4001);
    end = kt_clock_ns() + KT_SEC(10);
    while (kt_stream_buffered(l.e.s) < 4) {
        assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
        assert_true(kt_clock_ns() < end);
    }
    assert_int_equal(kt_stream_buffered(l.e.s), 4);
    assert_true(kt__stream_mem(l.e.s) <= 512);

    /* One 300 KiB line after the kept "tail". */
    size_t big = 300 * 1024;
    char *line = malloc(big);
    assert_non_null(line);
    pat_fill(line, big - 1, 0);
    for (size_t i = 0; i < big - 1; i++)
        if (line[i] == '\n')
            line[i] = ' ';
    line[big - 1] = '\n';
    pump_write(loop, sv[1], line, big);
    lines_wait(loop, &l, whole + 4 + big);
    assert_memory_equal(l.seen + whole, "tail", 4);
    assert_memory_equal(l.seen + whole + 4, line, big);
    assert_int_equal(kt_stream_buffered(l.e.s), 0);
    assert_null(l.e.s->rbuf);
    assert_int_equal(kt__stream_mem(l.e.s), 0);
    free(line);
    free(txt);
    free(l.seen);

    kt_stream_close(l.e.s, KT_CLOSE_NOW);
    run_until(loop, &l.e.closed, KT_SEC(5), "closed");
    close(sv[1]);
    loop_done(loop);
}

/* Streams left open at kt_loop_free are closed (on_close runs), not leaked. */
static void test_free_closes_leftovers(void **state)
{
    (void)state;
    struct end e = { 0 };
    int peer;
    kt_loop *loop = loop_and_end(&e, &peer);
    assert_int_equal(kt_stream_write(e.s, "abc", 3), 0);
    kt_listener *l;
    kt_addr a = tcp_any();
    struct counter cnt = { 0 };
    assert_int_equal(kt_listen(loop, &a, 0, count_accept, &cnt, &l), 0);
    kt_loop_free(loop);
    assert_true(e.closed);
    close(peer);
}

/* ---- listener close callbacks and shared ports ---------------------------------- */

struct lclose {
    kt_listener *l;
    int calls;
    bool done;
};

static void lclose_cb(kt_listener *l, void *arg)
{
    struct lclose *c = arg;
    assert_ptr_equal(l, c->l);
    c->calls++;
    c->done = true;
}

/* The close callback runs once, from the loop, never inside the call. */
static void test_listener_close_cb(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    struct counter cnt = { 0 };
    struct lclose lc = { 0 };
    kt_addr a = tcp_any();
    assert_int_equal(kt_listen(loop, &a, 0, count_accept, &cnt, &lc.l), 0);
    kt_listener_close_notify(lc.l, lclose_cb, &lc);
    assert_int_equal(lc.calls, 0);
    run_until(loop, &lc.done, KT_SEC(10), "listener close callback");
    assert_int_equal(lc.calls, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(kt_loop_run(loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(lc.calls, 1);

    /* A callback set on a listener already closing is the one that runs. */
    struct lclose lc2 = { 0 };
    assert_int_equal(kt_listen(loop, &a, 0, count_accept, &cnt, &lc2.l), 0);
    kt_listener_close(lc2.l);
    kt_listener_close_notify(lc2.l, lclose_cb, &lc2);
    run_until(loop, &lc2.done, KT_SEC(10), "callback set while closing");
    assert_int_equal(lc2.calls, 1);
    assert_int_equal(cnt.accepted, 0);
    loop_done(loop);
}

/* Accepted streams are closed at once; the count is what matters. */
struct taker {
    int accepted;
    int *total;
};

static void take_accept(kt_listener *l, kt_stream *s, void *arg)
{
    (void)l;
    struct taker *t = arg;
    t->accepted++;
    (*t->total)++;
    kt_stream_close(s, KT_CLOSE_NOW);
}

/* Connect n blocking clients to where and run until the listeners have
 * accepted them all (the clients close at once: the kernel completes the
 * handshake from the backlog). */
static void connect_n(kt_loop *loop, const kt_addr *where, int n, const int *total, int want)
{
    for (int i = 0; i < n; i++)
        close(raw_connect(where));
    kt_timer dl;
    kt_timer_init(loop, &dl, deadline_cb, (void *)"accepting on a shared port");
    assert_int_equal(kt_timer_start(&dl, KT_SEC(10), 0), 0);
    while (*total < want)
        assert_int_equal(kt_loop_run(loop, KT_RUN_ONCE), 0);
    kt_timer_stop(&dl);
}

/* Two listeners with KT_LISTEN_REUSEPORT share one port (a third without
 * it is refused): between them they accept every connection, and once one
 * has closed the other takes them all. */
static void test_listen_reuseport(void **state)
{
    (void)state;
    kt_loop *loop = unit_loop_new();
    int total = 0;
    struct taker t1 = { .total = &total }, t2 = { .total = &total }, t3 = { .total = &total };
    kt_listen_options o = { .backlog = 64, .flags = KT_LISTEN_REUSEPORT };
    kt_listener *l1, *l2, *l3 = NULL;
    kt_addr a = tcp_any();
    assert_int_equal(kt_listen_with(loop, &a, &o, take_accept, &t1, &l1), 0);
    kt_addr where = bound_addr(l1);
    assert_int_equal(kt_listen_with(loop, &where, &o, take_accept, &t2, &l2), 0);
    assert_int_equal(kt_listen(loop, &where, 0, take_accept, &t3, &l3), -EADDRINUSE);
    assert_null(l3);
    kt_addr w2 = bound_addr(l2);
    assert_int_equal(((struct sockaddr_in *)&w2.ss)->sin_port,
                     ((struct sockaddr_in *)&where.ss)->sin_port);

    connect_n(loop, &where, 32, &total, 32);
    assert_int_equal(t1.accepted + t2.accepted, 32);

    struct lclose lc = { .l = l1 };
    kt_listener_close_notify(l1, lclose_cb, &lc);
    run_until(loop, &lc.done, KT_SEC(10), "first listener closed");
    int before = t2.accepted;
    connect_n(loop, &where, 4, &total, 36);
    assert_int_equal(t2.accepted, before + 4);
    kt_listener_close(l2);

    /* Options checked: an unknown flag, a shared unix path. */
    kt_listen_options bad = { .flags = 0x80 };
    assert_int_equal(kt_listen_with(loop, &a, &bad, take_accept, &t3, &l3), -EINVAL);
    kt_addr u = unix_addr("shared.sock");
    assert_int_equal(kt_listen_with(loop, &u, &o, take_accept, &t3, &l3), -EINVAL);
    assert_null(l3);
    assert_int_equal(kt_listen_with(loop, &a, NULL, take_accept, &t3, &l3), 0); /* defaults */
    kt_listener_close(l3);
    loop_done(loop);
}

/* ---- no SIGPIPE -------------------------------------------------------------------- */

/* With SIGPIPE at its default action (which ends the process), writing to
 * a peer that has closed gives on_error with -EPIPE: every backend sends
 * with MSG_NOSIGNAL, for one vector and for several. The library has not
 * changed the disposition meanwhile. */
static void test_epipe_no_signal(void **state)
{
    (void)state;
    struct sigaction old;
    unit_sigpipe_default(&old);
    kt_loop *loop = unit_loop_new();
    static char big[100000];
    const size_t sizes[] = { 1, sizeof(big) }; /* one block; a chain of them */
    for (size_t i = 0; i < KT__ARRAY_LEN(sizes); i++) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        struct end e = { .loop = loop };
        assert_int_equal(kt_stream_open_fd(loop, sv[0], &end_cbs, &e, &e.s), 0);
        close(sv[1]);
        memset(big, 'x', sizes[i]);
        assert_int_equal(kt_stream_write(e.s, big, sizes[i]), 0);
        run_until(loop, &e.closed, KT_SEC(10), "on_error after writing to a closed peer");
        assert_int_equal(e.errors, 1);
        assert_int_equal(e.err, -EPIPE);
    }
    assert_true(unit_sigpipe_is_default());
    loop_done(loop);
    unit_sigpipe_restore(&old);
}

/* ---- batch wait ------------------------------------------------------------------ */

/* Kernel release at least major.minor (uname). */
static bool kernel_at_least(int major, int minor)
{
    struct utsname u;
    int ma = 0, mi = 0;
    assert_int_equal(uname(&u), 0);
    if (sscanf(u.release, "%d.%d", &ma, &mi) != 2)
        return false;
    return ma > major || (ma == major && mi >= minor);
}

static uint64_t batch_waits(kt_loop *loop)
{
    kt_loop_stats st;
    kt_loop_get_stats(loop, &st);
    return st.batch_waits;
}

/* Run until every end has received `want` bytes in all. */
static void run_until_rx(kt_loop *loop, struct end *e, size_t n, size_t want, const char *what)
{
    kt_timer guard;
    kt_timer_init(loop, &guard, deadline_cb, (void *)what);
    assert_int_equal(kt_timer_start(&guard, KT_SEC(10), 0), 0);
    for (;;) {
        size_t i = 0;
        while (i < n && e[i].rx_total >= want)
            i++;
        if (i == n)
            break;
        assert_int_equal(kt_loop_run(loop, KT_RUN_ONCE), 0);
    }
    kt_timer_stop(&guard);
}

/* One blocking wait: a timer, run until it fires (the loop's time brought
 * up to date first, so that a pause of the test does not make it due at
 * once and the poll not wait at all). */
static void one_wait(kt_loop *loop)
{
    bool fired = false;
    kt_timer t;
    kt_timer_init(loop, &t, unit_guard_cb, &fired);
    kt_loop_update_time(loop);
    assert_int_equal(kt_timer_start(&t, KT_MSEC(100), 0), 0);
    run_until(loop, &fired, KT_SEC(10), "a 1 ms timer");
}

/* kt_loop_set_batch_wait: io_uring on Linux 6.12 and later takes it,
 * other backends say -ENOTSUP. A burst of completions makes the next
 * blocking wait a batch wait; a wait after a quiet spell is not one; bytes
 * sent after a burst are all delivered. */
static void test_batch_wait(void **state)
{
    (void)state;
    enum { N = 8 };
    kt_loop *loop = unit_loop_new();
    assert_int_equal(kt_loop_set_batch_wait(loop, KT_MSEC(1), 0), -EINVAL);
    assert_int_equal(kt_loop_set_batch_wait(loop, 0, 32), 0);
    int r = kt_loop_set_batch_wait(loop, KT_MSEC(20), N);
    if (strcmp(kt_loop_backend(loop), "io_uring") != 0 || r == -ENOTSUP) {
        assert_int_equal(r, -ENOTSUP);
        /* io_uring says so only where the kernel cannot */
        assert_false(strcmp(kt_loop_backend(loop), "io_uring") == 0 && kernel_at_least(6, 12));
        loop_done(loop);
        return;
    }
    assert_int_equal(r, 0);
    struct end e[N];
    int peer[N];
    memset(e, 0, sizeof e);
    for (int i = 0; i < N; i++) {
        int sv[2];
        e[i].loop = loop;
        open_pair(loop, sv, &end_cbs, &e[i], &e[i].s);
        peer[i] = sv[1];
        assert_int_equal(kt_stream_read_start(e[i].s), 0);
    }
    one_wait(loop); /* the receives armed */
    one_wait(loop); /* and a quiet spell behind them */
    uint64_t before = batch_waits(loop);
    one_wait(loop);
    assert_int_equal(batch_waits(loop), before); /* quiet: no batch */
    /* a burst: one byte on every stream */
    for (int i = 0; i < N; i++)
        assert_int_equal(write(peer[i], "x", 1), 1);
    run_until_rx(loop, e, N, 1, "a byte on each stream");
    one_wait(loop);
    assert_int_equal(batch_waits(loop), before + 1); /* the wait after the burst */
    one_wait(loop);
    assert_int_equal(batch_waits(loop), before + 1); /* quiet again */
    /* another burst, and a byte sent after it */
    for (int i = 0; i < N; i++)
        assert_int_equal(write(peer[i], "y", 1), 1);
    run_until_rx(loop, e, N, 2, "a second byte on each stream");
    assert_int_equal(write(peer[0], "z", 1), 1);
    run_until_rx(loop, e, 1, 3, "a byte after a burst");
    assert_memory_equal(e[0].rx, "xyz", 3);
    /* a timer due before the gathering would end ends it: with 30 s to
     * gather, after a burst, a 10 ms timer fires before a 10 s guard (the
     * guard fails the test if it fires first or with it) */
    assert_int_equal(kt_loop_set_batch_wait(loop, KT_SEC(30), N), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(write(peer[i], "w", 1), 1);
    run_until_rx(loop, e + 1, N - 1, 3, "a third byte on each stream");
    run_until_rx(loop, e, 1, 4, "a fourth byte on the first");
    uint64_t waits = batch_waits(loop);
    kt_timer guard, t;
    bool fired = false;
    kt_timer_init(loop, &guard, deadline_cb, (void *)"a 10 ms timer during a 30 s batch wait");
    kt_timer_init(loop, &t, unit_guard_cb, &fired);
    kt_loop_update_time(loop);
    assert_int_equal(kt_timer_start(&guard, KT_SEC(10), 0), 0);
    assert_int_equal(kt_timer_start(&t, KT_MSEC(10), 0), 0);
    while (!fired)
        assert_int_equal(kt_loop_run(loop, KT_RUN_ONCE), 0);
    kt_timer_stop(&guard);
    assert_int_equal(batch_waits(loop), waits + 1); /* it was a batch wait */
    for (int i = 0; i < N; i++) {
        close(peer[i]);
        kt_stream_close(e[i].s, KT_CLOSE_NOW);
    }
    for (int i = 0; i < N; i++)
        run_until(loop, &e[i].closed, KT_SEC(10), "streams closed");
    assert_int_equal(kt_loop_set_batch_wait(loop, 0, 0), 0);
    loop_done(loop);
}

/* ---- a request before reading starts ------------------------------------------------ */

struct early {
    struct end e;
    kt_timer t;
    bool deferred; /* read_start from a timer, not from the accept callback */
};

static void early_start(kt_timer *t, void *arg)
{
    (void)t;
    struct early *x = arg;
    assert_int_equal(kt_stream_read_start(x->e.s), 0);
}

static void early_accept(kt_listener *l, kt_stream *s, void *arg)
{
    struct early *x = arg;
    if (!x->deferred) {
        accept_end_cb(l, s, &x->e);
        return;
    }
    x->e.s = s;
    kt_stream_set_cbs(s, &end_cbs, &x->e);
    assert_int_equal(kt_timer_start(&x->t, KT_MSEC(5), 0), 0);
}

/* The client's first request is in the socket before the server accepts
 * it, and (second round) still unread when reading starts later from a
 * timer: the server sees it and answers, with no further byte from the
 * client to wake it (a receive armed on a socket that already holds data
 * must complete). */
static void test_request_before_read(void **state)
{
    (void)state;
    for (int round = 0; round < 2; round++) {
        kt_loop *loop = unit_loop_new();
        struct early x = { .e = { .loop = loop, .echo = 1, .close_on_eof = KT_CLOSE_NOW + 1 },
                           .deferred = round == 1 };
        kt_timer_init(loop, &x.t, early_start, &x);
        kt_listener *l;
        kt_addr a = tcp_any();
        assert_int_equal(kt_listen(loop, &a, 0, early_accept, &x, &l), 0);
        kt_addr where = bound_addr(l);
        int fd = raw_connect(&where);
        assert_int_equal(write(fd, "PING\r\n", 6), 6); /* before the loop has run */
        char rb[6];
        assert_int_equal(pump_read(loop, fd, rb, sizeof(rb)), sizeof(rb));
        assert_memory_equal(rb, "PING\r\n", 6);
        assert_int_equal(x.e.reads >= 1, 1);
        close(fd);
        run_until(loop, &x.e.closed, KT_SEC(10), "closed after the client left");
        kt_listener_close(l);
        loop_done(loop);
    }
}

static int setup_dir(void **state)
{
    (void)state;
    snprintf(unix_dir, sizeof(unix_dir), "/tmp/kt-stream-XXXXXX");
    assert_non_null(mkdtemp(unix_dir));
    return 0;
}

static int teardown_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", unix_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    pat_init();

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr),
        cmocka_unit_test(test_echo_tcp),
        cmocka_unit_test(test_echo_unix),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_peer_reset),
        cmocka_unit_test(test_tail_then_end),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_half_close),
        cmocka_unit_test(test_close_flush),
        cmocka_unit_test(test_close_in_callbacks),
        cmocka_unit_test(test_close_other_in_read),
        cmocka_unit_test(test_kept_input),
        cmocka_unit_test(test_idle_holds_nothing),
        cmocka_unit_test(test_large_pipeline),
        cmocka_unit_test(test_listener_pause_resume),
        cmocka_unit_test(test_unix_paths),
        cmocka_unit_test(test_emfile),
        cmocka_unit_test(test_out_big_reserve),
        cmocka_unit_test(test_out_mem),
        cmocka_unit_test(test_rbuf_mem),
        cmocka_unit_test(test_free_closes_leftovers),
        cmocka_unit_test(test_request_before_read),
        cmocka_unit_test(test_listener_close_cb),
        cmocka_unit_test(test_listen_reuseport),
        cmocka_unit_test(test_epipe_no_signal),
        cmocka_unit_test(test_batch_wait),
    };
    return unit_run_backend_tests(tests, setup_dir, teardown_dir);
}
