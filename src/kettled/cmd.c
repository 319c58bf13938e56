/*
 * cmd.c - kettled's command table and the commands that fetch from the
 * database.
 *
 * GET, MGET, MGETSEQ and MGETANY are the explanation's get_numbers() in
 * three shapes, each a composition of futures from the pool:
 *
 *   GET n            fetch(n)
 *   MGET n1 .. nk    all(fetch(n1), .., fetch(nk))          concurrently; per-item results
 *   MGETSEQ n1 .. nk sequence(fetch(n1) then fetch(n2) ..)  one after another
 *   MGETANY n1 .. nk race(fetch(n1), .., fetch(nk))         first to arrive wins, the rest cancelled
 *
 * and request-timeout wraps each in kt_timeout: at the deadline the
 * outstanding fetches are cancelled and the reply carries what arrived.
 * Each is a deferred reply in the client's FIFO (server.h): ready when its
 * future settles, written when everything before it has been. Its keys
 * count toward the client's max-pending-bytes until then. PING, ECHO,
 * QUIT, AUTH, HELLO, CLIENT, COMMAND, CONFIG and SELECT are the core's.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "kd.h"

#define KD_FREE_REQS_MAX 65536

/* ---- requests -------------------------------------------------------------------- */

static kd_req *req_new(ks_conn *c, enum kd_req_kind kind)
{
    kd_server *srv = kd_of(c);
    kd_req *r = srv->free_reqs;
    if (r) {
        srv->free_reqs = r->next;
        srv->nfree_reqs--;
    } else if ((r = kt_malloc(sizeof *r)) == NULL) {
        return NULL;
    }
    memset(r, 0, sizeof *r);
    r->srv = srv;
    r->kind = (uint8_t)kind;
    r->started = kt_loop_now(srv->loop);
    return r;
}

static void req_free(kd_req *r)
{
    kd_server *srv = r->srv;
    if (r->f)
        kt_future_unref(r->f);
    if (r->inner)
        kt_future_unref(r->inner);
    kt_buf_free(&r->keys);
    kt_free(r->koff);
    if (srv->nfree_reqs < KD_FREE_REQS_MAX) {
        r->next = srv->free_reqs;
        srv->free_reqs = r;
        srv->nfree_reqs++;
    } else {
        kt_free(r);
    }
}

void kd_reqs_free_all(kd_server *srv)
{
    while (srv->free_reqs) {
        kd_req *r = srv->free_reqs;
        srv->free_reqs = r->next;
        kt_free(r);
    }
    srv->nfree_reqs = 0;
}

/* The continuation of every fetch request. */
static void req_done_cb(kt_future *f, void *arg)
{
    kd_req *r = arg;
    r->done = true;
    if (kt_future_error(f) == -ETIMEDOUT)
        r->srv->st.timeouts++;
    kd_metrics_request_done(r);
    if (r->slot.c == NULL) /* its client has gone */
        req_free(r);
    else
        ks_slot_ready(&r->slot);
}

/* Await f (reference taken over) for r, then append r to its client's
 * FIFO holding `bytes` of keys. With request-timeout, f is wrapped in
 * kt_timeout. On ENOMEM r is freed and an error reply sent instead. */
static void req_submit(ks_conn *c, kd_req *r, kt_future *f, size_t bytes)
{
    kd_server *srv = r->srv;
    if (f == NULL)
        goto nomem;
    if (srv->cfg.request_timeout) {
        kt_future *t = kt_timeout(f, srv->cfg.request_timeout);
        if (t == NULL) {
            (void)kt_future_cancel(f);
            kt_future_unref(f);
            goto nomem;
        }
        kt_future_unref(f); /* the timeout holds it and forwards its value */
        f = t;
    }
    r->f = f;
    if (kt_future_then(f, req_done_cb, r) < 0) {
        (void)kt_future_cancel(f);
        goto nomem;
    }
    ks_defer(c, &r->slot);
    ks_slot_hold(&r->slot, bytes);
    return;
nomem:
    req_free(r);
    ks_error(c, "ERR out of memory");
}

void kd_drop(ks_slot *s)
{
    kd_req *r = (kd_req *)s;
    /* Settled: free now. Otherwise cancel (which reaches the pool: queued
     * fetches are dropped, sent ones unhooked); the continuation frees it. */
    if (r->done)
        req_free(r);
    else
        (void)kt_future_cancel(r->f);
}

