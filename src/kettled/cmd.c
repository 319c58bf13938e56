/*
 * cmd.c - the command table and the commands that fetch from the database.
 *
 * GET, MGET, MGETSEQ and MGETANY are the explanation's get_numbers() in
 * three shapes, each a composition of futures from the pool:
 *
 *   GET n            fetch(n)
 *   MGET n1 .. nk    all(fetch(n1), .., fetch(nk))          concurrently; per-item results
 *   MGETSEQ n1 .. nk sequence(fetch(n1) then fetch(n2) ..)  one after another
 *   MGETANY n1 .. nk race(fetch(n1), .., fetch(nk))         first to arrive wins, the rest cancelled
 *
 * and request-timeout wraps each in kt_timeout: at the deadline the
 * outstanding fetches are cancelled and the reply carries what arrived.
 * The other commands answer at once (cmdinfo.c holds the larger ones).
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "kd.h"

static void cmd_get(kd_client *c, const kt_resp_arg *argv, size_t argc);
static void cmd_mget(kd_client *c, const kt_resp_arg *argv, size_t argc);
static void cmd_mgetseq(kd_client *c, const kt_resp_arg *argv, size_t argc);
static void cmd_mgetany(kd_client *c, const kt_resp_arg *argv, size_t argc);
static void cmd_ping(kd_client *c, const kt_resp_arg *argv, size_t argc);
static void cmd_echo(kd_client *c, const kt_resp_arg *argv, size_t argc);
static void cmd_quit(kd_client *c, const kt_resp_arg *argv, size_t argc);
static void cmd_info(kd_client *c, const kt_resp_arg *argv, size_t argc);
static void cmd_select(kd_client *c, const kt_resp_arg *argv, size_t argc);

static const kd_cmd_arg a_key[] = { { "key", "key", 0 }, { NULL, NULL, 0 } };
static const kd_cmd_arg a_keys[] = { { "key", "key", KD_ARG_MULTIPLE }, { NULL, NULL, 0 } };
static const kd_cmd_arg a_msg_opt[] = { { "message", "string", KD_ARG_OPTIONAL }, { NULL, NULL, 0 } };
static const kd_cmd_arg a_msg[] = { { "message", "string", 0 }, { NULL, NULL, 0 } };
static const kd_cmd_arg a_none[] = { { NULL, NULL, 0 } };
static const kd_cmd_arg a_sections[] = {
    { "section", "string", KD_ARG_OPTIONAL | KD_ARG_MULTIPLE }, { NULL, NULL, 0 } };
static const kd_cmd_arg a_auth[] = {
    { "username", "string", KD_ARG_OPTIONAL }, { "password", "string", 0 }, { NULL, NULL, 0 } };
static const kd_cmd_arg a_hello[] = {
    { "protover", "integer", KD_ARG_OPTIONAL }, { "AUTH username password", "string", KD_ARG_OPTIONAL },
    { "SETNAME clientname", "string", KD_ARG_OPTIONAL }, { NULL, NULL, 0 } };
static const kd_cmd_arg a_sub[] = {
    { "subcommand", "string", 0 }, { "arg", "string", KD_ARG_OPTIONAL | KD_ARG_MULTIPLE },
    { NULL, NULL, 0 } };
static const kd_cmd_arg a_index[] = { { "index", "integer", 0 }, { NULL, NULL, 0 } };

/* GET and MGET first: the lookup is a scan and they are what is asked for. */
kd_cmd kd_cmds[] = {
    { "get", 2, KD_CMD_FETCH | KD_CMD_FAST, cmd_get, "string", "1.0.0",
      "Fetch the number stored at key from the database.", a_key, 1, 1, 1, 0 },
    { "mget", -2, KD_CMD_FETCH | KD_CMD_FAST, cmd_mget, "string", "1.0.0",
      "Fetch several numbers at once (concurrently); a key that failed is an error element.",
      a_keys, 1, -1, 1, 0 },
    { "mgetseq", -2, KD_CMD_FETCH, cmd_mgetseq, "string", "0.1.0",
      "Fetch several numbers one after another, each awaited before the next starts.",
      a_keys, 1, -1, 1, 0 },
    { "mgetany", -2, KD_CMD_FETCH | KD_CMD_FAST, cmd_mgetany, "string", "0.1.0",
      "Fetch several numbers at once and answer with the first to arrive; cancel the rest.",
      a_keys, 1, -1, 1, 0 },
    { "ping", -1, KD_CMD_FAST, cmd_ping, "connection", "1.0.0",
      "Returns the server's liveliness response.", a_msg_opt, 0, 0, 0, 0 },
    { "echo", 2, KD_CMD_FAST, cmd_echo, "connection", "1.0.0", "Returns the given string.",
      a_msg, 0, 0, 0, 0 },
    { "quit", -1, KD_CMD_NOAUTH | KD_CMD_FAST, cmd_quit, "connection", "1.0.0",
      "Closes the connection.", a_none, 0, 0, 0, 0 },
    { "info", -1, 0, cmd_info, "server", "1.0.0",
      "Returns information and statistics about the server.", a_sections, 0, 0, 0, 0 },
    { "command", -1, 0, kd_cmd_command, "server", "2.8.13",
      "Returns detailed information about all commands (COUNT, DOCS, INFO, LIST).", a_sub,
      0, 0, 0, 0 },
    { "auth", -2, KD_CMD_NOAUTH | KD_CMD_FAST, kd_cmd_auth, "connection", "1.0.0",
      "Authenticates the connection.", a_auth, 0, 0, 0, 0 },
    { "hello", -1, KD_CMD_NOAUTH | KD_CMD_FAST, kd_cmd_hello, "connection", "6.0.0",
      "Handshakes with the server (protocol 2 only).", a_hello, 0, 0, 0, 0 },
    { "client", -2, 0, kd_cmd_client, "connection", "2.4.0",
      "A container for client connection commands (ID, GETNAME, SETNAME, SETINFO, LIST, INFO).",
      a_sub, 0, 0, 0, 0 },
    { "config", -2, 0, kd_cmd_config, "server", "2.0.0",
      "A container for server configuration commands (GET, SET, RESETSTAT).", a_sub, 0, 0, 0, 0 },
    { "select", 2, KD_CMD_FAST, cmd_select, "connection", "1.0.0",
      "Changes the selected database (only 0 exists).", a_index, 0, 0, 0, 0 },
};
const size_t kd_ncmds = sizeof kd_cmds / sizeof kd_cmds[0];

