/*
 * kettle/resp.h - the RESP2 codec: parsers that resume where they stopped
 * (requests, replies) over the caller's buffer, and an encoder writing into
 * an output sink (kettle/buf.h).
 *
 * A parse call looks at the bytes of one message at the start of the
 * caller's buffer and returns the number of bytes the message took (> 0),
 * KT_RESP_INCOMPLETE or KT_RESP_ERROR with a reason. The parser keeps its
 * place in a state object the caller owns, one per connection (kt_resp_req,
 * kt_resp_reply), so a message that arrives in many reads costs what it
 * weighs, as Redis's processMultibulkBuffer() and picohttpparser's last_len
 * do it:
 *
 *   - After KT_RESP_INCOMPLETE, call again with the same bytes from the
 *     start of the same message followed by more (the buffer may have moved:
 *     positions are kept as offsets). What was already parsed is not parsed
 *     again: a call looks again at no more than a few bytes it had seen (a
 *     line's type byte, a \r whose \n had not come), and a line is read
 *     once more when its end arrives (a header's digits, at most
 *     KT_RESP_MAX_HEADER bytes; an inline line, to split it).
 *   - To drop input in the middle of a message (a reconnect, a discarded
 *     buffer), call kt_resp_req_reset() / kt_resp_reply_reset() first.
 *   - Input shorter than what the state has already taken is taken as a new
 *     message (the state is reset): never a read out of bounds.
 *   - A complete message or an error leaves the state between messages.
 *
 * A result never depends on how the bytes were split or where they lie:
 * the bytes consumed, the arguments or nodes, and the error text are the
 * same fed whole, byte by byte or in any pieces (a prefix gives
 * KT_RESP_INCOMPLETE or the very error the whole message gives).
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

/*
 * A connection's request parser: the last request parsed, and the place
 * where an incomplete one stopped. One per connection: zero-initialise it
 * ({0}), pass it to every kt_resp_parse_request() of that connection, and
 * kt_resp_req_free() it when the connection closes.
 *
 * Between requests it holds the struct itself, argv (16 bytes per argument
 * of the largest request since the last trim, in powers of two from 8) and
 * scratch (the longest quoted inline line since the last trim).
 * kt_resp_req_trim() gives both back, e.g. when a connection goes idle, so
 * an idle connection holds only the struct (about 100 bytes). While a
 * request is incomplete, argv holds the arguments taken so far: 16 bytes
 * each (an argument takes at least 6 bytes of input, "$0\r\n\r\n"), at most
 * max_args of them, in an array grown by doubling.
 */
typedef struct kt_resp_req {
    kt_resp_arg *argv;   /* argc arguments (kt_realloc'd, cap entries) */
    size_t argc, cap;    /* argc: 0 unless the last call returned > 0 */
    char *scratch;       /* unquoted copies of quoted inline arguments */
    size_t scratch_cap;
    /* The parser's place in an incomplete request (its own: read only
     * `examined`). */
    size_t pos;          /* bytes taken: the count line and whole arguments */
    size_t scan;         /* bytes of the line at pos searched for its end */
    size_t got;          /* arguments taken, argv[0..got) */
    size_t noff;         /* argv[0..noff) hold offsets, not pointers */
    uint64_t left;       /* arguments still to come */
    int64_t bulklen;     /* length of the argument whose data is awaited, or -1 */
    int state;           /* 0 between requests */
    uint64_t examined;   /* for tests and diagnostics: input bytes searched for
                            line ends (an inline line: and split), all calls */
} kt_resp_req;

/*
 * Parse one request at the start of buf: a RESP array of bulk strings
 * ("*2\r\n$3\r\nGET\r\n$1\r\n1\r\n") or, when buf does not start with '*',
 * an inline command line ("GET 1\r\n": split on blanks, with Redis's
 * "double quotes" (\n \r \t \b \a \xHH escapes) and 'single quotes'). An
 * inline line ends at \n; a \r before it is dropped.
 *
 * Returns the bytes consumed with req->argv filled, KT_RESP_INCOMPLETE
 * (req remembers where it stopped: see the top of this file), or
 * KT_RESP_ERROR with *err set to a static string (Redis's text, e.g.
 * "invalid bulk length"; "out of memory" if argv could not grow). An
 * empty line, "*0" and "*-1" are consumed with argc 0: skip them. argv
 * stays valid until the next call with req or until buf changes.
 * lim NULL means kt_resp_default_limits; err may be NULL.
 */
