/* libsyslet: the C drop-in for 2007 syslet code (ABI v1).
 *
 * Exports async_register, async_exec, async_wait, async_unregister, umem_add
 * (libc conventions: -1 and errno) and a syscall() that serves the numbers of
 * syslet-numbers.h (1000-1004) and hands every other number, with all six
 * arguments, to the next syscall() in the lookup order (libc's).
 *
 * Every call is plain C on the engine (engine.c) in this process: one
 * process-wide context, created on first use.  No Python runs here: the
 * policy -- which backend (URING_SHIM_BACKEND), whether to trace
 * (SYSLET_COMPAT_TRACE) or debug (SYSLET_COMPAT_DEBUG) -- comes from the
 * environment, read and checked when the library is loaded (env_check); a
 * bad value ends the process there with the one-line message Python gives.
 *
 * Fork: a pthread_atfork child handler forgets the parent's context without
 * touching it (its threads do not exist in the child); the child's first call
 * makes a fresh one.  The ring registration is not inherited: the child
 * registers again (fork copied the ring memory, so the same head may be used).
 *
 * Signals: async_wait blocks in the kernel itself -- io_uring_enter, or
 * ppoll() on the pool's eventfd -- reaping and publishing the completions it
 * waits for (engine.c, sl_wait_intr); a signal handler interrupts that
 * (whatever SA_RESTART says), so it can return -1/EINTR.  Where the engine
 * cannot wait that way (max_nr_threads = N) async_wait blocks in poll() on
 * an eventfd of its own, interrupted the same way.  There the engine wakes waiters
 * through pthread_cond_broadcast on its progress condition; dropin_engine.c
 * compiles engine.c with that call renamed to sl_dropin_cond_broadcast
 * (below), which also writes the eventfds of the threads blocked in
 * async_wait.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "engine.h"
#include "guard.h"
#include "rawsys.h"
#include "retless.h"
#include "syslet.h"

#define SYSLET_EXPORT __attribute__((visibility("default")))

#define SQ_ENTRIES 256
#define WAIT_SLICE_MS 10        /* safety net: re-check the ring this often */

/* ---- the next syscall() --------------------------------------------------- */

typedef long (*syscall_fn)(long, ...);

static long raw_syscall6(long nr, long a0, long a1, long a2, long a3, long a4, long a5)
{
#if defined(__x86_64__)
    return sl_sys6_errno(nr, a0, a1, a2, a3, a4, a5);
#else
    (void)nr; (void)a0; (void)a1; (void)a2; (void)a3; (void)a4; (void)a5;
    errno = ENOSYS;
    return -1;
#endif
}

typedef long (*call6_fn)(long, long, long, long, long, long, long);

/* fn(nr, the six arguments a variadic syscall(nr, ...) was given) */
static long call_va6(call6_fn fn, long nr, va_list ap)
{
    long a0 = va_arg(ap, long), a1 = va_arg(ap, long), a2 = va_arg(ap, long);
    long a3 = va_arg(ap, long), a4 = va_arg(ap, long), a5 = va_arg(ap, long);
    return fn(nr, a0, a1, a2, a3, a4, a5);
}

static long raw_syscall_va(long nr, ...)
{
    va_list ap;
    va_start(ap, nr);
    long r = call_va6(raw_syscall6, nr, ap);
    va_end(ap);
    return r;
}

static _Atomic(syscall_fn) next_syscall_fn;

static syscall_fn next_syscall(void)
{
    syscall_fn f = atomic_load_explicit(&next_syscall_fn, memory_order_acquire);
    if (__builtin_expect(f != NULL, 1))
        return f;
    f = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
    if (!f)
        f = raw_syscall_va;     /* no libc behind us: the instruction itself */
    atomic_store_explicit(&next_syscall_fn, f, memory_order_release);
    return f;
}

/* ---- the environment: read and checked once, when the library is loaded ---- */

/* One variable and the values it accepts.  *index gets the position of its
 * value in values[], or -1 when it is unset; any other value, the empty
 * string included, is an error.  Python checks the same variables, in the
 * same order, with the same message (uring_shim/_env.py, compat/_env.py: a
 * test compares the tables); docs/compat.md lists them.  A new variable is
 * one more row of env_vars (and of compat._env.VARIABLES). */
