/*
 * listener.c - listening sockets and addresses: kt_listen and its
 * pause/resume/close, what backends report about accepting (including the
 * out-of-descriptors episode: spare descriptor, shed one connection, pause
 * 100 ms, never a busy loop), and kt_addr parsing and formatting (numeric
 * hosts, "localhost" and unix paths only: nothing here may block on DNS).
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include "internal.h"

#define KT__BACKLOG       511
#define KT__ACCEPT_PAUSE  KT_MSEC(100)

/* ---- addresses ------------------------------------------------------------- */

/* "65535" -> port; the whole string must be digits. */
static int parse_port(const char *s, uint16_t *out)
{
    if (*s == '\0' || strlen(s) > 5)
        return -EINVAL;
    unsigned v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        v = v * 10 + (unsigned)(*s - '0');
    }
    if (v > 65535)
        return -EINVAL;
    *out = (uint16_t)v;
    return 0;
}

/* Numeric only (plus "localhost"; "" or "*" for any): never blocks. */
int kt_addr_parse(const char *spec, kt_addr *out)
{
    if (spec == NULL || out == NULL)
        return -EINVAL;
    memset(out, 0, sizeof(*out));

    const char *path = NULL;
    if (strncmp(spec, "unix:", 5) == 0)
        path = spec + 5;
    else if (spec[0] == '/')
        path = spec;
    if (path) {
        struct sockaddr_un *un = (struct sockaddr_un *)&out->ss;
        size_t len = strlen(path);
        if (len == 0 || len >= sizeof(un->sun_path))
            return -EINVAL;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, len + 1);
        out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
        return 0;
    }

    char host[INET6_ADDRSTRLEN + 2];
    const char *colon;
    uint16_t port;
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof(host))
            return -EINVAL;
        memcpy(host, spec + 1, (size_t)(close - spec - 1));
        host[close - spec - 1] = '\0';
        if (parse_port(close + 2, &port) < 0)
            return -EINVAL;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->ss;
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
            return -EINVAL;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        out->len = sizeof(*in6);
        return 0;
    }
    if ((colon = strrchr(spec, ':')) == NULL || (size_t)(colon - spec) >= sizeof(host) ||
        memchr(spec, ':', (size_t)(colon - spec)) != NULL) /* bare IPv6 wants brackets */
        return -EINVAL;
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    if (parse_port(colon + 1, &port) < 0)
        return -EINVAL;
    struct sockaddr_in *in = (struct sockaddr_in *)&out->ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    if (host[0] == '\0' || strcmp(host, "*") == 0)
        in->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (strcmp(host, "localhost") == 0)
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
        return -EINVAL;
    out->len = sizeof(*in);
    return 0;
}

/* Into the caller's buf (truncated to size); returns buf. */
const char *kt_addr_format(const kt_addr *a, char *buf, size_t size)
{
    char ip[INET6_ADDRSTRLEN];
    if (size == 0)
        return buf;
    switch (a->ss.ss_family) {
    case AF_INET: {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&a->ss;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(buf, size, "%s:%u", ip, ntohs(in->sin_port));
        break;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, size, "[%s]:%u", ip, ntohs(in6->sin6_port));
        break;
    }
    case AF_UNIX: {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&a->ss;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t n = a->len > off ? strnlen(un->sun_path, a->len - off) : 0;
        snprintf(buf, size, "unix:%.*s", (int)n, un->sun_path);
        break;
    }
    default:
        snprintf(buf, size, "?");
    }
    return buf;
}

/* ---- accepting -------------------------------------------------------------------- */

/* Ask the backend to accept unless the user paused, the EMFILE back-off
 * runs, or it already does. */
static int accepting_start(kt_listener *l)
{
    if (l->flags & (KT__L_ACCEPTING | KT__L_PAUSED | KT__L_CLOSING) || kt_timer_active(&l->pause))
        return 0;
    l->flags |= KT__L_ACCEPTING;
    int rc = l->loop->io->listen_start(l);
    if (rc < 0)
        l->flags &= ~KT__L_ACCEPTING;
    return rc;
}

/* Stop the backend's accepting; idempotent. */
static void accepting_stop(kt_listener *l)
{
    if (!(l->flags & KT__L_ACCEPTING))
        return;
    l->flags &= ~KT__L_ACCEPTING;
    l->loop->io->listen_stop(l);
}

/* End of a back-off pause. */
static void pause_cb(kt_timer *t, void *arg)
{
    KT__UNUSED(t);
    kt_listener *l = arg;
    int rc = accepting_start(l);
    if (rc < 0) {
        kt_log_error("listener: cannot resume accepting: %s", strerror(-rc));
        (void)kt_timer_start(&l->pause, KT__ACCEPT_PAUSE, 0);
    }
}

