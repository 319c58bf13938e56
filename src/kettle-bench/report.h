/*
 * report.h - kettle-bench's output: the final report as text, CSV or JSON,
 * and the progress line.
 */
#ifndef KB_REPORT_H
#define KB_REPORT_H

#include "bench.h"

typedef struct kb_result {
    const kb_config *cfg;
    const kb_stats *s;     /* merged over threads */
    double elapsed_s;      /* from t_measure to the last measured reply */
    double rps;            /* measured replies per second */
    uint64_t errors;       /* kb_stats_errors */
    bool interrupted;      /* stopped by a signal */
    const char *backend;   /* I/O backend used */
    const kb_timeline *tl; /* measured replies over time */
} kb_result;

void kb_report_text(FILE *f, const kb_result *r);
void kb_report_csv(FILE *f, const kb_result *r);
/* Write the JSON report to path ("-" = stdout). 0 or negative errno. */
int kb_report_json(const char *path, const kb_result *r);
/* Write the pictures asked for: --hgrm and --svg. 0 or negative errno
 * (printed). */
int kb_report_pictures(const kb_result *r);
/* kettle-bench --plot: draw the saved runs of cfg->plot into --svg (and
 * --hgrm for one run). The exit status. */
int kb_plot(const kb_config *cfg);

/* One progress line (ending in \r) for the interval just ended: elapsed
 * seconds since measuring began (negative while warming up). */
void kb_progress_line(FILE *f, double t, double interval_s, const kt_hist *h, uint64_t done,
                      uint64_t errors_total);

#endif
