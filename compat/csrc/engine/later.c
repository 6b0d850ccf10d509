/* The calls of the later personalities (docs/spec.md 7-13): v5's and v6's
 * async_exec / async_wait / async_thread with a head per call, v7's
 * indirect and syslet_ring_wait.  They decode and check their arguments in
 * the 2007 order and then run on the same paths as v1 (the fast path, the
 * general path, the waits); only where completions go differs (syslet.c).
 * Part of engine.c (one translation unit: see there). */

void sl_set_env_abi(struct sl_ctx *c, int abi)
{
    if (c)
        c->env_abi = abi;
}

/* Reads a v5/v6 async_head_user (64 bytes, eight words) and checks what
 * every call checks: -EFAULT unreadable, -EINVAL without a usable ring. */
static int read_ahu(uint64_t ahu, uint64_t *h)
{
    if (g_copy_in(h, ahu, 64))
        return -EFAULT;
    if (!h[2] || !h[3] || h[3] % 8)
        return -EINVAL;
    return 0;
}

/* One exec with a head: the fast path (a lone read settled by one
 * RWF_NOWAIT try), else the general path. */
static int64_t exec_tgt(struct sl_ctx *c, uint64_t atom, const struct sl_tgt *t,
                        const struct sl_unlock *u)
{
    struct sl_fast f;
    int ok = t->abi == SL_ABI_V6 ? fast_begin(c, atom, &f, 0, 1) : fast_begin(c, atom, &f, 0, 0);
    if (ok)
        return fast_end(&f, f.direct ? -EBADF : nowait_preadv((int)f.fd, &f.iov, (off_t)f.off),
                        u, t);
    return exec_general(c, atom, u, NULL, t);
}

int64_t sl_exec_head(struct sl_ctx *c, int abi, uint64_t atom, uint64_t ahu,
                     const struct sl_unlock *u)
{
    uint64_t h[8];
    if (!c)
        return -EBADF;
    if (abi != SL_ABI_V5 && abi != SL_ABI_V6)
        return -EINVAL;
    int e = read_ahu(ahu, h);
    if (e)
        return e;
    if (!h[6])              /* new_thread_stack: the later kernels refused a head without */
        return -EINVAL;
    struct sl_tgt t = {(unsigned)abi, ahu};
    return exec_tgt(c, atom, &t, u);
}

int sl_wait_head(struct sl_ctx *c, int abi, uint64_t min_events, uint64_t user_ring_idx,
                 uint64_t ahu, int64_t timeout_ns, int intr)
{
    uint64_t h[8];
    if (!c)
        return -EBADF;
    if (abi != SL_ABI_V5 && abi != SL_ABI_V6)
        return -EINVAL;
    int e = read_ahu(ahu, h);
    if (e)
        return e;
    if (user_ring_idx >= h[3] / 8 || min_events > h[3] / 8)
        return -EINVAL;
    if (min_events == 0)
        return 0;
    struct wcond w = {(unsigned)abi, min_events, user_ring_idx, ahu};
    return wait_ring(c, &w, timeout_ns, intr);
}

int sl_async_thread(struct sl_ctx *c, uint64_t event, uint64_t ahu)
{
    uint64_t h[8];
    (void)c;
    (void)event;
    if (g_copy_in(h, ahu, 64))
        return -EFAULT;
    /* No thread ever runs on the head's stacks here: the caller parks like
     * an idle cachemiss thread until a handled signal ends it. */
    sigset_t now;
    pthread_sigmask(SIG_SETMASK, NULL, &now);
    sigsuspend(&now);
    return -EINTR;
}

/* ---- v7 ------------------------------------------------------------------ */

#define ESYSLETPENDING 132

/* indirect without a ring: the calls that make a file descriptor, with
 * file_flags (O_CLOEXEC, O_NONBLOCK) given through their modern flags
 * argument, so they apply atomically. */
static int64_t indirect_plain(const uint64_t *regs, uint32_t file_flags)
{
    int64_t a[6];
    long nr = (long)regs[0];
    memcpy(a, regs + 1, sizeof a);
    if (file_flags & ~(uint32_t)(O_CLOEXEC | O_NONBLOCK))
        return -EINVAL;
    switch (regs[0]) {
    case SYS_accept:        nr = SYS_accept4; a[3] = file_flags; break;
    case SYS_accept4:       a[3] |= file_flags; break;
    case SYS_socket:        /* SOCK_CLOEXEC, SOCK_NONBLOCK: the O_ values */
    case SYS_socketpair:    a[1] |= file_flags; break;
    case SYS_eventfd:       nr = SYS_eventfd2; a[1] = file_flags; break;
    case SYS_eventfd2:      a[1] |= file_flags; break;
    case SYS_signalfd:      nr = SYS_signalfd4; a[3] = file_flags; break;
    case SYS_signalfd4:     a[3] |= file_flags; break;
    case SYS_timerfd_create: a[1] |= file_flags; break;
    default:
        return -EINVAL;
    }
    return sext32(raw_syscall((uint64_t)nr, a));
}

/* One struct v7call kept per thread between synchronous calls (most are):
 * no malloc/free per call.  Freed at thread exit. */
static pthread_key_t v7_spare_key;
static pthread_once_t v7_spare_once = PTHREAD_ONCE_INIT;
static void v7_spare_init(void) { pthread_key_create(&v7_spare_key, free); }

static struct v7call *v7_take(void)
{
    pthread_once(&v7_spare_once, v7_spare_init);
    struct v7call *v = pthread_getspecific(v7_spare_key);
    if (v) {
        pthread_setspecific(v7_spare_key, NULL);
        return v;
    }
    return malloc(sizeof *v);
}

