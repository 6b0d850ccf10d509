/* Built with our numbers, run without libsyslet: each call is ENOSYS. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <syslet-numbers.h>

int main(void)
{
    static const long nrs[] = {__NR_async_register, __NR_async_exec, __NR_async_wait,
                               __NR_async_unregister, __NR_umem_add};
    unsigned long word = 0;
    for (unsigned i = 0; i < sizeof nrs / sizeof nrs[0]; i++) {
        errno = 0;
        long r = syscall(nrs[i], &word, 8L, 0L, 0L, 0L, 0L);
        printf("%ld: %ld %s\n", nrs[i], r, strerrorname_np(errno));
    }
    return word != 0;
}
