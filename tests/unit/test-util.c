/* test-util.c - the duration, size and integer parsers, the allocator hook,
 * the log callback and the default log writer. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <cmocka.h>
#include <kettle/kettle.h>
#include "unit.h"

/* One parser call: the input, its length or unit, the return wanted and,
 * when that is 0, the value wanted; a failure must leave the output alone. */
struct parse_case {
    const char *in;
    uint64_t arg;  /* kt_parse_duration's unit, kt_parse_i64's length */
    int rc;
    uint64_t want; /* an int64_t's bits for kt_parse_i64 */
};

static const struct parse_case durations[] = {
    { "250ms", KT_MSEC(1), 0, KT_MSEC(250) }, { "1.5s", KT_MSEC(1), 0, KT_MSEC(1500) },
    { "42", KT_MSEC(1), 0, KT_MSEC(42) }, { "100us", 1, 0, KT_USEC(100) },
    { "2m", 1, 0, KT_SEC(120) }, { "0", 1, 0, 0 },
    { "", 1, -EINVAL, 0 }, { "-5ms", 1, -EINVAL, 0 }, { "5 parsecs", 1, -EINVAL, 0 },
    { "ms", 1, -EINVAL, 0 }, { "nan", 1, -EINVAL, 0 }, { "1e30s", 1, -ERANGE, 0 },
    { "18446744073709551616", 1, -ERANGE, 0 }, /* 2^64 */
    { "18446744073ms", KT_MSEC(1), 0, 18446744073000000ull },
};

static const struct parse_case sizes[] = {
    { "512", 0, 0, 512 }, { "64k", 0, 0, 65536 }, { "1MB", 0, 0, 1048576 },
    { "2gb", 0, 0, 2147483648ull }, { "1tb", 0, -EINVAL, 0 }, { "x", 0, -EINVAL, 0 },
    { "1e30gb", 0, -ERANGE, 0 }, { "16777216tb", 0, -EINVAL, 0 },
};

static const struct parse_case i64s[] = {
    { "0", 1, 0, 0 }, { "-42", 3, 0, (uint64_t)-42 },
    { "9223372036854775807", 19, 0, (uint64_t)INT64_MAX },
    { "-9223372036854775808", 20, 0, (uint64_t)INT64_MIN },
    { "9223372036854775808", 19, -ERANGE, 0 }, { "99999999999999999999", 20, -ERANGE, 0 },
    { "", 0, -EINVAL, 0 }, { "-", 1, -EINVAL, 0 }, { "+1", 2, -EINVAL, 0 },
    { "1a", 2, -EINVAL, 0 }, { " 1", 2, -EINVAL, 0 },
};

enum parser { DURATION, SIZE, I64 };

static void check_parses(enum parser which, const struct parse_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 7;
        int64_t sv = 7;
        int rc = which == DURATION ? kt_parse_duration(c[i].in, c[i].arg, &v)
                 : which == SIZE   ? kt_parse_size(c[i].in, &v)
                                   : kt_parse_i64(c[i].in, (size_t)c[i].arg, &sv);
        if (which == I64)
            v = (uint64_t)sv;
        if (rc != c[i].rc || v != (rc == 0 ? c[i].want : 7))
            fail_msg("parsing \"%s\": %d and %llu, wanted %d and %llu", c[i].in, rc,
                     (unsigned long long)v, c[i].rc,
                     (unsigned long long)(c[i].rc == 0 ? c[i].want : 7));
    }
}

static void test_durations(void **state)
{
    (void)state;
    check_parses(DURATION, durations, sizeof durations / sizeof durations[0]);
}

static void test_sizes(void **state)
{
    (void)state;
    check_parses(SIZE, sizes, sizeof sizes / sizeof sizes[0]);
}

static void test_i64(void **state)
{
    (void)state;
    check_parses(I64, i64s, sizeof i64s / sizeof i64s[0]);
}

static int fail_after = -1;
static void *failing_malloc(size_t n)
{
    if (fail_after == 0)
        return NULL;
    if (fail_after > 0)
        fail_after--;
    return malloc(n);
}

static void test_allocator_hook(void **state)
{
    (void)state;
    kt_set_allocator(&(kt_allocator){ .malloc = failing_malloc });
    fail_after = 1;
    char *a = kt_strdup("kettle");
    assert_non_null(a);
    assert_string_equal(a, "kettle");
    assert_null(kt_strdup("boils"));
    assert_null(kt_calloc(SIZE_MAX / 2, 4)); /* overflow caught before allocating */
    kt_free(a);
    kt_set_allocator(NULL);
    fail_after = -1;
}

