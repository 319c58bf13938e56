/*
 * reply.c - kettle-db's reply path: the server core's hooks for the
 * requests it deferred (GET, MGET). When a request's reply is due (its
 * delay is over and every earlier reply on the connection has been
 * written) kdb_emit writes it, or acts out the fault rolled on its arrival:
 *
 *   error    an error reply instead
 *   close    FIN after the earlier replies (no reply)
 *   reset    RST once the earlier replies have left (no reply)
 *   garbage  bytes that are not RESP
 *   cut      the first K bytes, then nothing ever again (output held)
 *   trickle  the reply in slices on a timer; the replies behind it wait
 *            (output held) until the last slice has left
 *
 * A stalled request is never ready, so it is never emitted. A connection
 * that closes drops its requests here (timers stopped, worker slots
 * released).
 */
#include "config.h"
#include <errno.h>
#include <string.h>
#include "kdb.h"

static void write_value(kdb_server *srv, kt_out *o, const kdb_req *r)
{
    if (r->flags & KDB_RF_BADKEY)
        (void)kt_resp_error(o, "ERR key is not a decimal integer");
    else if (r->key >= 0 && r->key < srv->cfg.keyspace)
        (void)kt_resp_bulk_i64(o, r->key);
    else
        (void)kt_resp_nil(o);
}

void kdb_encode(kdb_server *srv, kt_out *o, const kdb_req *r)
{
    if (r->kind == KDB_REQ_MGET) {
        (void)kt_resp_array(o, r->len);
        for (const kdb_req *k = r->keys; k; k = k->next)
            write_value(srv, o, k);
    } else {
        write_value(srv, o, r);
    }
}

static void free_req(kdb_server *srv, kdb_req *r)
{
    if (r->kind == KDB_REQ_MGET) {
        kdb_req *k;
        while ((k = r->keys)) {
            r->keys = k->next;
            kdb_req_put(srv, k);
        }
    }
    kdb_req_put(srv, r);
}

/* ---- faults that outlast the emit: trickle and reset ----------------------- */

static void send_trickle_slice(kdb_server *srv, kdb_conn *kc)
{
    uint32_t slice = srv->faults.f[KDB_F_TRICKLE].n ? srv->faults.f[KDB_F_TRICKLE].n : 1;
    uint32_t n = kc->tlen - kc->toff < slice ? kc->tlen - kc->toff : slice;
    (void)kt_stream_write(kc->core.s, kc->tbuf + kc->toff, n);
    kc->toff += n;
}

static void conn_timer_cb(kt_timer *t, void *arg)
{
    kdb_conn *kc = arg;
    ks_conn *c = &kc->core;
    (void)t;
    if (c->srv == NULL || (c->flags & KS_C_CLOSED))
        return;
    kdb_server *srv = kdb_of(c);
    if (kc->flags & KDB_CF_RESETTING) {
        /* earlier replies must reach the peer before the RST does (but a
         * peer that never reads gets its RST after about a second) */
        if (kt_stream_pending(c->s) > 0 && ++kc->reset_polls < 1000) {
            (void)kt_timer_start(&kc->timer, KT_MSEC(1), 0);
            return;
        }
        ks_conn_close(c, KT_CLOSE_RESET);
        return;
    }
    if (kc->flags & KDB_CF_TRICKLE) {
        send_trickle_slice(srv, kc);
        if (kc->toff < kc->tlen) {
            (void)kt_timer_start(&kc->timer, srv->faults.f[KDB_F_TRICKLE].ns, 0);
            return;
        }
        kt_free(kc->tbuf);
        kc->tbuf = NULL;
        kc->flags &= ~KDB_CF_TRICKLE;
        ks_conn_hold(c, false); /* the replies behind it may go now */
    }
}

void kdb_conn_init(kdb_server *srv, kdb_conn *kc)
{
    kt_timer_init(srv->loop, &kc->timer, conn_timer_cb, kc);
}

void kdb_conn_release(kdb_conn *kc)
{
    kt_timer_stop(&kc->timer);
    kt_free(kc->tbuf);
    kc->tbuf = NULL;
}

/* ---- the core's hooks ----------------------------------------------------- */

/* Encode r's reply into a private buffer (for cut and trickle). */
static int encode_to_buf(kdb_server *srv, const kdb_req *r, kt_buf *b)
{
    kt_out o = kt_buf_out(b);
    kdb_encode(srv, &o, r);
    return b->len > 0 ? 0 : -ENOMEM;
}

