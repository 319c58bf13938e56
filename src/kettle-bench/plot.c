/*
 * plot.c - kettle-bench's pictures: --hgrm and --svg of the run just
 * measured, and --plot, which draws the JSON reports of earlier runs (their
 * histogram buckets and timeline) into one SVG.
 *
 * A JSON report keeps the raw histogram (each bucket's lo, hi and count in
 * ns) and the exact min and max, so a run read back gives the same
 * percentiles as when it was measured.
 */
#include "config.h"
#include <errno.h>
#include <math.h>
#include <string.h>
#include <jansson.h>
#include "report.h"

/* Open path for writing ("-" = stdout). */
static FILE *open_out(const char *path)
{
    return strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
}

static int close_out(FILE *f, int rc)
{
    if (f == stdout)
        return fflush(f) != 0 && rc == 0 ? -errno : rc;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    return rc;
}

/* Write runs to the --svg file, and the first run's histogram to --hgrm. */
static int write_pictures(const kb_config *cfg, const kb_run *runs, size_t nruns)
{
    int status = 0;
    const char *paths[2] = { cfg->hgrm_path, cfg->svg_path };
    for (int k = 0; k < 2; k++) {
        if (paths[k] == NULL)
            continue;
        FILE *f = open_out(paths[k]);
        int rc = f == NULL ? -errno : 0;
        if (f != NULL) {
            rc = k == 0 ? kb_write_hgrm(f, &runs[0].hist) : kb_write_svg(f, runs, nruns);
            rc = close_out(f, rc);
        }
        if (rc < 0) {
            fprintf(stderr, "kettle-bench: cannot write %s: %s\n", paths[k], strerror(-rc));
            status = rc;
        }
    }
    return status;
}

/* "command: N requests/s" (with a prefix), kt_malloc'd. A long command
 * is cut to its first LABEL_CMD characters and "..." so that the legend
 * stays inside the picture. */
#define LABEL_CMD 32
static char *make_label(const char *prefix, const char *command, double rps)
{
    size_t n = strlen(prefix) + LABEL_CMD + 64;
    int len = strlen(command) > LABEL_CMD + 3 ? LABEL_CMD : (int)strlen(command);
    char *s = kt_malloc(n);
    if (s != NULL)
        snprintf(s, n, "%s%.*s%s: %.0f requests/s", prefix, len, command,
                 command[len] != '\0' ? "..." : "", rps);
    return s;
}

int kb_report_pictures(const kb_result *r)
{
    const kb_config *cfg = r->cfg;
    if (cfg->hgrm_path == NULL && cfg->svg_path == NULL)
        return 0;
    kb_run *run = kt_calloc(1, sizeof(*run)); /* a kt_hist is 28 KiB: not on the stack */
    if (run == NULL)
        return -ENOMEM;
    run->hist = r->s->hist;
    if (r->tl != NULL)
        run->tl = *r->tl; /* borrowed: not freed here */
    run->label = make_label("", cfg->mix.n == 1 ? cfg->mix.t[0].text : "a mix of commands", r->rps);
    int rc = write_pictures(cfg, run, 1);
    kt_free(run->label);
    kt_free(run);
    return rc;
}

/* ---- --plot: runs read back from their JSON reports ------------------------------ */

static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Load one JSON report into run. 0, or -1 with the reason printed. */
static int load_run(const char *path, kb_run *run)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    const char *why = NULL;

    kt_hist_init(&run->hist);
    if (root == NULL) {
        fprintf(stderr, "kettle-bench: %s:%d: %s\n", path, jerr.line, jerr.text);
        return -1;
    }
    json_t *hist = json_object_get(root, "histogram");
    json_t *buckets = json_object_get(hist, "buckets");
    json_t *lat = json_object_get(root, "latency_ms");
    if (!json_is_array(buckets) || !json_is_object(lat)) {
        why = "no histogram: not a kettle-bench --json report";
        goto out;
    }
    size_t i;
    json_t *b;
    json_array_foreach(buckets, i, b) {
        double lo = num(b, "lo"), count = num(b, "count");
        if (!(lo >= 0 && lo < 1e19 && count >= 0 && count < 1e19)) {
            why = "a histogram bucket without lo and count";
            goto out;
        }
        kt_hist_record_n(&run->hist, (uint64_t)lo, (uint64_t)count);
    }
    /* the exact extremes, as measured */
    double mn = num(lat, "min"), mx = num(lat, "max");
    if (run->hist.count > 0 && mn >= 0 && mx >= mn) {
        run->hist.min = (uint64_t)llround(mn * 1e6);
        run->hist.max = (uint64_t)llround(mx * 1e6);
    }
    json_t *tl = json_object_get(root, "timeline");
    json_t *counts = json_object_get(tl, "requests");
    double interval = num(tl, "interval_s"), dur = num(root, "duration_s");
    if (json_is_array(counts) && interval > 0) {
        run->tl.interval_s = interval;
        run->tl.end_s = dur >= 0 ? dur : interval * json_array_size(counts);
        run->tl.n = json_array_size(counts);
        run->tl.counts = kt_calloc(run->tl.n ? run->tl.n : 1, sizeof(uint64_t));
        if (run->tl.counts == NULL) {
            why = "out of memory";
            goto out;
        }
        json_array_foreach(counts, i, b) {
            double c = json_is_number(b) ? json_number_value(b) : 0;
            run->tl.counts[i] = c > 0 && c < 1e19 ? (uint64_t)c : 0;
        }
    }
    /* the legend: the file's name and the command */
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    json_t *cmds = json_object_get(json_object_get(root, "parameters"), "commands");
    const char *cmd = json_string_value(json_object_get(json_array_get(cmds, 0), "command"));
    char prefix[300];
    snprintf(prefix, sizeof(prefix), "%.*s: ", (int)(strlen(base) > 5 &&
             strcmp(base + strlen(base) - 5, ".json") == 0 ? strlen(base) - 5 : strlen(base)), base);
    run->label = make_label(prefix, json_array_size(cmds) > 1 ? "a mix of commands" :
                            cmd ? cmd : "?", num(root, "requests_per_sec"));
out:
    json_decref(root);
    if (why != NULL) {
        fprintf(stderr, "kettle-bench: %s: %s\n", path, why);
        return -1;
    }
    return 0;
}

int kb_plot(const kb_config *cfg)
{
    int status = 0;
    kb_run *runs = kt_calloc(cfg->nplot, sizeof(*runs));
    if (runs == NULL) {
        fprintf(stderr, "kettle-bench: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < cfg->nplot && status == 0; i++)
        if (load_run(cfg->plot[i], &runs[i]) < 0)
            status = 1;
    if (status == 0 && write_pictures(cfg, runs, cfg->nplot) < 0)
        status = 1;
    for (size_t i = 0; i < cfg->nplot; i++)
        kb_run_free(&runs[i]);
    kt_free(runs);
    return status;
}
