/*
 * alloc.c - the one replaceable allocator every libkettle module uses, so
 * that tests can inject allocation failures on any path.
 */
#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static kt_allocator kt__alloc = { malloc, realloc, free };

void kt_set_allocator(const kt_allocator *a)
{
    if (a == NULL) {
        kt__alloc = (kt_allocator){ malloc, realloc, free };
        return;
    }
    if (a->malloc) kt__alloc.malloc = a->malloc;
    if (a->realloc) kt__alloc.realloc = a->realloc;
    if (a->free) kt__alloc.free = a->free;
}

void *kt_malloc(size_t size) { return kt__alloc.malloc(size ? size : 1); }

void *kt_calloc(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    void *p = kt_malloc(n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

void *kt_realloc(void *ptr, size_t size) { return kt__alloc.realloc(ptr, size ? size : 1); }

void kt_free(void *ptr)
{
    if (ptr)
        kt__alloc.free(ptr);
}

char *kt_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = kt_malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

char *kt_strdup(const char *s) { return kt_strndup(s, SIZE_MAX); }
