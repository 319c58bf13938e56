/*
 * log.c - leveled logging to stderr. Under systemd (JOURNAL_STREAM names
 * our stderr) each line starts with "<N>" so journald records its priority;
 * elsewhere it starts with a timestamp, the program name and pid.
 */
#include "config.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

static kt_log_level kt__level = KT_LOG_NOTICE;
static const char *kt__ident = "kettle";
static int kt__journal = -1; /* -1: not yet checked */

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
static bool stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
        return false;
    if (fstat(STDERR_FILENO, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void kt_log(kt_log_level level, const char *fmt, ...)
{
    char line[1024];
    size_t n;
    va_list ap;
    int saved = errno;

    if (level > kt__level)
        return;
    if (kt__journal < 0)
        kt__journal = stderr_is_journal();
    if (kt__journal) {
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
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - n, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += (size_t)m;
    }
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    /* one write per line, so concurrent writers do not interleave */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
    errno = saved;
}
