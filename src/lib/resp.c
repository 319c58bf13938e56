/*
 * resp.c - the RESP2 parsers: requests and replies over the caller's
 * buffer (stateless, in picohttpparser's shape). The encoder is in
 * resp-encode.c.
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

/*
 * The line at p (avail bytes, type byte included) must end in \r with at
 * most bound bytes before it. Returns the length before the \r once the
 * byte after it is there too (the caller checks that it is \n),
 * KT_RESP_INCOMPLETE, or LINE_TOO_LONG once more than bound bytes have no
 * \r among them.
 */
static inline ssize_t find_crlf(const char *p, size_t avail, size_t bound)
{
    size_t win = avail <= bound ? avail : bound + 1, i = 0;
    const char *cr;

    /* Header lines are a few bytes: a plain loop beats a call to memchr. */
    if (bound <= KT_RESP_MAX_HEADER) {
        while (i < win && p[i] != '\r')
            i++;
        cr = i < win ? p + i : NULL;
    } else {
        cr = memchr(p, '\r', win);
    }

    if (cr == NULL)
        return avail > bound ? LINE_TOO_LONG : KT_RESP_INCOMPLETE;
    if ((size_t)(cr - p) + 1 >= avail)
        return KT_RESP_INCOMPLETE;
    return cr - p;
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
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return false;
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)v;
    }
    return true;
}

/* ---- requests ------------------------------------------------------------ */

static int grow_argv(kt_resp_req *req)
{
    size_t ncap = req->cap ? req->cap * 2 : 8;
    kt_resp_arg *a;

    if (ncap > SIZE_MAX / sizeof(*a))
        return -ENOMEM;
    a = kt_realloc(req->argv, ncap * sizeof(*a));
    if (a == NULL)
        return -ENOMEM;
    req->argv = a;
    req->cap = ncap;
    return 0;
}

static inline int push_arg(kt_resp_req *req, const char *p, size_t len)
{
    if (req->argc == req->cap && grow_argv(req) < 0)
        return -ENOMEM;
    req->argv[req->argc].p = p;
    req->argv[req->argc].len = len;
    req->argc++;
    return 0;
}

static ssize_t parse_multibulk(const char *buf, size_t len, const kt_resp_limits *lim,
                               kt_resp_req *req, const char **err)
{
    ssize_t k = find_crlf(buf, len, KT_RESP_MAX_HEADER);
    int64_t n, blen;
    size_t pos;

    if (k == KT_RESP_INCOMPLETE)
        return k;
    if (k == LINE_TOO_LONG)
        return fail(err, "too big mbulk count string");
    /* Redis skips the byte after \r unseen; we insist on \n. */
    if (buf[k + 1] != '\n' || !parse_ll(buf + 1, (size_t)k - 1, &n) ||
        (n > 0 && (uint64_t)n > lim->max_args))
        return fail(err, "invalid multibulk length");
    pos = (size_t)k + 2;
    if (n <= 0)
        return (ssize_t)pos; /* "*0", "*-1": nothing to run */

    /* argv grows with the arguments actually received, not with the
     * announced count: "*1048576\r\n" alone costs nothing. */
    for (int64_t i = 0; i < n; i++) {
        size_t avail;

        k = find_crlf(buf + pos, len - pos, KT_RESP_MAX_HEADER);
        if (k == KT_RESP_INCOMPLETE)
            return k;
        if (k == LINE_TOO_LONG)
            return fail(err, "too big bulk count string");
        if (buf[pos] != '$')
            return fail(err, expected_dollar[(unsigned char)buf[pos]]);
        if (buf[pos + (size_t)k + 1] != '\n' || !parse_ll(buf + pos + 1, (size_t)k - 1, &blen) ||
            blen < 0 || (uint64_t)blen > lim->max_bulk)
            return fail(err, "invalid bulk length");
        pos += (size_t)k + 2;
        avail = len - pos;
        if (avail < (uint64_t)blen)
            return KT_RESP_INCOMPLETE;
        /* The data must be followed by \r\n, else the length was a lie. */
        avail -= (size_t)blen;
        if ((avail >= 1 && buf[pos + (size_t)blen] != '\r') ||
            (avail >= 2 && buf[pos + (size_t)blen + 1] != '\n'))
            return fail(err, "invalid bulk length");
        if (avail < 2)
            return KT_RESP_INCOMPLETE;
        if (push_arg(req, buf + pos, (size_t)blen) < 0)
            return fail(err, "out of memory");
        pos += (size_t)blen + 2;
    }
    return (ssize_t)pos;
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
    size_t max = lim->max_inline, win = len, n;
    const char *nl;
    ssize_t r;

    /* A line of max bytes, its \r and its \n: look no further. */
    if (max < SIZE_MAX - 2 && win > max + 2)
        win = max + 2;
    nl = memchr(buf, '\n', win);
    if (nl == NULL) {
        /* The line is at least this long, whatever comes next (a final
         * \r may be the one dropped before \n). */
        n = win - (buf[win - 1] == '\r');
        return n > max ? fail(err, "too big inline request") : KT_RESP_INCOMPLETE;
    }
    n = (size_t)(nl - buf);
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n > max)
        return fail(err, "too big inline request");
    r = split_inline(buf, n, req, err);
    return r < 0 ? r : nl - buf + 1;
}

ssize_t kt_resp_parse_request(const char *buf, size_t len, const kt_resp_limits *lim,
                              kt_resp_req *req, const char **err)
{
    ssize_t r;

    if (lim == NULL)
        lim = &kt_resp_default_limits;
    req->argc = 0;
    if (len == 0)
        return KT_RESP_INCOMPLETE;
    /* Redis's rule: a request starting with '*' is multibulk, any other
     * is an inline command. */
    if (buf[0] == '*')
        r = parse_multibulk(buf, len, lim, req, err);
    else
        r = parse_inline(buf, len, lim, req, err);
    if (r <= 0)
        req->argc = 0;
    return r;
}

