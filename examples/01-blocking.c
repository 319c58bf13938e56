/*
 * 01-blocking.c - get_numbers() the plain way: one blocking socket, fetch 1,
 * then 2, then 3 (or 1..N with -n N).
 *
 * Each call to fetch_blocking() (fetch.h) sends `GET n` and then sits in
 * recv() until the answer comes back. Nothing else happens meanwhile: the
 * program spends nearly all its time asleep in the kernel, and the total
 * is the SUM of the delays (N x 100 ms against `kettle-db --latency "fixed
 * 100ms"`). One connection is all it needs, so no descriptor limit stops
 * it; time does. This is the baseline every later example improves on.
 *
 * Usage: 01-blocking [-n N] [-v] [HOST:PORT]   (default 127.0.0.1:7380)
 * Build: part of `make` (not installed); see examples/README.md.
 */
#include "config.h"

#include "fetch.h"

int main(int argc, char **argv)
{
    struct example ex;
    struct sockaddr_storage ss;
    socklen_t sslen;
    struct numbers nums;
    example_setup(argc, argv, &ex, &ss, &sslen, &nums); /* exits on bad usage, address, memory */

    const char *what;
    int fd = dial(&ss, sslen, DIAL_BLOCKING, &what); /* recv/send give up after 10 s */
    if (fd < 0) {
        example_stop(1, ex.n, what, errno);
    } else {
        printf("[%4ld ms] connected to %s; fetching 1..%d one after another\n", elapsed_ms(),
               ex.addr, ex.n);

        /* get_numbers(): the straight-line version. Each fetch starts only
         * when the previous one has finished. */
        for (int n = 1; n <= ex.n; n++) {
            long v = fetch_blocking(fd, n);
            if (v < 0)
                break; /* the message is printed; the report says what is missing */
            if (v != n) {
                example_error("GET %d: the database answered %ld", n, v);
                break;
            }
            numbers_got(&nums, v);
        }
        close(fd);
    }

    int rc = example_report(&nums, 1);
    printf("recv() calls: %lu (each a sleep in the kernel, one after another)\n",
           atomic_load(&recv_calls));
    numbers_free(&nums);
    return rc;
}
