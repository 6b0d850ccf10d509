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
#include <ucontext.h>
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

#if defined(__x86_64__)
/* Fault-fixup accessors for the hottest path, as the kernel's exception
 * tables do it: leaf functions in assembly whose user-memory instructions
 * lie in known ranges.  A fault there makes on_fault move the instruction
 * pointer to sl_fx_fail, which returns -EFAULT to the caller: no sigsetjmp,
 * no thread-local state, and nothing written by the faulting instruction
 * (x86 stores are all or nothing).  The only other memory they touch is the
 * caller's output array.  Like g_plausible, they refuse pointers that
 * can never be user memory before touching them (the vsyscall page, say,
 * may be readable).  Hidden symbols: libsyslet and compat._engine each
 * have their own, and each handler knows only its own.
 *
 * sl_fx_atom4(atom, o): o[0..3] = the atom's flags, nr, ret_ptr, next;
 * o[4..7] = arg_ptr[0..3]; o[8..11] = the values they point to (the fourth
 * only when nr != 0, i.e. not for read(2), which has three arguments: 0).
 * Returns 0, -EFAULT, or 1 when an arg_ptr beyond those (arg_ptr[3] of a
 * read, arg_ptr[4..5]) is not NULL: spec 2.2 reads it too, so the caller
 * leaves such an atom to the general path. */
__asm__(
    ".text\n"
    ".p2align 4\n"
    ".globl sl_fx_atom4\n.hidden sl_fx_atom4\n.type sl_fx_atom4, @function\n"
    "sl_fx_atom4:\n"                       /* rdi user atom, rsi o[12] */
    "    movq 8(%rdi), %rcx\n"
    /* Spec 2.2 reads every arg_ptr up to the first NULL: any beyond the
     * call's own (arg_ptr[3] of read, arg_ptr[4..5]) -> the general path. */
    "    movq 64(%rdi), %rax\n"
    "    orq 72(%rdi), %rax\n"
    "    testq %rcx, %rcx\n"
    "    jnz 3f\n"
    "    orq 56(%rdi), %rax\n"
    "3:  testq %rax, %rax\n"
    "    jnz sl_fx_one\n"
    "    movq 0(%rdi), %rax\n"
    "    movq 16(%rdi), %rdx\n"
    "    movq 24(%rdi), %r8\n"
    "    movq 32(%rdi), %r9\n"
    "    movq 40(%rdi), %r10\n"
    "    movq 48(%rdi), %r11\n"
    "    movq 56(%rdi), %rdi\n"
    "    movq %rax, 0(%rsi)\n"
    "    movq %rcx, 8(%rsi)\n"
    "    movq %rdx, 16(%rsi)\n"
    "    movq %r8, 24(%rsi)\n"
    "    movq %r9, 32(%rsi)\n"
    "    movq %r10, 40(%rsi)\n"
    "    movq %r11, 48(%rsi)\n"
    "    movq %rdi, 56(%rsi)\n"
    /* g_plausible(p, 8) for each cell: p - 4096 <= 2^47 - 8 - 4096 */
    "    movabsq $0x7fffffffeff8, %rax\n"
    "    leaq -4096(%r9), %rdx\n"
    "    cmpq %rax, %rdx\n"
    "    ja sl_fx_fail\n"
    "    leaq -4096(%r10), %rdx\n"
    "    cmpq %rax, %rdx\n"
    "    ja sl_fx_fail\n"
    "    leaq -4096(%r11), %rdx\n"
    "    cmpq %rax, %rdx\n"
    "    ja sl_fx_fail\n"
    "    movq (%r9), %r9\n"
    "    movq (%r10), %r10\n"
    "    movq (%r11), %r11\n"
    "    movq %r9, 64(%rsi)\n"
    "    movq %r10, 72(%rsi)\n"
    "    movq %r11, 80(%rsi)\n"
    "    testq %rcx, %rcx\n"
    "    jz 1f\n"
    "    leaq -4096(%rdi), %rdx\n"
    "    cmpq %rax, %rdx\n"
    "    ja sl_fx_fail\n"
    "    movq (%rdi), %rax\n"
    "    jmp 2f\n"
    "1:  xorl %eax, %eax\n"
    "2:  movq %rax, 88(%rsi)\n"
    "    xorl %eax, %eax\n"
    "    ret\n"
    ".globl sl_fx_atom4_end\n.hidden sl_fx_atom4_end\n"
    "sl_fx_atom4_end:\n"
    ".size sl_fx_atom4, .-sl_fx_atom4\n"
    ".p2align 4\n"
    ".globl sl_fx_store8\n.hidden sl_fx_store8\n.type sl_fx_store8, @function\n"
    "sl_fx_store8:\n"                      /* rdi user dst, rsi value */
    "    movq %rsi, (%rdi)\n"
    "    xorl %eax, %eax\n"
    "    ret\n"
    ".globl sl_fx_store8_end\n.hidden sl_fx_store8_end\n"
    "sl_fx_store8_end:\n"
    ".size sl_fx_store8, .-sl_fx_store8\n"
    /* sl_fx_head(w, atom): w[0..3] = the header; w[4..] = arg_ptr words up
     * to the first NULL (not read beyond it); returns how many are not
     * NULL.  w[4..9] must be zero on entry. */
    ".p2align 4\n"
    ".globl sl_fx_head\n.hidden sl_fx_head\n.type sl_fx_head, @function\n"
    "sl_fx_head:\n"                        /* rdi w[10], rsi user atom */
    "    movq 0(%rsi), %rax\n"
    "    movq %rax, 0(%rdi)\n"
    "    movq 8(%rsi), %rax\n"
    "    movq %rax, 8(%rdi)\n"
    "    movq 16(%rsi), %rax\n"
    "    movq %rax, 16(%rdi)\n"
    "    movq 24(%rsi), %rax\n"
    "    movq %rax, 24(%rdi)\n"
    "    xorl %ecx, %ecx\n"
    "1:  movq 32(%rsi,%rcx,8), %rax\n"
    "    testq %rax, %rax\n"
    "    jz 2f\n"
    "    movq %rax, 32(%rdi,%rcx,8)\n"
    "    addl $1, %ecx\n"
    "    cmpl $6, %ecx\n"
    "    jb 1b\n"
    "2:  movl %ecx, %eax\n"
    "    ret\n"
    ".globl sl_fx_head_end\n.hidden sl_fx_head_end\n"
    "sl_fx_head_end:\n"
    ".size sl_fx_head, .-sl_fx_head\n"
    /* sl_fx_args(args, cells, n >= 1): args[i] = *cells[i]; 1 at the first
     * cell that cannot be user memory or faults (args before it are set). */
    ".p2align 4\n"
    ".globl sl_fx_args\n.hidden sl_fx_args\n.type sl_fx_args, @function\n"
    "sl_fx_args:\n"                        /* rdi args, rsi cells, edx n */
    "    movabsq $0x7fffffffeff8, %r8\n"
    "    xorl %ecx, %ecx\n"
    "1:  movq (%rsi,%rcx,8), %rax\n"
    "    leaq -4096(%rax), %r9\n"
    "    cmpq %r8, %r9\n"
    "    ja sl_fx_one\n"
    "    movq (%rax), %rax\n"
    "    movq %rax, (%rdi,%rcx,8)\n"
    "    addl $1, %ecx\n"
    "    cmpl %edx, %ecx\n"
    "    jb 1b\n"
    "    xorl %eax, %eax\n"
    "    ret\n"
    ".globl sl_fx_args_end\n.hidden sl_fx_args_end\n"
    "sl_fx_args_end:\n"
    ".size sl_fx_args, .-sl_fx_args\n"
    ".globl sl_fx_fail\n.hidden sl_fx_fail\n"
    "sl_fx_fail:\n"
    "    movl $-14, %eax\n"                /* -EFAULT */
    "    ret\n"
    ".globl sl_fx_one\n.hidden sl_fx_one\n"
    "sl_fx_one:\n"                         /* an argument word failed; or decline */
    "    movl $1, %eax\n"
    "    ret\n");

