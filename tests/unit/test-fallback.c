/*
 * test-fallback.c - the io_uring fallback, for real: a seccomp filter makes
 * io_uring_setup(2) fail with EPERM (as container profiles and
 * kernel.io_uring_disabled do), then a server started with --io auto must
 * serve on epoll and log why, and one started with --io io_uring must stop
 * at start-up with a clear error.
 *
 * The server is kettle-db from the build tree when it is there, otherwise
 * this binary itself in --serve mode (the tiny RESP server of
 * ping-server.h, which answers PING and INFO). Either way the test asks INFO for io_backend.
 * A control run without the filter checks that auto picks io_uring when
 * the kernel allows it (reported, not required: io_uring may be off here).
 *
 *   test-fallback                     run the test (exit 0, 1, or 77 skip)
 *   test-fallback --serve [--listen ADDR] [--io NAME]
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#ifdef HAVE_SECCOMP
#include <seccomp.h>
#endif
#include <kettle/kettle.h>
#include "ping-server.h"

#define TF_DEADLINE_MS 20000 /* per step; generous for ASan on 2 busy cores */

/* ==== the tiny server ===================================================== */

static int tf_serve(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0", *io = "auto";
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--listen") == 0)
            listen = argv[i + 1];
        else if (strcmp(argv[i], "--io") == 0)
            io = argv[i + 1];
    }
    kt_loop_options opts = { 0 };
    return ping_serve("test-fallback", listen, io, &opts);
}

/* ==== the test driver ======================================================= */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct child {
    pid_t pid;
    int out;          /* its stdout+stderr */
    char log[16384];  /* everything it printed so far */
    size_t loglen;
};

/* Started children, killed at exit whatever happens. */
static pid_t started[8];
static int nstarted;

static void kill_children(void)
{
    for (int i = 0; i < nstarted; i++) {
        if (started[i] > 0 && kill(started[i], 0) == 0) {
            kill(started[i], SIGKILL);
            waitpid(started[i], NULL, 0);
        }
    }
}

/* fork; in the child: optionally the seccomp filter, then exec argv with
 * KETTLE_IO unset (it would override --io auto). */
static int spawn(struct child *c, char *const argv[], bool filter)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        unsetenv("KETTLE_IO");
#ifdef HAVE_SECCOMP
        if (filter) {
            scmp_filter_ctx f = seccomp_init(SCMP_ACT_ALLOW);
            if (f == NULL ||
                seccomp_rule_add(f, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(io_uring_setup), 0) < 0 ||
                seccomp_load(f) < 0) {
                fprintf(stderr, "test-fallback: cannot install the seccomp filter\n");
                _exit(126);
            }
            seccomp_release(f);
        }
#else
        (void)filter;
#endif
        execv(argv[0], argv);
        fprintf(stderr, "test-fallback: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(p[1]);
    c->pid = pid;
    c->out = p[0];
    c->loglen = 0;
    c->log[0] = 0;
    if (nstarted < (int)(sizeof(started) / sizeof(started[0])))
        started[nstarted++] = pid;
    return 0;
}

/* Read what the child printed, waiting up to ms. false at EOF. */
static bool child_read(struct child *c, int ms)
{
    struct pollfd pfd = { .fd = c->out, .events = POLLIN };
    if (poll(&pfd, 1, ms) <= 0)
        return true;
    size_t room = sizeof(c->log) - 1 - c->loglen;
    if (room == 0)
        return true;
    ssize_t n = read(c->out, c->log + c->loglen, room);
    if (n <= 0)
        return false;
    c->loglen += (size_t)n;
    c->log[c->loglen] = 0;
    return true;
}

/* Wait for "listening on HOST:PORT"; the port, or -1 on timeout/exit. */
static int wait_listening(struct child *c)
{
    uint64_t deadline = now_ms() + TF_DEADLINE_MS;
    while (now_ms() < deadline) {
        const char *m = strstr(c->log, "listening on ");
        if (m) {
            const char *colon = NULL;
            for (const char *q = m + 13; *q && *q != '\n' && *q != ' '; q++)
                if (*q == ':')
                    colon = q;
            if (colon && strchr(colon, '\n'))
                return atoi(colon + 1);
        }
        if (!child_read(c, 100))
            return -1;
    }
    return -1;
}

/* Wait for the child's exit (SIGKILL at the deadline); its status. */
static int child_wait(struct child *c, int ms)
{
    uint64_t deadline = now_ms() + (uint64_t)ms;
    int status;
    for (;;) {
        pid_t r = waitpid(c->pid, &status, WNOHANG);
        if (r == c->pid)
            break;
        if (now_ms() >= deadline) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &status, 0);
            break;
        }
        child_read(c, 20);
    }
    while (child_read(c, 0) && c->loglen < sizeof(c->log) - 1) {
        struct pollfd pfd = { .fd = c->out, .events = POLLIN };
        if (poll(&pfd, 1, 0) <= 0)
            break;
    }
    close(c->out);
    return status;
}

/* Ask INFO over RESP; copy the io_backend value. 0 or -1. */
static int ask_backend(int port, char *backend, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = { .tv_sec = TF_DEADLINE_MS / 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    static const char req[] = "*1\r\n$4\r\nINFO\r\n";
    if (write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
        close(fd);
        return -1;
    }
    char buf[16384];
    size_t len = 0;
    int rc = -1;
    uint64_t deadline = now_ms() + TF_DEADLINE_MS;
    while (len < sizeof(buf) - 1 && now_ms() < deadline) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = 0;
        const char *m = strstr(buf, "io_backend:");
        if (m && strchr(m, '\n')) {
            size_t w = strcspn(m + 11, "\r\n");
            if (w >= size)
                w = size - 1;
            memcpy(backend, m + 11, w);
            backend[w] = 0;
            rc = 0;
            break;
        }
    }
    close(fd);
    return rc;
}

