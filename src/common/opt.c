/*
 * opt.c - one option table drives the command line, the INI config file
 * (libinih), runtime changes and the generated documentation. See opt.h.
 */
#include "config.h"
#include <errno.h>
#include <math.h>
#include <ini.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <kettle/common.h>
#include <kettle/log.h>
#include <kettle/loop.h>
#include <kettle/stream.h>
#include "opt.h"

#define FIELD(cfg, o, type) ((type *)((char *)(cfg) + (o)->offset))
#define CFIELD(cfg, o, type) ((const type *)((const char *)(cfg) + (o)->offset))

static const kt_opt *find(const kt_opt *table, const char *name)
{
    for (const kt_opt *o = table; o->name; o++) {
        if (strcmp(o->name, name) == 0)
            return o;
    }
    return NULL;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = { "yes", "true", "on", "1" };
    static const char *const no[] = { "no", "false", "off", "0" };
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) { *out = true; return 0; }
        if (strcasecmp(v, no[i]) == 0) { *out = false; return 0; }
    }
    return -EINVAL;
}

static void list_clear(kt_opt_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        kt_free(l->items[i]);
    kt_free(l->items);
    l->items = NULL;
    l->n = 0;
}

static int list_add(kt_opt_list *l, const char *v)
{
    char *copy = kt_strdup(v);
    char **items = copy ? kt_realloc(l->items, (l->n + 1) * sizeof *items) : NULL;
    if (items == NULL) {
        kt_free(copy);
        return -ENOMEM;
    }
    items[l->n++] = copy;
    l->items = items;
    return 0;
}

/* Parse value for o without touching cfg until it is known to be valid. */
static int set_one(const kt_opt *o, void *cfg, const char *value, const char **why)
{
    int r;
    if (o->check && (r = o->check(value, why)) < 0)
        return r;
    switch (o->type) {
    case KT_OPT_STR: {
        char *copy = kt_strdup(value);
        if (copy == NULL) { *why = "out of memory"; return -ENOMEM; }
        kt_free(*FIELD(cfg, o, char *));
        *FIELD(cfg, o, char *) = copy;
        return 0;
    }
    case KT_OPT_INT: {
        int64_t v;
        if (kt_parse_i64(value, strlen(value), &v) < 0) { *why = "expected an integer"; return -EINVAL; }
        if ((o->min || o->max) && (v < o->min || v > o->max)) { *why = "integer out of range"; return -EINVAL; }
        *FIELD(cfg, o, int64_t) = v;
        return 0;
    }
    case KT_OPT_SIZE: {
        uint64_t v;
        if (kt_parse_size(value, &v) < 0) { *why = "expected a size such as 512, 64kb or 1mb"; return -EINVAL; }
        *FIELD(cfg, o, uint64_t) = v;
        return 0;
    }
    case KT_OPT_DURATION: {
        uint64_t v;
        if (kt_parse_duration(value, o->unit ? o->unit : KT_MSEC(1), &v) < 0) {
            *why = "expected a duration such as 250ms, 5s or 1m";
            return -EINVAL;
        }
        *FIELD(cfg, o, uint64_t) = v;
        return 0;
    }
    case KT_OPT_BOOL: {
        bool v;
        if (parse_bool(value, &v) < 0) { *why = "expected yes or no"; return -EINVAL; }
        *FIELD(cfg, o, bool) = v;
        return 0;
    }
    case KT_OPT_DOUBLE: {
        double v;
        if (kt_opt_parse_double(value, &v) < 0) { *why = "expected a number"; return -EINVAL; }
        *FIELD(cfg, o, double) = v;
        return 0;
    }
    case KT_OPT_LIST:
        if (list_add(FIELD(cfg, o, kt_opt_list), value) < 0) { *why = "out of memory"; return -ENOMEM; }
        return 0;
    }
    *why = "unknown option type";
    return -EINVAL;
}

int kt_opt_parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno != 0 || !isfinite(v))
        return -EINVAL;
    *out = v;
    return 0;
}

int kt_opt_check_addr(const char *value, const char **why)
{
    kt_addr a;
    if (kt_addr_parse(value, &a) < 0) {
        *why = "expected ADDR:PORT, [IPV6]:PORT or unix:PATH (numeric address or localhost)";
        return -EINVAL;
    }
    return 0;
}

