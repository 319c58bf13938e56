/*
 * fuzz-resp-request.c - libFuzzer target for the request parser.
 *
 * The input is parsed as a pipeline of requests under the default limits
 * and under tight ones. For each request it checks what a server relies
 * on: the parse is the same whichever way the bytes were split (every
 * prefix gives INCOMPLETE, or the same error), arguments lie inside the
 * message or the scratch buffer, and re-encoding the arguments parses back
 * to the same ones (byte for byte the same message, for multibulk input).
 *
 * Then the whole input is fed four ways, as hiredis's fuzzer does: whole,
 * byte by byte, split at random points, and split at random points with
 * the unconsumed bytes moved to a new buffer before every call. The four
 * give the same requests, the same bytes consumed and the same end (error
 * text, or what is left incomplete), and fed byte by byte the parser
 * examines at most a few bytes per byte of input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <kettle/resp.h>
#include "fuzz.h"

static bool inside(const char *p, size_t len, const char *lo, size_t span)
{
    return len == 0 || (lo != NULL && p >= lo && p <= lo + span && len <= (size_t)(lo + span - p));
}

static void *req_open(void)
{
    kt_resp_req *req = calloc(1, sizeof *req);
    CHECK(req != NULL);
    return req;
}

static uint64_t req_close(void *state)
{
    kt_resp_req *req = state;
    uint64_t examined = req->examined;
    kt_resp_req_free(req);
    free(req);
    return examined;
}

static ssize_t req_parse(void *state, const char *p, size_t n, const kt_resp_limits *lim,
                         kt_buf *out, const char **err)
{
    kt_resp_req *req = state;
    ssize_t r = kt_resp_parse_request(p, n, lim, req, err);
    if (r <= 0) {
        CHECK(req->argc == 0);
    } else if (out) {
        kt_out o = kt_buf_out(out);
        CHECK(kt_resp_command(&o, req->argc, req->argv) == 0);
    }
    return r;
}

/* Arguments lie inside the message or the scratch buffer, and the
 * arguments re-encoded parse back to the same ones (to the same bytes,
 * for multibulk input). */
static void req_check(void *state, const char *p, size_t r, const kt_resp_limits *lim)
{
    const kt_resp_req *req = state;
    kt_resp_req again = { 0 };
    kt_buf enc = { 0 };
    kt_out o = kt_buf_out(&enc);
    const char *err2 = NULL;
    (void)lim;

    for (size_t i = 0; i < req->argc; i++)
        CHECK(inside(req->argv[i].p, req->argv[i].len, p, r) ||
              inside(req->argv[i].p, req->argv[i].len, req->scratch, req->scratch_cap));
    CHECK(kt_resp_command(&o, req->argc, req->argv) == 0);
    CHECK(kt_resp_parse_request(enc.data, enc.len, NULL, &again, &err2) == (ssize_t)enc.len);
    CHECK(again.argc == req->argc);
    for (size_t i = 0; i < req->argc; i++) {
        CHECK(again.argv[i].len == req->argv[i].len);
        CHECK(req->argv[i].len == 0 ||
              memcmp(again.argv[i].p, req->argv[i].p, req->argv[i].len) == 0);
    }
    if (p[0] == '*' && req->argc > 0)
        CHECK(enc.len == r && memcmp(enc.data, p, enc.len) == 0);
    kt_resp_req_free(&again);
    kt_buf_free(&enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const fuzz_target request = { req_open, req_close, req_parse, req_check };
    return fuzz_one(&request, data, size);
}
