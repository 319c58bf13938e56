/*
 * test-pool.c - kettled's backend pool in-process, against kettle-db's
 * server embedded on the same loop (src/kettle-db/db.h): batching,
 * singleflight, cancellation in a batch and in a pipelined connection,
 * the queue bounds, stalls, backoff, ejection (in a row and by rate) and
 * the return through probes, retiring on reload, retries, hedged reads
 * and their budget.
 *
 * Everything is driven by events: the loop runs until a future settles
 * or a counter moves (kettled's own, or kettle-db's INFO), with a
 * deadline only as a safety net. Faults are set with kettle-db's FAULT
 * command over the shared pipelined client.
 */
#include "config.h"
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <kettle/kettle.h>
#include "db.h"
#include "pconn.h"
#include "pool-int.h"

#define SAFETY KT_SEC(20)

typedef struct adm adm;

typedef struct env {
    kt_loop *loop;
    kdb_server *db[3];
    char addr[3][64];
    adm *adm[3];            /* an admin connection to each database */
    kd_pool *pool;
    kd_pool_params prm;
} env;

/* ---- driving the loop ------------------------------------------------------------ */

typedef bool (*pred_fn)(void *arg);

/* Run the loop until pred holds; the deadline only guards against a hang. */
static void run_until(env *e, pred_fn pred, void *arg)
{
    uint64_t deadline = kt_clock_ns() + SAFETY;
    while (!pred(arg)) {
        assert_true(kt_clock_ns() < deadline);
        assert_int_equal(kt_loop_run(e->loop, KT_RUN_ONCE), 0);
    }
}

static bool settled_pred(void *arg)
{
    return kt_future_done(arg);
}

static void await(env *e, kt_future *f)
{
    run_until(e, settled_pred, f);
}

/* A guard timer keeps KT_RUN_ONCE from sleeping forever when a predicate
 * waits on time passing inside the pool (backoff, ejection). */
static void tick_cb(kt_timer *t, void *arg)
{
    (void)t;
    (void)arg;
}

/* ---- an admin client for the embedded databases ----------------------------------- */

struct adm {
    kt_pconn pc;
    bool up, done;
    char text[4096];
};

static void adm_connect_cb(kt_pconn *pc, int status, void *arg)
{
    adm *a = arg;
    (void)pc;
    assert_int_equal(status, 0);
    a->up = true;
}

static void adm_reply_cb(kt_pconn *pc, void *slot, uint64_t sent, const kt_resp_reply *r, void *arg)
{
    adm *a = arg;
    (void)pc;
    (void)slot;
    (void)sent;
    const kt_resp_node *n = &r->nodes[0];
    snprintf(a->text, sizeof a->text, "%c%.*s", n->type, (int)n->len, n->p ? n->p : "");
    a->done = true;
}

static const kt_pconn_cbs adm_cbs = { .on_connect = adm_connect_cb, .on_reply = adm_reply_cb };

static bool flag_pred(void *arg)
{
    return *(bool *)arg;
}

/* Send one command (words separated by blanks) to database i on its
 * admin connection (opened once: `refuse` closes the listener, and
 * `stop-reading` spares only the connection that set it) and return its
 * reply's text (type byte first: "+OK", "$..."). */
static const char *db_cmd(env *e, int i, const char *line)
{
    adm *a = e->adm[i];
    kt_resp_arg argv[16];
    char buf[256];
    size_t argc = 0;
    if (a == NULL) {
        kt_addr addr;
        a = e->adm[i] = calloc(1, sizeof *a);
        assert_non_null(a);
        assert_int_equal(kt_pconn_init(&a->pc, e->loop, &adm_cbs, a, 8, NULL), 0);
        assert_int_equal(kdb_server_addr(e->db[i], &addr), 0);
        assert_int_equal(kt_pconn_connect(&a->pc, &addr, KT_SEC(5)), 0);
        run_until(e, flag_pred, &a->up);
    }
    snprintf(buf, sizeof buf, "%s", line);
    for (char *t = strtok(buf, " "); t && argc < 16; t = strtok(NULL, " "))
        argv[argc++] = (kt_resp_arg){ t, strlen(t) };
    a->done = false;
    assert_non_null(kt_pconn_command(&a->pc, argc, argv, NULL, NULL));
    run_until(e, flag_pred, &a->done);
    return a->text;
}

/* An INFO field of database i as a number. */
static long long db_info(env *e, int i, const char *field)
{
    const char *t = db_cmd(e, i, "INFO");
    char key[64];
    snprintf(key, sizeof key, "\n%s:", field);
    const char *p = strstr(t, key);
    assert_non_null(p);
    return atoll(p + strlen(key));
}

/* ---- set-up ---------------------------------------------------------------------------- */

static void defaults(kd_pool_params *p)
{
    memset(p, 0, sizeof *p);
    p->connections = 2;
    p->pipeline = 1024;
    p->queue_limit = 1024;
    p->eject_after = 3;
    p->points = 160;
    p->batch = 32;
    p->singleflight = true;
    p->connect_timeout = KT_SEC(1);
    p->backend_timeout = KT_SEC(5);
    p->retry_min = KT_MSEC(5);
    p->retry_max = KT_MSEC(40);
    p->eject_time = KT_MSEC(50);
    p->eject_time_max = KT_MSEC(400);
    p->eject_rate = 0.05;
    p->eject_min_requests = 50;
    p->window = KT_SEC(1);
    p->stall_factor = 10;
    p->stall_floor = KT_MSEC(200);
    p->hedge_max_extra = 0.05;
    p->queue_bytes = 32u << 20;
    p->output_limit = 1u << 20;
}

