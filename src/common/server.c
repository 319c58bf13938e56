/*
 * server.c - the server core's life: set-up, listeners (addresses, sockets
 * from the service manager, SO_REUSEPORT), accepting with maxclients, the
 * cron (idle sweep, giving memory back) and the drain:
 *
 *   running ──shutdown──▶ draining: listeners closed; each client is read
 *                           │       and answered until it has sent nothing
 *                           │       more and its replies have left, then
 *                           │       closed (checked every 10 ms, twice)
 *                           │ last client gone   │ shutdown-timeout or
 *                           ▼                    ▼ a second shutdown
 *                         drained ◀──── the rest closed now; what they
 *                         (d->drained)   lose counted in srv->lost
 */
#include "config.h"
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include "server-int.h"

#define KS_DRAIN_TICK KT_MSEC(10)
/* A client is closed by the drain after this many ticks in a row with
 * nothing owed and nothing to read: bytes a completion backend already
 * took from the socket get a loop iteration to be delivered. */
#define KS_DRAIN_QUIET 2
/* Trim when the process grew this much past its size after the last trim,
 * once the clients hold less than KS_TRIM_QUIET. */
#define KS_TRIM_GROWTH (16u << 20)
#define KS_TRIM_QUIET (1u << 20)
/* malloc: blocks under this come from the heap (glibc's largest), and
 * free() gives the heap's top back only past that much. */
#define KS_MALLOC_MMAP_MIN (32 << 20)
#define KS_MALLOC_TRIM_AT (64 << 20)

static void cron_cb(kt_timer *t, void *arg);
static void drain_tick_cb(kt_timer *t, void *arg);
static void drain_timer_cb(kt_timer *t, void *arg);

/* ---- set-up ---------------------------------------------------------------------- */

/*
 * A large request is gathered in one buffer that doubles as it arrives (an
 * MGET of 1,000 keys of 8 KB: 16 KB, 32 KB, ... 16 MB). With glibc's
 * defaults each of those comes fresh from mmap, or from a heap top that
 * free() just gave back, and is paid for again in page faults: two thirds
 * of the daemon's time under such clients, and loop iterations of 100 ms.
 * Served from the heap and kept there, the same memory is reused from one
 * request to the next; the cron's trim gives it back once the burst is
 * over (ks_server_trim). Process-wide, hence here and not in libkettle.
 */
static void tune_malloc(void)
{
#if defined(__GLIBC__)
    (void)mallopt(M_MMAP_THRESHOLD, KS_MALLOC_MMAP_MIN);
    (void)mallopt(M_TRIM_THRESHOLD, KS_MALLOC_TRIM_AT);
#endif
}

int ks_server_init(ks_server *srv, kt_loop *loop, const ks_daemon *d, void *data, void *cfg,
                   const ks_config *sc)
{
    tune_malloc();
    memset(srv, 0, sizeof *srv);
    srv->loop = loop;
    srv->d = d;
    srv->data = data;
    srv->cfg = cfg;
    srv->sc = sc;
    srv->listen_note = "listening on";
    kt_defer_init(loop, &srv->resume, ks__resume_cb, srv);
    kt_timer_init(loop, &srv->cron, cron_cb, srv);
    kt_timer_init(loop, &srv->drain_tick, drain_tick_cb, srv);
    kt_timer_init(loop, &srv->drain_timer, drain_timer_cb, srv);
    while (d->cmds && d->cmds[srv->ncmds].name)
        srv->ncmds++;
    if ((srv->calls = kt_calloc(ks_cmd_count(srv), sizeof *srv->calls)) == NULL)
        return -ENOMEM;
    srv->started_ns = kt_loop_now(loop);
    srv->started = time(NULL);
    srv->rss_base = ks_rss_bytes();
    ks_server_apply(srv);
    ks__lag_start(srv);
    return 0;
}

