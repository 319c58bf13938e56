/*
 * stats.c - kettle-bench's per-thread counters and their merge.
 */
#include "config.h"
#include <errno.h>
#include <string.h>
#include "bench.h"

void kb_stats_init(kb_stats *s)
{
    memset(s, 0, sizeof(*s));
    kt_hist_init(&s->hist);
}

static void texts_free(kb_texts *ts)
{
    for (size_t i = 0; i < ts->n; i++)
        kt_free(ts->t[i].text);
    ts->n = 0;
}

void kb_stats_free(kb_stats *s)
{
    texts_free(&s->texts);
    texts_free(&s->etexts);
    kt_free(s->slots);
    s->slots = NULL;
    s->nslots = s->slots_cap = 0;
}

/* Make room for slot i. */
static int slots_reserve(kb_stats *s, size_t i)
{
    if (i >= KB_MAX_SLOTS)
        return -ERANGE;
    if (i >= s->slots_cap) {
        size_t cap = s->slots_cap ? s->slots_cap : 64;
        while (cap <= i)
            cap *= 2;
        uint64_t *p = kt_realloc(s->slots, cap * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        memset(p + s->slots_cap, 0, (cap - s->slots_cap) * sizeof(*p));
        s->slots = p;
        s->slots_cap = cap;
    }
    if (i >= s->nslots)
        s->nslots = i + 1;
    return 0;
}

void kb_stats_slot(kb_stats *s, uint64_t since)
{
    size_t i = (size_t)(since / KB_SLOT_NS);
    if (slots_reserve(s, i) == 0)
        s->slots[i]++;
}

/* Add n occurrences of text. */
static void add_text(kb_texts *ts, const char *text, size_t len, uint64_t n)
{
    if (len > KB_ERRTEXT_MAX)
        len = KB_ERRTEXT_MAX;
    for (size_t i = 0; i < ts->n; i++) {
        if (strlen(ts->t[i].text) == len && memcmp(ts->t[i].text, text, len) == 0) {
            ts->t[i].count += n;
            return;
        }
    }
    if (ts->n < KB_MAX_ERRTEXTS) {
        char *copy = kt_strndup(text, len);
        if (copy != NULL) {
            ts->t[ts->n].text = copy;
            ts->t[ts->n].count = n;
            ts->n++;
            return;
        }
    }
    ts->other += n;
}

static void merge_texts(kb_texts *dst, const kb_texts *src)
{
    for (size_t i = 0; i < src->n; i++)
        add_text(dst, src->t[i].text, strlen(src->t[i].text), src->t[i].count);
    dst->other += src->other;
}

void kb_stats_error_text(kb_stats *s, const char *text, size_t len)
{
    s->error_replies++;
    add_text(&s->texts, text, len, 1);
}

void kb_stats_error_elements(kb_stats *s, const kt_resp_reply *r)
{
    for (size_t i = 1; i < r->count; i++) {
        const kt_resp_node *nd = &r->nodes[i];
        if (nd->type == KT_RESP_ERROR_REPLY) {
            s->error_elements++;
            add_text(&s->etexts, nd->p, nd->len, 1);
        }
    }
}

void kb_stats_merge(kb_stats *dst, const kb_stats *src)
{
    kt_hist_merge(&dst->hist, &src->hist);
    dst->done += src->done;
    dst->warm += src->warm;
    dst->sent += src->sent;
    dst->unsent += src->unsent;
    dst->lost += src->lost;
    if (src->last_ns > dst->last_ns)
        dst->last_ns = src->last_ns;
    dst->connects += src->connects;
    dst->mismatch += src->mismatch;
    dst->error_replies += src->error_replies;
    dst->partial += src->partial;
    dst->error_elements += src->error_elements;
    dst->timeouts += src->timeouts;
    dst->conn_failures += src->conn_failures;
    merge_texts(&dst->texts, &src->texts);
    merge_texts(&dst->etexts, &src->etexts);
    if (src->nslots > 0 && slots_reserve(dst, src->nslots - 1) == 0)
        for (size_t i = 0; i < src->nslots; i++)
            dst->slots[i] += src->slots[i];
}

uint64_t kb_stats_errors(const kb_stats *s)
{
    return s->mismatch + s->error_replies + s->partial + s->timeouts + s->conn_failures;
}
