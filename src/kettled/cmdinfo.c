/*
 * cmdinfo.c - the connection and server commands that are more than one
 * line: COMMAND (with COUNT, INFO, DOCS and LIST, in Redis 7's reply shapes
 * so that redis-cli's interactive help and hints work), CLIENT, HELLO,
 * AUTH and CONFIG. Error texts are Redis's own.
 */
#include "config.h"
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "kd.h"

static bool arg_is(const kt_resp_arg *a, const char *s)
{
    return a->len == strlen(s) && strncasecmp(a->p, s, a->len) == 0;
}

static void reply_subcommand(kd_client *c, const kt_resp_arg *sub, const char *cmd)
{
    kd_srv->st.err_other++;
    kd_client_error(c, "ERR unknown subcommand '%.*s'. Try %s HELP.",
                    (int)(sub->len < 128 ? sub->len : 128), sub->p, cmd);
}

static void reply_sub_arity(kd_client *c, const char *cmd, const char *sub)
{
    kd_srv->st.err_arity++;
    kd_client_error(c, "ERR wrong number of arguments for '%s|%s' command", cmd, sub);
}

static void reply_lines(kd_client *c, const char *const *lines)
{
    size_t n = 0;
    while (lines[n])
        n++;
    kt_out *o = kd_client_out(c);
    if (o == NULL)
        return;
    (void)kt_resp_array(o, n);
    for (size_t i = 0; i < n; i++)
        (void)kt_resp_simple(o, lines[i]);
}

static void bulk_str(kt_out *o, const char *s)
{
    (void)kt_resp_bulk(o, s, strlen(s));
}

/* ---- COMMAND ------------------------------------------------------------------ */

/* Redis 7's COMMAND INFO entry: name, arity, flags, first key, last key,
 * step, ACL categories, tips, key specs, subcommands. */
static void command_info(kt_out *o, const kd_cmd *cmd)
{
    (void)kt_resp_array(o, 10);
    bulk_str(o, cmd->name);
    (void)kt_resp_int(o, cmd->arity);
    size_t nf = 1 + ((cmd->flags & KD_CMD_FAST) != 0) + ((cmd->flags & KD_CMD_NOAUTH) != 0);
    (void)kt_resp_array(o, nf);
    (void)kt_resp_simple(o, (cmd->flags & KD_CMD_FETCH) ? "readonly" : "stale");
    if (cmd->flags & KD_CMD_FAST)
        (void)kt_resp_simple(o, "fast");
    if (cmd->flags & KD_CMD_NOAUTH)
        (void)kt_resp_simple(o, "no_auth");
    (void)kt_resp_int(o, cmd->first_key);
    (void)kt_resp_int(o, cmd->last_key);
    (void)kt_resp_int(o, cmd->key_step);
    (void)kt_resp_array(o, 1);
    char cat[48];
    snprintf(cat, sizeof cat, "@%s", cmd->group);
    (void)kt_resp_simple(o, cat);
    (void)kt_resp_array(o, 0);
    (void)kt_resp_array(o, 0);
    (void)kt_resp_array(o, 0);
}

/* COMMAND DOCS entry (a map as a flat array in RESP2): summary, since,
 * group, arguments - what redis-cli reads for `help` and hints. */
static void command_docs(kt_out *o, const kd_cmd *cmd)
{
    size_t na = 0;
    while (cmd->args[na].name)
        na++;
    bulk_str(o, cmd->name);
    (void)kt_resp_array(o, 8);
    bulk_str(o, "summary");
    bulk_str(o, cmd->summary);
    bulk_str(o, "since");
    bulk_str(o, cmd->since);
    bulk_str(o, "group");
    bulk_str(o, cmd->group);
    bulk_str(o, "arguments");
    (void)kt_resp_array(o, na);
    for (size_t i = 0; i < na; i++) {
        const kd_cmd_arg *a = &cmd->args[i];
        size_t nflags = ((a->flags & KD_ARG_OPTIONAL) != 0) + ((a->flags & KD_ARG_MULTIPLE) != 0);
        (void)kt_resp_array(o, nflags ? 6 : 4);
        bulk_str(o, "name");
        bulk_str(o, a->name);
        bulk_str(o, "type");
        bulk_str(o, a->type);
        if (nflags) {
            bulk_str(o, "flags");
            (void)kt_resp_array(o, nflags);
            if (a->flags & KD_ARG_OPTIONAL)
                (void)kt_resp_simple(o, "optional");
            if (a->flags & KD_ARG_MULTIPLE)
                (void)kt_resp_simple(o, "multiple");
        }
    }
}

