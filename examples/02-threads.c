/*
 * 02-threads.c - get_numbers() with one thread per fetch.
 *
 * The fetch code is the blocking code of 01-blocking.c, unchanged; what
 * changes is that each fetch runs on its own thread with its own
 * connection, so the three waits overlap and the total is the LONGEST delay
 * (300 ms), not the sum.
 *
 * The cost: every thread is a kernel task with its own stack. The program
 * prints how much address space and resident memory the three threads
 * added while they were blocked: each stack reserves 8 MiB of address
 * space by default (the RLIMIT_STACK soft limit), of which only the pages
 * touched become resident. Three threads are nothing; 10,000 waiting
 * connections would be 10,000 stacks and 10,000 tasks for the scheduler.
 *
 * Usage: 02-threads [HOST:PORT]   (default 127.0.0.1:7380)
 */
#include "config.h"

#include <pthread.h>

#include "fetch.h"

/* What a thread needs, and what it hands back when joined. */
struct job {
    pthread_t tid;
    int n;                             /* the number to fetch */
    const char *addr;                  /* for messages */
    const struct sockaddr_storage *ss; /* where the database is */
    socklen_t sslen;
    int ok;                            /* set by the thread: 1 when n came back */
};

/* Threads that have connected (or failed to): main waits for all of them
 * before measuring memory, so that every stack is in use. */
static pthread_mutex_t ready_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready_cond = PTHREAD_COND_INITIALIZER;
static int ready;

static void announce_ready(void)
{
    pthread_mutex_lock(&ready_lock);
    ready++;
    pthread_cond_signal(&ready_cond);
    pthread_mutex_unlock(&ready_lock);
}

/* Thread body: its own connection, one blocking fetch. Every thread sleeps
 * in its own recv() at the same time as the others. */
static void *fetch_thread(void *arg)
{
    struct job *j = arg;
    const char *what;
    int fd = dial(j->ss, j->sslen, DIAL_BLOCKING, &what);
    if (fd < 0)
        fprintf(stderr, "%s to %s: %s\n", what, j->addr, strerror(errno));
    announce_ready();
    if (fd < 0)
        return NULL;
    long v = fetch_blocking(fd, j->n);
    close(fd);
    if (v < 0)
        return NULL;
    if (v != j->n) {
        fprintf(stderr, "GET %d: the database answered %ld\n", j->n, v);
        return NULL;
    }
    /* One printf is one locked write to stdout: lines from different
     * threads do not interleave. */
    printf("[%4ld ms] got %ld (thread %d)\n", elapsed_ms(), v, j->n);
    j->ok = 1;
    return NULL;
}

/* Read "VmSize:" and "VmRSS:" (kB) from /proc/self/status; 0 when absent. */
static void memory_kb(long *vsize, long *rss)
{
    *vsize = *rss = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmSize:", 7) == 0)
            *vsize = strtol(line + 7, NULL, 10);
        else if (strncmp(line, "VmRSS:", 6) == 0)
            *rss = strtol(line + 6, NULL, 10);
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    const char *addr = example_init(argc, argv); /* exits 2 on bad usage */

    struct sockaddr_storage ss;
    socklen_t sslen;
    if (resolve(addr, &ss, &sslen) < 0)
        return 1;

    pthread_attr_t attr;
    size_t stack = 0;
    pthread_attr_init(&attr);
    pthread_attr_getstacksize(&attr, &stack);
    pthread_attr_destroy(&attr);

    long vs0, rss0;
    memory_kb(&vs0, &rss0);
    printf("[%4ld ms] starting %d threads (default stack %zu KiB each) against %s\n",
           elapsed_ms(), NFETCH, stack / 1024, addr);

    struct job jobs[NFETCH];
    int started = 0;
    for (int i = 0; i < NFETCH; i++) {
        jobs[i] = (struct job){ .n = i + 1, .addr = addr, .ss = &ss, .sslen = sslen };
        int rc = pthread_create(&jobs[i].tid, NULL, fetch_thread, &jobs[i]);
        if (rc != 0) {
            fprintf(stderr, "pthread_create: %s\n", strerror(rc));
            break;
        }
        started++;
    }

    /* Once every thread has connected, they are about to block in recv():
     * measure what they cost while they wait. */
    pthread_mutex_lock(&ready_lock);
    while (ready < started)
        pthread_cond_wait(&ready_cond, &ready_lock);
    pthread_mutex_unlock(&ready_lock);
    long vs1, rss1;
    memory_kb(&vs1, &rss1);
    if (vs0 && vs1)
        printf("[%4ld ms] while waiting: address space +%ld KiB, resident +%ld KiB\n",
               elapsed_ms(), vs1 - vs0, rss1 - rss0);

    int ok = started == NFETCH;
    for (int i = 0; i < started; i++) {
        pthread_join(jobs[i].tid, NULL);
        ok = ok && jobs[i].ok;
    }
    if (!ok)
        return 1;
    printf("total: %ld ms\n", elapsed_ms());
    return 0;
}
