/*
 * fault.c - the fault table: parsing FAULT SET arguments, describing the
 * active faults, and the per-request roll (see fault.h for the semantics).
 */
#include "config.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <kettle/common.h>
#include "fault.h"
#include "latency.h"
#include "opt.h"

static const char *const names[KDB_F_COUNT] = {
    [KDB_F_ERROR] = "error",
    [KDB_F_STALL] = "stall",
    [KDB_F_CLOSE] = "close",
    [KDB_F_RESET] = "reset",
    [KDB_F_GARBAGE] = "garbage",
    [KDB_F_CUT] = "cut",
    [KDB_F_TRICKLE] = "trickle",
    [KDB_F_REFUSE] = "refuse",
    [KDB_F_STOP_READING] = "stop-reading",
    [KDB_F_SLOW_ACCEPT] = "slow-accept",
};

#define DEFAULT_ERROR "ERR injected fault"
#define MAX_GARBAGE 65536u
#define MAX_CUT 65536u

void kdb_faults_init(kdb_faults *fs)
{
    memset(fs, 0, sizeof *fs);
}

const char *kdb_fault_name(kdb_fault_kind kind)
{
    return kind < KDB_F_COUNT ? names[kind] : "none";
}

static int parse_u32(const char *w, uint32_t min, uint32_t max, uint32_t *out)
{
    int64_t v;
    if (kt_parse_i64(w, strlen(w), &v) < 0 || v < min || v > max)
        return -EINVAL;
    *out = (uint32_t)v;
    return 0;
}

int kdb_fault_parse(const char *const *w, size_t n, kdb_fault_kind *kind, kdb_fault *out,
                    const char **why)
{
    kdb_fault f = { 0 };
    size_t k;
    if (n < 2) {
        *why = "expected <name> <probability> [args]; names: " KDB_FAULT_USAGE;
        return -EINVAL;
    }
    for (k = 0; k < KDB_F_COUNT; k++)
        if (strcasecmp(w[0], names[k]) == 0)
            break;
    if (k == KDB_F_COUNT) {
        *why = "unknown fault; expected " KDB_FAULT_USAGE;
        return -EINVAL;
    }
    if (kt_opt_parse_double(w[1], &f.prob) < 0 || !(f.prob >= 0.0 && f.prob <= 1.0)) {
        *why = "probability must be a number between 0 and 1";
        return -EINVAL;
    }
    size_t nargs = n - 2;
    const char *const *a = w + 2;
    switch ((kdb_fault_kind)k) {
    case KDB_F_ERROR: {
        /* the message: the remaining words joined by spaces, CR/LF refused */
        size_t len = 0;
        if (nargs == 0) {
            snprintf(f.msg, sizeof f.msg, "%s", DEFAULT_ERROR);
            break;
        }
        for (size_t i = 0; i < nargs; i++) {
            size_t wl = strlen(a[i]);
            if (strpbrk(a[i], "\r\n") || len + wl + 2 > sizeof f.msg) {
                *why = "error: the message must be one line of at most 120 bytes";
                return -EINVAL;
            }
            if (i)
                f.msg[len++] = ' ';
            memcpy(f.msg + len, a[i], wl);
            len += wl;
        }
        f.msg[len] = '\0';
        if (len == 0)
            snprintf(f.msg, sizeof f.msg, "%s", DEFAULT_ERROR);
        break;
    }
    case KDB_F_STOP_READING:
        if (nargs == 1 && strcasecmp(a[0], "all") == 0) {
            f.n = 1;
            break;
        }
        if (nargs != 0) {
            *why = "stop-reading: the only argument is 'all'";
            return -EINVAL;
        }
        break;
    case KDB_F_STALL:
    case KDB_F_CLOSE:
    case KDB_F_RESET:
    case KDB_F_REFUSE:
        if (nargs != 0) {
            *why = "this fault takes no arguments";
            return -EINVAL;
        }
        break;
    case KDB_F_GARBAGE:
        f.n = 16;
        if (nargs > 1 || (nargs == 1 && parse_u32(a[0], 1, MAX_GARBAGE, &f.n) < 0)) {
            *why = "garbage: expected a byte count between 1 and 65536";
            return -EINVAL;
        }
        break;
    case KDB_F_CUT:
        f.n = 3;
        if (nargs > 1 || (nargs == 1 && parse_u32(a[0], 0, MAX_CUT, &f.n) < 0)) {
            *why = "cut: expected a byte count between 0 and 65536";
            return -EINVAL;
        }
        break;
    case KDB_F_TRICKLE:
        f.n = 1;
        f.ns = KT_MSEC(10);
        if (nargs > 2 || (nargs >= 1 && parse_u32(a[0], 1, 65536, &f.n) < 0) ||
            (nargs == 2 && (kt_parse_duration(a[1], KT_MSEC(1), &f.ns) < 0 || f.ns > KT_SEC(60)))) {
            *why = "trickle: expected [slice bytes 1..65536 [interval up to 60s]]";
            return -EINVAL;
        }
        break;
    case KDB_F_SLOW_ACCEPT:
        f.ns = KT_MSEC(100);
        if (nargs > 1 || (nargs == 1 && (kt_parse_duration(a[0], KT_MSEC(1), &f.ns) < 0 ||
                                         f.ns > KT_SEC(3600)))) {
            *why = "slow-accept: expected a pause up to 1h";
            return -EINVAL;
        }
        break;
    default:
        *why = "unknown fault";
        return -EINVAL;
    }
    *kind = (kdb_fault_kind)k;
    *out = f;
    return 0;
}

