/*
 * format.c - redis-cli's reply formats (see format.h), built over the
 * flat preorder node array of kt_resp_parse_reply.
 */
#include "config.h"
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "format.h"

static int put(kt_buf *out, const char *s, size_t n)
{
    return kt_buf_append(out, s, n);
}

static int puts_(kt_buf *out, const char *s)
{
    return kt_buf_append(out, s, strlen(s));
}

int kc_format_quoted(kt_buf *out, const char *s, size_t len)
{
    int rc = put(out, "\"", 1);
    for (size_t i = 0; i < len && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[5];
        switch (c) {
        case '\\': rc = put(out, "\\\\", 2); break;
        case '"': rc = put(out, "\\\"", 2); break;
        case '\n': rc = put(out, "\\n", 2); break;
        case '\r': rc = put(out, "\\r", 2); break;
        case '\t': rc = put(out, "\\t", 2); break;
        case '\a': rc = put(out, "\\a", 2); break;
        case '\b': rc = put(out, "\\b", 2); break;
        default:
            if (isprint(c)) {
                rc = put(out, (const char *)&s[i], 1);
            } else {
                snprintf(esc, sizeof(esc), "\\x%02x", c);
                rc = put(out, esc, 4);
            }
        }
    }
    return rc ? rc : put(out, "\"", 1);
}

/* Standard form of the node at *i (and its elements); prefix is the
 * indentation of an element's continuation lines. */
static int fmt_std(kt_buf *out, const kt_resp_reply *r, size_t *i, kt_buf *prefix)
{
    const kt_resp_node *nd = &r->nodes[(*i)++];
    int rc = 0;
    char num[32];

    switch (nd->type) {
    case KT_RESP_ERROR_REPLY:
        rc = puts_(out, "(error) ");
        if (rc == 0)
            rc = put(out, nd->p, nd->len);
        break;
    case KT_RESP_STRING:
        rc = put(out, nd->p, nd->len);
        break;
    case KT_RESP_INTEGER:
        snprintf(num, sizeof(num), "(integer) %lld", (long long)nd->i);
        rc = puts_(out, num);
        break;
    case KT_RESP_BULK:
        rc = kc_format_quoted(out, nd->p, nd->len);
        break;
    case KT_RESP_NIL:
        rc = puts_(out, "(nil)");
        break;
    case KT_RESP_ARRAY: {
        if (nd->n == 0) {
            rc = puts_(out, "(empty array)");
            break;
        }
        unsigned width = 0;
        for (size_t v = nd->n; v != 0; v /= 10)
            width++;
        /* elements' continuation lines line up after "NN) " */
        size_t saved = prefix->len;
        for (unsigned k = 0; k < width + 2 && rc == 0; k++)
            rc = put(prefix, " ", 1);
        for (size_t e = 0; e < nd->n && rc == 0; e++) {
            if (e > 0)
                rc = put(out, prefix->data, saved);
            snprintf(num, sizeof(num), "%*zu) ", (int)width, e + 1);
            if (rc == 0)
                rc = puts_(out, num);
            if (rc == 0)
                rc = fmt_std(out, r, i, prefix);
        }
        prefix->len = saved;
        return rc; /* each element ended its own line */
    }
    default:
        rc = puts_(out, "(unknown reply type)");
        break;
    }
    return rc ? rc : put(out, "\n", 1);
}

/* Raw form of the node at *i, without the final newline. */
static int fmt_raw(kt_buf *out, const kt_resp_reply *r, size_t *i)
{
    const kt_resp_node *nd = &r->nodes[(*i)++];
    int rc = 0;
    char num[24];

    switch (nd->type) {
    case KT_RESP_ERROR_REPLY:
        rc = put(out, nd->p, nd->len);
        if (rc == 0)
            rc = put(out, "\n", 1);
        break;
    case KT_RESP_STRING:
    case KT_RESP_BULK:
        rc = put(out, nd->p, nd->len);
        break;
    case KT_RESP_INTEGER:
        snprintf(num, sizeof(num), "%lld", (long long)nd->i);
        rc = puts_(out, num);
        break;
    case KT_RESP_NIL:
        break;
    case KT_RESP_ARRAY:
        for (size_t e = 0; e < nd->n && rc == 0; e++) {
            if (e > 0)
                rc = put(out, "\n", 1);
            if (rc == 0)
                rc = fmt_raw(out, r, i);
        }
        break;
    default:
        break;
    }
    return rc;
}

/* Commands whose reply is text to read, with the subcommand that makes
 * it so (NULL: any). */
static const struct { const char *cmd, *sub; } text_commands[] = {
    { "info", NULL }, { "lolwut", NULL },
    { "client", "list" }, { "client", "info" },
    { "cluster", "nodes" }, { "cluster", "info" },
    { "memory", "doctor" }, { "memory", "malloc-stats" },
    { "latency", "doctor" }, { "latency", "graph" },
    { "debug", "htstats" }, { "debug", "htstats-key" },
};

bool kc_text_command(size_t argc, char *const *argv)
{
    for (size_t i = 0; argc > 0 && i < sizeof(text_commands) / sizeof(text_commands[0]); i++) {
        if (strcasecmp(argv[0], text_commands[i].cmd) != 0)
            continue;
        if (text_commands[i].sub == NULL)
            return true;
        if (argc >= 2 && strcasecmp(argv[1], text_commands[i].sub) == 0)
            return true;
    }
    return false;
}

int kc_format_reply(kt_buf *out, const kt_resp_reply *r, int form)
{
    size_t i = 0;
    if (r->count == 0)
        return 0;
    const kt_resp_node *top = &r->nodes[0];
    if (form == KC_FORM_TEXT && (top->type == KT_RESP_BULK || top->type == KT_RESP_STRING)) {
        int rc = put(out, top->p, top->len);
        /* as redis-cli: an empty text prints nothing; ours ends a last line */
        if (rc == 0 && top->len > 0 && top->p[top->len - 1] != '\n')
            rc = put(out, "\n", 1);
        return rc;
    }
    if (form == KC_FORM_RAW) {
        int rc = fmt_raw(out, r, &i);
        return rc ? rc : put(out, "\n", 1);
    }
    kt_buf prefix = { 0 };
    /* an empty prefix still needs a buffer for put(prefix->data, 0) */
    int rc = kt_buf_reserve(&prefix, 64) ? 0 : -ENOMEM;
    if (rc == 0)
        rc = fmt_std(out, r, &i, &prefix);
    kt_buf_free(&prefix);
    return rc;
}
