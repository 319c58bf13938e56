/*
 * kettle/log.h - leveled logging to stderr.
 *
 * When stderr is the journal (JOURNAL_STREAM matches it, as systemd sets up)
 * each line carries a "<N>" syslog priority prefix that journald parses;
 * otherwise lines carry a timestamp and the level name.
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
/* The program name printed on each line when not under journald. */
void kt_log_set_ident(const char *ident);
void kt_log(kt_log_level level, const char *fmt, ...) KT_PRINTF(2, 3);

#define kt_log_error(...)   kt_log(KT_LOG_ERROR, __VA_ARGS__)
#define kt_log_warning(...) kt_log(KT_LOG_WARNING, __VA_ARGS__)
#define kt_log_notice(...)  kt_log(KT_LOG_NOTICE, __VA_ARGS__)
#define kt_log_info(...)    kt_log(KT_LOG_INFO, __VA_ARGS__)
#define kt_log_debug(...)   kt_log(KT_LOG_DEBUG, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
