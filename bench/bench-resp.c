/*
 * bench-resp.c - the RESP parsers' cost: whole messages (the fast path) and
 * messages that trickle in.
 *
 * Whole: a buffer of pipelined messages parsed one after another, as a
 * server does with a read full of requests:
 *   get        N pipelined "GET <n>" requests
 *   get-16k    the same delivered in 16 KiB reads, so that reads end in the
 *              middle of a request (the caller calls again with more)
 *   mget       MGET requests of 1,000 keys
 *   reply-get  bulk replies to GET ("$6\r\n123456\r\n")
 *   reply-mget replies to MGET of 1,000 keys (arrays of bulks and nils)
 * Trickle: the last 3 KB of one large message arrive one byte per call
 * (the caller presents the whole message so far each time, as a stream
 * does), after the rest arrived at once; only those 3,000 calls are timed:
 *   trickle-mget    a 60,000-key MGET request
 *   trickle-inline  a 64 KiB inline request line
 *   trickle-reply   a 100,000-element reply
 * Whole figures are ns per message, trickle figures ns per trickled byte,
 * in the thread's CPU time (a shared machine's preemptions are left out);
 * each is the median and the minimum of ROUNDS rounds.
 *
 *   bench-resp [-n COUNT] [-r ROUNDS] [-c CASE]
 *
 * Only kt_resp_parse_request() and kt_resp_parse_reply() are called, so the
 * same source builds against an older libkettle for a before/after figure.
 * This is a benchmark, not a test: it asserts nothing beyond the parse
 * succeeding.
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <kettle/kettle.h>

#define TRICKLE 3000

static size_t count = 100000;
static int rounds = 7;

static void die(const char *what)
{
    fprintf(stderr, "bench-resp: %s\n", what);
    exit(1);
}

static void append(kt_buf *b, const char *s)
{
    if (kt_buf_append(b, s, strlen(s)) < 0)
        die("out of memory");
}

/* A command of argc arguments: argv[0] = name, then "<prefix><i>". */
static void put_command(kt_buf *b, const char *name, size_t nkeys, size_t first)
{
    kt_out o = kt_buf_out(b);
    kt_resp_arg *argv = malloc((nkeys + 1) * sizeof(*argv));
    char *keys = malloc(nkeys * 24 + 1);
    size_t off = 0;

    if (argv == NULL || keys == NULL)
        die("out of memory");
    argv[0].p = name;
    argv[0].len = strlen(name);
    for (size_t i = 0; i < nkeys; i++) {
        int n = snprintf(keys + off, 24, "%zu", first + i * 7919 % 1000003);
        argv[i + 1].p = keys + off;
        argv[i + 1].len = (size_t)n;
        off += (size_t)n;
    }
    if (kt_resp_command(&o, nkeys + 1, argv) < 0)
        die("out of memory");
    free(argv);
    free(keys);
}

/* A reply to MGET of n keys: bulks of 6 digits, every tenth a nil. */
static void put_mget_reply(kt_buf *b, size_t n)
{
    kt_out o = kt_buf_out(b);
    if (kt_resp_array(&o, n) < 0)
        die("out of memory");
    for (size_t i = 0; i < n; i++)
        if ((i % 10 == 9 ? kt_resp_nil(&o) : kt_resp_bulk_i64(&o, 100000 + (int64_t)i % 900000)) < 0)
            die("out of memory");
}

static kt_resp_req req;
static kt_resp_reply rep;
static size_t sink;

/* Parse every message in buf[0..len), shown in reads of `chunk` bytes.
 * Returns the messages parsed. */
static size_t parse_all(const char *buf, size_t len, size_t chunk, bool replies)
{
    size_t off = 0, have = chunk < len ? chunk : len, n = 0;
    const char *err = NULL;

    while (off < len) {
        ssize_t r = replies ? kt_resp_parse_reply(buf + off, have - off, NULL, &rep, &err)
                            : kt_resp_parse_request(buf + off, have - off, NULL, &req, &err);
        if (r == KT_RESP_INCOMPLETE) {
            if (have == len)
                die("incomplete input");
            have = len - have < chunk ? len : have + chunk;
            continue;
        }
        if (r < 0)
            die(err);
        sink += replies ? rep.count : req.argc;
        off += (size_t)r;
        n++;
    }
    return n;
}