void ks_server_apply(ks_server *srv)
{
    const ks_config *sc = srv->sc;
    srv->lim = kt_resp_default_limits;
    srv->lim.max_inline = (size_t)sc->max_inline;
    srv->lim.max_bulk = (size_t)sc->max_bulk;
    srv->lim.max_args = (size_t)sc->max_args;
    /* The output mark where reading pauses (see ks_daemon.pause_divisor). */
    size_t mark = (size_t)sc->max_output_buffer / (srv->d->pause_divisor ? srv->d->pause_divisor : 1);
    srv->high_water = mark < (1u << 20) ? mark : (1u << 20);
    int r = kt_loop_set_batch_wait(srv->loop, sc->io_batch_wait, KS_BATCH_EVENTS);
    srv->batch_wait = r == 0 ? sc->io_batch_wait : 0;
    if (r < 0 && !srv->batch_wait_noted) {
        srv->batch_wait_noted = true;
        kt_log_info("io-batch-wait: the %s backend cannot gather completions (io_uring on "
                    "Linux 6.12 or later can): every wait wakes at the first", kt_loop_backend(srv->loop));
    }
    for (ks_conn *c = srv->head; c; c = c->next) {
        ks__conn_set_watermarks(c);
        ks_conn_update_reading(c);
    }
}

/* ---- listeners -------------------------------------------------------------------- */

static void accept_cb(kt_listener *l, kt_stream *s, void *arg)
{
    ks_listener *kl = arg;
    (void)l;
    ks_server_adopt(kl->srv, s);
}

/* One listener at kl->addr, with SO_REUSEPORT on TCP when asked for. */
static int listen_one(ks_server *srv, ks_listener *kl)
{
    int family = kl->addr.ss.ss_family;
    kt_listen_options lo = { .backlog = (int)srv->sc->backlog };
    if (srv->sc->reuseport && (family == AF_INET || family == AF_INET6))
        lo.flags |= KT_LISTEN_REUSEPORT;
    return kt_listen_with(srv->loop, &kl->addr, &lo, accept_cb, kl, &kl->l);
}

static void listened(ks_server *srv, ks_listener *kl)
{
    char buf[128];
    if (kt_listener_addr(kl->l, &kl->addr) == 0)
        kt_log_notice("%s %s", srv->listen_note, kt_addr_format(&kl->addr, buf, sizeof buf));
    if (srv->accept_paused)
        kt_listener_pause(kl->l);
}

int ks_server_listen(ks_server *srv, const int *fds, size_t nfds)
{
    size_t n = nfds ? nfds : srv->sc->listen.n;
    if (n == 0) {
        kt_log_error("no listen address");
        return -EINVAL;
    }
    if ((srv->ls = kt_calloc(n, sizeof *srv->ls)) == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        ks_listener *kl = &srv->ls[srv->nls];
        int r;
        kl->srv = srv;
        if (nfds) {
            if ((r = kt_listen_fd(srv->loop, fds[i], accept_cb, kl, &kl->l)) < 0) {
                kt_log_error("inherited socket %d: %s", fds[i], strerror(-r));
                return r;
            }
        } else {
            const char *spec = srv->sc->listen.items[i];
            if ((r = kt_addr_parse(spec, &kl->addr)) < 0) {
                kt_log_error("listen '%s': not an address", spec);
                return r;
            }
            if ((r = listen_one(srv, kl)) < 0) {
                kt_log_error("cannot listen on %s: %s", spec, strerror(-r));
                return r;
            }
        }
        srv->nls++;
        listened(srv, kl);
    }
    return 0;
}

void ks_server_close_listeners(ks_server *srv)
{
    for (size_t i = 0; i < srv->nls; i++) {
        if (srv->ls[i].l) {
            kt_listener_close(srv->ls[i].l);
            srv->ls[i].l = NULL;
        }
    }
}

