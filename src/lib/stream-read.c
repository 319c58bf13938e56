/*
 * stream-read.c - the read side of a stream: the kept-input rule, the read
 * buffer, and the deliveries of bytes, FIN and deferred results to the
 * stream's callbacks.
 *
 *              backend (epoll: 64 KiB scratch, io_uring: provided buffer)
 *   socket ──▶ kt__stream_data(bytes) ──▶ on_read(kept + new) ──▶ consumed
 *                                             │ unconsumed tail only
 *                                             ▼
 *                                     rbuf (NULL when empty, else a block
 *                                     sized to what is kept; redelivered
 *                                     the iteration after read_start)
 *
 * Input for a stream arrives only from its backend, never inside one of
 * its callbacks, so rbuf does not move while on_read looks at it.
 */
#include "config.h"
#include <errno.h>
#include <string.h>
#include "internal.h"

/* ---- read buffer ----------------------------------------------------------------- */

/*
 * rbuf exists only while input is kept, and is sized to it: a block of the
 * smallest class that holds the kept bytes (KT__S_RBLOCK), or malloc'd
 * memory beyond the largest class. It is freed once consumed, and moved to
 * a smaller block when a partial consume leaves it mostly empty. Otherwise
 * a partial consume only advances rbuf (rhead bytes into its allocation):
 * the rest moves to the front only when room is needed behind it, so a
 * pipeline of large requests is not copied again at every request.
 */

/* Free rbuf's memory: to the block free list if it came from it. */
static void rbuf_free(kt_stream *s)
{
    char *base = s->rbuf - s->rhead;
    if (s->flags & KT__S_RBLOCK)
        kt__block_put(s->loop, (kt__block *)(base - offsetof(kt__block, data)));
    else
        kt_free(base);
}

/* Give the read buffer back, with whatever it kept. */
void kt__stream_rbuf_release(kt_stream *s)
{
    if (s->rbuf == NULL)
        return;
    rbuf_free(s);
    s->rbuf = NULL;
    s->rlen = s->rcap = s->rhead = 0;
    s->flags &= ~KT__S_RBLOCK;
}

/* Move the kept bytes from rbuf[from..rlen) into a new buffer of at least
 * cap bytes (cap >= rlen - from). 0 or -ENOMEM (then nothing changed). */
static int rbuf_move(kt_stream *s, size_t from, size_t cap)
{
    unsigned c = kt__block_class_for(cap);
    char *p;
    if (c < KT__BLOCK_NCLASS) {
        kt__block *b = kt__block_get(s->loop, c);
        if (b == NULL)
            return -ENOMEM;
        p = b->data;
        cap = b->size;
    } else if ((p = kt_malloc(cap)) == NULL) {
        return -ENOMEM;
    }
    size_t keep = s->rlen - from;
    if (keep)
        memcpy(p, s->rbuf + from, keep);
    if (s->rbuf)
        rbuf_free(s);
    s->rbuf = p;
    s->rlen = keep;
    s->rcap = cap;
    s->rhead = 0;
    s->flags &= ~KT__S_RBLOCK;
    if (c < KT__BLOCK_NCLASS)
        s->flags |= KT__S_RBLOCK;
    return 0;
}

/* Room for more bytes after the kept ones. Past the largest class the
 * allocation at least doubles, so a large message arriving piece by piece
 * is copied O(1) times per byte. 0 or -ENOMEM. */
static int rbuf_reserve(kt_stream *s, size_t more)
{
    if (more <= s->rcap - s->rlen)
        return 0;
    size_t need = s->rlen + more;
    if (need < more)
        return -ENOMEM;
    size_t total = s->rhead + s->rcap;
    if (need <= total) {
        /* Room enough before rbuf (consumed bytes): move the kept bytes
         * to the front, once per consume at most. */
        char *base = s->rbuf - s->rhead;
        memmove(base, s->rbuf, s->rlen);
        s->rbuf = base;
        s->rcap = total;
        s->rhead = 0;
        return 0;
    }
    if (kt__block_class_for(need) == KT__BLOCK_BIG && need < 2 * s->rcap)
        need = 2 * s->rcap;
    return rbuf_move(s, 0, need);
}

/* Keep len more unconsumed bytes. 0 or -ENOMEM. */
static int rbuf_append(kt_stream *s, const char *data, size_t len)
{
    int rc = rbuf_reserve(s, len);
    if (rc < 0)
        return rc;
    memcpy(s->rbuf + s->rlen, data, len);
    s->rlen += len;
    return 0;
}

