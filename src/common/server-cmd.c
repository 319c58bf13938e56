/*
 * server-cmd.c - the command table and the commands every server has.
 *
 * A request is looked up among the daemon's commands, then the shared
 * ones below; then checked as Redis checks it: unknown command, wrong
 * arity, then authentication. The password (ks_config.password) guards
 * every command but the NOAUTH ones (kettled's requirepass), or only the
 * ADMIN ones (kettle-db's admin-password, with `admin no` refusing them):
 * two policies of one check. Error texts are Redis's own.
 */
#include "config.h"
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "server-int.h"

static void cmd_ping(ks_conn *c, const kt_resp_arg *argv, size_t argc);
static void cmd_echo(ks_conn *c, const kt_resp_arg *argv, size_t argc);
static void cmd_quit(ks_conn *c, const kt_resp_arg *argv, size_t argc);
static void cmd_select(ks_conn *c, const kt_resp_arg *argv, size_t argc);
static void cmd_auth(ks_conn *c, const kt_resp_arg *argv, size_t argc);
static void cmd_hello(ks_conn *c, const kt_resp_arg *argv, size_t argc);
static void cmd_client(ks_conn *c, const kt_resp_arg *argv, size_t argc);

static const ks_arg a_msg_opt[] = { { "message", "string", KS_ARG_OPTIONAL }, { NULL, NULL, 0 } };
static const ks_arg a_msg[] = { { "message", "string", 0 }, { NULL, NULL, 0 } };
static const ks_arg a_none[] = { { NULL, NULL, 0 } };
static const ks_arg a_auth[] = {
    { "username", "string", KS_ARG_OPTIONAL }, { "password", "string", 0 }, { NULL, NULL, 0 } };
static const ks_arg a_hello[] = {
    { "protover", "integer", KS_ARG_OPTIONAL }, { "AUTH username password", "string", KS_ARG_OPTIONAL },
    { "SETNAME clientname", "string", KS_ARG_OPTIONAL }, { NULL, NULL, 0 } };
static const ks_arg a_sub[] = {
    { "subcommand", "string", 0 }, { "arg", "string", KS_ARG_OPTIONAL | KS_ARG_MULTIPLE },
    { NULL, NULL, 0 } };
static const ks_arg a_index[] = { { "index", "integer", 0 }, { NULL, NULL, 0 } };

static const ks_cmd shared[] = {
    { "ping", -1, KS_CMD_FAST, cmd_ping, "connection", "1.0.0",
      "Returns the server's liveliness response.", a_msg_opt, 0, 0, 0 },
    { "echo", 2, KS_CMD_FAST, cmd_echo, "connection", "1.0.0", "Returns the given string.",
      a_msg, 0, 0, 0 },
    { "quit", -1, KS_CMD_NOAUTH | KS_CMD_FAST, cmd_quit, "connection", "1.0.0",
      "Closes the connection.", a_none, 0, 0, 0 },
    { "command", -1, 0, ks_cmd_command, "server", "2.8.13",
      "Returns detailed information about all commands (COUNT, DOCS, INFO, LIST).", a_sub,
      0, 0, 0 },
    { "auth", -2, KS_CMD_NOAUTH | KS_CMD_FAST, cmd_auth, "connection", "1.0.0",
      "Authenticates the connection.", a_auth, 0, 0, 0 },
    { "hello", -1, KS_CMD_NOAUTH | KS_CMD_FAST, cmd_hello, "connection", "6.0.0",
      "Handshakes with the server (protocol 2 only).", a_hello, 0, 0, 0 },
    { "client", -2, 0, cmd_client, "connection", "2.4.0",
      "A container for client connection commands (ID, GETNAME, SETNAME, SETINFO, LIST, INFO).",
      a_sub, 0, 0, 0 },
    { "config", -2, KS_CMD_ADMIN, ks_cmd_config, "server", "2.0.0",
      "A container for server configuration commands (GET, SET, RESETSTAT).", a_sub, 0, 0, 0 },
    { "select", 2, KS_CMD_FAST, cmd_select, "connection", "1.0.0",
      "Changes the selected database (only 0 exists).", a_index, 0, 0, 0 },
};
#define NSHARED (sizeof shared / sizeof shared[0])

