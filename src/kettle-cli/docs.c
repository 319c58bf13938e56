/*
 * docs.c - COMMAND DOCS read into a table, and `help` (see docs.h).
 *
 * In RESP2 the reply is a flat array of name, docs pairs; each docs is a
 * map sent as an array of key, value pairs (summary, since, group,
 * arguments, subcommands, ...). kt_resp_parse_reply gives the nodes in
 * preorder, so walking it means skipping whole subtrees (skip()).
 *
 * The arguments' syntax is built as the Redis documentation writes it:
 * `[optional]`, `name [name ...]` for multiple, `TOKEN value`, `a | b` for
 * one of, `<a | b>` when one of them is required.
 */
#include "config.h"
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <kettle/common.h>
#include "docs.h"

/* Index just past the value at i and its elements. */
static size_t skip(const kt_resp_reply *r, size_t i)
{
    size_t todo = 1;
    while (todo > 0 && i < r->count) {
        if (r->nodes[i].type == KT_RESP_ARRAY)
            todo += r->nodes[i].n;
        todo--;
        i++;
    }
    return i;
}

static bool is_text(const kt_resp_node *nd)
{
    return nd->type == KT_RESP_BULK || nd->type == KT_RESP_STRING;
}

static bool text_is(const kt_resp_node *nd, const char *s)
{
    return is_text(nd) && nd->len == strlen(s) && strncasecmp(nd->p, s, nd->len) == 0;
}

/* The value of key in the map at m (an array of key, value pairs), or 0. */
static size_t map_get(const kt_resp_reply *r, size_t m, const char *key)
{
    if (m == 0 || m >= r->count || r->nodes[m].type != KT_RESP_ARRAY)
        return 0;
    size_t i = m + 1;
    for (size_t k = 0; k + 1 < r->nodes[m].n; k += 2) {
        size_t v = skip(r, i);
        if (v < r->count && text_is(&r->nodes[i], key))
            return v;
        i = skip(r, v);
    }
    return 0;
}

/* kt_malloc'd copy of the text at i ("" when absent or not text). */
static char *text_at(const kt_resp_reply *r, size_t i)
{
    if (i == 0 || i >= r->count || !is_text(&r->nodes[i]))
        return kt_strdup("");
    return kt_strndup(r->nodes[i].p, r->nodes[i].len);
}

static int add(kt_buf *b, const char *s, size_t n)
{
    return kt_buf_append(b, s, n);
}

static int adds(kt_buf *b, const char *s)
{
    return kt_buf_append(b, s, strlen(s));
}

/* Has the arg map at a the flag? */
static bool has_flag(const kt_resp_reply *r, size_t a, const char *flag)
{
    size_t f = map_get(r, a, "flags");
    if (f == 0 || r->nodes[f].type != KT_RESP_ARRAY)
        return false;
    for (size_t k = 0, i = f + 1; k < r->nodes[f].n; k++, i = skip(r, i))
        if (text_is(&r->nodes[i], flag))
            return true;
    return false;
}

static int syntax_list(kt_buf *b, const kt_resp_reply *r, size_t list, const char *sep, int depth);

/* The syntax of one argument (the map at a) into b. */
static int syntax_arg(kt_buf *b, const kt_resp_reply *r, size_t a, int depth)
{
    size_t type = map_get(r, a, "type"), token = map_get(r, a, "token");
    size_t name = map_get(r, a, "display_text");
    bool oneof = type && text_is(&r->nodes[type], "oneof");
    bool block = type && text_is(&r->nodes[type], "block");
    bool optional = has_flag(r, a, "optional"), multiple = has_flag(r, a, "multiple");
    kt_buf one = { 0 };
    int rc = 0;

    if (name == 0)
        name = map_get(r, a, "name");
    if (depth > 8)
        return adds(b, "...");
    if (token && is_text(&r->nodes[token])) {
        rc = add(&one, r->nodes[token].p, r->nodes[token].len);
        if (rc == 0 && !(type && text_is(&r->nodes[type], "pure-token")))
            rc = adds(&one, " ");
    }
    if (rc == 0 && type && text_is(&r->nodes[type], "pure-token")) {
        /* the token alone */
    } else if (rc == 0 && (oneof || block)) {
        bool wrap = oneof && !optional;
        rc = wrap ? adds(&one, "<") : 0;
        if (rc == 0)
            rc = syntax_list(&one, r, map_get(r, a, "arguments"), oneof ? " | " : " ", depth + 1);
        if (rc == 0 && wrap)
            rc = adds(&one, ">");
    } else if (rc == 0 && name && is_text(&r->nodes[name])) {
        rc = add(&one, r->nodes[name].p, r->nodes[name].len);
    }
    if (rc == 0 && optional)
        rc = adds(b, "[");
    if (rc == 0)
        rc = add(b, one.data ? one.data : "", one.len);
    if (rc == 0 && multiple) {
        /* "key [key ...]"; with a token that is not repeated, only the value repeats */
        size_t skip_tok = token && !has_flag(r, a, "multiple_token") ? r->nodes[token].len + 1 : 0;
        if (skip_tok > one.len)
            skip_tok = 0;
        rc = adds(b, " [");
        if (rc == 0)
            rc = add(b, one.data ? one.data + skip_tok : "", one.len - skip_tok);
        if (rc == 0)
            rc = adds(b, " ...]");
    }
    if (rc == 0 && optional)
        rc = adds(b, "]");
    kt_buf_free(&one);
    return rc;
}