static void emit_cut(kdb_server *srv, kdb_conn *kc, const kdb_req *r, const kdb_fault *f)
{
    kt_buf b = { 0 };
    if (encode_to_buf(srv, r, &b) == 0) {
        size_t k = f->n < b.len ? f->n : b.len - 1;
        (void)kt_stream_write(kc->core.s, b.data, k);
    }
    kt_buf_free(&b);
    /* nothing more leaves this connection, and nothing more is read */
    kc->flags |= KDB_CF_OUT_DEAD;
    ks_conn_hold(&kc->core, true);
    ks_conn_noread(&kc->core);
}

static void emit_trickle(kdb_server *srv, kdb_conn *kc, const kdb_req *r, const kdb_fault *f)
{
    kt_buf b = { 0 };
    if (encode_to_buf(srv, r, &b) < 0 || b.len > UINT32_MAX) {
        kt_buf_free(&b);
        return;
    }
    kc->tbuf = b.data;
    kc->tlen = (uint32_t)b.len;
    kc->toff = 0;
    send_trickle_slice(srv, kc);
    if (kc->toff < kc->tlen) {
        kc->flags |= KDB_CF_TRICKLE;
        ks_conn_hold(&kc->core, true);
        (void)kt_timer_start(&kc->timer, f->ns, 0);
    } else {
        kt_free(kc->tbuf);
        kc->tbuf = NULL;
    }
}

void kdb_emit(ks_conn *c, ks_slot *s, kt_out *o)
{
    kdb_server *srv = kdb_of(c);
    kdb_conn *kc = (kdb_conn *)c;
    kdb_req *r = (kdb_req *)s;
    kdb_fault *f = r->fault < KDB_F_COUNT ? &srv->faults.f[r->fault] : NULL;
    if (f)
        srv->st.faults[r->fault]++;
    switch (r->fault) {
    case KDB_F_ERROR:
        (void)kt_resp_error(o, "%s", f->msg[0] ? f->msg : "ERR injected fault");
        break;
    case KDB_F_CLOSE:
        ks_conn_close(c, KT_CLOSE_FLUSH);
        break;
    case KDB_F_RESET:
        kc->flags |= KDB_CF_RESETTING;
        ks_conn_hold(c, true);
        ks_conn_noread(c);
        (void)kt_timer_start(&kc->timer, 0, 0);
        break;
    case KDB_F_GARBAGE: {
        uint32_t n = f->n ? f->n : 16;
        char *p = o->reserve(o->ctx, n);
        if (p == NULL)
            break;
        /* '@' is no RESP2 or RESP3 type byte: the first byte already fails */
        p[0] = '@';
        for (uint32_t i = 1; i < n; i++)
            p[i] = (char)(kt_rng_next(&srv->fault_rng) >> 56);
        o->commit(o->ctx, n);
        break;
    }
    case KDB_F_CUT:
        emit_cut(srv, kc, r, f);
        break;
    case KDB_F_TRICKLE:
        emit_trickle(srv, kc, r, f);
        break;
    default:
        kdb_encode(srv, o, r);
        srv->st.replies++;
        break;
    }
    free_req(srv, r);
}

void kdb_drop(ks_slot *s)
{
    kdb_req *r = (kdb_req *)s;
    kdb_server *srv = r->srv;
    for (kdb_req *k = r->keys, *next; r->kind == KDB_REQ_MGET && k; k = next) {
        next = k->next;
        if (k->state == KDB_RS_QUEUED) {
            k->parent = NULL; /* freed when it leaves the worker FIFO */
            continue;
        }
        kdb_req_abandon(srv, k);
        kdb_req_put(srv, k);
    }
    r->keys = NULL;
    if (r->state == KDB_RS_QUEUED)
        return; /* its connection is gone (slot.c NULL): freed when it leaves the FIFO */
    kdb_req_abandon(srv, r);
    kdb_req_put(srv, r);
}

bool kdb_stuck(ks_conn *c)
{
    const kdb_conn *kc = (const kdb_conn *)c;
    return (kc->flags & (KDB_CF_OUT_DEAD | KDB_CF_PARKED)) || kc->nstalled ||
           (c->flags & KS_C_FROZEN);
}