struct env_var {
    const char *name;
    const char *const *values;          /* NULL-terminated */
    int *index;
};

static const char *const env_backend_values[] = {"auto", "io_uring", "threadpool", NULL};
static const char *const env_switch_values[] = {"0", "1", NULL};
static const char *const env_abi_values[] = {"v1", "v5", "v6", "v7", NULL};

static int env_backend = -1;            /* URING_SHIM_BACKEND: index in env_backend_values */
static int env_trace = -1;              /* SYSLET_COMPAT_TRACE: index in env_switch_values */
static int env_debug = -1;              /* SYSLET_COMPAT_DEBUG: index in env_switch_values */
static int env_abi = -1;                /* SYSLET_COMPAT_ABI: index in env_abi_values */

static const struct env_var env_vars[] = {
    {"URING_SHIM_BACKEND", env_backend_values, &env_backend},
    {"SYSLET_COMPAT_TRACE", env_switch_values, &env_trace},
    {"SYSLET_COMPAT_DEBUG", env_switch_values, &env_debug},
    {"SYSLET_COMPAT_ABI", env_abi_values, &env_abi},
};

/* SYSLET_COMPAT_ABI: which historical system call numbers syscall() serves
 * (docs/spec.md 8; SL_ABI_*, 0 when unset).  Set at load, as syscall() may
 * be called before any context exists. */
static int g_env_abi;

#define ENV_SHOWN_MAX 64                /* bytes of a bad value the message quotes */

static void msg_add(char *buf, size_t size, const char *s)
{
    size_t n = strlen(buf);
    if (n < size)
        snprintf(buf + n, size - n, "%s", s);
}

/* The message for a bad value, e.g.
 *   syslet-compat: invalid URING_SHIM_BACKEND="uring"; expected auto, io_uring or threadpool (or unset)
 * The value's bytes outside printable ASCII, '"' and '\' are written as \xNN,
 * and after ENV_SHOWN_MAX bytes it is cut with "...": always one line. */
static void env_message(char *buf, size_t size, const struct env_var *v, const char *val)
{
    buf[0] = '\0';
    msg_add(buf, size, "syslet-compat: invalid ");
    msg_add(buf, size, v->name);
    msg_add(buf, size, "=\"");
    size_t i;
    for (i = 0; val[i] && i < ENV_SHOWN_MAX; i++) {
        unsigned char ch = (unsigned char)val[i];
        char one[8];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
            snprintf(one, sizeof one, "%c", ch);
        else
            snprintf(one, sizeof one, "\\x%02x", ch);
        msg_add(buf, size, one);
    }
    if (val[i])
        msg_add(buf, size, "...");
    msg_add(buf, size, "\"; expected ");
    for (int k = 0; v->values[k]; k++) {
        if (k)
            msg_add(buf, size, v->values[k + 1] ? ", " : " or ");
        msg_add(buf, size, v->values[k]);
    }
    msg_add(buf, size, " (or unset)");
}

/* Reads every variable of env_vars: 0, or -1 with the message of the first
 * bad one in msg. */
static int env_parse(char *msg, size_t size)
{
    for (size_t i = 0; i < sizeof env_vars / sizeof env_vars[0]; i++) {
        const struct env_var *v = &env_vars[i];
        const char *val = getenv(v->name);
        *v->index = -1;
        if (!val)
            continue;
        int k = 0;
        while (v->values[k] && strcmp(v->values[k], val) != 0)
            k++;
        if (!v->values[k]) {
            env_message(msg, size, v, val);
            return -1;
        }
        *v->index = k;
    }
    return 0;
}

static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static void env_read(void)
{
    char msg[512];
    if (env_parse(msg, sizeof msg) < 0) {
        msg_add(msg, sizeof msg, "\n");
        if (write(2, msg, strlen(msg)) < 0) {
            /* nowhere to say it: the exit status still does */
        }
        _exit(2);
    }
    static const int abis[] = {SL_ABI_V1, SL_ABI_V5, SL_ABI_V6, SL_ABI_V7};
    g_env_abi = env_abi < 0 ? 0 : abis[env_abi];
}

/* At load -- before main() for a linked or preloaded library, in dlopen()
 * otherwise -- and, should a call come before that, at the first call: a bad
 * value ends the process with the message and exit status 2, never a silent
 * fallback (for SYSLET_COMPAT_ABI: a legacy binary must never run its syslet
 * calls as the unrelated calls those numbers are today). */
