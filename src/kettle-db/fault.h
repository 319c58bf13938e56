/*
 * fault.h - kettle-db's fault injection: what can go wrong, how likely, and
 * the FAULT SET grammar shared by the `fault` option and the admin command.
 *
 *   FAULT SET <name> <probability> [args]
 *
 * Per-request faults (rolled once for each GET or MGET when it arrives; one
 * uniform draw walks the probabilities in the order below, so with a sum
 * <= 1 each fault happens with exactly its probability and at most one
 * applies). A fault acts when the request's reply is due, i.e. after its
 * delay and after every earlier reply on the connection has been written:
 *   error [MESSAGE]        an error reply instead ("-ERR injected fault")
 *   stall                  never answered; the replies behind it wait forever
 *   close                  earlier replies are sent, then FIN, no reply
 *   reset                  earlier replies are sent, then RST, no reply
 *   garbage [N]            N bytes (default 16) that are not RESP: the first
 *                          is '@', no RESP type; the rest are random
 *   cut [K]                exactly K bytes (default 3) of the reply, then the
 *                          connection stalls (K is capped at the reply's
 *                          length minus one so the reply is always cut)
 *   trickle [N [INTERVAL]] the reply in slices of N bytes (default 1) with
 *                          INTERVAL (default 10ms) between slices
 * Whole-server faults:
 *   refuse                 each new connection is refused: at probability 1
 *                          the listening sockets are closed (connect gets
 *                          ECONNREFUSED) until the fault is cleared; below 1
 *                          the connection is accepted and reset at once
 *   stop-reading [all]     each new connection is, with the probability,
 *                          accepted but never read until the fault is
 *                          cleared; with "all", existing connections too
 *                          (but not the one that sets the fault)
 *   slow-accept [PAUSE]    after an accept, with the probability, accepting
 *                          pauses for PAUSE (default 100ms)
 * Faults never apply to PING, ECHO, INFO, DBSIZE, QUIT or the admin
 * commands, so a scenario can be steered and inspected while it runs.
 */
#ifndef KDB_FAULT_H
#define KDB_FAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "rng.h"

typedef enum kdb_fault_kind {
    KDB_F_ERROR = 0,
    KDB_F_STALL,
    KDB_F_CLOSE,
    KDB_F_RESET,
    KDB_F_GARBAGE,
    KDB_F_CUT,
    KDB_F_TRICKLE,
    KDB_F_NREQUEST,             /* the per-request faults end here */
    KDB_F_REFUSE = KDB_F_NREQUEST,
    KDB_F_STOP_READING,
    KDB_F_SLOW_ACCEPT,
    KDB_F_COUNT,
    KDB_F_NONE = 255,
} kdb_fault_kind;

typedef struct kdb_fault {
    double prob;       /* 0 = off */
    uint32_t n;        /* garbage bytes, cut K, trickle slice; stop-reading: 1 = all */
    uint64_t ns;       /* trickle interval, slow-accept pause */
    char msg[128];     /* error: the reply's text, without '-' and CRLF */
} kdb_fault;

typedef struct kdb_faults {
    kdb_fault f[KDB_F_COUNT];
    double request_total; /* sum of per-request probabilities (0: fast path) */
} kdb_faults;

/* Every fault off. */
void kdb_faults_init(kdb_faults *fs);
/* Parse "name probability [args]" given as words into *kind and *out.
 * 0, or -EINVAL with *why pointing to static text. */
int kdb_fault_parse(const char *const *words, size_t n, kdb_fault_kind *kind, kdb_fault *out,
                    const char **why);
/* The same from one string ("stall 0.1"), words separated by blanks. */
int kdb_fault_parse_line(const char *line, kdb_fault_kind *kind, kdb_fault *out, const char **why);
/* Install f as fault kind (prob 0 turns it off). */
void kdb_faults_set(kdb_faults *fs, kdb_fault_kind kind, const kdb_fault *f);
/* Roll the per-request faults once: a kind below KDB_F_NREQUEST, or KDB_F_NONE. */
kdb_fault_kind kdb_faults_roll(const kdb_faults *fs, kt_rng *r);
/* "error", "stop-reading", ... */
const char *kdb_fault_name(kdb_fault_kind kind);
/* Describe fault kind as "cut 0.5 3" into buf (FAULT LIST, INFO). */
const char *kdb_fault_describe(kdb_fault_kind kind, const kdb_fault *f, char *buf, size_t size);

/* The list of fault names and their arguments, for --help and errors. */
#define KDB_FAULT_USAGE \
    "error [MESSAGE] | stall | close | reset | garbage [N] | cut [K] | " \
    "trickle [N [INTERVAL]] | refuse | stop-reading [all] | slow-accept [PAUSE]"

#endif