void kt_resp_req_free(kt_resp_req *req)
{
    kt_free(req->argv);
    kt_free(req->scratch);
    memset(req, 0, sizeof(*req));
}

/* ---- replies ------------------------------------------------------------- */

static kt_resp_node *push_node(kt_resp_reply *out)
{
    if (out->count == out->cap) {
        size_t ncap = out->cap ? out->cap * 2 : 8;
        kt_resp_node *nodes;
        if (ncap > SIZE_MAX / sizeof(*nodes))
            return NULL;
        nodes = kt_realloc(out->nodes, ncap * sizeof(*nodes));
        if (nodes == NULL)
            return NULL;
        out->nodes = nodes;
        out->cap = ncap;
    }
    return &out->nodes[out->count++];
}

/*
 * Both reply entry points. Nesting is followed without recursion: left[d]
 * counts the elements still to come in the array open at depth d; a value
 * that completes decrements its parent, and an array whose count reaches
 * zero completes in turn. out NULL only measures.
 */
static ssize_t parse_reply(const char *buf, size_t len, const kt_resp_limits *lim,
                           kt_resp_reply *out, const char **err)
{
    int64_t left[KT_RESP_MAX_DEPTH];
    size_t depth = 0, pos = 0;
    size_t max_depth = lim->max_depth < KT_RESP_MAX_DEPTH ? lim->max_depth : KT_RESP_MAX_DEPTH;

    if (out)
        out->count = 0;
    for (;;) {
        kt_resp_node nd = { 0, NULL, 0, 0, 0 };
        const char *p = buf + pos;
        size_t avail = len - pos;
        ssize_t k;
        int64_t v = 0;
        char t;

        if (avail == 0)
            return KT_RESP_INCOMPLETE;
        t = p[0];
        if (t != '+' && t != '-' && t != ':' && t != '$' && t != '*')
            return fail(err, "invalid reply type byte");
        k = find_crlf(p, avail, t == '+' || t == '-' ? lim->max_inline : KT_RESP_MAX_HEADER);
        if (k == KT_RESP_INCOMPLETE)
            return k;
        if (k == LINE_TOO_LONG) {
            return fail(err, t == '$' ? "too big bulk count string"
                           : t == '*' ? "too big mbulk count string"
                           : t == ':' ? "invalid integer" : "too big simple string");
        }
        if (p[k + 1] != '\n')
            return fail(err, "expected CRLF");
        pos += (size_t)k + 2;
        nd.type = t;

        switch (t) {
        case '+':
        case '-':
            nd.p = p + 1;
            nd.len = (size_t)k - 1;
            break;
        case ':':
            if (!parse_ll(p + 1, (size_t)k - 1, &nd.i))
                return fail(err, "invalid integer");
            nd.p = p + 1;
            nd.len = (size_t)k - 1;
            break;
        case '$':
            if (!parse_ll(p + 1, (size_t)k - 1, &v) || v < -1 || (v > 0 && (uint64_t)v > lim->max_bulk))
                return fail(err, "invalid bulk length");
            if (v == -1) {
                nd.type = KT_RESP_NIL;
                nd.i = '$';
                break;
            }
            avail = len - pos;
            if (avail < (uint64_t)v)
                return KT_RESP_INCOMPLETE;
            avail -= (size_t)v;
            if ((avail >= 1 && buf[pos + (size_t)v] != '\r') ||
                (avail >= 2 && buf[pos + (size_t)v + 1] != '\n'))
                return fail(err, "invalid bulk length");
            if (avail < 2)
                return KT_RESP_INCOMPLETE;
            nd.p = buf + pos;
            nd.len = (size_t)v;
            pos += (size_t)v + 2;
            break;
        default: /* '*' */
            if (!parse_ll(p + 1, (size_t)k - 1, &v) || v < -1 || (v > 0 && (uint64_t)v > lim->max_args))
                return fail(err, "invalid multibulk length");
            if (v == -1) {
                nd.type = KT_RESP_NIL;
                nd.i = '*';
                break;
            }
            if (depth >= max_depth)
                return fail(err, "reply nested too deeply");
            nd.n = (size_t)v;
            break;
        }

        if (out) {
            kt_resp_node *slot = push_node(out);
            if (slot == NULL)
                return fail(err, "out of memory");
            *slot = nd;
        }
        if (nd.type == KT_RESP_ARRAY && nd.n > 0) {
            left[depth++] = (int64_t)nd.n;
            continue;
        }
        /* A value completed: close every array it completes. */
        while (depth > 0 && --left[depth - 1] == 0)
            depth--;
        if (depth == 0)
            return (ssize_t)pos;
    }
}

ssize_t kt_resp_parse_reply(const char *buf, size_t len, const kt_resp_limits *lim,
                            kt_resp_reply *out, const char **err)
{
    ssize_t r = parse_reply(buf, len, lim ? lim : &kt_resp_default_limits, out, err);
    if (r <= 0)
        out->count = 0;
    return r;
}

ssize_t kt_resp_reply_len(const char *buf, size_t len, const kt_resp_limits *lim,
                          const char **err)
{
    return parse_reply(buf, len, lim ? lim : &kt_resp_default_limits, NULL, err);
}

void kt_resp_reply_free(kt_resp_reply *out)
{
    kt_free(out->nodes);
    memset(out, 0, sizeof(*out));
}