/* The thread's CPU time in ns. */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static ssize_t parse_one(const char *buf, size_t len, bool replies)
{
    const char *err = NULL;
    ssize_t r = replies ? kt_resp_parse_reply(buf, len, NULL, &rep, &err)
                        : kt_resp_parse_request(buf, len, NULL, &req, &err);
    if (r == KT_RESP_ERROR)
        die(err);
    return r;
}

/* Show buf[0..len) with its last TRICKLE bytes one at a time; the time
 * taken by those calls only, in ns. */
static uint64_t trickle(const char *buf, size_t len, bool replies)
{
    uint64_t t0;

    if (parse_one(buf, len - TRICKLE, replies) != KT_RESP_INCOMPLETE)
        die("unexpected parse result");
    t0 = cpu_ns();
    for (size_t have = len - TRICKLE + 1; have < len; have++)
        if (parse_one(buf, have, replies) != KT_RESP_INCOMPLETE)
            die("unexpected parse result");
    if (parse_one(buf, len, replies) != (ssize_t)len)
        die("unexpected parse result");
    sink += replies ? rep.count : req.argc;
    return cpu_ns() - t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct bench_case {
    const char *name;
    const char *unit;
    kt_buf in;
    size_t chunk;   /* whole: read size; 0 means all at once */
    bool replies;
    bool trickle;
} bench_case;

static double run_round(bench_case *c)
{
    if (c->trickle)
        return (double)trickle(c->in.data, c->in.len, c->replies) / TRICKLE;
    uint64_t t0 = cpu_ns();
    size_t n = parse_all(c->in.data, c->in.len, c->chunk ? c->chunk : c->in.len, c->replies);
    return (double)(cpu_ns() - t0) / (double)n;
}

int main(int argc, char **argv)
{
    bench_case cases[8] = {
        { "get", "ns/request", { 0 }, 0, false, false },
        { "get-16k", "ns/request", { 0 }, 16384, false, false },
        { "mget", "ns/request", { 0 }, 0, false, false },
        { "reply-get", "ns/reply", { 0 }, 0, true, false },
        { "reply-mget", "ns/reply", { 0 }, 0, true, false },
        { "trickle-mget", "ns/byte", { 0 }, 0, false, true },
        { "trickle-inline", "ns/byte", { 0 }, 0, false, true },
        { "trickle-reply", "ns/byte", { 0 }, 0, true, true },
    };
    size_t ncases = sizeof(cases) / sizeof(cases[0]);
    const char *only = NULL;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc)
            count = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-c") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: bench-resp [-n COUNT] [-r ROUNDS] [-c CASE]\n");
            return 2;
        }
    }
    if (count == 0 || rounds < 1)
        die("bad arguments");

    for (size_t i = 0; i < count; i++) {
        put_command(&cases[0].in, "GET", 1, i);
        put_command(&cases[1].in, "GET", 1, i);
    }
    for (size_t i = 0; i < count / 1000 + 1; i++)
        put_command(&cases[2].in, "MGET", 1000, i * 1000);
    for (size_t i = 0; i < count; i++) {
        kt_out o = kt_buf_out(&cases[3].in);
        if (kt_resp_bulk_i64(&o, 100000 + (int64_t)(i % 900000)) < 0)
            die("out of memory");
    }
    for (size_t i = 0; i < count / 1000 + 1; i++)
        put_mget_reply(&cases[4].in, 1000);
    put_command(&cases[5].in, "MGET", 60000, 0);
    append(&cases[6].in, "SET key ");
    while (cases[6].in.len < 64 * 1024)
        append(&cases[6].in, "v");
    append(&cases[6].in, "\r\n");
    put_mget_reply(&cases[7].in, 100000);

    printf("%-15s %10s %12s %12s %s\n", "case", "bytes", "median", "min", "unit");
    for (size_t k = 0; k < ncases; k++) {
        bench_case *c = &cases[k];
        double *t;
        if (only && strcmp(only, c->name) != 0)
            continue;
        t = malloc((size_t)rounds * sizeof(*t));
        if (t == NULL)
            die("out of memory");
        run_round(c); /* warm up */
        for (int r = 0; r < rounds; r++)
            t[r] = run_round(c);
        qsort(t, (size_t)rounds, sizeof(*t), cmp_double);
        printf("%-15s %10zu %12.1f %12.1f %s\n", c->name, c->in.len, t[rounds / 2], t[0], c->unit);
        fflush(stdout);
        free(t);
        kt_buf_free(&c->in);
    }
    kt_resp_req_free(&req);
    kt_resp_reply_free(&rep);
    return sink == 0;
}
