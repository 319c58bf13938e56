/*
 * test-pconn.c - the shared pipelined RESP client (src/common/pconn.h)
 * against kettle-db's server embedded on the same loop: replies settle the
 * oldest slot in order while the ring grows and wraps (requests pushed from
 * inside on_reply), dropped slots get their reply read and thrown away, the
 * watchdog reports the oldest reply overdue, and a failure hands every
 * outstanding slot back in order before on_down.
 */
#include "config.h"
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <kettle/kettle.h>
#include "db.h"
#include "pconn.h"

typedef struct slot {
    int64_t key;
} slot;

typedef struct t {
    kt_loop *loop;
    kdb_server *db;
    kt_pconn pc, adm;
    int up, adm_up, adm_done;
    int64_t next;          /* next key to send */
    int64_t total;         /* keys to send in all */
    int64_t expect;        /* the key the next reply answers */
    int replies, dropped, abandoned, downs, overdue;
    int64_t abandoned_keys[64];
    int down_err;
    uint64_t waited;
} t;

static void run_until(t *x, const int *counter, int want)
{
    uint64_t deadline = kt_clock_ns() + KT_SEC(20);
    while (*counter < want) {
        assert_true(kt_clock_ns() < deadline);
        assert_int_equal(kt_loop_run(x->loop, KT_RUN_ONCE), 0);
    }
}

static void send_get(t *x)
{
    char k[24];
    int n = snprintf(k, sizeof k, "%lld", (long long)x->next);
    kt_resp_arg argv[2] = { { "GET", 3 }, { k, (size_t)n } };
    slot *s = kt_pconn_command(&x->pc, 2, argv, NULL, NULL);
    assert_non_null(s);
    s->key = x->next++;
}

static void connect_cb(kt_pconn *pc, int status, void *arg)
{
    t *x = arg;
    assert_int_equal(status, 0);
    if (pc == &x->adm)
        x->adm_up = 1;
    else
        x->up = 1;
}

static void reply_cb(kt_pconn *pc, void *sl, uint64_t sent, const kt_resp_reply *r, void *arg)
{
    t *x = arg;
    slot *s = sl;
    (void)sent;
    if (pc == &x->adm) {
        x->adm_done++;
        return;
    }
    assert_true(s->key == x->expect); /* replies settle slots in order */
    x->expect++;
    if (r == NULL) {
        x->dropped++;
    } else {
        int64_t v;
        assert_int_equal(r->nodes[0].type, KT_RESP_BULK);
        assert_int_equal(kt_parse_i64(r->nodes[0].p, r->nodes[0].len, &v), 0);
        assert_true(v == s->key);
        x->replies++;
    }
    /* push from inside the callback: the ring wraps over this slot */
    if (x->next < x->total)
        send_get(x);
}

static void overdue_cb(kt_pconn *pc, uint64_t waited, void *arg)
{
    t *x = arg;
    x->waited = waited;
    x->overdue++;
    kt_pconn_fail(pc, -ETIMEDOUT, "no reply within %llu ms",
                  (unsigned long long)(pc->timeout / KT_MSEC(1)));
}

static void abandon_cb(kt_pconn *pc, void *sl, int err, const char *why, void *arg)
{
    t *x = arg;
    (void)pc;
    (void)why;
    assert_int_equal(err, -ETIMEDOUT);
    if (x->abandoned < 64)
        x->abandoned_keys[x->abandoned] = ((slot *)sl)->key;
    x->abandoned++;
}

static void down_cb(kt_pconn *pc, int err, const char *why, void *arg)
{
    t *x = arg;
    (void)pc;
    assert_non_null(strstr(why, "no reply within 30 ms"));
    x->down_err = err;
    x->downs++;
}

static const kt_pconn_cbs cbs = { .on_connect = connect_cb, .on_reply = reply_cb,
                                  .on_overdue = overdue_cb, .on_abandon = abandon_cb,
                                  .on_down = down_cb };