int kt_opt_check_io(const char *value, const char **why)
{
    kt_io_kind k;
    if (kt_io_parse(value, &k) < 0) {
        *why = "expected auto, io_uring, epoll or libevent";
        return -EINVAL;
    }
    return 0;
}

int kt_opt_check_batch_wait(const char *value, const char **why)
{
    uint64_t ns;
    if (kt_parse_duration(value, KT_USEC(1), &ns) < 0 || ns > KT_MSEC(10)) {
        *why = "expected a duration of at most 10ms (0: off)";
        return -EINVAL;
    }
    return 0;
}

int kt_opt_check_level(const char *value, const char **why)
{
    kt_log_level l;
    if (kt_log_parse_level(value, &l) < 0) {
        *why = "expected error, warning, notice, info or debug";
        return -EINVAL;
    }
    return 0;
}

int kt_opt_defaults(const kt_opt *table, void *cfg)
{
    const char *why;
    for (const kt_opt *o = table; o->name; o++) {
        switch (o->type) {
        case KT_OPT_STR: *FIELD(cfg, o, char *) = NULL; break;
        case KT_OPT_LIST: *FIELD(cfg, o, kt_opt_list) = (kt_opt_list){ NULL, 0 }; break;
        default: break;
        }
        if (o->def && set_one(o, cfg, o->def, &why) < 0) {
            kt_log_error("option %s: bad default '%s': %s", o->name, o->def, why);
            return -EINVAL;
        }
    }
    return 0;
}

int kt_opt_set(const kt_opt *table, void *cfg, const char *name, const char *value, const char **why)
{
    const kt_opt *o = find(table, name);
    if (o == NULL) {
        *why = "unknown option";
        return -ENOENT;
    }
    if (o->type == KT_OPT_LIST && value[0] == '\0') {
        list_clear(FIELD(cfg, o, kt_opt_list));
        return 0;
    }
    return set_one(o, cfg, value, why);
}

const char *kt_opt_get(const kt_opt *table, const void *cfg, const char *name, char *buf, size_t size)
{
    const kt_opt *o = find(table, name);
    if (o == NULL || size == 0)
        return NULL;
    if (o->flags & KT_OPT_SECRET) {
        snprintf(buf, size, "%s", *CFIELD(cfg, o, char *) ? "***" : "");
        return buf;
    }
    switch (o->type) {
    case KT_OPT_STR: {
        const char *s = *CFIELD(cfg, o, char *);
        snprintf(buf, size, "%s", s ? s : "");
        break;
    }
    case KT_OPT_INT: snprintf(buf, size, "%lld", (long long)*CFIELD(cfg, o, int64_t)); break;
    case KT_OPT_SIZE: snprintf(buf, size, "%llu", (unsigned long long)*CFIELD(cfg, o, uint64_t)); break;
    case KT_OPT_DURATION: {
        uint64_t ns = *CFIELD(cfg, o, uint64_t);
        if (ns % KT_MSEC(1) == 0)
            snprintf(buf, size, "%llums", (unsigned long long)(ns / KT_MSEC(1)));
        else
            snprintf(buf, size, "%lluus", (unsigned long long)(ns / KT_USEC(1)));
        break;
    }
    case KT_OPT_BOOL: snprintf(buf, size, "%s", *CFIELD(cfg, o, bool) ? "yes" : "no"); break;
    case KT_OPT_DOUBLE: snprintf(buf, size, "%g", *CFIELD(cfg, o, double)); break;
    case KT_OPT_LIST: {
        const kt_opt_list *l = CFIELD(cfg, o, kt_opt_list);
        size_t n = 0;
        buf[0] = '\0';
        for (size_t i = 0; i < l->n && n < size; i++)
            n += (size_t)snprintf(buf + n, size - n, "%s%s", i ? " " : "", l->items[i]);
        break;
    }
    }
    return buf;
}

struct load_ctx {
    const kt_opt *table;
    void *cfg;
    const char *path;
    int err;
    bool cleared[256]; /* LIST options: the file's first occurrence replaces defaults */
};

/* Debian's libinih does not pass line numbers to the handler: errors name
 * the file and the option instead. */
