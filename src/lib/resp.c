/*
 * resp.c - the RESP2 parsers: requests and replies over the caller's
 * buffer, resuming where the last call stopped.
 *
 * The caller's state object (one per connection) keeps a parse's place
 * between calls, as Redis's processMultibulkBuffer() keeps multibulklen and
 * bulklen: the bytes taken (whole lines, arguments, values), how far the
 * current line was searched for its end, and the counts still to come.
 * Arguments and nodes of an incomplete message are kept as offsets from its
 * start (the buffer may move before the next call) and become pointers
 * again when it completes; a message parsed in one call never takes that path.
 *
 * No line is waited for without bound: an inline line longer than
 * max_inline and a '*'/'$' header longer than KT_RESP_MAX_HEADER are
 * refused as soon as that many bytes are there, so a peer that never sends
 * a newline cannot make the caller buffer forever. Every check is made
 * only once the bytes it depends on are present, which is what makes a
 * result independent of how the input was split.
 */
#include "config.h"
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <kettle/resp.h>

const kt_resp_limits kt_resp_default_limits = {
    .max_inline = 64 * 1024,
    .max_bulk = (size_t)512 * 1024 * 1024,
    .max_args = 1024 * 1024,
    .max_depth = 32,
};

/* find_crlf() results besides a length and KT_RESP_INCOMPLETE. */
#define LINE_TOO_LONG (-3)

/* kt_resp_req.state */
enum { REQ_IDLE = 0, REQ_COUNT, REQ_ARGS, REQ_INLINE };
/* kt_resp_reply.state */
enum { REP_IDLE = 0, REP_BUILD, REP_MEASURE };

static ssize_t fail(const char **err, const char *why)
{
    if (err)
        *err = why;
    return KT_RESP_ERROR;
}

/* Redis answers "expected '$', got '%c'" with the offending byte; one
 * static string per byte keeps *err a static string. (A NUL byte cuts the
 * text short, as it does in Redis's reply.) */
#define EXP1(c) { 'e', 'x', 'p', 'e', 'c', 't', 'e', 'd', ' ', '\'', '$', '\'', ',', ' ', \
                  'g', 'o', 't', ' ', '\'', (char)(c), '\'', '\0' }
#define EXP4(c) EXP1(c), EXP1((c) + 1), EXP1((c) + 2), EXP1((c) + 3)
#define EXP16(c) EXP4(c), EXP4((c) + 4), EXP4((c) + 8), EXP4((c) + 12)
#define EXP64(c) EXP16(c), EXP16((c) + 16), EXP16((c) + 32), EXP16((c) + 48)
static const char expected_dollar[256][22] = { EXP64(0), EXP64(64), EXP64(128), EXP64(192) };

/* A position inside an incomplete message, kept in a pointer field as an
 * offset from the message's start (the buffer may move between calls). */
#define TO_OFF(p, base) ((const char *)(uintptr_t)((p) - (base)))
#define TO_PTR(off, base) ((base) + (uintptr_t)(off))

/*
 * The line at p (avail bytes, type byte included) must end in \r with at
 * most bound bytes before it. Its first *scan bytes were searched by an
 * earlier call and hold no \r: the search goes on from there. Returns the
 * length before the \r once the byte after it is there too (the caller
 * checks that it is \n), KT_RESP_INCOMPLETE, or LINE_TOO_LONG once more
 * than bound bytes have no \r among them. Bytes searched are added to *seen.
 */
static inline ssize_t find_crlf(const char *p, size_t avail, size_t bound, size_t *scan,
                                uint64_t *seen)
{
    size_t win = avail <= bound ? avail : bound + 1, i = *scan;
    const char *cr = NULL;

    /* Header lines are a few bytes: a plain loop beats a call to memchr. */
    if (bound <= KT_RESP_MAX_HEADER) {
        while (i < win && p[i] != '\r')
            i++;
        if (i < win)
            cr = p + i;
    } else if (i < win) {
        cr = memchr(p + i, '\r', win - i);
    }
    if (cr == NULL) {
        *seen += win - *scan;
        *scan = win;
        return avail > bound ? LINE_TOO_LONG : KT_RESP_INCOMPLETE;
    }
    i = (size_t)(cr - p);
    *seen += i + 1 - *scan;
    *scan = i; /* if the \n is not there yet, the search ends here next time */
    if (i + 1 >= avail)
        return KT_RESP_INCOMPLETE;
    return (ssize_t)i;
}

