/*
 * cmd.c - kettle-db's commands. Data: GET, MGET (delayed, faulted). Plain:
 * PING, ECHO, DBSIZE, INFO, QUIT, COMMAND, CLIENT, SELECT, AUTH. Admin
 * (option `admin`, password `admin-password`): CONFIG GET/SET/RESETSTAT and
 * FAULT SET/CLEAR/LIST. Errors use Redis's texts.
 */
#include "config.h"
#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "kdb.h"

#define ADMIN 0x1u

typedef struct kdb_cmd {
    const char *name;  /* lower case */
    int arity;         /* Redis convention: n exact, -n at least n (name included) */
    void (*fn)(kdb_conn *c, size_t argc, const kt_resp_arg *argv);
    unsigned flags;
} kdb_cmd;

static bool arg_is(const kt_resp_arg *a, const char *s)
{
    size_t n = strlen(s);
    return a->len == n && strncasecmp(a->p, s, n) == 0;
}

/* Reply with what o wrote into b, then free b. */
static void reply_buf(kdb_conn *c, kt_buf *b)
{
    if (b->len)
        kdb_reply(c, b->data, b->len, 0);
    kt_buf_free(b);
}

static void reply_error(kdb_conn *c, const char *fmt, ...) KT_PRINTF(2, 3);
static void reply_error(kdb_conn *c, const char *fmt, ...)
{
    kt_buf b = { 0 };
    kt_out o = kt_buf_out(&b);
    va_list ap;
    va_start(ap, fmt);
    kt_resp_verror(&o, fmt, ap);
    va_end(ap);
    reply_buf(c, &b);
}

static void reply_bulk(kdb_conn *c, const char *p, size_t n)
{
    kt_buf b = { 0 };
    kt_out o = kt_buf_out(&b);
    kt_resp_bulk(&o, p, n);
    reply_buf(c, &b);
}

static void reply_int(kdb_conn *c, int64_t v)
{
    kt_buf b = { 0 };
    kt_out o = kt_buf_out(&b);
    kt_resp_int(&o, v);
    reply_buf(c, &b);
}

/* ---- data commands ------------------------------------------------------------- */

static void cmd_get(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    int64_t key;
    bool bad = kt_parse_i64(argv[1].p, argv[1].len, &key) < 0;
    (void)argc;
    if (kdb_submit_get(c, key, bad) < 0)
        kdb_reply_static(c, "-ERR out of memory\r\n", 0);
}

static void cmd_mget(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    if (kdb_submit_mget(c, argv + 1, argc - 1) < 0)
        kdb_reply_static(c, "-ERR out of memory\r\n", 0);
}

/* ---- plain commands ------------------------------------------------------------ */

static void cmd_ping(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    if (argc == 1)
        kdb_reply_static(c, "+PONG\r\n", 0);
    else if (argc == 2)
        reply_bulk(c, argv[1].p, argv[1].len);
    else
        kdb_reply_static(c, "-ERR wrong number of arguments for 'ping' command\r\n", 0);
}

static void cmd_echo(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    (void)argc;
    reply_bulk(c, argv[1].p, argv[1].len);
}

static void cmd_dbsize(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    (void)argc;
    (void)argv;
    reply_int(c, c->srv->cfg.keyspace);
}

static void cmd_quit(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    (void)argc;
    (void)argv;
    c->flags |= KDB_CF_NOREAD;
    kdb_reply_static(c, "+OK\r\n", KDB_RF_CLOSE);
    kdb_conn_update_reading(c);
}

static void cmd_info(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    char *text;
    size_t len;
    if (argc > 2) {
        kdb_reply_static(c, "-ERR syntax error\r\n", 0);
        return;
    }
    if (kdb_info(c->srv, argc == 2 ? argv[1].p : NULL, argc == 2 ? argv[1].len : 0, &text, &len) < 0) {
        kdb_reply_static(c, "-ERR out of memory\r\n", 0);
        return;
    }
    reply_bulk(c, text, len);
    kt_free(text);
}

static void cmd_command(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    /* enough for redis-cli's start-up (COMMAND DOCS): no command docs */
    if (argc >= 2 && arg_is(&argv[1], "count"))
        reply_int(c, 0);
    else
        kdb_reply_static(c, "*0\r\n", 0);
}

