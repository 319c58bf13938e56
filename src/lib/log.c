/*
 * log.c - leveled logging: the level filter, the replaceable sink, and the
 * default writer to stderr. Under systemd (JOURNAL_STREAM names our
 * stderr) each line starts with "<N>" so journald records its priority;
 * elsewhere it starts with a timestamp, the program name and pid.
 */
#include "config.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

#define KT__LOG_LINE 1024 /* bytes of a line, newline included */

static kt_log_level kt__level = KT_LOG_NOTICE;
static const char *kt__ident = "kettle";
static kt_log_cb kt__log_cb;      /* NULL: the default writer */
static void *kt__log_arg;
/* What stderr is, found out at the first line: -1 not yet, else KT__ERR_*. */
static int kt__stderr = -1;
#define KT__ERR_JOURNAL 0x1 /* JOURNAL_STREAM names it: "<N>" prefixes */
#define KT__ERR_SOCKET  0x2 /* a socket: send with MSG_NOSIGNAL */

static const char *const level_names[] = {
    [KT_LOG_ERROR] = "error", [KT_LOG_WARNING] = "warning", [KT_LOG_NOTICE] = "notice",
    [KT_LOG_INFO] = "info", [KT_LOG_DEBUG] = "debug",
};

void kt_log_set_level(kt_log_level level) { kt__level = level; }
kt_log_level kt_log_get_level(void) { return kt__level; }
void kt_log_set_ident(const char *ident) { kt__ident = ident; }

int kt_log_parse_level(const char *name, kt_log_level *out)
{
    for (int l = KT_LOG_ERROR; l <= KT_LOG_DEBUG; l++) {
        if (strcasecmp(name, level_names[l]) == 0) {
            *out = (kt_log_level)l;
            return 0;
        }
    }
    if (strcasecmp(name, "warn") == 0) {
        *out = KT_LOG_WARNING;
        return 0;
    }
    return -EINVAL;
}

/* journald sets JOURNAL_STREAM=dev:inode for the stream it connected. */
static int stderr_kind(void)
{
    struct stat st;
    if (fstat(STDERR_FILENO, &st) < 0)
        return 0;
    int kind = S_ISSOCK(st.st_mode) ? KT__ERR_SOCKET : 0;
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
        (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
        kind |= KT__ERR_JOURNAL;
    return kind;
}

/* Until the first line after a change, the default writer has not looked
 * at stderr: it does so again after a callback was removed. */
void kt_log_set_callback(kt_log_cb cb, void *arg)
{
    kt__log_cb = cb;
    kt__log_arg = arg;
    if (cb == NULL)
        kt__stderr = -1;
}

/* The default writer: the prefix, then the message, one write per line
 * so that concurrent writers do not interleave. A socket (the journal's)
 * is written with MSG_NOSIGNAL: a journal gone away must not end the
 * program with SIGPIPE. */
static void write_stderr(kt_log_level level, const char *fmt, va_list ap)
{
    char line[KT__LOG_LINE];
    size_t n;
    if (kt__stderr < 0)
        kt__stderr = stderr_kind();
    if (kt__stderr & KT__ERR_JOURNAL) {
        n = (size_t)snprintf(line, sizeof line, "<%d>", (int)level);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        localtime_r(&ts.tv_sec, &tm);
        n = strftime(line, sizeof line, "%Y-%m-%d %H:%M:%S", &tm);
        n += (size_t)snprintf(line + n, sizeof line - n, ".%03ld %s[%d] %s: ",
                              ts.tv_nsec / 1000000, kt__ident, (int)getpid(),
                              level_names[level]);
    }
    if (n < sizeof line) {
        int m = vsnprintf(line + n, sizeof line - n, fmt, ap);
        if (m > 0)
            n += (size_t)m;
    }
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    ssize_t w;
    if (kt__stderr & KT__ERR_SOCKET)
        w = send(STDERR_FILENO, line, n, MSG_NOSIGNAL);
    else
        w = write(STDERR_FILENO, line, n);
    (void)w; /* nowhere to report a failure to log */
}

/* The level filter comes first, so a dropped line costs no formatting. */
void kt_log(kt_log_level level, const char *fmt, ...)
{
    if (level > kt__level)
        return;
    if (level < KT_LOG_ERROR)
        level = KT_LOG_ERROR; /* (nothing more severe is defined) */
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    if (kt__log_cb) {
        char msg[KT__LOG_LINE];
        if (vsnprintf(msg, sizeof msg, fmt, ap) < 0)
            msg[0] = '\0';
        kt__log_cb(level, msg, kt__log_arg);
    } else {
        write_stderr(level, fmt, ap);
    }
    va_end(ap);
    errno = saved;
}
