/*
 * conn.c - one replica's pipelined connections (src/common/pconn.h).
 *
 * A command carries the attempts of one batch: "GET key" for one,
 * "MGET k1 ... kn" for several (the replica's queue at the end of a loop
 * iteration, up to backend-batch keys). Its slot on the connection lists
 * them in key order, so the reply - a value, or an array of n values -
 * settles each in turn; an error reply answers every attempt of that
 * command and no other. An attempt nobody wants any more stays in its
 * command (its element is ignored); a command nobody wants is dropped,
 * its reply read and thrown away.
 *
 * Any failure - refused, reset, closed, garbage, a reply overdue past the
 * replica's stall threshold - fails the attempts of every outstanding
 * command with an error naming the server (each may be retried on another
 * replica), counts toward the replica's health, and reconnects after an
 * exponential backoff with jitter.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "pool-int.h"

static void conn_connect_cb(kt_pconn *pc, int status, void *arg);
static void conn_reply_cb(kt_pconn *pc, void *slot, uint64_t sent, const kt_resp_reply *reply,
                          void *arg);
static void conn_overdue_cb(kt_pconn *pc, uint64_t waited, void *arg);
static void conn_abandon_cb(kt_pconn *pc, void *slot, int err, const char *why, void *arg);
static void conn_down_cb(kt_pconn *pc, int err, const char *why, void *arg);
static void conn_drain_cb(kt_pconn *pc, void *arg);
static void retry_cb(kt_timer *t, void *arg);

static const kt_pconn_cbs conn_cbs = {
    .on_connect = conn_connect_cb,
    .on_reply = conn_reply_cb,
    .on_overdue = conn_overdue_cb,
    .on_abandon = conn_abandon_cb,
    .on_down = conn_down_cb,
    .on_drain = conn_drain_cb,
};

int kd_conn_init(kd_conn *c, kd_replica *r)
{
    kd_pool *p = r->pool;
    memset(c, 0, sizeof *c);
    c->r = r;
    kt_timer_init(p->loop, &c->retry, retry_cb, c);
    return kt_pconn_init(&c->pc, p->loop, &conn_cbs, c, sizeof(kd_cmd), &p->lim);
}

void kd_conn_apply_params(kd_conn *c)
{
    const kd_pool_params *prm = &c->r->pool->prm;
    size_t hi = (size_t)prm->output_limit;
    kt_pconn_set_watermarks(&c->pc, hi, hi / 4);
    kt_pconn_set_timeout(&c->pc, kd_health_stall_ns(c->r));
}

bool kd_conn_has_room(const kd_conn *c)
{
    return kt_pconn_state_of(&c->pc) == KT_PCONN_UP &&
           kt_pconn_outstanding(&c->pc) < c->r->pool->prm.pipeline && !kt_pconn_blocked(&c->pc);
}

/* ---- connecting and backing off ------------------------------------------------------------- */

/* A connection attempt or a connection failed: count it, maybe fail the
 * queue, schedule the reconnect. */
static void conn_failed(kd_conn *c, bool counts, uint32_t requests, const char *what)
{
    kd_replica *r = c->r;
    kd_pool *p = r->pool;
    r->st.conn_failures++;
    /* A connection that never served a reply counts as a failed attempt
     * even when it "only" closed: a server that accepts and then drops
     * every connection must be backed off and ejected like a dead one. */
    counts = counts || !c->served;
    if (counts)
        c->fails++;
    if (!r->warned) {
        kt_log_warning("backend %s: %s", r->name, what);
        r->warned = true;
    } else {
        kt_log_info("backend %s: %s", r->name, what);
    }
    /* The connection counts once, and once more for each request lost
     * with it. */
    kd_health_failure(r, requests + 1, counts, what);
    if (r->retiring)
        return;
    if (r->up == 0 && r->connecting == 0 && r->qlen) {
        char msg[320];
        snprintf(msg, sizeof msg, "ERR backend %s is down: %s", r->name, what);
        kd_queue_fail(r, -EHOSTDOWN, msg, true);
    }
    uint64_t delay = kd_pool_backoff(p, c->fails);
    uint64_t now = kt_loop_now(p->loop);
    if (r->state == KD_REP_EJECTED && r->eject_until > now + delay)
        delay = r->eject_until - now;
    (void)kt_timer_start(&c->retry, delay, 0);
}

static void connect_failed(kd_conn *c, int err)
{
    char what[96];
    snprintf(what, sizeof what, "cannot connect: %s", strerror(-err));
    conn_failed(c, true, 0, what);
}

void kd_conn_start(kd_conn *c)
{
    kd_replica *r = c->r;
    kd_pool *p = r->pool;
    c->served = false;
    int e = kt_pconn_connect(&c->pc, &r->addr, p->prm.connect_timeout);
    if (e < 0) {
        connect_failed(c, e);
        return;
    }
    r->connecting++;
    kd_conn_apply_params(c);
}