kd_cmd *kd_cmd_find(const char *name, size_t len)
{
    for (size_t i = 0; i < kd_ncmds; i++) {
        const char *n = kd_cmds[i].name;
        if (strlen(n) == len && strncasecmp(n, name, len) == 0)
            return &kd_cmds[i];
    }
    return NULL;
}

void kd_reply_arity(kd_client *c, const char *name)
{
    kd_srv->st.err_arity++;
    kd_client_error(c, "ERR wrong number of arguments for '%s' command", name);
}

/* Redis's text: the name and the first arguments, quoted, 128 bytes at most. */
static void reply_unknown(kd_client *c, const kt_resp_arg *argv, size_t argc)
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
    kd_srv->st.err_unknown++;
    kd_client_error(c, "ERR unknown command '%.*s', with args beginning with: %s",
                    (int)(argv[0].len < 128 ? argv[0].len : 128), argv[0].p, args);
}

void kd_cmd_dispatch(kd_client *c, const kt_resp_req *req)
{
    kd_server *srv = kd_srv;
    const kt_resp_arg *argv = req->argv;
    size_t argc = req->argc;
    srv->st.commands++;
    kd_cmd *cmd = kd_cmd_find(argv[0].p, argv[0].len);
    if (cmd == NULL) {
        if ((argv[0].len == 5 && strncasecmp(argv[0].p, "host:", 5) == 0) ||
            (argv[0].len == 4 && strncasecmp(argv[0].p, "post", 4) == 0)) {
            /* An HTTP request sent to us (a browser, or a cross-protocol
             * attack through one): say nothing and hang up, as Redis does. */
            kt_log_warning("client id=%llu sent an HTTP request: closing it",
                           (unsigned long long)kd_client_id(c));
            srv->st.err_protocol++;
            kd_client_close(c, KT_CLOSE_FLUSH);
            return;
        }
        reply_unknown(c, argv, argc);
        return;
    }
    if (srv->cfg.requirepass && !kd_client_authed(c) && !(cmd->flags & KD_CMD_NOAUTH)) {
        srv->st.err_auth++;
        kd_client_error(c, "NOAUTH Authentication required.");
        return;
    }
    if ((cmd->arity > 0 && argc != (size_t)cmd->arity) ||
        (cmd->arity < 0 && argc < (size_t)-cmd->arity)) {
        kd_reply_arity(c, cmd->name);
        return;
    }
    cmd->calls++;
    cmd->fn(c, argv, argc);
}

