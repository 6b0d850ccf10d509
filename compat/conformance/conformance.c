/* conformance.c -- the syslet ABI v1 conformance suite, as a C program.
 *
 * One check per item of the v1 specification (docs/spec.md sections 1-6, and
 * the rules of sections 8 and 12 that hold for v1 too): layouts, flags, stop conditions, SKIP, next chains, EFAULT
 * rules, refused calls, -ENOSYS, the ring's NULL-slot protocol, backpressure,
 * register/unregister errors, wait semantics, umem_add.  Every check talks to
 * the implementation the 2007 way only -- syscall() with the numbers of
 * syslet-numbers.h (1000-1004) -- so any implementation can be tested by
 * preloading it:
 *
 *     cc -O1 -pthread -I<dir of syslet.h> conformance.c -o conformance -ldl
 *     LD_PRELOAD=/path/to/impl.so ./conformance            # every check
 *     ./conformance --list                                  # id<TAB>section<TAB>title
 *     ./conformance 2.5-stop-zero 4-backpressure            # some of them
 *
 * (`syslet-compat conformance` does exactly this, from the copy of this file
 * inside the installed package.)  Only the item "h-functions" looks at more
 * than syscall(): syslet.h also declares the calls as exported functions.
 *
 * Each check runs in a child process of its own (fork before any syslet call:
 * every child starts with a fresh, unregistered context), with a time limit.
 * Output, one line per check on stdout:
 *
 *     id<TAB>ok<TAB>
 *     id<TAB>FAIL<TAB>reason
 *
 * and, first, "#<TAB>backend<TAB>NAME" when the implementation exports
 * syslet-compat's syslet_compat_backend() extension.  Exit status 0 when every
 * selected check passed, 1 otherwise, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <syslet.h>

#if !defined(__x86_64__)
#error "the syslet ABI v1 checked here is the x86_64 native layout"
#endif

#define SENTINEL ((long)0x5a5a5a5a5a5a5a5aL)
#define CHECK_TIMEOUT_MS 15000

/* ---- reporting -------------------------------------------------------------- */

static int g_report_fd = -1;

static void fail_at(int line, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void fail_at(int line, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    char out[1000];
    int m = snprintf(out, sizeof out, "%s (conformance.c:%d)", msg, line);
    for (int i = 0; i < m && i < (int)sizeof out; i++)
        if (out[i] == '\n' || out[i] == '\t')
            out[i] = ' ';
    if (g_report_fd >= 0 && write(g_report_fd, out, strlen(out)) < 0) {
        /* the parent reports the exit status instead */
    }
    _exit(1);
}

#define FAIL(...) fail_at(__LINE__, __VA_ARGS__)
#define CHECK(cond, ...) do { if (!(cond)) FAIL(__VA_ARGS__); } while (0)

static const char *ename(int e)
{
    static char buf[32];
    switch (e) {
#define E(x) case x: return #x;
    E(EINVAL) E(EFAULT) E(EBUSY) E(ENOSYS) E(EINTR) E(EBADF) E(ENOENT) E(EAGAIN)
    E(ENOMEM) E(ELOOP) E(EPERM) E(ECHILD) E(ETIME) E(ECANCELED) E(ESPIPE)
#undef E
    }
    snprintf(buf, sizeof buf, "errno %d", e);
    return buf;
}

/* A result in words: "-EINVAL", "4096". */
static const char *rstr(long r)
{
    static char buf[4][48];
    static int k;
    char *b = buf[k++ & 3];
    if (r < 0 && r > -4096)
        snprintf(b, 48, "-%s", ename((int)-r));
    else if (r == SENTINEL)
        snprintf(b, 48, "(not stored)");
    else
        snprintf(b, 48, "%ld", r);
    return b;
}

/* ---- the calls, the 2007 way ------------------------------------------------- */

static long s_register(void *ahu, unsigned long len)
{
    return syscall(__NR_async_register, ahu, len);
}

static struct syslet_uatom *s_exec(struct syslet_uatom *a)
{
    return (struct syslet_uatom *)syscall(__NR_async_exec, a);
}

static long s_wait(unsigned long min)
{
    return syscall(__NR_async_wait, min);
}

static long s_unregister(void *ahu, unsigned long len)
{
    return syscall(__NR_async_unregister, ahu, len);
}

static unsigned long s_umem_add(unsigned long *p, unsigned long inc)
{
    return (unsigned long)syscall(__NR_umem_add, p, inc);
}

#define EXEC_FAILED(p) ((long)(p) == -1L)

/* ---- time ---------------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void msleep(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) < 0 && errno == EINTR) {
    }
}

/* ---- memory: atoms, argument words, bad pages -------------------------------------- */

/* Contiguous, so SKIP_TO_NEXT_ON_STOP's address + 88 lands on at[i + 1]. */
static struct syslet_uatom at[64] __attribute__((aligned(64)));
static unsigned long words[1024];
static unsigned nwords;

/* A fresh argument word holding v. */
static unsigned long *W(unsigned long v)
{
    if (nwords >= sizeof words / sizeof *words)
        FAIL("conformance.c: out of argument words");
    words[nwords] = v;
    return &words[nwords++];
}

static long *R(void)
{
    return (long *)W((unsigned long)SENTINEL);
}

static void set_atom(struct syslet_uatom *a, unsigned long flags, unsigned long nr, long *ret,
                     struct syslet_uatom *next, unsigned long *const *args)
{
    memset(a, 0, sizeof *a);
    a->flags = flags;
    a->nr = nr;
    a->ret_ptr = ret;
    a->next = next;
    for (int i = 0; i < 6; i++)
        a->arg_ptr[i] = args[i];
}

/* ATOM(atom, flags, nr, ret_ptr, next, arg_ptr...) -- at least one arg_ptr
 * (NULL for none); the rest are NULL. */
#define ATOM(a, flags, nr, ret, next, ...) \
    set_atom((a), (flags), (nr), (ret), (next), (unsigned long *const[6]){__VA_ARGS__})

static long page_size(void)
{
    return sysconf(_SC_PAGESIZE);
}

/* A page that cannot be read or written. */
static void *noaccess_page(void)
{
    void *p = mmap(NULL, page_size(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
    return p;
}

/* Two pages: the first read-write, the second unreadable. */
static char *rw_then_noaccess(void)
{
    long ps = page_size();
    char *p = mmap(NULL, 2 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
    CHECK(mprotect(p + ps, ps, PROT_NONE) == 0, "mprotect: %s", strerror(errno));
    return p;
}

/* A read-only page filled with byte b. */
static void *readonly_page(int b)
{
    void *p = mmap(NULL, page_size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
    memset(p, b, page_size());
    CHECK(mprotect(p, page_size(), PROT_READ) == 0, "mprotect: %s", strerror(errno));
    return p;
}

/* ---- the completion ring ---------------------------------------------------------------- */

#define MAXSLOTS 64
static struct syslet_uatom *ring[MAXSLOTS];
static struct async_head_user ahu;
static unsigned nslots, cons;

static void reg(unsigned slots, unsigned long max_threads)
{
    memset(ring, 0, sizeof ring);
    ahu.completion_ring = ring;
    ahu.ring_size_bytes = slots * sizeof ring[0];
    ahu.max_nr_threads = max_threads;
    nslots = slots;
    cons = 0;
    long r = s_register(&ahu, sizeof ahu);
    CHECK(r == 0, "async_register(%u slots): %s", slots, r < 0 ? ename(errno) : "not 0");
}

static void unreg(void)
{
    long r = s_unregister(&ahu, sizeof ahu);
    CHECK(r == 0, "async_unregister: %s", r < 0 ? ename(errno) : "not 0");
}

static struct syslet_uatom *slot(unsigned i)
{
    return __atomic_load_n(&ring[i], __ATOMIC_ACQUIRE);
}

static unsigned ring_count(void)
{
    unsigned n = 0;
    for (unsigned i = 0; i < nslots; i++)
        n += slot(i) != NULL;
    return n;
}

/* The consumer: the entry at our index, or NULL; takes it (NULLs the slot). */
static struct syslet_uatom *reap1(void)
{
    struct syslet_uatom *v = slot(cons);
    if (!v)
        return NULL;
    __atomic_store_n(&ring[cons], NULL, __ATOMIC_RELEASE);
    cons = (cons + 1) % nslots;
    return v;
}

/* The next entry, polling ring memory only (no call into the library). */
static struct syslet_uatom *poll_entry(int timeout_ms)
{
    double end = now_ms() + timeout_ms;
    for (;;) {
        struct syslet_uatom *v = reap1();
        if (v || now_ms() > end)
            return v;
        msleep(1);
    }
}

static void expect_empty_ring(const char *what)
{
    msleep(30);
    unsigned n = ring_count();
    CHECK(n == 0, "%s: %u entr%s in the ring, expected none", what, n, n == 1 ? "y" : "ies");
}

/* async_exec must return the final atom (synchronous). */
static void exec_sync(struct syslet_uatom *first, struct syslet_uatom *expect, const char *what)
{
    struct syslet_uatom *r = s_exec(first);
    CHECK(!EXEC_FAILED(r), "%s: async_exec failed: %s", what, ename(errno));
    CHECK(r != NULL, "%s: async_exec went async, expected a synchronous completion", what);
    CHECK(r == expect, "%s: async_exec returned atom %p, expected %p", what, (void *)r,
          (void *)expect);
}

/* async_exec must go async (NULL); the final atom then arrives in the ring. */
static void exec_async(struct syslet_uatom *first, struct syslet_uatom *expect, const char *what)
{
    struct syslet_uatom *r = s_exec(first);
    CHECK(!EXEC_FAILED(r), "%s: async_exec failed: %s", what, ename(errno));
    CHECK(r == NULL, "%s: async_exec returned atom %p, expected NULL (went async)", what,
          (void *)r);
    if (expect) {
        struct syslet_uatom *e = poll_entry(5000);
        CHECK(e != NULL, "%s: no ring entry within 5 s", what);
        CHECK(e == expect, "%s: ring entry %p, expected the final atom %p", what, (void *)e,
              (void *)expect);
    }
}

/* Runs a syslet to its end whichever way it goes; returns the final atom. */
static struct syslet_uatom *run_syslet(struct syslet_uatom *first, const char *what)
{
    struct syslet_uatom *r = s_exec(first);
    CHECK(!EXEC_FAILED(r), "%s: async_exec failed: %s", what, ename(errno));
    if (r)
        return r;
    r = poll_entry(5000);
    CHECK(r != NULL, "%s: went async, no ring entry within 5 s", what);
    return r;
}

/* ---- helpers: pipes written later, a data file ---------------------------------------- */

struct late {
    int fd, delay_ms;
    const char *data;
    size_t n;
    double written_at;      /* just before the write */
    pthread_t t;
};

static void *late_main(void *p)
{
    struct late *l = p;
    msleep(l->delay_ms);
    l->written_at = now_ms();     /* read after pthread_join */
    if (write(l->fd, l->data, l->n) != (ssize_t)l->n) {
        /* the reader's check fails */
    }
    return NULL;
}

static void late_write(struct late *l, int fd, const char *data, int delay_ms)
{
    l->fd = fd;
    l->data = data;
    l->n = strlen(data);
    l->delay_ms = delay_ms;
    l->written_at = 0;
    CHECK(pthread_create(&l->t, NULL, late_main, l) == 0, "pthread_create failed");
}

static double late_join(struct late *l)
{
    pthread_join(l->t, NULL);
    return l->written_at;
}

static void mkpipe(int p[2])
{
    CHECK(pipe(p) == 0, "pipe: %s", strerror(errno));
}

#define DATA_SIZE (64 * 1024)
static unsigned char data_pattern(size_t i)
{
    return (unsigned char)(i * 131 + (i >> 9));
}

/* A temporary file of DATA_SIZE pattern bytes, in the page cache.  Its path
 * goes to path (the caller unlinks it), or it is unlinked at once. */
static int data_file_at(char *path, size_t size)
{
    const char *dir = getenv("TMPDIR");
    snprintf(path, size, "%s/syslet-conformance-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp(%s): %s", path, strerror(errno));
    static unsigned char buf[DATA_SIZE];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = data_pattern(i);
    CHECK(write(fd, buf, sizeof buf) == (ssize_t)sizeof buf, "write: %s", strerror(errno));
    return fd;
}

static int data_file(void)
{
    char path[4096];
    int fd = data_file_at(path, sizeof path);
    unlink(path);
    return fd;
}

static int same_as_file(const unsigned char *b, size_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] != data_pattern(off + i))
            return 0;
    return 1;
}

/* ==== section 1: ABI v1 ================================================================ */

static void c_atom_layout(void)
{
    /* The header's own layout first (the program is built against it). */
    _Static_assert(sizeof(struct syslet_uatom) == 88, "atom size");
    _Static_assert(offsetof(struct syslet_uatom, flags) == 0, "flags");
    _Static_assert(offsetof(struct syslet_uatom, nr) == 8, "nr");
    _Static_assert(offsetof(struct syslet_uatom, ret_ptr) == 16, "ret_ptr");
    _Static_assert(offsetof(struct syslet_uatom, next) == 24, "next");
    _Static_assert(offsetof(struct syslet_uatom, arg_ptr) == 32, "arg_ptr");
    _Static_assert(offsetof(struct syslet_uatom, private) == 80, "private");
    /* Then what the implementation reads: two atoms as raw words. */
    reg(4, -1UL);
    static unsigned long w[2][11] __attribute__((aligned(8)));
    unsigned long counter = 10;
    long r0 = SENTINEL, r1 = SENTINEL;
    void *bad = noaccess_page();
    w[0][0] = 0;                                   /* flags */
    w[0][1] = __NR_umem_add;                       /* nr */
    w[0][2] = (unsigned long)&r0;                  /* ret_ptr */
    w[0][3] = (unsigned long)w[1];                 /* next */
    w[0][4] = (unsigned long)W((unsigned long)&counter);
    w[0][5] = (unsigned long)W(5);
    w[0][10] = (unsigned long)bad;                 /* private: never touched */
    w[1][0] = 0;
    w[1][1] = SYS_getpid;
    w[1][2] = (unsigned long)&r1;
    w[1][3] = 0;
    w[1][10] = 0xfeedfacecafef00dUL;
    struct syslet_uatom *f = s_exec((struct syslet_uatom *)w[0]);
    CHECK(!EXEC_FAILED(f), "async_exec: %s", ename(errno));
    if (!f)
        f = poll_entry(5000);
    CHECK(f == (struct syslet_uatom *)w[1], "final atom %p, expected the second one %p",
          (void *)f, (void *)w[1]);
    CHECK(counter == 15 && r0 == 15, "umem_add atom (nr @8, args @32/@40, ret_ptr @16): "
          "counter %lu, result %s; expected 15, 15", counter, rstr(r0));
    CHECK(r1 == getpid(), "second atom (next @24): result %s, expected getpid() %d", rstr(r1),
          (int)getpid());
    CHECK(w[0][10] == (unsigned long)bad && w[1][10] == 0xfeedfacecafef00dUL,
          "private @80 was written");
}

static void c_head_layout(void)
{
    _Static_assert(sizeof(struct async_head_user) == 24, "ahu size");
    _Static_assert(offsetof(struct async_head_user, completion_ring) == 0, "completion_ring");
    _Static_assert(offsetof(struct async_head_user, ring_size_bytes) == 8, "ring_size_bytes");
    _Static_assert(offsetof(struct async_head_user, max_nr_threads) == 16, "max_nr_threads");
    static struct syslet_uatom *slots[4];
    unsigned long h[3] = {(unsigned long)slots, 2 * sizeof slots[0], -1UL};
    long r = s_register(h, sizeof h);
    CHECK(r == 0, "async_register(raw words): %s", ename(errno));
    /* completion_ring @0 and ring_size_bytes @8: two slots, entries wrap */
    for (int i = 0; i < 3; i++) {
        ATOM(&at[i], SYSLET_ASYNC, SYS_getpid, R(), NULL, NULL);
        struct syslet_uatom *e = s_exec(&at[i]);
        CHECK(e == NULL, "SYSLET_ASYNC getpid #%d did not go async", i);
        double end = now_ms() + 5000;
        while (!__atomic_load_n(&slots[i % 2], __ATOMIC_ACQUIRE) && now_ms() < end)
            msleep(1);
        CHECK(slots[i % 2] == &at[i], "entry %d in slot %d: %p, expected %p (a ring of "
              "ring_size_bytes / 8 = 2 slots at completion_ring)", i, i % 2, (void *)slots[i % 2],
              (void *)&at[i]);
        CHECK(slots[2] == NULL && slots[3] == NULL, "an entry beyond ring_size_bytes");
        slots[i % 2] = NULL;
    }
    r = s_unregister(h, sizeof h);
    CHECK(r == 0, "async_unregister(raw words): %s", ename(errno));
    /* max_nr_threads @16: 0 makes every syslet synchronous */
    unsigned long h0[3] = {(unsigned long)slots, 2 * sizeof slots[0], 0};
    CHECK(s_register(h0, sizeof h0) == 0, "async_register(max_nr_threads 0): %s", ename(errno));
    ATOM(&at[3], SYSLET_ASYNC, SYS_getpid, R(), NULL, NULL);
    struct syslet_uatom *e = s_exec(&at[3]);
    CHECK(e == &at[3], "max_nr_threads = 0 (@16): a SYSLET_ASYNC syslet returned %p, expected "
          "it synchronously", (void *)e);
}

static void c_umem_add(void)
{
    unsigned long x = 10;
    errno = 0;
    unsigned long v = s_umem_add(&x, 5);
    CHECK(v == 15 && x == 15, "umem_add(&10, 5) returned %ld (%s), word %lu; expected 15",
          (long)v, errno ? ename(errno) : "no error", x);
    v = s_umem_add(&x, -1UL);
    CHECK(v == 14 && x == 14, "umem_add(&15, -1UL) returned %lu, expected 14 (wraps modulo 2^64)",
          v);
}

static unsigned long g_shared;

static void *adder(void *p)
{
    (void)p;
    for (int i = 0; i < 20000; i++)
        s_umem_add(&g_shared, 1);
    return NULL;
}

static void c_umem_add_atomic(void)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&t[i], NULL, adder, NULL) == 0, "pthread_create");
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(g_shared == 80000, "4 threads x 20000 umem_add(&w, 1): %lu, expected 80000", g_shared);
}

