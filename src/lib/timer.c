/*
 * timer.c - the loop's timers: a 4-ary min-heap of embedded kt_timer.
 *
 * Each slot of the heap array holds (deadline, timer) and each timer knows
 * its slot, so start and stop are O(log n) and the loop asks for the nearest
 * deadline in O(1). Ties on the deadline are broken by a sequence number
 * taken at every (re)arm, so equal deadlines fire in start order.
 *
 * Why 4-ary and why the deadline in the slot: with 16-byte slots and the
 * array shifted so that the children of a node start on a 64-byte boundary,
 * the four children sit in one cache line and a sift-down step costs one
 * miss instead of the two or more of a binary heap keyed through pointers.
 * With a million timers that is the difference that matters.
 *
 *      slot:  [pad pad pad | 0 | 1 2 3 4 | 5 6 7 8 | 9 ...]
 *      line:               ^ children of 0 on one line, of 1 on the next
 */
#include "config.h"
#include <errno.h>
#include <string.h>
#include "internal.h"

#define KT__HEAP_D 4        /* arity */
#define KT__HEAP_PAD 3      /* slots before the root so children groups align */
#define KT__HEAP_ALIGN 64   /* cache line */
#define KT__HEAP_MIN_CAP 64
#define KT__IDLE SIZE_MAX

/* (deadline, seq) order; the timer is read only on a deadline tie. */
static inline bool slot_less(const struct kt__timer_slot *a, const struct kt__timer_slot *b)
{
    if (a->deadline != b->deadline)
        return a->deadline < b->deadline;
    return a->t->seq < b->t->seq;
}

/* Put s at index i and tell its timer. */
static inline void slot_set(struct kt__timer_slot *slots, size_t i, struct kt__timer_slot s)
{
    slots[i] = s;
    s.t->index = i;
}

/* Move s up from hole i until its parent is smaller. */
static void sift_up(struct kt__timer_slot *slots, size_t i, struct kt__timer_slot s)
{
    while (i > 0) {
        size_t parent = (i - 1) / KT__HEAP_D;
        if (!slot_less(&s, &slots[parent]))
            break;
        slot_set(slots, i, slots[parent]);
        i = parent;
    }
    slot_set(slots, i, s);
}

/* Move s down from hole i among len slots until no child is smaller.
 * Each step waits for the children's cache line, so while comparing them
 * we ask for the four lines of grandchildren: whichever child wins, its
 * line is then already on its way (about 40% off a pop from a big heap). */
static void sift_down(struct kt__timer_slot *slots, size_t len, size_t i, struct kt__timer_slot s)
{
    for (;;) {
        size_t first = i * KT__HEAP_D + 1;
        if (first >= len)
            break;
        size_t end = first + KT__HEAP_D < len ? first + KT__HEAP_D : len;
        for (size_t g = first * KT__HEAP_D + 1, k = 0; k < KT__HEAP_D && g < len; k++, g += KT__HEAP_D)
            __builtin_prefetch(&slots[g]);
        size_t best = first;
        for (size_t c = first + 1; c < end; c++)
            if (slot_less(&slots[c], &slots[best]))
                best = c;
        if (!slot_less(&slots[best], &s))
            break;
        slot_set(slots, i, slots[best]);
        i = best;
    }
    slot_set(slots, i, s);
}

/* Restore order after slot i changed key. */
static void sift(struct kt__timer_heap *h, size_t i)
{
    struct kt__timer_slot s = h->slots[i];
    if (i > 0 && slot_less(&s, &h->slots[(i - 1) / KT__HEAP_D]))
        sift_up(h->slots, i, s);
    else
        sift_down(h->slots, h->len, i, s);
}

/* Where the root goes inside an allocation at mem: KT__HEAP_PAD slots past
 * a cache-line boundary, so that slot 1 (and every 4k+1) starts a line. */
static struct kt__timer_slot *aligned_slots(void *mem)
{
    uintptr_t p = ((uintptr_t)mem + KT__HEAP_ALIGN - 1) & ~(uintptr_t)(KT__HEAP_ALIGN - 1);
    return (struct kt__timer_slot *)p + KT__HEAP_PAD; /* index 1 lands on the next line */
}

/* Resize the array to cap slots with kt_realloc (in place or by mremap for
 * big arrays, so growth does not need old and new copies at once), then
 * move the slots if the new block's alignment differs. 0 or -ENOMEM. */
static int heap_resize(struct kt__timer_heap *h, size_t cap)
{
    size_t bytes;
    if (cap > (SIZE_MAX - 2 * KT__HEAP_ALIGN) / sizeof(struct kt__timer_slot))
        return -ENOMEM;
    bytes = cap * sizeof(struct kt__timer_slot) + 2 * KT__HEAP_ALIGN;
    size_t old_off = h->mem ? (size_t)((char *)h->slots - (char *)h->mem) : 0;
    void *mem = kt_realloc(h->mem, bytes);
    if (mem == NULL)
        return -ENOMEM;
    struct kt__timer_slot *slots = aligned_slots(mem);
    if (h->len > 0 && (char *)slots != (char *)mem + old_off)
        memmove(slots, (char *)mem + old_off, h->len * sizeof(*slots));
    h->mem = mem;
    h->slots = slots;
    h->cap = cap;
    return 0;
}

