/*
 * io-uring-res.c - the io_uring backend's resources: the ring and its
 * set-up flags, the ring of provided receive buffers with its posting
 * window, the table of fixed files, and the pool of op blocks (what a
 * SENDMSG or a CONNECT in flight needs kept). See io-uring.c for how they
 * are used.
 */
#include "config.h"
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include "io-uring.h"

/* A ring created with SINGLE_ISSUER is bound to the task that enables it,
 * so it is created disabled and enabled by the thread that first polls
 * (the one running the loop), which then also registers the ring fd. */
int kt__ur_enable(struct ur_loop *u)
{
    if (u->enabled)
        return 0;
    if (u->ring.flags & IORING_SETUP_R_DISABLED) {
        int rc = io_uring_register(u->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
        if (rc < 0)
            return rc;
    }
    u->enabled = true;
    (void)io_uring_register_ring_fd(&u->ring); /* optional: cheaper enters */
    return 0;
}

static int ring_create(struct ur_loop *u, unsigned entries)
{
    static const unsigned tries[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
            IORING_SETUP_SUBMIT_ALL | IORING_SETUP_R_DISABLED,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_SUBMIT_ALL,
        0,
    };
    int rc = -EINVAL;
    for (size_t i = 0; i < KT__ARRAY_LEN(tries); i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = tries[i];
        rc = io_uring_queue_init_params(entries, &u->ring, &p);
        if (rc == 0) {
            /* Without FEAT_EXT_ARG liburing would implement the timed
             * wait with timeout SQEs; without NODROP completions could be
             * lost. Both came with 5.5-5.11: older kernels use epoll. */
            if (!(p.features & IORING_FEAT_EXT_ARG) || !(p.features & IORING_FEAT_NODROP)) {
                io_uring_queue_exit(&u->ring);
                return -ENOSYS;
            }
            u->deferred = (p.flags & IORING_SETUP_DEFER_TASKRUN) != 0;
            u->min_wait = (p.features & IORING_FEAT_MIN_TIMEOUT) != 0;
            return 0;
        }
        if (rc != -EINVAL)
            return rc; /* ENOSYS, EPERM, ENOMEM: no point in other flags */
    }
    return rc;
}

static unsigned pow2_clamp(unsigned v, unsigned dflt, unsigned max)
{
    if (v == 0)
        v = dflt;
    if (v > max)
        v = max;
    unsigned p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

/*
 * Receive buffers. The kernel takes them from the head of the ring and we
 * add at the tail, so with every buffer posted each receive would land in
 * the least recently used one: with 1024 x 16 KiB that is a cold cache line
 * on a page out of the TLB's reach, every time. So only a window of
 * buffers is posted; a used buffer goes on top of a stack of spares at
 * once and the window is topped up from the top (the hottest) before the
 * next submit. The window doubles when the ring runs dry (ENOBUFS: the
 * receive is re-armed, no byte is lost) and halves when an epoch of polls
 * never needed half of it.
 */
void kt__ur_bufs_refill(struct ur_loop *u)
{
    int mask = io_uring_buf_ring_mask(u->nbufs);
    int n = 0;
    while (u->posted < u->window && u->nspare > 0) {
        unsigned bid = u->spare[--u->nspare];
        io_uring_buf_ring_add(u->br, u->bufs + (size_t)bid * UR_BUF_SIZE, UR_BUF_SIZE,
                              (unsigned short)bid, mask, n++);
        u->posted++;
    }
    if (n)
        io_uring_buf_ring_advance(u->br, n);
}

void kt__ur_window_grow(struct ur_loop *u)
{
    if (u->window < u->nbufs) {
        u->window *= 2;
        kt_log_debug("io_uring: receive buffers ran out, posting %u", u->window);
    }
}

/* Once per epoch: shrink a window that was twice too large all along. */
void kt__ur_window_tick(struct ur_loop *u, unsigned used)
{
    if (used > u->peak)
        u->peak = used;
    if (++u->epoch < UR_WINDOW_EPOCH)
        return;
    if (u->window > UR_WINDOW_MIN && 4 * u->peak < u->window)
        u->window /= 2;
    u->epoch = 0;
    u->peak = 0;
    /* The op pool keeps as many blocks as were in flight at once this
     * epoch: a steady load reuses them, a past burst's surplus is freed. */
    while (u->ops_free && u->ops_used + u->nops_free > u->ops_peak) {
        struct ur_op *op = u->ops_free;
        u->ops_free = op->next_free;
        u->nops_free--;
        kt_free(op);
    }
    u->ops_peak = u->ops_used;
}

/* An op block: the pool's, or a new one when it is empty. */
struct ur_op *kt__ur_op_get(struct ur_loop *u)
{
    struct ur_op *op = u->ops_free;
    if (op) {
        u->ops_free = op->next_free;
        u->nops_free--;
    } else if ((op = kt_malloc(sizeof(*op))) == NULL) {
        return NULL;
    }
    if (++u->ops_used > u->ops_peak)
        u->ops_peak = u->ops_used;
    return op;
}

/* Back to the pool (its CQE has been seen, or it was never submitted). */
void kt__ur_op_put(struct ur_loop *u, struct ur_op *op)
{
    u->ops_used--;
    op->next_free = u->ops_free;
    u->ops_free = op;
    u->nops_free++;
}

/* Register the provided-buffer ring by hand (liburing 2.3 has no
 * io_uring_setup_buf_ring) and fill it with every buffer. */
static int bufs_create(struct ur_loop *u, unsigned nbufs)
{
    long page = sysconf(_SC_PAGESIZE);
    u->nbufs = nbufs;
    u->br_bytes = ((size_t)nbufs * sizeof(struct io_uring_buf) + (size_t)page - 1) &
                  ~((size_t)page - 1);
    void *br = mmap(NULL, u->br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (br == MAP_FAILED)
        return -ENOMEM;
    u->br = br;
    u->bufs_bytes = (size_t)nbufs * UR_BUF_SIZE;
    void *bufs = mmap(NULL, u->bufs_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    if (bufs == MAP_FAILED)
        return -ENOMEM;
    u->bufs = bufs;

    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)u->br;
    reg.ring_entries = nbufs;
    reg.bgid = UR_BGID;
    int rc = io_uring_register_buf_ring(&u->ring, &reg, 0);
    if (rc < 0)
        return rc; /* EINVAL before 5.19: AUTO falls back */
    io_uring_buf_ring_init(u->br);
    u->spare = kt_malloc(nbufs * sizeof(*u->spare));
    if (u->spare == NULL)
        return -ENOMEM;
    for (unsigned i = 0; i < nbufs; i++)
        u->spare[i] = (uint16_t)(nbufs - 1 - i); /* buffer 0 on top */
    u->nspare = nbufs;
    u->window = nbufs < UR_WINDOW_MIN ? nbufs : UR_WINDOW_MIN;
    kt__ur_bufs_refill(u);
    return 0;
}

/*
 * Stream sockets go into a sparse table of fixed files, so that sends and
 * receives skip the per-operation file lookup and reference count (a cache
 * miss per operation with hundreds of connections). Optional: without a
 * table (old kernel, low RLIMIT_NOFILE) or with every slot taken, a stream
 * uses its plain descriptor. A slot is cleared by an SQE when its stream
 * closes and reused only after that SQE has been submitted.
 */
static void files_create(struct ur_loop *u)
{
    struct rlimit rl;
    unsigned n = UR_MAX_SLOTS;
    if (!u->deferred)
        return; /* before 6.1: no cancelling by fixed descriptor (6.0) either */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < n)
        n = (unsigned)rl.rlim_cur;
    if (n < 64)
        return;
    u->slots = kt_malloc(n * sizeof(*u->slots));
    u->limbo = kt_malloc(n * sizeof(*u->limbo));
    if (u->slots == NULL || u->limbo == NULL || io_uring_register_files_sparse(&u->ring, n) < 0) {
        kt_free(u->slots);
        kt_free(u->limbo);
        u->slots = u->limbo = NULL;
        return;
    }
    for (unsigned i = 0; i < n; i++)
        u->slots[i] = n - 1 - i;
    u->nslots = n;
}

/* A slot for fd, or -1. */
int kt__ur_slot_take(struct ur_loop *u, int fd)
{
    if (u->nslots == 0)
        return -1;
    unsigned slot = u->slots[--u->nslots];
    if (io_uring_register_files_update(&u->ring, slot, &fd, 1) != 1) {
        u->slots[u->nslots++] = slot;
        return -1;
    }
    return (int)slot;
}

/* Queue the clearing of a slot (its file reference goes with it). */
void kt__ur_slot_clear(struct ur_loop *u, unsigned slot)
{
    static int none = -1;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (sqe) {
        io_uring_prep_files_update(sqe, &none, 1, (int)slot);
        io_uring_sqe_set_data64(sqe, UT_NONE);
        u->limbo[u->nlimbo++] = slot;
    } else if (io_uring_register_files_update(&u->ring, slot, &none, 1) == 1) {
        u->slots[u->nslots++] = slot; /* SQ full: cleared at once */
    } /* else: the slot is lost, its file released with the ring */
}

/* After a submit that took every SQE: cleared slots may be reused. */
void kt__ur_slots_release(struct ur_loop *u)
{
    if (u->nlimbo == 0 || io_uring_sq_ready(&u->ring) != 0)
        return;
    while (u->nlimbo)
        u->slots[u->nslots++] = u->limbo[--u->nlimbo];
}

void kt__ur_free(struct ur_loop *u)
{
    if (u->ring.ring_fd >= 0)
        io_uring_queue_exit(&u->ring);
    if (u->bufs)
        munmap(u->bufs, u->bufs_bytes);
    if (u->br)
        munmap(u->br, u->br_bytes);
    kt_free(u->spare);
    kt_free(u->slots);
    kt_free(u->limbo);
    while (u->ops_free) {
        struct ur_op *op = u->ops_free;
        u->ops_free = op->next_free;
        kt_free(op);
    }
    kt_free(u);
}

int kt__ur_setup(struct ur_loop *u, const kt_loop_options *opts)
{
    unsigned entries = pow2_clamp(opts ? opts->uring_entries : 0, UR_DEFAULT_ENTRIES, UR_MAX_ENTRIES);
    unsigned nbufs = pow2_clamp(opts ? opts->uring_buffers : 0, UR_DEFAULT_BUFS, UR_MAX_BUFS);
    u->ring.ring_fd = -1;
    int rc = ring_create(u, entries);
    if (rc < 0) {
        u->ring.ring_fd = -1;
        return rc;
    }
    if ((rc = bufs_create(u, nbufs)) < 0)
        return rc;
    files_create(u);
    return 0;
}