static void c_umem_add_efault(void)
{
    void *bad = noaccess_page();
    errno = 0;
    long r = syscall(__NR_umem_add, bad, 1UL);
    CHECK(r == -1 && errno == EFAULT, "umem_add(unmapped, 1): %ld, %s; expected -1/EFAULT", r,
          ename(errno));
    void *ro = readonly_page(0);
    errno = 0;
    r = syscall(__NR_umem_add, ro, 1UL);
    CHECK(r == -1 && errno == EFAULT, "umem_add(read-only word, 1): %ld, %s; expected -1/EFAULT",
          r, ename(errno));
    CHECK(*(unsigned long *)ro == 0, "umem_add changed a read-only word");
}

static void c_wait_zero(void)
{
    reg(4, -1UL);
    double t0 = now_ms();
    long r = s_wait(0);
    CHECK(r == 0, "async_wait(0): %ld (%s), expected 0", r, ename(errno));
    CHECK(now_ms() - t0 < 1000, "async_wait(0) took %.0f ms", now_ms() - t0);
}

static void on_signal(int sig)
{
    (void)sig;
}

struct kicker {
    pthread_t target, t;
    int delay_ms;
};

static void *kick_main(void *p)
{
    struct kicker *k = p;
    msleep(k->delay_ms);
    pthread_kill(k->target, SIGUSR1);
    return NULL;
}

static void c_wait_eintr(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;      /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0, "sigaction");
    reg(4, -1UL);
    struct kicker k = {pthread_self(), 0, 150};
    CHECK(pthread_create(&k.t, NULL, kick_main, &k) == 0, "pthread_create");
    double t0 = now_ms();
    errno = 0;
    long r = s_wait(1);
    double dt = now_ms() - t0;
    pthread_join(k.t, NULL);
    CHECK(r == -1 && errno == EINTR, "async_wait(1) with an empty ring, signal after 150 ms: "
          "%ld, %s; expected -1/EINTR", r, ename(errno));
    CHECK(dt > 100, "async_wait(1) returned after %.0f ms, before the signal", dt);
}

/* ==== section 2: executing a syslet ===================================================== */

static void c_first_atom_efault(void)
{
    reg(4, -1UL);
    void *bad = noaccess_page();
    errno = 0;
    struct syslet_uatom *r = s_exec(bad);
    CHECK(EXEC_FAILED(r) && errno == EFAULT, "async_exec(unmapped atom): %p, %s; expected "
          "-1/EFAULT", (void *)r, ename(errno));
    errno = 0;
    r = s_exec(NULL);
    CHECK(EXEC_FAILED(r) && errno == EFAULT, "async_exec(NULL): %p, %s; expected -1/EFAULT",
          (void *)r, ename(errno));
    /* An atom whose first 32 bytes are readable and whose arg_ptr words are
     * not: unreadable, nothing runs (its ret_ptr stays untouched). */
    char *p = rw_then_noaccess();
    struct syslet_uatom *a = (struct syslet_uatom *)(p + page_size() - 32);
    long *ret = R();
    a->flags = 0;
    a->nr = SYS_getpid;
    a->ret_ptr = ret;
    a->next = NULL;
    errno = 0;
    r = s_exec(a);
    CHECK(EXEC_FAILED(r) && errno == EFAULT, "async_exec(atom straddling into an unmapped "
          "page): %p, %s; expected -1/EFAULT", (void *)r, ename(errno));
    CHECK(*ret == SENTINEL, "the straddling atom ran (result %s stored)", rstr(*ret));
    expect_empty_ring("after EFAULT");
}

static void c_later_atom_unreadable(void)
{
    reg(4, -1UL);
    void *bad = noaccess_page();
    unsigned long cnt = 0;
    ATOM(&at[0], 0, __NR_umem_add, R(), bad, W((unsigned long)&cnt), W(1));
    exec_sync(&at[0], &at[0], "synchronous syslet whose next atom is unmapped");
    CHECK(cnt == 1, "the readable atom did not run (counter %lu)", cnt);
    ATOM(&at[1], SYSLET_ASYNC, __NR_umem_add, R(), bad, W((unsigned long)&cnt), W(1));
    exec_async(&at[1], &at[1], "asynchronous syslet whose next atom is unmapped");
    CHECK(cnt == 2, "the readable atom did not run (counter %lu)", cnt);
    expect_empty_ring("after the final atom");
}

