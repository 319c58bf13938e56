/*
 * worker.c - a kettle-bench thread: its kt_loop, its share of the
 * connections, the sweep timer (timeouts, end of a timed run, progress)
 * and the end of its run. See worker.h for the picture.
 */
#include "config.h"
#include <errno.h>
#include <signal.h>
#include <string.h>
#include "worker.h"

int kb_worker_new(kb_worker **out, kb_config *cfg, unsigned index, pthread_barrier_t *ready,
                  kb_progress *progress)
{
    kb_worker *w = kt_calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->cfg = cfg;
    w->index = index;
    w->ready = ready;
    w->progress = progress;
    w->main_thread = pthread_self();
    pthread_mutex_init(&w->lock, NULL);
    kb_stats_init(&w->stats);
    kt_hist_init(&w->ihist);
    /* each thread its own sequence, all from the one --seed */
    uint64_t x = cfg->seed + index * 0x632be59bd9b4e019ull;
    kt_rng_seed(&w->rng, kt_splitmix64(&x));

    /* connections index, index + threads, ... */
    w->nconns = (cfg->conns - index + cfg->threads - 1) / cfg->threads;
    /* closed loop -n: this thread's share, in proportion to its connections */
    uint64_t before = 0;
    for (unsigned t = 0; t < index; t++)
        before += (cfg->conns - t + cfg->threads - 1) / cfg->threads;
    w->quota = (uint64_t)((unsigned __int128)cfg->count * (before + w->nconns) / cfg->conns) -
               (uint64_t)((unsigned __int128)cfg->count * before / cfg->conns);

    w->conns = kt_calloc(w->nconns, sizeof(*w->conns));
    w->scratch = kt_malloc(cfg->mix.max_len + 1);
    w->argv = kt_calloc(cfg->mix.max_argc, sizeof(*w->argv));
    if (w->conns == NULL || w->scratch == NULL || w->argv == NULL)
        goto nomem;
    for (unsigned i = 0; i < w->nconns; i++) {
        kb_conn *c = &w->conns[i];
        c->w = w;
        c->id = index + i * cfg->threads;
    }
    *out = w;
    return 0;
nomem:
    kb_worker_free(w);
    return -ENOMEM;
}

void kb_worker_free(kb_worker *w)
{
    if (w == NULL)
        return;
    kt_free(w->conns);
    kt_free(w->scratch);
    kt_free(w->argv);
    kb_stats_free(&w->stats);
    pthread_mutex_destroy(&w->lock);
    kt_free(w);
}

/* Hand the latencies and counts since the last call to the progress line. */
static void publish(kb_worker *w)
{
    kb_progress *p = w->progress;
    pthread_mutex_lock(&p->lock);
    kt_hist_merge(&p->hist, &w->ihist);
    p->done += w->idone;
    p->errors += w->ierrors;
    pthread_mutex_unlock(&p->lock);
    kt_hist_reset(&w->ihist);
    w->idone = w->ierrors = 0;
    w->last_publish = w->now;
}

static void conn_timer_cb(kt_timer *t, void *arg)
{
    kb_conn *c = arg;
    kb_worker *w = c->w;
    if (c->state == KB_C_IDLE) {
        kb_conn_connect(c);
    } else if (c->state == KB_C_UP) {
        w->now = kt_clock_ns();
        kb_conn_pump(c);
    }
}

static void sweep_cb(kt_timer *t, void *arg)
{
    kb_worker *w = arg;
    const kb_config *cfg = w->cfg;
    w->now = kt_clock_ns();
    if (cfg->timeout_ns != 0) {
        for (unsigned i = 0; i < w->nconns; i++) {
            kb_conn *c = &w->conns[i];
            const kb_req *oldest = c->state == KB_C_UP ? kt_pconn_oldest(&c->pc, NULL) : NULL;
            if (oldest && w->now - oldest->sent >= cfg->timeout_ns)
                kb_conn_fail(c, true, true, "no reply within --timeout");
        }
    }
    if (cfg->rate != 0 && !w->sched_over && w->now >= w->t_end) {
        /* a timed open-loop run: what was due and not sent stays unsent */
        w->sched_over = true;
        for (unsigned i = 0; i < w->nconns; i++) {
            kb_conn *c = &w->conns[i];
            if (!c->exhausted) {
                c->exhausted = true;
                w->active--;
            }
        }
    }
    if (cfg->progress && w->now - w->last_publish >= KT_MSEC(100))
        publish(w);
    kb_worker_maybe_done(w);
}

void kb_worker_maybe_done(kb_worker *w)
{
    const kb_config *cfg = w->cfg;
    if (w->finishing)
        return;
    if (w->live == 0) {
        kb_worker_finish(w);
        return;
    }
    if (w->inflight != 0)
        return;
    bool more;
    if (cfg->rate != 0)
        more = w->active > 0;
    else
        more = w->now < w->t_end &&
               !(cfg->count != 0 && w->now >= w->t_measure && w->stats.sent >= w->quota);
    if (!more)
        kb_worker_finish(w);
}

