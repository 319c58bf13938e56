/*
 * 08-work-stealing.c - keep the reactor free: CPU-bound work goes to a
 * work-stealing pool of threads, results come back with kt_loop_post().
 *
 * 07-blocked-loop.c showed that anything long on the loop's thread stops
 * everything. Waiting is cured by waiting asynchronously; COMPUTING cannot
 * be, so it must leave the loop's thread. Here the program counts the
 * primes below 1,500,000 by trial division, cut into N jobs: fetched
 * number n starts the job for the n-th slice of the range, on a pool of
 * worker threads, while the reactor goes on serving its sockets and a
 * 50 ms timer whose ticks show it is never held up. The work is the same
 * whatever N is; what grows with N is the number of hand-offs.
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
 * touch streams and futures. The fetches are 06's (kettle-fetch.h).
 *
 * Usage: 08-work-stealing [-n N] [-c C] [-v] [HOST:PORT]   (default 127.0.0.1:7380)
 */
#include "config.h"

#include <pthread.h>
#include <stdbool.h>

#include "example.h"
#include "kettle-fetch.h"
#include "rng.h" /* the one PRNG of the tree (src/common) */

#define TIMEOUT KT_SEC(IO_TIMEOUT_S) /* give up after this long */
#define TICK KT_MSEC(50)
#define PRIME_LIMIT 1500000u /* the jobs count the primes below this, together */
#define PRIMES_BELOW_LIMIT 114155ul /* what they must find */
#define GRAIN 20000u         /* ranges this small are not split further */
#define DEQUE_CAP 256        /* per-worker deque slots (a full deque runs jobs inline) */
#define MAX_WORKERS 8

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
    kt_rng rng;                  /* for picking a victim to steal from */
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
        int first = (int)kt_rng_below(&w->rng, (uint64_t)p->nworkers);
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
        kt_rng_seed(&w->rng, (uint64_t)i + 1);
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
    int n;                     /* the fetched number that started it */
    uint64_t lo, hi;           /* count the primes in [lo, hi) */
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
            example_error("job %d: cannot post the result (out of memory)", c->n);
    }
}

/* ---- the reactor side -------------------------------------------------------- */

struct app {
    kt_loop *loop;
    struct pool pool;
    struct numbers nums;
    kt_timer ticker, watchdog;
    uint64_t due_ns, last_tick_ns, worst_gap_ns;
    unsigned long ticks, ticks_busy; /* ticks, and those while a job was running */
    int started;              /* fetches started */
    int settled;              /* fetches failed, or whose job's result is back */
    int jobs_running;         /* submitted, result not yet back */
    unsigned long primes;     /* the sum of the results */
};

/* The run is over when every fetch has failed or brought its result. */
static void settle(struct app *a)
{
    if (++a->settled == a->started)
        kt_loop_stop(a->loop);
}

/* Every 50 ms on the reactor: note how late the tick came. */
static void tick_cb(kt_timer *t, void *arg)
{
    struct app *a = arg;
    uint64_t now = kt_clock_ns();
    if (now - a->last_tick_ns > a->worst_gap_ns)
        a->worst_gap_ns = now - a->last_tick_ns;
    a->last_tick_ns = now;
    long late = now > a->due_ns ? (long)((now - a->due_ns) / 1000000u) : 0;
    a->due_ns += TICK;
    a->ticks++;
    if (a->jobs_running > 0)
        a->ticks_busy++;
    if (a->nums.show)
        printf("[%4ld ms] tick%s (%ld ms late)\n", elapsed_ms(),
               a->jobs_running > 0 ? ", jobs running on the pool" : "", late);
}

/* A fetched number arrived: start its slice of the count on the pool. */
static void got_cb(kt_future *f, void *arg)
{
    struct app *a = arg;
    if (kt_future_state_of(f) != KT_FUTURE_RESOLVED) {
        if (kt_future_state_of(f) == KT_FUTURE_FAILED)
            example_error("%s", kt_future_errmsg(f));
        settle(a);
        return;
    }
    int n = (int)kt_future_i64(f);
    numbers_got(&a->nums, n);
    struct count *c = calloc(1, sizeof *c);
    struct range_job *r = malloc(sizeof *r);
    if (!c || !r) {
        free(c);
        free(r);
        example_error("job %d: out of memory", n);
        settle(a);
        return;
    }
    /* Slice n of N: [(n - 1) x LIMIT / N, n x LIMIT / N). */
    c->n = n;
    c->lo = (uint64_t)(n - 1) * PRIME_LIMIT / (uint64_t)a->nums.n;
    c->hi = (uint64_t)n * PRIME_LIMIT / (uint64_t)a->nums.n;
    atomic_init(&c->primes, 0);
    atomic_init(&c->pieces_left, 1);
    c->loop = a->loop;
    c->submitted_ns = kt_clock_ns();
    c->app = a;
    *r = (struct range_job){ .job = { .run = range_run }, .c = c, .lo = c->lo, .hi = c->hi };
    if (a->nums.show)
        printf("[%4ld ms] job %d: counting the primes in [%llu, %llu) on the pool\n",
               elapsed_ms(), n, (unsigned long long)c->lo, (unsigned long long)c->hi);
    a->jobs_running++;
    pool_submit(&a->pool, &r->job);
}

