/*
 * main.c - kettle-bench: the load generator. Parses the command line,
 * starts one worker thread (one kt_loop) per -t, sets the run's time plan
 * once every loop is up, prints a progress line each second while they
 * run, stops them on SIGINT/SIGTERM, merges their histograms and counters
 * and reports. The exit status is 1 when errors exceed --max-errors.
 */
#include "config.h"
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <sys/resource.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "report.h"
#include "worker.h"

/* The start (see bench.h): set the rest of the plan from now. */
static void plan_start(kb_config *cfg)
{
    cfg->t_start = kt_clock_ns();
    cfg->t_measure = cfg->t_start + cfg->warmup_ns;
    cfg->t_end = cfg->duration_ns ? cfg->t_measure + cfg->duration_ns : UINT64_MAX;
    if (cfg->rate != 0) {
        cfg->ns_per_req = 1e9 / cfg->rate;
        cfg->warm_index = (uint64_t)ceil((double)cfg->warmup_ns / cfg->ns_per_req);
    }
}

/* Print the progress line for the time since *last. */
static void progress(kb_config *cfg, kb_progress *prog, uint64_t now, uint64_t *last,
                     uint64_t *errors_total, kt_hist *h)
{
    uint64_t done;
    pthread_mutex_lock(&prog->lock);
    *h = prog->hist;
    kt_hist_reset(&prog->hist);
    done = prog->done;
    *errors_total += prog->errors;
    prog->done = prog->errors = 0;
    pthread_mutex_unlock(&prog->lock);
    double t = now >= cfg->t_measure ? (now - cfg->t_measure) / 1e9
                                     : -(double)(cfg->t_measure - now) / 1e9;
    kb_progress_line(stderr, t, (now - *last) / 1e9, h, done, *errors_total);
    *last = now;
}

/* Start the workers once every connection has settled and the ramp is
 * over, wait for them, print progress, pass on a stop signal. Returns true
 * when interrupted. */
static bool supervise(kb_config *cfg, kb_worker **ws, kb_progress *prog, const sigset_t *set)
{
    bool interrupted = false, started = false;
    uint64_t last = kt_clock_ns(), errors_total = 0;
    uint64_t ramp_end = cfg->t0 + cfg->ramp_ns;
    kt_hist h;
    kt_hist_init(&h);

    for (;;) {
        bool ended = true, settled = true;
        for (unsigned i = 0; i < cfg->threads; i++) {
            bool e = __atomic_load_n(&ws[i]->ended, __ATOMIC_ACQUIRE);
            ended = ended && e;
            settled = settled && (e || __atomic_load_n(&ws[i]->settled_all, __ATOMIC_ACQUIRE));
        }
        if (ended)
            break;
        uint64_t now = kt_clock_ns();
        if (!started && !interrupted && settled && now >= ramp_end) {
            plan_start(cfg);
            for (unsigned i = 0; i < cfg->threads; i++)
                kb_worker_go(ws[i]);
            started = true;
            last = now;
        }
        uint64_t wait = KT_MSEC(200);
        if (!started && now < ramp_end && ramp_end - now < wait)
            wait = ramp_end - now;
        struct timespec ts = { 0, (long)wait };
        int sig = sigtimedwait(set, NULL, &ts);
        if ((sig == SIGINT || sig == SIGTERM) && !interrupted) {
            interrupted = true;
            for (unsigned i = 0; i < cfg->threads; i++)
                kb_worker_stop(ws[i]);
        }
        now = kt_clock_ns();
        if (cfg->progress && started && now - last >= KT_SEC(1))
            progress(cfg, prog, now, &last, &errors_total, &h);
    }
    if (cfg->progress)
        fprintf(stderr, "\r\033[K");
    return interrupted;
}

/* Each connection is a descriptor: raise the soft limit toward the hard
 * one when -c needs it (the shell's default of 1024 is common). */
static void raise_nofile(const kb_config *cfg)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)cfg->conns + 64 + 8 * cfg->threads;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want ? rl.rlim_max : want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < want)
        fprintf(stderr, "kettle-bench: %u connections need %llu descriptors, the limit is %llu "
                        "(ulimit -n)\n", cfg->conns, (unsigned long long)want,
                (unsigned long long)rl.rlim_cur);
}

/* Merge the threads' counters and print the reports. Returns the exit
 * status. */
