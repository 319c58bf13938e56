/*
 * bench-stream-mem.c - what the stream layer's buffers cost in memory and
 * time, with libkettle's allocator replaced by one that counts live bytes
 * (as malloc_usable_size sees them). Streams are socketpairs whose peers
 * this program drains itself, so no other process is involved.
 *
 *   wave      N streams each queue one MGET reply (*3 of 3 bulks, about
 *             40 bytes) in one iteration, as when a database answers a
 *             burst of clients at once; then the loop flushes. Reported:
 *             bytes held per stream before the flush, the peak, what the
 *             loop keeps afterwards (spare blocks), ns per reply.
 *   pipeline  50 streams each queue 16 replies per iteration (the shape of
 *             redis-benchmark -P 16): ns per reply, the common path.
 *   kept      N streams each receive half a request: bytes held per stream
 *             for the kept input.
 *
 *   bench-stream-mem [--io auto|epoll|io_uring|libevent] [-n STREAMS] [-w WAVES]
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <kettle/kettle.h>

static size_t bm_live, bm_peak;

static void *bm_malloc(size_t n)
{
    void *p = malloc(n);
    if (p) {
        bm_live += malloc_usable_size(p);
        if (bm_live > bm_peak)
            bm_peak = bm_live;
    }
    return p;
}

static void *bm_realloc(void *p, size_t n)
{
    size_t old = p ? malloc_usable_size(p) : 0;
    void *q = realloc(p, n);
    if (q) {
        bm_live += malloc_usable_size(q) - old;
        if (bm_live > bm_peak)
            bm_peak = bm_live;
    }
    return q;
}

static void bm_free(void *p)
{
    if (p)
        bm_live -= malloc_usable_size(p);
    free(p);
}

struct bm_conn {
    kt_stream *s;
    int peer;        /* the other end: drained (or fed) by this program */
    size_t expect;   /* bytes the peer still has to read */
    size_t kept;     /* input bytes the stream reported kept */
    kt_resp_req req; /* this stream's request parser */
};

static struct bm_conn *conns;
static int nconns;
static char drain_buf[1 << 16];

/* Requests are parsed and dropped: a half request stays kept. */
static size_t bm_read(kt_stream *s, const char *data, size_t len, void *arg)
{
    struct bm_conn *c = arg;
    (void)s;
    ssize_t r = kt_resp_parse_request(data, len, NULL, &c->req, NULL);
    if (r <= 0)
        return 0;
    kt_resp_req_trim(&c->req, 0); /* as the daemons do between requests */
    return (size_t)r;
}

static const kt_stream_cbs bm_cbs = { .on_read = bm_read };

/* Run the loop and read the peers until every expected byte arrived. */
static void bm_drain(kt_loop *loop, int from, int to)
{
    uint64_t deadline = kt_clock_ns() + KT_SEC(60);
    for (;;) {
        int left = 0;
        (void)kt_loop_run(loop, KT_RUN_NOWAIT);
        for (int i = from; i < to; i++) {
            struct bm_conn *c = &conns[i];
            while (c->expect > 0) {
                ssize_t n = read(c->peer, drain_buf, sizeof drain_buf);
                if (n <= 0)
                    break;
                c->expect -= (size_t)n < c->expect ? (size_t)n : c->expect;
            }
            left += c->expect > 0;
        }
        if (left == 0)
            break;
        if (kt_clock_ns() > deadline) {
            fprintf(stderr, "bench-stream-mem: %d streams did not drain\n", left);
            exit(1);
        }
    }
    /* completions of the last sends (io_uring) retire the blocks */
    for (int i = 0; i < 3; i++)
        (void)kt_loop_run(loop, KT_RUN_NOWAIT);
}

/* One MGET reply for three keys. */
static size_t bm_reply(kt_stream *s, int i)
{
    kt_out o = kt_stream_out(s);
    size_t before = kt_stream_pending(s);
    (void)kt_resp_array(&o, 3);
    (void)kt_resp_bulk_i64(&o, 100000 + i);
    (void)kt_resp_bulk_i64(&o, 200000 + i);
    (void)kt_resp_bulk_i64(&o, 300000 + i);
    return kt_stream_pending(s) - before;
}

static double bm_now_ns(void) { return (double)kt_clock_ns(); }