/* Stop accepting for a while: the backlog keeps what arrives meanwhile. */
static void back_off(kt_listener *l)
{
    accepting_stop(l);
    if (kt_timer_start(&l->pause, KT__ACCEPT_PAUSE, 0) < 0)
        kt_log_error("listener: cannot arm the accept pause; accepting stays off until resumed");
}

/* fd (ours now) becomes a stream owned by the accept callback. */
void kt__listener_accepted(kt_listener *l, int fd)
{
    if (l->flags & KT__L_CLOSING) {
        close(fd);
        return;
    }
    /* An episode ends after a second without running out: accepts that
     * succeed between two back-offs do not end it (nor log again). */
    if ((l->flags & KT__L_EMFILE) && l->loop->now - l->emfile_at > KT_SEC(1)) {
        l->flags &= ~KT__L_EMFILE;
        kt_log_info("listener: accepting normally again after running out of descriptors");
    }
    kt_stream *s = kt__stream_accepted(l->loop, fd, (l->flags & KT__L_UNIX) != 0);
    if (s == NULL) {
        kt_log_warning("listener: out of memory, connection dropped");
        return;
    }
    l->cb(l, s, l->arg);
}

/*
 * Out of descriptors: the connection stays in the backlog and a
 * level-triggered poll would report it forever. Release the spare
 * descriptor, accept that connection and close it (the client sees a
 * close instead of hanging), take the spare back, and pause accepting for
 * 100 ms. One log line per episode; the episode ends once accepting has
 * gone a second without running out.
 */
