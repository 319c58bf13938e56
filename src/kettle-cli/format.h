/*
 * format.h - print a reply the way redis-cli prints it.
 *
 * Standard form (redis-cli's terminal output): "(integer) 1", "(nil)",
 * quoted strings with C escapes, numbered array elements indented under
 * their parent, "(error) ERR ...", "(empty array)".
 * Raw form (--raw): the bytes of strings as they are, integers as digits,
 * array elements one per line, nil as an empty line.
 * Text form (the replies of INFO, CLIENT LIST and other text blobs, with or
 * without --raw): a string's bytes as they are, so its lines show as
 * lines, as redis-cli prints them; any other reply in the standard form.
 */
#ifndef KC_FORMAT_H
#define KC_FORMAT_H

#include <stdbool.h>
#include <kettle/resp.h>

enum { KC_FORM_STANDARD = 0, KC_FORM_RAW, KC_FORM_TEXT };

/* Append the text of reply r in form KC_FORM_* (every line ended by a
 * newline) to out. 0 or -ENOMEM. */
int kc_format_reply(kt_buf *out, const kt_resp_reply *r, int form);

/* Does the command argv answer with a text blob meant to be read as lines
 * (INFO, CLIENT LIST, CLIENT INFO, LATENCY DOCTOR, ...: redis-cli's list)? */
bool kc_text_command(size_t argc, char *const *argv);

/* Append s[0..len) quoted as redis-cli quotes strings ("a\n\x01"). */
int kc_format_quoted(kt_buf *out, const char *s, size_t len);

#endif
