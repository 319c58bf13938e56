/*
 * 08-work-stealing.c - keep the reactor free: CPU-bound work goes to a
 * work-stealing pool of threads, results come back with kt_loop_post().
 *
 * 07-blocked-loop.c showed that anything long on the loop's thread stops
 * everything. Waiting is cured by waiting asynchronously; COMPUTING cannot
 * be, so it must leave the loop's thread. Here each fetched number n starts
 * a CPU-bound job (count the primes below n x 500,000 by trial division) on
 * a pool of worker threads, while the reactor goes on serving its sockets
 * and a 50 ms timer whose ticks show it is never held up.
 *
 * The pool is the classic work-stealing design:
 *   - a global queue, where jobs from outside the pool arrive (the reactor
 *     submits there);
 *   - one local deque per worker: a job splits itself in two, pushes one
 *     half on its own worker's deque and goes on with the other (so a
 *     worker's own jobs are hot in its cache and need no shared queue);
 *   - stealing: a worker with nothing local and nothing global takes the
 *     OLDEST job from another worker's deque, the top, while the owner works
 *     at the bottom; old jobs are the big halves, so one steal moves a lot
 *     of work and steals stay rare;
 *   - idle workers sleep on a condition variable instead of spinning.
 * Each deque has its own mutex to keep the example short; production pools
 * make the owner's push and pop lock-free (Chase-Lev deques).
 *
 * When the last piece of a job finishes, the worker hands the result to the
 * reactor with kt_loop_post(), the one libkettle call that is safe from
 * another thread: the callback then runs on the loop's thread, where it can
 * touch streams and futures.
 *
 * Usage: 08-work-stealing [HOST:PORT]   (default 127.0.0.1:7380)
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kettle/common.h>
#include <kettle/loop.h>
#include <kettle/future.h>
#include <kettle/resp.h>
#include <kettle/stream.h>

#define DEFAULT_ADDR "127.0.0.1:7380"
#define TIMEOUT KT_SEC(10) /* give up after this long */
#define NFETCH 3
#define TICK KT_MSEC(50)
#define PRIMES_PER_N 500000u /* job n counts the primes below n x this */
#define GRAIN 20000u         /* ranges this small are not split further */
#define DEQUE_CAP 256        /* per-worker deque slots (a full deque runs jobs inline) */
#define MAX_WORKERS 8

static uint64_t start_ns;

static long elapsed_ms(void)
{
    return (long)((kt_clock_ns() - start_ns) / 1000000u);
}

/* ---- fetch(n): a future for one number (as in 06-kettle.c) ------------------ */

/* One fetch in flight: its connection and the future it will settle. The
 * stream's callbacks are this fetch's state machine; the library calls the
 * right one when something happens. */
struct fetch {
    kt_future *fut;       /* our reference; dropped in on_close */
    kt_stream *stream;
    int n;
    kt_resp_reply reply;  /* the parser's output (reused memory) */
    char addr[64];        /* for messages */
};

static void fetch_close(struct fetch *f)
{
    kt_stream_close(f->stream, KT_CLOSE_NOW); /* on_close runs later */
}

static void fetch_on_connect(kt_stream *s, int status, void *arg)
{
    struct fetch *f = arg;
    if (status < 0) {
        kt_future_fail(f->fut, status, "GET %d: connect to %s: %s", f->n, f->addr,
                       strerror(-status));
        fetch_close(f);
        return;
    }
    char num[16];
    int nlen = snprintf(num, sizeof num, "%d", f->n);
    kt_resp_arg argv[2] = { { "GET", 3 }, { num, (size_t)nlen } };
    /* Encoded straight into the stream's output queue. Queued, not sent:
     * the loop flushes every stream's output once, at the end of the
     * iteration. */
    kt_out out = kt_stream_out(s);
    int rc = kt_resp_command(&out, 2, argv);
    if (rc == 0)
        rc = kt_stream_read_start(s);
    if (rc < 0) {
        kt_future_fail(f->fut, rc, "GET %d: %s", f->n, strerror(-rc));
        fetch_close(f);
    }
}