__attribute__((constructor)) static void env_check(void)
{
    pthread_once(&env_once, env_read);
}

/* ---- policy: backend, trace and debug, from the environment ------------------- */

static int g_backend = 1;           /* 1 io_uring (+pool), 0 pool only */
static int g_trace;
static int g_debug;

/* Called with g_mu held, before the first context.  The engine itself falls
 * back to the pool when io_uring cannot be set up (or refuses a NOP). */
static void decide_policy(void)
{
    env_check();
    g_backend = env_backend != 2;   /* auto and io_uring: io_uring */
    g_trace = env_trace == 1;
    g_debug = env_debug == 1;
}

/* ---- the process-wide context ----------------------------------------------- */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(struct sl_ctx *) g_ctx;

struct waiter {
    int efd;
    struct waiter *prev, *next;
};
static pthread_mutex_t g_wmu = PTHREAD_MUTEX_INITIALIZER;
static struct waiter *g_waiters;
static atomic_int g_nwaiting;

static void atfork_child(void)
{
    /* The parent's context: its driver and pool threads do not exist here and
     * its ring registration belongs to the parent.  Drop it untouched. */
    atomic_store_explicit(&g_ctx, NULL, memory_order_relaxed);
    pthread_mutex_init(&g_mu, NULL);
    pthread_mutex_init(&g_wmu, NULL);
    g_waiters = NULL;           /* only the forking thread exists: not waiting */
    atomic_store(&g_nwaiting, 0);
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void install_once(void) { pthread_atfork(NULL, NULL, atfork_child); }

static void print_counters(void)
{
    struct sl_ctx *c = atomic_load(&g_ctx);
    if (!c)
        return;
    struct sl_counters k;
    sl_get_counters(c, &k);
    fprintf(stderr,
            "libsyslet: pid %d counters: sync=%llu async=%llu uring=%llu inline=%llu "
            "pool=%llu nowait=%llu segments=%llu enters=%llu published=%llu "
            "ring_full_waits=%llu faults=%llu direct_reads=%llu caller_waits=%llu "
            "driver_waits=%llu cold_reads=%llu post_retries=%llu post_fallbacks=%llu "
            "fd_recoveries=%llu fd_classified=%llu\n", (int)getpid(),
            (unsigned long long)k.syslets_sync, (unsigned long long)k.syslets_async,
            (unsigned long long)k.atoms_uring, (unsigned long long)k.atoms_inline,
            (unsigned long long)k.atoms_pool, (unsigned long long)k.atoms_nowait,
            (unsigned long long)k.segments, (unsigned long long)k.enters,
            (unsigned long long)k.published, (unsigned long long)k.ring_full_waits,
            (unsigned long long)k.faults, (unsigned long long)k.direct_reads,
            (unsigned long long)k.caller_waits, (unsigned long long)k.driver_waits,
            (unsigned long long)k.cold_reads, (unsigned long long)k.post_retries,
            (unsigned long long)k.post_fallbacks, (unsigned long long)k.fd_recoveries,
            (unsigned long long)k.fd_classified);
}

/* ---- SYSLET_COMPAT_REPORT: the counters, for `syslet-compat run` ------------
 *
 * With SYSLET_COMPAT_REPORT=DIR in the environment, every process that made
 * a context writes DIR/libsyslet-<pid>.json at exit (atexit; not after
 * _exit, a fatal signal or exec): its backend, the engine's counters and the
 * per-system-call ones (engine.h, SL_NRC_*), as
 *
 *   {"pid": P, "backend": "io_uring", "counters": {"syslets_sync": N, ...},
 *    "calls": {"17": [inline, nowait, uring, uring_linked, pool], ...}}
 *
 * ("calls" keys are system call numbers, "other" for numbers of no slot;
 * only calls that ran).  syslet-compat run (compat/_run.py) reads them. */
static void report_write(void)
{
    const char *dir = getenv("SYSLET_COMPAT_REPORT");
    struct sl_ctx *c = atomic_load(&g_ctx);
    if (!dir || !dir[0] || !c)
        return;
    static uint64_t nrc[SL_NRC_SLOTS][SL_NRC_KINDS];
    struct sl_counters k;
    sl_get_counters(c, &k);
    sl_get_nr_counters(c, nrc);
    char tmp[PATH_MAX], path[PATH_MAX];
    int pid = (int)getpid();
    snprintf(tmp, sizeof tmp, "%s/.libsyslet-%d.json.tmp", dir, pid);
    snprintf(path, sizeof path, "%s/libsyslet-%d.json", dir, pid);
    int saved = errno;
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "libsyslet: SYSLET_COMPAT_REPORT: %s: %s\n", tmp, strerror(errno));
        errno = saved;
        return;
    }
    fprintf(f, "{\"pid\": %d, \"backend\": \"%s\", \"counters\": {", pid,
            sl_ctx_backend(c) ? "io_uring" : "threadpool");
