/*
 * cmd.c - kettle-db's own commands: GET and MGET (delayed, faulted),
 * DBSIZE, INFO, and the admin command FAULT (SET/CLEAR/LIST). PING, ECHO,
 * QUIT, AUTH, HELLO, SELECT, CLIENT, COMMAND and CONFIG are the server
 * core's; CONFIG and FAULT are admin commands (option `admin`, password
 * `admin-password`). Errors use Redis's texts.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "kdb.h"

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

/* ---- data commands ------------------------------------------------------------- */

static void cmd_get(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    int64_t key;
    bool bad = kt_parse_i64(argv[1].p, argv[1].len, &key) < 0;
    (void)argc;
    if (kdb_submit_get(c, key, bad) < 0)
        ks_error(c, "ERR out of memory");
}

static void cmd_mget(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    if (kdb_submit_mget(c, argv + 1, argc - 1) < 0)
        ks_error(c, "ERR out of memory");
}

static void cmd_dbsize(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    (void)argv;
    (void)argc;
    ks_reply_int(c, kdb_of(c)->cfg.keyspace);
}

static void cmd_info(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    ks_info(c, argv, argc, kdb_info_sections);
}

/* ---- admin: FAULT ------------------------------------------------------------ */

#define FAULT_MAX_WORDS 40

static void fault_set(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    char store[FAULT_MAX_WORDS][130];
    const char *w[FAULT_MAX_WORDS];
    size_t n = argc - 2;
    const char *why = "";
    kdb_fault_kind k;
    kdb_fault f;
    if (n > FAULT_MAX_WORDS) {
        ks_error(c, "ERR syntax error");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!arg_cstr(&argv[i + 2], store[i], sizeof store[i])) {
            ks_error(c, "ERR syntax error");
            return;
        }
        w[i] = store[i];
    }
    if (kdb_fault_parse(w, n, &k, &f, &why) < 0) {
        ks_error(c, "ERR FAULT SET: %s", why);
        return;
    }
    kdb_server_set_fault(kdb_of(c), k, &f, c);
    char d[200];
    kt_log_info("fault %s", kdb_fault_describe(k, &f, d, sizeof d));
    /* the reply of a connection frozen by stop-reading still leaves */
    ks_reply_ok(c);
}

static void fault_clear(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    kdb_fault off = { 0 };
    if (argc == 2) {
        kdb_server_clear_faults(kdb_of(c));
        ks_reply_ok(c);
        return;
    }
    for (size_t i = 2; i < argc; i++) {
        int k;
        for (k = 0; k < KDB_F_COUNT; k++)
            if (ks_arg_is(&argv[i], kdb_fault_name((kdb_fault_kind)k)))
                break;
        if (k == KDB_F_COUNT) {
            ks_error(c, "ERR FAULT CLEAR: unknown fault '%.*s'",
                     (int)(argv[i].len > 64 ? 64 : argv[i].len), argv[i].p);
            return;
        }
    }
    for (size_t i = 2; i < argc; i++)
        for (int k = 0; k < KDB_F_COUNT; k++)
            if (ks_arg_is(&argv[i], kdb_fault_name((kdb_fault_kind)k)))
                kdb_server_set_fault(kdb_of(c), (kdb_fault_kind)k, &off, c);
    ks_reply_ok(c);
}

static void fault_list(ks_conn *c)
{
    size_t n = 0;
    char d[200];
    const kdb_faults *fs = &kdb_of(c)->faults;
    for (int k = 0; k < KDB_F_COUNT; k++)
        n += fs->f[k].prob > 0;
    kt_out *o = ks_reply(c);
    if (o == NULL)
        return;
    (void)kt_resp_array(o, n);
    for (int k = 0; k < KDB_F_COUNT; k++) {
        if (fs->f[k].prob > 0) {
            kdb_fault_describe((kdb_fault_kind)k, &fs->f[k], d, sizeof d);
            (void)kt_resp_bulk(o, d, strlen(d));
        }
    }
}

static void cmd_fault(ks_conn *c, const kt_resp_arg *argv, size_t argc)
{
    if (ks_arg_is(&argv[1], "set") && argc >= 4)
        fault_set(c, argv, argc);
    else if (ks_arg_is(&argv[1], "set"))
        ks_reply_arity(c, "fault|set");
    else if (ks_arg_is(&argv[1], "clear"))
        fault_clear(c, argv, argc);
    else if (ks_arg_is(&argv[1], "list") && argc == 2)
        fault_list(c);
    else
        ks_error(c, "ERR unknown subcommand '%.*s'. Try FAULT SET, FAULT CLEAR or FAULT LIST.",
                 (int)(argv[1].len > 128 ? 128 : argv[1].len), argv[1].p);
}

/* ---- the table -------------------------------------------------------------------- */

static const ks_arg a_key[] = { { "key", "key", 0 }, { NULL, NULL, 0 } };
static const ks_arg a_keys[] = { { "key", "key", KS_ARG_MULTIPLE }, { NULL, NULL, 0 } };
static const ks_arg a_none[] = { { NULL, NULL, 0 } };
static const ks_arg a_sections[] = {
    { "section", "string", KS_ARG_OPTIONAL | KS_ARG_MULTIPLE }, { NULL, NULL, 0 } };
static const ks_arg a_fault[] = {
    { "subcommand", "string", 0 }, { "name probability [args]", "string", KS_ARG_OPTIONAL },
    { NULL, NULL, 0 } };

/* GET and MGET first: the lookup is a scan and they are what is asked for. */
const ks_cmd kdb_cmds[] = {
    { "get", 2, KS_CMD_READONLY | KS_CMD_FAST, cmd_get, "string", "1.0.0",
      "The number n, after the simulated delay (nil outside the keyspace).", a_key, 1, 1, 1 },
    { "mget", -2, KS_CMD_READONLY | KS_CMD_FAST, cmd_mget, "string", "1.0.0",
      "Several numbers; their delays run side by side.", a_keys, 1, -1, 1 },
    { "dbsize", 1, KS_CMD_READONLY | KS_CMD_FAST, cmd_dbsize, "server", "1.0.0",
      "The size of the number space (keyspace).", a_none, 0, 0, 0 },
    { "info", -1, 0, cmd_info, "server", "1.0.0",
      "Returns information and statistics about the server.", a_sections, 0, 0, 0 },
    { "fault", -2, KS_CMD_ADMIN, cmd_fault, "server", "0.1.0",
      "Injects faults: FAULT SET name probability [args], FAULT CLEAR [name ...], FAULT LIST.",
      a_fault, 0, 0, 0 },
    { NULL, 0, 0, NULL, NULL, NULL, NULL, NULL, 0, 0, 0 },
};