static void retry_cb(kt_timer *t, void *arg)
{
    kd_conn *c = arg;
    kd_replica *r = c->r;
    uint64_t now = kt_loop_now(r->pool->loop);
    (void)t;
    if (r->retiring || kt_pconn_state_of(&c->pc) != KT_PCONN_DOWN)
        return;
    if (r->state == KD_REP_EJECTED && now < r->eject_until) {
        (void)kt_timer_start(&c->retry, r->eject_until - now, 0);
        return;
    }
    kd_conn_start(c);
}

void kd_conn_kick(kd_conn *c)
{
    if (kt_pconn_state_of(&c->pc) == KT_PCONN_DOWN && !c->r->retiring) {
        kt_timer_stop(&c->retry);
        kd_conn_start(c);
    }
}

static void conn_connect_cb(kt_pconn *pc, int status, void *arg)
{
    kd_conn *c = arg;
    kd_replica *r = c->r;
    (void)pc;
    r->connecting--;
    if (status < 0) {
        connect_failed(c, status);
        return;
    }
    r->up++;
    c->up = true;
    r->st.connects++;
    kt_log_info("backend %s: connection %u up", r->name, (unsigned)(c - r->conns));
    kd_health_conn_up(r, c);
    if (r->qlen)
        kd_pool_mark(r);
}

/* ---- sending -------------------------------------------------------------------------------- */

static char *put_len(char *q, char type, size_t v)
{
    char digits[24];
    size_t nd = 0;
    *q++ = type;
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (nd)
        *q++ = digits[--nd];
    *q++ = '\r';
    *q++ = '\n';
    return q;
}

/* $len CRLF key CRLF: small keys in one reservation, large ones through
 * the encoder (which writes them in pieces). */
static int put_key(kt_out *o, const char *key, size_t len)
{
    if (len > 4096)
        return kt_resp_bulk(o, key, len);
    char *p = o->reserve(o->ctx, len + 32);
    if (p == NULL)
        return -ENOMEM;
    char *q = put_len(p, '$', len);
    memcpy(q, key, len);
    q += len;
    *q++ = '\r';
    *q++ = '\n';
    o->commit(o->ctx, (size_t)(q - p));
    return 0;
}

int kd_conn_send_batch(kd_conn *c, uint32_t n)
{
    kd_replica *r = c->r;
    uint64_t seq;
    int err = 0;
    kd_cmd *cmd = kt_pconn_push(&c->pc, &seq, &err);
    if (cmd == NULL)
        return err; /* the attempts stay queued */
    memset(cmd, 0, sizeof *cmd);
    kt_out o = kt_pconn_out(&c->pc);
    char *p = o.reserve(o.ctx, 48);
    int e = p ? 0 : -ENOMEM;
    if (p) {
        char *q = put_len(p, '*', (size_t)n + 1);
        if (n == 1) {
            memcpy(q, "$3\r\nGET\r\n", 9);
            q += 9;
        } else {
            memcpy(q, "$4\r\nMGET\r\n", 10);
            q += 10;
        }
        o.commit(o.ctx, (size_t)(q - p));
    }
    kd_att *last = NULL;
    for (uint32_t i = 0; i < n && e == 0; i++) {
        kd_att *a = r->qhead;
        kd_queue_unlink(r, a);
        a->state = KD_ATT_SENT;
        a->conn = c;
        a->seq = seq;
        a->next = NULL;
        if (last)
            last->next = a;
        else
            cmd->head = a;
        last = a;
        cmd->n++;
        cmd->live++;
        e = put_key(&o, a->fl->key, a->fl->len);
    }
    r->st.batches++;
    r->st.keys += cmd->n;
    kd_lh_add(&r->batch_keys, cmd->n, 1);
    if (e < 0) /* part of a command is queued: the stream is beyond saving */
        kt_pconn_fail(&c->pc, -ENOMEM, "out of memory");
    return e;
}

int kd_conn_send_probe(kd_conn *c, uint32_t round)
{
    static const char probe[] = "*2\r\n$3\r\nGET\r\n$1\r\n0\r\n";
    int err;
    kd_cmd *cmd = kt_pconn_push(&c->pc, NULL, &err);
    if (cmd == NULL)
        return err;
    memset(cmd, 0, sizeof *cmd);
    cmd->live = round;
    kt_out o = kt_pconn_out(&c->pc);
    char *p = o.reserve(o.ctx, sizeof probe);
    if (p == NULL) {
        kt_pconn_fail(&c->pc, -ENOMEM, "out of memory");
        return -ENOMEM;
    }
    memcpy(p, probe, sizeof probe - 1);
    o.commit(o.ctx, sizeof probe - 1);
    return 0;
}

/* ---- replies ----------------------------------------------------------------------------------- */