static void c_live_arguments(void)
{
    reg(4, -1UL);
    char path[4096];
    int fd = data_file_at(path, sizeof path);
    /* umem_add moves the offset word; the pread64 after it reads it then */
    unsigned long *off = W(4096);
    static unsigned char buf[4096];
    long *rd = R();
    ATOM(&at[0], 0, __NR_umem_add, R(), &at[1], W((unsigned long)off), W(8192));
    ATOM(&at[1], 0, SYS_pread64, rd, NULL, W(fd), W((unsigned long)buf), W(4096), off);
    struct syslet_uatom *f = run_syslet(&at[0], "umem_add(&off) -> pread64(off)");
    CHECK(f == &at[1], "final atom %p, expected the pread64", (void *)f);
    CHECK(*rd == 4096 && same_as_file(buf, 12288, 4096), "pread64 after umem_add(&off, 8192): "
          "result %s, data %s; expected the page at 12288 (the offset as it was when the atom ran)",
          rstr(*rd), same_as_file(buf, 4096, 4096) ? "of offset 4096 (read at submission)" : "wrong");
    /* an open whose result is stored in the next atom's fd word */
    long *fdw = (long *)W(-1UL);
    long *r2 = R(), *r3 = R();
    static unsigned char b2[100];
    ATOM(&at[2], SYSLET_STOP_ON_NEGATIVE, SYS_open, fdw, &at[3], W((unsigned long)path),
         W(O_RDONLY), W(0));
    ATOM(&at[3], 0, SYS_pread64, r2, &at[4], (unsigned long *)fdw, W((unsigned long)b2), W(100),
         W(300));
    ATOM(&at[4], 0, SYS_close, r3, NULL, (unsigned long *)fdw);
    f = run_syslet(&at[2], "open -> pread64(fd from open's ret_ptr) -> close");
    unlink(path);
    CHECK(*fdw >= 0, "open: %s", rstr(*fdw));
    CHECK(f == &at[4], "final atom %p, expected the close", (void *)f);
    CHECK(*r2 == 100 && same_as_file(b2, 300, 100), "pread64 of the fd the open stored: %s",
          rstr(*r2));
    CHECK(*r3 == 0, "close of that fd: %s", rstr(*r3));
}

static void c_null_ends_args(void)
{
    reg(4, -1UL);
    int fd = data_file();
    CHECK(lseek(fd, 50, SEEK_SET) == 50, "lseek");
    void *bad = noaccess_page();
    long *r = R();
    /* lseek(fd, [NULL], [-> SEEK_END], [-> unmapped]): the arguments after
     * the first NULL are 0 and are not read: lseek(fd, 0, SEEK_SET) */
    ATOM(&at[0], 0, SYS_lseek, r, NULL, W(fd), NULL, W(SEEK_END), bad);
    exec_sync(&at[0], &at[0], "lseek with arg_ptr[1] NULL");
    CHECK(*r == 0, "lseek(fd, <NULL>, <SEEK_END>, <unmapped>): %s; expected 0 (arguments after "
          "the first NULL are 0, pointers after it are not read)", rstr(*r));
}

static void c_bad_arg_pointer(void)
{
    reg(4, -1UL);
    void *bad = noaccess_page();
    unsigned long x = 7, y = 0;
    long *r0 = R(), *r1 = R();
    /* first atom: umem_add(&x, <unmapped>) is not executed, -EFAULT; the
     * syslet goes on (no STOP bits) */
    ATOM(&at[0], 0, __NR_umem_add, r0, &at[1], W((unsigned long)&x), bad);
    ATOM(&at[1], 0, __NR_umem_add, r1, NULL, W((unsigned long)&y), W(1));
    exec_sync(&at[0], &at[1], "umem_add(&x, <unmapped>) -> umem_add(&y, 1)");
    CHECK(*r0 == -EFAULT, "atom with an unreadable argument pointer: result %s, expected -EFAULT",
          rstr(*r0));
    CHECK(x == 7, "the atom with an unreadable argument pointer ran (x = %lu)", x);
    CHECK(*r1 == 1 && y == 1, "the next atom did not run");
    /* a later atom, with STOP_ON_NEGATIVE: it is the final atom */
    long *r2 = R(), *r3 = R();
    ATOM(&at[2], 0, SYS_getpid, R(), &at[3], NULL);
    ATOM(&at[3], SYSLET_STOP_ON_NEGATIVE, SYS_lseek, r2, &at[4], bad, W(0), W(0));
    ATOM(&at[4], 0, SYS_getpid, r3, NULL, NULL);
    exec_sync(&at[2], &at[3], "getpid -> lseek(<unmapped>, ...)[STOP_ON_NEGATIVE] -> getpid");
    CHECK(*r2 == -EFAULT && *r3 == SENTINEL, "lseek(<unmapped>): %s, next atom %s; expected "
          "-EFAULT and the syslet stopped", rstr(*r2), *r3 == SENTINEL ? "did not run" : "ran");
}

static void c_errno_convention(void)
{
    reg(4, -1UL);
    long *r0 = R(), *r1 = R(), *r2 = R();
    static unsigned char buf[16];
    ATOM(&at[0], 0, SYS_lseek, r0, &at[1], W(1000000), W(0), W(0));
    ATOM(&at[1], 0, SYS_read, r1, &at[2], W(1000001), W((unsigned long)buf), W(16));
    ATOM(&at[2], 0, SYS_open, r2, NULL, W((unsigned long)"/nonexistent/syslet-conformance"),
         W(O_RDONLY), W(0));
    run_syslet(&at[0], "failing calls");
    CHECK(*r0 == -EBADF, "lseek(bad fd): %s, expected -EBADF", rstr(*r0));
    CHECK(*r1 == -EBADF, "read(bad fd): %s, expected -EBADF", rstr(*r1));
    CHECK(*r2 == -ENOENT, "open(missing file): %s, expected -ENOENT", rstr(*r2));
}

static void c_unknown_nr(void)
{
    reg(4, -1UL);
    /* (1000-1039 is the project's range: refused, not unknown; 6-refused-numbers) */
    static const unsigned long nrs[] = {999, 1040, 0x100000000UL + SYS_getpid, -1UL};
    for (unsigned i = 0; i < sizeof nrs / sizeof *nrs; i++) {
        long *r = R();
        ATOM(&at[i], 0, nrs[i], r, NULL, NULL);
        run_syslet(&at[i], "unknown nr");
        CHECK(*r == -ENOSYS, "atom nr %#lx: %s, expected -ENOSYS", nrs[i], rstr(*r));
    }
}

/* Runs one atom of number nr in a grandchild (it may be fork, exit...);
 * returns its result, or FAILs. */
static long refused_in_grandchild(unsigned long nr, const char *name)
{
    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(p[0]);
        g_report_fd = -1;       /* this grandchild reports through p only */
        long msg[3] = {getpid(), SENTINEL, 0};
        memset(ring, 0, sizeof ring);
        ahu.completion_ring = ring;
        ahu.ring_size_bytes = 4 * sizeof ring[0];
        ahu.max_nr_threads = -1UL;
        nslots = 4;
        if (s_register(&ahu, sizeof ahu) != 0) {
            msg[2] = errno;
        } else {
            long *r = R();
            static char *const argv[] = {"/bin/true", NULL};
            /* arguments that would make each call do something if it ran */
            ATOM(&at[0], 0, nr, r, NULL, W(nr == SYS_execve ? (unsigned long)"/bin/true" : 0),
                 W(nr == SYS_execve ? (unsigned long)argv : 0), W(0));
            struct syslet_uatom *f = s_exec(&at[0]);
            if (EXEC_FAILED(f))
                msg[2] = errno;
            else if (!f)
                poll_entry(3000);
            msg[0] = getpid();
            msg[1] = *r;
        }
        if (write(p[1], msg, sizeof msg) < 0) {
        }
        _exit(0);
    }
    close(p[1]);
    long msg[3] = {0, SENTINEL, 0};
    ssize_t n = read(p[0], msg, sizeof msg);
    close(p[0]);
    int st;
    waitpid(pid, &st, 0);
    /* a forked copy would report too, with another pid: reap strays */
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    CHECK(n == (ssize_t)sizeof msg, "an atom of %s (nr %lu): the process did not survive it (%s)",
          name, nr, WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "exited");
    CHECK(msg[2] == 0, "an atom of %s (nr %lu): async_register or async_exec failed: %s", name, nr,
          ename((int)msg[2]));
    pid_t who = (pid_t)msg[0];
    long res = msg[1];
    CHECK(who == pid, "an atom of %s (nr %lu) ran in another process", name, nr);
    return res;
}

static void c_refused(void)
{
    static const struct { unsigned long nr; const char *name; } calls[] = {
        {SYS_fork, "fork"}, {SYS_vfork, "vfork"}, {SYS_clone, "clone"}, {435, "clone3"},
        {SYS_execve, "execve"}, {322, "execveat"}, {SYS_exit, "exit"},
        {SYS_exit_group, "exit_group"}, {SYS_rt_sigreturn, "rt_sigreturn"},
    };
    for (unsigned i = 0; i < sizeof calls / sizeof *calls; i++) {
        long r = refused_in_grandchild(calls[i].nr, calls[i].name);
        CHECK(r == -EINVAL, "an atom of %s (nr %lu): %s, expected -EINVAL", calls[i].name,
              calls[i].nr, rstr(r));
    }
}

static void c_other_calls_accepted(void)
{
    reg(8, -1UL);
    static struct utsname u;
    static char cwd[4096];
    int p[2];
    mkpipe(p);
    long *r[8];
    for (int i = 0; i < 8; i++)
        r[i] = R();
    struct timespec ts = {0, 20 * 1000000L};
    ATOM(&at[0], 0, SYS_getppid, r[0], &at[1], NULL);
    ATOM(&at[1], 0, SYS_uname, r[1], &at[2], W((unsigned long)&u));
    ATOM(&at[2], 0, SYS_fcntl, r[2], &at[3], W(p[1]), W(F_GETFL));
    ATOM(&at[3], 0, SYS_getcwd, r[3], &at[4], W((unsigned long)cwd), W(sizeof cwd));
    ATOM(&at[4], 0, SYS_nanosleep, r[4], &at[5], W((unsigned long)&ts), W(0));
    ATOM(&at[5], 0, SYS_write, r[5], &at[6], W(p[1]), W((unsigned long)"xyz"), W(3));
    ATOM(&at[6], 0, 283 /* timerfd_create */, r[6], &at[7], W(CLOCK_MONOTONIC), W(0));
    ATOM(&at[7], 0, SYS_close, r[7], NULL, (unsigned long *)r[6]);
    struct syslet_uatom *f = run_syslet(&at[0], "getppid, uname, fcntl, getcwd, nanosleep, "
                                        "write, timerfd_create, close");
    CHECK(f == &at[7], "final atom %p, expected the last one", (void *)f);
    struct utsname mine;
    uname(&mine);
    CHECK(*r[0] == getppid(), "getppid: %s", rstr(*r[0]));
    CHECK(*r[1] == 0 && strcmp(u.sysname, mine.sysname) == 0, "uname: %s", rstr(*r[1]));
    CHECK(*r[2] == fcntl(p[1], F_GETFL), "fcntl(F_GETFL): %s", rstr(*r[2]));
    CHECK(*r[3] > 0 && strlen(cwd) + 1 == (size_t)*r[3], "getcwd: %s", rstr(*r[3]));
    CHECK(*r[4] == 0, "nanosleep: %s", rstr(*r[4]));
    CHECK(*r[5] == 3, "write to a pipe: %s", rstr(*r[5]));
    CHECK(*r[6] >= 0, "timerfd_create: %s", rstr(*r[6]));
    CHECK(*r[7] == 0, "close of the timerfd: %s", rstr(*r[7]));
    /* a call that blocks, in the background */
    long *r8 = R();
    struct timespec ts2 = {0, 30 * 1000000L};
    ATOM(&at[8], SYSLET_ASYNC, SYS_nanosleep, r8, NULL, W((unsigned long)&ts2), W(0));
    exec_async(&at[8], &at[8], "SYSLET_ASYNC nanosleep");
    CHECK(*r8 == 0, "nanosleep in the background: %s", rstr(*r8));
}

