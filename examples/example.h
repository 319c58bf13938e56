/*
 * example.h - what every example shares that is not about fetching: the
 * command line, the clock, the record of which numbers arrived, and the
 * closing report of what the run cost.
 *
 * Every program fetches the numbers 1..N (N from `-n`, default 3) and ends
 * with the same block, so that the models can be compared line by line:
 *
 *     numbers: 1..1000, each once; first at 101 ms, last at 112 ms
 *     wall: 112 ms
 *     cpu: 85 ms (user 20 ms, system 65 ms)
 *     peak rss: 4864 KiB
 *     peak vsize: 11264 KiB
 *     threads: 1
 *
 * followed by the model's own counts (`loop wake-ups: 3`, ...), which the
 * model prints itself. Up to 10 numbers, each one is printed as it
 * arrives; past that only the summary line is (`-v` prints them all).
 *
 * Like fetch.h, this is a header of static functions: nothing to link,
 * nothing hidden. It needs only libc.
 */
#ifndef EXAMPLES_EXAMPLE_H
#define EXAMPLES_EXAMPLE_H

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_ADDR "127.0.0.1:7380"
#define DEFAULT_N 3                      /* get_numbers() fetches 1, 2 and 3 */
#define SHOW_MAX 10                      /* past this many numbers, summarise */
#define IO_TIMEOUT_S 10                  /* a blocking call's bound */
#define TIMEOUT_MS (IO_TIMEOUT_S * 1000) /* a loop's bound: give up on a silent database */
#define ERRORS_SHOWN 5                   /* failures printed before they are only counted */

/* The command line: `[-n N] [-c C] [-v] [HOST:PORT]`. */
struct example {
    const char *addr; /* the database */
    int n;            /* fetch 1..n */
    int conns;        /* -c: connections to spread them over (1..n); n when not given */
    int verbose;      /* print every number, however many */
};

/* What a model accepts beyond -n and -v. */
enum example_opts {
    EX_BASIC = 0,      /* the model decides its connections */
    EX_WITH_CONNS = 1, /* -c C: the model can pipeline fetches on C connections */
};

static struct timespec example_start;
static int example_stopped_at; /* the fetch that could not start, 0 if none */
static atomic_ulong example_errors; /* failures reported, from any thread */

/* Milliseconds since example_init() (monotonic clock): the `[ N ms]` stamps. */
static inline long elapsed_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - example_start.tv_sec) * 1000 +
           (now.tv_nsec - example_start.tv_nsec) / 1000000;
}

/*
 * Parse the command line into *ex, start the clock and make stdout
 * line-buffered (one line at a time, even into a pipe). Prints the usage
 * and exits 2 on bad usage.
 */
static inline void example_init(int argc, char **argv, struct example *ex,
                                enum example_opts opts)
{
    *ex = (struct example){ .addr = DEFAULT_ADDR, .n = DEFAULT_N };
    int opt;
    while ((opt = getopt(argc, argv, opts == EX_WITH_CONNS ? "n:c:v" : "n:v")) != -1) {
        char *end;
        long n;
        switch (opt) {
        case 'n':
        case 'c':
            errno = 0;
            n = strtol(optarg, &end, 10);
            if (errno || *end || n < 1 || n > 10000000)
                goto usage;
            *(opt == 'n' ? &ex->n : &ex->conns) = (int)n;
            break;
        case 'v':
            ex->verbose = 1;
            break;
        default:
            goto usage;
        }
    }
    if (optind < argc)
        ex->addr = argv[optind++];
    if (optind < argc)
        goto usage;
    if (ex->conns == 0 || ex->conns > ex->n)
        ex->conns = ex->n;
    setvbuf(stdout, NULL, _IOLBF, 0);
    clock_gettime(CLOCK_MONOTONIC, &example_start);
    return;
usage:
    fprintf(stderr,
            "usage: %s [-n N]%s [-v] [HOST:PORT]\n"
            "  fetch the numbers 1..N (default %d) from the database at HOST:PORT\n"
            "  (default %s); -v prints every number, not only up to %d\n",
            argv[0], opts == EX_WITH_CONNS ? " [-c C]" : "", DEFAULT_N, DEFAULT_ADDR, SHOW_MAX);
    if (opts == EX_WITH_CONNS)
        fprintf(stderr, "  -c C spreads the fetches over C connections (default: one each)\n");
    exit(2);
}

/*
 * A model that holds a socket per fetch needs N descriptors, and the soft
 * RLIMIT_NOFILE is often 1024: raise it to the hard limit, which only an
 * administrator can move. Returns the limit now in force.
 */