int sl_fx_head(uint64_t *w, uint64_t atom);
int sl_fx_args(int64_t *args, const uint64_t *cells, unsigned n);
extern const char sl_fx_atom4_end[], sl_fx_store8_end[], sl_fx_head_end[], sl_fx_args_end[],
    sl_fx_fail[], sl_fx_one[];

static int in_code(uintptr_t at, const void *lo, const void *hi)
{
    return at >= (uintptr_t)lo && at < (uintptr_t)hi;
}

/* A fault inside one of the ranges: resume at sl_fx_fail. */
static int fx_fixup(void *uc)
{
    greg_t *ip = &((ucontext_t *)uc)->uc_mcontext.gregs[REG_RIP];
    uintptr_t at = (uintptr_t)*ip;
    if (in_code(at, (const void *)sl_fx_atom4, sl_fx_atom4_end) ||
        in_code(at, (const void *)sl_fx_store8, sl_fx_store8_end) ||
        in_code(at, (const void *)sl_fx_head, sl_fx_head_end)) {
        *ip = (greg_t)(uintptr_t)sl_fx_fail;
        return 1;
    }
    if (in_code(at, (const void *)sl_fx_args, sl_fx_args_end)) {
        *ip = (greg_t)(uintptr_t)sl_fx_one;
        return 1;
    }
    return 0;
}
#else
static int fx_fixup(void *uc)
{
    (void)uc;
    return 0;
}
#endif

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    if (fx_fixup(uc))
        return;
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

/* g_read_atom's guarded-region form: atoms within 80 bytes of the top of
 * user space, other architectures, and the 80-byte atoms of personality v6
 * (nh = 3 header words, w[1..3]; w[0] is then 0). */