/* The data of a bulk of blen bytes at p (avail bytes there) must be
 * followed by \r\n, else the length was a lie. 0 when it is all there,
 * KT_RESP_INCOMPLETE, or KT_RESP_ERROR (the caller says "invalid bulk
 * length"). */
static inline int bulk_trailer(const char *p, size_t avail, size_t blen, uint64_t *seen)
{
    if (avail < blen)
        return KT_RESP_INCOMPLETE;
    avail -= blen;
    if (avail < 2) {
        *seen += avail;
        return avail == 1 && p[blen] != '\r' ? KT_RESP_ERROR : KT_RESP_INCOMPLETE;
    }
    *seen += blen + 2;
    return p[blen] == '\r' && p[blen + 1] == '\n' ? 0 : KT_RESP_ERROR;
}

/* A decimal as Redis's string2ll() takes it: "0", or an optional '-' and
 * digits without a leading zero, within int64_t. No '+', no blanks. */
static bool parse_ll(const char *s, size_t n, int64_t *out)
{
    bool neg = false;
    uint64_t v = 0;

    if (n == 1 && s[0] == '0') {
        *out = 0;
        return true;
    }
    if (n > 0 && s[0] == '-') {
        neg = true;
        s++;
        n--;
    }
    if (n == 0 || n > 19 || s[0] < '1' || s[0] > '9')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9)
            return false;
        v = v * 10 + d; /* 19 digits cannot overflow 64 bits */
    }
    if (v > (uint64_t)INT64_MAX + neg)
        return false;
    *out = neg ? -(int64_t)(v - 1) - 1 : (int64_t)v;
    return true;
}

/* Double an array of *cap elements of size bytes (8 at first). Returns it,
 * or NULL when out of memory (then it is unchanged). */
static void *grow(void *a, size_t *cap, size_t size)
{
    size_t ncap = *cap ? *cap * 2 : 8;

    if (ncap > SIZE_MAX / size)
        return NULL;
    a = kt_realloc(a, ncap * size);
    if (a != NULL)
        *cap = ncap;
    return a;
}

/* ---- requests ------------------------------------------------------------ */

static inline int push_arg(kt_resp_req *req, const char *p, size_t len)
{
    if (req->got == req->cap) {
        kt_resp_arg *a = grow(req->argv, &req->cap, sizeof(*a));
        if (a == NULL)
            return -ENOMEM;
        req->argv = a;
    }
    req->argv[req->got].p = p;
    req->argv[req->got].len = len;
    req->got++;
    return 0;
}

void kt_resp_req_reset(kt_resp_req *req)
{
    req->argc = req->pos = req->scan = req->got = req->noff = 0;
    req->left = 0;
    req->bulklen = -1;
    req->state = REQ_IDLE;
}

/* A request is complete at buf: its arguments become pointers. */
static ssize_t req_done(const char *buf, kt_resp_req *req, size_t pos)
{
    for (size_t i = 0; i < req->noff; i++)
        req->argv[i].p = TO_PTR(req->argv[i].p, buf);
    req->argc = req->got;
    req->got = req->noff = req->pos = req->scan = 0;
    req->state = REQ_IDLE;
    return (ssize_t)pos;
}

static ssize_t req_fail(kt_resp_req *req, const char **err, const char *why)
{
    kt_resp_req_reset(req);
    return fail(err, why);
}