/* ---- logging ------------------------------------------------------------------ */

struct logged {
    int calls;
    kt_log_level level;
    char msg[2048];
};

static void log_cb(kt_log_level level, const char *msg, void *arg)
{
    struct logged *l = arg;
    l->calls++;
    l->level = level;
    snprintf(l->msg, sizeof(l->msg), "%s", msg);
}

/* Lines within the level reach the callback, formatted, without prefix or
 * newline; others do not; long lines are cut; errno is kept. */
static void test_log_callback(void **state)
{
    (void)state;
    struct logged l = { 0 };
    kt_log_level saved = kt_log_get_level();
    kt_log_set_level(KT_LOG_INFO);
    kt_log_set_callback(log_cb, &l);
    errno = EAGAIN;
    kt_log_info("hello %d", 42);
    assert_int_equal(errno, EAGAIN);
    assert_int_equal(l.calls, 1);
    assert_int_equal(l.level, KT_LOG_INFO);
    assert_string_equal(l.msg, "hello 42");
    kt_log_debug("not shown");
    assert_int_equal(l.calls, 1);
    kt_log_error("%s", "bad");
    assert_int_equal(l.calls, 2);
    assert_int_equal(l.level, KT_LOG_ERROR);
    assert_string_equal(l.msg, "bad");
    char big[1500];
    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    kt_log_warning("%s", big);
    assert_int_equal(strlen(l.msg), 1023);
    kt_log_set_callback(NULL, NULL);
    kt_log_set_level(saved);
}

/* Capture what the default writer puts on stderr while fn runs. */
static size_t capture_stderr(void (*fn)(void), char *out, size_t size, const char *journal)
{
    char path[] = "/tmp/kt-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    if (journal) {
        struct stat st;
        char js[64];
        assert_int_equal(fstat(fd, &st), 0);
        snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
                 (unsigned long long)st.st_ino);
        setenv("JOURNAL_STREAM", js, 1);
    }
    kt_log_set_callback(NULL, NULL); /* the default writer looks again */
    fn();
    unsetenv("JOURNAL_STREAM");
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    kt_log_set_callback(NULL, NULL);
    ssize_t n = pread(fd, out, size - 1, 0);
    assert_true(n >= 0);
    out[n] = '\0';
    close(fd);
    return (size_t)n;
}

static void log_two_lines(void)
{
    kt_log_set_ident("test-util");
    kt_log_error("first %s", "line");
    kt_log_warning("second");
    kt_log_set_ident("kettle");
}

/* NULL restores the default writer: stderr, one line each, with the
 * program name and level, or journald's "<N>" priority when stderr is the
 * journal. */
static void test_log_default_writer(void **state)
{
    (void)state;
    struct logged l = { 0 };
    char out[4096];
    kt_log_set_callback(log_cb, &l);
    capture_stderr(log_two_lines, out, sizeof(out), NULL);
    assert_int_equal(l.calls, 0);
    assert_non_null(strstr(out, "test-util["));
    assert_non_null(strstr(out, "error: first line\n"));
    assert_non_null(strstr(out, "warning: second\n"));
    capture_stderr(log_two_lines, out, sizeof(out), "journal");
    assert_string_equal(out, "<3>first line\n<4>second\n");
}

/* A stderr that is a socket whose reader has gone: with SIGPIPE at its
 * default action the line is lost, not the process. */
static void test_log_broken_socket(void **state)
{
    (void)state;
    struct sigaction old;
    unit_sigpipe_default(&old);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    close(sv[1]);
    int saved = dup(STDERR_FILENO);
    assert_int_equal(dup2(sv[0], STDERR_FILENO), STDERR_FILENO);
    kt_log_set_callback(NULL, NULL);
    kt_log_error("into a closed socket");
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    close(sv[0]);
    kt_log_set_callback(NULL, NULL);
    unit_sigpipe_restore(&old);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_i64),
        cmocka_unit_test(test_allocator_hook),
        cmocka_unit_test(test_log_callback),
        cmocka_unit_test(test_log_default_writer),
        cmocka_unit_test(test_log_broken_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