void kb_worker_finish(kb_worker *w)
{
    if (w->finishing)
        return;
    w->finishing = true;
    w->now = kt_clock_ns();
    kt_timer_stop(&w->sweep);
    for (unsigned i = 0; i < w->nconns; i++) {
        kb_conn *c = &w->conns[i];
        kt_timer_stop(&c->timer);
        w->stats.unsent += kb_conn_unsent(c, w->now);
        /* a connection already CLOSING reports its on_closed anyway */
        if (c->state == KB_C_UP || c->state == KB_C_CONNECTING) {
            c->state = KB_C_CLOSING;
            kt_pconn_close(&c->pc, KT_CLOSE_NOW);
        }
    }
    if (w->cfg->progress)
        publish(w);
}

static void stop_cb(void *arg)
{
    kb_worker_finish(arg);
}

void kb_worker_settled(kb_worker *w)
{
    if (++w->nsettled == w->nconns) {
        __atomic_store_n(&w->settled_all, true, __ATOMIC_RELEASE);
        pthread_kill(w->main_thread, SIGUSR1);
    }
}

/* The start: take the plan main has set, and begin sending. */
static void go_cb(void *arg)
{
    kb_worker *w = arg;
    const kb_config *cfg = w->cfg;
    if (w->finishing)
        return;
    w->t_start = cfg->t_start;
    w->t_measure = cfg->t_measure;
    w->t_end = cfg->t_end;
    w->go = true;
    w->now = kt_clock_ns();
    for (unsigned i = 0; i < w->nconns; i++)
        kb_conn_pump(&w->conns[i]);
    kb_worker_maybe_done(w);
}

void kb_worker_go(kb_worker *w)
{
    pthread_mutex_lock(&w->lock);
    if (w->loop_alive && kt_loop_post(w->loop, go_cb, w) < 0)
        kt_loop_post(w->loop, stop_cb, w);
    pthread_mutex_unlock(&w->lock);
}

/* Start the connections (spread over --ramp) and the sweep. */
static void begin(kb_worker *w)
{
    const kb_config *cfg = w->cfg;
    kt_loop_update_time(w->loop); /* the barriers took a while */
    uint64_t now = kt_loop_now(w->loop);
    w->live = w->active = w->nconns;
    w->t_start = w->t_measure = w->t_end = UINT64_MAX; /* until go_cb */
    w->now = w->last_publish = kt_clock_ns();
    for (unsigned i = 0; i < w->nconns; i++) {
        kb_conn *c = &w->conns[i];
        kt_timer_init(w->loop, &c->timer, conn_timer_cb, c);
        uint64_t at = cfg->t0 + (uint64_t)((unsigned __int128)cfg->ramp_ns * c->id / cfg->conns);
        if (kb_conn_init(c) < 0 || kt_timer_start(&c->timer, at > now ? at - now : 0, 0) < 0) {
            kb_worker_settled(w);
            c->state = KB_C_DEAD;
            c->exhausted = true;
            w->live--;
            w->active--;
        }
    }
    uint64_t period = KT_MSEC(100);
    if (cfg->timeout_ns != 0 && cfg->timeout_ns / 10 < period)
        period = cfg->timeout_ns / 10 > KT_MSEC(1) ? cfg->timeout_ns / 10 : KT_MSEC(1);
    kt_timer_init(w->loop, &w->sweep, sweep_cb, w);
    if (kt_timer_start(&w->sweep, period, period) < 0 || w->live == 0)
        kb_worker_finish(w);
}

static void *run(void *arg)
{
    kb_worker *w = arg;
    kt_loop_options opts = { .io = w->cfg->io };
    kt_loop *loop = NULL;

    w->err = kt_loop_new(&loop, &opts);
    if (w->err == 0) {
        pthread_mutex_lock(&w->lock);
        w->loop = loop;
        w->loop_alive = true;
        w->backend = kt_loop_backend(loop);
        pthread_mutex_unlock(&w->lock);
    }
    pthread_barrier_wait(w->ready); /* every loop is up (or failed) */
    pthread_barrier_wait(w->ready); /* main has set the plan */
    if (w->err == 0) {
        if (!w->cfg->abort) {
            begin(w);
            /* returns once finished: the timers stopped, the streams closed */
            int rc = kt_loop_run(loop, KT_RUN_DEFAULT);
            if (rc < 0)
                fprintf(stderr, "kettle-bench: thread %u: the event loop failed: %s\n", w->index,
                        strerror(-rc));
        }
        pthread_mutex_lock(&w->lock);
        w->loop_alive = false;
        pthread_mutex_unlock(&w->lock);
        /* run what main posted meanwhile (nothing more can come) */
        int rc = kt_loop_run(loop, KT_RUN_DEFAULT);
        for (unsigned i = 0; rc == 0 && i < w->nconns; i++)
            if (w->conns[i].pc.loop != NULL) /* closed: on_closed has run */
                kt_pconn_free(&w->conns[i].pc);
        if (rc < 0 || kt_loop_close(loop) < 0)
            kt_loop_free(loop);
    }
    __atomic_store_n(&w->ended, true, __ATOMIC_RELEASE);
    pthread_kill(w->main_thread, SIGUSR1);
    return NULL;
}

int kb_worker_start(kb_worker *w)
{
    return -pthread_create(&w->thread, NULL, run, w);
}

void kb_worker_stop(kb_worker *w)
{
    pthread_mutex_lock(&w->lock);
    if (w->loop_alive)
        kt_loop_post(w->loop, stop_cb, w);
    pthread_mutex_unlock(&w->lock);
}

void kb_worker_join(kb_worker *w)
{
    pthread_join(w->thread, NULL);
}