/* ndb databases with latency `lat`; the pool is made by setup_pool. */
static env *env_new(int ndb, const char *lat)
{
    env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    assert_int_equal(kt_loop_new(&e->loop, NULL), 0);
    const char *opts[] = { "latency", lat, "seed", "7", NULL };
    for (int i = 0; i < ndb; i++) {
        kt_addr a;
        assert_int_equal(kdb_server_start(e->loop, "127.0.0.1:0", opts, &e->db[i]), 0);
        assert_int_equal(kdb_server_addr(e->db[i], &a), 0);
        kt_addr_format(&a, e->addr[i], sizeof e->addr[i]);
    }
    defaults(&e->prm);
    assert_int_equal(kd_pool_new(e->loop, &e->pool), 0);
    return e;
}

static bool conns_up_pred(void *arg)
{
    kd_pool *p = arg;
    for (size_t i = 0; i < p->ngroups; i++)
        for (uint32_t j = 0; j < p->groups[i]->nreps; j++)
            if (p->groups[i]->reps[j]->up != p->groups[i]->reps[j]->nconns)
                return false;
    return true;
}

/* Configure the pool with lines (NULL-terminated) and wait for every
 * connection to come up. */
static void configure(env *e, const char *const *lines)
{
    const char *why = NULL;
    size_t n = 0;
    while (lines[n])
        n++;
    assert_int_equal(kd_pool_configure(e->pool, &e->prm, lines, n, &why), 0);
    run_until(e, conns_up_pred, e->pool);
}

/* The same with the one database of e. */
static void configure_one(env *e)
{
    const char *lines[] = { e->addr[0], NULL };
    configure(e, lines);
}

static void env_free(env *e)
{
    kd_pool_free(e->pool);
    for (int i = 0; i < 3; i++) {
        if (e->adm[i]) {
            kt_pconn_close(&e->adm[i]->pc, KT_CLOSE_NOW);
            kt_pconn_free(&e->adm[i]->pc);
            free(e->adm[i]);
        }
    }
    for (int i = 0; i < 3; i++)
        kdb_server_stop(e->db[i]);
    for (int i = 0; i < 50; i++)
        (void)kt_loop_run(e->loop, KT_RUN_NOWAIT);
    kt_loop_free(e->loop);
    free(e);
}

static kd_replica *rep(env *e, size_t g, uint32_t i)
{
    return e->pool->groups[g]->reps[i];
}

static kt_future *fetch(env *e, const char *key)
{
    kt_future *f = kd_pool_fetch(e->pool, key, strlen(key));
    assert_non_null(f);
    return f;
}

/* fs[i] = a fetch of key base + i, for i in [0, n). */
static void fetch_n(env *e, kt_future **fs, int n, int base)
{
    char k[16];
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof k, "%d", base + i);
        fs[i] = fetch(e, k);
    }
}

static void await_n(env *e, kt_future **fs, int n)
{
    for (int i = 0; i < n; i++)
        await(e, fs[i]);
}

static void assert_value(kt_future *f, int64_t v)
{
    assert_int_equal(kt_future_state_of(f), KT_FUTURE_RESOLVED);
    assert_true(kt_future_i64(f) == v);
}

/* ---- batching ---------------------------------------------------------------------------- */

static void test_batch_one_mget(void **state)
{
    (void)state;
    env *e = env_new(1, "fixed 2ms");
    configure_one(e);
    long long cmds0 = db_info(e, 0, "total_commands_processed");
    kt_future *fs[10];
    fetch_n(e, fs, 10, 100);
    await_n(e, fs, 10);
    for (int i = 0; i < 10; i++) {
        assert_value(fs[i], 100 + i);
        kt_future_unref(fs[i]);
    }
    kd_replica *r = rep(e, 0, 0);
    assert_int_equal(r->st.batches, 1);
    assert_int_equal(r->st.keys, 10);
    /* one MGET reached the database (and this INFO) */
    assert_int_equal(db_info(e, 0, "total_commands_processed") - cmds0, 1 + 1);
    /* a lone key stays a GET */
    kt_future *f = fetch(e, "7");
    await(e, f);
    assert_value(f, 7);
    kt_future_unref(f);
    assert_int_equal(r->st.batches, 2);
    assert_int_equal(r->st.keys, 11);
    env_free(e);
}

static void test_batch_limit(void **state)
{
    (void)state;
    env *e = env_new(1, "fixed 1ms");
    e->prm.batch = 4;
    e->prm.connections = 1;
    configure_one(e);
    kt_future *fs[10];
    fetch_n(e, fs, 10, 0);
    for (int i = 0; i < 10; i++) {
        await(e, fs[i]);
        assert_value(fs[i], i);
        kt_future_unref(fs[i]);
    }
    assert_int_equal(rep(e, 0, 0)->st.batches, 3); /* 4 + 4 + 2 */
    assert_int_equal(kd_lh_percentile(&rep(e, 0, 0)->batch_keys, 100), 4);
    env_free(e);
}

static env *g_env;

static bool in_service_pred(void *arg)
{
    (void)arg;
    return db_info(g_env, 0, "requests_in_service") >= 3;
}

/* An error reply fails that batch's fetches, each naming the server;
 * the next batch is served. */
static void test_batch_error_reply(void **state)
{
    (void)state;
    env *e = env_new(1, "fixed 30ms");
    e->prm.connections = 1;
    configure_one(e);
    assert_string_equal(db_cmd(e, 0, "FAULT SET error 1"), "+OK");
    kt_future *a[3] = { fetch(e, "1"), fetch(e, "2"), fetch(e, "3") };
    /* the MGET is read (and its fault rolled) before the fault is cleared */
    g_env = e;
    run_until(e, in_service_pred, NULL);
    assert_string_equal(db_cmd(e, 0, "FAULT CLEAR"), "+OK");
    kt_future *b[2] = { fetch(e, "4"), fetch(e, "5") };
    for (int i = 0; i < 3; i++) {
        await(e, a[i]);
        assert_int_equal(kt_future_error(a[i]), -EREMOTEIO);
        char want[128];
        snprintf(want, sizeof want, "ERR injected fault (backend %s)", e->addr[0]);
        assert_string_equal(kt_future_errmsg(a[i]), want);
        kt_future_unref(a[i]);
    }
    for (int i = 0; i < 2; i++) {
        await(e, b[i]);
        assert_value(b[i], 4 + i);
        kt_future_unref(b[i]);
    }
    assert_int_equal(rep(e, 0, 0)->st.batches, 2);
    env_free(e);
}