/* The number a GET reply carries: a bulk string "7" or an integer :7.
 * 0, or -1 when the reply is something else. */
static int reply_number(const kt_resp_node *r, int64_t *value)
{
    if (r->type == KT_RESP_INTEGER) {
        *value = r->i;
        return 0;
    }
    if (r->type == KT_RESP_BULK && kt_parse_i64(r->p, r->len, value) == 0)
        return 0;
    return -1;
}

/* Bytes arrived. Return what was used; the stream keeps the rest and hands
 * it back, with more, next time. */
static size_t fetch_on_read(kt_stream *s, const char *data, size_t len, void *arg)
{
    struct fetch *f = arg;
    const char *why = "bad reply";
    ssize_t used = kt_resp_parse_reply(data, len, NULL, &f->reply, &why);
    if (used == KT_RESP_INCOMPLETE)
        return 0; /* wait for more; these bytes come back with the rest */

    int64_t value = 0;
    if (used < 0)
        kt_future_fail(f->fut, -EPROTO, "GET %d: %s", f->n, why);
    else if (f->reply.nodes[0].type == KT_RESP_ERROR_REPLY)
        kt_future_fail(f->fut, -EPROTO, "GET %d: the database replied %.*s", f->n,
                       (int)f->reply.nodes[0].len, f->reply.nodes[0].p);
    else if (reply_number(&f->reply.nodes[0], &value) < 0)
        kt_future_fail(f->fut, -EPROTO, "GET %d: the reply is not a number", f->n);
    else if (value != f->n)
        kt_future_fail(f->fut, -EPROTO, "GET %d: the database answered %lld", f->n,
                       (long long)value);
    else
        kt_future_resolve_i64(f->fut, value); /* continuations run later, from the loop */
    fetch_close(f);
    return len;
}

static void fetch_on_eof(kt_stream *s, void *arg)
{
    struct fetch *f = arg;
    kt_future_fail(f->fut, -ECONNRESET, "GET %d: %s closed the connection", f->n, f->addr);
    fetch_close(f);
}

static void fetch_on_error(kt_stream *s, int err, void *arg)
{
    struct fetch *f = arg;
    kt_future_fail(f->fut, err, "GET %d: %s: %s", f->n, f->addr, strerror(-err));
    fetch_close(f);
}

static void fetch_on_close(kt_stream *s, void *arg)
{
    struct fetch *f = arg;
    kt_future_on_cancel(f->fut, NULL, NULL); /* f is going away */
    kt_future_unref(f->fut);
    kt_resp_reply_free(&f->reply);
    free(f);
}

/* The consumer cancelled (kt_timeout fired): drop the connection. */
static void fetch_cancel_cb(kt_future *fut, void *arg)
{
    fetch_close(arg);
}

static const kt_stream_cbs fetch_cbs = {
    .on_read = fetch_on_read,
    .on_eof = fetch_on_eof,
    .on_error = fetch_on_error,
    .on_connect = fetch_on_connect,
    .on_close = fetch_on_close,
};

/*
 * Start fetching n from addr and return at once with a future (the caller
 * owns one reference) that resolves with n, or fails with a message.
 * NULL only when out of memory.
 */
static kt_future *fetch(kt_loop *loop, const kt_addr *addr, int n)
{
    kt_future *fut = kt_future_new(loop);
    if (!fut)
        return NULL;
    struct fetch *f = calloc(1, sizeof *f);
    if (!f) {
        kt_future_fail(fut, -ENOMEM, "GET %d: out of memory", n);
        return fut;
    }
    f->fut = fut;
    f->n = n;
    kt_addr_format(addr, f->addr, sizeof f->addr);
    int rc = kt_stream_connect(loop, addr, TIMEOUT, &fetch_cbs, f, &f->stream);
    if (rc < 0) { /* no callback will run: clean up here */
        kt_future_fail(fut, rc, "GET %d: connect to %s: %s", n, f->addr, strerror(-rc));
        free(f);
        return fut;
    }
    kt_future_ref(fut); /* the fetch's own reference, until on_close */
    kt_future_on_cancel(fut, fetch_cancel_cb, f);
    return fut;
}

