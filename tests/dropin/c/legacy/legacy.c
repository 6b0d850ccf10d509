/* A 2007-style syslet program: its own header copy, its own syscall()
 * wrappers (as fio's arch header had them), fio's first two-atom I/O. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "syslet.h"

static inline long async_register(void *ahu, unsigned int len)
{
	return syscall(__NR_async_register, ahu, len);
}
static inline void *async_exec(void *data)
{
	return (void *) syscall(__NR_async_exec, data);
}
static inline long async_wait(unsigned long min_events)
{
	return syscall(__NR_async_wait, min_events);
}
static inline long async_unregister(void *ahu, unsigned int len)
{
	return syscall(__NR_async_unregister, ahu, len);
}
static inline long umem_add(unsigned long *uptr, unsigned long inc)
{
	return syscall(__NR_umem_add, uptr, inc);
}

static struct syslet_uatom *ring[16];
static struct async_head_user ahu;

int main(int argc, char **argv)
{
	unsigned long fd, offset, whence = SEEK_SET, buf_ptr, len;
	long seek_ret = 0, read_ret = 0;
	char buf[16];
	struct syslet_uatom atoms[2];
	int i;

	printf("numbers: %d %d %d %d %d\n", __NR_async_register, __NR_async_exec,
	       __NR_async_wait, __NR_async_unregister, __NR_umem_add);
	if (argc != 2)
		return 2;
	fd = open(argv[1], O_RDONLY);
	ahu.completion_ring = ring;
	ahu.ring_size_bytes = sizeof(ring);
	ahu.max_nr_threads = -1UL;
	if (async_register(&ahu, sizeof(ahu)) < 0) {
		perror("async_register");
		return 1;
	}
	for (i = 0; i < 2; i++) {
		struct syslet_uatom *done;

		memset(atoms, 0, sizeof(atoms));
		offset = 8 + i;
		buf_ptr = (unsigned long) buf;
		len = 8;
		/* A: lseek, no completion entry, on error skip to B's slot */
		atoms[0].flags = SYSLET_STOP_ON_NEGATIVE | SYSLET_NO_COMPLETE |
				 SYSLET_SKIP_TO_NEXT_ON_STOP | (i ? SYSLET_ASYNC : 0);
		atoms[0].nr = __NR_lseek;
		atoms[0].ret_ptr = &seek_ret;
		atoms[0].next = &atoms[1];
		atoms[0].arg_ptr[0] = &fd;
		atoms[0].arg_ptr[1] = &offset;
		atoms[0].arg_ptr[2] = &whence;
		/* B: read at the new position */
		atoms[1].flags = SYSLET_STOP_ON_NEGATIVE;
		atoms[1].nr = __NR_read;
		atoms[1].ret_ptr = &read_ret;
		atoms[1].arg_ptr[0] = &fd;
		atoms[1].arg_ptr[1] = &buf_ptr;
		atoms[1].arg_ptr[2] = &len;
		atoms[1].private = (void *) 0x1234;

		done = async_exec(&atoms[0]);
		if (done == (void *) -1) {
			perror("async_exec");
			return 1;
		}
		if (!done) {
			async_wait(1);
			done = ring[0];
			ring[0] = NULL;
		}
		printf("%s: final atom B %d, private %p, seek %ld, read %ld: %.8s\n",
		       i ? "async" : "sync", done == &atoms[1], done->private,
		       seek_ret, read_ret, buf);
	}
	offset = 5;
	printf("umem_add: %ld\n", umem_add(&offset, 37));
	if (async_unregister(&ahu, sizeof(ahu)) < 0) {
		perror("async_unregister");
		return 1;
	}
	return 0;
}