static __attribute__((noinline)) int g_read_atom_guarded(uint64_t addr, uint64_t *w,
                                                         int64_t *args, int whole, unsigned nh)
{
    volatile int stage = -1;
    GUARD_BEGIN(stage < 0 ? -EFAULT : 1);
    const volatile uint64_t *a = (const volatile uint64_t *)(uintptr_t)addr;
    w[0] = 0;
    for (unsigned h = 0; h < nh; h++)
        w[4 - nh + h] = a[h];
    int k = 0;
    while (k < 6) {
        if (!whole && !g_plausible(addr + 8 * nh + 8 * (uint64_t)k, 8)) {
            GUARD_END();
            return -EFAULT;
        }
        uint64_t cell = a[nh + k];
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

/* v7's indirect: the 56-byte registers, the first plen bytes of params (the
 * rest zero) and, when they name a ring (plen >= 8, ring_ptr != 0, frame
 * set), the ring's elements word -- in one guarded region.  0, or the
 * first unreadable of them: 1 registers, 2 params, 3 ring. */
int g_read_indirect(uint64_t regs, uint64_t params, uint64_t plen, uint64_t *r, uint64_t *p,
                    uint32_t *elements)
{
    volatile int stage = 1;
    if (!g_plausible(regs, 56))
        return 1;
    stage = 1;
    GUARD_BEGIN(stage);
    memcpy(r, (const void *)(uintptr_t)regs, 56);
    /* (the copy may not move past the stage that names it: a fault in the
     * registers reported as stage 2 or 3 broke the spec's order) */
    __asm__ __volatile__("" ::: "memory");
    stage = 2;
    if (plen) {
        if (!g_plausible(params, plen)) {
            GUARD_END();
            return 2;
        }
        memcpy(p, (const void *)(uintptr_t)params, plen);
        __asm__ __volatile__("" ::: "memory");
    }
    stage = 3;
    if (plen >= 8 && p[0] && p[2] && p[3]) {
        if (!g_plausible(p[0] + 8, 4)) {
            GUARD_END();
            return 3;
        }
        memcpy(elements, (const void *)(uintptr_t)(p[0] + 8), 4);
    }
    GUARD_END();
    return 0;
}

/* g_read_atom for personality v6's 80-byte atoms: flags and nr share the
 * first word (w[1]: flags in the low, nr in the high half), ret_ptr w[2],
 * next w[3], arg_ptr[] at offset 24 (w[4..9]). */
int g_read_atom80(uint64_t addr, uint64_t *w, int64_t *args)
{
    if (!g_plausible(addr, 24))
        return -EFAULT;
    memset(w + 4, 0, 7 * sizeof *w);
    memset(args, 0, 6 * sizeof *args);
    return g_read_atom_guarded(addr, w, args, g_plausible(addr, 72), 3);
}

/* Reads an atom and the words its arg_ptr cells point to, up to the first
 * NULL (fault-fixup readers on x86_64, else one guarded region).  Only the
 * header and arg_ptr[] up to its first NULL belong to the atom: tightly
 * packed atoms end there (spec 4.1) and private is never read, so w[] past
 * them is zero-filled.  Returns -EFAULT when the atom is unreadable, 1 when
 * an argument cell is (args[] then holds the values read before it), 0
 * otherwise. */
int g_read_atom(uint64_t addr, uint64_t *w, int64_t *args)
{
    if (!g_plausible(addr, 32))
        return -EFAULT;
    int whole = g_plausible(addr, 80);  /* else each arg_ptr word is checked */
    memset(w + 4, 0, 7 * sizeof *w);    /* constant sizes: a few vector stores */
    memset(args, 0, 6 * sizeof *args);
#if defined(__x86_64__)
    if (whole) {                        /* the fault-fixup readers */
        int n = sl_fx_head(w, addr);
        if (n <= 0)
            return n;                   /* -EFAULT, or no arguments */
        return sl_fx_args(args, w + 4, (unsigned)n);
    }
#endif
    return g_read_atom_guarded(addr, w, args, whole, 4);
}

#if !defined(__x86_64__)
/* The exec fast path's read of a read/pread64 atom (guard.h says what it
 * returns; on x86_64 it is the sl_fx_atom4 fixup routine, inline there). */
int g_read_atom4(uint64_t addr, uint64_t *o)
{
    if (!g_plausible(addr, 80))
        return -EFAULT;
    GUARD_BEGIN(-EFAULT);
    const volatile uint64_t *a = (const volatile uint64_t *)(uintptr_t)addr;
    for (unsigned k = 0; k < 4; k++)
        o[k] = a[k];
    unsigned n = o[1] == 0 ? 3 : 4;
    o[7] = o[11] = 0;       /* read(2): no fourth argument */
    if (a[8] || a[9] || (n == 3 && a[7])) {
        GUARD_END();
        return 1;
    }
    for (unsigned k = 0; k < n; k++) {
        uint64_t p = a[4 + k];
        if (!g_plausible(p, 8)) {
            GUARD_END();
            return -EFAULT;
        }
        o[4 + k] = p;
        o[8 + k] = *(const volatile uint64_t *)(uintptr_t)p;
    }
    GUARD_END();
    return 0;
}

int g_store8(uint64_t dst, uint64_t v)
{
    return g_copy_out(dst, &v, 8);
}
#endif
