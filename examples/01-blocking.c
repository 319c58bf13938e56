/*
 * 01-blocking.c - get_numbers() the plain way: one blocking socket, fetch 1,
 * then 2, then 3.
 *
 * Each call to fetch_blocking() (fetch.h) sends `GET n` and then sits in recv() until the
 * answer comes back. Nothing else happens meanwhile: the program spends
 * nearly all its time asleep in the kernel, and the total is the SUM of the
 * three delays (100 + 200 + 300 ms against kettle-db in proportional mode).
 * This is the baseline every later example improves on.
 *
 * Usage: 01-blocking [HOST:PORT]   (default 127.0.0.1:7380)
 * Build: part of `make` (not installed); see examples/README.md.
 */
#include "config.h"

#include "fetch.h"

int main(int argc, char **argv)
{
    const char *addr = example_init(argc, argv); /* exits 2 on bad usage */

    struct sockaddr_storage ss;
    socklen_t sslen;
    if (resolve(addr, &ss, &sslen) < 0)
        return 1;

    const char *what;
    int fd = dial(&ss, sslen, DIAL_BLOCKING, &what); /* recv/send give up after 10 s */
    if (fd < 0) {
        fprintf(stderr, "%s to %s: %s\n", what, addr, strerror(errno));
        return 1;
    }
    printf("[%4ld ms] connected to %s; fetching 1, 2, 3 one after another\n",
           elapsed_ms(), addr);

    /* get_numbers(): the straight-line version. Each fetch starts only when
     * the previous one has finished. */
    for (int n = 1; n <= 3; n++) {
        long v = fetch_blocking(fd, n);
        if (v < 0) {
            close(fd);
            return 1;
        }
        if (v != n) {
            fprintf(stderr, "GET %d: the database answered %ld\n", n, v);
            close(fd);
            return 1;
        }
        printf("[%4ld ms] got %ld\n", elapsed_ms(), v);
    }
    close(fd);
    printf("total: %ld ms\n", elapsed_ms());
    return 0;
}
