/*
 * db.c - the kettle-db server: life cycle, listeners, connections and the
 * read path, with the whole-server faults (refuse, stop-reading,
 * slow-accept) and the client limits.
 *
 *   listener ─accept─▶ conn ─bytes─▶ kt_resp_parse_request ─argv─▶ kdb_dispatch (cmd.c)
 *                                                                      │
 *            conn FIFO of owed replies ◀── requests with delay timers ◀┘ (req.c)
 *
 * Bad input on one connection gets Redis's error and closes that
 * connection only; a connection that sends faster than it is answered is
 * paused (max-pending, output high-water mark), never allowed to grow
 * without bound.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "kdb.h"

static void accept_cb(kt_listener *l, kt_stream *s, void *arg);

/* ---- connections ------------------------------------------------------------ */

void kdb_conn_update_reading(kdb_conn *c)
{
    kdb_server *srv = c->srv;
    if (srv == NULL || (c->flags & KDB_CF_CLOSING))
        return;
    /* A NOREAD connection is still read (and its input dropped) so that a
     * peer's close is noticed; a FROZEN one is not read at all. */
    bool want = !(c->flags & (KDB_CF_FROZEN | KDB_CF_PARKED)) &&
                ((c->flags & KDB_CF_NOREAD) ||
                 (c->npending < (uint64_t)srv->cfg.max_pending && !kt_stream_write_blocked(c->s)));
    if (want && (c->flags & KDB_CF_PAUSED)) {
        if (kt_stream_read_start(c->s) == 0)
            c->flags &= ~KDB_CF_PAUSED;
    } else if (!want && !(c->flags & KDB_CF_PAUSED)) {
        c->flags |= KDB_CF_PAUSED;
        kt_stream_read_stop(c->s);
    }
}

void kdb_conn_close(kdb_conn *c, kt_close_mode mode)
{
    kdb_server *srv = c->srv;
    if (c->flags & KDB_CF_CLOSING)
        return;
    c->flags |= KDB_CF_CLOSING;
    if (srv) {
        if (c->prev)
            c->prev->next = c->next;
        else
            srv->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        c->prev = c->next = NULL;
        srv->nconns--;
        if (c->flags & KDB_CF_PARKED) {
            kdb_conn **pp = &srv->parked, *last = NULL;
            while (*pp && *pp != c) {
                last = *pp;
                pp = &last->pnext;
            }
            if (*pp) {
                *pp = c->pnext;
                if (srv->parked_tail == c)
                    srv->parked_tail = last;
            }
        }
        kdb_conn_drop_reqs(c);
    }
    kt_timer_stop(&c->timer);
    kt_stream_close(c->s, mode);
}

static size_t on_read(kt_stream *s, const char *data, size_t len, void *arg)
{
    kdb_conn *c = arg;
    kdb_server *srv = c->srv;
    size_t off = 0;
    (void)s;
    if (srv == NULL || (c->flags & (KDB_CF_CLOSING | KDB_CF_NOREAD)))
        return len;
    while (off < len) {
        if (c->flags & (KDB_CF_FROZEN | KDB_CF_PAUSED))
            break;
        if (c->npending >= (uint64_t)srv->cfg.max_pending || kt_stream_write_blocked(c->s)) {
            if (kdb_conn_check_output(c))
                return len;
            kdb_conn_update_reading(c);
            break;
        }
        const char *why = NULL;
        ssize_t n = kt_resp_parse_request(data + off, len - off, &srv->limits, &c->req, &why);
        if (n == KT_RESP_INCOMPLETE) {
            if (len - off > srv->cfg.max_query_buffer) {
                char peer[64];
                kt_log_notice("closing client %s: query buffer over %llu bytes",
                              kt_stream_peer(c->s, peer, sizeof peer),
                              (unsigned long long)srv->cfg.max_query_buffer);
                srv->st.closed_query_buffer++;
                kdb_conn_close(c, KT_CLOSE_NOW);
                return len;
            }
            break;
        }
        if (n < 0) {
            /* Redis answers a protocol error and closes: earlier replies
             * still leave first, nothing after it is read */
            char msg[160];
            int m = snprintf(msg, sizeof msg, "-ERR Protocol error: %s\r\n",
                             why ? why : "invalid request");
            if (m < 0 || (size_t)m >= sizeof msg)
                m = (int)sizeof msg - 1;
            /* the offending byte is quoted in some texts: keep it from
             * ending the error line early */
            for (int k = 0; k < m - 2; k++)
                if (msg[k] == '\r' || msg[k] == '\n')
                    msg[k] = ' ';
            msg[m - 2] = '\r';
            msg[m - 1] = '\n';
            srv->st.protocol_errors++;
            c->flags |= KDB_CF_NOREAD;
            kdb_reply(c, msg, (size_t)m, KDB_RF_CLOSE);
            kdb_conn_update_reading(c);
            return len;
        }
        off += (size_t)n;
        if (c->req.argc == 0)
            continue;
        srv->st.commands++;
        kdb_dispatch(c, c->req.argc, c->req.argv);
        if (c->flags & (KDB_CF_CLOSING | KDB_CF_NOREAD))
            return len;
    }
    if (kdb_conn_check_output(c))
        return len;
    kt_resp_req_trim(&c->req, 0); /* between requests an idle client holds no argv */
    return off;
}

