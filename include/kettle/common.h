/*
 * kettle/common.h - conventions shared by every libkettle module.
 *
 * The error contract (stated once, kept everywhere):
 *   - Functions return 0 (or a count) on success and a negative errno value
 *     on failure: -ENOMEM, -EINVAL, -ECONNREFUSED, ...
 *   - A function that takes a callback and returns an error never calls that
 *     callback. If it returns 0, the callback will be called exactly as its
 *     documentation says (possibly with an error status).
 *   - Callbacks never run inside the call that registered them.
 *
 * Constructors come in three shapes, by how they can fail:
 *   - Objects the library allocates and that can fail for several reasons
 *     (kt_loop_new, kt_listen, kt_listen_with, kt_listen_fd,
 *     kt_stream_connect, kt_stream_open_fd) return 0 or a negative errno
 *     and store the object through their last argument, which is left
 *     untouched on failure.
 *   - Futures can fail only for want of memory, and are made in numbers
 *     on hot paths: kt_future_new and the combinators return the future,
 *     or NULL for -ENOMEM (a combinator also for an invalid argument, a
 *     NULL input say, as each one documents).
 *   - Objects embedded in the caller's memory (kt_timer, kt_defer,
 *     kt_hist) are set up by a *_init that cannot fail and returns void;
 *     what can fail comes later (kt_timer_start: 0 or -ENOMEM).
 *   kt_malloc and its kin return NULL on failure, as malloc does.
 *
 * Allocation goes through one replaceable set of functions, so that tests
 * can inject failures and embedders can plug in their own allocator.
 */
#ifndef KETTLE_COMMON_H
#define KETTLE_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KT_VERSION_STRING "0.1.0"

/* Nanosecond helpers: every duration in the API is in nanoseconds. */
#define KT_USEC(x) ((uint64_t)(x) * 1000ull)
#define KT_MSEC(x) ((uint64_t)(x) * 1000000ull)
#define KT_SEC(x)  ((uint64_t)(x) * 1000000000ull)

#if defined(__GNUC__)
#define KT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define KT_NODISCARD __attribute__((warn_unused_result))
#else
#define KT_PRINTF(a, b)
#define KT_NODISCARD
#endif

/* The allocator: malloc/realloc/free semantics. Any member left NULL keeps
 * the current one. Not thread-safe: call before any other kettle function. */
typedef struct kt_allocator {
    void *(*malloc)(size_t size);
    void *(*realloc)(void *ptr, size_t size);
    void (*free)(void *ptr);
} kt_allocator;

/* Replace the allocator; pass NULL to restore the C library's. */
void kt_set_allocator(const kt_allocator *a);

/* Allocate through the current allocator. NULL on failure (never aborts). */
void *kt_malloc(size_t size);
/* Zeroed allocation of n * size bytes; NULL on overflow or failure. */
void *kt_calloc(size_t n, size_t size);
void *kt_realloc(void *ptr, size_t size);
void kt_free(void *ptr);
/* kt_malloc'd copy of s (or of its first n bytes, NUL-terminated). */
char *kt_strdup(const char *s);
char *kt_strndup(const char *s, size_t n);

/* Monotonic clock in nanoseconds (CLOCK_MONOTONIC). */
uint64_t kt_clock_ns(void);

/* Parse "250ms", "1.5s", "2m", "100us", "42" (unit_ns applies to a bare
 * number; units ns, us, ms, s, sec, m, min, h, case-insensitive) into
 * nanoseconds, rounded to the nearest. 0, -EINVAL (not a non-negative
 * number with a known unit) or -ERANGE (2^64 ns or more). *out_ns is set
 * only on success. */
int kt_parse_duration(const char *s, uint64_t unit_ns, uint64_t *out_ns);
/* Parse "512", "64k", "16kb", "1mb", "2gb" (case-insensitive, powers of
 * 1024) into bytes. 0, -EINVAL or -ERANGE (2^64 bytes or more); *out is
 * set only on success. */
int kt_parse_size(const char *s, uint64_t *out);
/* Parse the len bytes at s as a signed 64-bit decimal integer; 0, -EINVAL
 * (empty, any byte but an optional leading '-' and digits: no '+', no
 * spaces) or -ERANGE (outside int64_t). *out is set only on success. */
int kt_parse_i64(const char *s, size_t len, int64_t *out);

#ifdef __cplusplus
}
#endif
#endif
