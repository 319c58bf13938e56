/*
 * docs.h - the server's own command documentation (COMMAND DOCS, which
 * kettled, kettle-db and redis-server 7 answer): kettle-cli's `help`,
 * the names Tab completes and the argument hints at the prompt.
 */
#ifndef KC_DOCS_H
#define KC_DOCS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include "conn.h"

typedef struct kc_doc {
    char *name;       /* upper case; a subcommand as "CLIENT LIST" */
    char *summary;    /* "" when the server gives none (also since, group) */
    char *since;
    char *group;
    char *args;       /* the arguments' syntax: "key [key ...]" */
    bool container;   /* has subcommands (CLIENT, CONFIG, ...) */
} kc_doc;

typedef struct kc_docs {
    kc_doc *v;        /* sorted by name */
    size_t n;
    bool loaded;      /* COMMAND DOCS was answered (maybe with nothing) */
    char why[200];    /* why there are none, when the server gave none */
} kc_docs;

/* Ask c for COMMAND DOCS and keep the answer in d (replacing what it
 * held). 0 (d->n may be 0, with d->why saying why); a negative errno when
 * the connection failed (the caller closes it; *why as kc_read_reply). */
int kc_docs_load(kc_docs *d, kc_conn *c, const char **why);

/* The entry named name ("mget", "client list"), any case, or NULL. */
const kc_doc *kc_docs_find(const kc_docs *d, const char *name);

/* `help`, `help COMMAND [SUBCOMMAND]` or `help @GROUP`: print to out.
 * Returns 0, or 1 when there was nothing to show. */
int kc_help(const kc_docs *d, FILE *out, size_t argc, char *const *argv);

/* Release everything; d is empty (not loaded) again. */
void kc_docs_free(kc_docs *d);

#endif
