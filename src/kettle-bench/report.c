/*
 * report.c - kettle-bench's final report (text, CSV, JSON) and progress
 * line. Latencies are printed in milliseconds; the JSON histogram keeps
 * the raw buckets in nanoseconds.
 */
#include "config.h"
#include <errno.h>
#include <string.h>
#include "report.h"

static const struct { const char *name; double p; } pcts[] = {
    { "p50", 50 }, { "p90", 90 }, { "p99", 99 }, { "p99.9", 99.9 }, { "p99.99", 99.99 },
};
#define NPCTS (sizeof(pcts) / sizeof(pcts[0]))

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static const char *mode_name(const kb_config *cfg)
{
    return cfg->rate != 0 ? "open" : "closed";
}

/* The error texts under the line that counted them. */
static void print_texts(FILE *f, const kb_texts *ts)
{
    for (size_t i = 0; i < ts->n; i++)
        fprintf(f, "    %llu x -%s\n", (unsigned long long)ts->t[i].count, ts->t[i].text);
    if (ts->other)
        fprintf(f, "    %llu x (other error texts)\n", (unsigned long long)ts->other);
}

void kb_report_text(FILE *f, const kb_result *r)
{
    const kb_config *cfg = r->cfg;
    const kb_stats *s = r->s;
    const kt_hist *h = &s->hist;

    fprintf(f, "kettle-bench %s: %s, %u connection%s, pipeline %u, %u thread%s, %s loop",
            KT_VERSION_STRING, cfg->addr_text, cfg->conns, cfg->conns == 1 ? "" : "s",
            cfg->pipeline, cfg->threads, cfg->threads == 1 ? "" : "s", mode_name(cfg));
    if (cfg->rate != 0)
        fprintf(f, " at %.0f requests/s", cfg->rate);
    fprintf(f, " (%s)%s\n", r->backend ? r->backend : "?", r->interrupted ? ", interrupted" : "");
    for (size_t i = 0; i < cfg->mix.n; i++)
        fprintf(f, "  command:    %s%s (weight %llu)\n", cfg->mix.t[i].text,
                cfg->mix.t[i].check != KB_CHECK_NONE ? ", checked" : "",
                (unsigned long long)cfg->mix.t[i].weight);
    fprintf(f, "  requests:   %llu in %.3f s", (unsigned long long)s->done, r->elapsed_s);
    if (s->warm)
        fprintf(f, " (+%llu warm-up)", (unsigned long long)s->warm);
    fprintf(f, "\n  throughput: %.1f requests/s\n", r->rps);
    fprintf(f, "  latency ms: min %.3f  mean %.3f", ms(kt_hist_min(h)), kt_hist_mean(h) / 1e6);
    for (size_t i = 0; i < NPCTS; i++)
        fprintf(f, "  %s %.3f", pcts[i].name, ms(kt_hist_percentile(h, pcts[i].p)));
    fprintf(f, "  max %.3f\n", ms(kt_hist_max(h)));
    fprintf(f, "  errors:     %llu (mismatches %llu, error replies %llu, partial replies %llu, "
               "timeouts %llu, connection failures %llu)\n",
            (unsigned long long)r->errors, (unsigned long long)s->mismatch,
            (unsigned long long)s->error_replies, (unsigned long long)s->partial,
            (unsigned long long)s->timeouts, (unsigned long long)s->conn_failures);
    print_texts(f, &s->texts);
    if (s->error_elements)
        fprintf(f, "  elements:   %llu error elements in array replies\n",
                (unsigned long long)s->error_elements);
    print_texts(f, &s->etexts);
    if (s->lost)
        fprintf(f, "  lost:       %llu requests in flight on failed connections\n",
                (unsigned long long)s->lost);
    if (s->unsent)
        fprintf(f, "  unsent:     %llu requests due but not sent by the end "
                   "(the server fell behind the rate)\n", (unsigned long long)s->unsent);
}