/* ---- the table ------------------------------------------------------------------ */

bool ks_arg_is(const kt_resp_arg *a, const char *s)
{
    size_t n = strlen(s);
    return a->len == n && strncasecmp(a->p, s, n) == 0;
}

size_t ks_cmd_count(const ks_server *srv)
{
    return srv->ncmds + NSHARED;
}

const ks_cmd *ks_cmd_at(const ks_server *srv, size_t i)
{
    if (i < srv->ncmds)
        return &srv->d->cmds[i];
    return i - srv->ncmds < NSHARED ? &shared[i - srv->ncmds] : NULL;
}

const ks_cmd *ks_cmd_find(const ks_server *srv, const char *name, size_t len, size_t *index)
{
    size_t n = ks_cmd_count(srv);
    for (size_t i = 0; i < n; i++) {
        const ks_cmd *cmd = ks_cmd_at(srv, i);
        if (strlen(cmd->name) == len && strncasecmp(cmd->name, name, len) == 0) {
            if (index)
                *index = i;
            return cmd;
        }
    }
    return NULL;
}

void ks_reply_arity(ks_conn *c, const char *name)
{
    c->srv->st.err_arity++;
    ks_error_quiet(c, "ERR wrong number of arguments for '%s' command", name);
}

/* Redis's text: the name and the first arguments, quoted, 128 bytes at most. */
static void reply_unknown(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    char args[160];
    size_t n = 0;
    args[0] = '\0';
    for (size_t i = 1; i < argc && n < 128; i++) {
        int w = snprintf(args + n, sizeof args - n, "'%.*s' ",
                         (int)(argv[i].len < 128 - n ? argv[i].len : 128 - n), argv[i].p);
        if (w < 0)
            break;
        n += (size_t)w;
        if (n >= sizeof args)
            n = sizeof args - 1;
    }
    c->srv->st.err_unknown++;
    ks_error_quiet(c, "ERR unknown command '%.*s', with args beginning with: %s",
                   (int)(argv[0].len < 128 ? argv[0].len : 128), argv[0].p, args);
}

/* An HTTP request sent to a RESP port (a browser, or a cross-protocol
 * attack through one): say nothing and hang up, as Redis does. */
static bool http_request(ks_conn *c, const kt_resp_arg *name)
{
    if (!ks_arg_is(name, "host:") && !ks_arg_is(name, "post"))
        return false;
    kt_log_warning("client id=%llu sent an HTTP request: closing it", (unsigned long long)c->id);
    c->srv->st.err_protocol++;
    ks_conn_close(c, KT_CLOSE_FLUSH);
    return true;
}

/* The password check, in both policies. true: go on. */
static bool auth_ok(ks_conn *c, const ks_cmd *cmd)
{
    ks_server *srv = c->srv;
    const ks_config *sc = srv->sc;
    bool guarded = srv->d->auth == KS_AUTH_ALL ? !(cmd->flags & KS_CMD_NOAUTH)
                                               : (cmd->flags & KS_CMD_ADMIN) != 0;
    if (!guarded)
        return true;
    if (srv->d->auth == KS_AUTH_ADMIN && !sc->admin) {
        ks_error(c, "ERR admin commands are disabled (admin no)");
        return false;
    }
    if (sc->password == NULL || sc->password[0] == '\0' || (c->flags & KS_C_AUTHED))
        return true;
    srv->st.err_noauth++;
    ks_error_quiet(c, "NOAUTH Authentication required.");
    return false;
}

void ks_dispatch(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    ks_server *srv = c->srv;
    size_t idx;
    srv->st.commands++;
    const ks_cmd *cmd = ks_cmd_find(srv, argv[0].p, argv[0].len, &idx);
    if (cmd == NULL) {
        if (!http_request(c, &argv[0]))
            reply_unknown(c, argv, argc);
        return;
    }
    if ((cmd->arity > 0 && argc != (size_t)cmd->arity) ||
        (cmd->arity < 0 && argc < (size_t)-cmd->arity)) {
        ks_reply_arity(c, cmd->name);
        return;
    }
    if (!auth_ok(c, cmd))
        return;
    srv->calls[idx]++;
    cmd->fn(c, argv, argc);
}

