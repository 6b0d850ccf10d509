/* A 2007-style copy of the syslet v1 header, as legacy programs (fio's
 * syslet-rw engine among them) carried it: the structures with __user
 * annotations, the flags, and the system call numbers of the patch, each
 * under #ifndef.  Built with -include syslet-numbers.h -D__user=, our
 * numbers win and __user disappears. */
#ifndef _LINUX_SYSLET_H
#define _LINUX_SYSLET_H

#define SYSLET_ASYNC			0x00000001
#define SYSLET_SYNC			0x00000002
#define SYSLET_NO_COMPLETE		0x00000004
#define SYSLET_STOP_ON_NONZERO		0x00000008
#define SYSLET_STOP_ON_ZERO		0x00000010
#define SYSLET_STOP_ON_NEGATIVE		0x00000020
#define SYSLET_STOP_ON_NON_POSITIVE	0x00000040
#define SYSLET_STOP_MASK		0x00000078
#define SYSLET_SKIP_TO_NEXT_ON_STOP	0x00000080

struct syslet_uatom {
	unsigned long				flags;
	unsigned long				nr;
	long __user				*ret_ptr;
	struct syslet_uatom	__user		*next;
	unsigned long		__user		*arg_ptr[6];
	void __user				*private;
};

struct async_head_user {
	struct syslet_uatom __user		**completion_ring;
	unsigned long				ring_size_bytes;
	unsigned long				max_nr_threads;
};

/* The numbers of the 2007 patch (real, unrelated system calls today). */
#ifndef __NR_async_register
#define __NR_async_register	280
#endif
#ifndef __NR_async_exec
#define __NR_async_exec		281
#endif
#ifndef __NR_async_wait
#define __NR_async_wait		282
#endif
#ifndef __NR_async_unregister
#define __NR_async_unregister	283
#endif
#ifndef __NR_umem_add
#define __NR_umem_add		284
#endif

#endif