/* ---- the fetch commands ------------------------------------------------------- */

static void cmd_get(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    (void)argc;
    kd_req *r = kd_req_new(c, KD_R_GET);
    if (r == NULL) {
        kd_client_error(c, "ERR out of memory");
        return;
    }
    r->n = 1;
    kd_req_submit(r, kd_pool_fetch(kd_srv->pool, argv[1].p, argv[1].len));
}

static bool check_keys(kd_client *c, size_t n)
{
    if (n > (size_t)kd_srv->cfg.max_keys) {
        kd_srv->st.err_other++;
        kd_client_error(c, "ERR too many keys: %zu (max-keys is %lld)", n,
                        (long long)kd_srv->cfg.max_keys);
        return false;
    }
    return true;
}

/* Start one fetch per key into srv->fs. false (and nothing left held) on ENOMEM. */
static bool fetch_all(const kt_resp_arg *keys, size_t n)
{
    kd_server *srv = kd_srv;
    if (n > srv->fs_cap) {
        kt_future **fs = kt_realloc(srv->fs, n * sizeof *fs);
        if (fs == NULL)
            return false;
        srv->fs = fs;
        srv->fs_cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        if ((srv->fs[i] = kd_pool_fetch(srv->pool, keys[i].p, keys[i].len)) == NULL) {
            while (i--) {
                (void)kt_future_cancel(srv->fs[i]);
                kt_future_unref(srv->fs[i]);
            }
            return false;
        }
    }
    return true;
}

/* Drop our references on srv->fs (the combinator holds its own); on
 * failure to build it, cancel them too. */
static void release_all(size_t n, bool cancel)
{
    for (size_t i = 0; i < n; i++) {
        if (cancel)
            (void)kt_future_cancel(kd_srv->fs[i]);
        kt_future_unref(kd_srv->fs[i]);
    }
}

static void cmd_mget(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    size_t n = argc - 1;
    if (!check_keys(c, n))
        return;
    kd_req *r = kd_req_new(c, KD_R_MGET);
    if (r == NULL || !fetch_all(argv + 1, n)) {
        if (r)
            kd_req_free(r);
        kd_client_error(c, "ERR out of memory");
        return;
    }
    kt_future *all = kt_all(kd_srv->loop, kd_srv->fs, n);
    release_all(n, all == NULL);
    r->n = (uint32_t)n;
    if (all) {
        r->inner = all;
        kt_future_ref(all);
    }
    kd_req_submit(r, all);
}

static void cmd_mgetany(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    size_t n = argc - 1;
    if (!check_keys(c, n))
        return;
    kd_req *r = kd_req_new(c, KD_R_ANY);
    if (r == NULL || !fetch_all(argv + 1, n)) {
        if (r)
            kd_req_free(r);
        kd_client_error(c, "ERR out of memory");
        return;
    }
    kt_future *race = kt_race(kd_srv->loop, kd_srv->fs, n);
    release_all(n, race == NULL);
    r->n = (uint32_t)n;
    kd_req_submit(r, race);
}

/* Sequence step i: fetch key i (the keys were copied into r->out). */
static kt_future *seq_start_cb(size_t i, void *arg)
{
    kd_req *r = arg;
    return kd_pool_fetch(kd_srv->pool, r->out.data + r->koff[i], r->koff[i + 1] - r->koff[i]);
}

