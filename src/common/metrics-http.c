/*
 * metrics-http.c - the HTTP endpoint that serves the metrics.
 *
 * One connection, one request, one answer:
 *
 *   accept ──▶ read the head ──▶ judge it ──▶ answer ──▶ FIN ──▶ discard input
 *   (pause at     (kept by the       (200 renders       (Connection:    until the
 *   max_clients)  stream, searched   the metrics)        close)          peer's EOF,
 *                 once, <= max_request)                                  then close
 *
 * A timer per connection bounds each half: read_timeout from accept to a
 * whole request head (a trickling client gains nothing), then
 * write_timeout for the scraper to take the answer and close; either
 * expiry resets the connection. After answering, input is read and
 * dropped rather than left unread, since closing a socket with unread
 * input sends RST, which could destroy the answer in flight. At
 * max_clients open connections accepting pauses (new ones wait in the
 * kernel's backlog) and resumes when one closes. Scrapes answered in one
 * loop iteration share one rendering.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "metrics.h"
#include "metrics-int.h"

typedef struct mconn mconn;

struct kt_metrics_server {
    kt_loop *loop;
    kt_listener *listener;      /* NULL once closed */
    kt_metrics_options opts;    /* with the defaults filled in */
    kt_metrics_render_cb cb;
    void *arg;
    kt_metrics w;               /* the last rendering */
    uint64_t rendered_at;       /* loop time of that rendering (0: none) */
    int render_err;             /* its result */
    mconn *conns;               /* open connections */
    unsigned refs;              /* the owner's, plus one per connection */
    bool paused, closing;
    kt_metrics_stats stats;
};

struct mconn {
    kt_metrics_server *srv;
    kt_stream *s;
    kt_timer timer;             /* read, then write timeout */
    size_t scanned;             /* bytes of the head searched so far */
    bool answered;              /* answer queued: input is dropped */
    mconn *prev, *next;
};

/* ---- the request parser ------------------------------------------------------------------ */

size_t kt__http_head_end(const char *data, size_t len, size_t *scanned)
{
    size_t i = *scanned;
    while (i < len) {
        const char *nl = memchr(data + i, '\n', len - i);
        if (nl == NULL) {
            i = len;
            break;
        }
        i = (size_t)(nl - data);
        /* need the next one or two bytes to tell */
        if (i + 1 >= len)
            break;
        if (data[i + 1] == '\n')
            return *scanned = i + 2;
        if (data[i + 1] == '\r') {
            if (i + 2 >= len)
                break;
            if (data[i + 2] == '\n')
                return *scanned = i + 3;
        }
        i++;
    }
    *scanned = i;
    return 0;
}

static bool tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* The next line of [*p, end): its start and length without CR LF or LF;
 * a CR elsewhere makes it invalid (-1). 0 at the end. */
static int next_line(const char **p, const char *end, const char **line, size_t *len)
{
    if (*p >= end)
        return 0;
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    const char *stop = nl ? nl : end;
    *line = *p;
    *len = (size_t)(stop - *p);
    if (*len > 0 && (*line)[*len - 1] == '\r')
        (*len)--;
    if (memchr(*line, '\r', *len))
        return -1;
    *p = nl ? nl + 1 : end;
    return 1;
}

void kt__http_parse(const char *head, size_t len, kt__http_req *req)
{
    const char *p = head, *end = head + len, *line;
    size_t n;
    req->status = 400;
    req->head = false;

    /* a server ignores empty lines before the request line (RFC 9112 2.2) */
    int r;
    while ((r = next_line(&p, end, &line, &n)) == 1 && n == 0)
        ;
    if (r != 1)
        return;
    /* METHOD SP TARGET SP HTTP/d.d */
    const char *sp1 = memchr(line, ' ', n);
    if (sp1 == NULL || sp1 == line)
        return;
    const char *tgt = sp1 + 1;
    const char *sp2 = memchr(tgt, ' ', (size_t)(line + n - tgt));
    if (sp2 == NULL || sp2 == tgt)
        return;
    const char *ver = sp2 + 1;
    size_t mlen = (size_t)(sp1 - line), tlen = (size_t)(sp2 - tgt), vlen = (size_t)(line + n - ver);
    for (size_t i = 0; i < mlen; i++)
        if (!tchar((unsigned char)line[i]))
            return;
    for (size_t i = 0; i < tlen; i++)
        if ((unsigned char)tgt[i] <= ' ' || tgt[i] == 0x7f)
            return;
    if (vlen != 8 || memcmp(ver, "HTTP/", 5) != 0 || ver[6] != '.' || ver[5] < '0' ||
        ver[5] > '9' || ver[7] < '0' || ver[7] > '9')
        return;

    /* header lines: a token, a colon, a value without control bytes */
    while ((r = next_line(&p, end, &line, &n)) == 1 && n > 0) {
        size_t i = 0;
        while (i < n && tchar((unsigned char)line[i]))
            i++;
        if (i == 0 || i == n || line[i] != ':') /* also refuses obsolete folding */
            return;
        for (i++; i < n; i++)
            if (((unsigned char)line[i] < ' ' && line[i] != '\t') || line[i] == 0x7f)
                return;
    }
    if (r < 0)
        return;
    if (ver[5] != '1') {
        req->status = 505;
        return;
    }

    /* the path: origin form, or the absolute form's part after the host */
    const char *path = tgt, *tend = tgt + tlen;
    if (tlen > 7 && strncasecmp(tgt, "http://", 7) == 0) {
        path = memchr(tgt + 7, '/', tlen - 7);
        if (path == NULL)
            path = tend;
    } else if (tlen > 8 && strncasecmp(tgt, "https://", 8) == 0) {
        path = memchr(tgt + 8, '/', tlen - 8);
        if (path == NULL)
            path = tend;
    } else if (tgt[0] != '/' && !(tlen == 1 && tgt[0] == '*')) {
        return;
    }
    size_t plen = 0;
    while (path + plen < tend && path[plen] != '?' && path[plen] != '#')
        plen++;
    if (plen != 8 || memcmp(path, "/metrics", 8) != 0) {
        req->status = 404;
        return;
    }
    const char *method = sp1 - mlen; /* (line has moved on to the headers) */
    if (mlen == 3 && memcmp(method, "GET", 3) == 0) {
        req->status = 200;
    } else if (mlen == 4 && memcmp(method, "HEAD", 4) == 0) {
        req->status = 200;
        req->head = true;
    } else {
        req->status = 405;
    }
}

