/*
 * split.h - split a command line into arguments the way redis-cli does:
 * blanks separate arguments; "double quotes" take \n \r \t \a \b \\ \"
 * and \xHH escapes; 'single quotes' take only \'. Arguments are binary
 * safe (\x00 is allowed), so each comes with its length.
 *
 * Part of libktcommon: kettle-cli splits its prompt's lines with it,
 * kettle-bench its command templates and --mix items.
 */
#ifndef KETTLE_SPLIT_H
#define KETTLE_SPLIT_H

#include <stddef.h>

typedef struct kt_args {
    size_t n;      /* number of arguments */
    char **v;      /* v[i]: kt_malloc'd, NUL-terminated (may hold NULs) */
    size_t *len;   /* len[i]: bytes in v[i] */
} kt_args;

/* Split len bytes of s into *out (which the caller frees with
 * kt_args_free, also after a failure). 0, -EINVAL with *why set (an
 * unbalanced quote, a closing quote followed by a non-blank), -ENOMEM. */
int kt_split(const char *s, size_t len, kt_args *out, const char **why);

/* Free the arguments and zero *a. */
void kt_args_free(kt_args *a);

/* Offset of the first c in s[0..len) that is outside quotes, or len if
 * none. Quotes are tracked as kt_split reads them. */
size_t kt_find_unquoted(const char *s, size_t len, char c);

/* Offset of the last c in s[0..len) outside quotes, or len if none. */
size_t kt_rfind_unquoted(const char *s, size_t len, char c);

#endif
