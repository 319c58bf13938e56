/*
 * template.c - command templates with key placeholders, and the weighted
 * mix they are picked from (see template.h for the syntax).
 */
#include "config.h"
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <strings.h>
#include <kettle/common.h>
#include "template.h"
#include "split.h"

static const struct { const char *name; size_t len; int ph; } placeholders[] = {
    { "__rand_int__", 12, KB_PH_RAND },
    { "__seq_int__", 11, KB_PH_SEQ },
    { "__zipf_int__", 12, KB_PH_ZIPF },
};

/* The placeholder starting at s (len bytes left), or KB_PH_NONE. */
static int placeholder_at(const char *s, size_t len, size_t *plen)
{
    for (size_t i = 0; i < sizeof(placeholders) / sizeof(placeholders[0]); i++) {
        if (len >= placeholders[i].len && memcmp(s, placeholders[i].name, placeholders[i].len) == 0) {
            *plen = placeholders[i].len;
            return placeholders[i].ph;
        }
    }
    return KB_PH_NONE;
}

/* Cut one argument into literal and placeholder parts. */
static int split_parts(kb_arg *a, const char *s, size_t len)
{
    /* at most one part per placeholder and one literal between each */
    size_t cap = 1;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '_')
            cap += 2;
    a->parts = kt_calloc(cap, sizeof(*a->parts));
    if (a->parts == NULL)
        return -ENOMEM;
    size_t lit = 0, i = 0;
    while (i < len) {
        size_t plen;
        int ph = placeholder_at(s + i, len - i, &plen);
        if (ph == KB_PH_NONE) {
            i++;
            continue;
        }
        if (i > lit)
            a->parts[a->nparts++] = (kb_part){ s + lit, i - lit, KB_PH_NONE };
        a->parts[a->nparts++] = (kb_part){ NULL, 0, ph };
        a->nph++;
        i += plen;
        lit = i;
    }
    if (len > lit || a->nparts == 0)
        a->parts[a->nparts++] = (kb_part){ s + lit, len - lit, KB_PH_NONE };
    a->maxlen = len + a->nph * 20;
    return 0;
}

static kb_check check_of(size_t argc, char *const *argv)
{
    const char *cmd = argv[0];
    if (strcasecmp(cmd, "PING") == 0)
        return argc == 1 ? KB_CHECK_PONG : argc == 2 ? KB_CHECK_ECHO : KB_CHECK_NONE;
    if (strcasecmp(cmd, "ECHO") == 0 && argc == 2)
        return KB_CHECK_ECHO;
    if (strcasecmp(cmd, "GET") == 0 && argc == 2)
        return KB_CHECK_GET;
    if (strcasecmp(cmd, "MGET") == 0 && argc >= 2)
        return KB_CHECK_MGET;
    return KB_CHECK_NONE;
}

static void template_free(kb_template *t)
{
    for (size_t i = 0; i < t->argc; i++) {
        if (t->args)
            kt_free(t->args[i].parts);
        if (t->lits)
            kt_free(t->lits[i]);
    }
    kt_free(t->args);
    kt_free(t->lits);
    kt_free(t->text);
    memset(t, 0, sizeof(*t));
}

/* The arguments joined by blanks (for reports). */
static char *join(size_t argc, char *const *argv, const size_t *lens)
{
    size_t n = 1;
    for (size_t i = 0; i < argc; i++)
        n += lens[i] + 1;
    char *s = kt_malloc(n), *p = s;
    if (s == NULL)
        return NULL;
    for (size_t i = 0; i < argc; i++) {
        if (i > 0)
            *p++ = ' ';
        for (size_t j = 0; j < lens[i]; j++)
            *p++ = isprint((unsigned char)argv[i][j]) ? argv[i][j] : '?';
    }
    *p = '\0';
    return s;
}