static void v7_give_back(struct v7call *v)
{
    if (pthread_getspecific(v7_spare_key))
        free(v);
    else
        pthread_setspecific(v7_spare_key, v);
}

/* An indirect syslet: the call of r[] (number, six arguments), completing
 * into ring with cdata.  A lone read/pread64 of a buffered fd is tried with
 * RWF_NOWAIT right here, as the exec fast path does for an atom (D23: never
 * an O_DIRECT or cold fd); anything else becomes a struct v7call run as a
 * syslet of personality v7 (D29). */
static int64_t indirect_general(struct sl_ctx *c, const uint64_t *r, uint64_t ring,
                                uint64_t cdata, const struct sl_unlock *u, int64_t partial,
                                int kind);

static inline int64_t indirect_syslet(struct sl_ctx *c, const uint64_t *r, uint64_t ring,
                                      uint64_t cdata, const struct sl_unlock *u)
{
    const int64_t *a = (const int64_t *)(r + 1);
    int64_t partial = -1;
    int kind = -1;
    if ((r[0] == SYS_read || r[0] == SYS_pread64) &&
        __atomic_load_n(&c->fast_free, __ATOMIC_RELAXED) && !FOREIGN(c) &&
        rw_exact(r[0], a) && a[2] != 0) {
        kind = fd_kind(c, a[0]);
        if (kind == FDK_BUFFERED) {
            struct iovec iov = {(void *)(uintptr_t)a[1], (size_t)a[2]};
            uint64_t t0 = sl_ticks();
            int64_t res = nowait_preadv((int)a[0], &iov, r[0] == SYS_read ? -1 : (off_t)a[3]);
            if (sl_ticks() - t0 > SL_SLOW_TICKS && res >= 0)
                fdk_forget(c, a[0]);    /* slow with data: O_DIRECT? ask again */
            if (res != a[2])
                fdk_tried(c, a[0], res);
            switch (res == a[2] ? NW_DONE : nowait_outcome(r[0], a, res)) {
            case NW_DONE:
                __atomic_add_fetch(&c->fast_hits[r[0] != SYS_read], 1, __ATOMIC_RELAXED);
                return sext32(res);
            case NW_SHORT:
                partial = res;
                break;
            }
        }
    }
    return indirect_general(c, r, ring, cdata, u, partial, kind);
}

/* The rest of indirect_syslet (out of line: the in-place read stays a few
 * instructions): r[] as a syslet of personality v7 with one atom. */
static __attribute__((noinline)) int64_t indirect_general(struct sl_ctx *c, const uint64_t *r,
                                                          uint64_t ring, uint64_t cdata,
                                                          const struct sl_unlock *u,
                                                          int64_t partial, int kind)
{
    const int64_t *a = (const int64_t *)(r + 1);
    struct v7call *v = v7_take();
    if (!v)
        return -ENOMEM;
    memset(v->atom, 0, sizeof v->atom);
    v->atom[1] = r[0];
    v->atom[2] = (uint64_t)(uintptr_t)&v->ret;
    for (int k = 0; k < 6; k++) {
        v->vals[k] = a[k];
        v->atom[4 + k] = (uint64_t)(uintptr_t)&v->vals[k];
    }
    v->ret = 0;
    v->ring = ring;
    v->cdata = cdata;
    uint64_t atom = (uint64_t)(uintptr_t)v->atom;
    struct sl_tgt t = {SL_ABI_V7, (uint64_t)(uintptr_t)v};
    int64_t x;
    if (partial >= 0 || kind == FDK_DIRECT || kind == FDK_COLD) {
        /* begun by a short read, or not to be tried here: hand it over */
        struct member pre;
        read_atom(atom, &pre, SL_ABI_V7);
        uring_op(&pre);
        pre.partial = partial;
        pre.direct = (uint8_t)(partial >= 0 ? 0 : kind);
        x = exec_general(c, atom, u, &pre, &t);
    } else {
        x = exec_general(c, atom, u, NULL, &t);
    }
    if (x == 0)
        return -ESYSLETPENDING;     /* v is the syslet's now: freed when it ends */
    int64_t res = x > 0 ? sext32(v->ret) : x;
    v7_give_back(v);
    return res;
}

int64_t sl_indirect(struct sl_ctx *c, uint64_t regs, uint64_t params, uint64_t paramslen,
                    uint64_t flags, const struct sl_unlock *u)
{
    uint64_t r[7], p[4] = {0, 0, 0, 0};
    uint32_t elements = 0;
    if (!c)
        return -EBADF;
    if (flags)
        return -EINVAL;
    /* One guarded read of all three (D29); the checks below keep the
     * spec's order whatever faulted. */
    int f = g_read_indirect(regs, params, paramslen > sizeof p ? 0 : paramslen, r, p, &elements);
    if (f == 1)
        return -EFAULT;
    if (paramslen > sizeof p)
        return -EINVAL;
    if (f == 2)
        return -EFAULT;
    if (paramslen < 8 || !p[0])
        return indirect_plain(r, (uint32_t)p[0]);
    if (!p[2] || !p[3])     /* frame.ip, frame.sp: checked, never run */
        return -EINVAL;
    if (f == 3)
        return -EFAULT;
    if (!elements || (elements & (elements - 1)))
        return -EINVAL;
    return indirect_syslet(c, r, p[0], p[1], u);
}

int sl_ring_wait(struct sl_ctx *c, uint64_t ring, uint64_t idx, int64_t timeout_ns, int intr)
{
    uint32_t hd[4];
    if (!c)
        return -EBADF;
    if (g_copy_in(hd, ring, sizeof hd))
        return -EFAULT;
    if (hd[0] != (uint32_t)idx)
        return 0;
    struct wcond w = {SL_ABI_V7, 0, idx, ring};
    return wait_ring(c, &w, timeout_ns, intr);
}
