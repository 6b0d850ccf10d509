/* Atom decoding into struct member (the personality codecs) and the raw
 * system call.
 * Part of engine.c (one translation unit: see there). */

/* ---- small helpers ----------------------------------------------------- */

/* The kernel's convention: -errno for -4095..-1, anything else a value (a
 * result below -4095 is one: fcntl(F_GETOWN) of a process group above 4095).
 * libc's syscall() maps exactly that range to -1 and errno, and passes the
 * rest through. */
static int64_t raw_syscall(uint64_t nr, const int64_t *a)
{
    long r = syscall((long)nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    return r == -1 ? -(int64_t)errno : (int64_t)r;
}

/* The member of the atom at addr, not begun: w[0..3] its header words,
 * w[4..4+ncells) its first argument cells (the rest 0); args are the
 * caller's. */
static void member_set(struct member *m, uint64_t addr, const uint64_t *w, unsigned ncells)
{
    m->atom = addr;
    m->flags = w[0];
    m->nr = w[1];
    m->ret_ptr = w[2];
    m->next = w[3];
    for (unsigned k = 0; k < 6; k++)
        m->cells[k] = k < ncells ? w[4 + k] : 0;
    m->partial = -1;
    m->done = 0;
    m->direct = 0;
    m->sqe_flags = 0;
    m->op = 0;
    m->transfer = 0;
    m->abi = SL_ABI_V1;
}

static inline unsigned atom_size(unsigned abi)
{
    return abi == SL_ABI_V6 ? ATOM80_SIZE : ATOM_SIZE;
}

/* Reads the atom at addr in personality abi's layout (v6: 80 bytes, flags
 * and nr 32 bits each; the others: v1's 88 bytes) and its argument words.
 * 0, or -EFAULT for an unreadable atom, or 1 for an unreadable argument
 * pointer (atom readable). */
static int read_atom(uint64_t addr, struct member *m, unsigned abi)
{
    uint64_t w[11];
    int r;
    if (__builtin_expect(abi == SL_ABI_V6, 0)) {
        r = g_read_atom80(addr, w, m->args);
        w[0] = w[1] & 0xffffffffu;
        w[1] >>= 32;
    } else {
        r = g_read_atom(addr, w, m->args);
    }
    if (r >= 0) {
        member_set(m, addr, w, 6);
        m->abi = (uint8_t)abi;
    }
    return r;
}
