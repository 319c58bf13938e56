/*
 * util.c - the clock and the parsers for durations, sizes and integers
 * shared by the programs' command lines and config files.
 */
#include "config.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "internal.h"

uint64_t kt_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int kt_parse_i64(const char *s, size_t len, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    uint64_t v = 0;

    if (len == 0)
        return -EINVAL;
    if (s[0] == '-') {
        neg = true;
        i = 1;
        if (len == 1)
            return -EINVAL;
    }
    for (; i < len; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9)
            return -EINVAL;
        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return -ERANGE;
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX)
            return -ERANGE;
        *out = (int64_t)v;
    }
    return 0;
}

/* Split "12.5ms" into a finite non-negative number and its unit suffix. */
static int split_number(const char *s, double *num, const char **unit)
{
    char *end;
    while (isspace((unsigned char)*s))
        s++;
    if (*s == '\0' || *s == '-' || *s == '+')
        return -EINVAL;
    errno = 0;
    *num = strtod(s, &end);
    if (end == s || errno != 0 || !isfinite(*num) || *num < 0)
        return -EINVAL;
    while (isspace((unsigned char)*end))
        end++;
    *unit = end;
    size_t n = strlen(end);
    while (n > 0 && isspace((unsigned char)end[n - 1]))
        n--;
    /* trailing spaces are allowed; the caller compares the unit with them cut */
    return (int)n;
}

/* A unit suffix and what one of it is worth. */
struct unit {
    const char *name;
    double scale;
};

/* A non-negative number with an optional unit from units[] (a bare number
 * is worth bare each), rounded to the nearest integer: 0, -EINVAL or
 * -ERANGE (2^64 or more). */
static int parse_scaled(const char *s, const struct unit *units, size_t nunits, double bare,
                        uint64_t *out)
{
    double num, scale = bare;
    const char *unit;
    int n = split_number(s, &num, &unit);
    if (n < 0)
        return n;
    if (n > 0) {
        size_t i;
        for (i = 0; i < nunits; i++)
            if ((size_t)n == strlen(units[i].name) && strncasecmp(unit, units[i].name, (size_t)n) == 0)
                break;
        if (i == nunits)
            return -EINVAL;
        scale = units[i].scale;
    }
    double v = num * scale;
    if (v >= 18446744073709551615.0) /* 2^64 as a double */
        return -ERANGE;
    *out = (uint64_t)llround(v);
    return 0;
}

int kt_parse_duration(const char *s, uint64_t unit_ns, uint64_t *out_ns)
{
    static const struct unit units[] = {
        { "ns", 1 }, { "us", 1e3 }, { "ms", 1e6 }, { "s", 1e9 }, { "sec", 1e9 },
        { "m", 60e9 }, { "min", 60e9 }, { "h", 3600e9 },
    };
    return parse_scaled(s, units, KT__ARRAY_LEN(units), (double)unit_ns, out_ns);
}

int kt_parse_size(const char *s, uint64_t *out)
{
    static const struct unit units[] = {
        { "b", 1 }, { "k", 1024.0 }, { "kb", 1024.0 }, { "m", 1048576.0 }, { "mb", 1048576.0 },
        { "g", 1073741824.0 }, { "gb", 1073741824.0 },
    };
    return parse_scaled(s, units, KT__ARRAY_LEN(units), 1, out);
}