static ssize_t parse_multibulk(const char *buf, size_t len, const kt_resp_limits *lim,
                               kt_resp_req *req, const char **err)
{
    size_t pos = req->pos, scan = req->scan;
    uint64_t left = req->left, seen = 0;
    int64_t blen = req->bulklen;
    const char *why = "invalid bulk length";
    ssize_t k;
    int rc;

    if (req->state == REQ_COUNT) {
        int64_t n;
        k = find_crlf(buf, len, KT_RESP_MAX_HEADER, &scan, &seen);
        if (k == KT_RESP_INCOMPLETE)
            goto incomplete;
        why = "too big mbulk count string";
        if (k == LINE_TOO_LONG)
            goto error;
        seen += (size_t)k; /* the digits again, and the \n */
        /* Redis skips the byte after \r unseen; we insist on \n. */
        why = "invalid multibulk length";
        if (buf[k + 1] != '\n' || !parse_ll(buf + 1, (size_t)k - 1, &n) ||
            (n > 0 && (uint64_t)n > lim->max_args))
            goto error;
        req->examined += seen;
        seen = 0;
        pos = (size_t)k + 2;
        scan = 0;
        if (n <= 0)
            return req_done(buf, req, pos); /* "*0", "*-1": nothing to run */
        left = (uint64_t)n;
        blen = -1;
        req->state = REQ_ARGS;
        why = "invalid bulk length";
    }

    /* argv grows with the arguments actually received, not with the
     * announced count: "*1048576\r\n" alone costs nothing. */
    while (left > 0) {
        if (blen < 0) {
            const char *h = buf + pos;
            k = find_crlf(h, len - pos, KT_RESP_MAX_HEADER, &scan, &seen);
            if (k == KT_RESP_INCOMPLETE)
                goto incomplete;
            if (k == LINE_TOO_LONG) {
                why = "too big bulk count string";
                goto error;
            }
            if (h[0] != '$') {
                why = expected_dollar[(unsigned char)h[0]];
                goto error;
            }
            seen += (size_t)k + 1; /* the '$', the digits again, the \n */
            if (h[k + 1] != '\n' || !parse_ll(h + 1, (size_t)k - 1, &blen) || blen < 0 ||
                (uint64_t)blen > lim->max_bulk)
                goto error;
            pos += (size_t)k + 2;
            scan = 0;
        }
        rc = bulk_trailer(buf + pos, len - pos, (size_t)blen, &seen);
        if (rc == KT_RESP_INCOMPLETE)
            goto incomplete;
        if (rc < 0)
            goto error;
        if (push_arg(req, buf + pos, (size_t)blen) < 0) {
            why = "out of memory";
            goto error;
        }
        pos += (size_t)blen + 2;
        blen = -1;
        left--;
    }
    req->examined += seen;
    return req_done(buf, req, pos);

incomplete:
    /* Keep the place; the arguments taken become offsets. */
    for (size_t i = req->noff; i < req->got; i++)
        req->argv[i].p = TO_OFF(req->argv[i].p, buf);
    req->noff = req->got;
    req->pos = pos;
    req->scan = scan;
    req->left = left;
    req->bulklen = blen;
    req->examined += seen;
    return KT_RESP_INCOMPLETE;

error:
    req->examined += seen;
    return req_fail(req, err, why);
}