/* ---- the work-stealing pool -------------------------------------------- */

struct worker;

/* A unit of work. run() executes on a worker thread and owns j (frees it). */
struct job {
    void (*run)(struct worker *w, struct job *j);
    struct job *next; /* link in the global queue */
};

/* One worker's local jobs: the owner pushes and pops at the bottom (last in,
 * first out: the freshest, smallest pieces), thieves take from the top. */
struct deque {
    pthread_mutex_t lock;
    struct job *slot[DEQUE_CAP];
    size_t top, bottom; /* jobs are slot[top % CAP] .. slot[(bottom - 1) % CAP] */
};

struct pool;

struct worker {
    struct pool *pool;
    pthread_t tid;
    int id;
    struct deque dq;
    unsigned seed;               /* for picking a victim to steal from */
    unsigned long ran, steals;   /* statistics, read after the pool stops */
};

struct pool {
    pthread_mutex_t lock;        /* guards the global queue, stop and sleeping */
    pthread_cond_t wake;         /* signalled when work arrives or on stop */
    struct job *head, *tail;     /* the global queue (FIFO) */
    atomic_size_t queued;        /* jobs in any queue, global or local */
    atomic_int sleeping;         /* workers waiting on `wake` */
    bool stop;                   /* finish the queued work, then exit */
    int nworkers;
    struct worker workers[MAX_WORKERS];
};

/* Wake one sleeping worker, if any: new work was queued. queued and
 * sleeping are sequentially consistent atomics, so either this thread sees
 * the sleeper, or the sleeper sees the new job before it waits. */
static void pool_notify(struct pool *p)
{
    if (atomic_load(&p->sleeping) > 0) {
        pthread_mutex_lock(&p->lock);
        pthread_cond_signal(&p->wake);
        pthread_mutex_unlock(&p->lock);
    }
}

/* Submit from outside the pool (the reactor thread): the global queue. */
static void pool_submit(struct pool *p, struct job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    atomic_fetch_add(&p->queued, 1);
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
}

/* Spawn from inside a job: w's own deque, where an idle worker may steal
 * it. A full deque runs the job at once instead (correct, just serial). */
static void pool_spawn(struct worker *w, struct job *j)
{
    struct deque *d = &w->dq;
    pthread_mutex_lock(&d->lock);
    bool full = d->bottom - d->top == DEQUE_CAP;
    if (!full) {
        d->slot[d->bottom % DEQUE_CAP] = j;
        d->bottom++;
    }
    pthread_mutex_unlock(&d->lock);
    if (full) {
        j->run(w, j);
        return;
    }
    atomic_fetch_add(&w->pool->queued, 1);
    pool_notify(w->pool);
}

/* The owner's end of its deque: newest first. NULL when empty. */
static struct job *deque_pop(struct deque *d)
{
    struct job *j = NULL;
    pthread_mutex_lock(&d->lock);
    if (d->bottom != d->top)
        j = d->slot[--d->bottom % DEQUE_CAP];
    pthread_mutex_unlock(&d->lock);
    return j;
}

/* A thief's end: oldest first. NULL when empty. */
static struct job *deque_steal(struct deque *d)
{
    struct job *j = NULL;
    pthread_mutex_lock(&d->lock);
    if (d->bottom != d->top)
        j = d->slot[d->top++ % DEQUE_CAP];
    pthread_mutex_unlock(&d->lock);
    return j;
}

/* Next job for w: its own deque, then the global queue, then another
 * worker's deque (starting from a random victim). NULL when all empty. */
