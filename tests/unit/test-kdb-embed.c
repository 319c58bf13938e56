/*
 * test-kdb-embed.c - the simulated database embedded in another program's
 * loop, as kettled does it (src/kettle-db/db.h): start on an ephemeral
 * port with options, fetch over a real socket, stop without leaks; bad
 * options refused.
 */
#include "config.h"
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <kettle/kettle.h>
#include "db.h"

struct client {
    kt_loop *loop;
    kt_stream *s;
    int replies;
    int64_t values[4];
    size_t mget_n;
    uint64_t t0, elapsed;
    int status;
};

static size_t on_read(kt_stream *s, const char *data, size_t len, void *arg)
{
    struct client *c = arg;
    kt_resp_reply r = { 0 };
    size_t used = 0;
    (void)s;
    for (;;) {
        ssize_t n = kt_resp_parse_reply(data + used, len - used, NULL, &r, NULL);
        if (n <= 0)
            break;
        used += (size_t)n;
        if (c->replies == 0) {
            /* GET 42 */
            assert_int_equal(r.nodes[0].type, KT_RESP_BULK);
            kt_parse_i64(r.nodes[0].p, r.nodes[0].len, &c->values[0]);
        } else {
            /* MGET 1 2 */
            assert_int_equal(r.nodes[0].type, KT_RESP_ARRAY);
            c->mget_n = r.nodes[0].n;
            for (size_t i = 0; i < r.nodes[0].n && i < 2; i++)
                kt_parse_i64(r.nodes[1 + i].p, r.nodes[1 + i].len, &c->values[1 + i]);
        }
        if (++c->replies == 2) {
            c->elapsed = kt_clock_ns() - c->t0;
            kt_loop_stop(c->loop);
        }
    }
    kt_resp_reply_free(&r);
    return used;
}

static void on_connect(kt_stream *s, int status, void *arg)
{
    struct client *c = arg;
    static const char req[] = "*2\r\n$3\r\nGET\r\n$2\r\n42\r\nMGET 1 2\r\n";
    c->status = status;
    if (status < 0) {
        kt_loop_stop(c->loop);
        return;
    }
    c->t0 = kt_clock_ns();
    kt_stream_write(s, req, sizeof req - 1);
    kt_stream_read_start(s);
}

static void on_error(kt_stream *s, int err, void *arg)
{
    struct client *c = arg;
    (void)s;
    c->status = err;
    kt_loop_stop(c->loop);
}

static void on_timeout(kt_timer *t, void *arg)
{
    (void)t;
    kt_loop_stop(arg);
}

static void drain(kt_loop *loop)
{
    for (int i = 0; i < 20; i++)
        kt_loop_run(loop, KT_RUN_NOWAIT);
}

static void test_embed_fetch(void **state)
{
    (void)state;
    kt_loop *loop;
    kdb_server *db = NULL;
    kt_addr addr;
    static const char *const opts[] = { "latency", "fixed 30ms", "seed", "1", NULL };
    assert_int_equal(kt_loop_new(&loop, NULL), 0);
    assert_int_equal(kdb_server_start(loop, "127.0.0.1:0", opts, &db), 0);
    assert_non_null(db);
    assert_int_equal(kdb_server_addr(db, &addr), 0);
    assert_true(((struct sockaddr_in *)&addr.ss)->sin_port != 0);

    struct client c = { .loop = loop };
    kt_stream_cbs cbs = { .on_read = on_read, .on_connect = on_connect, .on_error = on_error };
    kt_timer guard;
    kt_timer_init(loop, &guard, on_timeout, loop);
    kt_timer_start(&guard, KT_SEC(10), 0);
    assert_int_equal(kt_stream_connect(loop, &addr, KT_SEC(5), &cbs, &c, &c.s), 0);
    assert_int_equal(kt_loop_run(loop, KT_RUN_DEFAULT), 0);
    kt_timer_stop(&guard);

    assert_int_equal(c.status, 0);
    assert_int_equal(c.replies, 2);
    assert_true(c.values[0] == 42);
    assert_true(c.mget_n == 2 && c.values[1] == 1 && c.values[2] == 2);
    /* GET then MGET on one connection: the MGET's keys wait 30 ms each,
     * concurrently, after the GET's 30 ms had started: about 30-60 ms */
    assert_true(c.elapsed >= KT_MSEC(29));

    kt_stream_close(c.s, KT_CLOSE_NOW);
    kdb_server_stop(db);
    drain(loop);
    kt_loop_free(loop);
}

static void test_embed_bad_options(void **state)
{
    (void)state;
    kt_loop *loop;
    kdb_server *db = (kdb_server *)0x1;
    static const char *const bad_latency[] = { "latency", "sometimes", NULL };
    static const char *const unknown[] = { "no-such-option", "1", NULL };
    static const char *const no_value[] = { "latency", NULL };
    assert_int_equal(kt_loop_new(&loop, NULL), 0);
    assert_int_equal(kdb_server_start(loop, "127.0.0.1:0", bad_latency, &db), -EINVAL);
    assert_true(kdb_server_start(loop, "127.0.0.1:0", unknown, &db) < 0);
    assert_int_equal(kdb_server_start(loop, "127.0.0.1:0", no_value, &db), -EINVAL);
    assert_true(kdb_server_start(loop, "not an address", NULL, &db) < 0);
    assert_true(db == (kdb_server *)0x1); /* untouched on error */
    kdb_server_stop(NULL);
    drain(loop);
    kt_loop_free(loop);
}

static void test_embed_defaults_and_two_servers(void **state)
{
    (void)state;
    kt_loop *loop;
    kdb_server *a, *b;
    kt_addr aa, ba;
    assert_int_equal(kt_loop_new(&loop, NULL), 0);
    assert_int_equal(kdb_server_start(loop, "127.0.0.1:0", NULL, &a), 0);
    assert_int_equal(kdb_server_start(loop, "127.0.0.1:0", NULL, &b), 0);
    assert_int_equal(kdb_server_addr(a, &aa), 0);
    assert_int_equal(kdb_server_addr(b, &ba), 0);
    assert_true(((struct sockaddr_in *)&aa.ss)->sin_port != ((struct sockaddr_in *)&ba.ss)->sin_port);
    kdb_server_stop(a);
    kdb_server_stop(b);
    drain(loop);
    kt_loop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embed_fetch),
        cmocka_unit_test(test_embed_bad_options),
        cmocka_unit_test(test_embed_defaults_and_two_servers),
    };
    kt_log_set_level(KT_LOG_WARNING);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