static bool idle_pred(void *arg)
{
    return ((kd_replica *)arg)->load == 0;
}

/* Cancelling one fetch of a batch leaves the others alone; the
 * cancelled one's element is ignored. */
static void test_cancel_in_batch(void **state)
{
    (void)state;
    env *e = env_new(1, "fixed 20ms");
    configure_one(e);
    kt_future *fs[3] = { fetch(e, "11"), fetch(e, "12"), fetch(e, "13") };
    assert_int_equal(kt_loop_run(e->loop, KT_RUN_NOWAIT), 0); /* the MGET leaves */
    kd_replica *r = rep(e, 0, 0);
    assert_int_equal(r->st.batches, 1);
    assert_int_equal(kt_future_cancel(fs[1]), 0);
    await(e, fs[0]);
    await(e, fs[2]);
    assert_value(fs[0], 11);
    assert_value(fs[2], 13);
    assert_int_equal(kt_future_state_of(fs[1]), KT_FUTURE_CANCELLED);
    assert_int_equal(r->g->st.cancelled, 1);
    run_until(e, idle_pred, r);
    assert_int_equal(r->st.replies, 1);
    for (int i = 0; i < 3; i++)
        kt_future_unref(fs[i]);
    env_free(e);
}

/* Without batching, a cancelled fetch in the middle of a pipelined
 * connection: its reply is read and dropped, the ones behind it arrive. */
static void test_cancel_in_pipeline(void **state)
{
    (void)state;
    env *e = env_new(1, "fixed 20ms");
    e->prm.batch = 1;
    e->prm.connections = 1;
    configure_one(e);
    kt_future *fs[4] = { fetch(e, "1"), fetch(e, "2"), fetch(e, "3"), fetch(e, "4") };
    assert_int_equal(kt_loop_run(e->loop, KT_RUN_NOWAIT), 0);
    kd_replica *r = rep(e, 0, 0);
    assert_int_equal(kt_pconn_outstanding(&r->conns[0].pc), 4);
    assert_int_equal(kt_future_cancel(fs[0]), 0);
    assert_int_equal(kt_future_cancel(fs[2]), 0);
    await(e, fs[1]);
    await(e, fs[3]);
    assert_value(fs[1], 2);
    assert_value(fs[3], 4);
    run_until(e, idle_pred, r);
    assert_int_equal(r->st.replies, 4);
    assert_int_equal(r->g->st.cancelled, 2);
    assert_int_equal(kt_pconn_outstanding(&r->conns[0].pc), 0);
    for (int i = 0; i < 4; i++)
        kt_future_unref(fs[i]);
    /* a queued fetch cancelled before it leaves is never sent */
    kt_future *q = fetch(e, "9");
    assert_int_equal(kt_future_cancel(q), 0);
    assert_int_equal(r->qlen, 0);
    kt_future_unref(q);
    assert_int_equal(kt_loop_run(e->loop, KT_RUN_NOWAIT), 0);
    assert_int_equal(r->st.batches, 4);
    env_free(e);
}

/* ---- bounds -------------------------------------------------------------------------------- */

static void test_queue_limit(void **state)
{
    (void)state;
    env *e = env_new(1, "fixed 20ms");
    e->prm.batch = 1;
    e->prm.connections = 1;
    e->prm.pipeline = 1;
    e->prm.queue_limit = 2;
    configure_one(e);
    kt_future *fs[5];
    fetch_n(e, fs, 5, 0);
    /* room for one on the connection, two in the queue: the last two fail at once */
    for (int i = 3; i < 5; i++) {
        assert_int_equal(kt_future_error(fs[i]), -EAGAIN);
        assert_non_null(strstr(kt_future_errmsg(fs[i]), "overloaded"));
        assert_non_null(strstr(kt_future_errmsg(fs[i]), "backend-queue-limit"));
        assert_non_null(strstr(kt_future_errmsg(fs[i]), e->addr[0]));
    }
    for (int i = 0; i < 3; i++) {
        await(e, fs[i]);
        assert_value(fs[i], i);
    }
    for (int i = 0; i < 5; i++)
        kt_future_unref(fs[i]);
    env_free(e);
}

static void test_queue_bytes(void **state)
{
    (void)state;
    env *e = env_new(1, "fixed 5ms");
    e->prm.queue_bytes = 2000;
    configure_one(e);
    char key[601];
    memset(key, '7', 600);
    key[600] = '\0';
    kt_future *fs[4];
    for (int i = 0; i < 4; i++) {
        key[0] = (char)('1' + i);
        fs[i] = fetch(e, key);
    }
    kd_replica *r = rep(e, 0, 0);
    assert_true(r->held <= 2000);
    int failed = 0;
    for (int i = 0; i < 4; i++) {
        await(e, fs[i]);
        if (kt_future_error(fs[i]) == -EAGAIN) {
            assert_non_null(strstr(kt_future_errmsg(fs[i]), "backend-queue-bytes"));
            failed++;
        } else {
            /* a 600-digit number is not an i64: kettle-db says so */
            assert_int_equal(kt_future_state_of(fs[i]), KT_FUTURE_FAILED);
        }
        kt_future_unref(fs[i]);
    }
    assert_int_equal(failed, 2); /* (600 + 160) x 2 fit in 2000 bytes, not x 3 */
    run_until(e, idle_pred, r);
    assert_int_equal(r->held, 0);
    env_free(e);
}

