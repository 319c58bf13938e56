/*
 * 06-kettle.c - get_numbers() the way kettled does it: libkettle's reactor,
 * streams and futures, and kt_all() over N fetches.
 *
 * What 03-05 built by hand is now the library's job:
 *   - the poll() loop is a kt_loop (epoll or io_uring underneath), which
 *     wakes only the streams whose sockets are ready, and keeps timers: a
 *     wake-up costs what is ready, not what is open;
 *   - the per-connection state machine is a kt_stream plus a few
 *     callbacks, and the result of a fetch a kt_future that the read
 *     callback resolves: fetch(conn, n) in kettle-fetch.h, the
 *     asynchronous get_number(n);
 *   - the combinators are the explanation's: kt_all() gathers the N
 *     fetches, kt_timeout() bounds the whole and cancels what is still
 *     pending, which closes its connection.
 *
 * By default each fetch has its own connection, as in 02-05; with -c C the
 * N fetches are pipelined on C connections, as kettled does. What one
 * fetch costs is a kt_stream, a future and a socket, or, pipelined, a
 * future and a few dozen bytes: the report's peak RSS at -n 10000 divided
 * by 10,000.
 *
 * Usage: 06-kettle [-n N] [-c C] [-v] [HOST:PORT]   (default 127.0.0.1:7380)
 *        KETTLE_IO=epoll 06-kettle ...   picks the I/O backend
 */
#include "config.h"

#include "example.h"
#include "kettle-fetch.h"

#define TIMEOUT KT_SEC(IO_TIMEOUT_S) /* give up on a silent database after this long */

static struct numbers nums;

/* Continuation of each fetch: record the number as it arrives. */
static void got_cb(kt_future *f, void *arg)
{
    if (kt_future_state_of(f) == KT_FUTURE_RESOLVED)
        numbers_got(&nums, (long)kt_future_i64(f));
    else if (kt_future_state_of(f) == KT_FUTURE_FAILED)
        example_error("%s", kt_future_errmsg(f));
}

/* Continuation of kt_timeout(kt_all(...)): everything has settled. */
static void all_done_cb(kt_future *f, void *arg)
{
    if (kt_future_error(f) == -ETIMEDOUT)
        example_error("timed out after %d ms waiting for the database", TIMEOUT_MS);
    kt_loop_stop(kt_future_loop(f));
}

int main(int argc, char **argv)
{
    struct example ex;
    kt_addr addr;
    kt_future **fs;
    struct conn **conns;
    kt_loop *loop = kettle_start(argc, argv, &ex, &addr, &fs, &conns, &nums); /* exits on error */
    int rc;

    /* get_numbers(): N fetches started at once, gathered by kt_all,
     * bounded by kt_timeout. Nothing has happened on the network yet when
     * these calls return (but each has its socket); the loop does it all. */
    size_t started = 0;
    int opened = 0, ok = 1;
    for (; ok && started < (size_t)ex.n; started++) {
        size_t k = started % (size_t)ex.conns; /* fetch n goes on connection k */
        if (started < (size_t)ex.conns) {
            rc = conn_open(loop, &addr, TIMEOUT, &conns[k]);
            if (rc < 0) { /* out of descriptors, say */
                example_stop((int)started + 1, ex.n, "kt_stream_connect", -rc);
                break;
            }
            opened++;
        }
        fs[started] = fetch(conns[k], (int)started + 1);
        ok = fs[started] && kt_future_then(fs[started], got_cb, NULL) == 0;
    }
    kt_future *all = ok ? kt_all(loop, fs, started) : NULL;
    kt_future *bounded = all ? kt_timeout(all, TIMEOUT) : NULL;
    if (!bounded || kt_future_then(bounded, all_done_cb, NULL) < 0) {
        example_error("out of memory");
    } else {
        printf("[%4ld ms] started kt_all(fetch(1), ..., fetch(%zu)) on %d connections to %s"
               " (%s)\n", elapsed_ms(), started, opened, ex.addr, kt_loop_backend(loop));
        rc = kt_loop_run(loop, KT_RUN_DEFAULT);
        if (rc < 0)
            example_error("event loop failed: %s", strerror(-rc));
    }
    kt_loop_stats st;
    kt_loop_get_stats(loop, &st);

    /* Tear down: drop our references, cancel anything still running (only
     * after an error), and let the loop finish closing the streams. */
    if (bounded)
        kt_future_unref(bounded);
    if (all)
        kt_future_unref(all);
    for (size_t i = 0; i < started; i++) {
        if (fs[i]) {
            kt_future_cancel(fs[i]);
            kt_future_unref(fs[i]);
        }
    }
    loop_finish(loop);
    free(fs);
    free(conns);

    rc = example_report(&nums, 1);
    printf("connections: %d\n", opened);
    printf("loop iterations: %llu\n", (unsigned long long)st.iterations);
    numbers_free(&nums);
    return rc;
}