/* Drop the first n kept bytes: an emptied buffer is released at once, one
 * left at least eight times too large moves to a block that fits. */
static void rbuf_consume(kt_stream *s, size_t n)
{
    if (n >= s->rlen) {
        kt__stream_rbuf_release(s);
        return;
    }
    if (n == 0)
        return;
    size_t left = s->rlen - n;
    unsigned c = kt__block_class_for(left);
    if (c < KT__BLOCK_NCLASS && (size_t)kt__block_capacity(c) * 8 <= s->rhead + s->rcap &&
        rbuf_move(s, n, left) == 0)
        return;
    /* The rest stays where it is: it moves only if room is needed. */
    s->rbuf += n;
    s->rhead += n;
    s->rcap -= n;
    s->rlen = left;
}

/* ---- delivering input ------------------------------------------------------------- */

/* Present data to on_read until it consumes all, consumes nothing (it
 * needs more bytes), stops reading or closes. Returns bytes consumed.
 * A missing on_read consumes everything. */
static size_t call_read(kt_stream *s, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len &&
           (s->flags & (KT__S_READING | KT__S_CLOSING | KT__S_FAILED)) == KT__S_READING) {
        size_t n = len - off;
        if (s->cbs.on_read) {
            s->flags |= KT__S_IN_READ_CB;
            n = s->cbs.on_read(s, data + off, len - off, s->arg);
            s->flags &= ~KT__S_IN_READ_CB;
            if (n > len - off)
                n = len - off;
        }
        if (n == 0)
            break;
        off += n;
    }
    return off;
}

/* Present the kept bytes again. rbuf cannot move during the callback:
 * input for s arrives only from the backend, never inside a callback. */
static void present_kept(kt_stream *s)
{
    size_t used = call_read(s, s->rbuf, s->rlen);
    if (s->flags & KT__S_CLOSING)
        return; /* rbuf goes with the stream */
    rbuf_consume(s, used);
}

/* Input could not be kept: the stream cannot go on. */
static void stream_fail_nomem(kt_stream *s)
{
    kt__stream_failed(s, -ENOMEM);
}

/* Nothing kept: the callback reads straight from the backend's buffer and
 * only an unconsumed tail is copied. */
static void deliver_direct(kt_stream *s, const char *data, size_t len)
{
    size_t used = call_read(s, data, len);
    if (s->flags & (KT__S_CLOSING | KT__S_FAILED))
        return;
    if (used < len && rbuf_append(s, data + used, len - used) < 0)
        stream_fail_nomem(s);
}

/*
 * Kept bytes first. New bytes are copied behind them only as far as the
 * callback needs to finish what the kept bytes began: first what fits in
 * rbuf's block, then, each time it consumes nothing (it needs more), twice
 * as much. Once the kept bytes are consumed, the rest is presented straight
 * from data. So a pipelined client whose reads end mid-command costs a copy
 * of that command, not of every read, and rbuf stays the size of it.
 */
static void deliver_after_kept(kt_stream *s, const char *data, size_t len)
{
    size_t own = s->rlen; /* leading bytes of rbuf that are not in data */
    size_t off = 0;       /* data[0..off) is in rbuf behind them */
    for (;;) {
        if (s->rlen == s->rcap) {
            size_t more = len - off < s->rlen ? len - off : s->rlen;
            if (rbuf_reserve(s, more) < 0) {
                stream_fail_nomem(s);
                return;
            }
        }
        size_t take = s->rcap - s->rlen < len - off ? s->rcap - s->rlen : len - off;
        memcpy(s->rbuf + s->rlen, data + off, take);
        s->rlen += take;
        off += take;

        size_t have = s->rlen;
        size_t used = call_read(s, s->rbuf, have);
        if (s->flags & (KT__S_CLOSING | KT__S_FAILED))
            return; /* rbuf goes with the stream */
        if (used >= own && off < len) {
            /* What rbuf still holds is in data too: go on from there. */
            size_t start = off - (have - used);
            kt__stream_rbuf_release(s);
            deliver_direct(s, data + start, len - start);
            return;
        }
        rbuf_consume(s, used);
        if (off == len)
            return;
        if (!(s->flags & KT__S_READING)) {
            if (rbuf_append(s, data + off, len - off) < 0)
                stream_fail_nomem(s);
            return;
        }
        own -= used; /* it needs more bytes than rbuf holds */
    }
}