/* isspace() in the C locale: where sdssplitargs() skips between tokens. */
static inline bool is_blank(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Where an unquoted token ends (sdssplitargs() does not stop at \v, \f). */
static inline bool ends_token(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Split an inline line the way Redis's sdssplitargs() does. A token without
 * quotes points into the line; one with quotes is decoded into
 * req->scratch, sized once to the line so earlier tokens stay put.
 */
static ssize_t split_inline(const char *s, size_t n, kt_resp_req *req, const char **err)
{
    size_t i = 0, used = 0;

    for (;;) {
        size_t start, dstart;
        char *d, q;

        while (i < n && is_blank((unsigned char)s[i]))
            i++;
        if (i == n)
            return 0;
        start = i;
        while (i < n && !ends_token((unsigned char)s[i]) && s[i] != '"' && s[i] != '\'')
            i++;
        if (i == n || ends_token((unsigned char)s[i])) {
            if (push_arg(req, s + start, i - start) < 0)
                return fail(err, "out of memory");
            continue;
        }

        /* A quote: decode the token into scratch (never longer than n). */
        if (req->scratch_cap < n) {
            char *ns = kt_realloc(req->scratch, n);
            if (ns == NULL)
                return fail(err, "out of memory");
            req->scratch = ns;
            req->scratch_cap = n;
        }
        d = req->scratch;
        dstart = used;
        memcpy(d + used, s + start, i - start);
        used += i - start;
        /* s[i] opens a quote: it runs to its closing twin, which must end
         * the token. */
        q = s[i];
        for (i++;; ) {
            if (i == n)
                return fail(err, "unbalanced quotes in request");
            if (s[i] == q) {
                i++;
                if (i < n && !is_blank((unsigned char)s[i]))
                    return fail(err, "unbalanced quotes in request");
                break;
            }
            if (s[i] == '\\' && q == '"' && i + 3 < n && s[i + 1] == 'x' &&
                hex_value((unsigned char)s[i + 2]) >= 0 &&
                hex_value((unsigned char)s[i + 3]) >= 0) {
                d[used++] = (char)(hex_value((unsigned char)s[i + 2]) * 16 +
                                   hex_value((unsigned char)s[i + 3]));
                i += 4;
            } else if (s[i] == '\\' && q == '"' && i + 1 < n) {
                char c = s[i + 1];
                switch (c) {
                case 'n': c = '\n'; break;
                case 'r': c = '\r'; break;
                case 't': c = '\t'; break;
                case 'b': c = '\b'; break;
                case 'a': c = '\a'; break;
                default: break;
                }
                d[used++] = c;
                i += 2;
            } else if (s[i] == '\\' && q == '\'' && i + 1 < n && s[i + 1] == '\'') {
                d[used++] = '\'';
                i += 2;
            } else {
                d[used++] = s[i++];
            }
        }
        if (push_arg(req, d + dstart, used - dstart) < 0)
            return fail(err, "out of memory");
    }
}

static ssize_t parse_inline(const char *buf, size_t len, const kt_resp_limits *lim,
                            kt_resp_req *req, const char **err)
{
    size_t max = lim->max_inline, win = len, scan = req->scan, n;
    const char *nl = NULL;
    ssize_t r;

    /* A line of max bytes, its \r and its \n: look no further. */
    if (max < SIZE_MAX - 2 && win > max + 2)
        win = max + 2;
    /* The first scan bytes were searched by earlier calls. */
    if (scan < win)
        nl = memchr(buf + scan, '\n', win - scan);
    if (nl == NULL) {
        req->examined += win - scan;
        /* The line is at least this long, whatever comes next (a final
         * \r may be the one dropped before \n). */
        if (win > max) {
            req->examined++;
            if (win - (buf[win - 1] == '\r') > max)
                return req_fail(req, err, "too big inline request");
        }
        req->scan = win;
        return KT_RESP_INCOMPLETE;
    }
    n = (size_t)(nl - buf);
    req->examined += n + 1 - scan + n; /* the search, then the split */
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n > max)
        return req_fail(req, err, "too big inline request");
    r = split_inline(buf, n, req, err);
    if (r < 0) {
        kt_resp_req_reset(req);
        return r;
    }
    return req_done(buf, req, (size_t)(nl - buf) + 1);
}

ssize_t kt_resp_parse_request(const char *buf, size_t len, const kt_resp_limits *lim,
                              kt_resp_req *req, const char **err)
{
    if (lim == NULL)
        lim = &kt_resp_default_limits;
    req->argc = 0;
    /* Fewer bytes than were taken: not the message we were in. */
    if (req->state != REQ_IDLE && len < req->pos + req->scan)
        kt_resp_req_reset(req);
    if (req->state == REQ_IDLE) {
        if (len == 0)
            return KT_RESP_INCOMPLETE;
        /* Redis's rule: a request starting with '*' is multibulk, any
         * other is an inline command. */
        req->state = buf[0] == '*' ? REQ_COUNT : REQ_INLINE;
        req->examined++;
    }
    if (req->state == REQ_INLINE)
        return parse_inline(buf, len, lim, req, err);
    return parse_multibulk(buf, len, lim, req, err);
}

void kt_resp_req_trim(kt_resp_req *req, size_t keep)
{
    if (req->state != REQ_IDLE || req->cap * sizeof(*req->argv) + req->scratch_cap <= keep)
        return;
    kt_free(req->argv);
    kt_free(req->scratch);
    req->argv = NULL;
    req->scratch = NULL;
    req->argc = req->cap = req->scratch_cap = 0;
}

void kt_resp_req_free(kt_resp_req *req)
{
    kt_free(req->argv);
    kt_free(req->scratch);
    memset(req, 0, sizeof(*req));
}

/* ---- replies ------------------------------------------------------------- */

static kt_resp_node *push_node(kt_resp_reply *st)
{
    if (st->got == st->cap) {
        kt_resp_node *nodes = grow(st->nodes, &st->cap, sizeof(*nodes));
        if (nodes == NULL)
            return NULL;
        st->nodes = nodes;
    }
    return &st->nodes[st->got++];
}

/* Nodes whose p points into the input (arrays and nil have none). */
static inline bool has_text(int type)
{
    return type != KT_RESP_ARRAY && type != KT_RESP_NIL;
}

void kt_resp_reply_reset(kt_resp_reply *r)
{
    r->count = 0;
    r->pos = r->scan = r->got = r->noff = r->depth = 0;
    r->bulklen = -1;
    r->state = REP_IDLE;
}

/*
 * Both reply entry points; build false only measures. Nesting is followed
 * without recursion: st->left[d] counts the elements still to come in the
 * array open at depth d; a value that completes decrements its parent,
 * and an array whose count reaches zero completes in turn. A '$' header
 * sets blen, and the data is taken at the top of the loop, so that a call
 * that stops between the two resumes there.
 */
static ssize_t parse_reply(const char *buf, size_t len, const kt_resp_limits *lim,
                           kt_resp_reply *st, bool build, const char **err)
{
    size_t max_depth = lim->max_depth < KT_RESP_MAX_DEPTH ? lim->max_depth : KT_RESP_MAX_DEPTH;
    uint64_t seen = 0;
    const char *why;

    st->count = 0;
    /* Fewer bytes than were taken: not the reply we were in. A reply
     * measured so far has no nodes to build on: start it again. */
    if (st->state != REP_IDLE &&
        (len < st->pos + st->scan || (build && st->state == REP_MEASURE)))
        kt_resp_reply_reset(st);
    if (st->state == REP_IDLE)
        st->bulklen = -1;
    st->state = build ? REP_BUILD : REP_MEASURE;
    size_t pos = st->pos, scan = st->scan, depth = st->depth;
    int64_t blen = st->bulklen;

    for (;;) {
        kt_resp_node nd = { 0, NULL, 0, 0, 0 };

        if (blen >= 0) {
            /* A bulk's data, its header taken. */
            int rc = bulk_trailer(buf + pos, len - pos, (size_t)blen, &seen);
            if (rc == KT_RESP_INCOMPLETE)
                goto incomplete;
            why = "invalid bulk length";
            if (rc < 0)
                goto error;
            nd.type = KT_RESP_BULK;
            nd.p = buf + pos;
            nd.len = (size_t)blen;
            pos += (size_t)blen + 2;
            blen = -1;
        } else {
            const char *p = buf + pos;
            size_t avail = len - pos;
            ssize_t k;
            int64_t v = 0;
            char t;

            if (avail == 0)
                goto incomplete;
            t = p[0];
            seen++;
            why = "invalid reply type byte";
            if (t != '+' && t != '-' && t != ':' && t != '$' && t != '*')
                goto error;
            k = find_crlf(p, avail, t == '+' || t == '-' ? lim->max_inline : KT_RESP_MAX_HEADER,
                          &scan, &seen);
            if (k == KT_RESP_INCOMPLETE)
                goto incomplete;
            if (k == LINE_TOO_LONG) {
                why = t == '$' ? "too big bulk count string"
                    : t == '*' ? "too big mbulk count string"
                    : t == ':' ? "invalid integer" : "too big simple string";
                goto error;
            }
            why = "expected CRLF";
            if (p[k + 1] != '\n')
                goto error;
            pos += (size_t)k + 2;
            scan = 0;
            nd.type = t;

            switch (t) {
            case ':':
                seen += (size_t)k; /* the digits again */
                why = "invalid integer";
                if (!parse_ll(p + 1, (size_t)k - 1, &nd.i))
                    goto error;
                /* fall through */
            case '+':
            case '-':
                nd.p = p + 1;
                nd.len = (size_t)k - 1;
                break;
            default: /* '$', '*': a length, a count */
                seen += (size_t)k;
                why = t == '$' ? "invalid bulk length" : "invalid multibulk length";
                if (!parse_ll(p + 1, (size_t)k - 1, &v) || v < -1 ||
                    (v > 0 && (uint64_t)v > (t == '$' ? lim->max_bulk : lim->max_args)))
                    goto error;
                if (v == -1) {
                    nd.type = KT_RESP_NIL;
                    nd.i = t;
                } else if (t == '$') {
                    blen = v;
                    continue; /* the data, at the top */
                } else {
                    why = "reply nested too deeply";
                    if (depth >= max_depth)
                        goto error;
                    nd.n = (size_t)v;
                }
                break;
            }
        }

        if (build) {
            kt_resp_node *slot = push_node(st);
            why = "out of memory";
            if (slot == NULL)
                goto error;
            *slot = nd;
        }
        if (nd.type == KT_RESP_ARRAY && nd.n > 0) {
            st->left[depth++] = (uint64_t)nd.n;
            continue;
        }
        /* A value completed: close every array it completes. */
        while (depth > 0 && --st->left[depth - 1] == 0)
            depth--;
        if (depth == 0)
            break;
    }

    /* Complete: nodes kept as offsets become pointers. */
    if (build) {
        for (size_t i = 0; i < st->noff; i++)
            if (has_text(st->nodes[i].type))
                st->nodes[i].p = TO_PTR(st->nodes[i].p, buf);
        st->count = st->got;
    }
    st->examined += seen;
    st->pos = st->scan = st->got = st->noff = st->depth = 0;
    st->state = REP_IDLE;
    return (ssize_t)pos;

incomplete:
    if (build) {
        for (size_t i = st->noff; i < st->got; i++)
            if (has_text(st->nodes[i].type))
                st->nodes[i].p = TO_OFF(st->nodes[i].p, buf);
        st->noff = st->got;
    }
    st->pos = pos;
    st->scan = scan;
    st->depth = depth;
    st->bulklen = blen;
    st->examined += seen;
    return KT_RESP_INCOMPLETE;

error:
    st->examined += seen;
    kt_resp_reply_reset(st);
    return fail(err, why);
}

ssize_t kt_resp_parse_reply(const char *buf, size_t len, const kt_resp_limits *lim,
                            kt_resp_reply *out, const char **err)
{
    return parse_reply(buf, len, lim ? lim : &kt_resp_default_limits, out, true, err);
}

ssize_t kt_resp_reply_len(const char *buf, size_t len, const kt_resp_limits *lim,
                          kt_resp_reply *st, const char **err)
{
    return parse_reply(buf, len, lim ? lim : &kt_resp_default_limits, st, false, err);
}

void kt_resp_reply_trim(kt_resp_reply *r, size_t keep)
{
    if (r->state != REP_IDLE || r->cap * sizeof(*r->nodes) <= keep)
        return;
    kt_free(r->nodes);
    r->nodes = NULL;
    r->count = r->cap = 0;
}

void kt_resp_reply_free(kt_resp_reply *r)
{
    kt_free(r->nodes);
    memset(r, 0, sizeof(*r));
}
