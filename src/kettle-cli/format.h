/*
 * format.h - print a reply the way redis-cli prints it.
 *
 * Standard form (redis-cli's terminal output): "(integer) 1", "(nil)",
 * quoted strings with C escapes, numbered array elements indented under
 * their parent, "(error) ERR ...", "(empty array)".
 * Raw form (--raw): the bytes of strings as they are, integers as digits,
 * array elements one per line, nil as an empty line.
 */
#ifndef KC_FORMAT_H
#define KC_FORMAT_H

#include <stdbool.h>
#include <kettle/resp.h>

/* Append the text of reply r (every line ended by a newline) to out.
 * 0 or -ENOMEM. */
int kc_format_reply(kt_buf *out, const kt_resp_reply *r, bool raw);

/* Append s[0..len) quoted as redis-cli quotes strings ("a\n\x01"). */
int kc_format_quoted(kt_buf *out, const char *s, size_t len);

#endif
