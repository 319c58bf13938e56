/*
 * block.c - the blocks that hold a stream's queued output and its kept
 * input: three size classes, each with a bounded per-loop free list, so
 * that the steady state allocates nothing and a burst gives its memory
 * back (stream.c and stream-read.c use them).
 */
#include "config.h"
#include "internal.h"

/*
 * Size classes. Most output is a reply of a few dozen bytes, sent within
 * an iteration (epoll) or one completion later (io_uring): so a stream's
 * first block is small, and only output that keeps growing (a pipeline, a
 * large value, a slow reader) moves on to larger blocks. Each class keeps
 * at most `spare` blocks on its free list (2 MiB for the three): a burst
 * beyond that returns its blocks to the allocator, and spares that no
 * stream took for a second are freed too (kt__blocks_trim).
 */
static const uint32_t block_spare[KT__BLOCK_NCLASS] = {
    1024, /* 512 B blocks: 512 KiB of spares */
    128,  /* 4 KiB: 512 KiB */
    64,   /* 16 KiB: 1 MiB */
};

/* The smallest class holding n bytes, KT__BLOCK_BIG if none does. */
unsigned kt__block_class_for(size_t n)
{
    unsigned c = 0;
    while (c < KT__BLOCK_NCLASS && kt__block_capacity(c) < n)
        c++;
    return c;
}

/* From the class's free list, or new. NULL on ENOMEM. */
kt__block *kt__block_get(kt_loop *loop, unsigned cls)
{
    struct kt__block_list *fl = &loop->free_blocks[cls];
    kt__block *b = fl->head;
    if (b) {
        fl->head = b->next;
        if (--fl->len < fl->low)
            fl->low = fl->len;
    } else {
        b = kt_malloc(sizeof(*b) + kt__block_capacity(cls));
        if (b == NULL)
            return NULL;
        b->size = kt__block_capacity(cls);
        b->cls = (uint8_t)cls;
    }
    b->next = NULL;
    b->pos = b->last = 0;
    return b;
}

/* Listed blocks up to the class's bound; the rest, and blocks made to
 * measure, are freed. */
void kt__block_put(kt_loop *loop, kt__block *b)
{
    if (b->cls < KT__BLOCK_NCLASS) {
        struct kt__block_list *fl = &loop->free_blocks[b->cls];
        if (fl->len < block_spare[b->cls]) {
            b->next = fl->head;
            fl->head = b;
            fl->len++;
            return;
        }
    }
    kt_free(b);
}

/* A block for one reservation larger than any class. */
kt__block *kt__block_big(size_t n)
{
    if (n > UINT32_MAX - sizeof(kt__block))
        return NULL;
    kt__block *b = kt_malloc(sizeof(*b) + n);
    if (b) {
        b->next = NULL;
        b->pos = b->last = 0;
        b->size = (uint32_t)n;
        b->cls = KT__BLOCK_BIG;
    }
    return b;
}

/* Each list keeps the blocks taken recently (at its head, warm in cache);
 * the `low` deepest ones sat unused since the last trim and are freed. */
void kt__blocks_trim(kt_loop *loop)
{
    loop->blocks_trimmed = loop->now;
    for (unsigned c = 0; c < KT__BLOCK_NCLASS; c++) {
        struct kt__block_list *fl = &loop->free_blocks[c];
        if (fl->low > 0) {
            kt__block **pp = &fl->head;
            for (uint32_t keep = fl->len - fl->low; keep > 0; keep--)
                pp = &(*pp)->next;
            for (kt__block *b = *pp, *next; b; b = next) {
                next = b->next;
                kt_free(b);
            }
            *pp = NULL;
            fl->len -= fl->low;
        }
        fl->low = fl->len;
    }
}

void kt__blocks_destroy(kt_loop *loop)
{
    for (unsigned c = 0; c < KT__BLOCK_NCLASS; c++) {
        struct kt__block_list *fl = &loop->free_blocks[c];
        for (kt__block *b = fl->head, *next; b; b = next) {
            next = b->next;
            kt_free(b);
        }
        fl->head = NULL;
        fl->len = fl->low = 0;
    }
}

size_t kt__blocks_spare(const kt_loop *loop)
{
    size_t n = 0;
    for (unsigned c = 0; c < KT__BLOCK_NCLASS; c++)
        n += (size_t)loop->free_blocks[c].len * (sizeof(kt__block) + kt__block_capacity(c));
    return n;
}

/* The class of a block to follow prev (NULL: the queue is empty) that
 * should hold n bytes: small for the first block of a queue, else one
 * class above prev's, so output that keeps growing gets larger blocks;
 * and at least the smallest class holding n, up to the largest. */
unsigned kt__block_next_class(const kt__block *prev, size_t n)
{
    unsigned c = 0;
    if (prev)
        c = prev->cls + 1u < KT__BLOCK_NCLASS ? prev->cls + 1u : KT__BLOCK_NCLASS - 1;
    while (c + 1 < KT__BLOCK_NCLASS && kt__block_capacity(c) < n)
        c++;
    return c;
}