static struct job *find_job(struct worker *w)
{
    struct pool *p = w->pool;
    struct job *j = deque_pop(&w->dq);
    if (!j && atomic_load(&p->queued) > 0) {
        pthread_mutex_lock(&p->lock);
        j = p->head;
        if (j) {
            p->head = j->next;
            if (!p->head)
                p->tail = NULL;
        }
        pthread_mutex_unlock(&p->lock);
    }
    if (!j && atomic_load(&p->queued) > 0) {
        int first = (int)(rand_r(&w->seed) % (unsigned)p->nworkers);
        for (int k = 0; k < p->nworkers && !j; k++) {
            struct worker *victim = &p->workers[(first + k) % p->nworkers];
            if (victim != w && (j = deque_steal(&victim->dq)) != NULL)
                w->steals++;
        }
    }
    if (j)
        atomic_fetch_sub(&p->queued, 1);
    return j;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct pool *p = w->pool;
    for (;;) {
        struct job *j = find_job(w);
        if (j) {
            j->run(w, j);
            w->ran++;
            continue;
        }
        /* Nothing anywhere: sleep until pool_submit/pool_notify, unless
         * work arrived meanwhile or the pool is stopping. */
        pthread_mutex_lock(&p->lock);
        if (p->stop && atomic_load(&p->queued) == 0) {
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        atomic_fetch_add(&p->sleeping, 1);
        if (atomic_load(&p->queued) == 0 && !p->stop)
            pthread_cond_wait(&p->wake, &p->lock);
        atomic_fetch_sub(&p->sleeping, 1);
        pthread_mutex_unlock(&p->lock);
    }
}

/* Start n workers. 0, or a positive error number from pthread_create
 * (then no worker runs). */
static int pool_start(struct pool *p, int n)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->nworkers = n;
    for (int i = 0; i < n; i++) {
        struct worker *w = &p->workers[i];
        w->pool = p;
        w->id = i;
        w->seed = (unsigned)i * 2654435761u + 1;
        pthread_mutex_init(&w->dq.lock, NULL);
    }
    for (int i = 0; i < n; i++) {
        int rc = pthread_create(&p->workers[i].tid, NULL, worker_main, &p->workers[i]);
        if (rc != 0) {
            p->nworkers = i; /* stop the ones that did start */
            pthread_mutex_lock(&p->lock);
            p->stop = true;
            pthread_cond_broadcast(&p->wake);
            pthread_mutex_unlock(&p->lock);
            for (int k = 0; k < i; k++)
                pthread_join(p->workers[k].tid, NULL);
            return rc;
        }
    }
    return 0;
}

/* Let the workers finish every queued job, then join them. */
static void pool_stop(struct pool *p)
{
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nworkers; i++)
        pthread_join(p->workers[i].tid, NULL);
    for (int i = 0; i < p->nworkers; i++)
        pthread_mutex_destroy(&p->workers[i].dq.lock);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
}

/* ---- the CPU-bound job: count primes, split in halves ---------------------- */

/* The reactor's side of one job, shared by all its pieces. */
struct count {
    int n;
    uint64_t limit;            /* count primes below this */
    atomic_ulong primes;       /* sum over the finished pieces */
    atomic_int pieces_left;    /* the last piece to finish posts the result */
    kt_loop *loop;
    uint64_t submitted_ns;
    struct app *app;
};

/* One piece: count primes in [lo, hi). */
struct range_job {
    struct job job;
    struct count *c;
    uint64_t lo, hi;
};

static unsigned long count_primes(uint64_t lo, uint64_t hi)
{
    unsigned long k = 0;
    for (uint64_t x = lo < 2 ? 2 : lo; x < hi; x++) {
        bool prime = true;
        for (uint64_t d = 2; d * d <= x; d++) {
            if (x % d == 0) {
                prime = false;
                break;
            }
        }
        k += prime;
    }
    return k;
}

static void count_done_cb(void *arg); /* on the reactor, below */

/* Runs on a worker: split off the upper half while the range is big (the
 * halves go to this worker's deque, where idle workers steal them), then
 * count the rest here. */
