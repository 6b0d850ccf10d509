/* randread.c — a random-read I/O engine in the style of fio's 2007
 * "syslet-rw" engine (its v1 form: one pread64 atom per I/O, flags 0).
 *
 *   - io units, each with one pread64 atom whose argument pointers point at
 *     the unit's own words (fd, buffer, length, offset) and whose `private`
 *     points back at the unit;
 *   - submission: syscall(__NR_async_exec, atom): the atom back = completed
 *     synchronously, NULL = queued; iodepth units in flight at most;
 *   - reaping: walk the completion ring from our own index, polling its
 *     memory (non-NULL slot: take the atom, NULL the slot, advance); only
 *     when fewer than the needed events were found, syscall(__NR_async_wait,
 *     min - found);
 *   - every block read is verified against the file's known pattern.
 *
 * All syslet calls go through syscall() with syslet-compat's numbers, as fio
 * did with the 2007 ones, so the binary needs no -lsyslet:
 *
 *   cc -O2 $(python -m compat config --cflags) randread.c -o randread
 *   ./randread --make FILE MIB                          # write the pattern file
 *   LD_PRELOAD=$(python -m compat config --preload) ./randread FILE
 *   ./randread --plain FILE                             # plain pread() loop, for comparison
 *
 * Options: --iodepth N (32), --bs N (4096), --ios N (100000), --seed N (1),
 *          --async (SYSLET_ASYNC on every atom: all completions through the
 *          ring), --direct (open the file with O_DIRECT: every read goes to
 *          the device and blocks), --write (pwrite64 atoms writing each
 *          block's own pattern instead of reading it: the file stays
 *          verifiable by a later read run; a write counts as an error unless
 *          it wrote the whole block), --drop-cache (posix_fadvise(DONTNEED) on the file
 *          before the clock starts: buffered reads come from the disk),
 *          --light-verify (check three words of each block -- first,
 *          middle, last -- instead of all: a wrong or torn block is still
 *          caught, at a cost closer to fio's unverified reads), --plain-nowait (diagnostic: the plain loop with
 *          preadv2(RWF_NOWAIT), the call the engine uses to learn whether a
 *          read would block), --no-rate (omit the reads/s line), --cpu-rate
 *          (a third line: reads per second of the process's CPU time, all
 *          threads, over the same span), --verbose (completion counts on
 *          stderr).
 * The first output line depends only on the options and the file, not on the
 * mode, so a syslet run and a --plain run print the same line.
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
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <syslet.h>

struct io_u {
    struct syslet_uatom atom;
    long ret;                           /* the atom's result word */
    unsigned long fd, buf, len, off;    /* its argument words */
    char *data;
    struct io_u *next_free;
};

/* The word at byte offset p of the pattern file (p a multiple of 8). */
static inline uint64_t pattern(uint64_t p)
{
    return (p >> 3) * 0x9E3779B97F4A7C15ULL + 0x5157;
}

