/*
 * kettle/resp.h - the RESP2 codec: a stateless parser over the caller's
 * buffer (requests, replies) and an encoder writing into an output sink
 * (kettle/buf.h).
 *
 * The parsers have the shape of picohttpparser: each call looks at the
 * bytes the caller has, keeps no state between calls, and returns the
 * number of bytes one message took (> 0), KT_RESP_INCOMPLETE (call again
 * with more bytes: the same prefix is parsed again from its start) or
 * KT_RESP_ERROR with a reason. A result never depends on how the bytes
 * were split: a prefix of a message gives KT_RESP_INCOMPLETE or the very
 * error the whole message gives.
 *
 * The request parser's reasons are Redis's texts, so a server answers
 * "-ERR Protocol error: <reason>" exactly as redis-server does and closes.
 */
#ifndef KETTLE_RESP_H
#define KETTLE_RESP_H

#include <stdarg.h>
#include <sys/types.h>
#include <kettle/common.h>
#include <kettle/buf.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KT_RESP_ERROR      (-1) /* malformed input; *err says why */
#define KT_RESP_INCOMPLETE (-2) /* a prefix of a message: need more bytes */

/* Longest '*' or '$' header line, type byte included, before the line is
 * refused as "too big mbulk/bulk count string" (Redis waits for 64 KiB;
 * no valid length is longer than 21 bytes). */
#define KT_RESP_MAX_HEADER 32
/* Reply nesting is tracked on a fixed stack: max_depth is capped here. */
#define KT_RESP_MAX_DEPTH 64

typedef struct kt_resp_limits {
    size_t max_inline; /* longest inline command line, or +/- reply line (64 KiB) */
    size_t max_bulk;   /* longest bulk string (512 MiB, redis proto-max-bulk-len) */
    size_t max_args;   /* most elements of a request or reply array (1024*1024) */
    size_t max_depth;  /* deepest array nesting in a reply (32; at most KT_RESP_MAX_DEPTH) */
} kt_resp_limits;

/* Redis's defaults (see above). */
extern const kt_resp_limits kt_resp_default_limits;

/* ---- requests ------------------------------------------------------------ */

/* One argument: points into the caller's buffer, or into req->scratch for
 * an inline argument that had quotes. Binary safe; not NUL-terminated. */
typedef struct kt_resp_arg {
    const char *p;
    size_t len;
} kt_resp_arg;

/* A parsed request. Zero-initialise it ({0}), reuse it for every request
 * of a connection (its arrays only grow), and kt_resp_req_free() it. */
typedef struct kt_resp_req {
    kt_resp_arg *argv;  /* argc arguments (kt_realloc'd, cap entries) */
    size_t argc, cap;
    char *scratch;      /* unquoted copies of quoted inline arguments */
    size_t scratch_cap;
} kt_resp_req;

/*
 * Parse one request at the start of buf: a RESP array of bulk strings
 * ("*2\r\n$3\r\nGET\r\n$1\r\n1\r\n") or, when buf does not start with '*',
 * an inline command line ("GET 1\r\n": split on blanks, with Redis's
 * "double quotes" (\n \r \t \b \a \xHH escapes) and 'single quotes'). An
 * inline line ends at \n; a \r before it is dropped.
 *
 * Returns the bytes consumed with req->argv filled, KT_RESP_INCOMPLETE,
 * or KT_RESP_ERROR with *err set to a static string (Redis's text, e.g.
 * "invalid bulk length"; "out of memory" if argv could not grow). An
 * empty line, "*0" and "*-1" are consumed with argc 0: skip them. argv
 * stays valid until the next call with req or until buf changes.
 * lim NULL means kt_resp_default_limits; err may be NULL.
 */
ssize_t kt_resp_parse_request(const char *buf, size_t len, const kt_resp_limits *lim,
                              kt_resp_req *req, const char **err);

/* Free req's arrays and zero it. */
void kt_resp_req_free(kt_resp_req *req);

/* ---- replies ------------------------------------------------------------- */