/* ---- the server ------------------------------------------------------------------------ */

static void unref(kt_metrics_server *srv)
{
    if (--srv->refs == 0) {
        kt_metrics_free(&srv->w);
        kt_free(srv);
    }
}

/* Render once per loop iteration at most; the result is kept in srv->w. */
static int render(kt_metrics_server *srv)
{
    uint64_t now = kt_loop_now(srv->loop);
    if (srv->rendered_at != 0 && srv->rendered_at == now)
        return srv->render_err;
    kt_metrics_reset(&srv->w);
    int err = srv->cb(&srv->w, srv->arg);
    if (err == 0)
        err = kt_metrics_error(&srv->w);
    if (err < 0)
        kt_log_warning("metrics: cannot render: %s%s%s", strerror(-err),
                       srv->w.what[0] ? ": " : "", srv->w.what);
    srv->rendered_at = now;
    srv->render_err = err;
    return err;
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 505: return "HTTP Version Not Supported";
    default: return "Internal Server Error";
    }
}

/* An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), without the locale. */
static void http_date(char *buf, size_t size)
{
    static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    time_t t = time(NULL);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(buf, size, "Thu, 01 Jan 1970 00:00:00 GMT");
        return;
    }
    snprintf(buf, size, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday,
             months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Queue the answer, send FIN after it, and from now on drop input until
 * the peer closes or write_timeout passes. */
static void answer(mconn *c, int status, bool head)
{
    kt_metrics_server *srv = c->srv;
    const char *ctype = "text/plain; charset=utf-8", *body;
    char text[64];
    size_t blen;

    if (status == 200 && render(srv) < 0)
        status = 500;
    if (status == 200) {
        ctype = "text/plain; version=0.0.4; charset=utf-8";
        body = srv->w.out.data;
        blen = srv->w.out.len;
        srv->stats.scrapes++;
    } else {
        blen = (size_t)snprintf(text, sizeof(text), "%s\n", reason(status));
        body = text;
        srv->stats.errors++;
    }
    srv->stats.requests++;

    char date[40], hdr[320];
    http_date(date, sizeof(date));
    int hlen = snprintf(hdr, sizeof(hdr),
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Date: %s\r\n%sConnection: close\r\n\r\n",
                        status, reason(status), ctype, blen, date,
                        status == 405 ? "Allow: GET, HEAD\r\n" : "");
    c->answered = true;
    if (kt_stream_write(c->s, hdr, (size_t)hlen) < 0 ||
        (!head && blen > 0 && kt_stream_write(c->s, body, blen) < 0) ||
        kt_stream_shutdown(c->s) < 0 ||
        kt_timer_start(&c->timer, srv->opts.write_timeout, 0) < 0) {
        kt_stream_close(c->s, KT_CLOSE_NOW);
    }
}

static size_t conn_read_cb(kt_stream *s, const char *data, size_t len, void *arg)
{
    (void)s;
    mconn *c = arg;
    if (c->answered)
        return len; /* after the answer: read and dropped */
    size_t end = kt__http_head_end(data, len, &c->scanned);
    if (end == 0 ? len > c->srv->opts.max_request : end > c->srv->opts.max_request) {
        answer(c, 431, false);
        return len;
    }
    if (end == 0)
        return 0; /* kept, and shown again with more */
    kt__http_req req;
    kt__http_parse(data, end, &req);
    answer(c, req.status, req.head);
    return len;
}

static void conn_eof_cb(kt_stream *s, void *arg)
{
    mconn *c = arg;
    /* a request cut short by the client's FIN */
    if (!c->answered && kt_stream_buffered(s) > 0)
        answer(c, 400, false);
    kt_stream_close(s, KT_CLOSE_FLUSH);
}

static void conn_error_cb(kt_stream *s, int err, void *arg)
{
    (void)err;
    (void)arg;
    kt_stream_close(s, KT_CLOSE_NOW);
}

static void conn_close_cb(kt_stream *s, void *arg)
{
    (void)s;
    mconn *c = arg;
    kt_metrics_server *srv = c->srv;
    kt_timer_stop(&c->timer);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->stats.clients--;
    if (srv->paused && !srv->closing && srv->stats.clients < srv->opts.max_clients) {
        if (kt_listener_resume(srv->listener) == 0)
            srv->paused = false;
    }
    kt_free(c);
    unref(srv);
}

static void conn_timer_cb(kt_timer *t, void *arg)
{
    (void)t;
    mconn *c = arg;
    c->srv->stats.timeouts++;
    kt_stream_close(c->s, KT_CLOSE_RESET);
}

static const kt_stream_cbs conn_cbs = {
    .on_read = conn_read_cb,
    .on_eof = conn_eof_cb,
    .on_error = conn_error_cb,
    .on_close = conn_close_cb,
};

static void accept_cb(kt_listener *l, kt_stream *s, void *arg)
{
    kt_metrics_server *srv = arg;
    /* (a completion backend may still deliver a connection it accepted
     * while the pause was on its way: the limit holds all the same) */
    mconn *c = srv->stats.clients < srv->opts.max_clients ? kt_calloc(1, sizeof(*c)) : NULL;
    if (c == NULL) {
        srv->stats.rejected++;
        kt_stream_close(s, KT_CLOSE_NOW);
        return;
    }
    c->srv = srv;
    c->s = s;
    c->next = srv->conns;
    if (c->next)
        c->next->prev = c;
    srv->conns = c;
    srv->refs++;
    srv->stats.clients++;
    kt_timer_init(srv->loop, &c->timer, conn_timer_cb, c);
    kt_stream_set_cbs(s, &conn_cbs, c);
    kt_stream_set_linger(s, srv->opts.write_timeout);
    if (kt_timer_start(&c->timer, srv->opts.read_timeout, 0) < 0 || kt_stream_read_start(s) < 0)
        kt_stream_close(s, KT_CLOSE_NOW);
    if (srv->stats.clients >= srv->opts.max_clients && !srv->paused) {
        kt_listener_pause(l);
        srv->paused = true;
        srv->stats.paused++;
    }
}

int kt_metrics_listen(kt_loop *loop, const char *addr, const kt_metrics_options *opts,
                      kt_metrics_render_cb cb, void *arg, kt_metrics_server **out)
{
    kt_addr a;
    if (loop == NULL || addr == NULL || cb == NULL || out == NULL || kt_addr_parse(addr, &a) < 0)
        return -EINVAL;
    kt_metrics_server *srv = kt_calloc(1, sizeof(*srv));
    if (srv == NULL)
        return -ENOMEM;
    if (opts)
        srv->opts = *opts;
    if (srv->opts.max_clients == 0)
        srv->opts.max_clients = 16;
    if (srv->opts.read_timeout == 0)
        srv->opts.read_timeout = KT_SEC(5);
    if (srv->opts.write_timeout == 0)
        srv->opts.write_timeout = KT_SEC(10);
    if (srv->opts.max_request == 0)
        srv->opts.max_request = 8192;
    srv->loop = loop;
    srv->cb = cb;
    srv->arg = arg;
    srv->refs = 1;
    kt_metrics_init(&srv->w, srv->opts.max_response);
    srv->opts.max_response = srv->w.limit;
    int r = kt_listen(loop, &a, 0, accept_cb, srv, &srv->listener);
    if (r < 0) {
        kt_free(srv);
        return r;
    }
    *out = srv;
    return 0;
}

void kt_metrics_server_close(kt_metrics_server *srv)
{
    if (srv == NULL || srv->closing)
        return;
    srv->closing = true;
    kt_listener_close(srv->listener);
    srv->listener = NULL;
    for (mconn *c = srv->conns, *next; c; c = next) {
        next = c->next;
        kt_stream_close(c->s, KT_CLOSE_NOW);
    }
    unref(srv);
}

int kt_metrics_server_addr(const kt_metrics_server *srv, kt_addr *out)
{
    if (srv->listener == NULL)
        return -EBADF;
    return kt_listener_addr(srv->listener, out);
}

void kt_metrics_server_stats(const kt_metrics_server *srv, kt_metrics_stats *out)
{
    *out = srv->stats;
}