#define RC(name, sep) fprintf(f, "\"" #name "\": %llu" sep, (unsigned long long)k.name)
    RC(syslets_sync, ", "); RC(syslets_async, ", "); RC(atoms_uring, ", ");
    RC(atoms_inline, ", "); RC(atoms_pool, ", "); RC(atoms_nowait, ", "); RC(segments, ", ");
    RC(enters, ", "); RC(overstops, ", "); RC(ring_full_waits, ", "); RC(published, ", ");
    RC(pool_batches, ", "); RC(faults, ", "); RC(direct_reads, ", "); RC(caller_waits, ", ");
    RC(driver_waits, ", "); RC(cold_reads, ", "); RC(post_retries, ", ");
    RC(post_fallbacks, ", "); RC(fd_recoveries, ", ");
    RC(fd_classified, "");
#undef RC
    fprintf(f, "}, \"calls\": {");
    const char *sep = "";
    for (unsigned i = 0; i < SL_NRC_SLOTS; i++) {
        uint64_t any = 0;
        for (unsigned j = 0; j < SL_NRC_KINDS; j++)
            any |= nrc[i][j];
        if (!any)
            continue;
        if (i < 512)
            fprintf(f, "%s\"%u\": [", sep, i);
        else if (i < SL_NRC_SLOTS - 1)
            fprintf(f, "%s\"%u\": [", sep, 1000 + i - 512);
        else
            fprintf(f, "%s\"other\": [", sep);
        for (unsigned j = 0; j < SL_NRC_KINDS; j++)
            fprintf(f, "%s%llu", j ? ", " : "", (unsigned long long)nrc[i][j]);
        fprintf(f, "]");
        sep = ", ";
    }
    fprintf(f, "}}\n");
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "libsyslet: SYSLET_COMPAT_REPORT: %s: %s\n", path, strerror(errno));
        unlink(tmp);
    }
    errno = saved;
}

static __attribute__((noinline)) struct sl_ctx *ctx_slow(void)
{
    pthread_once(&g_once, install_once);
    pthread_mutex_lock(&g_mu);
    struct sl_ctx *c = atomic_load_explicit(&g_ctx, memory_order_relaxed);
    if (!c) {
        decide_policy();
        int err = 0;
        c = sl_ctx_new(g_backend, SQ_ENTRIES, &err);
        if (!c) {
            pthread_mutex_unlock(&g_mu);
            errno = err ? -err : ENOMEM;
            return NULL;
        }
        if (g_trace)
            sl_set_trace(c, 1);
        sl_set_env_abi(c, g_env_abi);
        static int report_atexit;       /* (inherited by a forked child, as atexit is) */
        if (!report_atexit && getenv("SYSLET_COMPAT_REPORT")) {
            report_atexit = 1;
            atexit(report_write);
        }
        if (g_debug) {
            static int atexit_done;
            fprintf(stderr, "libsyslet: pid %d context: backend=%s (asked %s)\n",
                    (int)getpid(), sl_ctx_backend(c) ? "io_uring" : "threadpool",
                    g_backend ? "io_uring" : "threadpool");
            if (!atexit_done) {
                atexit_done = 1;
                atexit(print_counters);
            }
        }
        atomic_store_explicit(&g_ctx, c, memory_order_release);
    }
    pthread_mutex_unlock(&g_mu);
    return c;
}

/* The context, created on first use (NULL with errno when that fails). */
static inline struct sl_ctx *ctx(void)
{
    struct sl_ctx *c = atomic_load_explicit(&g_ctx, memory_order_acquire);
    return __builtin_expect(c != NULL, 1) ? c : ctx_slow();
}

