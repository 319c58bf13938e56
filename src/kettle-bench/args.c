/*
 * args.c - kettle-bench's command line: defaults, parsing, checks, --help.
 */
#include "config.h"
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "bench.h"

static void usage(FILE *f)
{
    fprintf(f,
"Usage: kettle-bench [OPTIONS] [-- COMMAND ARG...]\n"
"       kettle-bench --plot REPORT.json... --svg FILE\n"
"Load a kettle (or any RESP) server, check every reply, and report\n"
"throughput and latency percentiles.\n"
"\n"
"Target:\n"
"  -h HOST            server host name or address (default 127.0.0.1)\n"
"  -p PORT            server port (default 7379)\n"
"  -s SOCKET          a unix socket instead of HOST:PORT\n"
"\n"
"Load:\n"
"  -c CONNS           connections (default 50)\n"
"  -P PIPELINE        requests in flight per connection (default 1)\n"
"  -n COUNT           measured requests (default 100000; 10k, 2m allowed)\n"
"  -d DURATION        measure for a time instead: 10 (seconds), 500ms, 2m\n"
"  -t THREADS         threads, one reactor each; connections are shared out\n"
"                     (default 1)\n"
"      --rate R       open loop: R requests/s over all connections, each sent\n"
"                     at its intended time; latency counts from that time, so\n"
"                     queueing behind a slow server shows (coordinated\n"
"                     omission corrected). Default: closed loop, each\n"
"                     connection sends as soon as a reply frees a slot.\n"
"      --warmup D     run D before measuring (default 0)\n"
"      --ramp D       open the connections evenly over D (default 0)\n"
"      --timeout D    a request unanswered for D counts as a timeout, with those\n"
"                     pipelined behind it, and its connection is reset and\n"
"                     reopened; also bounds connecting\n"
"                     (default 10s; 0 = no limit on requests, 10s to connect)\n"
"  -r KEYSPACE        placeholders take values in [0, KEYSPACE) (default 1000)\n"
"      --zipf S       the exponent of __zipf_int__'s keys: key i comes with\n"
"                     probability proportional to 1/(i+1)^S, so key 0 is the\n"
"                     hottest (default 0.99; above 0)\n"
"      --seed N       random seed (default: from the clock; printed in --json)\n"
"      --io NAME      I/O backend: auto, io_uring, epoll, libevent\n"
"\n"
"Commands:\n"
"  -- COMMAND ARG...  the command to send (default: GET __rand_int__).\n"
"                     __rand_int__ becomes a random key, __zipf_int__ a\n"
"                     Zipf-distributed one (hot keys: see --zipf),\n"
"                     __seq_int__ the next of 0, 1, 2, ...; each may sit\n"
"                     inside an argument (k:__seq_int__) and is a plain\n"
"                     decimal (redis-benchmark pads its __rand_int__ to 12\n"
"                     digits)\n"
"      --mix SPEC     a weighted mix instead, items separated by commas, each\n"
"                     COMMAND ARG...[:WEIGHT] (weight 1 when left out):\n"
"                       --mix 'GET __rand_int__:8,MGET __rand_int__ __rand_int__:2'\n"
"                     Arguments are split as kettle-cli splits them: quote one\n"
"                     holding a blank or comma, or ending in :DIGITS (\"a:1\").\n"
"                     --mix may be given several times.\n"
"\n"
"Checks and output:\n"
"      --no-validate  only count error replies (and check PING is answered\n"
"                     PONG): for servers other than kettled and kettle-db.\n"
"                     By default GET n must answer the bulk n and MGET the\n"
"                     array of its keys; PING x and ECHO x must echo x.\n"
"      --max-errors N exit 1 when errors (mismatches, error replies, timeouts,\n"
"                     connection failures) exceed N (default 0)\n"
"  -q, --quiet        no progress line (it is printed each second on stderr\n"
"                     only when stderr is a terminal)\n"
"      --json FILE    the report, the histogram and the parameters as JSON\n"
"                     (FILE - for stdout; the text report then goes to stderr)\n"
"      --csv          the report as CSV on stdout instead of text\n"
"      --hgrm FILE    the latency distribution in HdrHistogram's percentile\n"
"                     format (.hgrm: what HdrHistogram's plotter and wrk2\n"
"                     users read), values in ms\n"
"      --svg FILE     a picture (SVG): latency by percentile on a \"1 in N\"\n"
"                     scale, and requests/s over time\n"
"      --plot         draw saved runs instead of running one:\n"
"                       kettle-bench --plot a.json b.json --svg out.svg\n"
"      --help         this text\n"
"      --version      the version\n"
"\n"
"Exit status: 0; 1 when errors exceed --max-errors or nothing was answered;\n"
"2 on a usage error.\n");
}

