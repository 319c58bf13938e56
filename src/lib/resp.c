/*
 * resp.c - the RESP2 request parser over the caller's buffer, resuming
 * where the last call stopped (the reply parser is in resp-reply.c, the
 * encoder in resp-encode.c).
 *
 * A connection's kt_resp_req keeps a parse's place between calls, as
 * Redis's processMultibulkBuffer() keeps multibulklen and bulklen: the
 * bytes taken (the count line, whole arguments), how far the current line
 * was searched for its end, the arguments still to come and the length of
 * the one whose data is awaited; an inline line, how far its newline search
 * went. Arguments of an incomplete request are kept as offsets from its
 * start (the buffer may move before the next call) and become pointers
 * again when it completes; a request parsed in one call never takes that
 * path.
 */
#include "config.h"
#include "resp-int.h"

const kt_resp_limits kt_resp_default_limits = {
    .max_inline = 64 * 1024,
    .max_bulk = (size_t)512 * 1024 * 1024,
    .max_args = 1024 * 1024,
    .max_depth = 32,
};

/* kt_resp_req.state */
enum { REQ_IDLE = 0, REQ_COUNT, REQ_ARGS, REQ_INLINE };

/* Redis answers "expected '$', got '%c'" with the offending byte; one
 * static string per byte keeps *err a static string. (A NUL byte cuts the
 * text short, as it does in Redis's reply.) */
#define EXP1(c) { 'e', 'x', 'p', 'e', 'c', 't', 'e', 'd', ' ', '\'', '$', '\'', ',', ' ', \
                  'g', 'o', 't', ' ', '\'', (char)(c), '\'', '\0' }
#define EXP4(c) EXP1(c), EXP1((c) + 1), EXP1((c) + 2), EXP1((c) + 3)
#define EXP16(c) EXP4(c), EXP4((c) + 4), EXP4((c) + 8), EXP4((c) + 12)
#define EXP64(c) EXP16(c), EXP16((c) + 16), EXP16((c) + 32), EXP16((c) + 48)
static const char expected_dollar[256][22] = { EXP64(0), EXP64(64), EXP64(128), EXP64(192) };

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

/* A request is complete at buf. One that was incomplete before has its
 * arguments kept as offsets made pointers again, and its place forgotten
 * (req->state is set only between calls, while a request is incomplete). */
static ssize_t req_done(const char *buf, kt_resp_req *req, size_t pos)
{
    if (req->state != REQ_IDLE) {
        for (size_t i = 0; i < req->noff; i++)
            req->argv[i].p = TO_PTR(req->argv[i].p, buf);
        req->noff = req->pos = req->scan = 0;
        req->state = REQ_IDLE;
    }
    req->argc = req->got;
    req->got = 0;
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
    int phase = req->state == REQ_ARGS ? REQ_ARGS : REQ_COUNT;
    const char *why;
    ssize_t k;

    if (phase == REQ_COUNT) {
        int64_t n;
        k = find_crlf(buf, len, KT_RESP_MAX_HEADER, &scan, &seen);
        if (k < 0) {
            if (k == KT_RESP_INCOMPLETE)
                goto incomplete;
            why = "too big mbulk count string";
            goto error;
        }
        /* Redis skips the byte after \r unseen; we insist on \n. */
        if (buf[k + 1] != '\n' || !parse_ll(buf + 1, (size_t)k - 1, &n) ||
            (n > 0 && (uint64_t)n > lim->max_args)) {
            why = "invalid multibulk length";
            goto error;
        }
        pos = (size_t)k + 2;
        scan = 0;
        if (n <= 0) {
            req->examined += seen;
            return req_done(buf, req, pos); /* "*0", "*-1": nothing to run */
        }
        left = (uint64_t)n;
        blen = -1;
        phase = REQ_ARGS;
    }

    /* argv grows with the arguments actually received, not with the
     * announced count: "*1048576\r\n" alone costs nothing. */
    while (left > 0) {
        size_t avail;
        if (blen < 0) {
            const char *h = buf + pos;
            uint64_t u;
            k = find_crlf(h, len - pos, KT_RESP_MAX_HEADER, &scan, &seen);
            if (k < 0) {
                if (k == KT_RESP_INCOMPLETE)
                    goto incomplete;
                why = "too big bulk count string";
                goto error;
            }
            if (h[0] != '$') {
                why = expected_dollar[(unsigned char)h[0]];
                goto error;
            }
            if (h[k + 1] != '\n' || !parse_digits(h + 1, (size_t)k - 1, &u) ||
                u > lim->max_bulk || u > (uint64_t)INT64_MAX)
                goto bad_bulk;
            blen = (int64_t)u;
            pos += (size_t)k + 2;
            scan = 0;
        }
        /* The data must be followed by \r\n, else the length was a lie. */
        avail = len - pos;
        if (avail < (uint64_t)blen + 2) {
            if (bulk_short(buf + pos, avail, (size_t)blen) == KT_RESP_INCOMPLETE)
                goto incomplete;
            goto bad_bulk;
        }
        if (buf[pos + (size_t)blen] != '\r' || buf[pos + (size_t)blen + 1] != '\n')
            goto bad_bulk;
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
    req->state = phase;
    req->argc = 0;
    req->examined += seen;
    return KT_RESP_INCOMPLETE;

bad_bulk:
    why = "invalid bulk length";
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
        req->state = REQ_INLINE;
        req->argc = 0;
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
    /* Fewer bytes than were taken: not the message we were in. */
    if (req->state != REQ_IDLE && len < req->pos + req->scan)
        kt_resp_req_reset(req);
    if (req->state == REQ_IDLE && len == 0) {
        req->argc = 0;
        return KT_RESP_INCOMPLETE;
    }
    /* Redis's rule: a request starting with '*' is multibulk, any other
     * is an inline command (an incomplete one keeps its kind). */
    if (req->state == REQ_INLINE || (req->state == REQ_IDLE && buf[0] != '*'))
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
