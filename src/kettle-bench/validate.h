/*
 * validate.h - does a reply answer its request? kettle's databases answer
 * GET n with the bulk n, so every value kettle-bench asks for has a known
 * right answer (see kb_check in template.h).
 */
#ifndef KB_VALIDATE_H
#define KB_VALIDATE_H

#include <kettle/resp.h>
#include "template.h"

typedef enum kb_verdict {
    KB_V_OK = 0,
    KB_V_MISMATCH,  /* a reply, but not the right one: a wrong value, or the wrong shape */
    KB_V_ERROR,     /* an error reply (counted by its text) */
    KB_V_PARTIAL,   /* an array holding error elements (e.g. an MGET whose fetch
                     * of some keys failed), every other element right */
} kb_verdict;

/* Judge reply r to template t sent with placeholder values vals. scratch
 * holds at least t->maxlen bytes (the expected values are rendered there).
 * A wrong value anywhere makes a mismatch, even beside error elements:
 * "mismatch" is kept for data that is wrong. */
kb_verdict kb_validate(const kb_template *t, const uint64_t *vals, const kt_resp_reply *r,
                       char *scratch);

/* One line for a log: the request as sent and the reply (shortened), into
 * buf. Returns buf. */
const char *kb_describe(const kb_template *t, const uint64_t *vals, const kt_resp_reply *r,
                        char *scratch, char *buf, size_t size);

#endif