void kb_report_csv(FILE *f, const kb_result *r)
{
    const kb_stats *s = r->s;
    const kt_hist *h = &s->hist;
    fprintf(f, "requests,seconds,requests_per_sec,min_ms,mean_ms");
    for (size_t i = 0; i < NPCTS; i++)
        fprintf(f, ",%s_ms", pcts[i].name);
    fprintf(f, ",max_ms,errors,mismatches,error_replies,partial_replies,error_elements,timeouts,"
               "connection_failures,lost,unsent\n");
    fprintf(f, "%llu,%.6f,%.2f,%.6f,%.6f", (unsigned long long)s->done, r->elapsed_s, r->rps,
            ms(kt_hist_min(h)), kt_hist_mean(h) / 1e6);
    for (size_t i = 0; i < NPCTS; i++)
        fprintf(f, ",%.6f", ms(kt_hist_percentile(h, pcts[i].p)));
    fprintf(f, ",%.6f,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu\n", ms(kt_hist_max(h)),
            (unsigned long long)r->errors, (unsigned long long)s->mismatch,
            (unsigned long long)s->error_replies, (unsigned long long)s->partial,
            (unsigned long long)s->error_elements, (unsigned long long)s->timeouts,
            (unsigned long long)s->conn_failures, (unsigned long long)s->lost,
            (unsigned long long)s->unsent);
}

/* A JSON string: control bytes and bytes past ASCII as \u00XX, so the
 * output is valid UTF-8 whatever the server sent. */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* {"text": count, ...} */
static void json_texts(FILE *f, const kb_texts *ts)
{
    fputc('{', f);
    for (size_t i = 0; i < ts->n; i++) {
        fprintf(f, "%s", i ? ", " : "");
        json_str(f, ts->t[i].text);
        fprintf(f, ": %llu", (unsigned long long)ts->t[i].count);
    }
    if (ts->other)
        fprintf(f, "%s\"(other texts)\": %llu", ts->n ? ", " : "", (unsigned long long)ts->other);
    fputc('}', f);
}

static void json_params(FILE *f, const kb_result *r)
{
    const kb_config *cfg = r->cfg;
    fprintf(f, "  \"parameters\": {\n    \"target\": ");
    json_str(f, cfg->addr_text);
    fprintf(f, ",\n    \"connections\": %u,\n    \"pipeline\": %u,\n    \"threads\": %u,\n",
            cfg->conns, cfg->pipeline, cfg->threads);
    if (cfg->count)
        fprintf(f, "    \"requests\": %llu,\n    \"duration_s\": null,\n",
                (unsigned long long)cfg->count);
    else
        fprintf(f, "    \"requests\": null,\n    \"duration_s\": %.3f,\n", cfg->duration_ns / 1e9);
    fprintf(f, "    \"mode\": \"%s\",\n", mode_name(cfg));
    if (cfg->rate != 0)
        fprintf(f, "    \"rate\": %.3f,\n", cfg->rate);
    else
        fprintf(f, "    \"rate\": null,\n");
    fprintf(f, "    \"warmup_s\": %.3f,\n    \"ramp_s\": %.3f,\n    \"timeout_s\": %.3f,\n",
            cfg->warmup_ns / 1e9, cfg->ramp_ns / 1e9, cfg->timeout_ns / 1e9);
    fprintf(f, "    \"keyspace\": %llu,\n    \"zipf\": %g,\n    \"seed\": %llu,\n    \"validate\": %s,\n"
               "    \"max_errors\": %llu,\n    \"io\": ",
            (unsigned long long)cfg->keyspace, cfg->zipf.s, (unsigned long long)cfg->seed,
            cfg->validate ? "true" : "false", (unsigned long long)cfg->max_errors);
    json_str(f, r->backend ? r->backend : "");
    fprintf(f, ",\n    \"commands\": [");
    for (size_t i = 0; i < cfg->mix.n; i++) {
        fprintf(f, "%s\n      {\"command\": ", i ? "," : "");
        json_str(f, cfg->mix.t[i].text);
        fprintf(f, ", \"weight\": %llu}", (unsigned long long)cfg->mix.t[i].weight);
    }
    fprintf(f, "\n    ]\n  },\n");
}