/* ---- PING, ECHO, QUIT, SELECT ------------------------------------------------------- */

static void cmd_ping(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    if (argc > 2) {
        ks_reply_arity(c, "ping");
        return;
    }
    kt_out *o = ks_reply(c);
    if (o == NULL)
        return;
    if (argc == 2)
        (void)kt_resp_bulk(o, argv[1].p, argv[1].len);
    else
        (void)kt_resp_simple(o, "PONG");
}

static void cmd_echo(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    (void)argc;
    ks_reply_bulk(c, argv[1].p, argv[1].len);
}

static void cmd_quit(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    (void)argv;
    (void)argc;
    ks_reply_ok(c);
    ks_conn_finish(c);
}

static void cmd_select(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    int64_t db;
    (void)argc;
    if (kt_parse_i64(argv[1].p, argv[1].len, &db) < 0)
        ks_error(c, "ERR value is not an integer or out of range");
    else if (db != 0)
        ks_error(c, "ERR DB index is out of range");
    else
        ks_reply_ok(c);
}

/* ---- AUTH and HELLO ------------------------------------------------------------------ */

/* Compare without an early exit, so timing does not tell how much matched. */
static bool password_ok(const char *want, const kt_resp_arg *pass)
{
    size_t wl = strlen(want);
    unsigned diff = (unsigned)(wl ^ pass->len);
    for (size_t i = 0; i < pass->len; i++)
        diff |= (unsigned char)pass->p[i] ^ (unsigned char)want[i % (wl ? wl : 1)];
    return diff == 0 && wl == pass->len;
}

/* AUTH [user] pass: true when accepted (c is authenticated), false when
 * refused (an error was sent; an earlier AUTH still holds, as in Redis). */
static bool check_auth(ks_conn *c, const kt_resp_arg *user, const kt_resp_arg *pass)
{
    ks_server *srv = c->srv;
    const char *want = srv->sc->password;
    if (want == NULL || want[0] == '\0') {
        if (user == NULL) {
            srv->st.err_wrongpass++;
            ks_error_quiet(c, "ERR AUTH <password> called without any password configured "
                           "for the default user. Are you sure your configuration is correct?");
            return false;
        }
        if (ks_arg_is(user, "default"))
            return true; /* the default user has no password: any is accepted */
    } else if ((user == NULL || ks_arg_is(user, "default")) && password_ok(want, pass)) {
        c->flags |= KS_C_AUTHED;
        return true;
    }
    srv->st.err_wrongpass++;
    ks_error_quiet(c, "WRONGPASS invalid username-password pair or user is disabled.");
    return false;
}

static void cmd_auth(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    if (argc > 3) {
        ks_error(c, "ERR syntax error");
        return;
    }
    if (check_auth(c, argc == 3 ? &argv[1] : NULL, &argv[argc - 1]))
        ks_reply_ok(c);
}

/* Redis's rule: a name is printable ASCII without spaces. */
static bool set_name(ks_conn *c, const kt_resp_arg *a)
{
    for (size_t i = 0; i < a->len; i++) {
        if (a->p[i] < '!' || a->p[i] > '~') {
            ks_error(c, "ERR Client names cannot contain spaces, newlines or special characters.");
            return false;
        }
    }
    char *name = NULL;
    if (a->len && (name = kt_strndup(a->p, a->len)) == NULL) {
        ks_error(c, "ERR out of memory");
        return false;
    }
    kt_free(c->name);
    c->name = name;
    return true;
}

static void bulk_str(kt_out *o, const char *s)
{
    (void)kt_resp_bulk(o, s, strlen(s));
}

