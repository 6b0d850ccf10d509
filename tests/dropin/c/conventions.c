/* The five calls' return conventions (C: -1 and errno), through syscall()
 * with our numbers (USE_FUNCTIONS: through libsyslet's exported functions). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <syslet.h>

#ifdef USE_FUNCTIONS
#define REG(h, l)   async_register((h), (l))
#define EXEC(a)     ((long)async_exec(a))
#define WAIT(n)     async_wait(n)
#define UNREG(h, l) async_unregister((h), (l))
#define UMEM(p, i)  ((long)umem_add((p), (i)))
#else
#define REG(h, l)   syscall(__NR_async_register, (h), (l))
#define EXEC(a)     syscall(__NR_async_exec, (a))
#define WAIT(n)     syscall(__NR_async_wait, (n))
#define UNREG(h, l) syscall(__NR_async_unregister, (h), (l))
#define UMEM(p, i)  syscall(__NR_umem_add, (p), (i))
#endif

static void show(const char *what, long r)
{
    if (r == -1)
        printf("%s: -1 %s\n", what, strerrorname_np(errno));
    else
        printf("%s: %ld\n", what, r);
}

static struct syslet_uatom *ring[4];

static void atom(struct syslet_uatom *a, unsigned long flags, unsigned long nr, long *ret,
                 unsigned long *a0, unsigned long *a1)
{
    memset(a, 0, sizeof *a);
    a->flags = flags;
    a->nr = nr;
    a->ret_ptr = ret;
    a->arg_ptr[0] = a0;
    a->arg_ptr[1] = a1;
}

int main(void)
{
    struct async_head_user ahu = {ring, sizeof ring, -1UL};
    struct async_head_user odd = {ring, 12, -1UL};
    struct async_head_user other = {ring, 16, -1UL};
    struct syslet_uatom a;
    long res = 0;

    atom(&a, 0, SYS_getpid, &res, NULL, NULL);
    show("exec before register", EXEC(&a));
    show("wait before register", WAIT(1));
    show("unregister before register", UNREG(&ahu, sizeof ahu));
    show("register len 23", REG(&ahu, 23));
    show("register bad pointer", REG((void *)16, sizeof ahu));
    show("register ring 12 bytes", REG(&odd, sizeof odd));
    show("register", REG(&ahu, sizeof ahu));
    show("register again", REG(&ahu, sizeof ahu));

    show("exec bad pointer", EXEC((void *)16));
    atom(&a, SYSLET_ASYNC | SYSLET_SYNC, SYS_getpid, &res, NULL, NULL);
    show("exec ASYNC|SYNC", EXEC(&a));

    atom(&a, 0, SYS_getpid, &res, NULL, NULL);
    errno = 1234;
    long r = EXEC(&a);
    printf("exec getpid: %s, result is pid: %d, errno kept: %d\n",
           r == (long)&a ? "final atom" : "?", res == getpid(), errno == 1234);

    /* Reads that RWF_NOWAIT settles in the caller (the fast path): whole,
     * short (all a pipe had), end of file, and failed -- errno untouched by
     * every one of them, as by any successful call. */
    int pfd[2];
    char rgot[8] = "";
    unsigned long rfd, rbuf = (unsigned long)rgot, rlen;
    if (pipe(pfd) != 0 || write(pfd[1], "abcde", 5) != 5)
        return 1;
    rfd = (unsigned long)pfd[0];
    static const struct { const char *what; unsigned long len; } reads[] = {
        {"whole", 3}, {"short", 8}};
    for (unsigned k = 0; k < 2; k++) {
        rlen = reads[k].len;
        atom(&a, 0, SYS_read, &res, &rfd, &rbuf);
        a.arg_ptr[2] = &rlen;
        errno = 1234;
        r = EXEC(&a);
        printf("exec read pipe %s: %s, result %ld, data %.*s, errno kept: %d\n", reads[k].what,
               r == (long)&a ? "final atom" : "?", res, (int)(res > 0 ? res : 0), rgot,
               errno == 1234);
    }
    close(pfd[1]);
    rlen = 4;
    errno = 1234;
    r = EXEC(&a);
    printf("exec read pipe at EOF: %s, result %ld, errno kept: %d\n",
           r == (long)&a ? "final atom" : "?", res, errno == 1234);
    close(pfd[0]);
    errno = 1234;
    r = EXEC(&a);
    printf("exec read closed fd: %s, result %ld, errno kept: %d\n",
           r == (long)&a ? "final atom" : "?", res, errno == 1234);

    unsigned long dummy = 0;
    atom(&a, 0, __NR_async_exec, &res, &dummy, NULL);
    r = EXEC(&a);
    printf("exec atom nr 1001: %s, result %ld\n", r == (long)&a ? "final atom" : "?", res);

    unsigned long word = 40, word_addr = (unsigned long)&word, two = 2;
    atom(&a, 0, __NR_umem_add, &res, &word_addr, &two);
    r = EXEC(&a);
    printf("exec atom umem_add: %s, result %ld, word %lu\n", r == (long)&a ? "final atom" : "?",
           res, word);
    unsigned long bad_addr = 16;
    atom(&a, 0, __NR_umem_add, &res, &bad_addr, &two);
    r = EXEC(&a);
    printf("exec atom umem_add bad pointer: result %ld\n", res);

    show("umem_add", UMEM(&word, 8));
    show("umem_add bad pointer", UMEM((unsigned long *)16, 1));
    show("wait 0", WAIT(0));

    /* Async: the final atom appears in the ring, exactly once. */
    atom(&a, SYSLET_ASYNC, SYS_getpid, &res, NULL, NULL);
    res = 0;
    show("exec ASYNC", EXEC(&a));
    show("wait 1", WAIT(1));
    printf("ring[0] is the atom: %d, result is pid: %d, ring[1] empty: %d\n",
           ring[0] == &a, res == getpid(), ring[1] == NULL);
    ring[0] = NULL;

    /* NO_COMPLETE on the final atom: nothing is published. */
    struct syslet_uatom b;
    long res_b = 0;
    atom(&b, SYSLET_ASYNC | SYSLET_NO_COMPLETE, SYS_getppid, &res_b, NULL, NULL);
    show("exec ASYNC|NO_COMPLETE", EXEC(&b));
    show("unregister other ring", UNREG(&other, sizeof other));
    show("unregister len 8", UNREG(&ahu, 8));
    show("unregister", UNREG(&ahu, sizeof ahu));
    printf("after unregister: result is ppid: %d, ring empty: %d\n", res_b == getppid(),
           ring[0] == NULL && ring[1] == NULL && ring[2] == NULL && ring[3] == NULL);
    show("exec after unregister", EXEC(&a));

    /* max_nr_threads = 0: every syslet is synchronous, even SYSLET_ASYNC. */
    struct async_head_user sync_ahu = {ring, sizeof ring, 0};
    show("register max_nr_threads 0", REG(&sync_ahu, sizeof sync_ahu));
    atom(&a, SYSLET_ASYNC, SYS_getpid, &res, NULL, NULL);
    r = EXEC(&a);
    printf("exec ASYNC without threads: %s\n", r == (long)&a ? "final atom" : r ? "?" : "NULL");
    show("unregister", UNREG(&sync_ahu, sizeof sync_ahu));

    /* Every other number goes to the kernel, with all six arguments. */
    printf("getpid forwarded: %d\n", syscall(SYS_getpid) == getpid());
    show("syscall 999", syscall(999, 1, 2, 3, 4, 5, 6));
    show("syscall 1005", syscall(1005, 1, 2, 3, 4, 5, 6));
    char path_in[] = "/tmp/syslet-conv-XXXXXX", path_out[] = "/tmp/syslet-conv-XXXXXX";
    int in = mkstemp(path_in), out = mkstemp(path_out);
    unlink(path_in);
    unlink(path_out);
    if (write(in, "0123456789abcdef", 16) != 16)
        return 3;
    long long off_in = 4, off_out = 2;
    long n = syscall(SYS_copy_file_range, in, &off_in, out, &off_out, 6L, 0L);
    char got[16] = {0};
    if (pread(out, got, sizeof got - 1, 0) < 0)
        return 3;
    printf("copy_file_range forwarded: %ld, offsets %lld %lld, data %.8s\n", n,
           (long long)off_in, (long long)off_out, got + 2);
    return 0;
}
