/*
 * latency.c - kettle-cli --latency, --latency-history and --latency-dist,
 * as redis-cli has them: send one command (PING, or the one given), wait
 * for its reply, note the round trip, pause 10 ms, again, until Ctrl-C.
 *
 *   --latency          min, max, avg and samples so far, on one line that
 *                      refreshes at a terminal (elsewhere a line per -i,
 *                      default 1 s)
 *   --latency-history  the same, a new line every -i seconds (default 15)
 *                      with the figures of that range only
 *   --latency-dist     one line of characters per -i seconds (default 1):
 *                      a character per latency range, brighter the more
 *                      samples fell in it (colour at a terminal)
 *
 * An error reply ends the view (status 1): the time to an error says
 * nothing. A lost connection is reconnected to.
 */
#include "config.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <kettle/common.h>
#include "cli.h"

#define SAMPLE_PAUSE KT_MSEC(10)

/* The ranges of --latency-dist: the upper bound (us) and the character. */
static const struct { uint64_t max_us; char ch; } ranges[] = {
    { 10, '.' }, { 125, '-' }, { 250, '*' }, { 500, '#' },
    { 1000, '1' }, { 2000, '2' }, { 3000, '3' }, { 4000, '4' }, { 5000, '5' },
    { 6000, '6' }, { 7000, '7' }, { 8000, '8' }, { 9000, '9' },
    { 10000, 'A' }, { 20000, 'B' }, { 30000, 'C' }, { 40000, 'D' }, { 50000, 'E' },
    { 100000, 'F' }, { 200000, 'G' }, { 300000, 'H' }, { 400000, 'I' }, { 500000, 'J' },
    { 1000000, 'K' }, { 2000000, 'L' }, { 4000000, 'M' }, { 8000000, 'N' },
    { 16000000, 'O' }, { 30000000, 'P' }, { UINT64_MAX, '?' },
};
#define NRANGES (sizeof(ranges) / sizeof(ranges[0]))

typedef struct lat_stats {
    uint64_t min, max, sum, count; /* ns */
    uint64_t in_range[NRANGES];
} lat_stats;

static void stats_reset(lat_stats *s)
{
    memset(s, 0, sizeof(*s));
}

static void stats_add(lat_stats *s, uint64_t ns)
{
    if (s->count == 0 || ns < s->min)
        s->min = ns;
    if (ns > s->max)
        s->max = ns;
    s->sum += ns;
    s->count++;
    size_t i = 0;
    while (i + 1 < NRANGES && ns / 1000 > ranges[i].max_us)
        i++;
    s->in_range[i]++;
}

/* "min: 0.05, max: 0.31, avg: 0.09 (1234 samples)", in milliseconds. */
static void print_figures(const lat_stats *s)
{
    printf("min: %.2f, max: %.2f, avg: %.2f (%llu samples)", s->min / 1e6, s->max / 1e6,
           s->count ? (double)s->sum / s->count / 1e6 : 0.0, (unsigned long long)s->count);
}

static void print_legend(uint64_t interval)
{
    printf("One line every %.3g s, a character per latency range, brighter where more samples "
           "fell\n(Ctrl-C stops):\n"
           "  . - * #         up to .01 .125 .25 .5 ms\n"
           "  1 2 3 ... 9     up to 1 2 3 ... 9 ms\n"
           "  A B C D E       up to 10 20 30 40 50 ms\n"
           "  F G H I J       up to .1 .2 .3 .4 .5 s\n"
           "  K L M N O P ?   up to 1 2 4 8 16 30 s, and beyond\n", interval / 1e9);
}

/* One --latency-dist line: each range's character, coloured by its share
 * of the samples (or plain, away from a terminal). */
static void print_dist(const lat_stats *s, bool color)
{
    /* dim grey to bright yellow, by share: up to 1%, 5%, 25%, 50%, more */
    static const char *const shade[] = {
        "\033[38;5;240m", "\033[38;5;246m", "\033[38;5;252m", "\033[1;38;5;231m",
        "\033[1;38;5;226m",
    };
    for (size_t i = 0; i < NRANGES; i++) {
        uint64_t n = s->in_range[i];
        if (n == 0) {
            putchar(' ');
            continue;
        }
        double share = (double)n / s->count;
        int k = share <= 0.01 ? 0 : share <= 0.05 ? 1 : share <= 0.25 ? 2 : share <= 0.5 ? 3 : 4;
        if (color)
            printf("%s%c\033[0m", shade[k], ranges[i].ch);
        else
            putchar(ranges[i].ch);
    }
    printf("  avg %.2f ms (%llu samples)\n", s->count ? (double)s->sum / s->count / 1e6 : 0.0,
           (unsigned long long)s->count);
}