static void c_ret_before_stop(void)
{
    reg(4, -1UL);
    long *r = R();
    ATOM(&at[0], SYSLET_STOP_ON_NEGATIVE, SYS_lseek, r, &at[1], W(1000000), W(0), W(0));
    ATOM(&at[1], 0, SYS_getpid, R(), NULL, NULL);
    exec_sync(&at[0], &at[0], "lseek(bad fd)[STOP_ON_NEGATIVE]");
    CHECK(*r == -EBADF, "the stopping atom's result %s was not stored (expected -EBADF)",
          rstr(*r));
    /* ret_ptr NULL: nothing stored, the syslet runs */
    unsigned long x = 0;
    ATOM(&at[2], 0, __NR_umem_add, NULL, &at[3], W((unsigned long)&x), W(1));
    ATOM(&at[3], 0, SYS_getpid, NULL, NULL, NULL);
    exec_sync(&at[2], &at[3], "atoms with ret_ptr NULL");
    CHECK(x == 1, "umem_add with ret_ptr NULL did not run");
}

static void c_unwritable_ret(void)
{
    reg(4, -1UL);
    long *ro = readonly_page(0x11);
    unsigned long x = 0;
    ATOM(&at[0], 0, SYS_getpid, ro, &at[1], NULL);
    ATOM(&at[1], 0, __NR_umem_add, R(), NULL, W((unsigned long)&x), W(1));
    exec_sync(&at[0], &at[0], "getpid with a read-only ret_ptr -> umem_add");
    CHECK(x == 0, "the syslet went on after an unwritable ret_ptr");
    ATOM(&at[2], SYSLET_ASYNC, SYS_getpid, ro, &at[3], NULL);
    ATOM(&at[3], 0, __NR_umem_add, R(), NULL, W((unsigned long)&x), W(1));
    exec_async(&at[2], &at[2], "SYSLET_ASYNC getpid with a read-only ret_ptr -> umem_add");
    CHECK(x == 0, "the async syslet went on after an unwritable ret_ptr");
}

/* Runs umem_add(&c, 1) with c = result - 1 and the given flags, then
 * umem_add(&d, 1); returns 1 if the syslet stopped at the first atom. */
static int stops(unsigned long flags, long result)
{
    static int k;
    struct syslet_uatom *a = &at[2 * (k % 16)], *b = a + 1;
    k++;
    unsigned long c = (unsigned long)(result - 1), d = 0;
    long *r = R();
    ATOM(a, flags, __NR_umem_add, r, b, W((unsigned long)&c), W(1));
    ATOM(b, 0, __NR_umem_add, R(), NULL, W((unsigned long)&d), W(1));
    struct syslet_uatom *f = run_syslet(a, "stop test");
    CHECK(*r == result, "umem_add result %s, expected %ld", rstr(*r), result);
    CHECK((f == a) == (d == 0) && (f == a || f == b), "final atom and the next atom's effect "
          "disagree (final %p, next ran: %s)", (void *)f, d ? "yes" : "no");
    return f == a;
}

static void check_stop(unsigned long flags, const char *name, int neg, int zero, int pos)
{
    if (!nslots)
        reg(8, -1UL);
    const long results[3] = {-5, 0, 7};
    const int expect[3] = {neg, zero, pos};
    for (int i = 0; i < 3; i++) {
        int s = stops(flags, results[i]);
        CHECK(s == expect[i], "%s with result %ld: %s, expected it to %s", name, results[i],
              s ? "stopped" : "went on", expect[i] ? "stop" : "go on");
    }
}

static void c_stop_nonzero(void) { check_stop(SYSLET_STOP_ON_NONZERO, "STOP_ON_NONZERO", 1, 0, 1); }
static void c_stop_zero(void) { check_stop(SYSLET_STOP_ON_ZERO, "STOP_ON_ZERO", 0, 1, 0); }
static void c_stop_negative(void) { check_stop(SYSLET_STOP_ON_NEGATIVE, "STOP_ON_NEGATIVE", 1, 0, 0); }
static void c_stop_non_positive(void)
{
    check_stop(SYSLET_STOP_ON_NON_POSITIVE, "STOP_ON_NON_POSITIVE", 1, 1, 0);
}

static void c_stop_any(void)
{
    check_stop(SYSLET_STOP_ON_NEGATIVE | SYSLET_STOP_ON_ZERO, "STOP_ON_NEGATIVE|STOP_ON_ZERO",
               1, 1, 0);
    check_stop(SYSLET_STOP_ON_ZERO | SYSLET_STOP_ON_NONZERO, "STOP_ON_ZERO|STOP_ON_NONZERO",
               1, 1, 1);
    check_stop(0, "no STOP bit", 0, 0, 0);
}

static void c_next_chain(void)
{
    reg(4, -1UL);
    /* next may point anywhere: atoms in reverse memory order */
    unsigned long x = 0;
    long *r[4];
    for (int i = 0; i < 4; i++)
        r[i] = R();
    ATOM(&at[9], 0, __NR_umem_add, r[0], &at[5], W((unsigned long)&x), W(1));
    ATOM(&at[5], 0, __NR_umem_add, r[1], &at[7], W((unsigned long)&x), W(10));
    ATOM(&at[7], 0, __NR_umem_add, r[2], &at[2], W((unsigned long)&x), W(100));
    ATOM(&at[2], 0, __NR_umem_add, r[3], NULL, W((unsigned long)&x), W(1000));
    exec_sync(&at[9], &at[2], "four atoms linked by next, backwards in memory");
    CHECK(*r[0] == 1 && *r[1] == 11 && *r[2] == 111 && *r[3] == 1111,
          "results %s %s %s %s, expected 1 11 111 1111", rstr(*r[0]), rstr(*r[1]), rstr(*r[2]),
          rstr(*r[3]));
}

static void c_skip(void)
{
    reg(4, -1UL);
    unsigned long c1 = 0, c2 = 0;
    long *r0 = R();
    /* a0 stops (lseek fails) with SKIP: continues at a0 + 88 = a1, not at next = a2 */
    ATOM(&at[0], SYSLET_STOP_ON_NEGATIVE | SYSLET_SKIP_TO_NEXT_ON_STOP, SYS_lseek, r0, &at[2],
         W(1000000), W(0), W(0));
    ATOM(&at[1], 0, __NR_umem_add, R(), NULL, W((unsigned long)&c1), W(1));
    ATOM(&at[2], 0, __NR_umem_add, R(), NULL, W((unsigned long)&c2), W(1));
    exec_sync(&at[0], &at[1], "lseek(bad fd)[STOP_ON_NEGATIVE|SKIP_TO_NEXT_ON_STOP]");
    CHECK(*r0 == -EBADF && c1 == 1 && c2 == 0, "after a stop with SKIP: linear successor ran %lu "
          "time(s), next ran %lu time(s); expected 1, 0", c1, c2);
    /* the stop does not hold: next is followed */
    c1 = c2 = 0;
    ATOM(&at[3], SYSLET_STOP_ON_NEGATIVE | SYSLET_SKIP_TO_NEXT_ON_STOP, SYS_getpid, R(), &at[5],
         NULL);
    ATOM(&at[4], 0, __NR_umem_add, R(), NULL, W((unsigned long)&c1), W(1));
    ATOM(&at[5], 0, __NR_umem_add, R(), NULL, W((unsigned long)&c2), W(1));
    exec_sync(&at[3], &at[5], "getpid[STOP_ON_NEGATIVE|SKIP_TO_NEXT_ON_STOP]");
    CHECK(c1 == 0 && c2 == 1, "SKIP without a true stop: linear successor ran %lu, next %lu; "
          "expected 0, 1", c1, c2);
}

static void c_stop_without_skip(void)
{
    reg(4, -1UL);
    unsigned long c1 = 0, c2 = 0;
    ATOM(&at[0], SYSLET_STOP_ON_NEGATIVE, SYS_lseek, R(), &at[2], W(1000000), W(0), W(0));
    ATOM(&at[1], 0, __NR_umem_add, R(), NULL, W((unsigned long)&c1), W(1));
    ATOM(&at[2], 0, __NR_umem_add, R(), NULL, W((unsigned long)&c2), W(1));
    exec_sync(&at[0], &at[0], "lseek(bad fd)[STOP_ON_NEGATIVE] with next set");
    CHECK(c1 == 0 && c2 == 0, "the syslet went on after a stop without SKIP");
}

static void c_loops(void)
{
    reg(4, -1UL);
    /* a counted loop: umem_add(&n, -1)[STOP_ON_ZERO] -> umem_add(&ticks, 1) -> back */
    unsigned long n = 1000, ticks = 0;
    long *r = R();
    ATOM(&at[0], SYSLET_STOP_ON_ZERO, __NR_umem_add, r, &at[1], W((unsigned long)&n), W(-1UL));
    ATOM(&at[1], 0, __NR_umem_add, R(), &at[0], W((unsigned long)&ticks), W(1));
    struct syslet_uatom *f = run_syslet(&at[0], "a loop of 1000 rounds");
    CHECK(f == &at[0] && *r == 0 && n == 0 && ticks == 999, "loop ended at %p with n = %lu, "
          "ticks = %lu; expected the decrement, 0, 999", (void *)f, n, ticks);
    /* a read loop to EOF: read 1 byte [STOP_ON_NON_POSITIVE] -> count -> back */
    int fd = data_file();
    CHECK(lseek(fd, DATA_SIZE - 37, SEEK_SET) >= 0, "lseek");
    unsigned long count = 0;
    static unsigned char byte;
    long *rr = R();
    ATOM(&at[2], SYSLET_STOP_ON_NON_POSITIVE, SYS_read, rr, &at[3], W(fd),
         W((unsigned long)&byte), W(1));
    ATOM(&at[3], 0, __NR_umem_add, R(), &at[2], W((unsigned long)&count), W(1));
    f = run_syslet(&at[2], "read loop to EOF");
    CHECK(f == &at[2] && *rr == 0 && count == 37, "read loop: final %p, result %s, %lu bytes; "
          "expected the read, 0, 37", (void *)f, rstr(*rr), count);
}

static void c_no_default_budget(void)
{
    reg(4, -1UL);
    unsigned long n = 100000, ticks = 0;
    long *r = R();
    ATOM(&at[0], SYSLET_STOP_ON_ZERO, __NR_umem_add, r, &at[1], W((unsigned long)&n), W(-1UL));
    ATOM(&at[1], 0, __NR_umem_add, R(), &at[0], W((unsigned long)&ticks), W(1));
    struct syslet_uatom *f = run_syslet(&at[0], "a loop of 200000 atoms");
    CHECK(f == &at[0] && *r == 0 && n == 0, "a loop of 200000 atoms ended early: result %s, "
          "n = %lu (an atom budget must be off by default)", rstr(*r), n);
}

