/*
 * resp-reply.c - the RESP2 reply parser over the caller's buffer, resuming
 * where the last call stopped, and its measuring twin kt_resp_reply_len().
 *
 * A connection's kt_resp_reply keeps a parse's place between calls: the
 * bytes taken (whole values, array headers), how far the current line was
 * searched for its end, the length of a bulk whose data is awaited, and a
 * stack of the elements still to come in each open array. Nodes of an
 * incomplete reply hold offsets from its start (the buffer may move before
 * the next call) and become pointers again when it completes.
 */
#include "config.h"
#include "resp-int.h"

/* kt_resp_reply.state */
enum { REP_IDLE = 0, REP_BUILD, REP_MEASURE };

/* A length or a count: "-1", or digits within int64_t (the callers refuse
 * every other negative as they refuse a malformed length). */
static inline bool parse_len(const char *s, size_t n, int64_t *out)
{
    uint64_t v;

    if (parse_digits(s, n, &v)) {
        *out = v <= (uint64_t)INT64_MAX ? (int64_t)v : 0;
        return v <= (uint64_t)INT64_MAX;
    }
    *out = -1;
    return n == 2 && s[0] == '-' && s[1] == '1';
}

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

/* Reply type bytes: 1 a line of text ('+', '-'), 2 a number (':', '$', '*'),
 * 0 not a type. */
static const unsigned char reply_line[256] = {
    ['+'] = 1, ['-'] = 1, [':'] = 2, ['$'] = 2, ['*'] = 2,
};

/*
 * Both reply entry points; build false only measures. Nesting is followed
 * without recursion: st->left[d] counts the elements still to come in the
 * array open at depth d; a value that completes decrements its parent,
 * and an array whose count reaches zero completes in turn. A '$' header
 * sets blen and the data is taken after it, where a call that stopped
 * between the two resumes.
 */
static ssize_t parse_reply(const char *buf, size_t len, const kt_resp_limits *lim,
                           kt_resp_reply *st, bool build, const char **err)
{
    size_t pos = 0, scan = 0, depth = 0;
    int64_t blen = -1;
    uint64_t seen = 0;
    const char *why;

    /* st->state is set only between calls, while a reply is incomplete. */
    if (st->state != REP_IDLE) {
        /* Fewer bytes than were taken: not the reply we were in. A reply
         * measured so far has no nodes to build on: start it again. */
        if (len < st->pos + st->scan || (build && st->state == REP_MEASURE)) {
            kt_resp_reply_reset(st);
        } else {
            pos = st->pos;
            scan = st->scan;
            depth = st->depth;
            blen = st->bulklen;
            seen = scan > 0; /* a line begun earlier: its type byte again */
        }
    }

    for (;;) {
        kt_resp_node nd = { 0, NULL, 0, 0, 0 };

        if (blen < 0) {
            const char *p = buf + pos;
            size_t avail = len - pos;
            ssize_t k;
            int64_t v = 0;
            char t;

            if (avail == 0)
                goto incomplete;
            t = p[0];
            if (reply_line[(unsigned char)t] == 0) {
                why = "invalid reply type byte";
                goto error;
            }
            k = find_crlf(p, avail, reply_line[(unsigned char)t] == 1 ? lim->max_inline
                                                                      : KT_RESP_MAX_HEADER,
                          &scan, &seen);
            if (k < 0) {
                if (k == KT_RESP_INCOMPLETE)
                    goto incomplete;
                why = t == '$' ? "too big bulk count string"
                    : t == '*' ? "too big mbulk count string"
                    : t == ':' ? "invalid integer" : "too big simple string";
                goto error;
            }
            if (p[k + 1] != '\n') {
                why = "expected CRLF";
                goto error;
            }
            pos += (size_t)k + 2;
            scan = 0;
            nd.type = t;

            switch (t) {
            case ':':
                if (!parse_ll(p + 1, (size_t)k - 1, &nd.i)) {
                    why = "invalid integer";
                    goto error;
                }
                /* fall through */
            case '+':
            case '-':
                nd.p = p + 1;
                nd.len = (size_t)k - 1;
                break;
            case '$':
                if (!parse_len(p + 1, (size_t)k - 1, &v) || (v > 0 && (uint64_t)v > lim->max_bulk))
                    goto bad_bulk;
                if (v >= 0) {
                    blen = v; /* the data follows */
                    break;
                }
                nd.type = KT_RESP_NIL;
                nd.i = '$';
                break;
            default: /* '*' */
                if (!parse_len(p + 1, (size_t)k - 1, &v) || (v > 0 && (uint64_t)v > lim->max_args)) {
                    why = "invalid multibulk length";
                    goto error;
                }
                if (v == -1) {
                    nd.type = KT_RESP_NIL;
                    nd.i = '*';
                } else if (depth >= lim->max_depth || depth >= KT_RESP_MAX_DEPTH) {
                    why = "reply nested too deeply";
                    goto error;
                } else {
                    nd.n = (size_t)v;
                }
                break;
            }
        }

        if (blen >= 0) {
            /* A bulk's data, followed by \r\n, else the length was a lie. */
            size_t avail = len - pos;
            if (avail < (uint64_t)blen + 2) {
                if (bulk_short(buf + pos, avail, (size_t)blen) == KT_RESP_INCOMPLETE)
                    goto incomplete;
                goto bad_bulk;
            }
            if (buf[pos + (size_t)blen] != '\r' || buf[pos + (size_t)blen + 1] != '\n')
                goto bad_bulk;
            nd.type = KT_RESP_BULK;
            nd.p = buf + pos;
            nd.len = (size_t)blen;
            pos += (size_t)blen + 2;
            blen = -1;
        }

        if (build) {
            kt_resp_node *slot = push_node(st);
            if (slot == NULL) {
                why = "out of memory";
                goto error;
            }
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

    /* Complete. A reply that was incomplete before has its nodes kept as
     * offsets made pointers again, and its place forgotten. */
    if (st->state != REP_IDLE) {
        for (size_t i = 0; build && i < st->noff; i++)
            if (has_text(st->nodes[i].type))
                st->nodes[i].p = TO_PTR(st->nodes[i].p, buf);
        st->pos = st->scan = st->noff = st->depth = 0;
        st->state = REP_IDLE;
    }
    st->count = build ? st->got : 0;
    st->got = 0;
    st->examined += seen;
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
    st->state = build ? REP_BUILD : REP_MEASURE;
    st->count = 0;
    st->examined += seen;
    return KT_RESP_INCOMPLETE;

bad_bulk:
    why = "invalid bulk length";
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