/* "100000", "100k", "2m" (x1000, x1000000). */
/* A number >= 0 with an optional k or m suffix (thousands, millions). */
static int parse_scaled(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0 || !isfinite(v) || v < 0)
        return -EINVAL;
    if (*end == 'k' || *end == 'K')
        v *= 1e3, end++;
    else if (*end == 'm' || *end == 'M')
        v *= 1e6, end++;
    if (*end != '\0')
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_count(const char *s, uint64_t *out)
{
    double v;
    if (parse_scaled(s, &v) < 0 || v > 1e18 || v != floor(v))
        return -EINVAL;
    *out = (uint64_t)v;
    return 0;
}

static int parse_rate(const char *s, double *out)
{
    double v;
    if (parse_scaled(s, &v) < 0 || v <= 0 || v > 1e9)
        return -EINVAL;
    *out = v;
    return 0;
}

static int bad(const char *opt, const char *val, const char *expect)
{
    fprintf(stderr, "kettle-bench: invalid %s '%s': %s\n", opt, val, expect);
    return -1;
}

/* Resolve the target into cfg->addr. */
static int resolve(kb_config *cfg)
{
    if (cfg->path != NULL) {
        char spec[300];
        snprintf(spec, sizeof(spec), "unix:%s", cfg->path);
        if (kt_addr_parse(spec, &cfg->addr) < 0) {
            fprintf(stderr, "kettle-bench: invalid socket path '%s'\n", cfg->path);
            return -1;
        }
        snprintf(cfg->addr_text, sizeof(cfg->addr_text), "%s", cfg->path);
        return 0;
    }
    char svc[16];
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
    snprintf(svc, sizeof(svc), "%d", cfg->port);
    int rc = getaddrinfo(cfg->host, svc, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "kettle-bench: cannot resolve '%s': %s\n", cfg->host, gai_strerror(rc));
        return -1;
    }
    memcpy(&cfg->addr.ss, res->ai_addr, res->ai_addrlen);
    cfg->addr.len = res->ai_addrlen;
    freeaddrinfo(res);
    kt_addr_format(&cfg->addr, cfg->addr_text, sizeof(cfg->addr_text));
    return 0;
}