static void c_order(void)
{
    reg(4, -1UL);
    int p[2];
    mkpipe(p);
    static const char *letters[8] = {"a", "b", "c", "d", "e", "f", "g", "h"};
    for (int i = 0; i < 8; i++)
        ATOM(&at[i], i == 0 ? SYSLET_ASYNC : 0, SYS_write, R(), i < 7 ? &at[i + 1] : NULL,
             W(p[1]), W((unsigned long)letters[i]), W(1));
    exec_async(&at[0], &at[7], "8 writes into a pipe, SYSLET_ASYNC");
    char got[9] = {0};
    CHECK(read(p[0], got, 8) == 8, "pipe read");
    CHECK(strcmp(got, "abcdefgh") == 0, "the atoms wrote \"%s\", expected \"abcdefgh\" (in order)",
          got);
}

static void c_concurrent(void)
{
    reg(8, -1UL);
    int p1[2], p2[2];
    mkpipe(p1);
    mkpipe(p2);
    static char b1[4], b2[4];
    ATOM(&at[0], 0, SYS_read, R(), NULL, W(p1[0]), W((unsigned long)b1), W(1));
    ATOM(&at[1], 0, SYS_read, R(), NULL, W(p2[0]), W((unsigned long)b2), W(1));
    exec_async(&at[0], NULL, "read of an empty pipe (1)");
    exec_async(&at[1], NULL, "read of an empty pipe (2)");
    CHECK(write(p2[1], "2", 1) == 1, "write");
    struct syslet_uatom *e1 = poll_entry(5000);
    CHECK(e1 == &at[1], "the second syslet (its pipe written first) did not complete while the "
          "first was blocked: entry %p", (void *)e1);
    CHECK(write(p1[1], "1", 1) == 1, "write");
    struct syslet_uatom *e2 = poll_entry(5000);
    CHECK(e2 == &at[0], "second entry %p, expected the first syslet", (void *)e2);
}

static void c_failing_atom_goes_on(void)
{
    reg(4, -1UL);
    long *r0 = R(), *r1 = R();
    ATOM(&at[0], 0, SYS_lseek, r0, &at[1], W(1000000), W(0), W(0));
    ATOM(&at[1], 0, SYS_getpid, r1, NULL, NULL);
    exec_sync(&at[0], &at[1], "lseek(bad fd) -> getpid");
    CHECK(*r0 == -EBADF && *r1 == getpid(), "results %s, %s", rstr(*r0), rstr(*r1));
}

/* ==== section 3: synchronous vs asynchronous ============================================ */

static void c_sync_no_entry(void)
{
    reg(4, -1UL);
    int fd = data_file();
    static unsigned char b[4][4096];
    long *r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = R();
        ATOM(&at[i], 0, SYS_pread64, r[i], i < 3 ? &at[i + 1] : NULL, W(fd), W((unsigned long)b[i]),
             W(4096), W(4096 * (unsigned long)(3 - i)));
    }
    exec_sync(&at[0], &at[3], "4 reads of a cached file");
    for (int i = 0; i < 4; i++)
        CHECK(*r[i] == 4096 && same_as_file(b[i], 4096 * (size_t)(3 - i), 4096),
              "read %d: %s", i, rstr(*r[i]));
    expect_empty_ring("a synchronous syslet");
}

static void c_would_block(void)
{
    reg(4, -1UL);
    int p[2];
    mkpipe(p);
    static char buf[8];
    unsigned long cnt = 0;
    long *r0 = R();
    ATOM(&at[0], 0, SYS_read, r0, &at[1], W(p[0]), W((unsigned long)buf), W(5));
    ATOM(&at[1], 0, __NR_umem_add, R(), NULL, W((unsigned long)&cnt), W(1));
    double t0 = now_ms();
    exec_async(&at[0], NULL, "read of an empty pipe");
    CHECK(now_ms() - t0 < 1000, "async_exec took %.0f ms to go async", now_ms() - t0);
    CHECK(*r0 == SENTINEL && cnt == 0, "the syslet finished before there was data");
    CHECK(write(p[1], "hello", 5) == 5, "write");
    struct syslet_uatom *e = poll_entry(5000);
    CHECK(e == &at[1], "ring entry %p, expected the final atom %p", (void *)e, (void *)&at[1]);
    CHECK(*r0 == 5 && memcmp(buf, "hello", 5) == 0 && cnt == 1, "read %s, counter %lu",
          rstr(*r0), cnt);
}

static void c_async_flag(void)
{
    reg(4, -1UL);
    long *r = R();
    ATOM(&at[0], SYSLET_ASYNC, SYS_getpid, r, NULL, NULL);
    exec_async(&at[0], &at[0], "SYSLET_ASYNC getpid");
    CHECK(*r == getpid(), "getpid: %s", rstr(*r));
}

static void c_sync_first(void)
{
    reg(4, -1UL);
    int p[2];
    mkpipe(p);
    static char buf[8];
    long *r1 = R();
    unsigned long cnt = 0;
    /* SYNC on the first atom only; the second atom blocks */
    ATOM(&at[0], SYSLET_SYNC, SYS_getpid, R(), &at[1], NULL);
    ATOM(&at[1], 0, SYS_read, r1, &at[2], W(p[0]), W((unsigned long)buf), W(3));
    ATOM(&at[2], 0, __NR_umem_add, R(), NULL, W((unsigned long)&cnt), W(1));
    struct late l;
    late_write(&l, p[1], "syn", 100);
    exec_sync(&at[0], &at[2], "getpid[SYNC] -> read of a pipe written 100 ms later -> umem_add");
    double back = now_ms();
    double w = late_join(&l);
    CHECK(back >= w, "async_exec returned before the pipe was written");
    CHECK(*r1 == 3 && cnt == 1, "read %s, counter %lu", rstr(*r1), cnt);
    expect_empty_ring("a SYSLET_SYNC syslet");
}

static void c_sync_later(void)
{
    reg(4, -1UL);
    int p[2];
    mkpipe(p);
    static char buf[8];
    long *r1 = R();
    ATOM(&at[0], 0, SYS_getpid, R(), &at[1], NULL);
    ATOM(&at[1], SYSLET_SYNC, SYS_read, r1, NULL, W(p[0]), W((unsigned long)buf), W(3));
    struct late l;
    late_write(&l, p[1], "lat", 100);
    exec_sync(&at[0], &at[1], "getpid -> read[SYNC] of a pipe written 100 ms later");
    double back = now_ms();
    double w = late_join(&l);
    CHECK(back >= w, "async_exec returned before the pipe was written");
    CHECK(*r1 == 3, "read %s", rstr(*r1));
    expect_empty_ring("a syslet that waited for its SYNC atom");
}

static void c_async_and_sync(void)
{
    reg(4, -1UL);
    long *r = R();
    ATOM(&at[0], SYSLET_ASYNC | SYSLET_SYNC, SYS_getpid, r, NULL, NULL);
    errno = 0;
    struct syslet_uatom *f = s_exec(&at[0]);
    CHECK(EXEC_FAILED(f) && errno == EINVAL, "ASYNC|SYNC on the first atom: %p, %s; expected "
          "-1/EINVAL", (void *)f, ename(errno));
    expect_empty_ring("after EINVAL");
    CHECK(*r == SENTINEL, "the ASYNC|SYNC atom ran");
}

static void c_fills_without_calls(void)
{
    reg(2, -1UL);
    int p[2];
    mkpipe(p);
    static char buf[4];
    unsigned long cnt = 0;
    ATOM(&at[0], 0, SYS_read, R(), &at[1], W(p[0]), W((unsigned long)buf), W(1));
    ATOM(&at[1], 0, __NR_umem_add, R(), &at[2], W((unsigned long)&cnt), W(1));
    ATOM(&at[2], 0, __NR_umem_add, R(), NULL, W((unsigned long)&cnt), W(1));
    exec_async(&at[0], NULL, "read of an empty pipe");
    CHECK(write(p[1], "!", 1) == 1, "write");
    /* only ring memory from here on: no call into the implementation */
    double end = now_ms() + 5000;
    while (!slot(0) && now_ms() < end)
        msleep(1);
    CHECK(slot(0) == &at[2], "ring slot 0: %p after 5 s of polling memory, expected the final "
          "atom %p", (void *)slot(0), (void *)&at[2]);
    CHECK(cnt == 2, "counter %lu, expected 2", cnt);
}

/* ==== section 4: the completion ring ====================================================== */

static void c_ring_size(void)
{
    static struct syslet_uatom *slots[8];
    static const unsigned long bad[] = {0, 12, 7, 1};
    for (unsigned i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct async_head_user h = {slots, bad[i], -1UL};
        errno = 0;
        long r = s_register(&h, sizeof h);
        CHECK(r == -1 && errno == EINVAL, "async_register(ring_size_bytes %lu): %ld, %s; "
              "expected -1/EINVAL", bad[i], r, ename(errno));
    }
    struct async_head_user h = {slots, 8, -1UL};
    CHECK(s_register(&h, sizeof h) == 0, "async_register(ring_size_bytes 8): %s", ename(errno));
}

static void c_slot_order(void)
{
    reg(4, -1UL);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 4; i++) {
            struct syslet_uatom *a = &at[4 * round + i];
            ATOM(a, SYSLET_ASYNC, SYS_getpid, R(), NULL, NULL);
            CHECK(s_exec(a) == NULL, "SYSLET_ASYNC getpid did not go async");
            double end = now_ms() + 5000;
            while (!slot((unsigned)i) && now_ms() < end)
                msleep(1);
            CHECK(slot((unsigned)i) == a, "round %d: entry in slot %d is %p, expected %p (the "
                  "producer writes at its own index, modulo 4)", round, i, (void *)slot((unsigned)i),
                  (void *)a);
            for (int j = 0; j < 4; j++)
                CHECK(j == i || !slot((unsigned)j), "round %d: an entry in slot %d too", round, j);
            __atomic_store_n(&ring[i], NULL, __ATOMIC_RELEASE);
        }
    }
}

static void c_backpressure(void)
{
    reg(2, -1UL);
    const int n = 8;
    for (int i = 0; i < n; i++) {
        ATOM(&at[i], SYSLET_ASYNC, SYS_getpid, R(), NULL, NULL);
        CHECK(s_exec(&at[i]) == NULL, "SYSLET_ASYNC getpid %d did not go async", i);
    }
    double end = now_ms() + 5000;
    while (ring_count() < 2 && now_ms() < end)
        msleep(1);
    msleep(50);
    CHECK(ring_count() == 2, "%u entries in a ring of 2 slots", ring_count());
    int seen[8] = {0}, got = 0;
    end = now_ms() + 10000;
    while (got < n && now_ms() < end) {
        struct syslet_uatom *e = reap1();
        if (!e) {
            msleep(1);
            continue;
        }
        long k = e - at;
        CHECK(k >= 0 && k < n, "ring entry %p is none of the syslets", (void *)e);
        CHECK(!seen[k], "syslet %ld published twice", k);
        seen[k] = 1;
        got++;
        msleep(5);      /* a slow consumer */
    }
    CHECK(got == n, "%d of %d entries arrived through a full ring (dropped?)", got, n);
    expect_empty_ring("after every entry");
}