static kd_conn *g_conn;

static bool blocked_pred(void *arg)
{
    kd_replica *r = arg;
    return kt_pconn_blocked(&g_conn->pc) && r->qlen > 0;
}

/* A server that stops reading: the connection's unsent output stops near
 * backend-output-limit, the rest waits in the queue, and all of it goes
 * out once the server reads again. */
static void test_output_limit(void **state)
{
    (void)state;
    env *e = env_new(1, "none");
    e->prm.connections = 1;
    e->prm.output_limit = 64 << 10;
    e->prm.queue_bytes = 64u << 20;
    e->prm.queue_limit = 1 << 20;
    configure_one(e);
    kd_replica *r = rep(e, 0, 0);
    g_conn = &r->conns[0];
    assert_string_equal(db_cmd(e, 0, "FAULT SET stop-reading 1 all"), "+OK");
    enum { N = 4000, LEN = 4000 };
    kt_future **fs = calloc(N, sizeof *fs);
    char *key = malloc(LEN + 1);
    assert_non_null(fs);
    assert_non_null(key);
    memset(key, '5', LEN);
    key[LEN] = '\0';
    for (int i = 0; i < N; i++) {
        snprintf(key, 12, "%011d", i);
        key[11] = '5';
        fs[i] = fetch(e, key);
    }
    run_until(e, blocked_pred, r);
    /* at most the limit and the command that crossed it */
    assert_true(kt_pconn_unsent(&g_conn->pc) <= (64 << 10) + 32 * (LEN + 32));
    assert_true(r->qlen > 0);
    assert_string_equal(db_cmd(e, 0, "FAULT CLEAR"), "+OK");
    for (int i = 0; i < N; i++) {
        await(e, fs[i]);
        /* (a 4,000-digit key is no number: kettle-db says so, for each) */
        assert_int_equal(kt_future_error(fs[i]), -EREMOTEIO);
        kt_future_unref(fs[i]);
    }
    assert_int_equal(r->qlen, 0);
    assert_int_equal(r->held, 0);
    free(fs);
    free(key);
    env_free(e);
}

/* ---- singleflight ------------------------------------------------------------------------------- */

static void test_singleflight_join(void **state)
{
    (void)state;
    env *e = env_new(1, "fixed 10ms");
    const char *lines[] = { e->addr[0], NULL };
    configure(e, lines);
    long long served0 = db_info(e, 0, "requests_served");
    kt_future *a = fetch(e, "42");
    assert_int_equal(kt_loop_run(e->loop, KT_RUN_NOWAIT), 0); /* sent */
    kt_future *b = fetch(e, "42");                           /* joins it */
    kt_future *c = fetch(e, "43");
    await(e, a);
    await(e, b);
    await(e, c);
    assert_value(a, 42);
    assert_value(b, 42);
    assert_value(c, 43);
    kd_group *g = e->pool->groups[0];
    assert_int_equal(g->st.joins, 1);
    assert_int_equal(rep(e, 0, 0)->st.keys, 2);
    assert_int_equal(db_info(e, 0, "requests_served") - served0, 2);
    kt_future_unref(a);
    kt_future_unref(b);
    kt_future_unref(c);
    /* off: every fetch goes out */
    e->prm.singleflight = false;
    const char *why;
    assert_int_equal(kd_pool_configure(e->pool, &e->prm, lines, 1, &why), 0);
    a = fetch(e, "44");
    b = fetch(e, "44");
    await(e, a);
    await(e, b);
    assert_value(a, 44);
    assert_value(b, 44);
    assert_int_equal(g->st.joins, 1);
    assert_int_equal(rep(e, 0, 0)->st.keys, 4);
    kt_future_unref(a);
    kt_future_unref(b);
    env_free(e);
}

/* The shared fetch goes on while one waiter is left, and is dropped with
 * the last; each waiter keeps its own deadline. */
static void test_singleflight_cancel(void **state)
{
    (void)state;
    env *e = env_new(1, "fixed 40ms");
    configure_one(e);
    kd_group *g = e->pool->groups[0];
    kt_future *a = fetch(e, "5");
    kt_future *b = fetch(e, "5");
    kt_future *bt = kt_timeout(b, KT_MSEC(1)); /* b's own deadline */
    assert_int_equal(kt_future_cancel(a), 0);
    await(e, bt);
    assert_int_equal(kt_future_error(bt), -ETIMEDOUT);
    assert_int_equal(g->nflights, 0); /* both gone: the flight is abandoned */
    assert_int_equal(g->st.cancelled, 2);
    kt_future_unref(a);
    kt_future_unref(b);
    kt_future_unref(bt);
    /* one of two cancels: the other still gets the value */
    a = fetch(e, "6");
    b = fetch(e, "6");
    assert_int_equal(kt_future_cancel(b), 0);
    await(e, a);
    assert_value(a, 6);
    kt_future_unref(a);
    kt_future_unref(b);
    run_until(e, idle_pred, rep(e, 0, 0));
    env_free(e);
}

static void test_singleflight_failure(void **state)
{
    (void)state;
    env *e = env_new(1, "fixed 20ms");
    configure_one(e);
    assert_string_equal(db_cmd(e, 0, "FAULT SET reset 1"), "+OK");
    kt_future *fs[3] = { fetch(e, "8"), fetch(e, "8"), fetch(e, "8") };
    for (int i = 0; i < 3; i++) {
        await(e, fs[i]);
        assert_int_equal(kt_future_error(fs[i]), -EIO);
        assert_non_null(strstr(kt_future_errmsg(fs[i]), e->addr[0]));
    }
    assert_string_equal(kt_future_errmsg(fs[0]), kt_future_errmsg(fs[2]));
    assert_int_equal(e->pool->groups[0]->st.joins, 2);
    for (int i = 0; i < 3; i++)
        kt_future_unref(fs[i]);
    env_free(e);
}