void kd_cmd_command(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    static const char *const help[] = {
        "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "(no subcommand)", "    Return details about all commands.",
        "COUNT", "    Return the total number of commands.",
        "DOCS [<command-name> ...]", "    Return documentation details about commands.",
        "INFO [<command-name> ...]", "    Return details about the given commands.",
        "LIST", "    Return a list of all commands.",
        "HELP", "    Print this help.", NULL };
    kt_out *o;
    if (argc == 1) {
        if ((o = kd_client_out(c)) == NULL)
            return;
        (void)kt_resp_array(o, kd_ncmds);
        for (size_t i = 0; i < kd_ncmds; i++)
            command_info(o, &kd_cmds[i]);
        return;
    }
    const kt_resp_arg *sub = &argv[1];
    if (arg_is(sub, "help")) {
        reply_lines(c, help);
    } else if (arg_is(sub, "count")) {
        if (argc != 2)
            { reply_sub_arity(c, "command", "count"); return; }
        if ((o = kd_client_out(c)) != NULL)
            (void)kt_resp_int(o, (int64_t)kd_ncmds);
    } else if (arg_is(sub, "list")) {
        if ((o = kd_client_out(c)) == NULL)
            return;
        (void)kt_resp_array(o, kd_ncmds);
        for (size_t i = 0; i < kd_ncmds; i++)
            bulk_str(o, kd_cmds[i].name);
    } else if (arg_is(sub, "info")) {
        if ((o = kd_client_out(c)) == NULL)
            return;
        if (argc == 2) {
            (void)kt_resp_array(o, kd_ncmds);
            for (size_t i = 0; i < kd_ncmds; i++)
                command_info(o, &kd_cmds[i]);
            return;
        }
        (void)kt_resp_array(o, argc - 2);
        for (size_t i = 2; i < argc; i++) {
            const kd_cmd *cmd = kd_cmd_find(argv[i].p, argv[i].len);
            if (cmd)
                command_info(o, cmd);
            else
                (void)kt_resp_nil_array(o);
        }
    } else if (arg_is(sub, "docs")) {
        if ((o = kd_client_out(c)) == NULL)
            return;
        if (argc == 2) {
            (void)kt_resp_array(o, 2 * kd_ncmds);
            for (size_t i = 0; i < kd_ncmds; i++)
                command_docs(o, &kd_cmds[i]);
            return;
        }
        size_t found = 0;
        for (size_t i = 2; i < argc; i++)
            found += kd_cmd_find(argv[i].p, argv[i].len) != NULL;
        (void)kt_resp_array(o, 2 * found);
        for (size_t i = 2; i < argc; i++) {
            const kd_cmd *cmd = kd_cmd_find(argv[i].p, argv[i].len);
            if (cmd)
                command_docs(o, cmd);
        }
    } else {
        reply_subcommand(c, sub, "COMMAND");
    }
}

/* ---- CLIENT --------------------------------------------------------------------- */

/* Redis's rule: a name is printable ASCII without spaces. */
static bool valid_name(const kt_resp_arg *a)
{
    for (size_t i = 0; i < a->len; i++)
        if (a->p[i] < '!' || a->p[i] > '~')
            return false;
    return true;
}