static void c_wait_counts(void)
{
    reg(4, -1UL);
    int p1[2], p2[2], p3[2];
    mkpipe(p1);
    mkpipe(p2);
    mkpipe(p3);
    static char b[3][4];
    ATOM(&at[0], 0, SYS_read, R(), NULL, W(p1[0]), W((unsigned long)b[0]), W(1));
    ATOM(&at[1], 0, SYS_read, R(), NULL, W(p2[0]), W((unsigned long)b[1]), W(1));
    ATOM(&at[2], 0, SYS_read, R(), NULL, W(p3[0]), W((unsigned long)b[2]), W(1));
    exec_async(&at[0], NULL, "pipe read 1");
    exec_async(&at[1], NULL, "pipe read 2");
    struct late l1, l2;
    late_write(&l1, p1[1], "1", 30);
    late_write(&l2, p2[1], "2", 200);
    long r = s_wait(2);
    double back = now_ms();
    CHECK(r == 0, "async_wait(2): %s", ename(errno));
    double w2 = late_join(&l2);
    late_join(&l1);
    CHECK(back >= w2, "async_wait(2) returned with one entry in the ring");
    CHECK(ring_count() == 2, "async_wait(2) returned with %u entries", ring_count());
    /* consumed entries do not count */
    CHECK(reap1() && reap1(), "reap");
    CHECK(s_wait(0) == 0, "async_wait(0): %s", ename(errno));
    exec_async(&at[2], NULL, "pipe read 3");
    struct late l3;
    late_write(&l3, p3[1], "3", 100);
    r = s_wait(1);
    back = now_ms();
    double w3 = late_join(&l3);
    CHECK(r == 0, "async_wait(1): %s", ename(errno));
    CHECK(back >= w3, "async_wait(1) returned before the third entry (consumed entries counted)");
    CHECK(reap1() == &at[2], "third entry");
}

static void c_one_entry(void)
{
    reg(8, -1UL);
    unsigned long x = 0;
    for (int i = 0; i < 4; i++)
        ATOM(&at[i], i == 0 ? SYSLET_ASYNC : 0, __NR_umem_add, R(), i < 3 ? &at[i + 1] : NULL,
             W((unsigned long)&x), W(1));
    exec_async(&at[0], &at[3], "4 atoms, SYSLET_ASYNC");
    CHECK(x == 4, "counter %lu", x);
    expect_empty_ring("after the one entry of a 4-atom syslet");
}

static void c_no_complete_final(void)
{
    reg(4, -1UL);
    unsigned long x = 0;
    ATOM(&at[0], SYSLET_ASYNC, SYS_getpid, R(), &at[1], NULL);
    ATOM(&at[1], SYSLET_NO_COMPLETE, __NR_umem_add, R(), NULL, W((unsigned long)&x), W(1));
    exec_async(&at[0], NULL, "getpid[ASYNC] -> umem_add[NO_COMPLETE]");
    double end = now_ms() + 5000;
    while (__atomic_load_n(&x, __ATOMIC_ACQUIRE) == 0 && now_ms() < end)
        msleep(1);
    CHECK(x == 1, "the syslet did not run");
    msleep(50);
    expect_empty_ring("NO_COMPLETE on the final atom");
}

static void c_no_complete_other(void)
{
    reg(4, -1UL);
    unsigned long x = 0;
    ATOM(&at[0], SYSLET_ASYNC | SYSLET_NO_COMPLETE, SYS_getpid, R(), &at[1], NULL);
    ATOM(&at[1], 0, __NR_umem_add, R(), NULL, W((unsigned long)&x), W(1));
    exec_async(&at[0], &at[1], "getpid[ASYNC|NO_COMPLETE] -> umem_add");
    /* a synchronous syslet with NO_COMPLETE still returns its final atom */
    ATOM(&at[2], SYSLET_NO_COMPLETE, SYS_getpid, R(), NULL, NULL);
    exec_sync(&at[2], &at[2], "getpid[NO_COMPLETE], synchronous");
    expect_empty_ring("synchronous NO_COMPLETE");
}

/* ==== section 5: registration ============================================================== */

static void c_register_len(void)
{
    static struct syslet_uatom *slots[4];
    struct async_head_user h = {slots, sizeof slots, -1UL};
    static const unsigned long lens[] = {0, 16, 23, 25, 32};
    for (unsigned i = 0; i < sizeof lens / sizeof *lens; i++) {
        errno = 0;
        long r = s_register(&h, lens[i]);
        CHECK(r == -1 && errno == EINVAL, "async_register(ahu, len %lu): %ld, %s; expected "
              "-1/EINVAL", lens[i], r, ename(errno));
    }
    CHECK(s_register(&h, sizeof h) == 0, "async_register(ahu, 24): %s", ename(errno));
    errno = 0;
    long r = s_unregister(&h, 23);
    CHECK(r == -1 && errno == EINVAL, "async_unregister(ahu, 23): %ld, %s; expected -1/EINVAL",
          r, ename(errno));
}

static void c_register_busy(void)
{
    reg(4, -1UL);
    static struct syslet_uatom *other[4];
    struct async_head_user h2 = {other, sizeof other, -1UL};
    errno = 0;
    long r = s_register(&h2, sizeof h2);
    CHECK(r == -1 && errno == EBUSY, "a second async_register (another ring): %ld, %s; expected "
          "-1/EBUSY", r, ename(errno));
    errno = 0;
    r = s_register(&ahu, sizeof ahu);
    CHECK(r == -1 && errno == EBUSY, "a second async_register (the same ring): %ld, %s; expected "
          "-1/EBUSY", r, ename(errno));
    ATOM(&at[0], SYSLET_ASYNC, SYS_getpid, R(), NULL, NULL);
    exec_async(&at[0], &at[0], "the first ring still in use");
}