static void cmd_mgetseq(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    size_t n = argc - 1;
    if (!check_keys(c, n))
        return;
    kd_req *r = kd_req_new(c, KD_R_SEQ);
    if (r == NULL || (r->koff = kt_malloc((n + 1) * sizeof *r->koff)) == NULL)
        goto nomem;
    /* The keys are needed after this request's bytes are gone: copy them. */
    r->koff[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (kt_buf_append(&r->out, argv[i + 1].p, argv[i + 1].len) < 0)
            goto nomem;
        r->koff[i + 1] = (uint32_t)r->out.len;
    }
    r->n = (uint32_t)n;
    kt_future *seq = kt_sequence(kd_srv->loop, n, seq_start_cb, r);
    if (seq) {
        r->inner = seq;
        kt_future_ref(seq);
    }
    kd_req_submit(r, seq);
    return;
nomem:
    if (r)
        kd_req_free(r);
    kd_client_error(c, "ERR out of memory");
}

/* One value: the number, nil, or the error that stands in its place. */
static void encode_value(kt_out *o, const kt_future *f)
{
    kd_server *srv = kd_srv;
    if (f == NULL) /* a sequence item never started: the deadline came first */
        goto timeout;
    switch (kt_future_state_of(f)) {
    case KT_FUTURE_RESOLVED: {
        const kd_blob *b = kt_future_value(f);
        if (b)
            (void)kt_resp_bulk(o, b->data, b->len);
        else
            (void)kt_resp_bulk_i64(o, kt_future_i64(f));
        return;
    }
    case KT_FUTURE_FAILED:
        switch (kt_future_error(f)) {
        case -ENOENT:
            srv->st.nil_values++;
            (void)kt_resp_nil(o);
            return;
        case -ETIMEDOUT:
            goto timeout;
        case -ENOMEM:
            srv->st.err_backend++;
            (void)kt_resp_error(o, "ERR out of memory");
            return;
        default:
            srv->st.err_backend++;
            (void)kt_resp_error(o, "%s", kt_future_errmsg(f));
            return;
        }
    default: /* cancelled: only our own deadline cancels a request still answered */
        goto timeout;
    }
timeout:
    (void)kt_resp_error(o, "ERR request timed out after %llu ms (request-timeout)",
                        (unsigned long long)(srv->cfg.request_timeout / KT_MSEC(1)));
}

void kd_cmd_reply(kd_req *r, kt_out *o)
{
    switch (r->kind) {
    case KD_R_GET:
    case KD_R_ANY:
        encode_value(o, r->f);
        break;
    case KD_R_MGET:
    case KD_R_SEQ:
        (void)kt_resp_array(o, r->n);
        for (uint32_t i = 0; i < r->n; i++)
            encode_value(o, r->inner ? kt_all_item(r->inner, i) : NULL);
        break;
    default:
        break;
    }
}

/* ---- the immediate commands ------------------------------------------------------ */

static void cmd_ping(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    if (argc > 2) {
        kd_reply_arity(c, "ping");
        return;
    }
    kt_out *o = kd_client_out(c);
    if (o == NULL)
        return;
    if (argc == 2)
        (void)kt_resp_bulk(o, argv[1].p, argv[1].len);
    else
        (void)kt_resp_simple(o, "PONG");
}

static void cmd_echo(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    (void)argc;
    kt_out *o = kd_client_out(c);
    if (o)
        (void)kt_resp_bulk(o, argv[1].p, argv[1].len);
}

static void cmd_quit(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    (void)argv;
    (void)argc;
    kt_out *o = kd_client_out(c);
    if (o == NULL)
        return;
    (void)kt_resp_simple(o, "OK");
    kd_client_finish(c);
}

static void cmd_info(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    kt_buf b = { 0 };
    kd_info(kd_srv, argv + 1, argc - 1, &b);
    kt_out *o = kd_client_out(c);
    if (o)
        (void)kt_resp_bulk(o, b.data, b.len);
    kt_buf_free(&b);
}

static void cmd_select(kd_client *c, const kt_resp_arg *argv, size_t argc)
{
    int64_t db;
    (void)argc;
    if (kt_parse_i64(argv[1].p, argv[1].len, &db) < 0) {
        kd_srv->st.err_other++;
        kd_client_error(c, "ERR value is not an integer or out of range");
    } else if (db != 0) {
        kd_srv->st.err_other++;
        kd_client_error(c, "ERR DB index is out of range");
    } else {
        kt_out *o = kd_client_out(c);
        if (o)
            (void)kt_resp_simple(o, "OK");
    }
}
