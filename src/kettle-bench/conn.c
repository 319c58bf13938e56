/*
 * conn.c - one kettle-bench connection: connect (and reconnect), write
 * requests, match replies to them in order, judge and time them.
 *
 * Life of a connection:
 *
 *   IDLE --timer--> CONNECTING --ok--> UP --eof/error/garbage/timeout--> CLOSING
 *     ^                 |                                                  |
 *     |              failed                              on_close: retry?  |
 *     +----- backoff ---+--------------------------------------------------+
 *                       `--> DEAD (never connected, or KB_MAX_RECONNECTS failed)
 */
#include "config.h"
#include <errno.h>
#include <string.h>
#include "validate.h"
#include "worker.h"

static void on_connect(kt_pconn *pc, int status, void *arg);
static void on_reply(kt_pconn *pc, void *slot, uint64_t sent, const kt_resp_reply *reply,
                     void *arg);
static void on_abandon(kt_pconn *pc, void *slot, int err, const char *why, void *arg);
static void on_down(kt_pconn *pc, int err, const char *why, void *arg);
static void on_closed(kt_pconn *pc, void *arg);
static void on_input(kt_pconn *pc, void *arg);

/* The FIFO of requests in flight and the reply parsing are the shared
 * pipelined client's (src/common/pconn.h); a slot is a kb_req followed by
 * the keys the request was sent with. */
static const kt_pconn_cbs conn_cbs = {
    .on_connect = on_connect,
    .on_reply = on_reply,
    .on_abandon = on_abandon,
    .on_down = on_down,
    .on_closed = on_closed,
    .on_input = on_input,
};

int kb_conn_init(kb_conn *c)
{
    size_t maxph = c->w->cfg->mix.max_ph ? c->w->cfg->mix.max_ph : 1;
    return kt_pconn_init(&c->pc, c->w->loop, &conn_cbs, c, sizeof(kb_req) + maxph * sizeof(uint64_t),
                         NULL);
}

static inline uint64_t *req_vals(kb_req *r)
{
    return (uint64_t *)(void *)(r + 1);
}

static void log_failure(kb_conn *c, const char *what, const char *why)
{
    kb_worker *w = c->w;
    if (w->logged_fail < KB_LOG_FIRST)
        fprintf(stderr, "kettle-bench: %s %s: %s\n", what, w->cfg->addr_text, why);
    else if (w->logged_fail == KB_LOG_FIRST)
        fprintf(stderr, "kettle-bench: (thread %u: further connection failures are only counted)\n",
                w->index);
    w->logged_fail++;
}

/* Given up for good. */
static void dead(kb_conn *c)
{
    kb_worker *w = c->w;
    if (!c->ever_up)
        kb_worker_settled(w);
    c->state = KB_C_DEAD;
    w->live--;
    if (!c->exhausted) {
        c->exhausted = true;
        w->active--;
    }
    kb_worker_maybe_done(w);
}

/* No stream left: reconnect after a back-off, or give up. */
static void after_close(kb_conn *c, bool retry)
{
    if (retry && !c->w->finishing) {
        unsigned shift = c->attempts < 5 ? c->attempts : 5;
        c->state = KB_C_IDLE;
        if (kt_timer_start(&c->timer, KT_MSEC(50) << shift, 0) == 0)
            return;
    }
    dead(c);
}

/* A connect attempt failed: retry only a connection that has worked, and
 * only KB_MAX_RECONNECTS times in a row. */
static bool count_attempt(kb_conn *c)
{
    c->attempts++;
    return c->ever_up && c->attempts <= KB_MAX_RECONNECTS;
}

void kb_conn_connect(kb_conn *c)
{
    kb_worker *w = c->w;
    if (w->finishing || c->state != KB_C_IDLE)
        return;
    /* connecting is always bounded: the start waits for every connection */
    uint64_t limit = w->cfg->timeout_ns ? w->cfg->timeout_ns : KB_DEFAULT_TIMEOUT;
    int rc = kt_pconn_connect(&c->pc, &w->cfg->addr, limit);
    if (rc < 0) {
        w->stats.conn_failures++;
        w->ierrors++;
        log_failure(c, "cannot connect to", strerror(-rc));
        after_close(c, count_attempt(c));
        return;
    }
    c->state = KB_C_CONNECTING;
    w->open_streams++;
}

static void on_connect(kt_pconn *pc, int status, void *arg)
{
    kb_conn *c = arg;
    kb_worker *w = c->w;
    if (status == 0) {
        c->state = KB_C_UP;
        if (!c->ever_up)
            kb_worker_settled(w);
        c->ever_up = true;
        c->attempts = 0;
        w->stats.connects++;
        w->now = kt_clock_ns();
        kb_conn_pump(c);
        return;
    }
    /* the stream is closing already: on_closed decides what next */
    w->stats.conn_failures++;
    w->ierrors++;
    log_failure(c, "cannot connect to", strerror(-status));
    c->state = KB_C_CLOSING;
    c->retry = count_attempt(c);
}

