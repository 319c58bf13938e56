/*
 * kettle/stream.h - byte streams over TCP and unix sockets.
 *
 * Reading: the stream calls on_read(data, len) with bytes received that the
 * callback has not yet consumed; the callback returns how many it consumed.
 * Unconsumed bytes are kept and presented again first, followed by new ones;
 * a callback that consumes nothing is called again as soon as more bytes
 * are there (so a partial message is always shown whole once it has
 * arrived, without every read being copied). A stream that has consumed
 * all it received holds no read buffer.
 *
 * Writing: kt_stream_write() and kt_stream_out() queue bytes; every stream
 * with queued output is flushed once at the end of the loop iteration (one
 * writev per stream on epoll, one submit for all streams on io_uring).
 * Backpressure: when queued output passes the high-water mark,
 * kt_stream_write_blocked() turns true; on_drain runs once it falls below
 * the low-water mark, so a producer can pause and resume.
 *
 * Closing: kt_stream_close() may be called anywhere, including from the
 * stream's own callbacks; no callback but on_close runs after it, and the
 * memory stays valid until on_close has returned.
 */
#ifndef KETTLE_STREAM_H
#define KETTLE_STREAM_H

#include <sys/socket.h>
#include <kettle/common.h>
#include <kettle/loop.h>
#include <kettle/resp.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kt_stream kt_stream;
typedef struct kt_listener kt_listener;

/* An address: "127.0.0.1:7379", "[::1]:7379", "localhost:7379",
 * "unix:/run/kettle.sock" or "/run/kettle.sock". */
typedef struct kt_addr {
    struct sockaddr_storage ss;
    socklen_t len;
} kt_addr;
/* Parse without blocking (numeric hosts and "localhost" only). 0 or -EINVAL. */
int kt_addr_parse(const char *spec, kt_addr *out);
/* Format as "ip:port", "[ip6]:port" or "unix:path" into buf. Returns buf. */
const char *kt_addr_format(const kt_addr *a, char *buf, size_t size);

typedef struct kt_stream_cbs {
    /* Bytes available; return how many were consumed (0..len). Returning 0
     * means "need more": the bytes are kept and shown again with more. */
    size_t (*on_read)(kt_stream *s, const char *data, size_t len, void *arg);
    /* The peer closed its side (FIN). Reading has stopped; writing still works. */
    void (*on_eof)(kt_stream *s, void *arg);
    /* The connection failed (reset, timeout, ...): err is a negative errno.
     * The stream is unusable; the callee should close it. */
    void (*on_error)(kt_stream *s, int err, void *arg);
    /* kt_stream_connect() finished: status 0, or -ECONNREFUSED,
     * -ETIMEDOUT, ... On failure the callee should close the stream. */
    void (*on_connect)(kt_stream *s, int status, void *arg);
    /* Queued output fell below the low-water mark after having passed the
     * high-water mark. */
    void (*on_drain)(kt_stream *s, void *arg);
    /* Last call: all resources are released after it returns. */
    void (*on_close)(kt_stream *s, void *arg);
} kt_stream_cbs;

/* ---- listeners ---------------------------------------------------------- */

/* A new connection: the callee owns s; it sets its callbacks with
 * kt_stream_set_cbs() and starts reading (or closes it). */
typedef void (*kt_accept_cb)(kt_listener *l, kt_stream *s, void *arg);

/* Bind and listen on addr (SO_REUSEADDR; unix socket paths are unlinked
 * first) and start accepting. backlog <= 0 means 511.
 * Out of descriptors (EMFILE/ENFILE) while accepting: a spare descriptor is
 * released to accept and close the pending connection, and accepting pauses
 * for 100 ms, so the loop never spins. 0 or negative errno (then no
 * callback runs and *out is untouched). */
int kt_listen(kt_loop *loop, const kt_addr *addr, int backlog,
              kt_accept_cb cb, void *arg, kt_listener **out);

/* Several listeners (threads with a loop each, or processes) bind the
 * same TCP address and the kernel spreads new connections among them
 * (SO_REUSEPORT). Every one of them must ask for it. */
#define KT_LISTEN_REUSEPORT 0x01u

typedef struct kt_listen_options {
    int backlog;    /* <= 0: 511 */
    unsigned flags; /* KT_LISTEN_* */
} kt_listen_options;

/* kt_listen with options (opts NULL: the defaults). -EINVAL for an
 * unknown flag, or KT_LISTEN_REUSEPORT on a unix socket address. */