int ks_server_reopen_listeners(ks_server *srv)
{
    int err = 0;
    if (srv->state != KS_RUNNING)
        return 0;
    for (size_t i = 0; i < srv->nls; i++) {
        ks_listener *kl = &srv->ls[i];
        if (kl->l)
            continue;
        int r = listen_one(srv, kl);
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

void ks_server_pause_accept(ks_server *srv, bool pause)
{
    srv->accept_paused = pause;
    for (size_t i = 0; i < srv->nls; i++) {
        if (srv->ls[i].l == NULL)
            continue;
        if (pause)
            kt_listener_pause(srv->ls[i].l);
        else
            (void)kt_listener_resume(srv->ls[i].l);
    }
}

int ks_server_addr(const ks_server *srv, size_t i, kt_addr *out)
{
    if (i >= srv->nls)
        return -ENOENT;
    *out = srv->ls[i].addr;
    return 0;
}

/* ---- accepting ---------------------------------------------------------------------- */

void ks_server_adopt(ks_server *srv, kt_stream *s)
{
    static const char full[] = "-ERR max number of clients reached\r\n";
    if (srv->d->pre_accept && !srv->d->pre_accept(srv)) {
        kt_stream_set_cbs(s, NULL, NULL);
        kt_stream_close(s, KT_CLOSE_RESET);
        return;
    }
    bool running = srv->state == KS_RUNNING;
    if (!running || srv->nclients >= (size_t)srv->sc->maxclients) {
        srv->st.rejected++;
        kt_stream_set_cbs(s, NULL, NULL);
        if (running)
            (void)kt_stream_write(s, full, sizeof full - 1);
        kt_stream_set_linger(s, KT_SEC(1));
        kt_stream_close(s, KT_CLOSE_FLUSH);
        return;
    }
    (void)ks__conn_new(srv, s);
}

/* ---- the cron: idle clients, memory ----------------------------------------------------- */

static void sweep_idle(ks_server *srv)
{
    uint64_t idle = srv->sc->idle_timeout;
    if (idle == 0)
        return;
    uint64_t now = kt_loop_now(srv->loop);
    /* Least recently active first: stop at the first one still fresh. A
     * client waiting for a reply is not idle: it moves to the back. */
    ks_conn *stop = srv->tail;
    while (srv->head && srv->head->last + idle <= now) {
        ks_conn *c = srv->head;
        if (c->head) {
            ks__touch(c);
        } else {
            char peer[64];
            kt_log_info("closing client id=%llu %s: idle for %llu s", (unsigned long long)c->id,
                        kt_stream_peer(c->s, peer, sizeof peer),
                        (unsigned long long)((now - c->last) / KT_SEC(1)));
            srv->st.closed_idle++;
            ks_conn_close(c, KT_CLOSE_FLUSH);
        }
        if (c == stop)
            break;
    }
}

uint64_t ks_conn_bytes(const ks_conn *c)
{
    return kt_stream_buffered(c->s) + kt_stream_pending(c->s) + c->held + c->pending_bytes;
}

/* At most this many clients closed per tick: the next tick goes on. */
#define KS_EVICT_MAX 64

size_t ks_server_evict(ks_server *srv)
{
    uint64_t limit = srv->sc->max_clients_memory, q, o, p;
    if (limit == 0)
        return 0;
    ks_server_client_bytes(srv, &q, &o, &p);
    uint64_t total = q + o + p;
    size_t closed = 0;
    while (total > limit && closed < KS_EVICT_MAX) {
        ks_conn *big = NULL;
        uint64_t most = 0;
        for (ks_conn *c = srv->head; c; c = c->next) {
            uint64_t b = ks_conn_bytes(c);
            if (b > most) { /* a closed client has left the list */
                most = b;
                big = c;
            }
        }
        if (big == NULL)
            break;
        char peer[64];
        kt_log_notice("closing client id=%llu %s: it holds %llu bytes, all clients %llu, over "
                      "%llu (max-clients-memory)", (unsigned long long)big->id,
                      kt_stream_peer(big->s, peer, sizeof peer), (unsigned long long)most,
                      (unsigned long long)total, (unsigned long long)limit);
        srv->st.closed_memory++;
        total -= most;
        closed++;
        ks_conn_close(big, KT_CLOSE_NOW);
    }
    return closed;
}

void ks_server_client_bytes(const ks_server *srv, uint64_t *query, uint64_t *output,
                            uint64_t *pending)
{
    *query = *output = *pending = 0;
    for (const ks_conn *c = srv->head; c; c = c->next) {
        *query += kt_stream_buffered(c->s);
        *output += kt_stream_pending(c->s) + c->held;
        *pending += c->pending_bytes;
    }
}

bool ks_server_trim(ks_server *srv)
{
    uint64_t rss = ks_rss_bytes(), q, o, p;
    ks_server_client_bytes(srv, &q, &o, &p);
    /* Only once the burst is over: clients hold next to nothing, at two
     * cron ticks in a row (giving memory back while it is being reused
     * costs page faults, and madvise's TLB flushes are not cheap). */
    bool quiet = q + o + p < KS_TRIM_QUIET;
    bool was_quiet = srv->trim_quiet;
    srv->trim_quiet = quiet;
    if (rss < srv->rss_base)
        srv->rss_base = rss;
    if (!quiet || !was_quiet || rss < srv->rss_base + KS_TRIM_GROWTH)
        return false;
#if defined(__GLIBC__)
    (void)malloc_trim(0);
#endif
    srv->st.trims++;
    srv->rss_base = ks_rss_bytes();
    kt_log_debug("memory given back: resident %llu KiB, now %llu KiB", (unsigned long long)(rss >> 10),
                 (unsigned long long)(srv->rss_base >> 10));
    return true;
}

static void cron_cb(kt_timer *t, void *arg)
{
    ks_server *srv = arg;
    (void)t;
    bool slow = ks__lag_tick(srv);
    (void)ks_server_evict(srv);
    if (!slow)
        return;
    sweep_idle(srv);
    (void)ks_server_trim(srv);
}

/* ---- the drain's view of a connection ----------------------------------------------------- */

static size_t unread_in_socket(const ks_conn *c)
{
    int n = 0;
    int fd = kt_stream_fd(c->s);
    if (fd < 0 || ioctl(fd, FIONREAD, &n) < 0 || n < 0)
        return 0;
    return (size_t)n;
}

/* Is c done (nothing owed, nothing unread, not paused)? */
static bool conn_idle_for_drain(ks_conn *c)
{
    if (c->head || (c->flags & (KS_C_PAUSED | KS_C_HOLD)) || kt_stream_pending(c->s))
        return false;
    /* Input kept by the stream must be the start of a request that is not
     * complete; anything in the socket is still to be read. */
    if (kt_stream_buffered(c->s) && !(c->flags & KS_C_PARTIAL) && !(c->flags & KS_C_NOREAD))
        return false;
    return unread_in_socket(c) == 0;
}

/* What c would lose if closed now, counted into lost. */
static void conn_count_lost(ks_conn *c, ks_lost *lost)
{
    size_t unread = unread_in_socket(c);
    if (!(c->flags & (KS_C_PARTIAL | KS_C_NOREAD)))
        unread += kt_stream_buffered(c->s);
    if (c->pending == 0 && unread == 0)
        return;
    lost->clients++;
    lost->requests += c->pending;
    lost->unread_bytes += unread;
}

/* ---- the drain ---------------------------------------------------------------------------- */

static void drained(ks_server *srv)
{
    srv->state = KS_DRAINED;
    kt_timer_stop(&srv->drain_tick);
    kt_timer_stop(&srv->drain_timer);
    if (srv->d->drained)
        srv->d->drained(srv);
    else
        kt_loop_stop(srv->loop);
}

static void maybe_drained(ks_server *srv)
{
    if (srv->state == KS_DRAINING && srv->nclients == 0 && srv->nclosing == 0)
        drained(srv);
}

void ks__conn_gone(ks_server *srv)
{
    srv->nclosing--;
    maybe_drained(srv);
}

/* Close the clients that are done; those a fault keeps from ever being
 * answered go at once. */
static void drain_sweep(ks_server *srv)
{
    for (ks_conn *c = srv->head, *next; c; c = next) {
        next = c->next;
        if (srv->d->stuck && srv->d->stuck(c)) {
            ks_conn_close(c, KT_CLOSE_NOW);
        } else if (!conn_idle_for_drain(c)) {
            c->quiet = 0;
        } else if (++c->quiet >= KS_DRAIN_QUIET) {
            ks_conn_close(c, KT_CLOSE_FLUSH);
        }
    }
}

static void drain_tick_cb(kt_timer *t, void *arg)
{
    ks_server *srv = arg;
    (void)t;
    drain_sweep(srv);
    maybe_drained(srv);
}

/* The drain is cut short: close what is left and count what it loses. */
static void drain_end(ks_server *srv, const char *why)
{
    size_t n = srv->nclients;
    for (ks_conn *c = srv->head; c; c = c->next)
        if (!(srv->d->stuck && srv->d->stuck(c)))
            conn_count_lost(c, &srv->lost);
    if (srv->lost.clients)
        kt_log_warning("%s: closing %zu clients; %llu of them had requests not answered: "
                       "%llu requests unanswered, %llu bytes unread", why, n,
                       (unsigned long long)srv->lost.clients,
                       (unsigned long long)srv->lost.requests,
                       (unsigned long long)srv->lost.unread_bytes);
    else
        kt_log_notice("%s: closing %zu clients (nothing unanswered)", why, n);
    while (srv->head)
        ks_conn_close(srv->head, KT_CLOSE_NOW);
    drained(srv);
}

static void drain_timer_cb(kt_timer *t, void *arg)
{
    (void)t;
    drain_end(arg, "shutdown-timeout");
}

void ks_server_shutdown(ks_server *srv)
{
    if (srv->state == KS_DRAINED)
        return;
    if (srv->state == KS_DRAINING) {
        drain_end(srv, "second signal");
        return;
    }
    srv->state = KS_DRAINING;
    kt_log_notice("shutting down: answering what %zu clients have sent (shutdown-timeout %llu ms)",
                  srv->nclients, (unsigned long long)(srv->sc->shutdown_timeout / KT_MSEC(1)));
    ks_server_close_listeners(srv);
    drain_sweep(srv);
    maybe_drained(srv);
    if (srv->state != KS_DRAINING)
        return;
    (void)kt_timer_start(&srv->drain_tick, KS_DRAIN_TICK, KS_DRAIN_TICK);
    if (srv->sc->shutdown_timeout)
        (void)kt_timer_start(&srv->drain_timer, srv->sc->shutdown_timeout, 0);
}

/* ---- the end ---------------------------------------------------------------------------------- */

void ks_server_free(ks_server *srv)
{
    ks_server_close_listeners(srv);
    kt_timer_stop(&srv->cron);
    kt_defer_cancel(&srv->resume);
    kt_timer_stop(&srv->drain_tick);
    kt_timer_stop(&srv->drain_timer);
    srv->state = KS_DRAINED;
    while (srv->head)
        ks_conn_close(srv->head, KT_CLOSE_NOW);
    /* Streams still closing forget the server. */
    for (ks_conn *c = srv->closing; c; c = c->next)
        c->srv = NULL;
    srv->closing = NULL;
    ks__bslots_free(srv);
    ks__metrics_free(srv);
    kt_free(srv->calls);
    srv->calls = NULL;
    kt_free(srv->ls);
    srv->ls = NULL;
    srv->nls = 0;
}

size_t ks_server_blocked(const ks_server *srv)
{
    size_t n = 0;
    for (const ks_conn *c = srv->head; c; c = c->next)
        if (c->head && !c->head->ready)
            n++;
    return n;
}