static void on_eof(kt_stream *s, void *arg)
{
    kdb_conn *c = arg;
    (void)s;
    if (c->srv == NULL || (c->flags & KDB_CF_CLOSING))
        return;
    /* The peer sent all it will: answer what it asked, then close; unless
     * some answer will never come (stall, cut), then close now. */
    bool never = (c->flags & KDB_CF_OUT_DEAD) != 0;
    for (kdb_req *r = c->head; r && !never; r = r->next)
        never = r->state == KDB_RS_STALLED;
    if (never) {
        kdb_conn_close(c, KT_CLOSE_NOW);
        return;
    }
    c->flags |= KDB_CF_NOREAD;
    if (kdb_reply(c, "", 0, KDB_RF_CLOSE) < 0)
        kdb_conn_close(c, KT_CLOSE_NOW);
}

static void on_error(kt_stream *s, int err, void *arg)
{
    kdb_conn *c = arg;
    (void)s;
    (void)err;
    kdb_conn_close(c, KT_CLOSE_NOW);
}

static void on_drain(kt_stream *s, void *arg)
{
    (void)s;
    kdb_conn_update_reading(arg);
}

static void on_close(kt_stream *s, void *arg)
{
    kdb_conn *c = arg;
    (void)s;
    kt_free(c->tbuf);
    kt_resp_req_free(&c->req);
    kt_free(c);
}

static const kt_stream_cbs conn_cbs = {
    .on_read = on_read,
    .on_eof = on_eof,
    .on_error = on_error,
    .on_drain = on_drain,
    .on_close = on_close,
};

/* ---- listeners and whole-server faults ---------------------------------------- */

static void listeners_close(kdb_server *srv)
{
    for (size_t i = 0; i < srv->nls; i++) {
        if (srv->ls[i].l) {
            kt_listener_close(srv->ls[i].l);
            srv->ls[i].l = NULL;
        }
    }
}

/* Open every listener that is closed; 0 or the first error. */
static int listeners_open(kdb_server *srv)
{
    int err = 0;
    for (size_t i = 0; i < srv->nls; i++) {
        kdb_listener *kl = &srv->ls[i];
        if (kl->l)
            continue;
        int r = kt_listen(srv->loop, &kl->addr, (int)srv->cfg.backlog, accept_cb, kl, &kl->l);
        if (r < 0) {
            char a[128];
            kt_log_warning("cannot listen on %s again: %s", kt_addr_format(&kl->addr, a, sizeof a),
                           strerror(-r));
            kl->l = NULL;
            if (err == 0)
                err = r;
        } else if (srv->accept_paused) {
            kt_listener_pause(kl->l);
        }
    }
    return err;
}

/* slow-accept: after an accept, with the probability, the server takes no
 * new connection for PAUSE. Connections handed over meanwhile (io_uring's
 * multishot accept may deliver a few after the listener is paused) are
 * parked unread and taken one per pause, so that clients see exactly one
 * accept per PAUSE. */