static void bm_wave(kt_loop *loop, int n, int waves)
{
    size_t held_max = 0, peak_max = 0, spare_max = 0;
    double ns = 0;
    size_t base = bm_live;
    for (int w = 0; w < waves; w++) {
        bm_peak = bm_live;
        size_t start = bm_live;
        double t0 = bm_now_ns();
        for (int i = 0; i < n; i++)
            conns[i].expect += bm_reply(conns[i].s, i);
        size_t held = bm_live - start;
        (void)kt_loop_run(loop, KT_RUN_NOWAIT); /* the flush */
        ns += bm_now_ns() - t0;
        bm_drain(loop, 0, n);
        if (held > held_max)
            held_max = held;
        if (bm_peak - base > peak_max)
            peak_max = bm_peak - base;
        if (bm_live - base > spare_max)
            spare_max = bm_live - base;
    }
    printf("wave      %6d streams x %d: held %7.1f B/stream, peak %8.1f KiB, kept after %7.1f KiB,"
           " %6.0f ns/reply\n", n, waves, (double)held_max / n, peak_max / 1024.0,
           spare_max / 1024.0, ns / ((double)n * waves));
}

static void bm_pipeline(kt_loop *loop, int n, int iters)
{
    double t0 = bm_now_ns();
    for (int it = 0; it < iters; it++) {
        for (int i = 0; i < n; i++)
            for (int k = 0; k < 16; k++)
                conns[i].expect += bm_reply(conns[i].s, k);
        (void)kt_loop_run(loop, KT_RUN_NOWAIT);
        bm_drain(loop, 0, n);
    }
    printf("pipeline  %6d streams x 16 x %d: %6.0f ns/reply (flush and peer reads included)\n",
           n, iters, (bm_now_ns() - t0) / ((double)n * 16 * iters));
}

static void bm_kept(kt_loop *loop, int n)
{
    static const char half[] = "*3\r\n$4\r\nMGET\r\n$6\r\n100001\r\n$6\r\n2000";
    size_t start = bm_live;
    for (int i = 0; i < n; i++) {
        if (write(conns[i].peer, half, sizeof half - 1) != (ssize_t)(sizeof half - 1)) {
            perror("write");
            exit(1);
        }
        (void)kt_stream_read_start(conns[i].s);
    }
    uint64_t deadline = kt_clock_ns() + KT_SEC(60);
    for (int done = 0; done < n;) {
        (void)kt_loop_run(loop, KT_RUN_NOWAIT);
        for (done = 0; done < n && kt_stream_buffered(conns[done].s) == sizeof half - 1; done++)
            ;
        if (kt_clock_ns() > deadline) {
            fprintf(stderr, "bench-stream-mem: input not kept\n");
            exit(1);
        }
    }
    printf("kept      %6d streams x %zu bytes kept: held %7.1f B/stream\n", n, sizeof half - 1,
           (double)(bm_live - start) / n);
}

int main(int argc, char **argv)
{
    int n = 5000, waves = 10;
    kt_loop_options opts = { .io = KT_IO_AUTO };
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc) {
            n = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-w") && i + 1 < argc) {
            waves = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--io") && i + 1 < argc) {
            const char *io = argv[++i];
            opts.io = !strcmp(io, "epoll") ? KT_IO_EPOLL : !strcmp(io, "io_uring") ? KT_IO_URING
                    : !strcmp(io, "libevent") ? KT_IO_LIBEVENT : KT_IO_AUTO;
        } else {
            fprintf(stderr, "usage: bench-stream-mem [--io auto|epoll|io_uring|libevent] "
                            "[-n STREAMS] [-w WAVES]\n");
            return 2;
        }
    }
    if (n < 50)
        n = 50;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)n * 2 + 64 > rl.rlim_cur)
        n = (int)((rl.rlim_cur - 64) / 2);

    kt_set_allocator(&(kt_allocator){ bm_malloc, bm_realloc, bm_free });
    kt_loop *loop;
    int rc = kt_loop_new(&loop, &opts);
    if (rc < 0) {
        fprintf(stderr, "bench-stream-mem: loop: %s\n", strerror(-rc));
        return 1;
    }
    conns = calloc((size_t)n, sizeof(*conns));
    for (int i = 0; i < n; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
            perror("socketpair");
            return 1;
        }
        fcntl(sv[1], F_SETFL, O_NONBLOCK);
        conns[i].peer = sv[1];
        if ((rc = kt_stream_open_fd(loop, sv[0], &bm_cbs, &conns[i], &conns[i].s)) < 0) {
            fprintf(stderr, "bench-stream-mem: stream: %s\n", strerror(-rc));
            return 1;
        }
        nconns++;
    }
    (void)kt_loop_run(loop, KT_RUN_NOWAIT);
    printf("backend %s, %d streams, libkettle heap %.1f KiB before\n", kt_loop_backend(loop), n,
           bm_live / 1024.0);
    bm_wave(loop, n, waves);
    bm_pipeline(loop, 50, 2000);
    bm_kept(loop, n);
    for (int i = 0; i < nconns; i++) {
        kt_stream_close(conns[i].s, KT_CLOSE_NOW);
        close(conns[i].peer);
        kt_resp_req_free(&conns[i].req);
    }
    (void)kt_loop_run(loop, KT_RUN_NOWAIT);
    kt_loop_free(loop);
    free(conns);
    return 0;
}
