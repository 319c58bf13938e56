/* test-util.c - the duration, size and integer parsers, the allocator hook. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>
#include <kettle/kettle.h>

static void test_durations(void **state)
{
    (void)state;
    uint64_t ns;
    assert_int_equal(kt_parse_duration("250ms", KT_MSEC(1), &ns), 0);
    assert_int_equal(ns, KT_MSEC(250));
    assert_int_equal(kt_parse_duration("1.5s", KT_MSEC(1), &ns), 0);
    assert_int_equal(ns, KT_MSEC(1500));
    assert_int_equal(kt_parse_duration("42", KT_MSEC(1), &ns), 0);
    assert_int_equal(ns, KT_MSEC(42));
    assert_int_equal(kt_parse_duration("100us", 1, &ns), 0);
    assert_int_equal(ns, KT_USEC(100));
    assert_int_equal(kt_parse_duration("2m", 1, &ns), 0);
    assert_int_equal(ns, KT_SEC(120));
    assert_int_equal(kt_parse_duration("0", 1, &ns), 0);
    assert_int_equal(ns, 0);
    assert_int_equal(kt_parse_duration("", 1, &ns), -EINVAL);
    assert_int_equal(kt_parse_duration("-5ms", 1, &ns), -EINVAL);
    assert_int_equal(kt_parse_duration("5 parsecs", 1, &ns), -EINVAL);
    assert_int_equal(kt_parse_duration("ms", 1, &ns), -EINVAL);
    assert_int_equal(kt_parse_duration("nan", 1, &ns), -EINVAL);
    assert_int_equal(kt_parse_duration("1e30s", 1, &ns), -ERANGE);
}

static void test_sizes(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(kt_parse_size("512", &v), 0);
    assert_int_equal(v, 512);
    assert_int_equal(kt_parse_size("64k", &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(kt_parse_size("1MB", &v), 0);
    assert_int_equal(v, 1048576);
    assert_int_equal(kt_parse_size("2gb", &v), 0);
    assert_int_equal(v, 2147483648ull);
    assert_int_equal(kt_parse_size("1tb", &v), -EINVAL);
    assert_int_equal(kt_parse_size("x", &v), -EINVAL);
}

static void test_i64(void **state)
{
    (void)state;
    int64_t v;
    assert_int_equal(kt_parse_i64("0", 1, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(kt_parse_i64("-42", 3, &v), 0);
    assert_int_equal(v, -42);
    assert_int_equal(kt_parse_i64("9223372036854775807", 19, &v), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(kt_parse_i64("-9223372036854775808", 20, &v), 0);
    assert_true(v == INT64_MIN);
    assert_int_equal(kt_parse_i64("9223372036854775808", 19, &v), -ERANGE);
    assert_int_equal(kt_parse_i64("99999999999999999999", 20, &v), -ERANGE);
    assert_int_equal(kt_parse_i64("", 0, &v), -EINVAL);
    assert_int_equal(kt_parse_i64("-", 1, &v), -EINVAL);
    assert_int_equal(kt_parse_i64("+1", 2, &v), -EINVAL);
    assert_int_equal(kt_parse_i64("1a", 2, &v), -EINVAL);
    assert_int_equal(kt_parse_i64(" 1", 2, &v), -EINVAL);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_i64),
        cmocka_unit_test(test_allocator_hook),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
