/*
 * repl.c - kettle-cli without a command: a prompt with line editing, a
 * history file, Tab completion of command names and a hint of the
 * arguments (libedit, when configure found it), or one command per line
 * from stdin when stdin is not a terminal.
 *
 * The names, hints and `help` come from the server's COMMAND DOCS, asked
 * the first time one of them is needed on a connection. libedit has no
 * hint that follows the cursor, as linenoise (redis-cli's) has: the hint
 * is its right-hand prompt, redrawn when the line is (after a blank, a
 * deletion or a completion).
 *
 * A lost connection is not fatal at the prompt: it shows "not connected>"
 * and the next command reconnects first.
 */
#include "config.h"
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <kettle/common.h>
#ifdef HAVE_LIBEDIT
#include <histedit.h>
#endif
#include "cli.h"
#include "docs.h"
#include "split.h"

#define KC_HISTORY_MAX 1000 /* lines kept in the history file */

typedef struct kc_prompt {
    kc_conn *c;
    const kc_opts *o;
    kc_docs docs;          /* of the current connection, loaded on demand */
    bool color;            /* the terminal shows the hint dimmed */
    bool hint_off;         /* the line is being accepted: no hint beside it */
    char prompt[320];
    char hint[512];
} kc_prompt;

/* The history file: $KETTLE_HISTFILE (empty: none), else ~/.kettle_history. */
static char *history_path(void)
{
    const char *env = getenv("KETTLE_HISTFILE");
    if (env != NULL)
        return *env ? kt_strdup(env) : NULL;
    const char *home = getenv("HOME");
    if (home == NULL || *home == '\0')
        return NULL;
    size_t n = strlen(home) + sizeof("/.kettle_history");
    char *p = kt_malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/.kettle_history", home);
    return p;
}

/* The docs of the connection, asked for once (not while disconnected). */
static const kc_docs *docs(kc_prompt *p)
{
    if (!p->docs.loaded && p->c->fd >= 0) {
        const char *why = NULL;
        if (kc_docs_load(&p->docs, p->c, &why) < 0)
            kc_close(p->c);
    }
    return &p->docs;
}

/* Connect again if needed; a new connection may be another server. */
static int ensure_connected(kc_prompt *p)
{
    if (p->c->fd >= 0)
        return 0;
    kc_docs_free(&p->docs);
    return kc_open(p->c, p->o);
}

#ifdef HAVE_LIBEDIT
/* The words of the line before pos (blank-separated; quotes are not
 * needed in command names). */
static size_t words(const char *s, size_t len, const char **w, size_t *wl, size_t max)
{
    size_t n = 0, i = 0;
    while (i < len && n < max) {
        while (i < len && isspace((unsigned char)s[i]))
            i++;
        if (i >= len)
            break;
        w[n] = s + i;
        while (i < len && !isspace((unsigned char)s[i]))
            i++;
        wl[n] = (size_t)(s + i - w[n]);
        n++;
    }
    return n;
}

static kc_prompt *ctx_of(EditLine *el)
{
    void *p = NULL;
    el_get(el, EL_CLIENTDATA, &p);
    return p;
}

static char *prompt_cb(EditLine *el)
{
    return ctx_of(el)->prompt;
}

/* The right-hand prompt: the arguments of the command being typed. */
static char *hint_cb(EditLine *el)
{
    kc_prompt *p = ctx_of(el);
    const LineInfo *li = el_line(el);
    const char *w[3];
    size_t wl[3], n = words(li->buffer, (size_t)(li->lastchar - li->buffer), w, wl, 3);
    const kc_doc *e = NULL;
    char name[160];

    p->hint[0] = '\0';
    if (p->hint_off)
        return p->hint;
    /* only once the name is typed out: a blank follows it */
    if (n == 0 || (n == 1 && (li->lastchar == li->buffer || !isspace((unsigned char)li->lastchar[-1]))))
        return p->hint;
    if (n >= 2 && wl[0] < 64 && wl[1] < 64) {
        snprintf(name, sizeof(name), "%.*s %.*s", (int)wl[0], w[0], (int)wl[1], w[1]);
        e = kc_docs_find(&p->docs, name);
    }
    if (e == NULL && wl[0] < 64) {
        snprintf(name, sizeof(name), "%.*s", (int)wl[0], w[0]);
        e = kc_docs_find(docs(p), name);
    }
    if (e != NULL && e->args[0])
        snprintf(p->hint, sizeof(p->hint), p->color ? "\1\033[2m\1%s\1\033[0m\1" : "%s", e->args);
    return p->hint;
}

/* A blank, then a redraw, so that the hint of the name just typed shows. */
static unsigned char space_cb(EditLine *el, int ch)
{
    el_insertstr(el, " ");
    return CC_REFRESH;
}

/* Enter: redraw the line without its hint (libedit would leave it beside
 * the line in the scrollback), then accept it: the redraw must come first,
 * so the acceptance comes back as a key of its own, ^] bound to libedit's
 * ed-newline. */
static unsigned char enter_cb(EditLine *el, int ch)
{
    ctx_of(el)->hint_off = true;
    el_push(el, "\035");
    return CC_REFRESH;
}