int kb_report_json(const char *path, const kb_result *r)
{
    const kb_stats *s = r->s;
    const kt_hist *h = &s->hist;
    bool to_stdout = strcmp(path, "-") == 0;
    FILE *f = to_stdout ? stdout : fopen(path, "w");
    if (f == NULL)
        return -errno;

    fprintf(f, "{\n  \"tool\": \"kettle-bench\",\n  \"version\": \"%s\",\n", KT_VERSION_STRING);
    json_params(f, r);
    fprintf(f, "  \"requests\": %llu,\n  \"sent\": %llu,\n  \"warmup_requests\": %llu,\n",
            (unsigned long long)s->done, (unsigned long long)s->sent, (unsigned long long)s->warm);
    fprintf(f, "  \"duration_s\": %.6f,\n  \"requests_per_sec\": %.3f,\n", r->elapsed_s, r->rps);
    fprintf(f, "  \"latency_ms\": {\"min\": %.6f, \"mean\": %.6f", ms(kt_hist_min(h)),
            kt_hist_mean(h) / 1e6);
    for (size_t i = 0; i < NPCTS; i++)
        fprintf(f, ", \"%s\": %.6f", pcts[i].name, ms(kt_hist_percentile(h, pcts[i].p)));
    fprintf(f, ", \"max\": %.6f},\n", ms(kt_hist_max(h)));
    fprintf(f, "  \"errors\": {\n    \"mismatch\": %llu,\n    \"error_replies\": ",
            (unsigned long long)s->mismatch);
    json_texts(f, &s->texts);
    fprintf(f, ",\n    \"partial_replies\": %llu,\n    \"error_elements\": ",
            (unsigned long long)s->partial);
    json_texts(f, &s->etexts);
    fprintf(f, ",\n    \"timeouts\": %llu,\n    \"connection\": %llu\n  },\n",
            (unsigned long long)s->timeouts, (unsigned long long)s->conn_failures);
    fprintf(f, "  \"errors_total\": %llu,\n  \"lost\": %llu,\n  \"unsent\": %llu,\n",
            (unsigned long long)r->errors, (unsigned long long)s->lost,
            (unsigned long long)s->unsent);
    fprintf(f, "  \"connections_opened\": %llu,\n  \"interrupted\": %s,\n",
            (unsigned long long)s->connects, r->interrupted ? "true" : "false");
    fprintf(f, "  \"timeline\": {\"interval_s\": %g, \"requests\": [", r->tl ? r->tl->interval_s : 0.1);
    for (size_t i = 0; r->tl && i < r->tl->n; i++)
        fprintf(f, "%s%llu", i ? ", " : "", (unsigned long long)r->tl->counts[i]);
    fprintf(f, "]},\n");
    fprintf(f, "  \"histogram\": {\"unit\": \"ns\", \"buckets\": [");
    bool first = true;
    for (size_t i = 0, n = kt_hist_nbuckets(); i < n; i++) {
        uint64_t lo, hi, count;
        kt_hist_bucket(h, i, &lo, &hi, &count);
        if (count == 0)
            continue;
        fprintf(f, "%s\n    {\"lo\": %llu, \"hi\": %llu, \"count\": %llu}", first ? "" : ",",
                (unsigned long long)lo, (unsigned long long)hi, (unsigned long long)count);
        first = false;
    }
    fprintf(f, "\n  ]}\n}\n");
    int rc = ferror(f) ? -EIO : 0;
    if (to_stdout)
        fflush(f);
    else if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    return rc;
}

void kb_progress_line(FILE *f, double t, double interval_s, const kt_hist *h, uint64_t done,
                      uint64_t errors_total)
{
    char when[32];
    if (t < 0)
        snprintf(when, sizeof(when), "warm-up");
    else
        snprintf(when, sizeof(when), "%5.0fs", t);
    fprintf(f, "\r%s  %9.0f requests/s  p50 %8.3f ms  p99 %8.3f ms  errors %llu\033[K", when,
            interval_s > 0 ? (double)done / interval_s : 0.0, ms(kt_hist_percentile(h, 50)),
            ms(kt_hist_percentile(h, 99)), (unsigned long long)errors_total);
    fflush(f);
}