static size_t key_bytes(const kt_resp_arg *keys, size_t n)
{
    size_t b = 0;
    for (size_t i = 0; i < n; i++)
        b += keys[i].len;
    return b;
}

/* ---- the fetch commands ------------------------------------------------------- */

static void cmd_get(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    (void)argc;
    kd_req *r = req_new(c, KD_R_GET);
    if (r == NULL) {
        ks_error(c, "ERR out of memory");
        return;
    }
    r->n = 1;
    req_submit(c, r, kd_pool_fetch(r->srv->pool, argv[1].p, argv[1].len), argv[1].len);
}

static bool check_keys(ks_conn *c, size_t n)
{
    kd_server *srv = kd_of(c);
    if (n > (size_t)srv->cfg.max_keys) {
        ks_error(c, "ERR too many keys: %zu (max-keys is %lld)", n, (long long)srv->cfg.max_keys);
        return false;
    }
    return true;
}

/* Start one fetch per key into srv->fs. false (and nothing left held) on ENOMEM. */
static bool fetch_all(kd_server *srv, const kt_resp_arg *keys, size_t n)
{
    if (n > srv->fs_cap) {
        kt_future **fs = kt_realloc(srv->fs, n * sizeof *fs);
        if (fs == NULL)
            return false;
        srv->fs = fs;
        srv->fs_cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        if ((srv->fs[i] = kd_pool_fetch(srv->pool, keys[i].p, keys[i].len)) == NULL) {
            while (i--) {
                (void)kt_future_cancel(srv->fs[i]);
                kt_future_unref(srv->fs[i]);
            }
            return false;
        }
    }
    return true;
}

/* Drop our references on srv->fs (the combinator holds its own); on
 * failure to build it, cancel them too. */
static void release_all(kd_server *srv, size_t n, bool cancel)
{
    for (size_t i = 0; i < n; i++) {
        if (cancel)
            (void)kt_future_cancel(srv->fs[i]);
        kt_future_unref(srv->fs[i]);
    }
}

/* MGET and MGETANY: every fetch at once, under kt_all or kt_race. */
static void fetch_together(ks_conn *c, const kt_resp_arg *argv, size_t argc, enum kd_req_kind kind)
{
    size_t n = argc - 1;
    if (!check_keys(c, n))
        return;
    kd_req *r = req_new(c, kind);
    if (r == NULL || !fetch_all(r->srv, argv + 1, n)) {
        if (r)
            req_free(r);
        ks_error(c, "ERR out of memory");
        return;
    }
    kd_server *srv = r->srv;
    kt_future *f = kind == KD_R_MGET ? kt_all(srv->loop, srv->fs, n) : kt_race(srv->loop, srv->fs, n);
    release_all(srv, n, f == NULL);
    r->n = (uint32_t)n;
    if (f && kind == KD_R_MGET) {
        r->inner = f;
        kt_future_ref(f);
    }
    req_submit(c, r, f, key_bytes(argv + 1, n));
}

static void cmd_mget(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    fetch_together(c, argv, argc, KD_R_MGET);
}

static void cmd_mgetany(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    fetch_together(c, argv, argc, KD_R_ANY);
}

/* Sequence step i: fetch key i (the keys were copied into r->keys). */
static kt_future *seq_start_cb(size_t i, void *arg)
{
    kd_req *r = arg;
    return kd_pool_fetch(r->srv->pool, r->keys.data + r->koff[i], r->koff[i + 1] - r->koff[i]);
}

static void cmd_mgetseq(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    size_t n = argc - 1;
    if (!check_keys(c, n))
        return;
    kd_req *r = req_new(c, KD_R_SEQ);
    if (r == NULL || (r->koff = kt_malloc((n + 1) * sizeof *r->koff)) == NULL)
        goto nomem;
    /* The keys are needed after this request's bytes are gone: copy them. */
    r->koff[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (kt_buf_append(&r->keys, argv[i + 1].p, argv[i + 1].len) < 0)
            goto nomem;
        r->koff[i + 1] = (uint32_t)r->keys.len;
    }
    r->n = (uint32_t)n;
    kt_future *seq = kt_sequence(r->srv->loop, n, seq_start_cb, r);
    if (seq) {
        r->inner = seq;
        kt_future_ref(seq);
    }
    req_submit(c, r, seq, r->keys.len);
    return;
nomem:
    if (r)
        req_free(r);
    ks_error(c, "ERR out of memory");
}

