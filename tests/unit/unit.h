/*
 * unit.h - what the unit tests share: the backend check that opens the
 * reactor suite's mains (exit 77 only where the backend cannot run), a
 * loop that must be created, waiting on a condition bounded by a guard
 * timer (a test fails instead of hanging; nothing sleeps and hopes), and
 * running the tests with an optional filter. Include after <cmocka.h>.
 */
#ifndef KETTLE_TESTS_UNIT_H
#define KETTLE_TESTS_UNIT_H

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <kettle/kettle.h>

/* 0 when the backend KETTLE_IO names runs here, else main's exit status:
 * 77 (skip) when the kernel or the sandbox lacks it, 1 on any other error. */
static inline int unit_backend_check(void)
{
    kt_loop *probe = NULL;
    int rc = kt_loop_new(&probe, NULL);
    const char *io = getenv("KETTLE_IO");
    if (rc == -ENOSYS || rc == -EPERM || rc == -EINVAL) {
        printf("# SKIP: backend %s unavailable: %s\n", io ? io : "auto", strerror(-rc));
        return 77;
    }
    if (rc < 0) {
        printf("# kt_loop_new: %s\n", strerror(-rc));
        return 1;
    }
    printf("# backend: %s\n", kt_loop_backend(probe));
    kt_loop_free(probe);
    return 0;
}

/* Run a cmocka group; KT_TEST_FILTER='test_echo*' runs a subset. */
#define unit_run_tests(tests, setup, teardown)                                        \
    (getenv("KT_TEST_FILTER") ? cmocka_set_test_filter(getenv("KT_TEST_FILTER")) : (void)0, \
     cmocka_run_group_tests(tests, setup, teardown))

/* The same for the reactor suite: the backend check first. */
#define unit_run_backend_tests(tests, setup, teardown)                                \
    (unit_backend_check() ?: unit_run_tests(tests, setup, teardown))

/* got[i] == each of the values listed, in order (cmocka assertions). */
#define UNIT_ASSERT_SEQ(got, ...)                                                     \
    do {                                                                              \
        const long long want_[] = { __VA_ARGS__ };                                    \
        for (size_t i_ = 0; i_ < sizeof want_ / sizeof want_[0]; i_++)                \
            assert_int_equal((got)[i_], want_[i_]);                                   \
    } while (0)

static inline kt_loop *unit_loop_new(void)
{
    kt_loop *loop = NULL;
    assert_int_equal(kt_loop_new(&loop, NULL), 0);
    return loop;
}

static inline void unit_guard_cb(kt_timer *t, void *arg)
{
    (void)t;
    *(bool *)arg = true;
}

/* Run iterations until *flag holds or limit_ns has passed; whether it holds. */
static inline bool unit_wait(kt_loop *loop, const bool *flag, uint64_t limit_ns)
{
    kt_timer guard;
    bool fired = false;
    kt_loop_update_time(loop);
    kt_timer_init(loop, &guard, unit_guard_cb, &fired);
    assert_int_equal(kt_timer_start(&guard, limit_ns, 0), 0);
    while (!*flag && !fired)
        assert_int_equal(kt_loop_run(loop, KT_RUN_ONCE), 0);
    kt_timer_stop(&guard);
    return *flag;
}

/* The same, failing the test (naming what it waited for) when it does not. */
static inline void unit_run_until(kt_loop *loop, const bool *flag, uint64_t limit_ns,
                                  const char *what)
{
    if (!unit_wait(loop, flag, limit_ns))
        fail_msg("%s: not reached within %llu ms", what,
                 (unsigned long long)(limit_ns / KT_MSEC(1)));
}

/* Give SIGPIPE its default action (which ends the process) for a test of
 * what a library that changes no process-wide state does; the old action
 * is kept in *old for unit_sigpipe_restore(). */
static inline void unit_sigpipe_default(struct sigaction *old)
{
    struct sigaction dfl = { .sa_handler = SIG_DFL };
    sigemptyset(&dfl.sa_mask);
    assert_int_equal(sigaction(SIGPIPE, &dfl, old), 0);
}

/* Whether SIGPIPE still has its default action. */
static inline bool unit_sigpipe_is_default(void)
{
    struct sigaction now;
    assert_int_equal(sigaction(SIGPIPE, NULL, &now), 0);
    return now.sa_handler == SIG_DFL;
}

static inline void unit_sigpipe_restore(const struct sigaction *old)
{
    assert_int_equal(sigaction(SIGPIPE, old, NULL), 0);
}

/* xorshift64: the same "random" sequence from the same seed, every run. */
static inline uint64_t unit_xorshift64(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

#endif