/* The context if one exists: calls that need a registered ring fail with
 * EINVAL without one, and need not create it to say so. */
static inline struct sl_ctx *ctx_if_any(void)
{
    return atomic_load_explicit(&g_ctx, memory_order_acquire);
}

/* ---- waking async_wait: the engine's progress broadcasts -------------------- */

int sl_dropin_cond_broadcast(pthread_cond_t *cv);
int sl_dropin_cond_broadcast(pthread_cond_t *cv)
{
    int r = pthread_cond_broadcast(cv);
    if (atomic_load(&g_nwaiting)) {
        int saved = errno;
        uint64_t one = 1;
        pthread_mutex_lock(&g_wmu);
        for (struct waiter *w = g_waiters; w; w = w->next)
            if (write(w->efd, &one, sizeof one) < 0) {
                /* EAGAIN: counter saturated, it is readable anyway */
            }
        pthread_mutex_unlock(&g_wmu);
        errno = saved;
    }
    return r;
}

/* ---- the fault guard: installed once, re-checked at async_register ---------- */

/* Set once the handler is in; dropin_engine.c reads it inline on exec. */
__attribute__((visibility("hidden"))) int sl_dropin_guard_ok;

int sl_dropin_guard_install(void);
int sl_dropin_guard_install(void)
{
    if (__builtin_expect(__atomic_load_n(&sl_dropin_guard_ok, __ATOMIC_RELAXED), 1))
        return 0;
    int r = sl_guard_install();
    if (r == 0)
        __atomic_store_n(&sl_dropin_guard_ok, 1, __ATOMIC_RELEASE);
    return r;
}

static void waiter_arm(struct waiter *w)
{
    pthread_mutex_lock(&g_wmu);
    w->prev = NULL;
    w->next = g_waiters;
    if (g_waiters)
        g_waiters->prev = w;
    g_waiters = w;
    atomic_fetch_add(&g_nwaiting, 1);
    pthread_mutex_unlock(&g_wmu);
}

static void waiter_disarm(struct waiter *w)
{
    pthread_mutex_lock(&g_wmu);
    if (w->prev)
        w->prev->next = w->next;
    else
        g_waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    atomic_fetch_sub(&g_nwaiting, 1);
    pthread_mutex_unlock(&g_wmu);
}

/* ---- the exported calls ------------------------------------------------------ */

static inline long fail(int neg)
{
    errno = -neg;
    return -1;
}

SYSLET_EXPORT long async_register(struct async_head_user *ahu, unsigned long len)
{
    int saved = errno;
    if (len != sizeof(struct async_head_user))
        return fail(-EINVAL);
    struct sl_ctx *c = ctx();
    if (!c)
        return -1;
    uint64_t h[3];
    /* Take the SIGSEGV/SIGBUS slot back if the program replaced our handler
     * since (exec does not check again: see dropin_engine.c). */
    int r = sl_guard_install();
    if (r == 0)
        r = sl_peek((uint64_t)(uintptr_t)ahu, h, sizeof h);
    if (r < 0)
        return fail(r);
    r = sl_register(c, h[0], h[1], h[2]);
    if (r < 0)
        return fail(r);
    errno = saved;
    return 0;
}

/* An engine result in the C convention: -errno becomes -1 and errno; a
 * success leaves errno as it was (the engine does too). */
static inline long c_result(int64_t r)
{
    return __builtin_expect(r < 0, 0) ? fail((int)r) : (long)r;
}

static inline struct syslet_uatom *exec_atom(struct syslet_uatom *atom)
{
    struct sl_ctx *c = ctx_if_any();
    if (__builtin_expect(!c, 0))
        return (struct syslet_uatom *)fail(-EINVAL);    /* no ring registered here */
    return (struct syslet_uatom *)c_result(sl_exec(c, (uint64_t)(uintptr_t)atom));
}

#if defined(__x86_64__)
/* ---- x86_64: the exec entry that returns without `ret` ------------------------
 *
 * A C exec path pays the first-ret-after-a-syscall penalty (retless.h) once
 * per call -- and so does every libc syscall wrapper, a plain pread() too.
 * syscall(__NR_async_exec, atom) and async_exec(atom) therefore go to
 * sl_dropin_exec_entry (SL_RETLESS_ENTRY): the engine's fast path in two C
 * halves around the one preadv2 it issues itself, then back to the program
 * with pop + jmp.  Anything but the fast path -- no context, not a lone
 * read, a shadow stack in use -- goes to the C path, which returns
 * normally.  docs/decisions.md D22. */

