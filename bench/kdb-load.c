/*
 * kdb-load.c - the load generator of bench/bench-db.py: CONNS connections,
 * each keeping DEPTH pipelined `GET n` requests in flight against a RESP
 * server, checking that every reply is the bulk string n, and timing each
 * request from its write to its reply. Prints one JSON line.
 *
 *   kdb-load HOST PORT CONNS DEPTH TOTAL [EXPECT_MS]
 *
 * TOTAL requests are sent in all (each connection refills its pipeline as
 * replies arrive). With EXPECT_MS, lateness = latency - EXPECT_MS is
 * reported too. Plain epoll and blocking-free sockets; built by the bench
 * script with `cc -O2`, not part of the project's programs.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HIST_US 2000000 /* 1 us buckets up to 2 s */

struct conn {
    int fd;
    int64_t *keys;     /* ring of DEPTH keys in flight */
    uint64_t *sent_ns; /* their write times */
    size_t head, n;    /* oldest in flight, count */
    char *out;         /* unsent request bytes */
    size_t olen, ocap;
    char in[65536 + 64];
    size_t ilen;
    uint64_t sent, recvd;
    int want_out;
};

static uint32_t *hist;
static uint64_t hist_over, lat_max, errors, bad;
static size_t depth;
static uint64_t total, sent_all, recvd_all, inflight_max, inflight;
static int64_t next_key;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static void queue_requests(struct conn *c)
{
    uint64_t t = now_ns();
    while (c->n < depth && sent_all < total) {
        char num[24];
        int64_t key = next_key++ % 1000000000;
        int nl = snprintf(num, sizeof num, "%lld", (long long)key);
        if (c->olen + 64 > c->ocap) {
            c->ocap = c->ocap ? c->ocap * 2 : 65536;
            c->out = realloc(c->out, c->ocap);
            if (!c->out)
                die("realloc");
        }
        c->olen += (size_t)sprintf(c->out + c->olen, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", nl, num);
        size_t slot = (c->head + c->n) % depth;
        c->keys[slot] = key;
        c->sent_ns[slot] = t;
        c->n++;
        c->sent++;
        sent_all++;
        if (++inflight > inflight_max)
            inflight_max = inflight;
    }
}

static int flush_out(struct conn *c)
{
    size_t off = 0;
    while (off < c->olen) {
        ssize_t w = write(c->fd, c->out + off, c->olen - off);
        if (w < 0) {
            if (errno == EAGAIN)
                break;
            if (errno == EINTR)
                continue;
            return -1;
        }
        off += (size_t)w;
    }
    memmove(c->out, c->out + off, c->olen - off);
    c->olen -= off;
    return 0;
}

static void record(uint64_t ns)
{
    uint64_t us = ns / 1000;
    if (us < HIST_US)
        hist[us]++;
    else
        hist_over++;
    if (ns > lat_max)
        lat_max = ns;
}

/* Parse complete replies in c->in; returns bytes consumed. */
static size_t parse(struct conn *c, uint64_t t)
{
    size_t pos = 0;
    for (;;) {
        char *p = c->in + pos, *end = c->in + c->ilen;
        char *crlf = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!crlf)
            break;
        size_t used;
        int ok = 0;
        int64_t got = 0;
        if (p[0] == '$') {
            long blen = strtol(p + 1, NULL, 10);
            if (blen < 0) {
                used = (size_t)(crlf + 2 - p);
            } else {
                if ((size_t)(end - (crlf + 2)) < (size_t)blen + 2)
                    break;
                char *d = crlf + 2;
                ok = 1;
                for (long i = 0; i < blen; i++) {
                    if (d[i] < '0' || d[i] > '9') {
                        ok = 0;
                        break;
                    }
                    got = got * 10 + (d[i] - '0');
                }
                used = (size_t)(d + blen + 2 - p);
            }
        } else {
            used = (size_t)(crlf + 2 - p);
            if (p[0] == '-')
                errors++;
        }
        if (c->n == 0) {
            fprintf(stderr, "reply with nothing in flight\n");
            exit(3);
        }
        size_t slot = c->head;
        if (!ok || got != c->keys[slot])
            bad++;
        record(t - c->sent_ns[slot]);
        c->head = (c->head + 1) % depth;
        c->n--;
        c->recvd++;
        recvd_all++;
        inflight--;
        pos += used;
    }
    return pos;
}