/* ---- failures, backoff, ejection ------------------------------------------------------------------ */

static void test_stall_fails_early(void **state)
{
    (void)state;
    env *e = env_new(1, "fixed 1ms");
    e->prm.stall_floor = KT_MSEC(30);
    e->prm.eject_after = 0;
    configure_one(e);
    /* enough replies for the window to know the server's latency */
    for (int i = 0; i < 40; i++) {
        kt_future *f = fetch(e, "3");
        await(e, f);
        kt_future_unref(f);
    }
    kd_replica *r = rep(e, 0, 0);
    /* 10 x the recent p99, at least the floor, at most backend-timeout */
    r->stall_slice = UINT64_MAX; /* computed once per slice: now, from what the window holds */
    uint64_t p99 = kd_window_percentile(&r->win, kt_loop_now(e->loop), 99);
    uint64_t want_ns = 10 * p99 < KT_MSEC(30) ? KT_MSEC(30) : 10 * p99;
    assert_true(p99 > 0 && want_ns < KT_SEC(5));
    assert_int_equal(kd_health_stall_ns(r), want_ns);
    assert_int_equal(r->conns[0].pc.timeout, want_ns);
    assert_string_equal(db_cmd(e, 0, "FAULT SET stall 1"), "+OK");
    kt_future *f = fetch(e, "4");
    await(e, f);
    assert_int_equal(kt_future_error(f), -EIO);
    char want[160];
    snprintf(want, sizeof want, "ERR backend %s: no reply within %llu ms", e->addr[0],
             (unsigned long long)(want_ns / KT_MSEC(1)));
    assert_string_equal(kt_future_errmsg(f), want);
    assert_int_equal(r->st.stalls, 1);
    kt_future_unref(f);
    env_free(e);
}

static void test_backoff(void **state)
{
    (void)state;
    env *e = env_new(0, "none");
    e->prm.retry_min = KT_MSEC(10);
    e->prm.retry_max = KT_MSEC(80);
    for (uint32_t fails = 1; fails < 12; fails++) {
        uint64_t d = KT_MSEC(10) << (fails - 1 < 3 ? fails - 1 : 3);
        for (int k = 0; k < 50; k++) {
            e->pool->prm = e->prm;
            uint64_t v = kd_pool_backoff(e->pool, fails);
            assert_true(v >= d / 2 && v <= d);
        }
    }
    env_free(e);
}

static bool conn_failures_pred(void *arg)
{
    return ((kd_replica *)arg)->st.conn_failures >= 3;
}

/* A refused server: each attempt fails, is backed off and retried. */
static void test_refused_retries(void **state)
{
    (void)state;
    env *e = env_new(1, "none");
    e->prm.connections = 1;
    e->prm.eject_after = 0;
    configure_one(e);
    kd_replica *r = rep(e, 0, 0);
    assert_string_equal(db_cmd(e, 0, "FAULT SET refuse 1"), "+OK");
    assert_string_equal(db_cmd(e, 0, "FAULT SET reset 1"), "+OK");
    kt_timer tick;
    kt_timer_init(e->loop, &tick, tick_cb, NULL);
    (void)kt_timer_start(&tick, KT_MSEC(5), KT_MSEC(5));
    kt_future *f = fetch(e, "1");
    await(e, f);
    assert_int_equal(kt_future_state_of(f), KT_FUTURE_FAILED);
    kt_future_unref(f);
    run_until(e, conn_failures_pred, r);
    assert_true(r->conns[0].fails >= 2);
    /* down: fails at once, naming the server */
    if (r->up == 0 && r->connecting == 0) {
        f = fetch(e, "2");
        assert_int_equal(kt_future_error(f), -EHOSTDOWN);
        assert_non_null(strstr(kt_future_errmsg(f), "is down"));
        kt_future_unref(f);
    }
    assert_string_equal(db_cmd(e, 0, "FAULT CLEAR"), "+OK");
    run_until(e, conns_up_pred, e->pool);
    f = fetch(e, "2");
    await(e, f);
    assert_value(f, 2);
    assert_int_equal(r->conns[0].fails, 0);
    kt_future_unref(f);
    kt_timer_stop(&tick);
    env_free(e);
}

static bool state_pred_live(void *arg)
{
    return ((kd_replica *)arg)->state == KD_REP_LIVE;
}

static bool state_pred_out(void *arg)
{
    return ((kd_replica *)arg)->state != KD_REP_LIVE;
}

/* Which database served key? (by kettle-db's requests_served) */
static int served_by(env *e, const char *key)
{
    long long a = db_info(e, 0, "requests_served"), b = db_info(e, 1, "requests_served");
    kt_future *f = fetch(e, key);
    await(e, f);
    assert_int_equal(kt_future_state_of(f), KT_FUTURE_RESOLVED);
    kt_future_unref(f);
    if (db_info(e, 0, "requests_served") > a)
        return 0;
    assert_true(db_info(e, 1, "requests_served") > b);
    return 1;
}

/* Failures in a row eject a server; its keys go to the other shard; it
 * returns through probes once healthy. */