/* Bytes for s from the backend (see internal.h). */
void kt__stream_data(kt_stream *s, const char *data, size_t len)
{
    if (len == 0 || (s->flags & (KT__S_CLOSING | KT__S_FAILED)))
        return; /* closing: discarded (see kt_stream_close) */
    if (!(s->flags & KT__S_READING) || (s->flags & KT__S_IN_READ_CB)) {
        /* A completion backend may deliver bytes already in flight after
         * read_stop: keep them for read_start. */
        if (rbuf_append(s, data, len) < 0)
            stream_fail_nomem(s);
        return;
    }
    if (s->rlen == 0)
        deliver_direct(s, data, len);
    else
        deliver_after_kept(s, data, len);
}

/* FIN: kept input is presented once more before on_eof. If reading is off
 * (or the callback turns it off), on_eof waits for read_start. */
static void deliver_eof(kt_stream *s)
{
    if (s->rlen > 0) {
        present_kept(s);
        if ((s->flags & (KT__S_CLOSING | KT__S_FAILED)) || !(s->flags & KT__S_READING))
            return;
    }
    s->flags &= ~(KT__S_EOF_DUE | KT__S_READING);
    if (s->cbs.on_eof)
        s->cbs.on_eof(s, s->arg);
    else
        kt_stream_close(s, KT_CLOSE_FLUSH); /* nobody listens: finish politely */
}

void kt__stream_eof(kt_stream *s)
{
    if (s->flags & (KT__S_CLOSING | KT__S_FAILED | KT__S_EOF))
        return;
    s->flags |= KT__S_EOF | KT__S_EOF_DUE;
    s->loop->io->read_stop(s);
    if (s->flags & KT__S_READING)
        deliver_eof(s);
}

/* Deferred deliveries: kept input after read_start, on_eof that waited for
 * it, and connect errors that must not be reported inside
 * kt_stream_connect(). The batch was taken at the start of the iteration;
 * its streams keep KT__S_PENDING until handled, so they are not queued
 * twice, and a callback that stops and restarts reading cannot spin. */
void kt__streams_run_pending(kt_loop *loop, kt_stream *batch)
{
    KT__UNUSED(loop);
    kt_stream *s = batch;
    while (s) {
        kt_stream *next = s->next_pending; /* stays allocated: frees happen later */
        s->next_pending = NULL;
        s->flags &= ~KT__S_PENDING;
        if (s->flags & KT__S_CLOSING) {
            /* nothing is delivered after close */
        } else if (s->connect_err) {
            int err = s->connect_err;
            s->connect_err = 0;
            kt__stream_connected(s, err);
        } else if (s->flags & KT__S_READING) {
            if (s->rlen > 0)
                present_kept(s);
            if ((s->flags & (KT__S_EOF_DUE | KT__S_READING | KT__S_CLOSING | KT__S_FAILED)) ==
                (KT__S_EOF_DUE | KT__S_READING))
                deliver_eof(s);
        }
        s = next;
    }
}

/* Kept bytes (and a FIN that waited) are presented from loop->pending,
 * never inside this call. */
int kt_stream_read_start(kt_stream *s)
{
    if (s->flags & (KT__S_CLOSING | KT__S_FAILED))
        return -EPIPE;
    if (s->flags & KT__S_READING)
        return 0;
    s->flags |= KT__S_READING;
    /* While connecting, the backend starts reading once connected; after
     * FIN there is nothing left to read. */
    if (!(s->flags & (KT__S_EOF | KT__S_CONNECTING))) {
        int rc = s->loop->io->read_start(s);
        if (rc < 0) {
            s->flags &= ~KT__S_READING;
            return rc;
        }
    }
    if (s->rlen > 0 || (s->flags & KT__S_EOF_DUE))
        kt__stream_add_pending(s);
    return 0;
}

/* Bytes a completion backend still delivers are kept for read_start. */
void kt_stream_read_stop(kt_stream *s)
{
    if (!(s->flags & KT__S_READING))
        return;
    s->flags &= ~KT__S_READING;
    if (!(s->flags & (KT__S_EOF | KT__S_CONNECTING | KT__S_CLOSE_SENT)))
        s->loop->io->read_stop(s);
}

/* Kept bytes: what a server checks against its query-buffer limit. */
size_t kt_stream_buffered(const kt_stream *s) { return s->rlen; }