static uint64_t pct(double p)
{
    uint64_t n = recvd_all, want = (uint64_t)(p / 100.0 * (double)n + 0.5), acc = 0;
    if (want == 0)
        want = 1;
    for (uint64_t us = 0; us < HIST_US; us++) {
        acc += hist[us];
        if (acc >= want)
            return us * 1000 + 500;
    }
    return lat_max;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: kdb-load HOST PORT CONNS DEPTH TOTAL [EXPECT_MS]\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    int nconns = atoi(argv[3]);
    depth = (size_t)atol(argv[4]);
    total = strtoull(argv[5], NULL, 10);
    double expect_ms = argc > 6 ? atof(argv[6]) : -1;
    hist = calloc(HIST_US, sizeof *hist);
    struct conn *cs = calloc((size_t)nconns, sizeof *cs);
    int ep = epoll_create1(0);
    if (!hist || !cs || ep < 0)
        die("setup");
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, host, &sa.sin_addr);
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &cs[i];
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
            die("connect");
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        c->keys = calloc(depth, sizeof *c->keys);
        c->sent_ns = calloc(depth, sizeof *c->sent_ns);
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            die("epoll_ctl");
    }
    uint64_t t0 = now_ns();
    for (int i = 0; i < nconns; i++) {
        queue_requests(&cs[i]);
        if (flush_out(&cs[i]) < 0)
            die("write");
    }
    struct epoll_event evs[256];
    while (recvd_all < total) {
        int n = epoll_wait(ep, evs, 256, 10000);
        if (n == 0) {
            fprintf(stderr, "no progress in 10 s (%llu of %llu answered)\n",
                    (unsigned long long)recvd_all, (unsigned long long)total);
            return 3;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLIN) {
                ssize_t r = read(c->fd, c->in + c->ilen, sizeof c->in - 64 - c->ilen);
                if (r <= 0) {
                    if (r < 0 && errno == EAGAIN)
                        continue;
                    fprintf(stderr, "connection closed by the server\n");
                    return 3;
                }
                c->ilen += (size_t)r;
                size_t used = parse(c, now_ns());
                memmove(c->in, c->in + used, c->ilen - used);
                c->ilen -= used;
                queue_requests(c);
            }
            if (flush_out(c) < 0)
                die("write");
            int want = c->olen > 0;
            if (want != c->want_out) {
                struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c };
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                c->want_out = want;
            }
        }
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    printf("{\"requests\": %llu, \"bad_replies\": %llu, \"error_replies\": %llu, \"seconds\": %.3f, "
           "\"rps\": %.0f, \"inflight_max\": %llu, \"lat_p50_ms\": %.3f, \"lat_p99_ms\": %.3f, "
           "\"lat_p999_ms\": %.3f, \"lat_max_ms\": %.3f",
           (unsigned long long)recvd_all, (unsigned long long)bad, (unsigned long long)errors, secs,
           (double)recvd_all / secs, (unsigned long long)inflight_max, pct(50) / 1e6, pct(99) / 1e6,
           pct(99.9) / 1e6, lat_max / 1e6);
    if (expect_ms >= 0)
        printf(", \"late_p50_ms\": %.3f, \"late_p99_ms\": %.3f, \"late_max_ms\": %.3f",
               pct(50) / 1e6 - expect_ms, pct(99) / 1e6 - expect_ms, lat_max / 1e6 - expect_ms);
    printf("}\n");
    return bad ? 1 : 0;
}