static void maybe_pause_accepting(kdb_server *srv)
{
    const kdb_fault *sa = &srv->faults.f[KDB_F_SLOW_ACCEPT];
    if (sa->prob <= 0 || srv->accept_paused || !kdb_rng_chance(&srv->fault_rng, sa->prob))
        return;
    srv->st.faults[KDB_F_SLOW_ACCEPT]++;
    srv->accept_paused = true;
    for (size_t i = 0; i < srv->nls; i++)
        if (srv->ls[i].l)
            kt_listener_pause(srv->ls[i].l);
    kt_timer_start(&srv->accept_timer, sa->ns, 0);
}

/* c becomes a served connection: maybe frozen (stop-reading), else read. */
static void admit(kdb_server *srv, kdb_conn *c)
{
    c->flags &= ~KDB_CF_PARKED;
    if (srv->faults.f[KDB_F_STOP_READING].prob > 0 &&
        kdb_rng_chance(&srv->fault_rng, srv->faults.f[KDB_F_STOP_READING].prob)) {
        c->flags |= KDB_CF_FROZEN;
        srv->st.faults[KDB_F_STOP_READING]++;
    }
    kdb_conn_update_reading(c);
    maybe_pause_accepting(srv);
}

static void accept_timer_cb(kt_timer *t, void *arg)
{
    kdb_server *srv = arg;
    (void)t;
    if (srv->accept_paused) {
        srv->accept_paused = false;
        while (!srv->accept_paused && srv->parked) {
            kdb_conn *c = srv->parked;
            srv->parked = c->pnext;
            if (srv->parked == NULL)
                srv->parked_tail = NULL;
            c->pnext = NULL;
            admit(srv, c);
        }
        if (!srv->accept_paused)
            for (size_t i = 0; i < srv->nls; i++)
                if (srv->ls[i].l)
                    kt_listener_resume(srv->ls[i].l);
    }
    if (!srv->refusing && listeners_open(srv) < 0)
        kt_timer_start(&srv->accept_timer, KT_MSEC(100), 0); /* retry re-listening */
}

static void accept_cb(kt_listener *l, kt_stream *s, void *arg)
{
    kdb_listener *kl = arg;
    kdb_server *srv = kl->srv;
    (void)l;
    if (srv->faults.f[KDB_F_REFUSE].prob > 0 &&
        kdb_rng_chance(&srv->fault_rng, srv->faults.f[KDB_F_REFUSE].prob)) {
        srv->st.refused++;
        srv->st.faults[KDB_F_REFUSE]++;
        kt_stream_close(s, KT_CLOSE_RESET);
        return;
    }
    if (srv->nconns >= (uint64_t)srv->cfg.maxclients) {
        static const char msg[] = "-ERR max number of clients reached\r\n";
        srv->st.rejected++;
        kt_stream_write(s, msg, sizeof msg - 1);
        kt_stream_close(s, KT_CLOSE_FLUSH);
        return;
    }
    kdb_conn *c = kt_calloc(1, sizeof *c);
    if (c == NULL) {
        kt_stream_close(s, KT_CLOSE_RESET);
        return;
    }
    c->srv = srv;
    c->s = s;
    c->id = ++srv->next_conn_id;
    c->flags = KDB_CF_PAUSED;
    kdb_conn_init_timer(c);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    srv->st.connections++;
    kt_stream_set_cbs(s, &conn_cbs, c);
    if (srv->accept_paused) {
        c->flags |= KDB_CF_PARKED;
        if (srv->parked_tail)
            srv->parked_tail->pnext = c;
        else
            srv->parked = c;
        srv->parked_tail = c;
        return;
    }
    admit(srv, c);
}

void kdb_server_set_fault(kdb_server *srv, kdb_fault_kind kind, const kdb_fault *f, kdb_conn *from)
{
    kdb_faults_set(&srv->faults, kind, f);
    switch (kind) {
    case KDB_F_REFUSE:
        if (f->prob >= 1.0 && !srv->refusing) {
            srv->refusing = true;
            listeners_close(srv);
            kt_log_notice("fault refuse: listeners closed, connections are refused");
        } else if (f->prob < 1.0 && srv->refusing) {
            srv->refusing = false;
            if (listeners_open(srv) < 0)
                kt_timer_start(&srv->accept_timer, KT_MSEC(100), 0);
            kt_log_notice("fault refuse cleared: listening again");
        }
        break;
    case KDB_F_STOP_READING:
        for (kdb_conn *c = srv->conns; c; c = c->next) {
            if (f->prob > 0 && f->n && c != from && !(c->flags & KDB_CF_FROZEN) &&
                kdb_rng_chance(&srv->fault_rng, f->prob)) {
                c->flags |= KDB_CF_FROZEN;
                srv->st.faults[KDB_F_STOP_READING]++;
            } else if (f->prob <= 0) {
                c->flags &= ~KDB_CF_FROZEN;
            }
            kdb_conn_update_reading(c);
        }
        break;
    case KDB_F_SLOW_ACCEPT:
        if (f->prob <= 0 && srv->accept_paused) {
            kt_timer_stop(&srv->accept_timer);
            accept_timer_cb(&srv->accept_timer, srv);
        }
        break;
    default:
        break;
    }
}