/* The connection is gone with n requests in flight: they are timeouts
 * (timed_out) or lost (one connection failure). */
static void lost(kb_conn *c, uint32_t n, bool timed_out, bool retry, const char *why)
{
    kb_worker *w = c->w;
    if (timed_out) {
        w->stats.timeouts += n;
        w->ierrors += n;
    } else {
        w->stats.conn_failures++;
        w->stats.lost += n;
        w->ierrors++;
    }
    log_failure(c, timed_out ? "request timed out on" : "connection failed to", why);
    w->inflight -= n;
    kt_timer_stop(&c->timer);
    c->retry = retry;
    c->state = KB_C_CLOSING;
    kb_worker_maybe_done(w);
}

void kb_conn_fail(kb_conn *c, bool timed_out, bool retry, const char *why)
{
    kb_worker *w = c->w;
    if (c->state == KB_C_CONNECTING) {
        w->stats.conn_failures++;
        w->ierrors++;
        log_failure(c, "cannot connect to", why);
        c->state = KB_C_CLOSING;
        c->retry = count_attempt(c) && retry;
        kt_pconn_close(&c->pc, KT_CLOSE_NOW);
        return;
    }
    if (c->state != KB_C_UP)
        return;
    uint32_t n = kt_pconn_outstanding(&c->pc);
    c->state = KB_C_CLOSING;
    kt_pconn_close(&c->pc, timed_out ? KT_CLOSE_RESET : KT_CLOSE_NOW);
    lost(c, n, timed_out, retry, why);
}

/* Requests handed back by a failure or a close: counted by lost(). */
static void on_abandon(kt_pconn *pc, void *slot, int err, const char *why, void *arg)
{
    kb_conn *c = arg;
    (void)pc, (void)slot, (void)err, (void)why;
    c->abandoned++;
}

/* Closed by the server, reset, a malformed reply or one to no request. */
static void on_down(kt_pconn *pc, int err, const char *why, void *arg)
{
    kb_conn *c = arg;
    uint32_t n = c->abandoned;
    (void)pc, (void)err;
    c->abandoned = 0;
    if (c->state == KB_C_UP) {
        lost(c, n, false, true, why);
    } else if (c->state == KB_C_CONNECTING) {
        c->w->stats.conn_failures++;
        c->w->ierrors++;
        log_failure(c, "cannot connect to", why);
        c->state = KB_C_CLOSING;
        c->retry = count_attempt(c);
    }
}

static void on_closed(kt_pconn *pc, void *arg)
{
    kb_conn *c = arg;
    kb_worker *w = c->w;
    (void)pc;
    c->abandoned = 0;
    w->open_streams--;
    if (w->finishing)
        return; /* the loop's run returns once the last one is closed */
    if (c->state == KB_C_CLOSING)
        after_close(c, c->retry);
}

/* Fill the placeholders of t for one request. */
static void make_keys(kb_worker *w, const kb_template *t, uint64_t *vals)
{
    const kb_config *cfg = w->cfg;
    size_t k = 0;
    for (size_t i = 0; i < t->argc; i++) {
        const kb_arg *a = &t->args[i];
        for (size_t p = 0; p < a->nparts; p++) {
            if (a->parts[p].ph == KB_PH_RAND) {
                vals[k++] = kt_rng_below(&w->rng, cfg->keyspace);
            } else if (a->parts[p].ph == KB_PH_ZIPF) {
                vals[k++] = kb_zipf_next(&cfg->zipf, &w->rng);
            } else if (a->parts[p].ph == KB_PH_SEQ) {
                vals[k++] = (w->index + w->seq_k * cfg->threads) % cfg->keyspace;
                w->seq_k++;
            }
        }
    }
}

/* Write one request; origin is where its latency counts from. */
static void send_one(kb_conn *c, uint64_t origin, bool measured)
{
    kb_worker *w = c->w;
    const kb_template *t = kb_mix_pick(&w->cfg->mix, kt_rng_next(&w->rng));
    kb_req *req = kt_pconn_push(&c->pc, NULL, NULL);
    if (req == NULL) {
        kb_conn_fail(c, false, true, "out of memory");
        return;
    }
    *req = (kb_req){ .origin = origin, .sent = w->now, .t = t, .measured = measured };
    w->inflight++; /* from here on lost with the connection if it fails */
    uint64_t *vals = req_vals(req);
    size_t off = 0;

    make_keys(w, t, vals);
    for (size_t i = 0; i < t->argc; i++) {
        size_t n = kb_render_arg(t, i, vals, w->scratch + off);
        w->argv[i] = (kt_resp_arg){ w->scratch + off, n };
        off += n;
    }
    kt_out o = kt_pconn_out(&c->pc);
    if (kt_resp_command(&o, t->argc, w->argv) < 0) {
        kb_conn_fail(c, false, true, "out of memory");
        return;
    }
    if (measured)
        w->stats.sent++;
}

