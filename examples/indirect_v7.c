/* indirect_v7.c — random reads through personality v7 (Zach Brown's syslets
 * of December 2007: indirect system calls and a syslet_ring), in the style
 * of fio's v7 "syslet-rw" engine:
 *
 *   - io units, each a buffer and an offset; a read is one indirect() call:
 *     the registers hold pread64 and its four arguments by value, the
 *     syslet parameters name the ring, the unit (caller_data) and a return
 *     frame (ip, sp), which a 2007 kernel ran in the thread that finished a
 *     blocked call.  syslet-compat only checks it: never entered here;
 *   - the result tells the story: the byte count means the read completed
 *     in the call (no ring entry); -1 with errno ESYSLETPENDING means it
 *     went on in the background and {status, caller_data} will appear in
 *     the ring; anything else is an error;
 *   - reaping: kernel_head read with acquire order, the entries from
 *     user_tail up to it consumed at (user_tail & (elements - 1)), then
 *     user_tail advanced (release: syslet-compat's producer waits while
 *     the ring is full, where a 2007 kernel overwrote unread entries).
 *     Only when nothing is there and a unit is needed:
 *     syslet_ring_wait(ring, user_tail);
 *   - every block read is verified against the file's known pattern (the
 *     pattern of randread.c: one --make file serves every example).
 *
 * The calls go through syscall(), as fio's did.  By default with
 * syslet-compat's numbers (indirect 1030, syslet_ring_wait 1031); with
 * -DSYSLET_2007_NUMBERS with the 2007 x86_64 numbers 286 and 287, which
 * libsyslet serves only under SYSLET_COMPAT_ABI=v7:
 *
 *   cc -O2 $(python -m compat config --cflags) indirect_v7.c -o indirect_v7
 *   LD_PRELOAD=$(python -m compat config --preload) ./indirect_v7 FILE
 *   ./indirect_v7 --plain FILE                          # plain pread() loop
 *   ./indirect_v7 --plain-nowait FILE    # preadv2(RWF_NOWAIT) loop, pread on EAGAIN:
 *                                        # the least any in-place try costs
 *
 * Options: --iodepth N (32: reads in flight; the ring has N rounded up to a
 *          power of two entries, or --ring N), --bs N (4096), --ios N
 *          (100000), --seed N (1), --direct (O_DIRECT: every read goes to
 *          the device), --light-verify (three words of each block instead
 *          of all), --no-rate, --cpu-rate, --verbose (completion counts on
 *          stderr).  With --ring smaller than --iodepth the ring fills and
 *          the producer waits for user_tail (ring_full_waits in
 *          SYSLET_COMPAT_DEBUG's counters).
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
#include <sys/uio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifdef SYSLET_2007_NUMBERS
#define __NR_indirect 286
#define __NR_syslet_ring_wait 287
#endif
#include <syslet-v7.h>

struct io_u {
    char *data;
    unsigned long long off;
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

static unsigned long opt_iodepth = 32, opt_ring, opt_bs = 4096, opt_ios = 100000, opt_seed = 1;
static int opt_plain, opt_rate = 1, opt_cpu_rate, opt_verbose, opt_direct, opt_light;
static unsigned long errors, sync_done, async_done, waits, nblocks;
static uint64_t sum;

static void die(const char *what)
{
    fprintf(stderr, "indirect_v7: %s: %s\n", what, strerror(errno));
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
        long r;
        if (opt_plain == 2) {   /* --plain-nowait: the kernel's floor for a syslet */
            struct iovec iov = {buf, opt_bs};
            r = preadv2(fd, &iov, 1, (off_t)off, RWF_NOWAIT);
            if (r < 0 && errno == EAGAIN)
                r = pread(fd, buf, opt_bs, (off_t)off);
        } else {
            r = pread(fd, buf, opt_bs, (off_t)off);
        }
        if (r < 0)
            die("pread");
        verify(buf, r, off);
    }
}

/* ---- the syslet engine --------------------------------------------------- */

static struct syslet_ring *ring;
static struct io_u *free_list;

/* Where a 2007 kernel sent the thread that finished a blocked call (fio's
 * ended that thread).  syslet-compat checks ip and sp, never runs them. */
static void syslet_return(void)
{
    _exit(0);
}

static void complete(struct io_u *u, long long status)
{
    verify(u->data, status, u->off);
    u->next_free = free_list;
    free_list = u;
}

/* Consumes every posted completion; returns how many. */
static unsigned long reap(void)
{
    unsigned tail = ring->user_tail;
    unsigned head = __atomic_load_n(&ring->kernel_head, __ATOMIC_ACQUIRE);
    unsigned long n = 0;
    for (; tail != head; tail++, n++) {
        struct syslet_completion *c = &ring->comp[tail & (ring->elements - 1)];
        complete((struct io_u *)(uintptr_t)c->caller_data, (long long)c->status);
    }
    __atomic_store_n(&ring->user_tail, tail, __ATOMIC_RELEASE);
    async_done += n;
    return n;
}

static struct indirect_registers regs;
static union indirect_params params;