void kdb_server_clear_faults(kdb_server *srv)
{
    kdb_fault off = { 0 };
    for (int k = 0; k < KDB_F_COUNT; k++)
        kdb_server_set_fault(srv, (kdb_fault_kind)k, &off, NULL);
}

/* ---- configuration ------------------------------------------------------------- */

static void reseed(kdb_server *srv)
{
    uint64_t seed = (uint64_t)srv->cfg.seed;
    if (seed == 0) {
        uint64_t st = kt_clock_ns() ^ ((uint64_t)getpid() << 32);
        seed = kdb_splitmix64(&st) & (uint64_t)INT64_MAX;
        if (seed == 0)
            seed = 1;
    }
    srv->seed = seed;
    kdb_rng_seed(&srv->lat_rng, seed);
    kdb_rng_seed(&srv->fault_rng, seed ^ 0x6b6574746c652d66ull);
    srv->applied_seed = srv->cfg.seed;
}

void kdb_server_apply(kdb_server *srv)
{
    const char *why;
    kdb_latency m;
    if (srv->cfg.latency && kdb_latency_parse(srv->cfg.latency, &m, &why) == 0)
        srv->lat = m;
    if (srv->cfg.seed != srv->applied_seed)
        reseed(srv);
    srv->limits = kt_resp_default_limits;
    srv->limits.max_inline = srv->cfg.max_inline;
    srv->limits.max_bulk = srv->cfg.max_bulk;
    srv->limits.max_args = (size_t)srv->cfg.max_args;
    /* more workers (or unlimited) start waiting requests; a smaller
     * max-pending or larger one takes effect on each connection */
    kdb_workers_kick(srv);
    for (kdb_conn *c = srv->conns; c; c = c->next)
        kdb_conn_update_reading(c);
}

/* ---- life cycle ------------------------------------------------------------------ */

static int start(kt_loop *loop, const kdb_cfg *cfg, bool embedded, kdb_server **out);

int kdb_server_start_cfg(kt_loop *loop, const kdb_cfg *cfg, kdb_server **out)
{
    return start(loop, cfg, false, out);
}

