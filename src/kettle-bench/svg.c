/*
 * svg.c - one self-contained SVG of one or more runs (see spectrum.h):
 *
 *   +--------------------------------------------------------------+
 *   | latency by percentile             legend: one line per run   |
 *   |  ms |                                          __/           |
 *   |     |___________________________________ _---'             |
 *   |     0%      90%      99%     99.9%    99.99%   ("1 in N")   |
 *   |--------------------------------------------------------------|
 *   | requests/s over time                                         |
 *   |     |~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~      |
 *   |     0 s                                             end      |
 *   +--------------------------------------------------------------+
 *
 * The percentile axis is HdrHistogram's: x = log10(1 / (1 - p)), so
 * 90%, 99%, 99.9%, ... are equally spaced and the tail gets the room.
 * Plain SVG 1.1 (no scripts, no external fonts or styles), so browsers,
 * rsvg-convert and image viewers show it alike.
 */
#include "config.h"
#include <errno.h>
#include <math.h>
#include <string.h>
#include <kettle/common.h>
#include "spectrum.h"

#define LEFT 80.0
#define RIGHT (KB_SVG_WIDTH - 30.0)
#define SPEC_TOP 70.0
#define SPEC_BOTTOM 420.0
#define TL_TOP 500.0
#define TL_BOTTOM 660.0
#define MAX_DECADES 7 /* 99.99999% */

static const char *const colors[] = {
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
};
#define NCOLORS (sizeof(colors) / sizeof(colors[0]))

/* An axis from 0 to a "nice" top: step 1, 2 or 5 times a power of ten,
 * at most 8 steps. */
typedef struct axis {
    double top, step;
} axis;

static axis nice_axis(double max)
{
    axis a = { 1, 0.2 };
    if (!(max > 0))
        return a;
    double p = pow(10, floor(log10(max / 8)));
    static const double m[] = { 1, 2, 5, 10 };
    for (size_t i = 0; i < 4; i++) {
        a.step = m[i] * p;
        if (max / a.step <= 8)
            break;
    }
    a.top = ceil(max / a.step - 1e-9) * a.step;
    if (a.top <= 0)
        a.top = a.step;
    return a;
}

/* Text with XML's five special characters escaped. */
static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default:
            /* control bytes are not allowed in XML 1.0 */
            fputc((unsigned char)*s < 0x20 ? '?' : *s, f);
        }
    }
}

/* "99.9%" for decade d of the percentile axis. */
static void pct_label(char *buf, size_t size, int d)
{
    if (d == 0) {
        snprintf(buf, size, "0%%");
        return;
    }
    /* 100 - 10^(2-d), with d - 2 decimals */
    snprintf(buf, size, "%.*f%%", d > 2 ? d - 2 : 0, 100.0 - pow(10, 2 - d));
}

static void num_label(char *buf, size_t size, double v, double step)
{
    int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    snprintf(buf, size, "%.*f", decimals, v);
}

static void frame(FILE *f, double top, double bottom, const char *title, const char *ylabel,
                  const char *xlabel)
{
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"16\" font-weight=\"bold\">", LEFT,
            top - 14);
    xml_text(f, title);
    fprintf(f, "</text>\n<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
               "stroke=\"#444\"/>\n", LEFT, top, RIGHT - LEFT, bottom - top);
    fprintf(f, "<text transform=\"translate(18,%.1f) rotate(-90)\" text-anchor=\"middle\" "
               "font-size=\"12\">%s</text>\n", (top + bottom) / 2, ylabel);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\">%s</text>\n",
            (LEFT + RIGHT) / 2, bottom + 36, xlabel);
}

/* Horizontal grid lines and labels of a y axis. */
static void y_grid(FILE *f, double top, double bottom, axis a)
{
    char lab[32];
    for (double v = 0; v <= a.top + a.step / 2; v += a.step) {
        double y = bottom - (bottom - top) * v / a.top;
        num_label(lab, sizeof(lab), v, a.step);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%s</text>\n",
                LEFT, y, RIGHT, y, LEFT - 6, y + 4, lab);
    }
}

/* The percentile spectrum of every run. */
static int spectrum_panel(FILE *f, const kb_run *runs, size_t nruns)
{
    kb_pct_row **rows = kt_calloc(nruns, sizeof(*rows));
    size_t *nrows = kt_calloc(nruns, sizeof(*nrows));
    double ymax = 0, xmax = 2;
    int rc = rows && nrows ? 0 : -ENOMEM;

    for (size_t r = 0; r < nruns && rc == 0; r++) {
        rc = kb_spectrum(&runs[r].hist, &rows[r], &nrows[r]);
        for (size_t i = 0; i < nrows[r]; i++) {
            if (rows[r][i].level >= 100.0)
                continue; /* 1 in infinity: not on the axis */
            double x = log10(100.0 / (100.0 - rows[r][i].level));
            if (x > xmax)
                xmax = x;
            if (rows[r][i].value / 1e6 > ymax)
                ymax = rows[r][i].value / 1e6;
        }
    }
    if (rc < 0) {
        for (size_t r = 0; rows && r < nruns; r++)
            kt_free(rows[r]);
        kt_free(rows);
        kt_free(nrows);
        return rc;
    }
    int decades = (int)ceil(xmax - 1e-9);
    if (decades > MAX_DECADES)
        decades = MAX_DECADES;
    axis ya = nice_axis(ymax);
    frame(f, SPEC_TOP, SPEC_BOTTOM, "Latency by percentile", "latency (ms)",
          "percentile (log scale of 1/(1-p): each step is ten times rarer)");
    y_grid(f, SPEC_TOP, SPEC_BOTTOM, ya);
    double w = RIGHT - LEFT;
    for (int d = 0; d <= decades; d++) {
        char lab[32];
        double x = LEFT + w * d / decades;
        pct_label(lab, sizeof(lab), d);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">%s</text>\n",
                x, SPEC_TOP, x, SPEC_BOTTOM, x, SPEC_BOTTOM + 16, lab);
    }
    for (size_t r = 0; r < nruns; r++) {
        fprintf(f, "<polyline class=\"spectrum\" fill=\"none\" stroke-width=\"2\" stroke=\"%s\" "
                   "points=\"", colors[r % NCOLORS]);
        for (size_t i = 0; i < nrows[r]; i++) {
            if (rows[r][i].level >= 100.0)
                continue;
            double xd = log10(100.0 / (100.0 - rows[r][i].level));
            if (xd > decades)
                break;
            double x = LEFT + w * xd / decades;
            double y = SPEC_BOTTOM - (SPEC_BOTTOM - SPEC_TOP) * (rows[r][i].value / 1e6) / ya.top;
            fprintf(f, "%.1f,%.1f ", x, y);
        }
        fprintf(f, "\"/>\n");
        kt_free(rows[r]);
    }
    kt_free(rows);
    kt_free(nrows);
    return 0;
}

