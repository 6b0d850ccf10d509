/* randread_v5.c — a random-read I/O engine for personality v5 (the syslet ABI
 * of February 2007, v3-v5), in the style of fio's "syslet-rw" engine of that
 * time; built with -DV6 it speaks personality v6 (Zach Brown's fixed-width
 * 80-byte atoms, September 2007) instead.  Same flow for both:
 *
 *   - io units, each with one pread64 atom (flags 0) whose argument pointers
 *     point at the unit's own words (fd, buffer, length, offset) and whose
 *     `private` points back at the unit;
 *   - submission in batches: the free units (at most --batch of them) are
 *     chained through `next` and the whole chain goes to one async_exec,
 *     with the head (struct async_head_user) passed to every call.  The
 *     atom back is the chain's tail (completed synchronously: every atom of
 *     the chain has its result); NULL means the chain went async and its
 *     tail will appear in the head's ring;
 *   - reaping from the ring at the head's user_ring_idx, polling memory:
 *     a non-NULL slot is a finished chain's tail, NULLed and passed; the
 *     chain's units, from its first to that tail, are complete.  Only when
 *     nothing is there and a unit is needed: async_wait(1, user_ring_idx,
 *     head);
 *   - before every async_exec, a NULL new_thread_stack gets a fresh stack,
 *     as the 2007 kernel consumed one per new thread.  syslet-compat never
 *     consumes it: one allocation for the whole run (--verbose counts them);
 *   - every block read is verified against the file's known pattern (the
 *     same pattern as randread.c, so one --make file serves both).
 *
 * All syslet calls go through syscall(), as fio's did.  By default with
 * syslet-compat's numbers (v5: 1010-1013, v6: 1020-1023), which need no
 * environment; with -DSYSLET_2007_NUMBERS with the 2007 x86_64 numbers
 * (v5: 280-283, v6: 286-289), which libsyslet serves only under
 * SYSLET_COMPAT_ABI=v5 (or v6):
 *
 *   cc -O2 $(python -m compat config --cflags) randread_v5.c -o randread_v5
 *   cc -O2 -DV6 $(python -m compat config --cflags) randread_v5.c -o randread_v6
 *   ./randread_v5 --make FILE MIB                       # write the pattern file
 *   LD_PRELOAD=$(python -m compat config --preload) ./randread_v5 FILE
 *   ./randread_v5 --plain FILE                          # plain pread() loop
 *
 * Options: --iodepth N (32: units, and slots of the ring), --batch N (at
 *          most N atoms per chain, default the iodepth; 1 = one syslet per
 *          read, as fio's v3 engine), --bs N (4096), --ios N (100000),
 *          --seed N (1), --direct (O_DIRECT: every read goes to the device),
 *          --light-verify (check three words of each block instead of all),
 *          --no-rate, --cpu-rate, --verbose (completion counts on stderr).
 * The first output line depends only on the options and the file, not on
 * the mode, so a syslet run and a --plain run print the same line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifdef V6
#ifdef SYSLET_2007_NUMBERS
#define __NR_async_exec 286
#define __NR_async_wait 287
#define __NR_umem_add 288
#define __NR_async_thread 289
#endif
#include <syslet-v6.h>
#define ABI_NAME "v6"
typedef unsigned long long uptr_t;     /* v6: every pointer field is a u64 */
#else
#ifdef SYSLET_2007_NUMBERS
#define __NR_async_exec 280
#define __NR_async_wait 281
#define __NR_umem_add 282
#define __NR_async_thread 283
#endif
#include <syslet-v5.h>
#define ABI_NAME "v5"
typedef void *uptr_t;                  /* v5: native pointers */
#endif

#define UPTR(p) ((uptr_t)(uintptr_t)(p))
#define ATOM_OF(v) ((struct syslet_uatom *)(uintptr_t)(v))

struct io_u {
    struct syslet_uatom atom;
    long long ret;                      /* the atom's result word */
    unsigned long long fd, buf, len, off;   /* its argument words */
    char *data;
    struct io_u *first;                 /* the first unit of its chain */
    struct io_u *next_free;
};