static void out_of_fds(kt_listener *l, int err)
{
    kt_loop *loop = l->loop;
    if (!(l->flags & KT__L_EMFILE)) {
        l->flags |= KT__L_EMFILE;
        kt_log_warning("accept: %s; shedding connections, accepting paused for 100 ms at a time",
                       strerror(-err));
    }
    l->emfile_at = loop->now;
    if (loop->spare_fd >= 0) {
        close(loop->spare_fd);
        loop->spare_fd = -1;
        int fd = accept4(l->h.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0)
            close(fd);
        loop->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    back_off(l);
}

/* Transient per-connection errors are ignored; resource errors back off,
 * because a level-triggered poll would otherwise report them forever. */
void kt__listener_failed(kt_listener *l, int err)
{
    switch (-err) {
    case EMFILE:
    case ENFILE:
        out_of_fds(l, err);
        return;
    case ECONNABORTED: /* the client gave up while queued: not our problem */
    case EPROTO:
    case EPERM:        /* a firewall rule refused it */
    case EINTR:
    case EAGAIN:
        kt_log_debug("accept: %s", strerror(-err));
        return;
    default:           /* ENOBUFS, ENOMEM, ...: back off rather than spin */
        kt_log_warning("accept: %s; pausing 100 ms", strerror(-err));
        back_off(l);
        return;
    }
}

/* The backend is done with l: its close callback and the free come at
 * the end of the iteration, once no event of it can refer to l. */
void kt__listener_closed(kt_listener *l)
{
    l->h.fd = -1;
    l->next_closed = l->loop->closed_listeners;
    l->loop->closed_listeners = l;
}

/* A close callback that closes other listeners appends to the list, which
 * is drained to the end. */
void kt__listeners_finish(kt_loop *loop)
{
    while (loop->closed_listeners) {
        kt_listener *l = loop->closed_listeners;
        loop->closed_listeners = l->next_closed;
        if (l->close_cb)
            l->close_cb(l, l->close_arg);
        kt_free(l);
    }
}

/* ---- listeners ---------------------------------------------------------------------- */

/* Takes fd only on success (the caller closes it otherwise). */
static int listener_new(kt_loop *loop, int fd, unsigned flags, kt_accept_cb cb, void *arg,
                        kt_listener **out)
{
    kt_listener *l = kt_calloc(1, sizeof(*l));
    if (l == NULL)
        return -ENOMEM;
    l->h.type = KT__H_LISTENER;
    l->h.fd = fd;
    l->loop = loop;
    l->cb = cb;
    l->arg = arg;
    l->flags = flags;
    kt_timer_init(loop, &l->pause, pause_cb, l);
    int rc = accepting_start(l);
    if (rc < 0) {
        kt_free(l);
        return rc;
    }
    l->next_all = loop->listeners;
    if (loop->listeners)
        loop->listeners->prev_all = l;
    loop->listeners = l;
    *out = l;
    return 0;
}

/* A unix path already there: unlink it only if it is a socket nobody
 * listens on (a leftover of a dead process), never a live one or a file. */
static int unlink_stale(const kt_addr *addr)
{
    const struct sockaddr_un *un = (const struct sockaddr_un *)&addr->ss;
    struct stat st;
    if (un->sun_path[0] == '\0')
        return 0; /* abstract namespace */
    if (lstat(un->sun_path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EADDRINUSE;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = connect(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 ? errno : 0;
    close(fd);
    if (rc != ECONNREFUSED)
        return -EADDRINUSE;
    return unlink(un->sun_path) < 0 && errno != ENOENT ? -errno : 0;
}

/* The defaults: kt_listen's. */
int kt_listen(kt_loop *loop, const kt_addr *addr, int backlog, kt_accept_cb cb, void *arg,
              kt_listener **out)
{
    kt_listen_options o = { .backlog = backlog };
    return kt_listen_with(loop, addr, &o, cb, arg, out);
}

/* On failure nothing is left behind: no descriptor, no socket file. */
int kt_listen_with(kt_loop *loop, const kt_addr *addr, const kt_listen_options *opts,
                   kt_accept_cb cb, void *arg, kt_listener **out)
{
    kt_listen_options o = opts ? *opts : (kt_listen_options){ 0 };
    if (addr == NULL || cb == NULL || out == NULL || (o.flags & ~KT_LISTEN_REUSEPORT))
        return -EINVAL;
    int family = addr->ss.ss_family;
    if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
        return -EAFNOSUPPORT;
    if (family == AF_UNIX && (o.flags & KT_LISTEN_REUSEPORT))
        return -EINVAL; /* a path is bound once */
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    unsigned flags = 0;
    int rc = 0, one = 1;
    if (family == AF_UNIX) {
        if ((rc = unlink_stale(addr)) < 0)
            goto fail;
        flags |= KT__L_UNIX;
    } else {
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if ((o.flags & KT_LISTEN_REUSEPORT) &&
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
            rc = -errno;
            goto fail;
        }
    }
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0) {
        rc = -errno;
        goto fail;
    }
    if (family == AF_UNIX && ((const struct sockaddr_un *)&addr->ss)->sun_path[0] != '\0')
        flags |= KT__L_OWNPATH;
    if (listen(fd, o.backlog > 0 ? o.backlog : KT__BACKLOG) < 0 ||
        (rc = listener_new(loop, fd, flags, cb, arg, out)) < 0) {
        rc = rc < 0 ? rc : -errno;
        if (flags & KT__L_OWNPATH)
            unlink(((const struct sockaddr_un *)&addr->ss)->sun_path);
        goto fail;
    }
    return 0;
fail:
    close(fd);
    return rc;
}

/* fd must already listen (socket activation); its path is not ours to
 * unlink. The listener owns fd once this returns 0. */
int kt_listen_fd(kt_loop *loop, int fd, kt_accept_cb cb, void *arg, kt_listener **out)
{
    if (fd < 0 || cb == NULL || out == NULL)
        return -EINVAL;
    int on = 0;
    socklen_t len = sizeof(on);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0)
        return -errno;
    if (!on)
        return -EINVAL;
    struct sockaddr_storage ss;
    len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return listener_new(loop, fd, ss.ss_family == AF_UNIX ? KT__L_UNIX : 0, cb, arg, out);
}

/* Connections queue in the kernel's backlog meanwhile. */
void kt_listener_pause(kt_listener *l)
{
    l->flags |= KT__L_PAUSED;
    accepting_stop(l);
}

/* During an EMFILE back-off, accepting resumes when the pause ends. */
int kt_listener_resume(kt_listener *l)
{
    if (l->flags & KT__L_CLOSING)
        return -EBADF;
    l->flags &= ~KT__L_PAUSED;
    return accepting_start(l);
}

/* The memory is freed at the end of the iteration (an event already
 * collected may still name l); no accept callback runs after this. */
void kt_listener_close(kt_listener *l)
{
    if (l == NULL || (l->flags & KT__L_CLOSING))
        return;
    kt_loop *loop = l->loop;
    accepting_stop(l);
    l->flags |= KT__L_CLOSING;
    kt_timer_stop(&l->pause);
    if (l->prev_all)
        l->prev_all->next_all = l->next_all;
    else
        loop->listeners = l->next_all;
    if (l->next_all)
        l->next_all->prev_all = l->prev_all;
    if (l->flags & KT__L_OWNPATH) {
        struct sockaddr_un un;
        socklen_t len = sizeof(un);
        if (getsockname(l->h.fd, (struct sockaddr *)&un, &len) == 0 && un.sun_family == AF_UNIX &&
            len > offsetof(struct sockaddr_un, sun_path) && un.sun_path[0] != '\0')
            unlink(un.sun_path);
    }
    loop->io->listen_close(l);
}

/* The callback is kept on the listener and run by kt__listeners_finish. */
void kt_listener_close_notify(kt_listener *l, kt_listener_close_cb cb, void *arg)
{
    if (l == NULL)
        return;
    l->close_cb = cb;
    l->close_arg = arg;
    kt_listener_close(l);
}

/* What the kernel bound (the real port when 0 was asked). */
int kt_listener_addr(const kt_listener *l, kt_addr *out)
{
    out->len = sizeof(out->ss);
    if (getsockname(l->h.fd, (struct sockaddr *)&out->ss, &out->len) < 0)
        return -errno;
    return 0;
}
