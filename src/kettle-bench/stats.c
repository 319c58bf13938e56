/*
 * stats.c - kettle-bench's per-thread counters and their merge.
 */
#include "config.h"
#include <string.h>
#include "bench.h"

void kb_stats_init(kb_stats *s)
{
    memset(s, 0, sizeof(*s));
    kt_hist_init(&s->hist);
}

void kb_stats_free(kb_stats *s)
{
    for (size_t i = 0; i < s->ntexts; i++)
        kt_free(s->texts[i].text);
    s->ntexts = 0;
}

/* Add n occurrences of text. */
static void add_text(kb_stats *s, const char *text, size_t len, uint64_t n)
{
    if (len > KB_ERRTEXT_MAX)
        len = KB_ERRTEXT_MAX;
    for (size_t i = 0; i < s->ntexts; i++) {
        if (strlen(s->texts[i].text) == len && memcmp(s->texts[i].text, text, len) == 0) {
            s->texts[i].count += n;
            return;
        }
    }
    if (s->ntexts < KB_MAX_ERRTEXTS) {
        char *copy = kt_strndup(text, len);
        if (copy != NULL) {
            s->texts[s->ntexts].text = copy;
            s->texts[s->ntexts].count = n;
            s->ntexts++;
            return;
        }
    }
    s->other_texts += n;
}

void kb_stats_error_text(kb_stats *s, const char *text, size_t len)
{
    s->error_replies++;
    add_text(s, text, len, 1);
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
    dst->timeouts += src->timeouts;
    dst->conn_failures += src->conn_failures;
    for (size_t i = 0; i < src->ntexts; i++)
        add_text(dst, src->texts[i].text, strlen(src->texts[i].text), src->texts[i].count);
    dst->other_texts += src->other_texts;
}

uint64_t kb_stats_errors(const kb_stats *s)
{
    return s->mismatch + s->error_replies + s->timeouts + s->conn_failures;
}