int kdb_fault_parse_line(const char *line, kdb_fault_kind *kind, kdb_fault *out, const char **why)
{
    char buf[512], *save = NULL;
    const char *w[40];
    size_t n = 0;
    if (strlen(line) >= sizeof buf) {
        *why = "fault description too long";
        return -EINVAL;
    }
    snprintf(buf, sizeof buf, "%s", line);
    for (char *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (n == sizeof w / sizeof w[0]) {
            *why = "too many words in fault description";
            return -EINVAL;
        }
        w[n++] = t;
    }
    return kdb_fault_parse(w, n, kind, out, why);
}

void kdb_faults_set(kdb_faults *fs, kdb_fault_kind kind, const kdb_fault *f)
{
    if (kind >= KDB_F_COUNT)
        return;
    fs->f[kind] = *f;
    fs->request_total = 0;
    for (int k = 0; k < KDB_F_NREQUEST; k++)
        fs->request_total += fs->f[k].prob;
}

kdb_fault_kind kdb_faults_roll(const kdb_faults *fs, kt_rng *r)
{
    if (fs->request_total <= 0)
        return KDB_F_NONE;
    double u = kt_rng_uniform(r), cum = 0;
    for (int k = 0; k < KDB_F_NREQUEST; k++) {
        if (fs->f[k].prob <= 0)
            continue;
        cum += fs->f[k].prob;
        /* probability 1 always fires, whatever the rounding of the sum */
        if (u < cum || fs->f[k].prob >= 1.0)
            return (kdb_fault_kind)k;
    }
    return KDB_F_NONE;
}

const char *kdb_fault_describe(kdb_fault_kind kind, const kdb_fault *f, char *buf, size_t size)
{
    char d[32];
    switch (kind) {
    case KDB_F_ERROR:
        snprintf(buf, size, "error %g %s", f->prob, f->msg);
        break;
    case KDB_F_GARBAGE:
    case KDB_F_CUT:
        snprintf(buf, size, "%s %g %u", names[kind], f->prob, f->n);
        break;
    case KDB_F_TRICKLE:
        snprintf(buf, size, "trickle %g %u %s", f->prob, f->n, kdb_format_duration(f->ns, d, sizeof d));
        break;
    case KDB_F_STOP_READING:
        snprintf(buf, size, "stop-reading %g%s", f->prob, f->n ? " all" : "");
        break;
    case KDB_F_SLOW_ACCEPT:
        snprintf(buf, size, "slow-accept %g %s", f->prob, kdb_format_duration(f->ns, d, sizeof d));
        break;
    default:
        snprintf(buf, size, "%s %g", kdb_fault_name(kind), f->prob);
        break;
    }
    return buf;
}