static int ini_cb(void *user, const char *section, const char *name, const char *value)
{
    struct load_ctx *c = user;
    const char *why = "";
    const kt_opt *o = find(c->table, name);
    (void)section;
    if (o == NULL || (o->flags & KT_OPT_NOFILE)) {
        kt_log_error("%s: unknown option '%s'", c->path, name);
        c->err = -EINVAL;
        return 1;
    }
    if (o->type == KT_OPT_LIST) {
        size_t idx = (size_t)(o - c->table);
        if (idx < sizeof c->cleared && !c->cleared[idx]) {
            list_clear(FIELD(c->cfg, o, kt_opt_list));
            c->cleared[idx] = true;
        }
    }
    if (set_one(o, c->cfg, value, &why) < 0) {
        kt_log_error("%s: %s = '%s': %s", c->path, name, value, why);
        c->err = -EINVAL;
    }
    return 1;
}

int kt_opt_load_file(const kt_opt *table, void *cfg, const char *path)
{
    struct load_ctx c = { .table = table, .cfg = cfg, .path = path };
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        int e = errno;
        kt_log_error("cannot open config file %s: %s", path, strerror(e));
        return -e;
    }
    int r = ini_parse_file(f, ini_cb, &c);
    fclose(f);
    if (r > 0) {
        kt_log_error("%s:%d: syntax error", path, r);
        return -EINVAL;
    }
    return c.err;
}

static const char *short_to_name(const char *const *shorts, char ch)
{
    for (size_t i = 0; shorts && shorts[i]; i++) {
        if (shorts[i][0] == ch && shorts[i][1] == ':')
            return shorts[i] + 2;
    }
    return NULL;
}

int kt_opt_parse_argv(const kt_opt *table, void *cfg, int argc, char **argv,
                      const char *const *shorts, int *optind_out)
{
    bool cleared[256] = { false };
    int i;

    /* The config file first, so that command-line options override it. */
    const char *conf = NULL;
    for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            conf = argv[++i];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            conf = argv[i] + 9;
    }
    if (conf) {
        const kt_opt *co = find(table, "config");
        const char *why;
        if (co && set_one(co, cfg, conf, &why) < 0)
            return -EINVAL;
        if (kt_opt_load_file(table, cfg, conf) < 0)
            return -EINVAL;
    }

    for (i = 1; i < argc; i++) {
        const char *arg = argv[i], *name, *value = NULL;
        char namebuf[128];
        if (strcmp(arg, "--") == 0) {
            i++;
            break;
        }
        if (arg[0] == '-' && arg[1] != '-' && arg[1] != '\0' && arg[2] == '\0') {
            name = short_to_name(shorts, arg[1]);
            if (name == NULL) {
                kt_log_error("unknown option %s (see --help)", arg);
                return -EINVAL;
            }
        } else if (strncmp(arg, "--", 2) == 0 && arg[2] != '\0') {
            name = arg + 2;
            const char *eq = strchr(name, '=');
            if (eq) {
                size_t n = (size_t)(eq - name);
                if (n >= sizeof namebuf) {
                    kt_log_error("unknown option %s (see --help)", arg);
                    return -EINVAL;
                }
                memcpy(namebuf, name, n);
                namebuf[n] = '\0';
                name = namebuf;
                value = eq + 1;
            }
        } else {
            break; /* first operand */
        }
        const kt_opt *o = find(table, name);
        if (o == NULL && value == NULL && strncmp(name, "no-", 3) == 0) {
            o = find(table, name + 3);
            if (o && o->type == KT_OPT_BOOL) {
                *FIELD(cfg, o, bool) = false;
                continue;
            }
            o = NULL;
        }
        if (o == NULL) {
            kt_log_error("unknown option --%s (see --help)", name);
            return -EINVAL;
        }
        if (value == NULL) {
            bool b;
            if (o->type == KT_OPT_BOOL) {
                /* "--flag" alone means yes; "--flag no" takes the value */
                if (i + 1 < argc && parse_bool(argv[i + 1], &b) == 0)
                    value = argv[++i];
                else
                    value = "yes";
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                kt_log_error("option --%s needs a value", o->name);
                return -EINVAL;
            }
        }
        if (strcmp(o->name, "config") == 0)
            continue; /* loaded above */
        if (o->type == KT_OPT_LIST) {
            size_t idx = (size_t)(o - table);
            if (idx < sizeof cleared && !cleared[idx]) {
                list_clear(FIELD(cfg, o, kt_opt_list));
                cleared[idx] = true;
            }
        }
        const char *why = "";
        if (set_one(o, cfg, value, &why) < 0) {
            kt_log_error("--%s '%s': %s", o->name, value, why);
            return -EINVAL;
        }
    }
    if (optind_out)
        *optind_out = i;
    else if (i < argc) {
        kt_log_error("unexpected argument '%s' (see --help)", argv[i]);
        return -EINVAL;
    }
    return 0;
}