/* Posted by the worker that finished a job's last piece; runs on the
 * reactor's thread. */
static void count_done_cb(void *arg)
{
    struct count *c = arg;
    struct app *a = c->app;
    unsigned long k = atomic_load(&c->primes);
    a->jobs_running--;
    a->primes += k;
    if (a->nums.show)
        printf("[%4ld ms] job %d: %lu primes (%ld ms on the pool)\n", elapsed_ms(), c->n, k,
               (long)((kt_clock_ns() - c->submitted_ns) / 1000000u));
    free(c);
    settle(a);
}

static void watchdog_cb(kt_timer *t, void *arg)
{
    struct app *a = arg;
    example_error("timed out after %d ms", TIMEOUT_MS);
    kt_loop_stop(a->loop);
}

int main(int argc, char **argv)
{
    struct example ex;
    kt_addr addr;
    kt_future **fs;
    struct conn **conns;
    static struct app app; /* static: the pool's deques are a few KiB */
    struct app *a = &app;
    a->loop = kettle_start(argc, argv, &ex, &addr, &fs, &conns, &a->nums); /* exits on error */
    int rc;
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
    int ok = kt_timer_start(&a->ticker, TICK, TICK) == 0 &&
             kt_timer_start(&a->watchdog, TIMEOUT, 0) == 0;
    for (; ok && a->started < ex.n; a->started++) {
        int k = a->started % ex.conns; /* fetch n goes on connection k */
        if (a->started < ex.conns && (rc = conn_open(a->loop, &addr, TIMEOUT, &conns[k])) < 0) {
            example_stop(a->started + 1, ex.n, "kt_stream_connect", -rc); /* no descriptor */
            break;
        }
        fs[a->started] = fetch(conns[k], a->started + 1);
        ok = fs[a->started] && kt_future_then(fs[a->started], got_cb, a) == 0;
    }
    if (!ok) {
        example_error("out of memory");
    } else if (a->started > 0) {
        printf("[%4ld ms] %d workers; fetching 1..%d on %d connections to %s; ticking every"
               " %llu ms\n", elapsed_ms(), nworkers, a->started, ex.conns, ex.addr,
               (unsigned long long)(TICK / 1000000u));
        rc = kt_loop_run(a->loop, KT_RUN_DEFAULT);
        if (rc < 0)
            example_error("event loop failed: %s", strerror(-rc));
    }
    kt_timer_stop(&a->ticker);
    kt_timer_stop(&a->watchdog);

    /* Tear down. The workers finish what is queued (only after an error is
     * anything left) and post those results; the loop then runs the posted
     * callbacks, which free each job, and finishes closing the streams. */
    for (int i = 0; i < a->started; i++) {
        if (fs[i]) {
            kt_future_cancel(fs[i]);
            kt_future_unref(fs[i]);
        }
    }
    pool_stop(&a->pool); /* every result is posted by now */
    loop_finish(a->loop);
    free(fs);
    free(conns);

    unsigned long pieces = 0, steals = 0;
    for (int i = 0; i < a->pool.nworkers; i++) {
        pieces += a->pool.workers[i].ran;
        steals += a->pool.workers[i].steals;
    }
    rc = example_report(&a->nums, 1 + a->pool.nworkers);
    if (rc == 0 && a->primes != PRIMES_BELOW_LIMIT) {
        example_error("the jobs found %lu primes below %u, not %lu", a->primes, PRIME_LIMIT,
                      PRIMES_BELOW_LIMIT);
        rc = 1;
    }
    printf("primes below %u: %lu\n", PRIME_LIMIT, a->primes);
    printf("pieces run on the pool: %lu\n", pieces);
    printf("pieces stolen: %lu\n", steals);
    printf("ticks: %lu\n", a->ticks);
    printf("ticks while jobs ran: %lu\n", a->ticks_busy);
    printf("longest gap between ticks: %llu ms (should be %llu)\n",
           (unsigned long long)(a->worst_gap_ns / 1000000u),
           (unsigned long long)(TICK / 1000000u));
    numbers_free(&a->nums);
    return rc;
}