/* ---- replies ------------------------------------------------------------------------ */

/* One value: the number, nil, or the error that stands in its place. */
static void encode_value(kd_server *srv, kt_out *o, const kt_future *f)
{
    if (f == NULL) /* a sequence item never started: the deadline came first */
        goto timeout;
    switch (kt_future_state_of(f)) {
    case KT_FUTURE_RESOLVED: {
        const kd_blob *b = kt_future_value(f);
        if (b)
            (void)kt_resp_bulk(o, b->data, b->len);
        else
            (void)kt_resp_bulk_i64(o, kt_future_i64(f));
        return;
    }
    case KT_FUTURE_FAILED:
        switch (kt_future_error(f)) {
        case -ENOENT:
            srv->st.nil_values++;
            (void)kt_resp_nil(o);
            return;
        case -ETIMEDOUT:
            goto timeout;
        case -ENOMEM:
            srv->st.err_backend++;
            (void)kt_resp_error(o, "ERR out of memory");
            return;
        default:
            srv->st.err_backend++;
            (void)kt_resp_error(o, "%s", kt_future_errmsg(f));
            return;
        }
    default: /* cancelled: only our own deadline cancels a request still answered */
        goto timeout;
    }
timeout:
    (void)kt_resp_error(o, "ERR request timed out after %llu ms (request-timeout)",
                        (unsigned long long)(srv->cfg.request_timeout / KT_MSEC(1)));
}

void kd_emit(ks_conn *c, ks_slot *s, kt_out *o)
{
    kd_req *r = (kd_req *)s;
    (void)c;
    switch (r->kind) {
    case KD_R_GET:
    case KD_R_ANY:
        encode_value(r->srv, o, r->f);
        break;
    default: /* MGET, SEQ */
        (void)kt_resp_array(o, r->n);
        for (uint32_t i = 0; i < r->n; i++)
            encode_value(r->srv, o, r->inner ? kt_all_item(r->inner, i) : NULL);
        break;
    }
    req_free(r);
}

/* ---- INFO and the table -------------------------------------------------------------- */

static void cmd_info(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    ks_info(c, argv, argc, kd_info_sections);
}

static const ks_arg a_key[] = { { "key", "key", 0 }, { NULL, NULL, 0 } };
static const ks_arg a_keys[] = { { "key", "key", KS_ARG_MULTIPLE }, { NULL, NULL, 0 } };
static const ks_arg a_sections[] = {
    { "section", "string", KS_ARG_OPTIONAL | KS_ARG_MULTIPLE }, { NULL, NULL, 0 } };

/* GET and MGET first: the lookup is a scan and they are what is asked for. */
const ks_cmd kd_cmds[] = {
    { "get", 2, KS_CMD_READONLY | KS_CMD_FAST, cmd_get, "string", "1.0.0",
      "Fetch the number stored at key from the database.", a_key, 1, 1, 1 },
    { "mget", -2, KS_CMD_READONLY | KS_CMD_FAST, cmd_mget, "string", "1.0.0",
      "Fetch several numbers at once (concurrently); a key that failed is an error element.",
      a_keys, 1, -1, 1 },
    { "mgetseq", -2, KS_CMD_READONLY, cmd_mgetseq, "string", "0.1.0",
      "Fetch several numbers one after another, each awaited before the next starts.",
      a_keys, 1, -1, 1 },
    { "mgetany", -2, KS_CMD_READONLY | KS_CMD_FAST, cmd_mgetany, "string", "0.1.0",
      "Fetch several numbers at once and answer with the first to arrive; cancel the rest.",
      a_keys, 1, -1, 1 },
    { "info", -1, 0, cmd_info, "server", "1.0.0",
      "Returns information and statistics about the server.", a_sections, 0, 0, 0 },
    { NULL, 0, 0, NULL, NULL, NULL, NULL, NULL, 0, 0, 0 },
};