static const char *type_hint(const kt_opt *o)
{
    switch (o->type) {
    case KT_OPT_STR: return "TEXT";
    case KT_OPT_INT: return "N";
    case KT_OPT_SIZE: return "SIZE";
    case KT_OPT_DURATION: return "TIME";
    case KT_OPT_BOOL: return "yes|no";
    case KT_OPT_DOUBLE: return "X";
    case KT_OPT_LIST: return "VALUE";
    }
    return "";
}

void kt_opt_usage(const kt_opt *table, FILE *out)
{
    for (const kt_opt *o = table; o->name; o++) {
        char left[64];
        snprintf(left, sizeof left, "--%s %s", o->name, type_hint(o));
        fprintf(out, "  %-32s %s", left, o->help);
        if (o->def && o->def[0] && !(o->flags & KT_OPT_SECRET))
            fprintf(out, " [%s]", o->def);
        if (o->type == KT_OPT_LIST)
            fprintf(out, " (repeatable)");
        fputc('\n', out);
    }
}

/* Print "# text suffix" as comment lines of at most 78 columns. */
static void write_wrapped(FILE *out, const char *text, const char *suffix)
{
    char all[1024];
    snprintf(all, sizeof all, "%s%s", text, suffix);
    const char *p = all;
    while (*p) {
        size_t n = strlen(p);
        if (n > 76) {
            n = 76;
            while (n > 20 && p[n] != ' ')
                n--;
        }
        fprintf(out, "# %.*s\n", (int)n, p);
        p += n;
        while (*p == ' ')
            p++;
    }
}

void kt_opt_write_conf(const kt_opt *table, FILE *out)
{
    for (const kt_opt *o = table; o->name; o++) {
        if (o->flags & KT_OPT_NOFILE)
            continue;
        /* wrapped: libinih rejects lines over 200 bytes, comments included */
        fputc('\n', out);
        write_wrapped(out, o->help, (o->flags & KT_OPT_RUNTIME) ? " (reloadable)" : "");
        if (o->def && o->def[0])
            fprintf(out, "# %s = %s\n", o->name, o->def);
        else
            fprintf(out, "# %s =\n", o->name);
    }
}

void kt_opt_free(const kt_opt *table, void *cfg)
{
    for (const kt_opt *o = table; o->name; o++) {
        if (o->type == KT_OPT_STR) {
            kt_free(*FIELD(cfg, o, char *));
            *FIELD(cfg, o, char *) = NULL;
        } else if (o->type == KT_OPT_LIST) {
            list_clear(FIELD(cfg, o, kt_opt_list));
        }
    }
}

int kt_opt_copy(const kt_opt *table, void *dst, const void *src, size_t cfg_size)
{
    memcpy(dst, src, cfg_size);
    for (const kt_opt *o = table; o->name; o++) {
        if (o->type == KT_OPT_STR) {
            const char *s = *CFIELD(src, o, char *);
            *FIELD(dst, o, char *) = NULL;
            if (s && (*FIELD(dst, o, char *) = kt_strdup(s)) == NULL)
                goto fail;
        } else if (o->type == KT_OPT_LIST) {
            const kt_opt_list *l = CFIELD(src, o, kt_opt_list);
            *FIELD(dst, o, kt_opt_list) = (kt_opt_list){ NULL, 0 };
            for (size_t i = 0; i < l->n; i++)
                if (list_add(FIELD(dst, o, kt_opt_list), l->items[i]) < 0)
                    goto fail;
        }
    }
    return 0;
fail:
    /* free what was copied; fields not yet reached still alias src */
    for (const kt_opt *o = table; o->name; o++) {
        if (o->type == KT_OPT_STR) {
            if (*FIELD(dst, o, char *) != *CFIELD(src, o, char *))
                kt_free(*FIELD(dst, o, char *));
        } else if (o->type == KT_OPT_LIST) {
            if (FIELD(dst, o, kt_opt_list)->items != CFIELD(src, o, kt_opt_list)->items)
                list_clear(FIELD(dst, o, kt_opt_list));
        }
    }
    return -ENOMEM;
}
