/*
 * validate.c - reply checks for kettle-bench (see validate.h).
 *
 * A value matches when its bytes equal the key's, or when both are
 * integers of equal value (a database may answer GET 007 with 7). A GET
 * whose key is not an integer has no known answer: any non-error reply
 * passes. An error element in an array (kettled answers an MGET whose
 * fetch of one key failed with an error in that key's place) is a partial
 * reply, not a mismatch.
 */
#include "config.h"
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <kettle/common.h>
#include "validate.h"

static bool same_value(const char *want, size_t wlen, const kt_resp_node *nd)
{
    if (nd->type != KT_RESP_BULK)
        return false;
    if (nd->len == wlen && memcmp(nd->p, want, wlen) == 0)
        return true;
    int64_t a, b;
    return kt_parse_i64(want, wlen, &a) == 0 && kt_parse_i64(nd->p, nd->len, &b) == 0 && a == b;
}

/* Is the expected key an integer (so that its value is known)? */
static bool known(const char *want, size_t wlen)
{
    int64_t v;
    return kt_parse_i64(want, wlen, &v) == 0;
}

/* Does an array reply hold an error element, at any depth? */
static bool has_error_element(const kt_resp_reply *r)
{
    for (size_t i = 1; i < r->count; i++)
        if (r->nodes[i].type == KT_RESP_ERROR_REPLY)
            return true;
    return false;
}

kb_verdict kb_validate(const kb_template *t, const uint64_t *vals, const kt_resp_reply *r,
                       char *scratch)
{
    const kt_resp_node *top = &r->nodes[0];
    size_t n;

    if (top->type == KT_RESP_ERROR_REPLY)
        return KB_V_ERROR;
    switch (t->check) {
    case KB_CHECK_NONE:
        return top->type == KT_RESP_ARRAY && has_error_element(r) ? KB_V_PARTIAL : KB_V_OK;
    case KB_CHECK_PONG:
        return (top->type == KT_RESP_STRING || top->type == KT_RESP_BULK) && top->len == 4 &&
               memcmp(top->p, "PONG", 4) == 0 ? KB_V_OK : KB_V_MISMATCH;
    case KB_CHECK_ECHO:
        n = kb_render_arg(t, 1, vals, scratch);
        return top->type == KT_RESP_BULK && top->len == n && memcmp(top->p, scratch, n) == 0
               ? KB_V_OK : KB_V_MISMATCH;
    case KB_CHECK_GET:
        n = kb_render_arg(t, 1, vals, scratch);
        if (!known(scratch, n))
            return KB_V_OK;
        return same_value(scratch, n, top) ? KB_V_OK : KB_V_MISMATCH;
    case KB_CHECK_MGET:
        /* the top node and its argc - 1 scalar elements, in preorder */
        if (top->type != KT_RESP_ARRAY || top->n != t->argc - 1 || r->count != t->argc)
            return KB_V_MISMATCH;
        bool partial = false;
        for (size_t i = 1; i < t->argc; i++) {
            if (r->nodes[i].type == KT_RESP_ERROR_REPLY) {
                partial = true; /* a failed fetch, not a wrong value */
                continue;
            }
            n = kb_render_arg(t, i, vals, scratch);
            if (known(scratch, n) && !same_value(scratch, n, &r->nodes[i]))
                return KB_V_MISMATCH;
        }
        return partial ? KB_V_PARTIAL : KB_V_OK;
    }
    return KB_V_OK;
}

/* Append s (printable, shortened) to buf at *off. */
static void add(char *buf, size_t size, size_t *off, const char *s, size_t len)
{
    for (size_t i = 0; i < len && *off + 5 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= 40) {
            memcpy(buf + *off, "...", 3);
            *off += 3;
            break;
        }
        buf[(*off)++] = isprint(c) ? (char)c : '?';
    }
    buf[*off] = '\0';
}

static void add_node(char *buf, size_t size, size_t *off, const kt_resp_node *nd)
{
    char tmp[48];
    switch (nd->type) {
    case KT_RESP_BULK:
        add(buf, size, off, "\"", 1);
        add(buf, size, off, nd->p, nd->len);
        add(buf, size, off, "\"", 1);
        break;
    case KT_RESP_STRING:
    case KT_RESP_ERROR_REPLY:
        add(buf, size, off, nd->type == KT_RESP_STRING ? "+" : "-", 1);
        add(buf, size, off, nd->p, nd->len);
        break;
    case KT_RESP_INTEGER:
        snprintf(tmp, sizeof(tmp), "(integer) %lld", (long long)nd->i);
        add(buf, size, off, tmp, strlen(tmp));
        break;
    case KT_RESP_NIL:
        add(buf, size, off, "(nil)", 5);
        break;
    case KT_RESP_ARRAY:
        snprintf(tmp, sizeof(tmp), "(array of %zu)", nd->n);
        add(buf, size, off, tmp, strlen(tmp));
        break;
    default:
        break;
    }
}

const char *kb_describe(const kb_template *t, const uint64_t *vals, const kt_resp_reply *r,
                        char *scratch, char *buf, size_t size)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < t->argc && i < 8; i++) {
        size_t n = kb_render_arg(t, i, vals, scratch);
        if (i > 0)
            add(buf, size, &off, " ", 1);
        add(buf, size, &off, scratch, n);
    }
    add(buf, size, &off, " -> ", 4);
    const kt_resp_node *top = &r->nodes[0];
    add_node(buf, size, &off, top);
    if (top->type == KT_RESP_ARRAY) {
        add(buf, size, &off, " [", 2);
        for (size_t i = 1; i < r->count && i <= 8; i++) {
            if (i > 1)
                add(buf, size, &off, " ", 1);
            add_node(buf, size, &off, &r->nodes[i]);
        }
        add(buf, size, &off, "]", 1);
    }
    return buf;
}