static void cmd_client(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    if (arg_is(&argv[1], "id"))
        reply_int(c, (int64_t)c->id);
    else if (arg_is(&argv[1], "getname"))
        kdb_reply_static(c, "$-1\r\n", 0);
    else if ((arg_is(&argv[1], "setname") && argc == 3) || arg_is(&argv[1], "setinfo"))
        kdb_reply_static(c, "+OK\r\n", 0);
    else
        reply_error(c, "ERR unknown subcommand '%.*s'. Try CLIENT HELP.", (int)(argv[1].len > 128 ? 128 : argv[1].len),
                    argv[1].p);
}

static void cmd_select(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    int64_t db;
    (void)argc;
    if (kt_parse_i64(argv[1].p, argv[1].len, &db) < 0)
        kdb_reply_static(c, "-ERR value is not an integer or out of range\r\n", 0);
    else if (db != 0)
        kdb_reply_static(c, "-ERR DB index is out of range\r\n", 0);
    else
        kdb_reply_static(c, "+OK\r\n", 0);
}

/* Compare in time independent of where the first difference is. */
static bool same_secret(const char *secret, const kt_resp_arg *a)
{
    size_t n = strlen(secret);
    unsigned char diff = 0;
    if (n != a->len)
        return false;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(secret[i] ^ a->p[i]);
    return diff == 0;
}

static void cmd_auth(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    const char *pw = c->srv->cfg.admin_password;
    if (argc > 3) {
        kdb_reply_static(c, "-ERR syntax error\r\n", 0);
        return;
    }
    if (pw == NULL || pw[0] == '\0') {
        kdb_reply_static(c, "-ERR AUTH <password> called without any password configured for the "
                            "default user. Are you sure your configuration is correct?\r\n", 0);
        return;
    }
    const kt_resp_arg *given = &argv[argc - 1];
    if ((argc == 3 && !arg_is(&argv[1], "default")) || !same_secret(pw, given)) {
        c->srv->st.auth_failures++;
        c->flags &= ~KDB_CF_AUTHED;
        kdb_reply_static(c, "-WRONGPASS invalid username-password pair or user is disabled.\r\n", 0);
        return;
    }
    c->flags |= KDB_CF_AUTHED;
    kdb_reply_static(c, "+OK\r\n", 0);
}

/* ---- admin: CONFIG ----------------------------------------------------------- */

static const kt_opt *find_opt(const char *name)
{
    for (const kt_opt *o = kdb_options; o->name; o++)
        if (strcasecmp(o->name, name) == 0)
            return o;
    return NULL;
}

/* Copy an argument into a NUL-terminated buffer; false if it does not fit
 * or holds a NUL. */
static bool arg_cstr(const kt_resp_arg *a, char *buf, size_t size)
{
    if (a->len >= size || memchr(a->p, '\0', a->len))
        return false;
    memcpy(buf, a->p, a->len);
    buf[a->len] = '\0';
    return true;
}

static void config_set(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    kdb_server *srv = c->srv;
    kdb_cfg next;
    char name[64], value[1024];
    if (argc < 4 || (argc - 2) % 2 != 0) {
        kdb_reply_static(c, "-ERR wrong number of arguments for 'config|set' command\r\n", 0);
        return;
    }
    /* all or nothing: apply every pair to a copy, then swap */
    if (kt_opt_copy(kdb_options, &next, &srv->cfg, sizeof next) < 0) {
        kdb_reply_static(c, "-ERR out of memory\r\n", 0);
        return;
    }
    for (size_t i = 2; i < argc; i += 2) {
        const kt_opt *o = NULL;
        const char *why = "";
        if (!arg_cstr(&argv[i], name, sizeof name) || (o = find_opt(name)) == NULL ||
            (o->flags & KT_OPT_NOFILE)) {
            reply_error(c, "ERR Unknown option or number of arguments for CONFIG SET - '%.*s'",
                        (int)(argv[i].len > 64 ? 64 : argv[i].len), argv[i].p);
            goto fail;
        }
        if (!(o->flags & KT_OPT_RUNTIME)) {
            reply_error(c, "ERR CONFIG SET failed (possibly related to argument '%s') - "
                           "can't set immutable config", o->name);
            goto fail;
        }
        if (!arg_cstr(&argv[i + 1], value, sizeof value) ||
            kt_opt_set(kdb_options, &next, o->name, value, &why) < 0) {
            reply_error(c, "ERR CONFIG SET failed (possibly related to argument '%s') - %s", o->name,
                        why[0] ? why : "value too long");
            goto fail;
        }
    }
    /* the log level is the process's: only an explicit change touches it */
    kt_log_level lvl;
    if (strcmp(next.log_level ? next.log_level : "", srv->cfg.log_level ? srv->cfg.log_level : "") != 0 &&
        kt_log_parse_level(next.log_level, &lvl) == 0)
        kt_log_set_level(lvl);
    kt_opt_free(kdb_options, &srv->cfg);
    srv->cfg = next;
    kdb_server_apply(srv);
    kdb_reply_static(c, "+OK\r\n", 0);
    return;
fail:
    kt_opt_free(kdb_options, &next);
}

