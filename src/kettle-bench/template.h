/*
 * template.h - kettle-bench's command templates and weighted mix.
 *
 * A template is a command whose arguments may hold placeholders, replaced
 * for each request by a decimal number:
 *   __rand_int__  a uniformly random key in [0, keyspace)
 *   __zipf_int__  a Zipf-distributed key in [0, keyspace): key i with
 *                 probability proportional to 1 / (i + 1)^s (zipf.h)
 *   __seq_int__   the next key of a sequence 0, 1, 2, ... (mod keyspace)
 * A placeholder may sit inside an argument ("user:__rand_int__").
 *
 * A mix is a list of templates with integer weights; each request picks one
 * with probability weight / total. The --mix syntax:
 *
 *   ITEM[,ITEM...]        ITEM = COMMAND ARG...[:WEIGHT]
 *
 * e.g. 'GET __rand_int__:8,MGET __rand_int__ __rand_int__:2'. The weight is
 * the digits after the item's last unquoted ':' (1 when absent). Arguments
 * are split as kettle-cli splits them, so an argument holding a comma, a
 * blank or ending in ':DIGITS' is written in quotes: 'SET k "1,2":3'.
 *
 * Each template also knows how its reply is checked (validation).
 */
#ifndef KB_TEMPLATE_H
#define KB_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Placeholder kinds. */
enum { KB_PH_NONE = 0, KB_PH_RAND, KB_PH_SEQ, KB_PH_ZIPF };

/* How a reply is validated. */
typedef enum kb_check {
    KB_CHECK_NONE = 0, /* any reply but an error */
    KB_CHECK_PONG,     /* PING: +PONG */
    KB_CHECK_ECHO,     /* PING x, ECHO x: the bulk x */
    KB_CHECK_GET,      /* GET n: the bulk n (numerically equal) */
    KB_CHECK_MGET,     /* MGET a b ...: an array of those bulks */
} kb_check;

/* A piece of an argument: literal bytes, or a placeholder (lit unused). */
typedef struct kb_part {
    const char *lit;
    size_t len;
    int ph;  /* KB_PH_* */
} kb_part;

typedef struct kb_arg {
    kb_part *parts;
    size_t nparts;
    size_t nph;       /* placeholders in this argument */
    size_t ph0;       /* index in the request's values of its first placeholder */
    size_t maxlen;    /* longest rendering (literals + 20 digits per placeholder) */
} kb_arg;

typedef struct kb_template {
    char *text;       /* the command as written, for reports */
    uint64_t weight;
    size_t argc;
    kb_arg *args;
    char **lits;      /* the split arguments, owning the literal bytes */
    size_t nph;       /* placeholders in all arguments */
    size_t maxlen;    /* sum of the arguments' maxlen */
    kb_check check;   /* as validated by default (see kb_mix_set_validate) */
} kb_template;

typedef struct kb_mix {
    kb_template *t;
    size_t n;
    uint64_t total_weight;
    size_t max_ph;     /* most placeholders in one template */
    size_t max_argc;
    size_t max_len;    /* longest rendered template (bytes of all arguments) */
} kb_mix;

/* Add a template from split arguments (copied). 0, -EINVAL with *why set
 * (no command, zero weight), -ENOMEM. */
int kb_mix_add(kb_mix *m, size_t argc, char *const *argv, const size_t *lens,
               uint64_t weight, const char **why);
/* Add every item of a --mix spec (see above). 0, -EINVAL with *why, -ENOMEM. */
int kb_mix_parse(kb_mix *m, const char *spec, const char **why);
/* validate false: keep only the PING check (for servers other than kettle's). */
void kb_mix_set_validate(kb_mix *m, bool validate);
void kb_mix_free(kb_mix *m);

/* The template chosen by r, a uniformly random 64-bit number. */
const kb_template *kb_mix_pick(const kb_mix *m, uint64_t r);

/* Render argument i of t into buf (at least t->args[i].maxlen bytes), the
 * placeholders taking vals[] in order, counted over the whole template.
 * Returns the rendered length. */
size_t kb_render_arg(const kb_template *t, size_t i, const uint64_t *vals, char *buf);

#endif