static void answer_all(kd_cmd *cmd, const kt_resp_node *n)
{
    for (kd_att *a = cmd->head, *next; a; a = next) {
        next = a->next;
        if (a->fl)
            kd_att_answer(a, n);
        kd_att_free(a);
    }
}

static void fail_all(kd_cmd *cmd, int err, const char *msg, bool retryable)
{
    for (kd_att *a = cmd->head, *next; a; a = next) {
        next = a->next;
        if (a->fl)
            kd_att_failed(a, err, msg, retryable);
        kd_att_free(a);
    }
}

static void conn_reply_cb(kt_pconn *pc, void *slot, uint64_t sent, const kt_resp_reply *reply,
                          void *arg)
{
    kd_conn *c = arg;
    kd_replica *r = c->r;
    kd_cmd *cmd = slot;
    uint64_t now = kt_loop_now(r->pool->loop);
    uint64_t took = now > sent ? now - sent : 0;
    (void)pc;
    r->st.replies++;
    if (!c->served) {
        c->served = true;
        c->fails = 0;
    }
    c->stalled_at = 0;
    const kt_resp_node *top = reply ? &reply->nodes[0] : NULL;
    /* An error reply is an answer: the server is up and said no (a key of
     * the wrong type, a malformed key). It counts for health as any reply;
     * only failures to answer weigh toward ejection. */
    kd_health_reply(r, took, cmd->n);
    if (cmd->n == 0) {
        kd_health_probe_done(r, cmd->live, true);
    } else if (top == NULL) {
        fail_all(cmd, 0, NULL, false); /* nobody waits: only frees */
    } else if (cmd->n == 1 || top->type == KT_RESP_ERROR_REPLY) {
        answer_all(cmd, top);
    } else if (top->type == KT_RESP_ARRAY && top->n == cmd->n && reply->count == (size_t)cmd->n + 1) {
        const kt_resp_node *n = top + 1;
        for (kd_att *a = cmd->head, *next; a; a = next, n++) {
            next = a->next;
            if (a->fl)
                kd_att_answer(a, n);
            kd_att_free(a);
        }
    } else {
        char msg[200];
        snprintf(msg, sizeof msg, "ERR backend %s: unexpected reply to MGET of %u keys", r->name,
                 (unsigned)cmd->n);
        fail_all(cmd, -EPROTO, msg, false);
    }
    if (r->qlen)
        kd_pool_mark(r);
}

static void conn_drain_cb(kt_pconn *pc, void *arg)
{
    kd_conn *c = arg;
    (void)pc;
    if (c->r->qlen)
        kd_pool_mark(c->r);
}

static void conn_overdue_cb(kt_pconn *pc, uint64_t waited, void *arg)
{
    (void)pc;
    kd_health_overdue(arg, waited);
}

/* ---- failing and closing ------------------------------------------------------------------------ */

static void conn_abandon_cb(kt_pconn *pc, void *slot, int err, const char *why, void *arg)
{
    kd_conn *c = arg;
    kd_replica *r = c->r;
    kd_cmd *cmd = slot;
    char msg[320];
    (void)pc;
    (void)err;
    c->lost++;
    if (why)
        snprintf(msg, sizeof msg, "ERR backend %s: %s", r->name, why);
    else
        snprintf(msg, sizeof msg, "%s", c->close_msg ? c->close_msg : "ERR backend connection closed");
    if (cmd->n == 0) {
        if (why) /* not on a close: retiring or shutting down */
            kd_health_probe_done(r, cmd->live, false);
        return;
    }
    fail_all(cmd, why ? -EIO : -ESHUTDOWN, msg, why != NULL && !r->retiring);
}

static void conn_down_cb(kt_pconn *pc, int err, const char *why, void *arg)
{
    kd_conn *c = arg;
    kd_replica *r = c->r;
    uint32_t lost = c->lost;
    (void)pc;
    c->lost = 0;
    if (c->up) {
        r->up--;
        c->up = false;
    } else {
        r->connecting--;
    }
    /* A stall or garbage counts toward ejection; a close or reset by the
     * server only when the connection never served (see conn_failed). */
    conn_failed(c, err == -ETIMEDOUT || err == -EPROTO || err == -ENOMEM, lost, why);
}

void kd_conn_close(kd_conn *c, const char *msg)
{
    kd_replica *r = c->r;
    kt_pconn_state st = kt_pconn_state_of(&c->pc);
    kt_timer_stop(&c->retry);
    if (c->up)
        r->up--;
    else if (st == KT_PCONN_CONNECTING)
        r->connecting--;
    c->up = false;
    c->close_msg = msg;
    kt_pconn_close(&c->pc, KT_CLOSE_NOW);
    c->close_msg = NULL;
    c->lost = 0;
}

void kd_conn_free(kd_conn *c)
{
    kt_timer_stop(&c->retry);
    kt_pconn_free(&c->pc);
}