long sl_dropin_exec_c(uint64_t atom);
int sl_dropin_fast_begin(uint64_t atom, long unused, struct sl_fast *f);
long sl_dropin_fast_end(uint64_t atom, const struct sl_fast *f, long r);

__attribute__((visibility("hidden"))) long sl_dropin_exec_c(uint64_t atom)
{
    return (long)exec_atom((struct syslet_uatom *)(uintptr_t)atom);
}

__attribute__((visibility("hidden"))) int sl_dropin_fast_begin(uint64_t atom, long unused,
                                                               struct sl_fast *f)
{
    (void)unused;
    struct sl_ctx *c = ctx_if_any();
    return __builtin_expect(c != NULL, 1) ? sl_exec_fast_begin(c, atom, f) : 0;
}

__attribute__((visibility("hidden"))) long sl_dropin_fast_end(uint64_t atom,
                                                              const struct sl_fast *f, long r)
{
    (void)atom;
    return c_result(sl_exec_fast_end_unlocking(f, r, NULL));
}

SL_RETLESS_ENTRY(sl_dropin_exec_entry, sl_dropin_fast_begin, sl_dropin_fast_end,
                 sl_dropin_exec_c);

__asm__(
    /* async_exec(atom): the entry itself */
    ".text\n"
    ".p2align 4\n"
    ".globl async_exec\n.type async_exec, @function\n"
    "async_exec:\n"
    "    .cfi_startproc\n"
    "    jmp sl_dropin_exec_entry\n"
    "    .cfi_endproc\n"
    ".size async_exec, .-async_exec\n"
    /* syscall(nr, ...): 1001 to the entry (atom in rsi), the rest to C */
    ".p2align 4\n"
    ".globl syscall\n.type syscall, @function\n"
    "syscall:\n"
    "    .cfi_startproc\n"
    "    cmpq $1001, %rdi\n"
    "    jne sl_dropin_syscall\n"
    "    movq %rsi, %rdi\n"
    "    jmp sl_dropin_exec_entry\n"
    "    .cfi_endproc\n"
    ".size syscall, .-syscall\n");
#else
SYSLET_EXPORT struct syslet_uatom *async_exec(struct syslet_uatom *atom)
{
    return exec_atom(atom);
}
#endif

SYSLET_EXPORT long async_wait(unsigned long min_events)
{
    struct sl_ctx *c = ctx_if_any();
    if (!c)
        return fail(-EINVAL);
    int saved = errno;
    /* This thread waits in the kernel for the completions and publishes
     * them itself (a signal ends the wait). */
    int r = sl_wait_intr(c, min_events, -1);
    if (r != -EOPNOTSUPP) {
        if (r < 0)
            return fail(r);
        errno = saved;
        return 0;
    }
    r = sl_wait(c, min_events, 0);
    if (r == 0) {
        errno = saved;
        return 0;
    }
    if (r != -ETIME)
        return fail(r);
    /* max_nr_threads = N (only the driver reaps): arm first, then re-check:
     * a publish after arming writes our eventfd, so no wake-up is lost; the
     * slice is only a safety net. */
    struct waiter w;
    w.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w.efd < 0) {
        /* No eventfd: block in the engine (not interruptible by signals). */
        r = sl_wait(c, min_events, -1);
        if (r < 0)
            return fail(r);
        errno = saved;
        return 0;
    }
    waiter_arm(&w);
    for (;;) {
        r = sl_wait(c, min_events, 0);
        if (r != -ETIME)
            break;
        struct pollfd p = {w.efd, POLLIN, 0};
        int n = poll(&p, 1, WAIT_SLICE_MS);
        if (n < 0 && errno == EINTR) {
            r = -EINTR;
            break;
        }
        if (n > 0) {
            uint64_t v;
            if (read(w.efd, &v, sizeof v) < 0) {
                /* EAGAIN: drained by nobody else; nothing to do */
            }
        }
    }
    waiter_disarm(&w);
    close(w.efd);
    if (r < 0)
        return fail(r);
    errno = saved;
    return 0;
}

