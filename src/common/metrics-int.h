/*
 * metrics-int.h - the metrics endpoint's HTTP request parser, declared for
 * the white-box tests (tests/unit/test-metrics.c).
 */
#ifndef KETTLE_METRICS_INT_H
#define KETTLE_METRICS_INT_H

#include <stdbool.h>
#include <stddef.h>

/* What a request head asks for. */
typedef struct kt__http_req {
    int status;      /* the answer: 200, 400, 404, 405 or 505 */
    bool head;       /* the method was HEAD (answer without a body) */
} kt__http_req;

/*
 * Look for the blank line that ends a request head in data[0..len). The
 * search resumes where the previous call on the same (grown) data left
 * off: *scanned holds that position, 0 at first. Returns the length of the
 * head including its blank line, or 0 while it is incomplete.
 */
size_t kt__http_head_end(const char *data, size_t len, size_t *scanned);

/* Judge a whole head (as delimited by kt__http_head_end): request line
 * "METHOD TARGET HTTP/1.x", then "Name: value" lines; CRLF or LF line
 * ends. GET and HEAD of /metrics (any query string, origin or absolute
 * form) are 200; another path 404; another method on /metrics 405; a
 * version other than 1.x 505; anything malformed 400. */
void kt__http_parse(const char *head, size_t len, kt__http_req *req);

#endif