/* Closed loop: may this thread send another request now? */
static bool may_issue(const kb_worker *w)
{
    const kb_config *cfg = w->cfg;
    /* before the start only a ramp sends (its load builds up gradually) */
    if (w->finishing || w->now >= w->t_end || (!w->go && cfg->ramp_ns == 0))
        return false;
    return !(cfg->count != 0 && w->now >= w->t_measure && w->stats.sent >= w->quota);
}

static void exhaust(kb_conn *c)
{
    if (!c->exhausted) {
        c->exhausted = true;
        c->w->active--;
    }
}

void kb_conn_pump(kb_conn *c)
{
    kb_worker *w = c->w;
    const kb_config *cfg = w->cfg;

    if (cfg->rate == 0) {
        while (c->state == KB_C_UP && kt_pconn_outstanding(&c->pc) < cfg->pipeline && may_issue(w))
            send_one(c, w->now, w->now >= w->t_measure);
        return;
    }
    while (w->go && c->state == KB_C_UP && kt_pconn_outstanding(&c->pc) < cfg->pipeline &&
           !c->exhausted) {
        uint64_t g = c->id + c->next_j * cfg->conns;
        if (w->sched_over || w->finishing || (cfg->count != 0 && g >= cfg->warm_index + cfg->count)) {
            exhaust(c);
            break;
        }
        uint64_t due = w->t_start + (uint64_t)((double)g * cfg->ns_per_req);
        if (due >= w->t_end) {
            exhaust(c);
            break;
        }
        if (due > w->now) {
            uint64_t base = kt_loop_now(w->loop);
            kt_timer_start(&c->timer, due > base ? due - base : 0, 0);
            break;
        }
        c->next_j++;
        send_one(c, due, g >= cfg->warm_index);
    }
}

/* Replies arrived: they are timed from this one clock read. */
static void on_input(kt_pconn *pc, void *arg)
{
    kb_conn *c = arg;
    (void)pc;
    c->w->now = kt_clock_ns();
}

/* The reply to the oldest request: time it and judge it. */
static void on_reply(kt_pconn *pc, void *slot, uint64_t sent, const kt_resp_reply *reply,
                     void *arg)
{
    kb_conn *c = arg;
    kb_worker *w = c->w;
    const kb_config *cfg = w->cfg;
    kb_req *req = slot;
    const uint64_t *vals = req_vals(req);
    (void)pc, (void)sent;

    w->inflight--;
    uint64_t lat = w->now > req->origin ? w->now - req->origin : 0;
    if (req->measured) {
        kt_hist_record(&w->stats.hist, lat);
        kb_stats_slot(&w->stats, w->now > w->t_measure ? w->now - w->t_measure : 0);
        w->stats.done++;
        w->stats.last_ns = w->now;
        if (cfg->progress) {
            kt_hist_record(&w->ihist, lat);
            w->idone++;
        }
    } else {
        w->stats.warm++;
    }
    kb_verdict v = kb_validate(req->t, vals, reply, w->scratch);
    if (v == KB_V_ERROR) {
        kb_stats_error_text(&w->stats, reply->nodes[0].p, reply->nodes[0].len);
        w->ierrors++;
    } else if (v == KB_V_PARTIAL) {
        w->stats.partial++;
        kb_stats_error_elements(&w->stats, reply);
        w->ierrors++;
    } else if (v == KB_V_MISMATCH) {
        w->stats.mismatch++;
        kb_stats_error_elements(&w->stats, reply);
        w->ierrors++;
        if (w->logged_mismatch++ < KB_LOG_FIRST) {
            char line[400];
            fprintf(stderr, "kettle-bench: wrong reply: %s\n",
                    kb_describe(req->t, vals, reply, w->scratch, line, sizeof(line)));
        }
    }
    kb_conn_pump(c);
    if (w->inflight == 0)
        kb_worker_maybe_done(w);
}

uint64_t kb_conn_unsent(const kb_conn *c, uint64_t until)
{
    const kb_worker *w = c->w;
    const kb_config *cfg = w->cfg;
    uint64_t C = cfg->conns, id = c->id;
    if (cfg->rate == 0 || !w->go || until <= w->t_start)
        return 0;
    /* schedule indexes g < hi were due by `until` and within the run */
    uint64_t hi = (uint64_t)((double)(until - w->t_start) / cfg->ns_per_req) + 1;
    if (w->t_end != UINT64_MAX && w->t_end > w->t_start) {
        double e = (double)(w->t_end - w->t_start) / cfg->ns_per_req;
        uint64_t ge = (uint64_t)e + ((double)(uint64_t)e < e ? 1 : 0);
        if (ge < hi)
            hi = ge;
    }
    if (cfg->count != 0 && cfg->warm_index + cfg->count < hi)
        hi = cfg->warm_index + cfg->count;
    uint64_t j_hi = hi > id ? (hi - id + C - 1) / C : 0;
    uint64_t j_lo = cfg->warm_index > id ? (cfg->warm_index - id + C - 1) / C : 0;
    if (c->next_j > j_lo)
        j_lo = c->next_j;
    return j_hi > j_lo ? j_hi - j_lo : 0;
}