SYSLET_EXPORT long async_unregister(struct async_head_user *ahu, unsigned long len)
{
    int saved = errno;
    if (len != sizeof(struct async_head_user))
        return fail(-EINVAL);
    uint64_t h[3];
    int r = sl_peek((uint64_t)(uintptr_t)ahu, h, sizeof h);
    if (r < 0)
        return fail(r);
    struct sl_ctx *c = ctx_if_any();
    if (!c)
        return fail(-EINVAL);
    r = sl_unregister(c, h[0], h[1], -1);
    if (r < 0)
        return fail(r);
    errno = saved;
    return 0;
}

SYSLET_EXPORT unsigned long umem_add(unsigned long *uptr, unsigned long inc)
{
    uint64_t v;
    int r = sl_dropin_guard_install();
    if (r == 0)
        r = g_add((uint64_t)(uintptr_t)uptr, inc, &v);
    if (r) {
        errno = -r;
        return (unsigned long)-1L;
    }
    return (unsigned long)v;
}

/* ---- personalities v5, v6 (a head per call) and v7 (indirect) --------------- */

static long exec_head(int abi, uint64_t atom, uint64_t ahu)
{
    int saved = errno;
    struct sl_ctx *c = ctx();
    if (!c)
        return -1;
    int64_t r = sl_exec_head(c, abi, atom, ahu, NULL);
    if (r < 0)
        return fail((int)r);
    errno = saved;
    return (long)r;
}

static long wait_head(int abi, unsigned long min_events, unsigned long user_ring_idx, uint64_t ahu)
{
    int saved = errno;
    struct sl_ctx *c = ctx();
    if (!c)
        return -1;
    int r = sl_wait_head(c, abi, min_events, user_ring_idx, ahu, -1, 1);
    if (r < 0)
        return fail(r);
    errno = saved;
    return 0;
}

static long async_thread_any(uint64_t event, uint64_t ahu)
{
    struct sl_ctx *c = ctx();
    if (!c)
        return -1;
    return fail(sl_async_thread(c, event, ahu));
}

SYSLET_EXPORT long async_exec_v5(void *atom, void *ahu)
{
    return exec_head(SL_ABI_V5, (uint64_t)(uintptr_t)atom, (uint64_t)(uintptr_t)ahu);
}

SYSLET_EXPORT long async_wait_v5(unsigned long min_events, unsigned long user_ring_idx, void *ahu)
{
    return wait_head(SL_ABI_V5, min_events, user_ring_idx, (uint64_t)(uintptr_t)ahu);
}

SYSLET_EXPORT long async_thread_v5(void *event, void *ahu)
{
    return async_thread_any((uint64_t)(uintptr_t)event, (uint64_t)(uintptr_t)ahu);
}

SYSLET_EXPORT long async_exec_v6(void *atom, void *ahu)
{
    return exec_head(SL_ABI_V6, (uint64_t)(uintptr_t)atom, (uint64_t)(uintptr_t)ahu);
}

SYSLET_EXPORT long async_wait_v6(unsigned long min_events, unsigned long user_ring_idx, void *ahu)
{
    return wait_head(SL_ABI_V6, min_events, user_ring_idx, (uint64_t)(uintptr_t)ahu);
}

SYSLET_EXPORT long async_thread_v6(void *event, void *ahu)
{
    return async_thread_any((uint64_t)(uintptr_t)event, (uint64_t)(uintptr_t)ahu);
}

SYSLET_EXPORT long syslet_indirect(void *regs, void *params, unsigned long paramslen,
                                   unsigned long flags)
{
    int saved = errno;
    struct sl_ctx *c = ctx();
    if (!c)
        return -1;
    int64_t r = sl_indirect(c, (uint64_t)(uintptr_t)regs, (uint64_t)(uintptr_t)params,
                            paramslen, flags, NULL);
    if (r < 0 && r >= -4095)
        return fail((int)r);
    errno = saved;
    return (long)r;
}

SYSLET_EXPORT long syslet_ring_wait(void *ring, unsigned long idx)
{
    int saved = errno;
    struct sl_ctx *c = ctx();
    if (!c)
        return -1;
    int r = sl_ring_wait(c, (uint64_t)(uintptr_t)ring, idx, -1, 1);
    if (r < 0)
        return fail(r);
    errno = saved;
    return 0;
}

