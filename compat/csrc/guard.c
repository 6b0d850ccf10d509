/* Guarded user-memory access: every load from or store to user memory that a
 * syslet names (atoms, argument words, ret_ptr, ring slots) runs inside a
 * region protected by a SIGSEGV/SIGBUS handler that jumps back with EFAULT.
 * Faults outside a guarded region are passed on to the previous handler. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include "engine.h"
#include "guard.h"

__thread sigjmp_buf *sl_guard_jb __attribute__((tls_model("initial-exec")));
__thread volatile int sl_guard_on __attribute__((tls_model("initial-exec")));

static struct sigaction old_segv, old_bus;

/* Opens a guarded region in the calling function: a fault inside it makes
 * the function return FAIL.  Close it with GUARD_END before returning. */
#define GUARD_BEGIN(FAIL)              \
    sigjmp_buf jb;                     \
    if (sigsetjmp(jb, 0))              \
        return (FAIL);                 \
    sl_guard_jb = &jb;                 \
    sl_guard_on = 1
#define GUARD_END() (sl_guard_on = 0)
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static int guard_err;

static void pass_on(int sig, siginfo_t *si, void *uc, struct sigaction *old)
{
    if (old->sa_flags & SA_SIGINFO) {
        if (old->sa_sigaction) {
            old->sa_sigaction(sig, si, uc);
            return;
        }
    } else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
        return;
    }
    /* Default action: restore it; the faulting instruction re-runs and dies. */
    signal(sig, SIG_DFL);
}

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    if (sl_guard_on && sl_guard_jb) {
        GUARD_END();
        siglongjmp(*sl_guard_jb, 1);
    }
    pass_on(sig, si, uc, sig == SIGBUS ? &old_bus : &old_segv);
}

/* Installs on_fault for sig, saving what was there in *old. */
static int claim(int sig, struct sigaction *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, old);
}

static void install(void)
{
    if (claim(SIGSEGV, &old_segv) || claim(SIGBUS, &old_bus))
        guard_err = -errno;
}

int sl_guard_install(void)
{
    pthread_once(&guard_once, install);
    if (guard_err)
        return guard_err;
    /* Someone may have replaced our handler since (e.g. faulthandler): take
     * the slot back, chaining to whatever is there now. */
    struct sigaction cur;
    if (sigaction(SIGSEGV, NULL, &cur) == 0 && cur.sa_sigaction != on_fault)
        claim(SIGSEGV, &old_segv);
    if (sigaction(SIGBUS, NULL, &cur) == 0 && cur.sa_sigaction != on_fault)
        claim(SIGBUS, &old_bus);
    return 0;
}

/* sl_guard_install() costs two rt_sigaction calls: on the hot path the
 * handler is re-verified at most every 100 ms (coarse clock, no syscall). */