/* Requests/s over time of every run. */
static void timeline_panel(FILE *f, const kb_run *runs, size_t nruns)
{
    double tmax = 0, ymax = 0;
    for (size_t r = 0; r < nruns; r++) {
        const kb_timeline *t = &runs[r].tl;
        if (t->end_s > tmax)
            tmax = t->end_s;
        for (size_t i = 0; i < t->n; i++) {
            double start = i * t->interval_s, len = t->interval_s;
            if (t->end_s > start && t->end_s - start < len)
                len = t->end_s - start; /* the last one may be cut short */
            if (len >= t->interval_s / 4 && t->counts[i] / len > ymax)
                ymax = t->counts[i] / len;
        }
    }
    axis ya = nice_axis(ymax), xa = nice_axis(tmax);
    frame(f, TL_TOP, TL_BOTTOM, "Requests per second over time", "requests/s", "time (s)");
    y_grid(f, TL_TOP, TL_BOTTOM, ya);
    double w = RIGHT - LEFT;
    for (double v = 0; v <= xa.top + xa.step / 2; v += xa.step) {
        char lab[32];
        num_label(lab, sizeof(lab), v, xa.step);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">%s</text>\n",
                LEFT + w * v / xa.top, TL_BOTTOM + 16, lab);
    }
    for (size_t r = 0; r < nruns; r++) {
        const kb_timeline *t = &runs[r].tl;
        fprintf(f, "<polyline class=\"timeline\" fill=\"none\" stroke-width=\"2\" stroke=\"%s\" "
                   "points=\"", colors[r % NCOLORS]);
        for (size_t i = 0; i < t->n; i++) {
            double start = i * t->interval_s, len = t->interval_s;
            if (t->end_s > start && t->end_s - start < len)
                len = t->end_s - start;
            if (len < t->interval_s / 4)
                continue; /* too short a tail to give a rate */
            double x = LEFT + w * (start + len / 2) / xa.top;
            double y = TL_BOTTOM - (TL_BOTTOM - TL_TOP) * (t->counts[i] / len) / ya.top;
            fprintf(f, "%.1f,%.1f ", x, y);
        }
        fprintf(f, "\"/>\n");
    }
}

/* One legend line per run, top left inside the spectrum. */
static void legend(FILE *f, const kb_run *runs, size_t nruns)
{
    size_t longest = 0;
    for (size_t r = 0; r < nruns; r++)
        if (runs[r].label && strlen(runs[r].label) > longest)
            longest = strlen(runs[r].label);
    /* a backing so that curves under the legend do not cross its text
     * (about 7 px a character at 12 px) */
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"white\" "
               "fill-opacity=\"0.85\"/>\n", LEFT + 6, SPEC_TOP + 6,
            fmin(RIGHT - LEFT - 12, 50.0 + 7.0 * (double)(longest + 44)), 18.0 * (double)nruns + 6);
    for (size_t r = 0; r < nruns; r++) {
        double y = SPEC_TOP + 20 + 18 * r;
        char stats[96];
        snprintf(stats, sizeof(stats), " (p50 %.3f ms, p99 %.3f ms, max %.3f ms)",
                 kt_hist_percentile(&runs[r].hist, 50) / 1e6,
                 kt_hist_percentile(&runs[r].hist, 99) / 1e6, kt_hist_max(&runs[r].hist) / 1e6);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke-width=\"3\" "
                   "stroke=\"%s\"/>\n<text class=\"legend\" x=\"%.1f\" y=\"%.1f\" font-size=\"12\">",
                LEFT + 12, y - 4, LEFT + 36, y - 4, colors[r % NCOLORS], LEFT + 42, y);
        xml_text(f, runs[r].label ? runs[r].label : "run");
        xml_text(f, stats);
        fprintf(f, "</text>\n");
    }
}

int kb_write_svg(FILE *f, const kb_run *runs, size_t nruns)
{
    if (nruns == 0)
        return -EINVAL;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" "
               "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Helvetica, Arial, "
               "sans-serif\">\n<title>kettle-bench</title>\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            KB_SVG_WIDTH, KB_SVG_HEIGHT, KB_SVG_WIDTH, KB_SVG_HEIGHT);
    int rc = spectrum_panel(f, runs, nruns);
    if (rc < 0)
        return rc;
    timeline_panel(f, runs, nruns);
    legend(f, runs, nruns);
    fprintf(f, "</svg>\n");
    return ferror(f) ? -EIO : 0;
}