static void test_eject_and_probe(void **state)
{
    (void)state;
    env *e = env_new(2, "none");
    e->prm.connections = 1;
    e->prm.eject_after = 2;
    const char *lines[] = { e->addr[0], e->addr[1], NULL };
    configure(e, lines);
    /* a key of the first server */
    char key[16] = "";
    for (int i = 0; i < 100 && !key[0]; i++) {
        snprintf(key, sizeof key, "%d", i);
        if (served_by(e, key) != 0)
            key[0] = '\0';
    }
    assert_true(key[0] != '\0');
    kd_replica *r = rep(e, 0, 0);
    kt_timer tick;
    kt_timer_init(e->loop, &tick, tick_cb, NULL);
    (void)kt_timer_start(&tick, KT_MSEC(5), KT_MSEC(5));
    assert_string_equal(db_cmd(e, 0, "FAULT SET refuse 1"), "+OK");
    assert_string_equal(db_cmd(e, 0, "FAULT SET reset 1"), "+OK");
    kt_future *f = fetch(e, key);
    await(e, f);
    kt_future_unref(f);
    run_until(e, state_pred_out, r);
    assert_int_equal(r->st.ej_consecutive, 1);
    assert_non_null(strstr(r->eject_cause, "in a row"));
    assert_int_equal(served_by(e, key), 1); /* the neighbour serves it */
    assert_string_equal(db_cmd(e, 0, "FAULT CLEAR"), "+OK");
    run_until(e, state_pred_live, r);
    assert_true(r->st.probes >= 60);
    assert_int_equal(served_by(e, key), 0);
    kt_timer_stop(&tick);
    env_free(e);
}

/* A flapping server: no failures in a row (replies keep coming), but a
 * failure rate over the window. */
static void test_eject_by_rate(void **state)
{
    (void)state;
    env *e = env_new(2, "none");
    e->prm.eject_after = 0;
    e->prm.eject_min_requests = 20;
    e->prm.eject_time = KT_SEC(10);
    e->prm.eject_time_max = KT_SEC(10);
    e->prm.batch = 1;
    const char *lines[] = { e->addr[0], e->addr[1], NULL };
    configure(e, lines);
    kd_replica *r = rep(e, 0, 0);
    assert_string_equal(db_cmd(e, 0, "FAULT SET close 0.2"), "+OK");
    char k[16];
    for (int i = 0; r->state == KD_REP_LIVE; i++) {
        assert_true(i < 5000);
        snprintf(k, sizeof k, "%d", i);
        kt_future *f = fetch(e, k);
        await(e, f);
        kt_future_unref(f);
    }
    assert_int_equal(r->st.ej_rate, 1);
    assert_int_equal(r->st.ej_consecutive, 0);
    assert_non_null(strstr(r->eject_cause, "requests failed"));
    /* the other is the last one standing: never ejected */
    assert_false(kd_health_others_live(e->pool, rep(e, 1, 0)));
    env_free(e);
}

/* A server that answers nothing on any connection: the first stall ejects
 * it, without waiting for failures in a row or for enough requests in the
 * window to judge a rate. */
/* Two shards over two connections each, ejection only by the stall rules
 * (counts and rates out of reach), stall threshold floor; keys[0..1] served
 * by shard 0, whose latency window has learned from 30 fetches. */
static env *stall_env(uint64_t stall_floor, char keys[2][16])
{
    env *e = env_new(2, "fixed 1ms");
    e->prm.connections = 2;
    e->prm.stall_floor = stall_floor;
    e->prm.eject_after = 1000; /* not 0: that turns ejection off */
    e->prm.eject_min_requests = 1000000;
    e->prm.eject_time = KT_SEC(10);
    e->prm.eject_time_max = KT_SEC(10);
    const char *lines[] = { e->addr[0], e->addr[1], NULL };
    configure(e, lines);
    int nk = 0;
    for (int i = 0; i < 200 && nk < 2; i++) {
        snprintf(keys[nk], 16, "%d", i);
        if (served_by(e, keys[nk]) == 0)
            nk++;
    }
    assert_int_equal(nk, 2);
    for (int i = 0; i < 30; i++) { /* the window learns its latency */
        kt_future *f = fetch(e, keys[i % 2]);
        await(e, f);
        kt_future_unref(f);
    }
    return e;
}

static void test_silent_server_ejected_at_first_stall(void **state)
{
    (void)state;
    char keys[2][16];
    env *e = stall_env(KT_MSEC(30), keys);
    kd_replica *r = rep(e, 0, 0);
    assert_string_equal(db_cmd(e, 0, "FAULT SET stop-reading 1 all"), "+OK");
    /* one fetch on each connection (the second goes to the one with fewer
     * outstanding) */
    kt_future *f0 = fetch(e, keys[0]);
    (void)kt_loop_run(e->loop, KT_RUN_NOWAIT);
    kt_future *f1 = fetch(e, keys[1]);
    (void)kt_loop_run(e->loop, KT_RUN_NOWAIT);
    assert_true(kt_pconn_outstanding(&r->conns[0].pc) > 0);
    assert_true(kt_pconn_outstanding(&r->conns[1].pc) > 0);
    run_until(e, state_pred_out, r);
    assert_int_equal(r->state, KD_REP_EJECTED);
    assert_int_equal(r->st.ejections, 1);
    assert_int_equal(r->st.ej_rate, 0);
    assert_non_null(strstr(r->eject_cause, "no reply on any connection"));
    await(e, f0);
    await(e, f1);
    assert_int_equal(kt_future_state_of(f0), KT_FUTURE_FAILED);
    kt_future_unref(f0);
    kt_future_unref(f1);
    assert_int_equal(served_by(e, keys[0]), 1); /* the neighbour serves it */
    env_free(e);
}

/* One connection stalled while the server answers on the other: a stall,
 * not a silent server; no ejection from it alone. */