static bool set_name(kd_client *c, const kt_resp_arg *a)
{
    if (!valid_name(a)) {
        kd_srv->st.err_other++;
        kd_client_error(c, "ERR Client names cannot contain spaces, newlines or special characters.");
        return false;
    }
    char *name = NULL;
    if (a->len && (name = kt_strndup(a->p, a->len)) == NULL) {
        kd_client_error(c, "ERR out of memory");
        return false;
    }
    kd_client_set_name(c, name);
    return true;
}

void kd_cmd_client(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    static const char *const help[] = {
        "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "ID", "    Return the ID of the current connection.",
        "GETNAME", "    Return the name of the current connection.",
        "SETNAME <name>", "    Assign the name <name> to the current connection.",
        "SETINFO <LIB-NAME|LIB-VER> <value>", "    Accepted and ignored.",
        "INFO", "    Return information about the current connection.",
        "LIST", "    Return information about all connections.",
        "HELP", "    Print this help.", NULL };
    const kt_resp_arg *sub = &argv[1];
    kt_out *o;
    if (arg_is(sub, "id")) {
        if (argc != 2)
            { reply_sub_arity(c, "client", "id"); return; }
        if ((o = kd_client_out(c)) != NULL)
            (void)kt_resp_int(o, (int64_t)kd_client_id(c));
    } else if (arg_is(sub, "getname")) {
        if (argc != 2)
            { reply_sub_arity(c, "client", "getname"); return; }
        if ((o = kd_client_out(c)) == NULL)
            return;
        const char *name = kd_client_name(c);
        if (name)
            bulk_str(o, name);
        else
            (void)kt_resp_nil(o);
    } else if (arg_is(sub, "setname")) {
        if (argc != 3)
            { reply_sub_arity(c, "client", "setname"); return; }
        if (set_name(c, &argv[2]) && (o = kd_client_out(c)) != NULL)
            (void)kt_resp_simple(o, "OK");
    } else if (arg_is(sub, "setinfo")) {
        if (argc != 4)
            { reply_sub_arity(c, "client", "setinfo"); return; }
        if (!arg_is(&argv[2], "lib-name") && !arg_is(&argv[2], "lib-ver")) {
            kd_srv->st.err_other++;
            kd_client_error(c, "ERR Unrecognized option '%.*s'",
                            (int)(argv[2].len < 64 ? argv[2].len : 64), argv[2].p);
            return;
        }
        if ((o = kd_client_out(c)) != NULL)
            (void)kt_resp_simple(o, "OK");
    } else if (arg_is(sub, "info") || arg_is(sub, "list")) {
        kt_buf b = { 0 };
        if (arg_is(sub, "info")) {
            kd_client_describe(c, &b);
        } else {
            kd_clients_describe_all(kd_srv, &b);
        }
        if ((o = kd_client_out(c)) != NULL)
            (void)kt_resp_bulk(o, b.data, b.len);
        kt_buf_free(&b);
    } else if (arg_is(sub, "help")) {
        reply_lines(c, help);
    } else {
        reply_subcommand(c, sub, "CLIENT");
    }
}

/* ---- AUTH and HELLO ------------------------------------------------------------------ */

/* Compare without an early exit, so timing does not tell how much matched. */
static bool password_ok(const kt_resp_arg *pass)
{
    const char *want = kd_srv->cfg.requirepass;
    size_t wl = strlen(want);
    unsigned diff = (unsigned)(wl ^ pass->len);
    for (size_t i = 0; i < pass->len; i++)
        diff |= (unsigned char)pass->p[i] ^ (unsigned char)want[i % (wl ? wl : 1)];
    return diff == 0 && wl == pass->len;
}

/* AUTH [user] pass: 0 ok, -1 refused (an error was sent). */
static int check_auth(kd_client *c, const kt_resp_arg *user, const kt_resp_arg *pass)
{
    if (kd_srv->cfg.requirepass == NULL) {
        if (user == NULL) {
            kd_srv->st.err_auth++;
            kd_client_error(c, "ERR AUTH <password> called without any password configured "
                            "for the default user. Are you sure your configuration is correct?");
            return -1;
        }
        if (arg_is(user, "default"))
            return 0;
    } else if ((user == NULL || arg_is(user, "default")) && password_ok(pass)) {
        kd_client_set_authed(c, true);
        return 0;
    }
    kd_srv->st.err_auth++;
    kd_client_error(c, "WRONGPASS invalid username-password pair or user is disabled.");
    return -1;
}

