/*
 * kettle/log.h - leveled logging: what the library and the programs say.
 *
 * By default each line goes to stderr, in one write. When stderr is the
 * journal (JOURNAL_STREAM matches it, as systemd sets up) a line carries a
 * "<N>" syslog priority prefix that journald parses; otherwise it carries a
 * timestamp, the program name and pid, and the level name. A stderr that
 * is a socket is written with MSG_NOSIGNAL. A program may route every line
 * elsewhere with kt_log_set_callback (libevent's event_set_log_callback).
 */
#ifndef KETTLE_LOG_H
#define KETTLE_LOG_H

#include <kettle/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kt_log_level {
    KT_LOG_ERROR = 3,   /* syslog priorities */
    KT_LOG_WARNING = 4,
    KT_LOG_NOTICE = 5,
    KT_LOG_INFO = 6,
    KT_LOG_DEBUG = 7,
} kt_log_level;

/* Lines above level are dropped. Default KT_LOG_NOTICE. */
void kt_log_set_level(kt_log_level level);
kt_log_level kt_log_get_level(void);
/* "error", "warning", "notice", "info", "debug" -> level. 0 or -EINVAL. */
int kt_log_parse_level(const char *name, kt_log_level *out);
/* The program name printed on each line when not under journald. The
 * string is not copied: it must outlive the logging. */
void kt_log_set_ident(const char *ident);
/* Log one line (printf format; no trailing newline needed) if level is
 * within the current level. Lines are cut at 1023 bytes. errno is kept. */
void kt_log(kt_log_level level, const char *fmt, ...) KT_PRINTF(2, 3);

/* Receives each line that passes the level: msg is the formatted text
 * without prefix or newline, valid during the call only. */
typedef void (*kt_log_cb)(kt_log_level level, const char *msg, void *arg);
/* Send the lines to cb(level, msg, arg) instead of stderr; cb NULL
 * restores the default writer (which then looks at stderr and
 * JOURNAL_STREAM again). The callback may be called from any thread that
 * logs, a loop's included; set it before starting threads that log. */
void kt_log_set_callback(kt_log_cb cb, void *arg);

#define kt_log_error(...)   kt_log(KT_LOG_ERROR, __VA_ARGS__)
#define kt_log_warning(...) kt_log(KT_LOG_WARNING, __VA_ARGS__)
#define kt_log_notice(...)  kt_log(KT_LOG_NOTICE, __VA_ARGS__)
#define kt_log_info(...)    kt_log(KT_LOG_INFO, __VA_ARGS__)
#define kt_log_debug(...)   kt_log(KT_LOG_DEBUG, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