static int start(kt_loop *loop, const kdb_cfg *cfg, bool embedded, kdb_server **out)
{
    const char *why = NULL;
    int r;
    kdb_server *srv = kt_calloc(1, sizeof *srv);
    if (srv == NULL)
        return -ENOMEM;
    srv->loop = loop;
    srv->embedded = embedded;
    if (kt_opt_copy(kdb_options, &srv->cfg, cfg, sizeof *cfg) < 0) {
        kt_free(srv);
        return -ENOMEM;
    }
    kt_timer_init(loop, &srv->accept_timer, accept_timer_cb, srv);
    srv->started = kt_loop_now(loop);
    if (kdb_latency_parse(srv->cfg.latency ? srv->cfg.latency : "none", &srv->lat, &why) < 0) {
        kt_log_error("latency '%s': %s", srv->cfg.latency, why);
        r = -EINVAL;
        goto fail;
    }
    srv->applied_seed = -1;
    kdb_server_apply(srv);
    kt_hist_init(&srv->h_sched);
    kt_hist_init(&srv->h_actual);
    kt_hist_init(&srv->h_late);

    kdb_faults_init(&srv->faults);
    kdb_fault pending[KDB_F_COUNT];
    memset(pending, 0, sizeof pending);
    bool have[KDB_F_COUNT] = { false };
    for (size_t i = 0; i < srv->cfg.fault.n; i++) {
        kdb_fault_kind k;
        kdb_fault f;
        if (kdb_fault_parse_line(srv->cfg.fault.items[i], &k, &f, &why) < 0) {
            kt_log_error("fault '%s': %s", srv->cfg.fault.items[i], why);
            r = -EINVAL;
            goto fail;
        }
        pending[k] = f;
        have[k] = true;
    }

    if (srv->cfg.listen.n == 0) {
        kt_log_error("no listen address");
        r = -EINVAL;
        goto fail;
    }
    srv->ls = kt_calloc(srv->cfg.listen.n, sizeof *srv->ls);
    if (srv->ls == NULL) {
        r = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < srv->cfg.listen.n; i++) {
        kdb_listener *kl = &srv->ls[srv->nls];
        const char *spec = srv->cfg.listen.items[i];
        char a[128];
        kl->srv = srv;
        if ((r = kt_addr_parse(spec, &kl->addr)) < 0) {
            kt_log_error("listen '%s': not an address", spec);
            goto fail;
        }
        if ((r = kt_listen(loop, &kl->addr, (int)srv->cfg.backlog, accept_cb, kl, &kl->l)) < 0) {
            kt_log_error("cannot listen on %s: %s", spec, strerror(-r));
            goto fail;
        }
        srv->nls++;
        kt_listener_addr(kl->l, &kl->addr);
        /* Embedded (kettled), the line must not look like the host
         * program's own "listening on" line that scripts wait for. */
        if (srv->embedded)
            kt_log_notice("simulated database at %s", kt_addr_format(&kl->addr, a, sizeof a));
        else
            kt_log_notice("listening on %s", kt_addr_format(&kl->addr, a, sizeof a));
    }
    for (int k = 0; k < KDB_F_COUNT; k++) {
        if (have[k]) {
            char d[200];
            kdb_server_set_fault(srv, (kdb_fault_kind)k, &pending[k], NULL);
            kt_log_notice("fault %s", kdb_fault_describe((kdb_fault_kind)k, &pending[k], d, sizeof d));
        }
    }
    *out = srv;
    return 0;
fail:
    kdb_server_stop(srv);
    return r;
}

int kdb_server_start(kt_loop *loop, const char *listen_addr, const char *const *opts,
                     kdb_server **out)
{
    kdb_cfg cfg;
    const char *why = NULL;
    bool listen_given = listen_addr != NULL;
    int r = kt_opt_defaults(kdb_options, &cfg);
    if (r < 0)
        goto done;
    if (listen_addr) {
        kt_opt_set(kdb_options, &cfg, "listen", "", &why);
        if ((r = kt_opt_set(kdb_options, &cfg, "listen", listen_addr, &why)) < 0) {
            kt_log_error("listen '%s': %s", listen_addr, why);
            goto done;
        }
    }
    for (size_t i = 0; opts && opts[i]; i += 2) {
        if (opts[i + 1] == NULL) {
            kt_log_error("simulated database option %s: no value", opts[i]);
            r = -EINVAL;
            goto done;
        }
        if (strcmp(opts[i], "listen") == 0 && !listen_given) {
            kt_opt_set(kdb_options, &cfg, "listen", "", &why);
            listen_given = true;
        }
        if ((r = kt_opt_set(kdb_options, &cfg, opts[i], opts[i + 1], &why)) < 0) {
            kt_log_error("simulated database option %s '%s': %s", opts[i], opts[i + 1], why);
            r = -EINVAL;
            goto done;
        }
    }
    r = start(loop, &cfg, true, out);
done:
    kt_opt_free(kdb_options, &cfg);
    return r;
}

int kdb_server_addr(const kdb_server *s, kt_addr *out)
{
    if (s == NULL || s->nls == 0)
        return -ENOENT;
    *out = s->ls[0].addr;
    return 0;
}

void kdb_server_stop(kdb_server *srv)
{
    if (srv == NULL)
        return;
    srv->stopping = true;
    listeners_close(srv);
    kt_timer_stop(&srv->accept_timer);
    while (srv->conns) {
        kdb_conn *c = srv->conns;
        kdb_conn_close(c, KT_CLOSE_NOW);
        c->srv = NULL; /* its on_close runs later: it must not look back */
    }
    kdb_reqs_destroy(srv);
    kt_opt_free(kdb_options, &srv->cfg);
    kt_free(srv->ls);
    kt_free(srv);
}