void kd_cmd_auth(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    if (argc > 3) {
        kd_srv->st.err_other++;
        kd_client_error(c, "ERR syntax error");
        return;
    }
    if (check_auth(c, argc == 3 ? &argv[1] : NULL, &argv[argc - 1]) < 0)
        return;
    kt_out *o = kd_client_out(c);
    if (o)
        (void)kt_resp_simple(o, "OK");
}

void kd_cmd_hello(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    size_t i = 1;
    if (argc >= 2) {
        int64_t ver;
        if (kt_parse_i64(argv[1].p, argv[1].len, &ver) < 0) {
            kd_srv->st.err_other++;
            kd_client_error(c, "ERR Protocol version is not an integer or out of range");
            return;
        }
        if (ver < 2 || ver > 3) {
            kd_srv->st.err_other++;
            kd_client_error(c, "NOPROTO unsupported protocol version");
            return;
        }
        if (ver == 3) {
            kd_srv->st.err_other++;
            kd_client_error(c, "NOPROTO unsupported protocol version (kettled speaks RESP2 only)");
            return;
        }
        i = 2;
    }
    const kt_resp_arg *user = NULL, *pass = NULL, *name = NULL;
    for (; i < argc; i++) {
        size_t left = argc - i - 1;
        if (arg_is(&argv[i], "auth") && left >= 2) {
            user = &argv[i + 1];
            pass = &argv[i + 2];
            i += 2;
        } else if (arg_is(&argv[i], "setname") && left >= 1) {
            name = &argv[++i];
        } else {
            kd_srv->st.err_other++;
            kd_client_error(c, "ERR Syntax error in HELLO option '%.*s'",
                            (int)(argv[i].len < 64 ? argv[i].len : 64), argv[i].p);
            return;
        }
    }
    if (pass && check_auth(c, user, pass) < 0)
        return;
    if (kd_srv->cfg.requirepass && !kd_client_authed(c)) {
        kd_srv->st.err_auth++;
        kd_client_error(c, "NOAUTH HELLO must be called with the client already authenticated, "
                        "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                        "authenticate the client and select the RESP protocol version at the "
                        "same time");
        return;
    }
    if (name && !set_name(c, name))
        return;
    kt_out *o = kd_client_out(c);
    if (o == NULL)
        return;
    (void)kt_resp_array(o, 14);
    bulk_str(o, "server");
    bulk_str(o, "kettled");
    bulk_str(o, "version");
    bulk_str(o, KT_VERSION_STRING);
    bulk_str(o, "proto");
    (void)kt_resp_int(o, 2);
    bulk_str(o, "id");
    (void)kt_resp_int(o, (int64_t)kd_client_id(c));
    bulk_str(o, "mode");
    bulk_str(o, "standalone");
    bulk_str(o, "role");
    bulk_str(o, "master");
    bulk_str(o, "modules");
    (void)kt_resp_array(o, 0);
}

/* ---- CONFIG ----------------------------------------------------------------------- */