static void setup(t *x)
{
    kt_addr a;
    static const char *const opts[] = { "latency", "uniform 0ms 2ms", "seed", "3", NULL };
    memset(x, 0, sizeof *x);
    assert_int_equal(kt_loop_new(&x->loop, NULL), 0);
    assert_int_equal(kdb_server_start(x->loop, "127.0.0.1:0", opts, &x->db), 0);
    assert_int_equal(kdb_server_addr(x->db, &a), 0);
    assert_int_equal(kt_pconn_init(&x->pc, x->loop, &cbs, x, sizeof(slot), NULL), 0);
    assert_int_equal(kt_pconn_init(&x->adm, x->loop, &cbs, x, sizeof(slot), NULL), 0);
    assert_int_equal(kt_pconn_connect(&x->pc, &a, KT_SEC(5)), 0);
    assert_int_equal(kt_pconn_connect(&x->adm, &a, KT_SEC(5)), 0);
    run_until(x, &x->up, 1);
    run_until(x, &x->adm_up, 1);
}

static void teardown(t *x)
{
    kt_pconn_close(&x->pc, KT_CLOSE_NOW);
    kt_pconn_close(&x->adm, KT_CLOSE_NOW);
    kt_pconn_free(&x->pc);
    kt_pconn_free(&x->adm);
    kdb_server_stop(x->db);
    for (int i = 0; i < 50; i++)
        (void)kt_loop_run(x->loop, KT_RUN_NOWAIT);
    kt_loop_free(x->loop);
}

static void test_in_order_grow_wrap_drop(void **state)
{
    t x;
    (void)state;
    setup(&x);
    x.total = 1000;
    for (int i = 0; i < 100; i++) { /* the ring grows from 16 past 100 */
        send_get(&x);
        slot *s = kt_pconn_slot(&x.pc, (uint64_t)i); /* ids count from 0 */
        assert_non_null(s);
        assert_true(s->key == i);
    }
    assert_int_equal(kt_pconn_outstanding(&x.pc), 100);
    /* ids are consecutive from the oldest: drop every tenth */
    uint64_t sent;
    slot *oldest = kt_pconn_oldest(&x.pc, &sent);
    assert_non_null(oldest);
    assert_true(oldest->key == 0);
    for (int i = 0; i < 100; i += 10)
        kt_pconn_drop(&x.pc, (uint64_t)i);
    run_until(&x, &x.replies, 1000 - 10);
    assert_int_equal(x.dropped, 10);
    assert_true(x.expect == 1000);
    assert_int_equal(kt_pconn_outstanding(&x.pc), 0);
    assert_null(kt_pconn_slot(&x.pc, 5));
    teardown(&x);
}

static void test_watchdog_and_fail(void **state)
{
    t x;
    (void)state;
    setup(&x);
    kt_pconn_set_timeout(&x.pc, KT_MSEC(30));
    kt_resp_arg fault[4] = { { "FAULT", 5 }, { "SET", 3 }, { "stall", 5 }, { "1", 1 } };
    assert_non_null(kt_pconn_command(&x.adm, 4, fault, NULL, NULL));
    run_until(&x, &x.adm_done, 1);
    x.total = 5;
    for (int i = 0; i < 5; i++)
        send_get(&x);
    run_until(&x, &x.downs, 1);
    assert_int_equal(x.overdue, 1);
    assert_true(x.waited >= KT_MSEC(30));
    assert_int_equal(x.down_err, -ETIMEDOUT);
    assert_int_equal(x.abandoned, 5); /* every slot handed back, oldest first */
    for (int i = 0; i < 5; i++)
        assert_true(x.abandoned_keys[i] == i);
    assert_int_equal(kt_pconn_state_of(&x.pc), KT_PCONN_DOWN);
    int err = 0;
    assert_null(kt_pconn_push(&x.pc, NULL, &err));
    assert_int_equal(err, -ENOTCONN);
    teardown(&x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_order_grow_wrap_drop),
        cmocka_unit_test(test_watchdog_and_fail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