static int failures;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                    \
            printf(__VA_ARGS__);                                           \
            printf("\n");                                                  \
            failures++;                                                    \
        }                                                                  \
    } while (0)

static void show_log(const char *what, const struct child *c)
{
    printf("--- %s printed:\n%s---\n", what, c->log);
}

/* Start a server with --io io; with the filter if asked. Checks it serves
 * and returns what INFO says, after stopping it with SIGTERM. */
static int run_served(const char *server, bool self, const char *io, bool filter,
                      char *backend, size_t size, struct child *c)
{
    char *argv[8];
    int i = 0;
    argv[i++] = (char *)server;
    if (self)
        argv[i++] = "--serve";
    argv[i++] = "--listen";
    argv[i++] = "127.0.0.1:0";
    argv[i++] = "--io";
    argv[i++] = (char *)io;
    argv[i] = NULL;
    if (spawn(c, argv, filter) < 0)
        return -1;
    int port = wait_listening(c);
    int rc = -1;
    if (port > 0)
        rc = ask_backend(port, backend, size);
    kill(c->pid, SIGTERM);
    int status = child_wait(c, TF_DEADLINE_MS);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "%s --io %s%s did not exit cleanly on SIGTERM (status 0x%x)", server, io,
          filter ? " (filtered)" : "", status);
    CHECK(strstr(c->log, "Sanitizer") == NULL && strstr(c->log, "runtime error") == NULL,
          "sanitizer report from %s", server);
    return port > 0 ? rc : -1;
}

static int run_test(const char *self_path)
{
#ifndef HAVE_LIBURING
    printf("SKIP: io_uring backend not built (--without-liburing)\n");
    return 77;
#endif
#ifndef HAVE_SECCOMP
    printf("SKIP: libseccomp not found at configure time\n");
    return 77;
#endif
    atexit(kill_children);
    signal(SIGPIPE, SIG_IGN);

    /* kettle-db when built, else ourselves. */
    char server[4096];
    bool self = true;
    const char *b = getenv("KETTLE_BUILDDIR");
    const char *force_self = getenv("KETTLE_FALLBACK_SELF");
    snprintf(server, sizeof(server), "%s/kettle-db", b ? b : ".");
    if ((force_self == NULL || !*force_self) && access(server, X_OK) == 0)
        self = false;
    else
        snprintf(server, sizeof(server), "%s", self_path);
    printf("# server: %s%s\n", server, self ? " --serve" : "");

    struct child c;
    char backend[64] = "";

    /* Control: no filter. io_uring if this kernel allows it. */
    int rc = run_served(server, self, "auto", false, backend, sizeof(backend), &c);
    CHECK(rc == 0, "no INFO io_backend from the unfiltered server");
    printf("# unfiltered --io auto: io_backend:%s\n", backend);
    if (rc != 0)
        show_log("unfiltered server", &c);
    if (strcmp(backend, "io_uring") != 0)
        printf("# note: io_uring is not available here even without the filter\n");

    /* 1. Filtered, --io auto: serves on epoll and says why, once. */
    backend[0] = 0;
    rc = run_served(server, self, "auto", true, backend, sizeof(backend), &c);
    CHECK(rc == 0, "no INFO io_backend from the filtered server");
    CHECK(strcmp(backend, "epoll") == 0, "filtered --io auto serves on '%s', not epoll", backend);
    const char *why = strstr(c.log, "Operation not permitted");
    CHECK(why != NULL && strstr(c.log, "io_uring") != NULL,
          "the fallback was not logged with its cause (EPERM)");
    if (why)
        CHECK(strstr(why + 1, "Operation not permitted") == NULL, "the cause was logged more than once");
    printf("# filtered --io auto: io_backend:%s\n", backend);
    if (failures)
        show_log("filtered --io auto", &c);

    /* 2. Filtered, --io io_uring: a clear start-up error, no serving. */
    int before = failures;
    char *argv[8];
    int i = 0;
    argv[i++] = server;
    if (self)
        argv[i++] = "--serve";
    argv[i++] = "--listen";
    argv[i++] = "127.0.0.1:0";
    argv[i++] = "--io";
    argv[i++] = "io_uring";
    argv[i] = NULL;
    CHECK(spawn(&c, argv, true) == 0, "spawn");
    int status = child_wait(&c, TF_DEADLINE_MS);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 0,
          "forced io_uring under the filter did not fail at start-up (status 0x%x)", status);
    CHECK(strstr(c.log, "listening on") == NULL, "forced io_uring under the filter served anyway");
    CHECK(strstr(c.log, "io_uring") != NULL &&
              (strstr(c.log, "Operation not permitted") != NULL || strstr(c.log, "EPERM") != NULL),
          "the start-up error does not name io_uring and its cause");
    CHECK(strstr(c.log, "Sanitizer") == NULL, "sanitizer report from the forced run");
    printf("# filtered --io io_uring: exit status %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    if (failures > before)
        show_log("filtered --io io_uring", &c);

    printf(failures ? "FAILED (%d)\n" : "PASS\n", failures);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--serve") == 0)
        return tf_serve(argc, argv);
    /* /proc/self/exe: the real binary, not a libtool wrapper script. */
    (void)argv;
    return run_test("/proc/self/exe");
}