int kb_parse_args(kb_config *cfg, int argc, char **argv)
{
    enum { O_HELP = 256, O_VERSION, O_RATE, O_WARMUP, O_RAMP, O_TIMEOUT, O_SEED, O_MIX,
           O_NOVALIDATE, O_MAXERR, O_JSON, O_CSV, O_IO, O_ZIPF, O_HGRM, O_SVG, O_PLOT };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, O_HELP },
        { "version", no_argument, NULL, O_VERSION },
        { "rate", required_argument, NULL, O_RATE },
        { "warmup", required_argument, NULL, O_WARMUP },
        { "ramp", required_argument, NULL, O_RAMP },
        { "timeout", required_argument, NULL, O_TIMEOUT },
        { "seed", required_argument, NULL, O_SEED },
        { "mix", required_argument, NULL, O_MIX },
        { "no-validate", no_argument, NULL, O_NOVALIDATE },
        { "max-errors", required_argument, NULL, O_MAXERR },
        { "json", required_argument, NULL, O_JSON },
        { "csv", no_argument, NULL, O_CSV },
        { "io", required_argument, NULL, O_IO },
        { "zipf", required_argument, NULL, O_ZIPF },
        { "hgrm", required_argument, NULL, O_HGRM },
        { "svg", required_argument, NULL, O_SVG },
        { "plot", no_argument, NULL, O_PLOT },
        { "quiet", no_argument, NULL, 'q' },
        { "host", required_argument, NULL, 'h' },
        { "port", required_argument, NULL, 'p' },
        { "socket", required_argument, NULL, 's' },
        { "connections", required_argument, NULL, 'c' },
        { "pipeline", required_argument, NULL, 'P' },
        { "requests", required_argument, NULL, 'n' },
        { "duration", required_argument, NULL, 'd' },
        { "threads", required_argument, NULL, 't' },
        { "keyspace", required_argument, NULL, 'r' },
        { NULL, 0, NULL, 0 },
    };
    bool seed_given = false, have_n = false, have_d = false, plot = false;
    double zipf_s = KB_ZIPF_DEFAULT;
    const char *why = NULL;
    uint64_t u;
    int opt;

    memset(cfg, 0, sizeof(*cfg));
    cfg->host = "127.0.0.1";
    cfg->port = KB_DEFAULT_PORT;
    cfg->conns = KB_DEFAULT_CONNS;
    cfg->pipeline = 1;
    cfg->threads = 1;
    cfg->keyspace = KB_DEFAULT_KEYSPACE;
    cfg->timeout_ns = KB_DEFAULT_TIMEOUT;
    cfg->validate = true;
    cfg->io = KT_IO_AUTO;

    opterr = 1;
    while ((opt = getopt_long(argc, argv, "h:p:s:c:P:n:d:t:r:q", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            cfg->host = optarg;
            break;
        case 'p':
            if (parse_count(optarg, &u) < 0 || u < 1 || u > 65535)
                return bad("-p", optarg, "a port from 1 to 65535");
            cfg->port = (int)u;
            break;
        case 's':
            cfg->path = optarg;
            break;
        case 'c':
            if (parse_count(optarg, &u) < 0 || u < 1 || u > KB_MAX_CONNS)
                return bad("-c", optarg, "1 to 1000000 connections");
            cfg->conns = (unsigned)u;
            break;
        case 'P':
            if (parse_count(optarg, &u) < 0 || u < 1 || u > KB_MAX_PIPELINE)
                return bad("-P", optarg, "a depth from 1 to 65536");
            cfg->pipeline = (unsigned)u;
            break;
        case 'n':
            if (parse_count(optarg, &u) < 0 || u < 1)
                return bad("-n", optarg, "a positive count (100000, 100k, 2m)");
            cfg->count = u;
            have_n = true;
            break;
        case 'd':
            if (kt_parse_duration(optarg, KT_SEC(1), &u) < 0 || u == 0)
                return bad("-d", optarg, "a positive duration (10, 500ms, 2m)");
            cfg->duration_ns = u;
            have_d = true;
            break;
        case 't':
            if (parse_count(optarg, &u) < 0 || u < 1 || u > KB_MAX_THREADS)
                return bad("-t", optarg, "1 to 256 threads");
            cfg->threads = (unsigned)u;
            break;
        case 'r':
            if (parse_count(optarg, &u) < 0 || u < 1)
                return bad("-r", optarg, "a positive keyspace size");
            cfg->keyspace = u;
            break;
        case 'q':
            cfg->quiet = true;
            break;
        case O_RATE:
            if (parse_rate(optarg, &cfg->rate) < 0)
                return bad("--rate", optarg, "requests per second, above 0 (50000, 50k)");
            break;
        case O_WARMUP:
            if (kt_parse_duration(optarg, KT_SEC(1), &cfg->warmup_ns) < 0)
                return bad("--warmup", optarg, "a duration (2, 500ms)");
            break;
        case O_RAMP:
            if (kt_parse_duration(optarg, KT_SEC(1), &cfg->ramp_ns) < 0)
                return bad("--ramp", optarg, "a duration (3, 500ms)");
            break;
        case O_TIMEOUT:
            if (kt_parse_duration(optarg, KT_SEC(1), &cfg->timeout_ns) < 0)
                return bad("--timeout", optarg, "a duration (10, 500ms; 0 = none)");
            break;
        case O_SEED:
            if (kt_parse_i64(optarg, strlen(optarg), (int64_t *)&u) < 0 || (int64_t)u < 0)
                return bad("--seed", optarg, "a non-negative integer");
            cfg->seed = u;
            seed_given = true;
            break;
        case O_MIX:
            if (kb_mix_parse(&cfg->mix, optarg, &why) < 0) {
                fprintf(stderr, "kettle-bench: invalid --mix '%s': %s\n", optarg, why);
                return -1;
            }
            break;
        case O_NOVALIDATE:
            cfg->validate = false;
            break;
        case O_MAXERR:
            if (parse_count(optarg, &cfg->max_errors) < 0)
                return bad("--max-errors", optarg, "a non-negative count");
            break;
        case O_JSON:
            cfg->json_path = optarg;
            break;
        case O_CSV:
            cfg->csv = true;
            break;
        case O_HGRM:
            cfg->hgrm_path = optarg;
            break;
        case O_SVG:
            cfg->svg_path = optarg;
            break;
        case O_PLOT:
            plot = true;
            break;
        case O_ZIPF: {
            char *end;
            errno = 0;
            zipf_s = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || errno != 0 || !(zipf_s > 0 && zipf_s <= KB_ZIPF_MAX))
                return bad("--zipf", optarg, "an exponent above 0 and up to 100 (0.99, 1.2)");
            break;
        }
        case O_IO:
            if (kt_io_parse(optarg, &cfg->io) < 0)
                return bad("--io", optarg, "auto, io_uring, epoll or libevent");
            break;
        case O_HELP:
            usage(stdout);
            return 1;
        case O_VERSION:
            printf("kettle-bench %s\n", KT_VERSION_STRING);
            return 1;
        default:
            fprintf(stderr, "Try 'kettle-bench --help'.\n");
            return -1;
        }
    }
    if (plot) {
        cfg->plot = argv + optind;
        cfg->nplot = (size_t)(argc - optind);
        if (cfg->nplot == 0 || cfg->svg_path == NULL) {
            fprintf(stderr, "kettle-bench: --plot needs JSON reports and --svg FILE "
                            "(kettle-bench --plot a.json b.json --svg out.svg)\n");
            return -1;
        }
        if (cfg->hgrm_path != NULL && cfg->nplot > 1) {
            fprintf(stderr, "kettle-bench: --hgrm writes one run: give one report with it\n");
            return -1;
        }
        return 0;
    }
    if (have_n && have_d) {
        fprintf(stderr, "kettle-bench: -n and -d exclude each other\n");
        return -1;
    }
    if (!have_n && !have_d)
        cfg->count = KB_DEFAULT_COUNT;
    if (optind < argc) {
        if (cfg->mix.n > 0) {
            fprintf(stderr, "kettle-bench: give either --mix or a command after --, not both\n");
            return -1;
        }
        size_t n = (size_t)(argc - optind);
        size_t *lens = kt_calloc(n, sizeof(*lens));
        if (lens == NULL)
            return -1;
        for (size_t i = 0; i < n; i++)
            lens[i] = strlen(argv[optind + (int)i]);
        int rc = kb_mix_add(&cfg->mix, n, argv + optind, lens, 1, &why);
        kt_free(lens);
        if (rc < 0) {
            fprintf(stderr, "kettle-bench: invalid command: %s\n", why);
            return -1;
        }
    }
    if (cfg->mix.n == 0) {
        char *def[] = { "GET", "__rand_int__" };
        size_t lens[] = { 3, 12 };
        if (kb_mix_add(&cfg->mix, 2, def, lens, 1, &why) < 0)
            return -1;
    }
    kb_mix_set_validate(&cfg->mix, cfg->validate);
    kb_zipf_init(&cfg->zipf, cfg->keyspace, zipf_s); /* both checked above */
    if (cfg->threads > cfg->conns)
        cfg->threads = cfg->conns;
    if (!seed_given) {
        kt_rng r;
        cfg->seed = kt_rng_seed_random(&r);
    }
    cfg->progress = !cfg->quiet && isatty(STDERR_FILENO);
    return resolve(cfg);
}

void kb_config_free(kb_config *cfg)
{
    kb_mix_free(&cfg->mix);
}