int kb_mix_add(kb_mix *m, size_t argc, char *const *argv, const size_t *lens,
               uint64_t weight, const char **why)
{
    if (argc == 0) {
        *why = "empty command";
        return -EINVAL;
    }
    if (weight == 0) {
        *why = "a weight must be a positive integer";
        return -EINVAL;
    }
    kb_template *ts = kt_realloc(m->t, (m->n + 1) * sizeof(*ts));
    if (ts == NULL)
        goto nomem;
    m->t = ts;
    kb_template *t = &ts[m->n];
    memset(t, 0, sizeof(*t));
    t->weight = weight;
    t->argc = argc;
    t->args = kt_calloc(argc, sizeof(*t->args));
    t->lits = kt_calloc(argc, sizeof(*t->lits));
    t->text = join(argc, argv, lens);
    if (t->args == NULL || t->lits == NULL || t->text == NULL)
        goto fail;
    for (size_t i = 0; i < argc; i++) {
        t->lits[i] = kt_malloc(lens[i] + 1);
        if (t->lits[i] == NULL)
            goto fail;
        memcpy(t->lits[i], argv[i], lens[i]);
        t->lits[i][lens[i]] = '\0';
        if (split_parts(&t->args[i], t->lits[i], lens[i]) < 0)
            goto fail;
        t->args[i].ph0 = t->nph;
        t->nph += t->args[i].nph;
        t->maxlen += t->args[i].maxlen;
    }
    t->check = check_of(argc, t->lits);
    m->n++;
    m->total_weight += weight;
    if (t->nph > m->max_ph)
        m->max_ph = t->nph;
    if (argc > m->max_argc)
        m->max_argc = argc;
    if (t->maxlen > m->max_len)
        m->max_len = t->maxlen;
    return 0;
fail:
    template_free(t);
nomem:
    *why = "out of memory";
    return -ENOMEM;
}

/* Parse one --mix item: "COMMAND ARG...[:WEIGHT]". */
static int add_item(kb_mix *m, const char *s, size_t len, const char **why)
{
    uint64_t weight = 1;
    size_t colon = kt_rfind_unquoted(s, len, ':');
    if (colon < len) {
        size_t a = colon + 1, b = len;
        while (a < b && isspace((unsigned char)s[a]))
            a++;
        while (b > a && isspace((unsigned char)s[b - 1]))
            b--;
        bool digits = b > a && b - a <= 9;
        for (size_t i = a; i < b && digits; i++)
            digits = isdigit((unsigned char)s[i]) != 0;
        if (digits) {
            weight = 0;
            for (size_t i = a; i < b; i++)
                weight = weight * 10 + (uint64_t)(s[i] - '0');
            len = colon;
        }
    }
    kt_args args;
    int rc = kt_split(s, len, &args, why);
    if (rc == 0) {
        if (args.n == 0) {
            *why = "empty command in --mix";
            rc = -EINVAL;
        } else {
            rc = kb_mix_add(m, args.n, args.v, args.len, weight, why);
        }
    }
    kt_args_free(&args);
    return rc;
}

int kb_mix_parse(kb_mix *m, const char *spec, const char **why)
{
    size_t len = strlen(spec);
    for (;;) {
        size_t comma = kt_find_unquoted(spec, len, ',');
        int rc = add_item(m, spec, comma, why);
        if (rc < 0)
            return rc;
        if (comma >= len)
            return 0;
        spec += comma + 1;
        len -= comma + 1;
    }
}

void kb_mix_set_validate(kb_mix *m, bool validate)
{
    for (size_t i = 0; i < m->n; i++) {
        kb_template *t = &m->t[i];
        t->check = check_of(t->argc, t->lits);
        if (!validate && t->check != KB_CHECK_PONG)
            t->check = KB_CHECK_NONE;
    }
}

void kb_mix_free(kb_mix *m)
{
    for (size_t i = 0; i < m->n; i++)
        template_free(&m->t[i]);
    kt_free(m->t);
    memset(m, 0, sizeof(*m));
}

const kb_template *kb_mix_pick(const kb_mix *m, uint64_t r)
{
    if (m->n == 1)
        return &m->t[0];
    uint64_t x = r % m->total_weight;
    for (size_t i = 0; i < m->n; i++) {
        if (x < m->t[i].weight)
            return &m->t[i];
        x -= m->t[i].weight;
    }
    return &m->t[m->n - 1];
}

/* Decimal digits of v into buf; returns the count. */
static size_t put_u64(char *buf, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

size_t kb_render_arg(const kb_template *t, size_t i, const uint64_t *vals, char *buf)
{
    const kb_arg *a = &t->args[i];
    size_t n = 0, ph = a->ph0;
    for (size_t p = 0; p < a->nparts; p++) {
        const kb_part *part = &a->parts[p];
        if (part->ph == KB_PH_NONE) {
            memcpy(buf + n, part->lit, part->len);
            n += part->len;
        } else {
            n += put_u64(buf + n, vals[ph++]);
        }
    }
    return n;
}
