/*
 * spectrum.h - kettle-bench's pictures of latency: the percentile
 * spectrum of a histogram (as HdrHistogram iterates it), written as an
 * .hgrm file or drawn, with requests/s over time, as an SVG.
 *
 * A run to draw (kb_run) comes from the run just measured or from the
 * JSON report of an earlier one (plot.c), so one picture can overlay
 * several runs.
 */
#ifndef KB_SPECTRUM_H
#define KB_SPECTRUM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <kettle/hist.h>

#define KB_SLOT_NS KT_MSEC(100)    /* the timeline records replies per 100 ms */
#define KB_MAX_SLOTS (1u << 20)     /* 29 hours (8 MiB a thread): later replies are not in the timeline */
#define KB_TIMELINE_POINTS 600      /* a saved or drawn timeline has at most this many points */

/* One row of the percentile spectrum. */
typedef struct kb_pct_row {
    uint64_t value;   /* ns: the value at this level, as kt_hist_percentile gives it */
    double level;     /* percent, 0 to 100 */
    uint64_t total;   /* values recorded at or below this one */
} kb_pct_row;

/* The rows HdrHistogram's percentile iterator gives with 5 ticks per half
 * distance (0, 10, ..., 50, 55, ..., 75, 77.5, ...: each halving of the
 * distance to 100% gets 10 rows), ending with a 100% row at the maximum.
 * *rows is kt_malloc'd (the caller frees it). 0 or -ENOMEM; an empty
 * histogram gives no rows. */
int kb_spectrum(const kt_hist *h, kb_pct_row **rows, size_t *n);

/* Write h in HdrHistogram's percentile format (an .hgrm file), values in
 * milliseconds. 0 or negative errno. */
int kb_write_hgrm(FILE *f, const kt_hist *h);

/* A timeline: replies counted per interval from the start of measuring. */
typedef struct kb_timeline {
    double interval_s;
    uint64_t *counts;  /* kt_malloc'd */
    size_t n;
    double end_s;      /* when the run ended (the last interval may be shorter) */
} kb_timeline;

/* Fold slots (of KB_SLOT_NS each) into at most KB_TIMELINE_POINTS
 * intervals of 1, 2 or 5 times a power of ten slots. 0 or -ENOMEM. */
int kb_timeline_fold(const uint64_t *slots, size_t nslots, double end_s, kb_timeline *out);
void kb_timeline_free(kb_timeline *t);

/* One run in a picture. */
typedef struct kb_run {
    char *label;       /* legend text, kt_malloc'd */
    kt_hist hist;      /* latency, ns */
    kb_timeline tl;
} kb_run;

void kb_run_free(kb_run *r);

/* Draw the runs as one self-contained SVG: the percentile spectrum (a
 * log-scaled "1 in N" axis: 90%, 99%, 99.9% ... equally spaced, as
 * HdrHistogram's plotter draws it) above requests/s over time.
 * KB_SVG_WIDTH x KB_SVG_HEIGHT pixels. 0 or negative errno. */
#define KB_SVG_WIDTH 960
#define KB_SVG_HEIGHT 720
int kb_write_svg(FILE *f, const kb_run *runs, size_t nruns);

#endif