/* The arguments array at list, joined by sep. */
static int syntax_list(kt_buf *b, const kt_resp_reply *r, size_t list, const char *sep, int depth)
{
    int rc = 0;
    if (list == 0 || r->nodes[list].type != KT_RESP_ARRAY)
        return 0;
    for (size_t k = 0, i = list + 1; k < r->nodes[list].n && rc == 0; k++, i = skip(r, i)) {
        if (k > 0)
            rc = adds(b, sep);
        if (rc == 0)
            rc = syntax_arg(b, r, i, depth);
    }
    return rc;
}

static void doc_free(kc_doc *d)
{
    kt_free(d->name);
    kt_free(d->summary);
    kt_free(d->since);
    kt_free(d->group);
    kt_free(d->args);
}

/* Add the entry for name (the text at nm, after prefix) documented by the
 * map at m, and its subcommands. */
static int add_doc(kc_docs *d, const kt_resp_reply *r, size_t nm, size_t m, const char *prefix)
{
    kc_doc *v = kt_realloc(d->v, (d->n + 1) * sizeof(*v));
    if (v == NULL)
        return -ENOMEM;
    d->v = v;
    kc_doc *e = &v[d->n];
    memset(e, 0, sizeof(*e));
    kt_buf nb = { 0 }, ab = { 0 };
    const kt_resp_node *n = &r->nodes[nm];
    /* a subcommand comes as "client|list": keep "LIST" after the prefix */
    const char *bar = memchr(n->p, '|', n->len);
    size_t off = bar ? (size_t)(bar - n->p) + 1 : 0;
    int rc = prefix ? adds(&nb, prefix) : 0;
    if (rc == 0)
        rc = add(&nb, n->p + off, n->len - off);
    if (rc == 0)
        rc = syntax_list(&ab, r, map_get(r, m, "arguments"), " ", 0);
    e->name = kt_strndup(nb.data ? nb.data : "", nb.len);
    e->args = kt_strndup(ab.data ? ab.data : "", ab.len);
    e->summary = text_at(r, map_get(r, m, "summary"));
    e->since = text_at(r, map_get(r, m, "since"));
    e->group = text_at(r, map_get(r, m, "group"));
    kt_buf_free(&nb);
    kt_buf_free(&ab);
    if (rc < 0 || !e->name || !e->args || !e->summary || !e->since || !e->group) {
        doc_free(e);
        return -ENOMEM;
    }
    for (char *p = e->name; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    d->n++;
    size_t subs = map_get(r, m, "subcommands");
    if (subs == 0 || r->nodes[subs].type != KT_RESP_ARRAY || prefix != NULL)
        return 0;
    e->container = r->nodes[subs].n > 0;
    char pre[64];
    snprintf(pre, sizeof(pre), "%.*s ", (int)(n->len < 60 ? n->len : 60), n->p);
    for (size_t k = 0, i = subs + 1; k + 1 < r->nodes[subs].n; k += 2) {
        size_t sm = skip(r, i);
        if (sm < r->count && is_text(&r->nodes[i]) && (rc = add_doc(d, r, i, sm, pre)) < 0)
            return rc;
        i = skip(r, sm);
    }
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const kc_doc *)a)->name, ((const kc_doc *)b)->name);
}