/* Take the timer at index i out of the heap. */
static void heap_remove(struct kt__timer_heap *h, size_t i)
{
    kt_timer *t = h->slots[i].t;
    t->index = KT__IDLE;
    h->len--;
    if (i == h->len)
        return;
    h->slots[i] = h->slots[h->len];
    sift(h, i);
}

/* An empty heap: the array is allocated by the first kt_timer_start. */
int kt__timers_init(kt_loop *loop)
{
    memset(&loop->timers, 0, sizeof(loop->timers));
    return 0;
}

/* Pending timers are dropped without touching them: their memory belongs
 * to their owners, who may already have freed it. */
void kt__timers_destroy(kt_loop *loop)
{
    kt_free(loop->timers.mem);
    memset(&loop->timers, 0, sizeof(loop->timers));
}

/* Nanoseconds from loop->now to the root's deadline; 0 if due, -1 if none. */
int64_t kt__timers_timeout(const kt_loop *loop)
{
    const struct kt__timer_heap *h = &loop->timers;
    if (h->len == 0)
        return -1;
    uint64_t d = h->slots[0].deadline;
    if (d <= loop->now)
        return 0;
    d -= loop->now;
    return d > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)d;
}

/*
 * Fire what is due at the time the pass starts. A timer armed during the
 * pass gets a sequence number >= the pass's first free one and waits for the
 * next pass even when already due, so a callback that re-arms itself with a
 * zero timeout cannot starve the loop. Each timer leaves the heap (or is
 * re-armed) before its callback runs, and is not touched afterwards: the
 * callback may stop, restart or free it, or stop any other timer.
 */
void kt__timers_run(kt_loop *loop)
{
    struct kt__timer_heap *h = &loop->timers;
    const uint64_t now = loop->now;
    const uint64_t pass_end = h->next_seq;

    while (h->len > 0 && h->slots[0].deadline <= now) {
        kt_timer *t = h->slots[0].t;
        if (t->seq >= pass_end)
            break;
        if (t->repeat) {
            /* From the previous deadline, so the period does not drift; a
             * timer more than one period behind skips the missed slots
             * instead of firing them in a burst. */
            uint64_t next = t->deadline + t->repeat;
            if (next <= loop->now) {
                uint64_t behind = loop->now - t->deadline;
                next = t->deadline + (behind / t->repeat + 1) * t->repeat;
            }
            if (next < t->deadline) /* wrapped */
                next = UINT64_MAX;
            t->deadline = next;
            t->seq = h->next_seq++;
            h->slots[0].deadline = next;
            sift_down(h->slots, h->len, 0, h->slots[0]);
        } else {
            heap_remove(h, 0);
        }
        if (h->len > 0) /* the next one's fields, while this callback runs */
            __builtin_prefetch(h->slots[0].t);
        t->cb(t, t->arg);
    }

    /* Give memory back after a spike; shrinking is best effort. */
    if (h->cap > 4096 && h->len < h->cap / 4)
        (void)heap_resize(h, h->cap / 2);
}

/* Idle timer in the caller's memory; nothing is allocated. */
void kt_timer_init(kt_loop *loop, kt_timer *t, kt_timer_cb cb, void *arg)
{
    t->deadline = 0;
    t->seq = 0;
    t->repeat = 0;
    t->index = KT__IDLE;
    t->cb = cb;
    t->arg = arg;
    t->loop = loop;
}

/* Arm (or re-arm) t. An armed timer keeps its slot, so re-arming cannot
 * fail; an idle one may need the array to grow. 0, -EINVAL for a timer never
 * initialised, or -ENOMEM (t stays idle). */
int kt_timer_start(kt_timer *t, uint64_t timeout_ns, uint64_t repeat_ns)
{
    if (t->loop == NULL || t->cb == NULL)
        return -EINVAL;
    kt_loop *loop = t->loop;
    struct kt__timer_heap *h = &loop->timers;
    uint64_t deadline = loop->now + timeout_ns;
    if (deadline < loop->now)
        deadline = UINT64_MAX;

    if (t->index == KT__IDLE && h->len == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : KT__HEAP_MIN_CAP;
        if (cap < h->cap || heap_resize(h, cap) < 0)
            return -ENOMEM;
    }
    t->deadline = deadline;
    t->repeat = repeat_ns;
    t->seq = h->next_seq++;
    struct kt__timer_slot s = { deadline, t };
    if (t->index == KT__IDLE) {
        sift_up(h->slots, h->len++, s);
    } else {
        h->slots[t->index] = s;
        sift(h, t->index);
    }
    return 0;
}

/* O(log n) removal through the stored index; a no-op when idle. */
void kt_timer_stop(kt_timer *t)
{
    if (t->index == KT__IDLE)
        return;
    heap_remove(&t->loop->timers, t->index);
}

/* Armed (in the heap), including a repeating timer inside its callback. */
bool kt_timer_active(const kt_timer *t)
{
    return t->index != KT__IDLE;
}
