/*
 * 02-threads.c - get_numbers() with one thread per fetch.
 *
 * The fetch code is the blocking code of 01-blocking.c, unchanged; what
 * changes is that each fetch runs on its own thread with its own
 * connection, so the waits overlap and the total is the LONGEST delay
 * (100 ms against a fixed delay), not the sum.
 *
 * The cost: every thread is a kernel task with its own stack. Each stack
 * reserves 8 MiB of address space by default (the RLIMIT_STACK soft
 * limit), of which only the pages touched become resident; creating a
 * thread is a system call that maps that stack and sets up a task. Three
 * threads are nothing. Run it with -n 10000 and read the report: the
 * address space, the system CPU time, and how many threads were ever alive
 * at once (creating them one after another takes longer than the 100 ms
 * the first ones wait, so the first are done before the last start).
 *
 * The main thread opens each connection before it starts the thread that
 * uses it, so that when descriptors or threads run out it knows exactly
 * which fetch could not start. It then waits for the threads it started.
 *
 * Usage: 02-threads [-n N] [-v] [HOST:PORT]   (default 127.0.0.1:7380)
 */
#include "config.h"

#include <pthread.h>

#include "fetch.h"

/* What a thread needs. */
struct job {
    pthread_t tid;
    int n;  /* the number to fetch */
    int fd; /* its own connection, connected, blocking; the thread closes it */
};

/* The one piece of state the threads share, so it takes a lock. */
static pthread_mutex_t nums_lock = PTHREAD_MUTEX_INITIALIZER;
static struct numbers nums;

static atomic_long alive, most_alive; /* fetch threads running, and the peak */

/* Thread body: one blocking fetch on its own connection. Every thread
 * sleeps in its own recv() at the same time as the others. */
static void *fetch_thread(void *arg)
{
    struct job *j = arg;
    long v = fetch_blocking(j->fd, j->n);
    close(j->fd);
    if (v >= 0 && v != j->n)
        example_error("GET %d: the database answered %ld", j->n, v);
    if (v == j->n) {
        pthread_mutex_lock(&nums_lock);
        numbers_got(&nums, v);
        pthread_mutex_unlock(&nums_lock);
    }
    atomic_fetch_sub(&alive, 1);
    return NULL;
}

int main(int argc, char **argv)
{
    struct example ex;
    struct sockaddr_storage ss;
    socklen_t sslen;
    example_setup(argc, argv, &ex, &ss, &sslen, &nums); /* exits on bad usage, address, memory */
    struct job *jobs = calloc((size_t)ex.n, sizeof *jobs);
    if (!jobs)
        return 1;
    fd_limit_raise(); /* one connection per thread */

    pthread_attr_t attr;
    size_t stack = 0;
    pthread_attr_init(&attr);
    pthread_attr_getstacksize(&attr, &stack);
    pthread_attr_destroy(&attr);
    printf("[%4ld ms] starting %d threads (stack %zu KiB each), one connection each, against %s\n",
           elapsed_ms(), ex.n, stack / 1024, ex.addr);

    int started = 0;
    for (int i = 0; i < ex.n; i++) {
        struct job *j = &jobs[i];
        const char *what;
        j->n = i + 1;
        j->fd = dial(&ss, sslen, DIAL_BLOCKING, &what);
        if (j->fd < 0) {
            example_stop(j->n, ex.n, what, errno);
            break;
        }
        long now = atomic_fetch_add(&alive, 1) + 1;
        if (now > atomic_load(&most_alive))
            atomic_store(&most_alive, now); /* only main raises it: no race */
        int rc = pthread_create(&j->tid, NULL, fetch_thread, j);
        if (rc != 0) {
            atomic_fetch_sub(&alive, 1);
            close(j->fd);
            example_stop(j->n, ex.n, "pthread_create", rc);
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(jobs[i].tid, NULL);

    int rc = example_report(&nums, atomic_load(&most_alive) + 1);
    printf("threads created: %d\n", started);
    printf("threads alive at once, at most: %ld\n", atomic_load(&most_alive));
    printf("recv() calls: %lu\n", atomic_load(&recv_calls));
    numbers_free(&nums);
    free(jobs);
    return rc;
}