static void range_run(struct worker *w, struct job *j)
{
    struct range_job *r = (struct range_job *)j;
    struct count *c = r->c;
    while (r->hi - r->lo > GRAIN) {
        struct range_job *half = malloc(sizeof *half);
        if (!half)
            break; /* no memory: just do the whole range here */
        uint64_t mid = r->lo + (r->hi - r->lo) / 2;
        *half = (struct range_job){ .job = { .run = range_run }, .c = c, .lo = mid, .hi = r->hi };
        r->hi = mid;
        atomic_fetch_add(&c->pieces_left, 1);
        pool_spawn(w, &half->job);
    }
    atomic_fetch_add(&c->primes, count_primes(r->lo, r->hi));
    free(r);
    if (atomic_fetch_sub(&c->pieces_left, 1) == 1) {
        /* The last piece: hand the result to the reactor's thread. */
        if (kt_loop_post(c->loop, count_done_cb, c) < 0)
            fprintf(stderr, "job %d: cannot post the result (out of memory)\n", c->n);
    }
}

/* ---- the reactor side -------------------------------------------------------- */

struct app {
    kt_loop *loop;
    struct pool pool;
    kt_timer ticker, watchdog;
    uint64_t due_ns, last_tick_ns, worst_gap_ns;
    unsigned ticks_busy;      /* ticks that fired while a job was running */
    int jobs_running;         /* submitted, result not yet back */
    int jobs_live;            /* struct count allocated (freed by count_done_cb) */
    int results;              /* results received */
    int failed;
};

/* Every 50 ms on the reactor: print the tick and how late it came. */
static void tick_cb(kt_timer *t, void *arg)
{
    struct app *a = arg;
    uint64_t now = kt_clock_ns();
    if (now - a->last_tick_ns > a->worst_gap_ns)
        a->worst_gap_ns = now - a->last_tick_ns;
    a->last_tick_ns = now;
    long late = now > a->due_ns ? (long)((now - a->due_ns) / 1000000u) : 0;
    a->due_ns += TICK;
    if (a->jobs_running > 0)
        a->ticks_busy++;
    printf("[%4ld ms] tick%s (%ld ms late)\n", elapsed_ms(),
           a->jobs_running > 0 ? ", jobs running on the pool" : "", late);
}

/* A fetched number arrived: start its CPU job on the pool. */
static void got_cb(kt_future *f, void *arg)
{
    struct app *a = arg;
    if (kt_future_state_of(f) != KT_FUTURE_RESOLVED) {
        if (kt_future_state_of(f) == KT_FUTURE_FAILED)
            fprintf(stderr, "%s\n", kt_future_errmsg(f));
        a->failed = 1;
        kt_loop_stop(a->loop);
        return;
    }
    int n = (int)kt_future_i64(f);
    printf("[%4ld ms] got %d: submitting \"count primes below %u\" to the pool\n",
           elapsed_ms(), n, n * PRIMES_PER_N);
    struct count *c = calloc(1, sizeof *c);
    struct range_job *r = malloc(sizeof *r);
    if (!c || !r) {
        free(c);
        free(r);
        fprintf(stderr, "out of memory\n");
        a->failed = 1;
        kt_loop_stop(a->loop);
        return;
    }
    c->n = n;
    c->limit = (uint64_t)n * PRIMES_PER_N;
    atomic_init(&c->primes, 0);
    atomic_init(&c->pieces_left, 1);
    c->loop = a->loop;
    c->submitted_ns = kt_clock_ns();
    c->app = a;
    *r = (struct range_job){ .job = { .run = range_run }, .c = c, .lo = 0, .hi = c->limit };
    a->jobs_running++;
    a->jobs_live++;
    pool_submit(&a->pool, &r->job);
}

/* Posted by the worker that finished a job's last piece; runs on the
 * reactor's thread. */
static void count_done_cb(void *arg)
{
    struct count *c = arg;
    struct app *a = c->app;
    a->jobs_running--;
    a->jobs_live--;
    a->results++;
    printf("[%4ld ms] result for %d: %lu primes below %llu (%ld ms on the pool)\n",
           elapsed_ms(), c->n, (unsigned long)atomic_load(&c->primes),
           (unsigned long long)c->limit, (long)((kt_clock_ns() - c->submitted_ns) / 1000000u));
    free(c);
    if (a->results == NFETCH)
        kt_loop_stop(a->loop);
}