static uint64_t rng_state;
static inline uint64_t rng(void)
{
    uint64_t x = rng_state;     /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static unsigned long opt_iodepth = 32, opt_bs = 4096, opt_ios = 100000, opt_seed = 1;
static int opt_plain, opt_nowait, opt_async, opt_rate = 1, opt_cpu_rate, opt_verbose;
static int opt_direct, opt_write, opt_drop, opt_light;
static unsigned long errors, sync_done, async_done, waits;
static uint64_t sum;

static void die(const char *what)
{
    fprintf(stderr, "randread: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Fills data with the pattern of the block at off (what a write unit writes). */
static void fill(char *data, unsigned long off)
{
    uint64_t *w = (uint64_t *)data;
    for (unsigned long i = 0; i < opt_bs / 8; i++)
        w[i] = pattern(off + 8 * i);
}

static void verify(const char *data, long got, unsigned long off)
{
    if (got != (long)opt_bs) {
        errors++;
        return;
    }
    if (opt_write) {            /* written: the data was the pattern already */
        sum += pattern(off);
        return;
    }
    const uint64_t *w = (const uint64_t *)data;
    unsigned long n = opt_bs / 8;
    if (opt_light) {    /* first, middle and last word: a wrong block or a torn one */
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

static double now(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

static unsigned long nblocks;

static unsigned long next_offset(void)
{
    return (rng() % nblocks) * opt_bs;
}

static void run_plain(int fd, char *buf)
{
    for (unsigned long i = 0; i < opt_ios; i++) {
        unsigned long off = next_offset();
        long r;
        if (opt_write) {
            fill(buf, off);
            r = pwrite(fd, buf, opt_bs, (off_t)off);
        } else if (opt_nowait) {
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

static struct syslet_uatom **ring;
static unsigned long ring_idx;
static struct async_head_user ahu;     /* permanent, as fio learned to keep it */
static struct io_u *free_list;

static void complete(struct io_u *u)
{
    verify(u->data, u->ret, u->off);
    u->next_free = free_list;
    free_list = u;
}

/* Takes every completed atom out of the ring; returns how many. */
static unsigned long reap(void)
{
    unsigned long n = 0;
    for (;;) {
        struct syslet_uatom *a = __atomic_load_n(&ring[ring_idx], __ATOMIC_ACQUIRE);
        if (!a)
            return n;
        __atomic_store_n(&ring[ring_idx], NULL, __ATOMIC_RELEASE);
        ring_idx = (ring_idx + 1) % opt_iodepth;
        complete((struct io_u *)a->private);
        async_done++;
        n++;
    }
}

static void run_syslet(int fd)
{
    struct io_u *units = calloc(opt_iodepth, sizeof *units);
    if (!units)
        die("calloc");
    for (unsigned long i = 0; i < opt_iodepth; i++) {
        struct io_u *u = &units[i];
        if (posix_memalign((void **)&u->data, 4096, opt_bs))
            die("posix_memalign");
        u->fd = (unsigned long)fd;
        u->buf = (unsigned long)u->data;
        u->len = opt_bs;
        u->atom.flags = opt_async ? SYSLET_ASYNC : 0;
        u->atom.nr = opt_write ? SYS_pwrite64 : SYS_pread64;
        u->atom.ret_ptr = &u->ret;
        u->atom.next = NULL;
        u->atom.arg_ptr[0] = &u->fd;
        u->atom.arg_ptr[1] = &u->buf;
        u->atom.arg_ptr[2] = &u->len;
        u->atom.arg_ptr[3] = &u->off;
        u->atom.private = u;
        u->next_free = free_list;
        free_list = u;
    }
    unsigned long issued = 0, inflight = 0, done = 0;
    while (done < opt_ios) {
        /* Queue while there are free units. */
        while (issued < opt_ios && free_list) {
            struct io_u *u = free_list;
            free_list = u->next_free;
            u->off = next_offset();
            u->ret = 0;
            if (opt_write)
                fill(u->data, u->off);
            issued++;
            long r = syscall(__NR_async_exec, &u->atom);
            if (r == -1)
                die("async_exec");
            if (r) {                    /* completed synchronously */
                if ((struct syslet_uatom *)r != &u->atom) {
                    errno = EPROTO;
                    die("async_exec returned a foreign atom");
                }
                complete(u);
                sync_done++;
                done++;
            } else {
                inflight++;
            }
        }
        if (!inflight)
            continue;
        /* Reap: poll the ring; wait only when short of what we need. */
        unsigned long need = (!free_list || issued == opt_ios) ? 1 : 0;
        unsigned long got = reap();
        if (got < need) {
            waits++;
            if (syscall(__NR_async_wait, need - got) < 0 && errno != EINTR)
                die("async_wait");
            got += reap();
        }
        inflight -= got;
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
        else if (!strcmp(a, "--plain-nowait"))
            opt_plain = opt_nowait = 1;
        else if (!strcmp(a, "--async"))
            opt_async = 1;
        else if (!strcmp(a, "--direct"))
            opt_direct = 1;
        else if (!strcmp(a, "--write"))
            opt_write = 1;
        else if (!strcmp(a, "--drop-cache"))
            opt_drop = 1;
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
        else if (!strcmp(a, "--bs") && i + 1 < argc)
            opt_bs = strtoul(argv[++i], NULL, 0);
        else if (!strcmp(a, "--ios") && i + 1 < argc)
            opt_ios = strtoul(argv[++i], NULL, 0);
        else if (!strcmp(a, "--seed") && i + 1 < argc)
            opt_seed = strtoul(argv[++i], NULL, 0);
        else if (a[0] != '-' && !path)
            path = a;
        else {
            fprintf(stderr, "usage: %s [--plain | --plain-nowait] [--async] [--direct] [--write] [--drop-cache] [--light-verify] [--iodepth N] [--bs N] [--ios N] [--seed N] "
                            "[--no-rate] [--cpu-rate] [--verbose] FILE\n       %s --make FILE MIB\n",
                    argv[0], argv[0]);
            return 2;
        }
    }
    if (!path || !opt_iodepth || !opt_bs || opt_bs % 8) {
        fprintf(stderr, "randread: need FILE, iodepth > 0 and bs a multiple of 8\n");
        return 2;
    }
    int fd = open(path, (opt_write ? O_RDWR : O_RDONLY) | (opt_direct ? O_DIRECT : 0));
    if (fd < 0)
        die(path);
    if (opt_drop && (fdatasync(fd) < 0 || posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0))
        die("posix_fadvise");
    struct stat st;
    if (fstat(fd, &st) < 0)
        die("fstat");
    nblocks = (unsigned long)st.st_size / opt_bs;
    if (!nblocks) {
        fprintf(stderr, "randread: %s is smaller than one block\n", path);
        return 2;
    }
    rng_state = opt_seed * 0x2545F4914F6CDD1DULL + 1;

    double t0, t1, c0, c1;
    if (opt_plain) {
        char *buf;
        if (posix_memalign((void **)&buf, 4096, opt_bs))
            die("posix_memalign");
        t0 = now();
        c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        run_plain(fd, buf);
        c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        t1 = now();
    } else {
        /* fio's init: a zeroed ring of iodepth slots, registered once,
         * before the clock starts. */
        ring = calloc(opt_iodepth, sizeof *ring);
        if (!ring)
            die("calloc");
        ahu.completion_ring = ring;
        ahu.ring_size_bytes = opt_iodepth * sizeof *ring;
        ahu.max_nr_threads = -1UL;
        if (syscall(__NR_async_register, &ahu, sizeof ahu) < 0)
            die("async_register");
        t0 = now();
        c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        run_syslet(fd);
        c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        t1 = now();
        if (syscall(__NR_async_unregister, &ahu, sizeof ahu) < 0)
            die("async_unregister");
    }
    printf("randread: ios=%lu bs=%lu iodepth=%lu blocks=%lu errors=%lu sum=%016llx\n",
           opt_ios, opt_bs, opt_iodepth, nblocks, errors, (unsigned long long)sum);
    if (opt_rate)
        printf("reads/s: %.0f\n", opt_ios / (t1 - t0));
    if (opt_cpu_rate)
        printf("cpu reads/s: %.0f\n", opt_ios / (c1 - c0));
    if (opt_verbose && !opt_plain)
        fprintf(stderr, "randread: sync=%lu async=%lu async_wait calls=%lu\n",
                sync_done, async_done, waits);
    return errors ? 1 : 0;
}