/* Tab: complete the command name (or a container's subcommand) under the
 * cursor, in the case it was typed in; list the choices when the
 * completion is ambiguous. */
static unsigned char complete_cb(EditLine *el, int ch)
{
    kc_prompt *p = ctx_of(el);
    const LineInfo *li = el_line(el);
    size_t upto = (size_t)(li->cursor - li->buffer);
    const char *w[3];
    size_t wl[3], n = words(li->buffer, upto, w, wl, 3);
    bool fresh = upto == 0 || isspace((unsigned char)li->buffer[upto - 1]);
    char prefix[160];

    const kc_docs *d = docs(p);
    if (d->n == 0)
        return CC_REFRESH_BEEP;
    /* which word: the first (a command), or the second after a container */
    size_t idx = fresh ? n : n - 1;
    if (idx > 1 || (idx == 1 && wl[0] > 60))
        return CC_REFRESH_BEEP;
    size_t wlen = fresh ? 0 : wl[idx];
    const char *word = fresh ? li->cursor : w[idx];
    if (idx == 1) {
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "%.*s", (int)wl[0], w[0]);
        const kc_doc *c = kc_docs_find(d, cmd);
        if (c == NULL || !c->container)
            return CC_REFRESH_BEEP;
        snprintf(prefix, sizeof(prefix), "%s ", c->name);
    } else {
        prefix[0] = '\0';
    }
    size_t plen = strlen(prefix);
    bool lower = wlen > 0;
    for (size_t i = 0; i < wlen; i++)
        if (isupper((unsigned char)word[i]))
            lower = false;
    /* the matches: names under prefix starting with word, one word only */
    const kc_doc *first = NULL;
    size_t nmatch = 0, common = 0;
    for (size_t i = 0; i < d->n; i++) {
        const char *nm = d->v[i].name;
        if (strncasecmp(nm, prefix, plen) != 0 || strchr(nm + plen, ' ') != NULL ||
            strncasecmp(nm + plen, word, wlen) != 0)
            continue;
        if (first == NULL) {
            first = &d->v[i];
            common = strlen(nm + plen);
        } else {
            size_t k = 0;
            while (k < common && nm[plen + k] == first->name[plen + k])
                k++;
            common = k;
        }
        nmatch++;
    }
    if (nmatch == 0)
        return CC_REFRESH_BEEP;
    char add[128];
    size_t na = 0;
    for (size_t k = wlen; k < common && na + 2 < sizeof(add); k++) {
        char c = first->name[plen + k];
        add[na++] = lower ? (char)tolower((unsigned char)c) : c;
    }
    if (nmatch == 1 && na + 1 < sizeof(add))
        add[na++] = ' ';
    add[na] = '\0';
    if (na > 0) {
        el_insertstr(el, add);
        return CC_REFRESH;
    }
    /* nothing to add: show the choices under the line */
    fputc('\n', stdout);
    for (size_t i = 0; i < d->n; i++) {
        const char *nm = d->v[i].name;
        if (strncasecmp(nm, prefix, plen) == 0 && strchr(nm + plen, ' ') == NULL &&
            strncasecmp(nm + plen, word, wlen) == 0)
            fprintf(stdout, "%s  ", nm + plen);
    }
    fputc('\n', stdout);
    fflush(stdout);
    return CC_REDISPLAY;
}
#endif

/* Read one line (without its newline) into a kt_malloc'd string; NULL at
 * the end of input. */
static char *read_line(FILE *in)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, in);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    char *copy = kt_strndup(line, (size_t)n);
    free(line);
    return copy;
}

/* Run one line. Returns false to leave (quit, exit). */
static bool run_line(kc_prompt *p, const char *line, bool tty, int *status)
{
    kt_args args;
    const char *why = NULL;
    if (kt_split(line, strlen(line), &args, &why) < 0) {
        fprintf(tty ? stdout : stderr, "Invalid argument(s): %s\n", why);
        *status = 1;
        kt_args_free(&args);
        return true;
    }
    bool go_on = true;
    if (args.n == 0) {
        /* nothing */
    } else if (strcasecmp(args.v[0], "quit") == 0 || strcasecmp(args.v[0], "exit") == 0) {
        go_on = false;
    } else if (ensure_connected(p) < 0) {
        *status = 1;
    } else if (strcasecmp(args.v[0], "help") == 0 || strcmp(args.v[0], "?") == 0) {
        if (kc_help(docs(p), stdout, args.n - 1, args.v + 1) != 0)
            *status = 1;
        fflush(stdout);
    } else if (kc_run(p->c, p->o, args.n, args.v, args.len, stdout, NULL) != KC_OK) {
        *status = 1;
    }
    kt_args_free(&args);
    return go_on;
}

#ifdef HAVE_LIBEDIT
/* Does line go into the history? A command that splits, but not quit or
 * exit, and not AUTH: passwords stay out of the history file. */
