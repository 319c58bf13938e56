/*
 * server-config.c - CONFIG GET, SET, RESETSTAT and HELP over the daemon's
 * option table (opt.h) and its live config. SET is all or nothing: every
 * pair is applied to a copy, which the daemon checks and puts in force as
 * a reload would (ks_daemon.config_apply); only options marked reloadable
 * can change. Error texts are Redis's.
 */
#include "config.h"
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "server-int.h"

/* Longest option value CONFIG takes (a backend list, say). */
#define KS_CONFIG_VALUE_MAX 4096

static void bulk_str(kt_out *o, const char *s)
{
    (void)kt_resp_bulk(o, s, strlen(s));
}

static const kt_opt *find_opt(const kt_opt *table, const kt_resp_arg *name)
{
    for (const kt_opt *o = table; o->name; o++)
        if (!(o->flags & KT_OPT_NOFILE) && ks_arg_is(name, o->name))
            return o;
    return NULL;
}

static void config_get(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    ks_server *srv = c->srv;
    size_t n = 0, max = 0;
    char pat[256], val[KS_CONFIG_VALUE_MAX];
    for (const kt_opt *opt = srv->d->options; opt->name; opt++)
        max++;
    const kt_opt **hit = kt_calloc(max ? max : 1, sizeof *hit);
    if (hit == NULL) {
        ks_error(c, "ERR out of memory");
        return;
    }
    /* in table order, each option once */
    for (const kt_opt *opt = srv->d->options; opt->name; opt++) {
        if (opt->flags & KT_OPT_NOFILE)
            continue;
        for (size_t i = 2; i < argc; i++) {
            snprintf(pat, sizeof pat, "%.*s", (int)argv[i].len, argv[i].p);
            if (fnmatch(pat, opt->name, FNM_CASEFOLD) == 0) {
                hit[n++] = opt;
                break;
            }
        }
    }
    kt_out *o = ks_reply(c);
    if (o) {
        (void)kt_resp_array(o, 2 * n);
        for (size_t i = 0; i < n; i++) {
            bulk_str(o, hit[i]->name);
            const char *v = kt_opt_get(srv->d->options, srv->cfg, hit[i]->name, val, sizeof val);
            bulk_str(o, v ? v : "");
        }
    }
    kt_free(hit);
}

/* Set one option of next from an argument; a list is given whole, its
 * values separated by spaces or commas. 0, or an error was sent. */
static int set_one(ks_conn *c, void *next, const kt_opt *opt, const kt_resp_arg *arg)
{
    const kt_opt *table = c->srv->d->options;
    char value[KS_CONFIG_VALUE_MAX];
    const char *why = NULL;
    int r;
    if (arg->len >= sizeof value || memchr(arg->p, '\0', arg->len)) {
        ks_error(c, "ERR CONFIG SET failed (possibly related to argument '%s') - value too long",
                 opt->name);
        return -1;
    }
    memcpy(value, arg->p, arg->len);
    value[arg->len] = '\0';
    if (opt->type == KT_OPT_LIST) {
        char *save = NULL;
        r = kt_opt_set(table, next, opt->name, "", &why);
        for (char *tok = strtok_r(value, " ,", &save); tok && r == 0; tok = strtok_r(NULL, " ,", &save))
            r = kt_opt_set(table, next, opt->name, tok, &why);
    } else {
        r = kt_opt_set(table, next, opt->name, value, &why);
    }
    if (r < 0) {
        ks_error(c, "ERR CONFIG SET failed (possibly related to argument '%s') - %s", opt->name,
                 why ? why : "invalid value");
        return -1;
    }
    return 0;
}

static void config_set(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    ks_server *srv = c->srv;
    const ks_daemon *d = srv->d;
    const char *why = NULL;
    if (argc < 4 || (argc - 2) % 2) {
        srv->st.err_arity++;
        ks_error_quiet(c, "ERR wrong number of arguments for 'config|set' command");
        return;
    }
    void *next = kt_malloc(d->cfg_size);
    if (next == NULL || kt_opt_copy(d->options, next, srv->cfg, d->cfg_size) < 0) {
        kt_free(next);
        ks_error(c, "ERR out of memory");
        return;
    }
    for (size_t i = 2; i < argc; i += 2) {
        const kt_opt *opt = find_opt(d->options, &argv[i]);
        if (opt == NULL) {
            ks_error(c, "ERR Unknown option or number of arguments for CONFIG SET - '%.*s'",
                     (int)(argv[i].len < 128 ? argv[i].len : 128), argv[i].p);
            goto fail;
        }
        if (!(opt->flags & KT_OPT_RUNTIME)) {
            ks_error(c, "ERR CONFIG SET failed (possibly related to argument '%s') - "
                     "can't set immutable config", opt->name);
            goto fail;
        }
        if (set_one(c, next, opt, &argv[i + 1]) < 0)
            goto fail;
    }
    if (d->config_apply(srv, next, &why) < 0) {
        ks_error(c, "ERR CONFIG SET failed - %s", why ? why : "invalid configuration");
        goto fail;
    }
    kt_free(next); /* its contents are the daemon's now */
    ks_server_apply(srv);
    ks_reply_ok(c);
    return;
fail:
    kt_opt_free(d->options, next);
    kt_free(next);
}

void ks_cmd_config(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    static const char *const help[] = {
        "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GET <pattern> [<pattern> ...]", "    Return the options matching the glob-like patterns.",
        "SET <option> <value> [<option> <value> ...]",
        "    Set reloadable options (a list option takes its values separated by spaces).",
        "RESETSTAT", "    Reset the statistics reported by INFO.",
        "HELP", "    Print this help.", NULL };
    ks_server *srv = c->srv;
    const kt_resp_arg *sub = &argv[1];
    if (ks_arg_is(sub, "get")) {
        if (argc < 3) {
            srv->st.err_arity++;
            ks_error_quiet(c, "ERR wrong number of arguments for 'config|get' command");
            return;
        }
        config_get(c, argv, argc);
    } else if (ks_arg_is(sub, "set")) {
        config_set(c, argv, argc);
    } else if (ks_arg_is(sub, "resetstat")) {
        if (argc != 2) {
            srv->st.err_arity++;
            ks_error_quiet(c, "ERR wrong number of arguments for 'config|resetstat' command");
            return;
        }
        memset(&srv->st, 0, sizeof srv->st);
        memset(srv->calls, 0, ks_cmd_count(srv) * sizeof *srv->calls);
        if (srv->d->resetstat)
            srv->d->resetstat(srv);
        ks_reply_ok(c);
    } else if (ks_arg_is(sub, "help")) {
        ks_reply_lines(c, help);
    } else {
        ks_error(c, "ERR unknown subcommand '%.*s'. Try CONFIG HELP.",
                 (int)(sub->len < 128 ? sub->len : 128), sub->p);
    }
}