/* fio's init, before the clock starts: units, ring, the call's constant
 * registers and parameters; then one call that returns at once
 * (syslet_ring_wait for an index kernel_head is not at), which also brings
 * the library up (its first call creates the engine's context). */
static void setup_syslet(int fd)
{
    unsigned elements = 1;
    while (elements < (opt_ring ? opt_ring : opt_iodepth))
        elements <<= 1;
    ring = aligned_alloc(64, sizeof *ring + elements * sizeof(struct syslet_completion));
    struct io_u *units = calloc(opt_iodepth, sizeof *units);
    char *stack = malloc(4096);
    if (!ring || !units || !stack)
        die("malloc");
    memset(ring, 0, sizeof *ring + elements * sizeof(struct syslet_completion));
    ring->elements = elements;
    for (unsigned long i = 0; i < opt_iodepth; i++) {
        struct io_u *u = &units[i];
        if (posix_memalign((void **)&u->data, 4096, opt_bs))
            die("posix_memalign");
        u->next_free = free_list;
        free_list = u;
    }
    regs.rax = SYS_pread64;
    regs.rdi = (unsigned long long)fd;
    regs.rdx = opt_bs;
    params.syslet.ring_ptr = (uintptr_t)ring;
    params.syslet.frame.ip = (uintptr_t)syslet_return;
    params.syslet.frame.sp = (uintptr_t)stack + 4096;
    if (syscall(__NR_syslet_ring_wait, ring, (unsigned long)ring->kernel_head + 1) < 0)
        die("syslet_ring_wait");
}

static void run_syslet(void)
{
    unsigned long issued = 0, done = 0;
    while (done < opt_ios) {
        while (issued < opt_ios && free_list) {
            struct io_u *u = free_list;
            free_list = u->next_free;
            u->off = next_offset();
            regs.rsi = (uintptr_t)u->data;
            regs.r10 = u->off;
            params.syslet.caller_data = (uintptr_t)u;
            issued++;
            long r = syscall(__NR_indirect, &regs, &params, sizeof params.syslet, 0UL);
            if (r == -1 && errno == ESYSLETPENDING)
                continue;               /* its completion comes through the ring */
            if (r == -1)
                die("indirect");
            complete(u, r);             /* done in the call: no ring entry */
            sync_done++;
            done++;
        }
        if (done == issued)
            continue;
        unsigned long got = reap();
        if (!got && (!free_list || issued == opt_ios)) {
            waits++;
            if (syscall(__NR_syslet_ring_wait, ring, (unsigned long)ring->user_tail) < 0 &&
                errno != EINTR)
                die("syslet_ring_wait");
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
        if (!strcmp(a, "--plain"))
            opt_plain = 1;
        else if (!strcmp(a, "--plain-nowait"))
            opt_plain = 2;
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
        else if (!strcmp(a, "--ring") && i + 1 < argc)
            opt_ring = strtoul(argv[++i], NULL, 0);
        else if (!strcmp(a, "--bs") && i + 1 < argc)
            opt_bs = strtoul(argv[++i], NULL, 0);
        else if (!strcmp(a, "--ios") && i + 1 < argc)
            opt_ios = strtoul(argv[++i], NULL, 0);
        else if (!strcmp(a, "--seed") && i + 1 < argc)
            opt_seed = strtoul(argv[++i], NULL, 0);
        else if (a[0] != '-' && !path)
            path = a;
        else {
            fprintf(stderr, "usage: %s [--plain | --plain-nowait] [--direct] [--light-verify] [--iodepth N] "
                            "[--ring N] [--bs N] [--ios N] [--seed N] [--no-rate] [--cpu-rate] "
                            "[--verbose] FILE\n", argv[0]);
            return 2;
        }
    }
    if (!path || !opt_iodepth || !opt_bs || opt_bs % 8 || opt_ring > (1UL << 20)) {
        fprintf(stderr, "indirect_v7: need FILE, iodepth > 0 and bs a multiple of 8\n");
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
        fprintf(stderr, "indirect_v7: %s is smaller than one block\n", path);
        return 2;
    }
    rng_state = opt_seed * 0x2545F4914F6CDD1DULL + 1;

    char *buf = NULL;
    if (opt_plain) {
        if (posix_memalign((void **)&buf, 4096, opt_bs))
            die("posix_memalign");
    } else {
        setup_syslet(fd);
    }
    double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    if (opt_plain)
        run_plain(fd, buf);
    else
        run_syslet();
    double c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID), t1 = clock_s(CLOCK_MONOTONIC);
    printf("randread: ios=%lu bs=%lu iodepth=%lu blocks=%lu errors=%lu sum=%016llx\n",
           opt_ios, opt_bs, opt_iodepth, nblocks, errors, (unsigned long long)sum);
    if (opt_rate)
        printf("reads/s: %.0f\n", opt_ios / (t1 - t0));
    if (opt_cpu_rate)
        printf("cpu reads/s: %.0f\n", opt_ios / (c1 - c0));
    if (opt_verbose && !opt_plain)
        fprintf(stderr, "indirect_v7: sync=%lu async=%lu syslet_ring_wait calls=%lu "
                "elements=%u\n", sync_done, async_done, waits, ring->elements);
    return errors ? 1 : 0;
}