int sl_guard_check(void)
{
    static volatile int64_t last;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
    int64_t now = (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
    if (last && now - last < 100000000)
        return 0;
    last = now;
    return sl_guard_install();
}

/* The public accessors may be the first guarded access of the process (the
 * reference interpreter creates no engine), or run after someone replaced
 * the handler (faulthandler.enable()): (re)install before touching memory. */
int sl_peek(uint64_t addr, void *out, uint64_t n)
{
    int r = sl_guard_check();
    return r ? r : g_copy_in(out, addr, n);
}

int sl_poke(uint64_t addr, const void *in, uint64_t n)
{
    int r = sl_guard_check();
    return r ? r : g_copy_out(addr, in, n);
}

int64_t sl_umem_add(uint64_t addr, uint64_t inc, int *err)
{
    uint64_t v;
    int r = sl_guard_check();
    if (r) {
        *err = r;
        return r;
    }
    r = g_add(addr, inc, &v);
    *err = r;
    return r ? r : (int64_t)v;
}

int g_copy_in(void *dst, uint64_t src, uint64_t n)
{
    if (!g_plausible(src, n))
        return -EFAULT;
    GUARD_BEGIN(-EFAULT);
    const volatile unsigned char *s = (const volatile unsigned char *)(uintptr_t)src;
    unsigned char *d = dst;
    if (n == 8 && (src & 7) == 0)
        *(uint64_t *)d = *(const volatile uint64_t *)s;
    else
        memcpy(d, (const void *)s, n);
    GUARD_END();
    return 0;
}

int g_copy_out(uint64_t dst, const void *src, uint64_t n)
{
    if (!g_plausible(dst, n))
        return -EFAULT;
    GUARD_BEGIN(-EFAULT);
    volatile unsigned char *d = (volatile unsigned char *)(uintptr_t)dst;
    const unsigned char *s = src;
    if (n == 8 && (dst & 7) == 0)
        *(volatile uint64_t *)d = *(const uint64_t *)s;
    else
        memcpy((void *)d, s, n);
    GUARD_END();
    return 0;
}

int g_add(uint64_t addr, uint64_t inc, uint64_t *newval)
{
    if (!g_plausible(addr, 8))
        return -EFAULT;
    GUARD_BEGIN(-EFAULT);
    *newval = __atomic_add_fetch((uint64_t *)(uintptr_t)addr, inc, __ATOMIC_SEQ_CST);
    GUARD_END();
    return 0;
}

int g_load_acquire(uint64_t addr, uint64_t *out)
{
    if (!g_plausible(addr, 8) || (addr & 7))
        return -EFAULT;
    GUARD_BEGIN(-EFAULT);
    *out = __atomic_load_n((uint64_t *)(uintptr_t)addr, __ATOMIC_ACQUIRE);
    GUARD_END();
    return 0;
}

int g_cas_release(uint64_t addr, uint64_t expect, uint64_t val, int *swapped)
{
    if (!g_plausible(addr, 8) || (addr & 7))
        return -EFAULT;
    GUARD_BEGIN(-EFAULT);
    *swapped = __atomic_compare_exchange_n((uint64_t *)(uintptr_t)addr, &expect, val, 0,
                                           __ATOMIC_RELEASE, __ATOMIC_RELAXED);
    GUARD_END();
    return 0;
}

int g_strnlen(uint64_t addr, uint64_t max, uint64_t *len)
{
    if (!g_plausible(addr, 1))
        return -EFAULT;
    GUARD_BEGIN(-EFAULT);
    /* libc's strnlen reads aligned blocks, which never reach a page the
     * byte-by-byte scan would not touch: it faults exactly when that would. */
    uint64_t i = strnlen((const char *)(uintptr_t)addr, max);
    GUARD_END();
    *len = i;
    return 0;
}

/* Writable probe without changing the value (atomic add of 0). */
int g_probe_write(uint64_t addr)
{
    uint64_t v;
    if (addr & 7) {
        unsigned char b;
        if (g_copy_in(&b, addr, 1) || g_copy_out(addr, &b, 1))
            return -EFAULT;
        return 0;
    }
    return g_add(addr, 0, &v);
}

/* Reads an atom and the words its arg_ptr cells point to, up to the first
 * NULL, in one guarded region.  Only the header and arg_ptr[] up to its
 * first NULL belong to the atom: tightly packed atoms end there (spec 4.1)
 * and private is never read, so w[] past them is zero-filled.  Returns
 * -EFAULT when the atom is unreadable, 1 when an argument cell is (args[]
 * then holds the values read before it), 0 otherwise. */
int g_read_atom(uint64_t addr, uint64_t *w, int64_t *args)
{
    volatile int stage = -1;
    if (!g_plausible(addr, 32))
        return -EFAULT;
    int whole = g_plausible(addr, 80);  /* else each arg_ptr word is checked */
    memset(w + 4, 0, 7 * sizeof *w);    /* constant sizes: a few vector stores */
    memset(args, 0, 6 * sizeof *args);
    GUARD_BEGIN(stage < 0 ? -EFAULT : 1);
    const volatile uint64_t *a = (const volatile uint64_t *)(uintptr_t)addr;
    w[0] = a[0];
    w[1] = a[1];
    w[2] = a[2];
    w[3] = a[3];
    int k = 0;
    while (k < 6) {
        if (!whole && !g_plausible(addr + 32 + 8 * (uint64_t)k, 8)) {
            GUARD_END();
            return -EFAULT;
        }
        uint64_t cell = a[4 + k];
        w[4 + k++] = cell;
        if (!cell)
            break;
    }
    int i = 0;
    for (; i < 6 && w[4 + i]; i++) {
        stage = i;
        uint64_t p = w[4 + i];
        if (!g_plausible(p, 8)) {
            GUARD_END();
            return 1;
        }
        uint64_t v;
        memcpy(&v, (const void *)(uintptr_t)p, 8);
        args[i] = (int64_t)v;
    }
    GUARD_END();
    return 0;
}

/* The exec fast path's read of a read/pread64 atom: its four header words
 * and its first three (read) or four (pread64, or anything else) argument
 * cells and their values, in one guarded region.  0, or -EFAULT when any of
 * it is unreadable or one of those cells is NULL: the general path then
 * reads the atom again and decides. */
int g_read_atom4(uint64_t addr, uint64_t *hdr, uint64_t *cells, int64_t *args)
{
    if (!g_plausible(addr, 64))
        return -EFAULT;
    GUARD_BEGIN(-EFAULT);
    const volatile uint64_t *a = (const volatile uint64_t *)(uintptr_t)addr;
    hdr[0] = a[0];
    hdr[1] = a[1];
    hdr[2] = a[2];
    hdr[3] = a[3];
    unsigned n = hdr[1] == 0 ? 3 : 4;
    for (unsigned k = 0; k < n; k++) {
        uint64_t p = a[4 + k];
        if (!g_plausible(p, 8)) {
            GUARD_END();
            return -EFAULT;
        }
        cells[k] = p;
        args[k] = *(const volatile int64_t *)(uintptr_t)p;
    }
    GUARD_END();
    return 0;
}