static int report(kb_config *cfg, kb_worker **ws, bool interrupted)
{
    kb_stats total;
    int rc, status = 0;

    kb_stats_init(&total);
    for (unsigned i = 0; i < cfg->threads; i++)
        kb_stats_merge(&total, &ws[i]->stats);
    kb_result res = { .cfg = cfg, .s = &total, .interrupted = interrupted,
                      .backend = ws[0]->backend, .errors = kb_stats_errors(&total) };
    if (total.last_ns > cfg->t_measure)
        res.elapsed_s = (total.last_ns - cfg->t_measure) / 1e9;
    res.rps = res.elapsed_s > 0 ? total.done / res.elapsed_s : 0;
    kb_timeline tl;
    if (kb_timeline_fold(total.slots, total.nslots, res.elapsed_s, &tl) == 0)
        res.tl = &tl;
    /* with --json - the JSON owns stdout: the report goes to stderr */
    FILE *out = cfg->json_path != NULL && strcmp(cfg->json_path, "-") == 0 ? stderr : stdout;
    if (cfg->csv)
        kb_report_csv(out, &res);
    else
        kb_report_text(out, &res);
    fflush(out);
    if (cfg->json_path != NULL && (rc = kb_report_json(cfg->json_path, &res)) < 0) {
        fprintf(stderr, "kettle-bench: cannot write %s: %s\n", cfg->json_path, strerror(-rc));
        status = 1;
    }
    if (kb_report_pictures(&res) < 0)
        status = 1;
    kb_timeline_free(&tl);
    if (total.connects == 0)
        fprintf(stderr, "kettle-bench: could not connect to %s\n", cfg->addr_text);
    if (res.errors > cfg->max_errors) {
        fprintf(stderr, "kettle-bench: %llu errors (more than --max-errors %llu)\n",
                (unsigned long long)res.errors, (unsigned long long)cfg->max_errors);
        status = 1;
    } else if (total.done == 0 && !interrupted) {
        fprintf(stderr, "kettle-bench: no request was answered\n");
        status = 1;
    }
    kb_stats_free(&total);
    return status;
}

int main(int argc, char **argv)
{
    kb_config cfg;
    int rc = kb_parse_args(&cfg, argc, argv);
    if (rc != 0) {
        kb_config_free(&cfg);
        return rc > 0 ? 0 : 2;
    }
    if (cfg.plot != NULL) {
        rc = kb_plot(&cfg);
        kb_config_free(&cfg);
        return rc;
    }
    signal(SIGPIPE, SIG_IGN);
    kt_log_set_ident("kettle-bench");
    raise_nofile(&cfg);
    /* the workers inherit this mask: only the main thread takes these */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    kb_progress prog;
    pthread_mutex_init(&prog.lock, NULL);
    kt_hist_init(&prog.hist);
    prog.done = prog.errors = 0;
    pthread_barrier_t ready;
    pthread_barrier_init(&ready, NULL, cfg.threads + 1);
    kb_worker **ws = kt_calloc(cfg.threads, sizeof(*ws));
    int status = 1;

    for (unsigned i = 0; ws != NULL && i < cfg.threads; i++) {
        if (kb_worker_new(&ws[i], &cfg, i, &ready, &prog) < 0) {
            fprintf(stderr, "kettle-bench: out of memory for %u connections\n", cfg.conns);
            goto out;
        }
    }
    if (ws == NULL)
        goto out;
    for (unsigned i = 0; i < cfg.threads; i++) {
        rc = kb_worker_start(ws[i]);
        if (rc < 0) {
            /* the threads already started wait at the barrier for all:
             * there is no clean way back, and nothing to report yet */
            fprintf(stderr, "kettle-bench: cannot start a thread: %s\n", strerror(-rc));
            _exit(1);
        }
    }
    pthread_barrier_wait(&ready);
    for (unsigned i = 0; i < cfg.threads; i++) {
        if (ws[i]->err < 0) {
            fprintf(stderr, "kettle-bench: cannot create an event loop: %s\n",
                    strerror(-ws[i]->err));
            cfg.abort = true;
            break;
        }
    }
    cfg.t0 = kt_clock_ns();
    cfg.t_start = cfg.t_measure = cfg.t_end = UINT64_MAX;
    pthread_barrier_wait(&ready);
    bool interrupted = supervise(&cfg, ws, &prog, &set);
    for (unsigned i = 0; i < cfg.threads; i++)
        kb_worker_join(ws[i]);
    if (!cfg.abort)
        status = report(&cfg, ws, interrupted);
out:
    for (unsigned i = 0; ws && i < cfg.threads; i++)
        kb_worker_free(ws[i]);
    kt_free(ws);
    pthread_barrier_destroy(&ready);
    pthread_mutex_destroy(&prog.lock);
    kb_config_free(&cfg);
    return status;
}
