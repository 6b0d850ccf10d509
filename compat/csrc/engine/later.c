/* The calls of the later personalities (LATER_ABIS.md): v5's and v6's
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

/* One exec with a head: the fast path when the atom has v1's layout (v5,
 * v7's own atoms), else the general path. */
static int64_t exec_tgt(struct sl_ctx *c, uint64_t atom, const struct sl_tgt *t,
                        const struct sl_unlock *u)
{
    struct sl_fast f;
    if (t->abi != SL_ABI_V6 && fast_begin(c, atom, &f, 0))
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

int64_t sl_indirect(struct sl_ctx *c, uint64_t regs, uint64_t params, uint64_t paramslen,
                    uint64_t flags, const struct sl_unlock *u)
{
    uint64_t r[7], p[4] = {0, 0, 0, 0};
    if (!c)
        return -EBADF;
    if (flags)
        return -EINVAL;
    if (g_copy_in(r, regs, sizeof r))
        return -EFAULT;
    if (paramslen > sizeof p)
        return -EINVAL;
    if (paramslen && g_copy_in(p, params, paramslen))
        return -EFAULT;
    if (paramslen < 8 || !p[0])
        return indirect_plain(r, (uint32_t)p[0]);
    if (!p[2] || !p[3])     /* frame.ip, frame.sp: checked, never run */
        return -EINVAL;
    uint32_t elements;
    if (g_copy_in(&elements, p[0] + 8, 4))
        return -EFAULT;
    if (!elements || (elements & (elements - 1)))
        return -EINVAL;
    struct v7call *v = malloc(sizeof *v);
    if (!v)
        return -ENOMEM;
    memset(v->atom, 0, sizeof v->atom);
    v->atom[1] = r[0];
    v->atom[2] = (uint64_t)(uintptr_t)&v->ret;
    for (int k = 0; k < 6; k++) {
        v->vals[k] = (int64_t)r[1 + k];
        v->atom[4 + k] = (uint64_t)(uintptr_t)&v->vals[k];
    }
    v->ret = 0;
    v->ring = p[0];
    v->cdata = p[1];
    struct sl_tgt t = {SL_ABI_V7, (uint64_t)(uintptr_t)v};
    int64_t x = exec_tgt(c, (uint64_t)(uintptr_t)v->atom, &t, u);
    if (x == 0)
        return -ESYSLETPENDING;     /* v is the syslet's now: freed when it ends */
    int64_t res = x > 0 ? sext32(v->ret) : x;
    free(v);
    return res;
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
