/* engine.c as compiled into libsyslet.  Identical, except:
 *
 *  - its progress broadcasts (pthread_cond_broadcast) also wake the threads
 *    blocked in async_wait's signal-interruptible poll();
 *  - its per-call re-installation of the SIGSEGV/SIGBUS guard (two
 *    rt_sigaction system calls on every exec, there for Python hosts where
 *    faulthandler may replace the handler at any time) becomes a once-only
 *    install, and so does its time-limited re-check (sl_guard_check: a
 *    clock read on every exec); async_register re-checks it.
 *
 * Both hooks are defined in dropin.c.  The compat._engine Python module
 * compiles engine.c itself, unchanged. */
#define pthread_cond_broadcast sl_dropin_cond_broadcast
#define sl_guard_install sl_dropin_guard_install
#define sl_guard_check sl_dropin_guard_check

int sl_dropin_guard_install(void);
extern __attribute__((visibility("hidden"))) int sl_dropin_guard_ok;

static inline int sl_dropin_guard_check(void)
{
    return __builtin_expect(__atomic_load_n(&sl_dropin_guard_ok, __ATOMIC_RELAXED), 1)
               ? 0 : sl_dropin_guard_install();
}

#include "engine.c"