ssize_t kt_resp_parse_request(const char *buf, size_t len, const kt_resp_limits *lim,
                              kt_resp_req *req, const char **err);

/* Forget an incomplete request (its input is being dropped): the next
 * call starts a new one. Keeps the arrays; argc becomes 0. */
void kt_resp_req_reset(kt_resp_req *req);

/* Between requests, free argv and scratch if together they take more than
 * keep bytes (0: always), invalidating the last request's argv. Does
 * nothing while a request is incomplete. */
void kt_resp_req_trim(kt_resp_req *req, size_t keep);

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

/*
 * A connection's reply parser: the last reply parsed (nodes[0] is the top
 * value, its elements and theirs follow in preorder) and the place where
 * an incomplete one stopped (the elements still to come in each open
 * array, on a fixed stack: the struct is about 600 bytes). One per
 * connection: zero-initialise, pass it to every kt_resp_parse_reply() or
 * kt_resp_reply_len() of that connection, kt_resp_reply_free() it when the
 * connection closes.
 */
typedef struct kt_resp_reply {
    kt_resp_node *nodes; /* count nodes (kt_realloc'd, cap entries) */
    size_t count, cap;   /* count: 0 unless the last parse returned > 0 */
    /* The parser's place in an incomplete reply (its own: read only
     * `examined`). */
    size_t pos;          /* bytes taken: whole values and array headers */
    size_t scan;         /* bytes of the line at pos searched for its end */
    size_t got;          /* nodes taken, nodes[0..got) */
    size_t noff;         /* nodes[0..noff) hold offsets, not pointers */
    int64_t bulklen;     /* length of the bulk whose data is awaited, or -1 */
    size_t depth;        /* arrays open */
    int state;           /* 0 between replies; building nodes; measuring */
    uint64_t examined;   /* for tests and diagnostics: input bytes searched for
                            line ends, all calls */
    uint64_t left[KT_RESP_MAX_DEPTH]; /* elements still to come per open array */
} kt_resp_reply;

/*
 * Parse one reply of any RESP2 type at the start of buf into out.
 * Returns the bytes consumed, KT_RESP_INCOMPLETE (out remembers where it
 * stopped: see the top of this file) or KT_RESP_ERROR with *err set (a
 * static string: "invalid bulk length", "reply nested too deeply", "out of
 * memory", ...). Nodes point into buf: valid while buf is and until the
 * next call with out. lim NULL means the defaults; max_args bounds array
 * sizes; err may be NULL.
 */
ssize_t kt_resp_parse_reply(const char *buf, size_t len, const kt_resp_limits *lim,
                            kt_resp_reply *out, const char **err);

/*
 * Where the reply at the start of buf ends, without building nodes (to
 * skip a reply nobody waits for): the same results as kt_resp_parse_reply
 * but never "out of memory"; st keeps the place between calls as there,
 * and its nodes are left empty. It may take over a reply that
 * kt_resp_parse_reply() began on st (its waiter went away) and goes on
 * from where that stopped; kt_resp_parse_reply() on a reply begun here
 * starts it again from its first byte.
 */
ssize_t kt_resp_reply_len(const char *buf, size_t len, const kt_resp_limits *lim,
                          kt_resp_reply *st, const char **err);

/* Forget an incomplete reply (its input is being dropped, e.g. the
 * connection is lost): the next call starts a new one. Keeps the nodes
 * array; count becomes 0. */
void kt_resp_reply_reset(kt_resp_reply *r);

/* Between replies, free the nodes array if it takes more than keep bytes
 * (0: always), invalidating the last reply's nodes. Does nothing while a
 * reply is incomplete. */
void kt_resp_reply_trim(kt_resp_reply *r, size_t keep);

/* Free r's nodes and zero it. */
void kt_resp_reply_free(kt_resp_reply *r);

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