static void c_register_copies(void)
{
    static struct syslet_uatom *slots[4];
    long ps = page_size();
    struct async_head_user *h = mmap(NULL, ps, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(h != MAP_FAILED, "mmap");
    h->completion_ring = slots;
    h->ring_size_bytes = sizeof slots;
    h->max_nr_threads = -1UL;
    CHECK(s_register(h, sizeof *h) == 0, "async_register: %s", ename(errno));
    /* the ahu dies at once (the 2007 fio engine registered a dead stack variable) */
    memset(h, 0xee, sizeof *h);
    CHECK(munmap(h, ps) == 0, "munmap");
    long *r = R();
    ATOM(&at[0], SYSLET_ASYNC, SYS_getpid, r, NULL, NULL);
    CHECK(s_exec(&at[0]) == NULL, "SYSLET_ASYNC getpid after the ahu was unmapped: not async");
    double end = now_ms() + 5000;
    while (!__atomic_load_n(&slots[0], __ATOMIC_ACQUIRE) && now_ms() < end)
        msleep(1);
    CHECK(slots[0] == &at[0], "slot 0 after the ahu was unmapped: %p, expected %p",
          (void *)slots[0], (void *)&at[0]);
    struct async_head_user again = {slots, sizeof slots, -1UL};
    CHECK(s_unregister(&again, sizeof again) == 0, "async_unregister with a copy: %s",
          ename(errno));
}

static void c_unregister_identifies(void)
{
    reg(4, -1UL);
    static struct syslet_uatom *other[4];
    struct async_head_user wrong_ring = {other, sizeof ring[0] * 4, -1UL};
    struct async_head_user wrong_size = {ring, sizeof ring[0] * 8, -1UL};
    errno = 0;
    long r = s_unregister(&wrong_ring, sizeof wrong_ring);
    CHECK(r == -1 && errno == EINVAL, "async_unregister(another ring): %ld, %s; expected -1/EINVAL",
          r, ename(errno));
    errno = 0;
    r = s_unregister(&wrong_size, sizeof wrong_size);
    CHECK(r == -1 && errno == EINVAL, "async_unregister(same ring, other size): %ld, %s; "
          "expected -1/EINVAL", r, ename(errno));
    ATOM(&at[0], SYSLET_ASYNC, SYS_getpid, R(), NULL, NULL);
    exec_async(&at[0], &at[0], "still registered after the failed unregisters");
    struct async_head_user copy = {ring, sizeof ring[0] * 4, 12345};   /* other max_nr_threads */
    r = s_unregister(&copy, sizeof copy);
    CHECK(r == 0, "async_unregister(another ahu with the same ring and size): %s", ename(errno));
    errno = 0;
    r = s_unregister(&copy, sizeof copy);
    CHECK(r == -1 && errno == EINVAL, "async_unregister twice: %ld, %s; expected -1/EINVAL", r,
          ename(errno));
}

static void c_unregister_drains(void)
{
    reg(4, -1UL);
    int p[2];
    mkpipe(p);
    static char buf[8];
    unsigned long cnt = 0;
    long *r0 = R();
    ATOM(&at[0], 0, SYS_read, r0, &at[1], W(p[0]), W((unsigned long)buf), W(5));
    ATOM(&at[1], 0, __NR_umem_add, R(), NULL, W((unsigned long)&cnt), W(1));
    exec_async(&at[0], NULL, "read of an empty pipe");
    struct late l;
    late_write(&l, p[1], "drain", 150);
    long r = s_unregister(&ahu, sizeof ahu);
    double back = now_ms();
    double w = late_join(&l);
    CHECK(r == 0, "async_unregister: %s", ename(errno));
    CHECK(back >= w, "async_unregister returned while a syslet was in flight");
    CHECK(slot(0) == &at[1], "slot 0 after unregister: %p, expected the final atom (published "
          "before unregister returned)", (void *)slot(0));
    CHECK(*r0 == 5 && cnt == 1, "read %s, counter %lu", rstr(*r0), cnt);
}

static void c_exec_no_head(void)
{
    long *r = R();
    ATOM(&at[0], 0, SYS_getpid, r, NULL, NULL);
    errno = 0;
    struct syslet_uatom *f = s_exec(&at[0]);
    CHECK(EXEC_FAILED(f) && errno == EINVAL, "async_exec before any async_register: %p, %s; "
          "expected -1/EINVAL", (void *)f, ename(errno));
    reg(4, -1UL);
    exec_sync(&at[0], &at[0], "getpid");
    unreg();
    errno = 0;
    f = s_exec(&at[0]);
    CHECK(EXEC_FAILED(f) && errno == EINVAL, "async_exec after async_unregister: %p, %s; "
          "expected -1/EINVAL", (void *)f, ename(errno));
}

static void c_max_threads_zero(void)
{
    reg(4, 0);
    int p[2];
    mkpipe(p);
    static char buf[8];
    long *r = R();
    ATOM(&at[0], 0, SYS_read, r, NULL, W(p[0]), W((unsigned long)buf), W(4));
    struct late l;
    late_write(&l, p[1], "zero", 100);
    exec_sync(&at[0], &at[0], "max_nr_threads 0: read of a pipe written 100 ms later");
    double back = now_ms();
    CHECK(back >= late_join(&l), "returned before the data");
    CHECK(*r == 4, "read %s", rstr(*r));
    ATOM(&at[1], SYSLET_ASYNC, SYS_getpid, R(), NULL, NULL);
    exec_sync(&at[1], &at[1], "max_nr_threads 0: SYSLET_ASYNC getpid");
    expect_empty_ring("max_nr_threads 0");
}

static void c_max_threads_n(void)
{
    reg(8, 1);
    int p[3][2];
    static char b[3][4];
    for (int i = 0; i < 3; i++) {
        mkpipe(p[i]);
        ATOM(&at[i], 0, SYS_read, R(), NULL, W(p[i][0]), W((unsigned long)b[i]), W(2));
        exec_async(&at[i], NULL, "max_nr_threads 1: read of an empty pipe");
    }
    for (int i = 2; i >= 0; i--)
        CHECK(write(p[i][1], "ok", 2) == 2, "write");
    int seen[3] = {0};
    for (int k = 0; k < 3; k++) {
        struct syslet_uatom *e = poll_entry(5000);
        CHECK(e, "max_nr_threads 1: %d of 3 blocked syslets completed", k);
        long i = e - at;
        CHECK(i >= 0 && i < 3 && !seen[i], "unexpected entry %p", (void *)e);
        seen[i] = 1;
    }
}

static void c_register_again(void)
{
    reg(2, -1UL);
    unreg();
    reg(2, -1UL);
    ATOM(&at[0], SYSLET_ASYNC, SYS_getpid, R(), NULL, NULL);
    exec_async(&at[0], &at[0], "after unregister and register again");
}

/* ==== section 6: the call numbers ============================================================ */

static void c_numbers(void)
{
    reg(4, -1UL);       /* 1000 */
    ATOM(&at[0], 0, SYS_getpid, R(), NULL, NULL);
    exec_sync(&at[0], &at[0], "syscall(1001)");
    CHECK(s_wait(0) == 0, "syscall(1002, 0): %s", ename(errno));
    unsigned long x = 41;
    CHECK(s_umem_add(&x, 1) == 42, "syscall(1004)");
    unreg();            /* 1003 */
}

static void c_umem_add_atom(void)
{
    reg(4, -1UL);
    unsigned long x = 100;
    long *r0 = R(), *r1 = R(), *r2 = R();
    void *bad = noaccess_page();
    ATOM(&at[0], 0, __NR_umem_add, r0, &at[1], W((unsigned long)&x), W(23));
    ATOM(&at[1], 0, __NR_umem_add, r1, &at[2], W((unsigned long)&x), W(-200UL));
    ATOM(&at[2], 0, __NR_umem_add, r2, NULL, W((unsigned long)bad), W(1));
    exec_sync(&at[0], &at[2], "umem_add atoms");
    CHECK(*r0 == 123 && *r1 == -77 && x == (unsigned long)-77L, "umem_add atoms: %s, %s, word %ld; "
          "expected 123, -77 (stored as a signed long), -77", rstr(*r0), rstr(*r1), (long)x);
    CHECK(*r2 == -EFAULT, "umem_add atom on an unmapped word: %s, expected -EFAULT", rstr(*r2));
    /* 1012 and 1022, umem_add's numbers of v5 and v6, run it in every atom too */
    static const unsigned long more[] = {1012, 1022};
    for (int i = 0; i < 2; i++) {
        long *r = R();
        ATOM(&at[3 + i], 0, more[i], r, NULL, W((unsigned long)&x), W(1));
        exec_sync(&at[3 + i], &at[3 + i], "umem_add atom");
        CHECK(*r == -76 + i && x == (unsigned long)(-76L + i), "an atom with nr %lu: %s, word %ld; "
              "expected umem_add (-> %d)", more[i], rstr(*r), (long)x, -76 + i);
    }
}

static void c_refused_numbers(void)
{
    reg(4, -1UL);
    ATOM(&at[60], 0, SYS_getpid, R(), NULL, NULL);
    for (unsigned long nr = 1000; nr <= 1039; nr++) {
        if (nr == 1004 || nr == 1012 || nr == 1022)
            continue;       /* umem_add (6-umem_add-atom) */
        long *r = R();
        struct syslet_uatom *a = &at[nr % 50];
        /* arguments that would be valid for the call */
        ATOM(a, 0, nr, r, NULL, W(nr % 10 == 1 ? (unsigned long)&at[60] : (unsigned long)&ahu),
             W(sizeof ahu), W((unsigned long)&ahu));
        exec_sync(a, a, "an atom with a number of the project's range");
        CHECK(*r == -EINVAL, "an atom with nr %lu: %s, expected -EINVAL", nr, rstr(*r));
    }
    ATOM(&at[55], SYSLET_ASYNC, SYS_getpid, R(), NULL, NULL);
    exec_async(&at[55], &at[55], "the ring is still registered");
}

static void c_old_numbers(void)
{
    /* x86_64 280-283 and 286-289 were syslet numbers in 2007 patches; today
     * 283 is timerfd_create: syscall() must pass it on. */
    errno = 0;
    long fd = syscall(283, CLOCK_MONOTONIC, 0);
    CHECK(fd >= 0, "syscall(283) (timerfd_create today): %ld, %s", fd, ename(errno));
    char link[64], target[128] = {0};
    snprintf(link, sizeof link, "/proc/self/fd/%ld", fd);
    CHECK(readlink(link, target, sizeof target - 1) > 0 && strstr(target, "timerfd"),
          "syscall(283) returned fd %ld, which is not a timerfd (%s)", fd, target);
    close((int)fd);
    CHECK(syscall(SYS_getpid) == getpid(), "syscall(SYS_getpid) is not passed on");
    errno = 0;
    long r = syscall(999);
    CHECK(r == -1 && errno == ENOSYS, "syscall(999): %ld, %s; expected -1/ENOSYS from the kernel",
          r, ename(errno));
}

/* ==== section 12: rules for every personality ============================================== */

static void c_errno_kept(void)
{
    static struct syslet_uatom *slots[4];
    struct async_head_user h = {slots, sizeof slots, -1UL};
    unsigned long x = 0;
    errno = 4242;
    CHECK(s_register(&h, sizeof h) == 0 && errno == 4242, "async_register: errno %d after "
          "success, expected it untouched (4242)", errno);
    ATOM(&at[0], 0, SYS_getpid, R(), NULL, NULL);
    ATOM(&at[1], SYSLET_ASYNC, SYS_getpid, R(), NULL, NULL);
    errno = 4242;
    CHECK(s_exec(&at[0]) == &at[0] && errno == 4242, "async_exec (synchronous): errno %d after "
          "success, expected 4242", errno);
    errno = 4242;
    CHECK(s_exec(&at[1]) == NULL && errno == 4242, "async_exec (went async): errno %d after "
          "success, expected 4242", errno);
    errno = 4242;
    CHECK(s_wait(1) == 0 && errno == 4242, "async_wait(1): errno %d after success, expected 4242",
          errno);
    slots[0] = NULL;
    errno = 4242;
    CHECK(s_umem_add(&x, 1) == 1 && errno == 4242, "umem_add: errno %d after success, expected "
          "4242", errno);
    errno = 4242;
    CHECK(s_unregister(&h, sizeof h) == 0 && errno == 4242, "async_unregister: errno %d after "
          "success, expected 4242", errno);
}

static volatile sig_atomic_t g_signals;

static void on_signal_count(int sig)
{
    (void)sig;
    g_signals++;
}

static void c_wait_sa_restart(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal_count;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0, "sigaction");
    reg(4, -1UL);
    int p[2];
    mkpipe(p);
    static char buf[4];
    ATOM(&at[0], 0, SYS_read, R(), NULL, W(p[0]), W((unsigned long)buf), W(1));
    exec_async(&at[0], NULL, "read of an empty pipe");
    struct kicker k = {pthread_self(), 0, 100};
    CHECK(pthread_create(&k.t, NULL, kick_main, &k) == 0, "pthread_create");
    struct late l;
    late_write(&l, p[1], "!", 300);
    errno = 0;
    long r = s_wait(1);
    double back = now_ms();
    pthread_join(k.t, NULL);
    double w = late_join(&l);
    CHECK(g_signals == 1, "the SA_RESTART handler ran %d times, expected once", (int)g_signals);
    CHECK(r == 0, "async_wait(1) interrupted by an SA_RESTART handler: %ld, %s; expected the wait "
          "to go on and return 0", r, ename(errno));
    CHECK(back >= w, "async_wait(1) returned before the entry was there");
    CHECK(reap1() == &at[0], "ring entry");
}

/* ==== syslet.h: the exported functions ============================================================ */

static void c_functions(void)
{
    long (*reg_f)(struct async_head_user *, unsigned long) =
        (long (*)(struct async_head_user *, unsigned long))dlsym(RTLD_DEFAULT, "async_register");
    struct syslet_uatom *(*exec_f)(struct syslet_uatom *) =
        (struct syslet_uatom *(*)(struct syslet_uatom *))dlsym(RTLD_DEFAULT, "async_exec");
    long (*wait_f)(unsigned long) = (long (*)(unsigned long))dlsym(RTLD_DEFAULT, "async_wait");
    long (*unreg_f)(struct async_head_user *, unsigned long) =
        (long (*)(struct async_head_user *, unsigned long))dlsym(RTLD_DEFAULT, "async_unregister");
    unsigned long (*add_f)(unsigned long *, unsigned long) =
        (unsigned long (*)(unsigned long *, unsigned long))dlsym(RTLD_DEFAULT, "umem_add");
    const char *missing = !reg_f ? "async_register" : !exec_f ? "async_exec" :
                          !wait_f ? "async_wait" : !unreg_f ? "async_unregister" :
                          !add_f ? "umem_add" : NULL;
    CHECK(!missing, "%s is not exported", missing);
    memset(ring, 0, sizeof ring);
    nslots = 4;
    struct async_head_user h = {ring, 4 * sizeof ring[0], -1UL};
    CHECK(reg_f(&h, sizeof h) == 0, "async_register(): %s", ename(errno));
    errno = 0;
    CHECK(reg_f(&h, sizeof h) == -1 && errno == EBUSY, "async_register() twice: %s", ename(errno));
    ATOM(&at[0], 0, SYS_getpid, R(), NULL, NULL);
    CHECK(exec_f(&at[0]) == &at[0], "async_exec(): not the final atom");
    ATOM(&at[1], SYSLET_ASYNC, SYS_getpid, R(), NULL, NULL);
    CHECK(exec_f(&at[1]) == NULL, "async_exec(SYSLET_ASYNC): not NULL");
    CHECK(wait_f(1) == 0, "async_wait(1): %s", ename(errno));
    CHECK(reap1() == &at[1], "ring entry");
    errno = 0;
    CHECK(SYSLET_EXEC_FAILED(exec_f(NULL)) && errno == EFAULT, "async_exec(NULL): %s",
          ename(errno));
    unsigned long x = 1;
    CHECK(add_f(&x, 2) == 3 && x == 3, "umem_add()");
    CHECK(unreg_f(&h, sizeof h) == 0, "async_unregister(): %s", ename(errno));
    errno = 0;
    CHECK(unreg_f(&h, sizeof h) == -1 && errno == EINVAL, "async_unregister() twice: %s",
          ename(errno));
}

/* ==== the table ====================================================================================== */

struct check {
    const char *id, *section, *title;
    void (*fn)(void);
};