static inline uint64_t pattern(uint64_t p)
{
    return (p >> 3) * 0x9E3779B97F4A7C15ULL + 0x5157;
}

static uint64_t rng_state;
static inline uint64_t rng(void)
{
    uint64_t x = rng_state;     /* xorshift64, as randread.c */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static unsigned long opt_iodepth = 32, opt_batch, opt_bs = 4096, opt_ios = 100000, opt_seed = 1;
static int opt_plain, opt_rate = 1, opt_cpu_rate, opt_verbose, opt_direct, opt_light;
static unsigned long errors, sync_chains, async_chains, waits, stacks, nblocks;
static uint64_t sum;

static void die(const char *what)
{
    fprintf(stderr, "randread_" ABI_NAME ": %s: %s\n", what, strerror(errno));
    exit(1);
}

static void verify(const char *data, long long got, unsigned long long off)
{
    if (got != (long long)opt_bs) {
        errors++;
        return;
    }
    const uint64_t *w = (const uint64_t *)data;
    unsigned long n = opt_bs / 8;
    if (opt_light) {
        if (w[0] != pattern(off) || w[n / 2] != pattern(off + 8 * (n / 2)) ||
            w[n - 1] != pattern(off + 8 * (n - 1)))
            errors++;
        else
            sum += w[0];
        return;
    }
    for (unsigned long i = 0; i < n; i++)
        if (w[i] != pattern(off + 8 * i)) {
            errors++;
            return;
        }
    sum += w[0];
}

static int make_file(const char *path, unsigned long mib)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die(path);
    enum { CH = 1 << 20 };
    uint64_t *w = malloc(CH);
    if (!w)
        die("malloc");
    for (unsigned long m = 0; m < mib; m++) {
        uint64_t base = (uint64_t)m * CH;
        for (unsigned long i = 0; i < CH / 8; i++)
            w[i] = pattern(base + 8 * i);
        if (pwrite(fd, w, CH, (off_t)base) != CH)
            die("pwrite");
    }
    free(w);
    if (close(fd) < 0)
        die("close");
    return 0;
}