enum {
    KT_RESP_STRING = '+',      /* simple string: p, len */
    KT_RESP_ERROR_REPLY = '-', /* error: p, len (without the '-') */
    KT_RESP_INTEGER = ':',     /* i; p, len hold the digits */
    KT_RESP_BULK = '$',        /* p, len */
    KT_RESP_ARRAY = '*',       /* n elements follow in preorder */
    KT_RESP_NIL = '_',         /* $-1 or *-1; i is '$' or '*' */
};

/* One value of a reply. */
typedef struct kt_resp_node {
    int type;        /* KT_RESP_STRING ... KT_RESP_NIL */
    const char *p;   /* into the caller's buffer; NULL for arrays and nil */
    size_t len;
    int64_t i;       /* integer value */
    size_t n;        /* array: element count */
} kt_resp_node;

/* A parsed reply: nodes[0] is the top value, its elements (and theirs)
 * follow in preorder. Zero-initialise, reuse, kt_resp_reply_free(). */
typedef struct kt_resp_reply {
    kt_resp_node *nodes; /* count nodes (kt_realloc'd, cap entries) */
    size_t count, cap;
} kt_resp_reply;

/*
 * Parse one reply of any RESP2 type at the start of buf into out.
 * Returns the bytes consumed, KT_RESP_INCOMPLETE or KT_RESP_ERROR with *err
 * set (a static string: "invalid bulk length", "reply nested too deeply",
 * "out of memory", ...). Nodes point into buf: valid while buf is. lim
 * NULL means the defaults; max_args bounds array sizes; err may be NULL.
 */
ssize_t kt_resp_parse_reply(const char *buf, size_t len, const kt_resp_limits *lim,
                            kt_resp_reply *out, const char **err);

/* Where the reply at the start of buf ends, without building nodes (to
 * skip a reply nobody waits for): the same results as kt_resp_parse_reply
 * but never "out of memory". */
ssize_t kt_resp_reply_len(const char *buf, size_t len, const kt_resp_limits *lim,
                          const char **err);

/* Free out's nodes and zero it. */
void kt_resp_reply_free(kt_resp_reply *out);

/* ---- encoder ------------------------------------------------------------- */
/*
 * Each writes one RESP value into o and returns 0 or -ENOMEM. A value is
 * written with one reservation unless it is longer than 8 KiB: bulks that
 * large go out in pieces of at most 8 KiB, so no reservation is larger
 * than 8 KiB + 32 bytes (only a simple string or error text is reserved
 * whole, whatever its length), and -ENOMEM may leave part of a large
 * value written (the connection is beyond saving then anyway).
 */

/* +s\r\n (CR and LF in s are written as spaces). */
int kt_resp_simple(kt_out *o, const char *s);
/* -<formatted text>\r\n, CR and LF in the text written as spaces. The
 * caller writes the code: kt_resp_error(o, "ERR Protocol error: %s", e).
 * Also -EINVAL if vsnprintf fails on fmt. */
int kt_resp_error(kt_out *o, const char *fmt, ...) KT_PRINTF(2, 3);
/* The same with a va_list. */
int kt_resp_verror(kt_out *o, const char *fmt, va_list ap) KT_PRINTF(2, 0);
/* :v\r\n */
int kt_resp_int(kt_out *o, int64_t v);
/* $n\r\n<n bytes>\r\n (p may be NULL when n is 0). */
int kt_resp_bulk(kt_out *o, const void *p, size_t n);
/* A bulk string holding v in decimal ("$3\r\n-42\r\n"), without snprintf. */
int kt_resp_bulk_i64(kt_out *o, int64_t v);
/* $-1\r\n (the null bulk string). */
int kt_resp_nil(kt_out *o);
/* *-1\r\n (the null array). */
int kt_resp_nil_array(kt_out *o);
/* *n\r\n: the caller writes the n elements next. */
int kt_resp_array(kt_out *o, size_t n);
/* A request: an array of argc bulk strings. */
int kt_resp_command(kt_out *o, size_t argc, const kt_resp_arg *argv);

#ifdef __cplusplus
}
#endif
#endif