static void config_get(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    kt_buf b = { 0 }, items = { 0 };
    kt_out o = kt_buf_out(&items);
    size_t n = 0;
    char pat[128], val[1024];
    for (const kt_opt *opt = kdb_options; opt->name; opt++) {
        if (opt->flags & KT_OPT_NOFILE)
            continue;
        for (size_t i = 2; i < argc; i++) {
            if (!arg_cstr(&argv[i], pat, sizeof pat) || fnmatch(pat, opt->name, FNM_CASEFOLD) != 0)
                continue;
            kt_opt_get(kdb_options, &c->srv->cfg, opt->name, val, sizeof val);
            kt_resp_bulk(&o, opt->name, strlen(opt->name));
            kt_resp_bulk(&o, val, strlen(val));
            n += 2;
            break;
        }
    }
    kt_out ob = kt_buf_out(&b);
    kt_resp_array(&ob, n);
    if (items.len)
        kt_buf_append(&b, items.data, items.len);
    kt_buf_free(&items);
    reply_buf(c, &b);
}

static void cmd_config(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    if (arg_is(&argv[1], "set")) {
        config_set(c, argc, argv);
    } else if (arg_is(&argv[1], "get")) {
        if (argc < 3)
            kdb_reply_static(c, "-ERR wrong number of arguments for 'config|get' command\r\n", 0);
        else
            config_get(c, argc, argv);
    } else if (arg_is(&argv[1], "resetstat") && argc == 2) {
        kdb_server *srv = c->srv;
        memset(&srv->st, 0, sizeof srv->st);
        kt_hist_reset(&srv->h_sched);
        kt_hist_reset(&srv->h_actual);
        kt_hist_reset(&srv->h_late);
        kdb_reply_static(c, "+OK\r\n", 0);
    } else {
        reply_error(c, "ERR unknown subcommand '%.*s'. Try CONFIG HELP.",
                    (int)(argv[1].len > 128 ? 128 : argv[1].len), argv[1].p);
    }
}

/* ---- admin: FAULT ------------------------------------------------------------ */

#define FAULT_MAX_WORDS 40

static void fault_set(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    char store[FAULT_MAX_WORDS][130];
    const char *w[FAULT_MAX_WORDS];
    size_t n = argc - 2;
    const char *why = "";
    kdb_fault_kind k;
    kdb_fault f;
    if (n > FAULT_MAX_WORDS) {
        kdb_reply_static(c, "-ERR syntax error\r\n", 0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!arg_cstr(&argv[i + 2], store[i], sizeof store[i])) {
            kdb_reply_static(c, "-ERR syntax error\r\n", 0);
            return;
        }
        w[i] = store[i];
    }
    if (kdb_fault_parse(w, n, &k, &f, &why) < 0) {
        reply_error(c, "ERR FAULT SET: %s", why);
        return;
    }
    kdb_server_set_fault(c->srv, k, &f, c);
    char d[200];
    kt_log_info("fault %s", kdb_fault_describe(k, &f, d, sizeof d));
    /* the reply of a connection frozen by stop-reading still leaves */
    kdb_reply_static(c, "+OK\r\n", 0);
}

static void fault_clear(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    kdb_fault off = { 0 };
    if (argc == 2) {
        kdb_server_clear_faults(c->srv);
        kdb_reply_static(c, "+OK\r\n", 0);
        return;
    }
    for (size_t i = 2; i < argc; i++) {
        int k;
        for (k = 0; k < KDB_F_COUNT; k++)
            if (arg_is(&argv[i], kdb_fault_name((kdb_fault_kind)k)))
                break;
        if (k == KDB_F_COUNT) {
            reply_error(c, "ERR FAULT CLEAR: unknown fault '%.*s'", (int)(argv[i].len > 64 ? 64 : argv[i].len),
                        argv[i].p);
            return;
        }
    }
    for (size_t i = 2; i < argc; i++)
        for (int k = 0; k < KDB_F_COUNT; k++)
            if (arg_is(&argv[i], kdb_fault_name((kdb_fault_kind)k)))
                kdb_server_set_fault(c->srv, (kdb_fault_kind)k, &off, c);
    kdb_reply_static(c, "+OK\r\n", 0);
}

