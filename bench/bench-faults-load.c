/*
 * bench-faults-load.c - the load of bench/faults.py: CONNS connections to
 * kettled, each with one `MGET k1 .. kK` of random keys always in flight,
 * every reply judged (right, partial: an error element in place of a
 * value, an error reply, wrong), the counts printed every INTERVAL ms:
 *
 *   bench-faults-load PORT CONNS KEYS SECONDS [INTERVAL_MS]
 *   -> "T_MS OK PARTIAL ERROR WRONG" lines on stdout, the first one
 *      ("0 0 0 0 0") at its time zero, before it connects: the caller
 *      times its faults from it (starting the program may take a while)
 *
 * It is a small user of the shared pipelined client (src/common/pconn.h):
 * a slot holds the keys a request asked for, a failed connection is
 * reopened after 50 ms.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <kettle/kettle.h>
#include "pconn.h"
#include "rng.h"

#define MAX_KEYS 16

typedef struct slot {
    uint32_t keys[MAX_KEYS];
} slot;

typedef struct conn {
    kt_pconn pc;
    kt_timer retry;
} conn;

static kt_loop *loop;
static kt_addr addr;
static unsigned nkeys;
static uint64_t counts[4]; /* ok, partial, error, wrong */
static kt_rng rng;
static uint64_t t0;

static uint32_t rnd(void)
{
    return (uint32_t)kt_rng_below(&rng, 100000);
}

static void send_one(conn *c)
{
    char bufs[MAX_KEYS][16];
    kt_resp_arg argv[MAX_KEYS + 1] = { { "MGET", 4 } };
    slot s;
    for (unsigned i = 0; i < nkeys; i++) {
        s.keys[i] = rnd();
        int n = snprintf(bufs[i], sizeof bufs[i], "%u", (unsigned)s.keys[i]);
        argv[i + 1] = (kt_resp_arg){ bufs[i], (size_t)n };
    }
    slot *sl = kt_pconn_command(&c->pc, nkeys + 1, argv, NULL, NULL);
    if (sl)
        *sl = s;
}

static int judge(const slot *s, const kt_resp_reply *r)
{
    const kt_resp_node *top = &r->nodes[0];
    if (top->type == KT_RESP_ERROR_REPLY)
        return 2;
    if (top->type != KT_RESP_ARRAY || top->n != nkeys || r->count != nkeys + 1)
        return 3;
    int kind = 0;
    for (unsigned i = 0; i < nkeys; i++) {
        const kt_resp_node *n = &top[1 + i];
        int64_t v;
        if (n->type == KT_RESP_ERROR_REPLY)
            kind = 1;
        else if (n->type != KT_RESP_BULK || kt_parse_i64(n->p, n->len, &v) < 0 || v != s->keys[i])
            return 3;
    }
    return kind;
}

static void reply_cb(kt_pconn *pc, void *sl, uint64_t sent, const kt_resp_reply *r, void *arg)
{
    (void)sent;
    counts[r ? judge(sl, r) : 3]++;
    send_one(arg);
    (void)pc;
}

static void connect_cb(kt_pconn *pc, int status, void *arg)
{
    conn *c = arg;
    (void)pc;
    if (status < 0)
        (void)kt_timer_start(&c->retry, KT_MSEC(50), 0);
    else
        send_one(c);
}

static void down_cb(kt_pconn *pc, int err, const char *why, void *arg)
{
    conn *c = arg;
    (void)pc;
    (void)err;
    (void)why;
    (void)kt_timer_start(&c->retry, KT_MSEC(50), 0);
}

static void retry_cb(kt_timer *t, void *arg)
{
    conn *c = arg;
    (void)t;
    if (kt_pconn_connect(&c->pc, &addr, KT_SEC(1)) < 0)
        (void)kt_timer_start(&c->retry, KT_MSEC(50), 0);
}

static const kt_pconn_cbs cbs = {
    .on_connect = connect_cb,
    .on_reply = reply_cb,
    .on_down = down_cb,
};

static void tick_cb(kt_timer *t, void *arg)
{
    uint64_t *end = arg;
    uint64_t now = kt_loop_now(loop);
    printf("%llu %llu %llu %llu %llu\n", (unsigned long long)((now - t0) / KT_MSEC(1)),
           (unsigned long long)counts[0], (unsigned long long)counts[1],
           (unsigned long long)counts[2], (unsigned long long)counts[3]);
    fflush(stdout);
    memset(counts, 0, sizeof counts);
    if (now >= *end) {
        kt_timer_stop(t);
        kt_loop_stop(loop);
    }
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: bench-faults-load PORT CONNS KEYS SECONDS [INTERVAL_MS]\n");
        return 2;
    }
    char spec[64];
    snprintf(spec, sizeof spec, "127.0.0.1:%s", argv[1]);
    unsigned nconns = (unsigned)atoi(argv[2]);
    nkeys = (unsigned)atoi(argv[3]);
    uint64_t secs = (uint64_t)atoi(argv[4]);
    uint64_t ival = argc > 5 ? (uint64_t)atoi(argv[5]) : 250;
    (void)kt_rng_seed_random(&rng);
    if (nkeys < 1 || nkeys > MAX_KEYS || nconns < 1 || kt_addr_parse(spec, &addr) < 0 ||
        kt_loop_new(&loop, NULL) < 0)
        return 2;
    conn *cs = calloc(nconns, sizeof *cs);
    if (cs == NULL)
        return 2;
    for (unsigned i = 0; i < nconns; i++) {
        if (kt_pconn_init(&cs[i].pc, loop, &cbs, &cs[i], sizeof(slot), NULL) < 0)
            return 2;
        kt_timer_init(loop, &cs[i].retry, retry_cb, &cs[i]);
        (void)kt_timer_start(&cs[i].retry, 0, 0);
    }
    t0 = kt_loop_now(loop);
    printf("0 0 0 0 0\n");
    fflush(stdout);
    uint64_t end = t0 + KT_SEC(secs);
    kt_timer tick;
    kt_timer_init(loop, &tick, tick_cb, &end);
    (void)kt_timer_start(&tick, KT_MSEC(ival), KT_MSEC(ival));
    (void)kt_loop_run(loop, KT_RUN_DEFAULT);
    for (unsigned i = 0; i < nconns; i++) {
        kt_timer_stop(&cs[i].retry);
        kt_pconn_close(&cs[i].pc, KT_CLOSE_NOW);
    }
    for (int i = 0; i < 10; i++)
        (void)kt_loop_run(loop, KT_RUN_NOWAIT);
    for (unsigned i = 0; i < nconns; i++)
        kt_pconn_free(&cs[i].pc);
    free(cs);
    kt_loop_free(loop);
    return 0;
}