int kt_listen_with(kt_loop *loop, const kt_addr *addr, const kt_listen_options *opts,
                   kt_accept_cb cb, void *arg, kt_listener **out);
/* The same on an already bound and listening socket (socket activation);
 * the listener owns fd from then on. */
int kt_listen_fd(kt_loop *loop, int fd, kt_accept_cb cb, void *arg, kt_listener **out);
/* Stop or resume accepting (connections queue in the kernel's backlog). */
void kt_listener_pause(kt_listener *l);
int kt_listener_resume(kt_listener *l);
/* Stop and close; no more accept callbacks. The memory is released once
 * the backend has finished with it (from the loop, later). Idempotent. */
void kt_listener_close(kt_listener *l);
/* A listener's close has finished: the last call about l; its memory is
 * released after this returns. */
typedef void (*kt_listener_close_cb)(kt_listener *l, void *arg);
/* kt_listener_close, then cb(l, arg) from the loop once the close has
 * finished (never inside this call); l stays valid until then. On a
 * listener already closing, sets the callback of that close. */
void kt_listener_close_notify(kt_listener *l, kt_listener_close_cb cb, void *arg);
/* The bound address (useful with port 0). */
int kt_listener_addr(const kt_listener *l, kt_addr *out);

/* ---- streams ------------------------------------------------------------ */

/* Connect to addr. on_connect reports the result; timeout_ns (0 = none)
 * bounds the attempt (-ETIMEDOUT). TCP_NODELAY is set on TCP streams.
 * 0 or negative errno (then no callback runs and *out is untouched). */
int kt_stream_connect(kt_loop *loop, const kt_addr *addr, uint64_t timeout_ns,
                      const kt_stream_cbs *cbs, void *arg, kt_stream **out);
/* Wrap a connected socket (made non-blocking by this call). */
int kt_stream_open_fd(kt_loop *loop, int fd, const kt_stream_cbs *cbs, void *arg,
                      kt_stream **out);

/* Set the callbacks (copied) and their argument. */
void kt_stream_set_cbs(kt_stream *s, const kt_stream_cbs *cbs, void *arg);
void *kt_stream_data(const kt_stream *s);
void kt_stream_set_data(kt_stream *s, void *arg);
kt_loop *kt_stream_loop(const kt_stream *s);

/* Start or stop delivering received bytes. Bytes kept unconsumed are
 * presented again in the iteration after reading restarts. 0 or errno. */
int kt_stream_read_start(kt_stream *s);
void kt_stream_read_stop(kt_stream *s);

/* Queue len bytes (copied). 0 or -ENOMEM, -EPIPE after shutdown/close. */
int kt_stream_write(kt_stream *s, const void *data, size_t len);
/* A sink writing straight into the stream's output (for the RESP encoder). */
kt_out kt_stream_out(kt_stream *s);
/* Bytes queued and not yet sent. */
size_t kt_stream_pending(const kt_stream *s);
/* Backpressure marks; defaults 1 MiB high, 256 KiB low. */
void kt_stream_set_watermarks(kt_stream *s, size_t high, size_t low);
/* True while queued output is above the high-water mark (and has not yet
 * drained below the low-water mark). */
bool kt_stream_write_blocked(const kt_stream *s);

/* Half-close: send FIN once queued output is flushed. Reading goes on. */
int kt_stream_shutdown(kt_stream *s);

typedef enum kt_close_mode {
    KT_CLOSE_FLUSH = 0, /* send queued output first (bounded by the linger time), then close */
    KT_CLOSE_NOW,       /* drop queued output, close */
    KT_CLOSE_RESET,     /* drop queued output, send RST (SO_LINGER 0) */
} kt_close_mode;
/* Close (see the top of this file). Idempotent. */
void kt_stream_close(kt_stream *s, kt_close_mode mode);
/* How long KT_CLOSE_FLUSH may wait for the peer to take the output
 * (default 5 s); past it the connection is reset. */
void kt_stream_set_linger(kt_stream *s, uint64_t ns);

/* Peer address, formatted ("127.0.0.1:51234", "unix"). */
const char *kt_stream_peer(const kt_stream *s, char *buf, size_t size);
int kt_stream_fd(const kt_stream *s);
/* Bytes currently kept unconsumed. */
size_t kt_stream_buffered(const kt_stream *s);

#ifdef __cplusplus
}
#endif
#endif
