/*
 * bench-backends.c - a PING server on libkettle, to compare the I/O
 * backends with everything else equal. It speaks just enough RESP for
 * redis-benchmark (the server of tests/unit/ping-server.h: PING answers
 * +PONG, CONFIG GET an empty value, anything else but INFO an error;
 * replies of one read are flushed together, as kettled does).
 * bench/bench-backends.py drives one server per backend and reads
 * their CPU time from /proc/PID/stat.
 *
 *   bench-backends [--io auto|epoll|io_uring|libevent] [--listen ADDR]
 *                  [--uring-buffers N] [--uring-entries N]
 *
 * Prints "listening on ADDR:PORT (io NAME)"; SIGTERM/SIGINT stop it.
 */
#include "config.h"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <kettle/kettle.h>
#include "../tests/unit/ping-server.h"

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0", *io = "auto";
    kt_loop_options opts = { 0 };
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen = argv[++i];
        } else if (strcmp(argv[i], "--io") == 0 && i + 1 < argc) {
            io = argv[++i];
        } else if (strcmp(argv[i], "--uring-buffers") == 0 && i + 1 < argc) {
            opts.uring_buffers = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--uring-entries") == 0 && i + 1 < argc) {
            opts.uring_entries = (unsigned)strtoul(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: %s [--io auto|epoll|io_uring|libevent] [--listen ADDR:PORT]"
                            " [--uring-buffers N] [--uring-entries N]\n", argv[0]);
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    return ping_serve("bench-backends", listen, io, &opts);
}