static void cmd_hello(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    ks_server *srv = c->srv;
    size_t i = 1;
    if (argc >= 2) {
        int64_t ver;
        if (kt_parse_i64(argv[1].p, argv[1].len, &ver) < 0) {
            ks_error(c, "ERR Protocol version is not an integer or out of range");
            return;
        }
        if (ver < 2 || ver > 3) {
            ks_error(c, "NOPROTO unsupported protocol version");
            return;
        }
        if (ver == 3) {
            ks_error(c, "NOPROTO unsupported protocol version (%s speaks RESP2 only)", srv->d->name);
            return;
        }
        i = 2;
    }
    const kt_resp_arg *user = NULL, *pass = NULL, *name = NULL;
    for (; i < argc; i++) {
        size_t left = argc - i - 1;
        if (ks_arg_is(&argv[i], "auth") && left >= 2) {
            user = &argv[i + 1];
            pass = &argv[i + 2];
            i += 2;
        } else if (ks_arg_is(&argv[i], "setname") && left >= 1) {
            name = &argv[++i];
        } else {
            ks_error(c, "ERR Syntax error in HELLO option '%.*s'",
                     (int)(argv[i].len < 64 ? argv[i].len : 64), argv[i].p);
            return;
        }
    }
    if (pass && !check_auth(c, user, pass))
        return;
    const char *want = srv->sc->password;
    if (srv->d->auth == KS_AUTH_ALL && want && want[0] && !(c->flags & KS_C_AUTHED)) {
        srv->st.err_noauth++;
        ks_error_quiet(c, "NOAUTH HELLO must be called with the client already authenticated, "
                       "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                       "authenticate the client and select the RESP protocol version at the "
                       "same time");
        return;
    }
    if (name && !set_name(c, name))
        return;
    kt_out *o = ks_reply(c);
    if (o == NULL)
        return;
    (void)kt_resp_array(o, 14);
    bulk_str(o, "server");
    bulk_str(o, srv->d->name);
    bulk_str(o, "version");
    bulk_str(o, KT_VERSION_STRING);
    bulk_str(o, "proto");
    (void)kt_resp_int(o, 2);
    bulk_str(o, "id");
    (void)kt_resp_int(o, (int64_t)c->id);
    bulk_str(o, "mode");
    bulk_str(o, "standalone");
    bulk_str(o, "role");
    bulk_str(o, "master");
    bulk_str(o, "modules");
    (void)kt_resp_array(o, 0);
}

/* ---- CLIENT ---------------------------------------------------------------------------- */

static void reply_sub_arity(ks_conn *c, const char *cmd, const char *sub)
{
    c->srv->st.err_arity++;
    ks_error_quiet(c, "ERR wrong number of arguments for '%s|%s' command", cmd, sub);
}

static void cmd_client(ks_conn *c, const kt_resp_arg *argv, size_t argc)
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
    static const struct { const char *name; size_t argc; } fixed[] = {
        { "id", 2 }, { "getname", 2 }, { "setname", 3 }, { "setinfo", 4 } };
    const kt_resp_arg *sub = &argv[1];
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        if (ks_arg_is(sub, fixed[i].name) && argc != fixed[i].argc) {
            reply_sub_arity(c, "client", fixed[i].name);
            return;
        }
    }
    if (ks_arg_is(sub, "id")) {
        ks_reply_int(c, (int64_t)c->id);
    } else if (ks_arg_is(sub, "getname")) {
        kt_out *o = ks_reply(c);
        if (o && c->name)
            bulk_str(o, c->name);
        else if (o)
            (void)kt_resp_nil(o);
    } else if (ks_arg_is(sub, "setname")) {
        if (set_name(c, &argv[2]))
            ks_reply_ok(c);
    } else if (ks_arg_is(sub, "setinfo")) {
        if (!ks_arg_is(&argv[2], "lib-name") && !ks_arg_is(&argv[2], "lib-ver"))
            ks_error(c, "ERR Unrecognized option '%.*s'",
                     (int)(argv[2].len < 64 ? argv[2].len : 64), argv[2].p);
        else
            ks_reply_ok(c);
    } else if (ks_arg_is(sub, "info") || ks_arg_is(sub, "list")) {
        kt_buf b = { 0 };
        if (ks_arg_is(sub, "info"))
            ks_conn_describe(c, &b);
        else
            for (const ks_conn *k = c->srv->head; k; k = k->next)
                ks_conn_describe(k, &b);
        ks_reply_bulk(c, b.data, b.len);
        kt_buf_free(&b);
    } else if (ks_arg_is(sub, "help")) {
        ks_reply_lines(c, help);
    } else {
        ks_error(c, "ERR unknown subcommand '%.*s'. Try CLIENT HELP.",
                 (int)(sub->len < 128 ? sub->len : 128), sub->p);
    }
}