static void watchdog_cb(kt_timer *t, void *arg)
{
    struct app *a = arg;
    fprintf(stderr, "timed out after %llu ms\n", (unsigned long long)(TIMEOUT / 1000000u));
    a->failed = 1;
    kt_loop_stop(a->loop);
}

int main(int argc, char **argv)
{
    const char *spec = argc > 1 ? argv[1] : DEFAULT_ADDR;
    if (argc > 2 || spec[0] == '-') {
        fprintf(stderr, "usage: %s [HOST:PORT]   (default %s)\n", argv[0], DEFAULT_ADDR);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    start_ns = kt_clock_ns();

    kt_addr addr;
    if (kt_addr_parse(spec, &addr) < 0) {
        fprintf(stderr, "bad address '%s': expected IP:PORT or localhost:PORT\n", spec);
        return 1;
    }
    static struct app app; /* static: the pool's deques are a few KiB */
    struct app *a = &app;
    int rc = kt_loop_new(&a->loop, NULL);
    if (rc < 0) {
        fprintf(stderr, "cannot create the event loop: %s\n", strerror(-rc));
        return 1;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nworkers = ncpu < 2 ? 2 : ncpu > MAX_WORKERS ? MAX_WORKERS : (int)ncpu;
    rc = pool_start(&a->pool, nworkers);
    if (rc != 0) {
        fprintf(stderr, "cannot start the worker threads: %s\n", strerror(rc));
        kt_loop_free(a->loop);
        return 1;
    }

    a->last_tick_ns = kt_clock_ns();
    a->due_ns = a->last_tick_ns + TICK;
    kt_timer_init(a->loop, &a->ticker, tick_cb, a);
    kt_timer_init(a->loop, &a->watchdog, watchdog_cb, a);
    kt_future *fs[NFETCH] = { NULL };
    int ok = kt_timer_start(&a->ticker, TICK, TICK) == 0 &&
             kt_timer_start(&a->watchdog, TIMEOUT, 0) == 0;
    for (int i = 0; ok && i < NFETCH; i++) {
        fs[i] = fetch(a->loop, &addr, i + 1);
        ok = fs[i] && kt_future_then(fs[i], got_cb, a) == 0;
    }
    if (!ok) {
        fprintf(stderr, "out of memory\n");
        a->failed = 1;
    } else {
        printf("[%4ld ms] %d workers; fetching 1, 2, 3 from %s; ticking every %llu ms\n",
               elapsed_ms(), nworkers, spec, (unsigned long long)(TICK / 1000000u));
        rc = kt_loop_run(a->loop, KT_RUN_DEFAULT);
        if (rc < 0) {
            fprintf(stderr, "event loop failed: %s\n", strerror(-rc));
            a->failed = 1;
        }
    }
    kt_timer_stop(&a->ticker);
    kt_timer_stop(&a->watchdog);

    /* Tear down. The workers finish what is queued (only after an error is
     * anything left) and post those results; the loop then runs the posted
     * callbacks, which free each job, and finishes closing the streams. */
    for (int i = 0; i < NFETCH; i++) {
        if (fs[i]) {
            kt_future_cancel(fs[i]);
            kt_future_unref(fs[i]);
        }
    }
    pool_stop(&a->pool);
    kt_loop_stats st;
    for (int spins = 0; spins < 100; spins++) {
        kt_loop_get_stats(a->loop, &st);
        if (a->jobs_live == 0 && st.streams == 0 && st.futures_live == 0)
            break;
        kt_loop_run(a->loop, KT_RUN_NOWAIT);
    }
    kt_loop_free(a->loop);
    if (a->failed || a->results != NFETCH)
        return 1;

    for (int i = 0; i < a->pool.nworkers; i++)
        printf("worker %d: ran %lu pieces, stole %lu\n", i, a->pool.workers[i].ran,
               a->pool.workers[i].steals);
    printf("ticks while jobs ran: %u; longest gap between ticks: %llu ms (should be %llu)\n",
           a->ticks_busy, (unsigned long long)(a->worst_gap_ns / 1000000u),
           (unsigned long long)(TICK / 1000000u));
    printf("total: %ld ms\n", elapsed_ms());
    return 0;
}