static const struct check CHECKS[] = {
    {"1-atom-layout", "1", "struct syslet_uatom: 88 bytes, flags@0 nr@8 ret_ptr@16 next@24 "
     "arg_ptr@32 private@80; private is never read or written", c_atom_layout},
    {"1-head-layout", "1", "struct async_head_user: 24 bytes, completion_ring@0 "
     "ring_size_bytes@8 max_nr_threads@16", c_head_layout},
    {"1-umem_add", "1", "umem_add(uptr, inc) adds inc to *uptr and returns the new value",
     c_umem_add},
    {"1-umem_add-atomic", "1", "umem_add is atomic (4 threads, no lost update)",
     c_umem_add_atomic},
    {"1-umem_add-efault", "1", "umem_add on a bad pointer: EFAULT", c_umem_add_efault},
    {"1-async_wait-zero", "1", "async_wait(0) returns 0 at once", c_wait_zero},
    {"1-async_wait-eintr", "1", "async_wait: -1/EINTR when a signal interrupts it", c_wait_eintr},
    {"2.1-first-atom-efault", "2.1", "an unreadable first atom: async_exec fails with EFAULT "
     "and nothing runs", c_first_atom_efault},
    {"2.1-later-atom-unreadable", "2.1", "an unreadable later atom ends the syslet; the last "
     "executed atom is final", c_later_atom_unreadable},
    {"2.2-live-arguments", "2.2", "argument words are read when the atom runs (an earlier "
     "umem_add, an open's stored fd)", c_live_arguments},
    {"2.2-null-ends-args", "2.2", "arg_ptr is read up to the first NULL; later arguments are 0",
     c_null_ends_args},
    {"2.2-bad-arg-pointer", "2.2", "an unreadable argument pointer: the atom is not executed, "
     "its result is -EFAULT", c_bad_arg_pointer},
    {"2.3-errno-convention", "2.3", "results use the raw kernel convention (-errno)",
     c_errno_convention},
    {"2.3-unknown-nr", "2.3", "an unknown nr gives -ENOSYS", c_unknown_nr},
    {"2.3-refused", "2.3", "fork, vfork, clone, clone3, execve, execveat, exit, exit_group, "
     "rt_sigreturn are refused with -EINVAL", c_refused},
    {"2.3-other-calls", "2.3", "every other call is accepted, also those io_uring cannot run",
     c_other_calls_accepted},
    {"2.4-ret-before-stop", "2.4", "the result is stored through ret_ptr before the stop test; "
     "ret_ptr NULL stores nothing", c_ret_before_stop},
    {"2.4-unwritable-ret", "2.4", "an unwritable ret_ptr ends the syslet with that atom as final",
     c_unwritable_ret},
    {"2.5-stop-on-nonzero", "2.5", "SYSLET_STOP_ON_NONZERO stops when result != 0",
     c_stop_nonzero},
    {"2.5-stop-on-zero", "2.5", "SYSLET_STOP_ON_ZERO stops when result == 0", c_stop_zero},
    {"2.5-stop-on-negative", "2.5", "SYSLET_STOP_ON_NEGATIVE stops when result < 0",
     c_stop_negative},
    {"2.5-stop-on-non-positive", "2.5", "SYSLET_STOP_ON_NON_POSITIVE stops when result <= 0",
     c_stop_non_positive},
    {"2.5-stop-any-bit", "2.5", "a syslet stops if any set STOP bit holds", c_stop_any},
    {"2.6-next", "2.6", "no stop: next is followed (anywhere in memory); NULL ends the syslet",
     c_next_chain},
    {"2.6-skip-to-next-on-stop", "2.6", "a stop with SKIP_TO_NEXT_ON_STOP continues at the "
     "atom's address + 88, not at next", c_skip},
    {"2.6-stop-without-skip", "2.6", "a stop without SKIP makes this atom final", c_stop_without_skip},
    {"2.7-loops", "2.7", "next may point backwards: loops run until a stop condition", c_loops},
    {"2.7-no-default-budget", "2.7", "no atom budget by default (a 200000-atom loop completes)",
     c_no_default_budget},
    {"2.8-order", "2.8", "the atoms of one syslet run strictly in order", c_order},
    {"2.8-concurrent", "2.8", "different syslets run concurrently; ring entries appear in "
     "completion order", c_concurrent},
    {"2.9-failing-atom", "2.9", "a failing atom without STOP bits does not end the syslet",
     c_failing_atom_goes_on},
    {"3-sync-no-entry", "3", "a syslet that does not block returns its final atom and publishes "
     "nothing", c_sync_no_entry},
    {"3-would-block", "3", "a syslet that would block goes async: NULL at once, the rest runs in "
     "the background, its final atom is published", c_would_block},
    {"3-async-flag", "3", "SYSLET_ASYNC on the first atom: NULL at once, published later",
     c_async_flag},
    {"3-sync-first-atom", "3", "SYSLET_SYNC on the first atom: the whole syslet is synchronous",
     c_sync_first},
    {"3-sync-later-atom", "3", "SYSLET_SYNC on an atom: the caller waits for it", c_sync_later},
    {"3-async-and-sync", "3", "SYSLET_ASYNC and SYSLET_SYNC together on the first atom: "
     "-1/EINVAL", c_async_and_sync},
    {"3-ring-fills-without-calls", "3", "once async, the ring fills while the program only "
     "polls ring memory", c_fills_without_calls},
    {"4-ring-size", "4", "ring_size_bytes not a positive multiple of 8: async_register fails "
     "with EINVAL", c_ring_size},
    {"4-slot-order", "4", "the producer writes the slot at its own index and wraps modulo the "
     "slot count", c_slot_order},
    {"4-backpressure", "4", "a full ring: the producer waits for NULL slots, never overwrites, "
     "never drops", c_backpressure},
    {"4-async_wait-counts", "4", "async_wait(min) returns once min unconsumed entries are in the "
     "ring; consumed ones do not count", c_wait_counts},
    {"4-one-entry", "4", "exactly one entry per asynchronous syslet, never one per atom",
     c_one_entry},
    {"4-no-complete-final", "4", "SYSLET_NO_COMPLETE on the final atom: no entry",
     c_no_complete_final},
    {"4-no-complete-other", "4", "SYSLET_NO_COMPLETE on another atom, or on a synchronous "
     "syslet: no effect", c_no_complete_other},
    {"5-register-len", "5", "async_register/async_unregister with len != 24: EINVAL",
     c_register_len},
    {"5-register-busy", "5", "a second async_register while one is active: EBUSY",
     c_register_busy},
    {"5-register-copies", "5", "async_register copies the head; its memory is never read again",
     c_register_copies},
    {"5-unregister-identifies", "5", "async_unregister finds the head by completion_ring and "
     "ring_size_bytes; no match: EINVAL", c_unregister_identifies},
    {"5-unregister-drains", "5", "async_unregister returns after every syslet in flight "
     "completed and was published", c_unregister_drains},
    {"5-exec-no-head", "5", "async_exec without a registered head: EINVAL", c_exec_no_head},
    {"5-max-threads-zero", "5", "max_nr_threads 0: every syslet is synchronous",
     c_max_threads_zero},
    {"5-max-threads-n", "5", "max_nr_threads 1: blocked syslets still all complete",
     c_max_threads_n},
    {"5-register-again", "5", "a head can be registered again after async_unregister",
     c_register_again},
    {"6-numbers", "6", "syscall() serves 1000-1004: async_register, async_exec, async_wait, "
     "async_unregister, umem_add", c_numbers},
    {"6-umem_add-atom", "6, 8", "an atom with nr 1004 runs umem_add (address, increment); so "
     "do 1012 and 1022", c_umem_add_atom},
    {"6-refused-numbers", "6", "atoms with the project's other numbers (1000-1039) are refused "
     "with -EINVAL", c_refused_numbers},
    {"6-old-numbers", "6", "the 2007 numbers are today's calls: syscall(283) is timerfd_create",
     c_old_numbers},
    {"12-errno-kept", "12", "a call that succeeds leaves errno as it was", c_errno_kept},
    {"12-wait-sa-restart", "12", "async_wait goes on after a signal handler installed with "
     "SA_RESTART", c_wait_sa_restart},
    {"h-functions", "syslet.h", "the calls are also exported as functions, with libc "
     "conventions", c_functions},
};

#define NCHECKS (sizeof CHECKS / sizeof *CHECKS)

/* ---- the runner ---------------------------------------------------------------------------- */

/* Runs one check in a child; prints its line; returns 1 when it passed. */
static int run_check(const struct check *c)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        printf("%s\tFAIL\tpipe: %s\n", c->id, strerror(errno));
        return 0;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        printf("%s\tFAIL\tfork: %s\n", c->id, strerror(errno));
        close(p[0]);
        close(p[1]);
        return 0;
    }
    if (pid == 0) {
        setpgid(0, 0);
        close(p[0]);
        g_report_fd = p[1];
        c->fn();
        fflush(NULL);
        _exit(0);
    }
    setpgid(pid, pid);
    close(p[1]);
    char msg[1024];
    size_t len = 0;
    double end = now_ms() + CHECK_TIMEOUT_MS;
    int timed_out = 0;
    for (;;) {
        int left = (int)(end - now_ms());
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        struct pollfd pf = {p[0], POLLIN, 0};
        int n = poll(&pf, 1, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            continue;
        ssize_t k = read(p[0], msg + len, sizeof msg - 1 - len);
        if (k <= 0)
            break;      /* EOF: the child (and anything it started) is done */
        len += (size_t)k;
        if (len >= sizeof msg - 1)
            break;
    }
    msg[len] = '\0';
    close(p[0]);
    if (timed_out)
        kill(-pid, SIGKILL);
    int st = 0;
    waitpid(pid, &st, 0);
    kill(-pid, SIGKILL);    /* strays of the check (a fork it should not have done) */
    if (timed_out) {
        printf("%s\tFAIL\tno result after %d s (hung)\n", c->id, CHECK_TIMEOUT_MS / 1000);
    } else if (len) {
        printf("%s\tFAIL\t%s\n", c->id, msg);
    } else if (WIFSIGNALED(st)) {
        printf("%s\tFAIL\tthe check was killed by %s\n", c->id, strsignal(WTERMSIG(st)));
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        printf("%s\tFAIL\tthe check exited with status %d\n", c->id,
               WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    } else {
        printf("%s\tok\t\n", c->id);
    }
    fflush(stdout);
    return !timed_out && !len && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < NCHECKS; i++)
            printf("%s\t%s\t%s\n", CHECKS[i].id, CHECKS[i].section, CHECKS[i].title);
        return 0;
    }
    for (int a = 1; a < argc; a++) {
        size_t i;
        for (i = 0; i < NCHECKS && strcmp(CHECKS[i].id, argv[a]) != 0; i++) {
        }
        if (i == NCHECKS) {
            fprintf(stderr, "conformance: no check named %s (--list lists them)\n", argv[a]);
            return 2;
        }
    }
    /* syslet-compat's own extension, when present: which backend it runs on.
     * (Calling it creates the process's context in this parent; the checks'
     * children each start with a fresh one.) */
    int (*backend)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "syslet_compat_backend");
    if (backend) {
        int b = backend();
        printf("#\tbackend\t%s\n", b == 1 ? "io_uring" : b == 0 ? "threadpool" : "unknown");
        fflush(stdout);
    }
    int failed = 0;
    for (size_t i = 0; i < NCHECKS; i++) {
        int selected = argc == 1;
        for (int a = 1; a < argc && !selected; a++)
            selected = strcmp(CHECKS[i].id, argv[a]) == 0;
        if (selected && !run_check(&CHECKS[i]))
            failed++;
    }
    return failed ? 1 : 0;
}
