/*
 * opt.h - table-driven options for the kettle programs.
 *
 * One table describes every option of a program: its name (the same on the
 * command line as --name and in the config file as `name = value`), its
 * type, where it lives in the program's config struct, its default and a
 * one-line help. The same table parses argv, loads the INI file (libinih),
 * applies runtime changes (CONFIG SET), prints --help and renders the
 * documented config file, so the four never disagree.
 */
#ifndef KETTLE_OPT_H
#define KETTLE_OPT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdbool.h>

typedef enum kt_opt_type {
    KT_OPT_STR,      /* char * (kt_malloc'd copy) */
    KT_OPT_INT,      /* int64_t */
    KT_OPT_SIZE,     /* uint64_t bytes: "64k", "1mb" */
    KT_OPT_DURATION, /* uint64_t nanoseconds: "250ms"; a bare number is in `unit` */
    KT_OPT_BOOL,     /* bool: yes/no, true/false, on/off, 1/0 */
    KT_OPT_DOUBLE,   /* double */
    KT_OPT_LIST,     /* struct kt_opt_list: repeatable (listen, backend) */
} kt_opt_type;

/* The values of a repeatable option, in the order given. A command-line
 * occurrence replaces the config file's list (first occurrence clears it). */
typedef struct kt_opt_list {
    char **items;
    size_t n;
} kt_opt_list;

typedef struct kt_opt {
    const char *name;
    kt_opt_type type;
    size_t offset;       /* offsetof(struct cfg, field) */
    const char *def;     /* default as text (NULL: empty) */
    const char *help;    /* one line */
    int64_t min, max;    /* bounds for INT (both 0: unbounded) */
    uint64_t unit;       /* DURATION: ns of a bare number (0: ms) */
    /* Optional extra check: 0, or -EINVAL with *why set to static text. */
    int (*check)(const char *value, const char **why);
    unsigned flags;      /* KT_OPT_* flags below */
} kt_opt;

#define KT_OPT_RUNTIME 0x1u /* may change at run time (CONFIG SET, reload) */
#define KT_OPT_SECRET  0x2u /* never printed back (passwords) */
#define KT_OPT_NOFILE  0x4u /* command line only (e.g. config file path) */

#define KT_OPT_END { NULL, 0, 0, NULL, NULL, 0, 0, 0, NULL, 0 }

/* A finite number in strtod's syntax filling the whole of s: 0, or
 * -EINVAL (nothing else is written then). */
int kt_opt_parse_double(const char *s, double *out);

/* Checkers shared by the programs' tables (kt_opt.check): an address
 * kt_addr_parse takes, an I/O backend name, a log level name. */
int kt_opt_check_addr(const char *value, const char **why);
int kt_opt_check_io(const char *value, const char **why);
/* io-batch-wait: a duration of at most 10 ms. */
int kt_opt_check_batch_wait(const char *value, const char **why);
int kt_opt_check_level(const char *value, const char **why);

/* Fill cfg with every option's default. 0 or negative errno. */
int kt_opt_defaults(const kt_opt *table, void *cfg);
/* Set one option from text. 0; -ENOENT unknown name; -EINVAL bad value,
 * with *why pointing to static text saying what was expected. */
int kt_opt_set(const kt_opt *table, void *cfg, const char *name, const char *value,
               const char **why);
/* Current value as text into buf (secrets as "***"). Returns buf or NULL. */
const char *kt_opt_get(const kt_opt *table, const void *cfg, const char *name,
                       char *buf, size_t size);
/* Load an INI file: `name = value` lines, '#' or ';' comments, sections
 * ignored. Errors are logged with file:line. 0 or negative errno. */
int kt_opt_load_file(const kt_opt *table, void *cfg, const char *path);
/*
 * Parse argv: --name value, --name=value, --flag (bool true), --no-flag.
 * `shorts` maps one-letter options to names ("c:config", "h:host"...), may
 * be NULL. -c/--config FILE loads that file first (file values, then the
 * command line on top). Stops at "--" (remaining args start at *optind).
 * --help and --version are not handled here. Errors are logged.
 * 0 or -EINVAL.
 */
int kt_opt_parse_argv(const kt_opt *table, void *cfg, int argc, char **argv,
                      const char *const *shorts, int *optind_out);
/* Print --help lines for every option (name, default, help). */
void kt_opt_usage(const kt_opt *table, FILE *out);
/* Print a documented config file: each option commented with its help and
 * set to its default. */
void kt_opt_write_conf(const kt_opt *table, FILE *out);
/* Free STR and LIST values. */
void kt_opt_free(const kt_opt *table, void *cfg);
/* Deep copy src to dst (dst uninitialised). 0 or -ENOMEM. */
int kt_opt_copy(const kt_opt *table, void *dst, const void *src, size_t cfg_size);

#endif