/* One round trip. 0 with *ns; 1 on an error reply (printed); -1 when the
 * connection failed (printed, closed) or the view was stopped. */
static int sample(kc_conn *c, size_t argc, const kt_resp_arg *args, uint64_t *ns)
{
    kt_resp_reply r = { 0 };
    const char *why = NULL;
    uint64_t t0 = kt_clock_ns();
    int rc = kc_send(c, argc, args);
    if (rc == 0)
        rc = kc_read_reply(c, &r, &why);
    *ns = kt_clock_ns() - t0;
    if (rc == 0 && r.nodes[0].type == KT_RESP_ERROR_REPLY) {
        fprintf(stderr, "(error) %.*s\n", (int)r.nodes[0].len, r.nodes[0].p);
        rc = 1;
    } else if (rc < 0) {
        if (rc != -EINTR)
            fprintf(stderr, "\nError: %s (reconnecting)\n",
                    rc == -ECONNRESET ? "Server closed the connection" : why ? why : strerror(-rc));
        kc_close(c);
        rc = -1;
    }
    kt_resp_reply_free(&r);
    return rc;
}

int kc_latency(kc_conn *c, const kc_opts *o, size_t argc, char *const *argv, const size_t *lens)
{
    static char *const ping[1] = { "PING" };
    static const size_t ping_len[1] = { 4 };
    bool tty = isatty(STDOUT_FILENO);
    const char *term = getenv("TERM");
    bool color = tty && term != NULL && strcmp(term, "dumb") != 0;
    int mode = o->mode;
    uint64_t interval = o->interval_ns ? o->interval_ns
                        : mode == KC_MODE_LATENCY_HISTORY ? KT_SEC(15) : KT_SEC(1);
    lat_stats total, range;
    int status = 0;

    if (argc == 0) {
        argc = 1;
        argv = ping;
        lens = ping_len;
    }
    kt_resp_arg *args = kt_calloc(argc, sizeof(*args));
    if (args == NULL)
        return 1;
    for (size_t i = 0; i < argc; i++)
        args[i] = (kt_resp_arg){ argv[i], lens[i] };
    stats_reset(&total);
    stats_reset(&range);
    kc_catch_stop();
    c->stop = &kc_stop;
    if (mode == KC_MODE_LATENCY_DIST)
        print_legend(interval);
    uint64_t range_start = kt_clock_ns();
    while (!kc_stop) {
        uint64_t ns;
        if (c->fd < 0 && kc_open(c, o) < 0) {
            kc_pause_until(kt_clock_ns() + KT_SEC(1));
            continue;
        }
        int rc = sample(c, argc, args, &ns);
        if (rc > 0) {
            status = 1;
            break;
        }
        if (rc == 0) {
            stats_add(&total, ns);
            stats_add(&range, ns);
        }
        uint64_t now = kt_clock_ns();
        bool range_over = now - range_start >= interval;
        if (mode == KC_MODE_LATENCY && tty) {
            printf("\r\033[2K");
            print_figures(&total);
        } else if (mode == KC_MODE_LATENCY && range_over) {
            print_figures(&total);
            putchar('\n');
        } else if (mode == KC_MODE_LATENCY_HISTORY) {
            if (tty || range_over) {
                fputs(tty ? "\r\033[2K" : "", stdout);
                print_figures(&range);
            }
            if (range_over)
                printf(" -- %.2f seconds range\n", (now - range_start) / 1e9);
        } else if (mode == KC_MODE_LATENCY_DIST && range_over) {
            print_dist(&range, color);
        }
        fflush(stdout);
        if (range_over) {
            stats_reset(&range);
            range_start = now;
        }
        kc_pause_until(now + SAMPLE_PAUSE);
    }
    /* stopped: finish the line with what was measured */
    if (status == 0) {
        if (mode == KC_MODE_LATENCY && tty) {
            putchar('\n');
        } else if (mode == KC_MODE_LATENCY) {
            print_figures(&total);
            putchar('\n');
        } else if (mode == KC_MODE_LATENCY_HISTORY && range.count > 0) {
            if (tty)
                printf("\r\033[2K");
            print_figures(&range);
            printf(" -- %.2f seconds range\n", (kt_clock_ns() - range_start) / 1e9);
        } else if (mode == KC_MODE_LATENCY_DIST && range.count > 0) {
            print_dist(&range, color);
        }
        fflush(stdout);
    }
    c->stop = NULL;
    kt_free(args);
    return status;
}
