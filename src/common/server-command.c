/*
 * server-command.c - COMMAND, from the command table: COUNT, INFO, DOCS
 * and LIST in Redis 7's reply shapes, so that redis-cli's interactive help
 * and hints work against every kettle server.
 */
#include "config.h"
#include <stdio.h>
#include <string.h>
#include "server-int.h"

static void bulk_str(kt_out *o, const char *s)
{
    (void)kt_resp_bulk(o, s, strlen(s));
}

/* Redis 7's COMMAND INFO entry: name, arity, flags, first key, last key,
 * step, ACL categories, tips, key specs, subcommands. */
static void command_info(kt_out *o, const ks_cmd *cmd)
{
    (void)kt_resp_array(o, 10);
    bulk_str(o, cmd->name);
    (void)kt_resp_int(o, cmd->arity);
    size_t nf = 1 + ((cmd->flags & KS_CMD_FAST) != 0) + ((cmd->flags & KS_CMD_NOAUTH) != 0);
    (void)kt_resp_array(o, nf);
    (void)kt_resp_simple(o, (cmd->flags & KS_CMD_READONLY) ? "readonly" : "stale");
    if (cmd->flags & KS_CMD_FAST)
        (void)kt_resp_simple(o, "fast");
    if (cmd->flags & KS_CMD_NOAUTH)
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
static void command_docs(kt_out *o, const ks_cmd *cmd)
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
        const ks_arg *a = &cmd->args[i];
        size_t nflags = ((a->flags & KS_ARG_OPTIONAL) != 0) + ((a->flags & KS_ARG_MULTIPLE) != 0);
        (void)kt_resp_array(o, nflags ? 6 : 4);
        bulk_str(o, "name");
        bulk_str(o, a->name);
        bulk_str(o, "type");
        bulk_str(o, a->type);
        if (nflags) {
            bulk_str(o, "flags");
            (void)kt_resp_array(o, nflags);
            if (a->flags & KS_ARG_OPTIONAL)
                (void)kt_resp_simple(o, "optional");
            if (a->flags & KS_ARG_MULTIPLE)
                (void)kt_resp_simple(o, "multiple");
        }
    }
}

/* Every command's INFO entry, or DOCS entries (two items each). */
static void all_commands(const ks_server *srv, kt_out *o, bool docs)
{
    size_t n = ks_cmd_count(srv);
    (void)kt_resp_array(o, docs ? 2 * n : n);
    for (size_t i = 0; i < n; i++) {
        if (docs)
            command_docs(o, ks_cmd_at(srv, i));
        else
            command_info(o, ks_cmd_at(srv, i));
    }
}

/* The named commands' entries: INFO answers nil for an unknown name,
 * DOCS leaves it out. */
static void named_commands(const ks_server *srv, kt_out *o, const kt_resp_arg *names, size_t n,
                           bool docs)
{
    size_t found = 0;
    for (size_t i = 0; i < n; i++)
        found += ks_cmd_find(srv, names[i].p, names[i].len, NULL) != NULL;
    (void)kt_resp_array(o, docs ? 2 * found : n);
    for (size_t i = 0; i < n; i++) {
        const ks_cmd *cmd = ks_cmd_find(srv, names[i].p, names[i].len, NULL);
        if (cmd && docs)
            command_docs(o, cmd);
        else if (cmd)
            command_info(o, cmd);
        else if (!docs)
            (void)kt_resp_nil_array(o);
    }
}

void ks_cmd_command(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    static const char *const help[] = {
        "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "(no subcommand)", "    Return details about all commands.",
        "COUNT", "    Return the total number of commands.",
        "DOCS [<command-name> ...]", "    Return documentation details about commands.",
        "INFO [<command-name> ...]", "    Return details about the given commands.",
        "LIST", "    Return a list of all commands.",
        "HELP", "    Print this help.", NULL };
    const ks_server *srv = c->srv;
    const kt_resp_arg *sub = &argv[1];
    kt_out *o;
    if (argc > 1 && ks_arg_is(sub, "help")) {
        ks_reply_lines(c, help);
        return;
    }
    if (argc > 1 && ks_arg_is(sub, "count") && argc != 2) {
        c->srv->st.err_arity++;
        ks_error_quiet(c, "ERR wrong number of arguments for 'command|count' command");
        return;
    }
    if (argc > 1 && !ks_arg_is(sub, "count") && !ks_arg_is(sub, "list") &&
        !ks_arg_is(sub, "info") && !ks_arg_is(sub, "docs")) {
        ks_error(c, "ERR unknown subcommand '%.*s'. Try COMMAND HELP.",
                 (int)(sub->len < 128 ? sub->len : 128), sub->p);
        return;
    }
    if ((o = ks_reply(c)) == NULL)
        return;
    if (argc == 1) {
        all_commands(srv, o, false);
    } else if (ks_arg_is(sub, "count")) {
        (void)kt_resp_int(o, (int64_t)ks_cmd_count(srv));
    } else if (ks_arg_is(sub, "list")) {
        size_t n = ks_cmd_count(srv);
        (void)kt_resp_array(o, n);
        for (size_t i = 0; i < n; i++)
            bulk_str(o, ks_cmd_at(srv, i)->name);
    } else {
        bool docs = ks_arg_is(sub, "docs");
        if (argc == 2)
            all_commands(srv, o, docs);
        else
            named_commands(srv, o, argv + 2, argc - 2, docs);
    }
}