static inline rlim_t fd_limit_raise(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

/* Print a failure to stderr: the first few in full, then only count them
 * (ten thousand fetches against a stopped database is one message, not
 * ten thousand). The report says how many there were. */
__attribute__((format(printf, 1, 2))) static inline void example_error(const char *fmt, ...)
{
    unsigned long k = atomic_fetch_add(&example_errors, 1) + 1;
    if (k > ERRORS_SHOWN) {
        if (k == ERRORS_SHOWN + 1)
            fprintf(stderr, "(further failures are counted, not shown)\n");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/*
 * Fetch k could not even start (no descriptor left, no thread, connection
 * refused): say so, and where, once. The model starts no more fetches,
 * finishes those it started, and exits non-zero. err is an errno value.
 */
static inline void example_stop(int k, int n, const char *what, int err)
{
    if (example_stopped_at)
        return;
    example_stopped_at = k;
    fprintf(stderr, "stopped at fetch %d of %d: %s: %s", k, n, what, strerror(err));
    struct rlimit rl;
    if ((err == EMFILE || err == ENFILE) && getrlimit(RLIMIT_NOFILE, &rl) == 0)
        fprintf(stderr, " (descriptor limit RLIMIT_NOFILE %llu, hard limit %llu)",
                (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
    fputc('\n', stderr);
}

/* ---- which numbers arrived ----------------------------------------------- */

/* A record of the numbers received: each of 1..n must come exactly once. */
struct numbers {
    int n;
    int show;              /* print each number as it arrives */
    unsigned char *seen;   /* seen[v] for v in 1..n */
    long got, repeated, strays;
    long first_ms, last_ms;
};

/* 0, or -1 when out of memory (message printed). */
static inline int numbers_init(struct numbers *t, const struct example *ex)
{
    *t = (struct numbers){ .n = ex->n, .show = ex->verbose || ex->n <= SHOW_MAX };
    t->seen = calloc((size_t)ex->n + 1, 1);
    if (!t->seen) {
        fprintf(stderr, "out of memory for %d numbers\n", ex->n);
        return -1;
    }
    return 0;
}

/* Record that v arrived, and print it when this run shows each number.
 * Not thread-safe: a model with threads calls it under a lock. */
static inline void numbers_got(struct numbers *t, long v)
{
    long now = elapsed_ms();
    if (t->got == 0)
        t->first_ms = now;
    t->last_ms = now;
    t->got++;
    if (v < 1 || v > t->n)
        t->strays++;
    else if (t->seen[v]++)
        t->repeated++;
    if (t->show)
        printf("[%4ld ms] got %ld\n", now, v);
}

/* Print the `numbers:` line. 0 when each of 1..n came exactly once. */
static inline int numbers_report(const struct numbers *t)
{
    long distinct = t->got - t->repeated - t->strays;
    int ok = distinct == t->n && t->repeated == 0 && t->strays == 0;
    if (ok)
        printf("numbers: 1..%d, each once", t->n);
    else
        printf("numbers: %ld of 1..%d arrived (%ld more than once, %ld out of range)",
               distinct, t->n, t->repeated, t->strays);
    if (t->got > 0)
        printf("; first at %ld ms, last at %ld ms", t->first_ms, t->last_ms);
    putchar('\n');
    return ok ? 0 : -1;
}

static inline void numbers_free(struct numbers *t)
{
    free(t->seen);
    t->seen = NULL;
}

/* ---- what the run cost ---------------------------------------------------- */

/* "VmPeak:" (the largest address space the process ever had) and "VmHWM:"
 * (its largest resident set), in KiB, from /proc/self/status; 0 when absent. */
static inline void memory_peaks_kb(long *vsize, long *rss)
{
    *vsize = *rss = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmPeak:", 7) == 0)
            *vsize = strtol(line + 7, NULL, 10);
        else if (strncmp(line, "VmHWM:", 6) == 0)
            *rss = strtol(line + 6, NULL, 10);
    }
    fclose(f);
}

static inline long tv_ms(struct timeval tv)
{
    return (long)tv.tv_sec * 1000 + (long)tv.tv_usec / 1000;
}

/*
 * Print the wall time, the CPU time of every thread the process ran, its
 * peak memory and `threads` (the most that were alive at once, the main
 * one included: the model knows). Then the `numbers:` line's verdict and
 * the failures decide the exit status: returns 0 when every number came
 * once and nothing failed or stopped, else 1. Call it last, after every
 * thread but the main one has been joined.
 */
static inline int example_report(const struct numbers *t, long threads)
{
    long wall = elapsed_ms();
    int bad = numbers_report(t) < 0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long vsize, rss;
    memory_peaks_kb(&vsize, &rss);
    printf("wall: %ld ms\n", wall);
    printf("cpu: %ld ms (user %ld ms, system %ld ms)\n", tv_ms(ru.ru_utime) + tv_ms(ru.ru_stime),
           tv_ms(ru.ru_utime), tv_ms(ru.ru_stime));
    printf("peak rss: %ld KiB\n", rss);
    printf("peak vsize: %ld KiB\n", vsize);
    printf("threads: %ld\n", threads);
    unsigned long errors = atomic_load(&example_errors);
    if (errors)
        printf("failures: %lu\n", errors);
    return bad || errors || example_stopped_at ? 1 : 0;
}

#endif /* EXAMPLES_EXAMPLE_H */