static void test_one_stall_is_not_silence(void **state)
{
    (void)state;
    env *e = env_new(2, "fixed 1ms");
    e->prm.connections = 2;
    e->prm.stall_floor = KT_MSEC(30);
    e->prm.eject_after = 0;
    e->prm.eject_min_requests = 1000000;
    const char *lines[] = { e->addr[0], e->addr[1], NULL };
    configure(e, lines);
    char key[16] = "";
    for (int i = 0; i < 200 && !key[0]; i++) {
        snprintf(key, sizeof key, "%d", i);
        if (served_by(e, key) != 0)
            key[0] = '\0';
    }
    kd_replica *r = rep(e, 0, 0);
    for (int i = 0; i < 30; i++) {
        kt_future *f = fetch(e, key);
        await(e, f);
        kt_future_unref(f);
    }
    assert_string_equal(db_cmd(e, 0, "FAULT SET stall 1"), "+OK");
    kt_future *f = fetch(e, key); /* stalls on one connection, the other idle */
    await(e, f);
    assert_int_equal(kt_future_error(f), -EIO);
    kt_future_unref(f);
    assert_int_equal(r->st.stalls, 1);
    assert_int_equal(r->state, KD_REP_LIVE);
    assert_int_equal(r->st.ejections, 0);
    env_free(e);
}

/* A server that stalls a request on each connection in turn, having
 * answered on the second after the first's stalled one was sent (so it
 * was not silent for that long): when the first stalls, the second is
 * stuck too (or, when the second stalls, the first stalled less than a
 * threshold ago), and the server is ejected then, not after failures in
 * a row or a rate over the window (both out of reach here). */
static void test_stuck_server_ejected(void **state)
{
    (void)state;
    char keys[2][16];
    env *e = stall_env(KT_MSEC(300), keys); /* the steps below take far less */
    kd_replica *r = rep(e, 0, 0);
    assert_string_equal(db_cmd(e, 0, "FAULT SET stall 1"), "+OK");
    kt_future *f0 = fetch(e, keys[0]);
    (void)kt_loop_run(e->loop, KT_RUN_NOWAIT);
    assert_string_equal(db_cmd(e, 0, "FAULT CLEAR"), "+OK");
    /* the other connection (fewer outstanding) answers, after f0 was sent */
    kt_future *f1 = fetch(e, keys[1]);
    await(e, f1);
    assert_int_equal(kt_future_state_of(f1), KT_FUTURE_RESOLVED);
    kt_future_unref(f1);
    int stuck_conn = kt_pconn_outstanding(&r->conns[0].pc) ? 0 : 1;
    assert_int_equal(kt_pconn_outstanding(&r->conns[stuck_conn].pc), 1);
    assert_string_equal(db_cmd(e, 0, "FAULT SET stall 1"), "+OK");
    f1 = fetch(e, keys[1]); /* the other connection stalls too */
    (void)kt_loop_run(e->loop, KT_RUN_NOWAIT);
    assert_int_equal(kt_pconn_outstanding(&r->conns[1 - stuck_conn].pc), 1);
    assert_true(r->last_reply > 0);
    run_until(e, state_pred_out, r);
    assert_int_equal(r->state, KD_REP_EJECTED);
    assert_int_equal(r->st.ejections, 1);
    assert_int_equal(r->st.ej_consecutive, 1);
    assert_int_equal(r->st.ej_rate, 0);
    assert_true(r->st.stalls >= 1 && r->st.stalls <= 2);
    assert_non_null(strstr(r->eject_cause, "every connection stalled"));
    await(e, f0);
    await(e, f1);
    assert_int_equal(kt_future_state_of(f0), KT_FUTURE_FAILED);
    assert_int_equal(kt_future_state_of(f1), KT_FUTURE_FAILED);
    kt_future_unref(f0);
    kt_future_unref(f1);
    assert_string_equal(db_cmd(e, 0, "FAULT CLEAR"), "+OK");
    assert_int_equal(served_by(e, keys[0]), 1); /* the neighbour serves it */
    env_free(e);
}

/* ---- reload ----------------------------------------------------------------------------------------- */

static bool retired_pred(void *arg)
{
    return ((kd_pool *)arg)->retired == NULL;
}

static void test_retire_on_reload(void **state)
{
    (void)state;
    env *e = env_new(2, "fixed 30ms");
    const char *one[] = { e->addr[0], NULL };
    configure(e, one);
    kt_future *f = fetch(e, "21");
    assert_int_equal(kt_loop_run(e->loop, KT_RUN_NOWAIT), 0); /* sent to the first */
    kt_future *q = fetch(e, "22");                           /* still queued */
    const char *two[] = { e->addr[1], NULL };
    configure(e, two);
    assert_non_null(e->pool->retired);
    assert_true(e->pool->retired->reps[0]->retiring);
    /* the queued one fails (moving it would change its server mid-flight) */
    assert_int_equal(kt_future_error(q), -ESHUTDOWN);
    assert_non_null(strstr(kt_future_errmsg(q), "removed from the configuration"));
    kt_future *g = fetch(e, "23");
    await(e, f);
    await(e, g);
    assert_value(f, 21); /* answered by the retiring server */
    assert_value(g, 23);
    assert_string_equal(rep(e, 0, 0)->name, e->addr[1]);
    run_until(e, retired_pred, e->pool);
    kt_future_unref(f);
    kt_future_unref(q);
    kt_future_unref(g);
    /* a bad line changes nothing */
    const char *bad[] = { "127.0.0.1:1,127.0.0.1:1", NULL };
    const char *why = NULL;
    assert_int_equal(kd_pool_configure(e->pool, &e->prm, bad, 1, &why), -EINVAL);
    assert_string_equal(why, "the same backend is listed twice");
    assert_string_equal(rep(e, 0, 0)->name, e->addr[1]);
    env_free(e);
}

/* ---- replicas: retries and hedged reads -------------------------------------------------------------- */