static void fault_list(kdb_conn *c)
{
    kt_buf b = { 0 };
    kt_out o = kt_buf_out(&b);
    size_t n = 0;
    char d[200];
    const kdb_faults *fs = &c->srv->faults;
    for (int k = 0; k < KDB_F_COUNT; k++)
        n += fs->f[k].prob > 0;
    kt_resp_array(&o, n);
    for (int k = 0; k < KDB_F_COUNT; k++) {
        if (fs->f[k].prob > 0) {
            kdb_fault_describe((kdb_fault_kind)k, &fs->f[k], d, sizeof d);
            kt_resp_bulk(&o, d, strlen(d));
        }
    }
    reply_buf(c, &b);
}

static void cmd_fault(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    if (arg_is(&argv[1], "set") && argc >= 4)
        fault_set(c, argc, argv);
    else if (arg_is(&argv[1], "set"))
        kdb_reply_static(c, "-ERR wrong number of arguments for 'fault|set' command\r\n", 0);
    else if (arg_is(&argv[1], "clear"))
        fault_clear(c, argc, argv);
    else if (arg_is(&argv[1], "list") && argc == 2)
        fault_list(c);
    else
        reply_error(c, "ERR unknown subcommand '%.*s'. Try FAULT SET, FAULT CLEAR or FAULT LIST.",
                    (int)(argv[1].len > 128 ? 128 : argv[1].len), argv[1].p);
}

/* ---- dispatch ------------------------------------------------------------------- */

static const kdb_cmd commands[] = {
    { "get", 2, cmd_get, 0 },
    { "mget", -2, cmd_mget, 0 },
    { "ping", -1, cmd_ping, 0 },
    { "echo", 2, cmd_echo, 0 },
    { "dbsize", 1, cmd_dbsize, 0 },
    { "info", -1, cmd_info, 0 },
    { "quit", -1, cmd_quit, 0 },
    { "auth", -2, cmd_auth, 0 },
    { "command", -1, cmd_command, 0 },
    { "client", -2, cmd_client, 0 },
    { "select", 2, cmd_select, 0 },
    { "config", -2, cmd_config, ADMIN },
    { "fault", -2, cmd_fault, ADMIN },
};

static void unknown_command(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    /* Redis's text: the name, then the first arguments up to ~128 bytes */
    char args[300];
    size_t n = 0;
    args[0] = '\0';
    for (size_t i = 1; i < argc && n < 128; i++) {
        int w = snprintf(args + n, sizeof args - n, "'%.*s' ",
                         (int)(argv[i].len > 128 - n ? 128 - n : argv[i].len), argv[i].p);
        if (w < 0 || (size_t)w >= sizeof args - n)
            break;
        n += (size_t)w;
    }
    reply_error(c, "ERR unknown command '%.*s', with args beginning with: %s",
                (int)(argv[0].len > 128 ? 128 : argv[0].len), argv[0].p, args);
}

void kdb_dispatch(kdb_conn *c, size_t argc, const kt_resp_arg *argv)
{
    const kdb_cmd *cmd = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (arg_is(&argv[0], commands[i].name)) {
            cmd = &commands[i];
            break;
        }
    }
    if (cmd == NULL) {
        unknown_command(c, argc, argv);
        return;
    }
    if ((cmd->arity > 0 && argc != (size_t)cmd->arity) ||
        (cmd->arity < 0 && argc < (size_t)-cmd->arity)) {
        reply_error(c, "ERR wrong number of arguments for '%s' command", cmd->name);
        return;
    }
    if (cmd->flags & ADMIN) {
        const char *pw = c->srv->cfg.admin_password;
        if (!c->srv->cfg.admin) {
            kdb_reply_static(c, "-ERR admin commands are disabled (admin no)\r\n", 0);
            return;
        }
        if (pw && pw[0] && !(c->flags & KDB_CF_AUTHED)) {
            kdb_reply_static(c, "-NOAUTH Authentication required.\r\n", 0);
            return;
        }
    }
    cmd->fn(c, argc, argv);
}