SYSLET_EXPORT int syslet_compat_backend(void)
{
    struct sl_ctx *c = ctx();
    return c ? sl_ctx_backend(c) : -1;
}

/* The 2007 calling convention.  The project's numbers are served here (v1
 * 1000-1004, v5 1010-1013, v6 1020-1023, v7 1030-1031) and, under
 * SYSLET_COMPAT_ABI, its personality's 2007 x86_64 numbers; every
 * other number goes, with all six argument registers, to the next
 * syscall() (libc's), so LD_PRELOAD changes nothing else. */
static inline long syslet_syscall6(long nr, long a0, long a1, long a2, long a3, long a4,
                                   long a5)
{
    switch (nr) {
    case __NR_async_exec:       /* (x86_64: the assembly entry took it already) */
        return (long)exec_atom((struct syslet_uatom *)a0);
    case __NR_async_register:
        return async_register((struct async_head_user *)a0, (unsigned long)a1);
    case __NR_async_wait:
        return async_wait((unsigned long)a0);
    case __NR_async_unregister:
        return async_unregister((struct async_head_user *)a0, (unsigned long)a1);
    case __NR_umem_add:
    case 1012:      /* v5 */
    case 1022:      /* v6 */
        return (long)umem_add((unsigned long *)a0, (unsigned long)a1);
    case 1010: return async_exec_v5((void *)a0, (void *)a1);
    case 1011: return async_wait_v5((unsigned long)a0, (unsigned long)a1, (void *)a2);
    case 1013: return async_thread_v5((void *)a0, (void *)a1);
    case 1020: return async_exec_v6((void *)a0, (void *)a1);
    case 1021: return async_wait_v6((unsigned long)a0, (unsigned long)a1, (void *)a2);
    case 1023: return async_thread_v6((void *)a0, (void *)a1);
    case 1030: return syslet_indirect((void *)a0, (void *)a1, (unsigned long)a2, (unsigned long)a3);
    case 1031: return syslet_ring_wait((void *)a0, (unsigned long)a1);
    }
    /* The 2007 x86_64 numbers, only under SYSLET_COMPAT_ABI (they are
     * unrelated real calls today). */
    if (__builtin_expect(g_env_abi > SL_ABI_V1, 0) && nr >= 280 && nr <= 289)
        switch (g_env_abi * 1000 + nr) {
        case 5280: return async_exec_v5((void *)a0, (void *)a1);
        case 5281: return async_wait_v5((unsigned long)a0, (unsigned long)a1, (void *)a2);
        case 5282: return (long)umem_add((unsigned long *)a0, (unsigned long)a1);
        case 5283: return async_thread_v5((void *)a0, (void *)a1);
        case 6286: return async_exec_v6((void *)a0, (void *)a1);
        case 6287: return async_wait_v6((unsigned long)a0, (unsigned long)a1, (void *)a2);
        case 6288: return (long)umem_add((unsigned long *)a0, (unsigned long)a1);
        case 6289: return async_thread_v6((void *)a0, (void *)a1);
        case 7286: return syslet_indirect((void *)a0, (void *)a1, (unsigned long)a2,
                                          (unsigned long)a3);
        case 7287: return syslet_ring_wait((void *)a0, (unsigned long)a1);
        }
    return next_syscall()(nr, a0, a1, a2, a3, a4, a5);
}

#if defined(__x86_64__)
/* On x86_64 a variadic call passes integer arguments exactly as a call with
 * seven named ones does (rdi, rsi, rdx, rcx, r8, r9, then the stack; %al,
 * the count of vector registers, is only read by variadic callees), so the
 * exported syscall() -- a few lines of assembly above, which send 1001 to the
 * exec entry -- jumps here with every register as the program set it. */
__attribute__((visibility("hidden"))) long sl_dropin_syscall(long nr, long a0, long a1, long a2,
                                                             long a3, long a4, long a5);
__attribute__((visibility("hidden"))) long sl_dropin_syscall(long nr, long a0, long a1, long a2,
                                                             long a3, long a4, long a5)
{
    return syslet_syscall6(nr, a0, a1, a2, a3, a4, a5);
}
#else
SYSLET_EXPORT long syscall(long nr, ...)
{
    va_list ap;
    va_start(ap, nr);
    long r = call_va6(syslet_syscall6, nr, ap);
    va_end(ap);
    return r;
}
#endif