static void test_retry_on_replica(void **state)
{
    (void)state;
    env *e = env_new(2, "fixed 5ms");
    e->prm.connections = 1;
    char line[160];
    snprintf(line, sizeof line, "%s,%s", e->addr[0], e->addr[1]);
    const char *lines[] = { line, NULL };
    configure(e, lines);
    assert_string_equal(db_cmd(e, 0, "FAULT SET reset 1"), "+OK");
    kt_future *f = fetch(e, "31"); /* both idle: the first replica */
    await(e, f);
    assert_value(f, 31);
    kd_group *g = e->pool->groups[0];
    assert_int_equal(g->st.retries, 1);
    assert_int_equal(rep(e, 0, 1)->st.retries, 1);
    kt_future_unref(f);
    env_free(e);
}

static void test_hedge(void **state)
{
    (void)state;
    env *e = env_new(2, "fixed 5ms");
    e->prm.connections = 1;
    e->prm.hedge_after = KT_MSEC(20);
    e->prm.hedge_max_extra = 1.0;
    char line[160];
    snprintf(line, sizeof line, "%s,%s", e->addr[0], e->addr[1]);
    const char *lines[] = { line, NULL };
    configure(e, lines);
    kd_group *g = e->pool->groups[0];
    assert_string_equal(db_cmd(e, 0, "FAULT SET stall 1"), "+OK");
    kt_future *f = fetch(e, "51"); /* both idle: the first replica, which stalls */
    await(e, f);
    assert_value(f, 51);
    assert_int_equal(g->st.hedges, 1);
    assert_int_equal(g->st.hedges_won, 1);
    assert_int_equal(rep(e, 0, 1)->st.hedges_won, 1);
    /* the loser is abandoned: its reply will be dropped (or its
     * connection failed by the watchdog) */
    assert_int_equal(g->nflights, 0);
    kt_future_unref(f);
    env_free(e);
}

static void test_hedge_budget(void **state)
{
    (void)state;
    env *e = env_new(2, "fixed 30ms");
    e->prm.hedge_after = KT_MSEC(5);
    e->prm.hedge_max_extra = 0.25;
    char line[160];
    snprintf(line, sizeof line, "%s,%s", e->addr[0], e->addr[1]);
    const char *lines[] = { line, NULL };
    configure(e, lines);
    kd_group *g = e->pool->groups[0];
    kt_future *fs[8];
    fetch_n(e, fs, 8, 60);
    for (int i = 0; i < 8; i++) {
        await(e, fs[i]);
        assert_value(fs[i], 60 + i);
        kt_future_unref(fs[i]);
    }
    /* every fetch outlived the delay; 25% of 8 may be hedged */
    assert_int_equal(g->st.hedges, 2);
    assert_int_equal(g->st.budget_exhausted, 6);
    /* off: none */
    e->prm.hedge_after = 0;
    e->prm.hedge_pct = 0;
    const char *why;
    assert_int_equal(kd_pool_configure(e->pool, &e->prm, lines, 1, &why), 0);
    kt_future *f = fetch(e, "70");
    await(e, f);
    kt_future_unref(f);
    assert_int_equal(g->st.hedges, 2);
    assert_int_equal(g->st.budget_exhausted, 6);
    env_free(e);
}

/* pNN needs samples: none at first, then the group's recent percentile. */
static void test_hedge_percentile(void **state)
{
    (void)state;
    env *e = env_new(2, "fixed 2ms");
    e->prm.hedge_pct = 95;
    char line[160];
    snprintf(line, sizeof line, "%s,%s", e->addr[0], e->addr[1]);
    const char *lines[] = { line, NULL };
    configure(e, lines);
    kd_group *g = e->pool->groups[0];
    assert_int_equal(kd_health_hedge_ns(g), 0);
    for (int i = 0; i < 40; i++) {
        kt_future *f = fetch(e, "1");
        await(e, f);
        kt_future_unref(f);
    }
    uint64_t d = kd_health_hedge_ns(g);
    assert_true(d >= KT_MSEC(1) && d < KT_MSEC(500));
    const char *why;
    kd_pool_params prm;
    assert_int_equal(kd_pool_parse_hedge("p99.9", &prm, &why), 0);
    assert_true(prm.hedge_pct > 99.8 && prm.hedge_after == 0);
    assert_int_equal(kd_pool_parse_hedge("15ms", &prm, &why), 0);
    assert_true(prm.hedge_pct == 0 && prm.hedge_after == KT_MSEC(15));
    assert_int_equal(kd_pool_parse_hedge("p100", &prm, &why), -EINVAL);
    double s;
    assert_int_equal(kd_pool_parse_share("5%", &s, &why), 0);
    assert_true(s > 0.049 && s < 0.051);
    assert_int_equal(kd_pool_parse_share("150%", &s, &why), -EINVAL);
    env_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_one_mget),
        cmocka_unit_test(test_batch_limit),
        cmocka_unit_test(test_batch_error_reply),
        cmocka_unit_test(test_cancel_in_batch),
        cmocka_unit_test(test_cancel_in_pipeline),
        cmocka_unit_test(test_queue_limit),
        cmocka_unit_test(test_queue_bytes),
        cmocka_unit_test(test_output_limit),
        cmocka_unit_test(test_singleflight_join),
        cmocka_unit_test(test_singleflight_cancel),
        cmocka_unit_test(test_singleflight_failure),
        cmocka_unit_test(test_stall_fails_early),
        cmocka_unit_test(test_silent_server_ejected_at_first_stall),
        cmocka_unit_test(test_one_stall_is_not_silence),
        cmocka_unit_test(test_stuck_server_ejected),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_refused_retries),
        cmocka_unit_test(test_eject_and_probe),
        cmocka_unit_test(test_eject_by_rate),
        cmocka_unit_test(test_retire_on_reload),
        cmocka_unit_test(test_retry_on_replica),
        cmocka_unit_test(test_hedge),
        cmocka_unit_test(test_hedge_budget),
        cmocka_unit_test(test_hedge_percentile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