static double clock_s(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static unsigned long next_offset(void)
{
    return (rng() % nblocks) * opt_bs;
}

static void run_plain(int fd, char *buf)
{
    for (unsigned long i = 0; i < opt_ios; i++) {
        unsigned long off = next_offset();
        long r = pread(fd, buf, opt_bs, (off_t)off);
        if (r < 0)
            die("pread");
        verify(buf, r, off);
    }
}

/* ---- the syslet engine --------------------------------------------------- */

static struct async_head_user ahu;     /* passed to every call */
static uint64_t *ring;                 /* iodepth slots: atom addresses */
static unsigned long nslots;
static struct io_u *free_list;

#define THREAD_STACK 16384

/* A stack for "the next async thread", refilled whenever it reads 0 (a
 * 2007 kernel took it).  Never run here; kept for the program's life. */
static void refill_stack(void)
{
    if (ahu.new_thread_stack)
        return;
    char *s = malloc(THREAD_STACK);
    if (!s)
        die("malloc");
    stacks++;
    ahu.new_thread_stack = UPTR(s + THREAD_STACK);
}

/* Where a 2007 kernel started its threads: never entered here. */
static void cachemiss_thread(void)
{
    for (;;)
        syscall(__NR_async_thread, NULL, NULL);
}

/* The chain that ended at tail is done: complete its units in order. */
static void complete_chain(struct io_u *tail)
{
    struct io_u *u = tail->first;
    for (;;) {
        struct io_u *next = (struct io_u *)(uintptr_t)u->atom.next;
        verify(u->data, u->ret, u->off);
        u->next_free = free_list;
        free_list = u;
        if (u == tail)
            break;
        u = next;
    }
}

/* Takes every finished chain out of the ring; returns how many units. */
static unsigned long reap(void)
{
    unsigned long n = 0;
    for (;;) {
        unsigned long i = ahu.user_ring_idx;
        uint64_t a = __atomic_load_n(&ring[i], __ATOMIC_ACQUIRE);
        if (!a)
            return n;
        __atomic_store_n(&ring[i], 0, __ATOMIC_RELEASE);
        ahu.user_ring_idx = i + 1 == nslots ? 0 : i + 1;
        struct io_u *tail = (struct io_u *)(uintptr_t)ATOM_OF(a)->private_;
        for (struct io_u *u = tail->first;; u = (struct io_u *)(uintptr_t)u->atom.next) {
            n++;
            if (u == tail)
                break;
        }
        complete_chain(tail);
        async_chains++;
    }
}

static struct io_u *units;

/* fio's init, before the clock starts: units, ring and head; then one call
 * that returns at once (async_wait for 0 events), which also brings the
 * library up (its first call creates the engine's context). */
static void setup_syslet(int fd)
{
    nslots = opt_iodepth;
    ring = calloc(nslots, sizeof *ring);
    units = calloc(opt_iodepth, sizeof *units);
    if (!ring || !units)
        die("calloc");
#ifdef V6
    ahu.completion_ring_ptr = (uintptr_t)ring;
#else
    ahu.completion_ring = (struct syslet_uatom **)ring;
#endif
    ahu.ring_size_bytes = nslots * sizeof *ring;
    char *head_stack = malloc(THREAD_STACK);
    if (!head_stack)
        die("malloc");
    ahu.head_stack = UPTR(head_stack + THREAD_STACK);
#ifdef V6
    ahu.head_ip = ahu.new_thread_ip = (uintptr_t)cachemiss_thread;
#else
    ahu.head_eip = ahu.new_thread_eip = (void *)(uintptr_t)cachemiss_thread;
#endif
    for (unsigned long i = 0; i < opt_iodepth; i++) {
        struct io_u *u = &units[i];
        if (posix_memalign((void **)&u->data, 4096, opt_bs))
            die("posix_memalign");
        u->fd = (unsigned long long)fd;
        u->buf = (uintptr_t)u->data;
        u->len = opt_bs;
        u->atom.flags = 0;
        u->atom.nr = SYS_pread64;
        u->atom.ret_ptr = UPTR(&u->ret);
        u->atom.arg_ptr[0] = UPTR(&u->fd);
        u->atom.arg_ptr[1] = UPTR(&u->buf);
        u->atom.arg_ptr[2] = UPTR(&u->len);
        u->atom.arg_ptr[3] = UPTR(&u->off);
        u->atom.private_ = UPTR(u);
        u->next_free = free_list;
        free_list = u;
    }
    refill_stack();
    if (syscall(__NR_async_wait, 0UL, 0UL, &ahu) < 0)
        die("async_wait");
}

static void run_syslet(void)
{
    unsigned long batch = opt_batch ? opt_batch : opt_iodepth;
    unsigned long issued = 0, done = 0;
    while (done < opt_ios) {
        /* Queue: chain up to `batch` free units, then one async_exec. */
        while (issued < opt_ios && free_list) {
            struct io_u *first = free_list, *tail = NULL;
            for (unsigned long k = 0; k < batch && issued < opt_ios && free_list; k++) {
                struct io_u *u = free_list;
                free_list = u->next_free;
                u->off = next_offset();
                u->ret = 0;
                u->first = first;
                u->atom.next = 0;
                if (tail)
                    tail->atom.next = UPTR(&u->atom);
                tail = u;
                issued++;
            }
            refill_stack();
            long r = syscall(__NR_async_exec, &first->atom, &ahu);
            if (r == -1)
                die("async_exec");
            if (r) {                    /* the whole chain completed here */
                if ((struct syslet_uatom *)r != &tail->atom) {
                    errno = EPROTO;
                    die("async_exec returned another atom than the chain's tail");
                }
                unsigned long k = 0;
                for (struct io_u *u = first;; u = (struct io_u *)(uintptr_t)u->atom.next) {
                    k++;
                    if (u == tail)
                        break;
                }
                complete_chain(tail);
                sync_chains++;
                done += k;
            }
        }
        if (done == issued)
            continue;
        /* Reap: poll the ring; wait only when no unit is free. */
        unsigned long got = reap();
        if (!got && (!free_list || issued == opt_ios)) {
            waits++;
            if (syscall(__NR_async_wait, 1UL, ahu.user_ring_idx, &ahu) < 0 && errno != EINTR)
                die("async_wait");
            got = reap();
        }
        done += got;
    }
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--make") && i + 2 < argc)
            return make_file(argv[i + 1], strtoul(argv[i + 2], NULL, 0));
        else if (!strcmp(a, "--plain"))
            opt_plain = 1;
        else if (!strcmp(a, "--direct"))
            opt_direct = 1;
        else if (!strcmp(a, "--light-verify"))
            opt_light = 1;
        else if (!strcmp(a, "--no-rate"))
            opt_rate = 0;
        else if (!strcmp(a, "--cpu-rate"))
            opt_cpu_rate = 1;
        else if (!strcmp(a, "--verbose"))
            opt_verbose = 1;
        else if (!strcmp(a, "--iodepth") && i + 1 < argc)
            opt_iodepth = strtoul(argv[++i], NULL, 0);
        else if (!strcmp(a, "--batch") && i + 1 < argc)
            opt_batch = strtoul(argv[++i], NULL, 0);
        else if (!strcmp(a, "--bs") && i + 1 < argc)
            opt_bs = strtoul(argv[++i], NULL, 0);
        else if (!strcmp(a, "--ios") && i + 1 < argc)
            opt_ios = strtoul(argv[++i], NULL, 0);
        else if (!strcmp(a, "--seed") && i + 1 < argc)
            opt_seed = strtoul(argv[++i], NULL, 0);
        else if (a[0] != '-' && !path)
            path = a;
        else {
            fprintf(stderr, "usage: %s [--plain] [--direct] [--light-verify] [--iodepth N] "
                            "[--batch N] [--bs N] [--ios N] [--seed N] [--no-rate] [--cpu-rate] "
                            "[--verbose] FILE\n       %s --make FILE MIB\n", argv[0], argv[0]);
            return 2;
        }
    }
    if (!path || !opt_iodepth || !opt_bs || opt_bs % 8) {
        fprintf(stderr, "randread_" ABI_NAME ": need FILE, iodepth > 0 and bs a multiple of 8\n");
        return 2;
    }
    int fd = open(path, O_RDONLY | (opt_direct ? O_DIRECT : 0));
    if (fd < 0)
        die(path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        die("fstat");
    nblocks = (unsigned long)st.st_size / opt_bs;
    if (!nblocks) {
        fprintf(stderr, "randread_" ABI_NAME ": %s is smaller than one block\n", path);
        return 2;
    }
    rng_state = opt_seed * 0x2545F4914F6CDD1DULL + 1;

    double t0, t1, c0, c1;
    if (opt_plain) {
        char *buf;
        if (posix_memalign((void **)&buf, 4096, opt_bs))
            die("posix_memalign");
        t0 = clock_s(CLOCK_MONOTONIC);
        c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        run_plain(fd, buf);
    } else {
        setup_syslet(fd);
        t0 = clock_s(CLOCK_MONOTONIC);
        c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        run_syslet();
    }
    c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    t1 = clock_s(CLOCK_MONOTONIC);
    printf("randread: ios=%lu bs=%lu iodepth=%lu blocks=%lu errors=%lu sum=%016llx\n",
           opt_ios, opt_bs, opt_iodepth, nblocks, errors, (unsigned long long)sum);
    if (opt_rate)
        printf("reads/s: %.0f\n", opt_ios / (t1 - t0));
    if (opt_cpu_rate)
        printf("cpu reads/s: %.0f\n", opt_ios / (c1 - c0));
    if (opt_verbose && !opt_plain)
        fprintf(stderr, "randread_" ABI_NAME ": sync_chains=%lu async_chains=%lu "
                "async_wait calls=%lu stacks=%lu\n", sync_chains, async_chains, waits, stacks);
    return errors ? 1 : 0;
}