static bool worth_keeping(const char *line)
{
    kt_args a;
    const char *why;
    bool keep = kt_split(line, strlen(line), &a, &why) == 0 && a.n > 0 &&
                strcasecmp(a.v[0], "quit") != 0 && strcasecmp(a.v[0], "exit") != 0 &&
                strcasecmp(a.v[0], "auth") != 0;
    kt_args_free(&a);
    return keep;
}

/* The prompt at a terminal: libedit with history, completion and hints. */
static int repl_tty(kc_prompt *p)
{
    char *hist_path = history_path();
    int status = 0;
    HistEvent ev;
    History *hist = history_init();
    EditLine *el = el_init("kettle-cli", stdin, stdout, stderr);
    if (hist == NULL || el == NULL) {
        fprintf(stderr, "kettle-cli: cannot set up line editing\n");
        if (el)
            el_end(el);
        if (hist)
            history_end(hist);
        kt_free(hist_path);
        return 1;
    }
    history(hist, &ev, H_SETSIZE, KC_HISTORY_MAX);
    history(hist, &ev, H_SETUNIQUE, 1);
    if (hist_path != NULL)
        history(hist, &ev, H_LOAD, hist_path);
    el_set(el, EL_CLIENTDATA, p);
    el_set(el, EL_EDITOR, "emacs");
    el_set(el, EL_SIGNAL, 1);
    el_set(el, EL_HIST, history, hist);
    el_set(el, EL_PROMPT, prompt_cb);
    el_set(el, EL_RPROMPT_ESC, hint_cb, '\1');
    /* the wide calls: libedit's narrow EL_ADDFN copies the names and never frees them */
    el_wset(el, EL_ADDFN, L"kc-complete", L"complete a command name", complete_cb);
    el_set(el, EL_BIND, "^I", "kc-complete", NULL);
    el_wset(el, EL_ADDFN, L"kc-space", L"insert a blank and show the hint", space_cb);
    el_set(el, EL_BIND, " ", "kc-space", NULL);
    el_wset(el, EL_ADDFN, L"kc-enter", L"accept the line without its hint", enter_cb);
    el_set(el, EL_BIND, "^M", "kc-enter", NULL);
    el_set(el, EL_BIND, "^J", "kc-enter", NULL);
    el_set(el, EL_BIND, "^]", "ed-newline", NULL);
    /* the arrows and Home/End in their ANSI forms, even where the terminal's
     * description lacks them (TERM=dumb) */
    static const char *const keys[][2] = {
        { "\\e[A", "ed-prev-history" }, { "\\e[B", "ed-next-history" },
        { "\\e[C", "ed-next-char" }, { "\\e[D", "ed-prev-char" },
        { "\\eOA", "ed-prev-history" }, { "\\eOB", "ed-next-history" },
        { "\\eOC", "ed-next-char" }, { "\\eOD", "ed-prev-char" },
        { "\\e[H", "ed-move-to-beg" }, { "\\e[F", "ed-move-to-end" },
        { "\\e[1~", "ed-move-to-beg" }, { "\\e[4~", "ed-move-to-end" },
        { "\\e[3~", "ed-delete-next-char" },
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        el_set(el, EL_BIND, keys[i][0], keys[i][1], NULL);
    el_source(el, NULL); /* ~/.editrc */

    for (;;) {
        if (p->c->fd >= 0)
            snprintf(p->prompt, sizeof(p->prompt), "%s> ", p->c->name);
        else
            snprintf(p->prompt, sizeof(p->prompt), "not connected> ");
        int count = 0;
        p->hint_off = false;
        const char *got = el_gets(el, &count);
        if (got == NULL || count <= 0)
            break;
        char *line = kt_strndup(got, (size_t)count);
        if (line == NULL)
            break;
        size_t len = strlen(line);
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (worth_keeping(line)) {
            history(hist, &ev, H_ENTER, line);
            if (hist_path != NULL)
                history(hist, &ev, H_SAVE, hist_path);
        }
        bool go_on = run_line(p, line, true, &status);
        kt_free(line);
        if (!go_on)
            break;
    }
    el_end(el);
    history_end(hist);
    kt_free(hist_path);
    return 0; /* at a terminal, a failed command is not the session's failure */
}
#endif

int kc_repl(kc_conn *c, const kc_opts *o)
{
    bool tty = isatty(STDIN_FILENO);
    kc_prompt p = { .c = c, .o = o };
    int status = 0;
    const char *term = getenv("TERM");
    p.color = isatty(STDOUT_FILENO) && term != NULL && strcmp(term, "dumb") != 0;

#ifdef HAVE_LIBEDIT
    if (tty) {
        status = repl_tty(&p);
        kc_docs_free(&p.docs);
        return status;
    }
#endif
    for (;;) {
        if (tty) {
            printf("%s> ", c->fd >= 0 ? c->name : "not connected");
            fflush(stdout);
        }
        char *line = read_line(stdin);
        if (line == NULL)
            break;
        bool go_on = run_line(&p, line, tty, &status);
        kt_free(line);
        if (!go_on)
            break;
    }
    kc_docs_free(&p.docs);
    /* at a terminal, a failed command is not the session's failure */
    return tty ? 0 : status;
}
