/*
 * split.h - split a command line into arguments the way redis-cli does:
 * blanks separate arguments; "double quotes" take \n \r \t \a \b \\ \"
 * and \xHH escapes; 'single quotes' take only \'. Arguments are binary
 * safe (\x00 is allowed), so each comes with its length.
 *
 * Shared by kettle-cli (the interactive prompt) and kettle-bench (command
 * templates and --mix).
 */
#ifndef KC_SPLIT_H
#define KC_SPLIT_H

#include <stddef.h>

typedef struct kc_args {
    size_t n;      /* number of arguments */
    char **v;      /* v[i]: kt_malloc'd, NUL-terminated (may hold NULs) */
    size_t *len;   /* len[i]: bytes in v[i] */
} kc_args;

/* Split len bytes of s into *out (which the caller frees with
 * kc_args_free, also after a failure). 0, -EINVAL with *why set (an
 * unbalanced quote, a closing quote followed by a non-blank), -ENOMEM. */
int kc_split(const char *s, size_t len, kc_args *out, const char **why);

/* Free the arguments and zero *a. */
void kc_args_free(kc_args *a);

/* Offset of the first c in s[0..len) that is outside quotes, or len if
 * none. Quotes are tracked as kc_split reads them. */
size_t kc_find_unquoted(const char *s, size_t len, char c);

/* Offset of the last c in s[0..len) outside quotes, or len if none. */
size_t kc_rfind_unquoted(const char *s, size_t len, char c);

#endif