static void config_get(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    size_t n = 0;
    char pat[256], val[4096];
    const kt_opt *hit[128];
    for (const kt_opt *opt = kd_options; opt->name && n < 128; opt++) {
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
    kt_out *o = kd_client_out(c);
    if (o == NULL)
        return;
    (void)kt_resp_array(o, 2 * n);
    for (size_t i = 0; i < n; i++) {
        bulk_str(o, hit[i]->name);
        const char *v = kt_opt_get(kd_options, &kd_srv->cfg, hit[i]->name, val, sizeof val);
        bulk_str(o, v ? v : "");
    }
}

/* CONFIG SET name value [name value ...]: reloadable options only, checked
 * and applied together exactly as a reload would. */
static void config_set(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    char name[128], value[4096];
    const char *why = NULL;
    if (argc < 4 || (argc - 2) % 2) {
        kd_srv->st.err_arity++;
        kd_client_error(c, "ERR wrong number of arguments for 'config|set' command");
        return;
    }
    kd_config next;
    if (kt_opt_copy(kd_options, &next, &kd_srv->cfg, sizeof next) < 0) {
        kd_client_error(c, "ERR out of memory");
        return;
    }
    for (size_t i = 2; i < argc; i += 2) {
        snprintf(name, sizeof name, "%.*s", (int)argv[i].len, argv[i].p);
        snprintf(value, sizeof value, "%.*s", (int)argv[i + 1].len, argv[i + 1].p);
        for (char *p = name; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        const kt_opt *opt = NULL;
        for (const kt_opt *k = kd_options; k->name; k++)
            if (strcmp(k->name, name) == 0)
                opt = k;
        if (opt == NULL || (opt->flags & KT_OPT_NOFILE)) {
            kd_srv->st.err_other++;
            kd_client_error(c, "ERR Unknown option or number of arguments for CONFIG SET - '%s'", name);
            goto out;
        }
        if (!(opt->flags & KT_OPT_RUNTIME)) {
            kd_srv->st.err_other++;
            kd_client_error(c, "ERR CONFIG SET failed (possibly related to argument '%s') - "
                            "can't set immutable config", name);
            goto out;
        }
        int r = 0;
        if (opt->type == KT_OPT_LIST) {
            /* a list is given whole, separated by spaces or commas */
            r = kt_opt_set(kd_options, &next, name, "", &why);
            for (char *tok = strtok(value, " ,"); tok && r == 0; tok = strtok(NULL, " ,"))
                r = kt_opt_set(kd_options, &next, name, tok, &why);
        } else {
            r = kt_opt_set(kd_options, &next, name, value, &why);
        }
        if (r < 0) {
            kd_srv->st.err_other++;
            kd_client_error(c, "ERR CONFIG SET failed (possibly related to argument '%s') - %s",
                            name, why ? why : "invalid value");
            goto out;
        }
    }
    if (kd_config_validate(&next, &why) < 0 || kd_server_apply(kd_srv, &next, &why) < 0) {
        kd_srv->st.err_other++;
        kd_client_error(c, "ERR CONFIG SET failed - %s", why ? why : "invalid configuration");
        goto out;
    }
    kt_out *o = kd_client_out(c);
    if (o)
        (void)kt_resp_simple(o, "OK");
    return; /* next was moved into the server */
out:
    kd_config_free(&next);
}

void kd_cmd_config(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    static const char *const help[] = {
        "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GET <pattern> [<pattern> ...]", "    Return the options matching the glob-like patterns.",
        "SET <option> <value> [<option> <value> ...]",
        "    Set reloadable options (a list option takes its values separated by spaces).",
        "RESETSTAT", "    Reset the statistics reported by INFO.",
        "HELP", "    Print this help.", NULL };
    const kt_resp_arg *sub = &argv[1];
    if (arg_is(sub, "get")) {
        if (argc < 3)
            { reply_sub_arity(c, "config", "get"); return; }
        config_get(c, argv, argc);
    } else if (arg_is(sub, "set")) {
        config_set(c, argv, argc);
    } else if (arg_is(sub, "resetstat")) {
        if (argc != 2)
            { reply_sub_arity(c, "config", "resetstat"); return; }
        memset(&kd_srv->st, 0, sizeof kd_srv->st);
        for (size_t i = 0; i < kd_ncmds; i++)
            kd_cmds[i].calls = 0;
        kd_pool_reset_stats(kd_srv->pool);
        kt_out *o = kd_client_out(c);
        if (o)
            (void)kt_resp_simple(o, "OK");
    } else if (arg_is(sub, "help")) {
        reply_lines(c, help);
    } else {
        reply_subcommand(c, sub, "CONFIG");
    }
}