int kc_docs_load(kc_docs *d, kc_conn *c, const char **why)
{
    static const kt_resp_arg cmd[2] = { { "COMMAND", 7 }, { "DOCS", 4 } };
    kt_resp_reply r = { 0 };
    int rc = kc_send(c, 2, cmd);
    if (rc == 0)
        rc = kc_read_reply(c, &r, why);
    if (rc < 0) {
        kt_resp_reply_free(&r);
        return rc;
    }
    kc_docs_free(d);
    d->loaded = true;
    const kt_resp_node *top = &r.nodes[0];
    if (top->type == KT_RESP_ERROR_REPLY) {
        snprintf(d->why, sizeof(d->why), "COMMAND DOCS answered: %.*s", (int)top->len, top->p);
    } else if (top->type != KT_RESP_ARRAY || top->n == 0) {
        snprintf(d->why, sizeof(d->why), "COMMAND DOCS answered no documentation");
    } else {
        for (size_t k = 0, i = 1; k + 1 < top->n && rc == 0; k += 2) {
            size_t m = skip(&r, i);
            if (m < r.count && is_text(&r.nodes[i]))
                rc = add_doc(d, &r, i, m, NULL);
            i = skip(&r, m);
        }
        if (d->n > 1)
            qsort(d->v, d->n, sizeof(*d->v), by_name);
    }
    kt_resp_reply_free(&r);
    if (rc < 0) {
        kc_docs_free(d);
        *why = "out of memory";
    }
    return rc;
}

const kc_doc *kc_docs_find(const kc_docs *d, const char *name)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcasecmp(d->v[i].name, name) == 0)
            return &d->v[i];
    return NULL;
}

/* redis-cli's block for one command. */
static void print_one(FILE *out, const kc_doc *e)
{
    fprintf(out, "\n  %s%s%s\n", e->name, e->args[0] ? " " : "", e->args);
    if (e->summary[0])
        fprintf(out, "  summary: %s\n", e->summary);
    if (e->since[0])
        fprintf(out, "  since: %s\n", e->since);
    if (e->group[0])
        fprintf(out, "  group: %s\n", e->group);
}

static int by_group(const void *a, const void *b)
{
    const kc_doc *x = *(const kc_doc *const *)a, *y = *(const kc_doc *const *)b;
    int c = strcmp(x->group, y->group);
    return c ? c : strcmp(x->name, y->name);
}

/* Every command (not the subcommands), by group, one line each. */
static int help_all(const kc_docs *d, FILE *out)
{
    const kc_doc **list = kt_calloc(d->n ? d->n : 1, sizeof(*list));
    size_t n = 0, width = 4;
    if (list == NULL)
        return 1;
    for (size_t i = 0; i < d->n; i++) {
        if (strchr(d->v[i].name, ' ') != NULL)
            continue;
        list[n++] = &d->v[i];
        if (strlen(d->v[i].name) > width)
            width = strlen(d->v[i].name);
    }
    qsort(list, n, sizeof(*list), by_group);
    fprintf(out, "The server's %zu commands, by group. \"help COMMAND\" shows one, \"help @GROUP\" "
                 "a group;\nTab completes command names.\n", n);
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || strcmp(list[i]->group, list[i - 1]->group) != 0)
            fprintf(out, "\n  @%s\n", list[i]->group[0] ? list[i]->group : "other");
        fprintf(out, "    %-*s  %s\n", (int)width, list[i]->name, list[i]->summary);
    }
    kt_free(list);
    return 0;
}

int kc_help(const kc_docs *d, FILE *out, size_t argc, char *const *argv)
{
    if (d->n == 0) {
        fprintf(out, "No help from this server: %s.\n",
                d->why[0] ? d->why : "not connected");
        return 1;
    }
    if (argc == 0)
        return help_all(d, out);
    int found = 0;
    if (argv[0][0] == '@') {
        for (size_t i = 0; i < d->n; i++)
            if (strcasecmp(d->v[i].group, argv[0] + 1) == 0 && strchr(d->v[i].name, ' ') == NULL)
                print_one(out, &d->v[i]), found++;
    } else {
        char name[256];
        snprintf(name, sizeof(name), "%s%s%s", argv[0], argc > 1 ? " " : "", argc > 1 ? argv[1] : "");
        const kc_doc *e = kc_docs_find(d, name);
        if (e == NULL && argc > 1)
            e = kc_docs_find(d, argv[0]);
        if (e != NULL) {
            print_one(out, e), found++;
            /* a container's subcommands follow it */
            size_t len = strlen(e->name);
            for (size_t i = 0; e->container && i < d->n; i++)
                if (strncmp(d->v[i].name, e->name, len) == 0 && d->v[i].name[len] == ' ')
                    print_one(out, &d->v[i]), found++;
        }
    }
    if (found == 0) {
        fprintf(out, "No help for '%s' from this server (\"help\" lists its commands).\n", argv[0]);
        return 1;
    }
    fputc('\n', out);
    return 0;
}

void kc_docs_free(kc_docs *d)
{
    for (size_t i = 0; i < d->n; i++)
        doc_free(&d->v[i]);
    kt_free(d->v);
    memset(d, 0, sizeof(*d));
}
