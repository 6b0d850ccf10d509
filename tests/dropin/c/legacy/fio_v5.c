/* A 2007 program for the v5 kernel (x86_64), built unmodified: its own
 * header (the numbers of fio's arch-x86_64.h under #ifndef, the structures
 * of the v3-v5 syslet.h) and fio's syslet-rw engine of February 2007 in
 * miniature -- batches of pread64 atoms (flags 0) chained through next, one
 * async_exec(head, &ahu) per batch, completions up to the returned or
 * published tail, the ring reaped from ahu.user_ring_idx, async_wait(1,
 * user_ring_idx, &ahu), new_thread_stack refilled when the kernel took it,
 * cachemiss threads looping on async_thread().  Then reads of a pipe that a
 * helper thread fills only after they were submitted: those go async.
 *
 * Runs only under LD_PRELOAD=libsyslet.so with SYSLET_COMPAT_ABI=v5:
 * otherwise 280-283 are the kernel's utimensat, epoll_pwait, signalfd,
 * timerfd_create and the start-up probe fails. */
#include <assert.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- "syslet.h" and "arch-x86_64.h" of the time ---- */
#ifndef __NR_async_exec
#define __NR_async_exec		280
#define __NR_async_wait		281
#define __NR_umem_add		282
#define __NR_async_thread	283
#endif

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
	long					*ret_ptr;
	struct syslet_uatom			*next;
	unsigned long				*arg_ptr[6];
	void					*private;
};

struct async_head_user {
	unsigned long				kernel_ring_idx;
	unsigned long				user_ring_idx;
	struct syslet_uatom			**completion_ring;
	unsigned long				ring_size_bytes;
	unsigned long				head_stack;
	unsigned long				head_eip;
	unsigned long				new_thread_stack;
	unsigned long				new_thread_eip;
};

static inline void *async_exec(struct syslet_uatom *atom, struct async_head_user *ahu)
{
	return (void *) syscall(__NR_async_exec, atom, ahu);
}

static inline long async_wait(unsigned long min_wait_events, unsigned long user_ring_idx,
			      struct async_head_user *ahu)
{
	return syscall(__NR_async_wait, min_wait_events, user_ring_idx, ahu);
}

static inline long async_thread(void *event, struct async_head_user *ahu)
{
	return syscall(__NR_async_thread, event, ahu);
}

static inline long umem_add(unsigned long *uptr, unsigned long inc)
{
	return syscall(__NR_umem_add, uptr, inc);
}

/* ---- the engine ---- */
#define DEPTH		8
#define BS		512
#define THREAD_STACK_SIZE (16384)

struct io_u {
	struct syslet_uatom atom;
	struct syslet_uatom *head;
	unsigned long fd, buf, len, offset;
	long ret;
	char data[BS];
	int done;
};

static struct async_head_user ahu;
static struct syslet_uatom **ring;
static struct syslet_uatom *qhead, *qtail;
static struct io_u ios[DEPTH];
static int nr_done, errors, async_commits, stacks;

static void cachemiss_thread_start(void)
{
	while (1)
		async_thread(NULL, NULL);
}

static unsigned long thread_stack_alloc(void)
{
	stacks++;
	return (unsigned long) malloc(THREAD_STACK_SIZE) + THREAD_STACK_SIZE;
}

static void complete_atom(struct syslet_uatom *atom)
{
	struct syslet_uatom *last = atom;
	struct io_u *io_u = atom->private;

	atom = io_u->head;
	do {
		io_u = atom->private;
		if (*atom->ret_ptr != (long) io_u->len)
			errors++;
		io_u->done = 1;
		nr_done++;
		if (atom == last)
			break;
		atom = atom->next;
	} while (1);
	assert(!last->next);
}

static void reap(void)
{
	do {
		struct syslet_uatom *atom = ring[ahu.user_ring_idx];
		if (!atom)
			break;
		ring[ahu.user_ring_idx] = NULL;
		if (++ahu.user_ring_idx == DEPTH)
			ahu.user_ring_idx = 0;
		complete_atom(atom);
	} while (1);
}

static void getevents(int min)
{
	while (1) {
		reap();
		if (nr_done >= min)
			break;
		if (async_wait(1, ahu.user_ring_idx, &ahu) < 0) {
			perror("async_wait");
			exit(1);
		}
	}
}

static void queue(struct io_u *io_u, int fd, unsigned long offset, unsigned long len)
{
	struct syslet_uatom *atom = &io_u->atom;

	io_u->fd = fd;
	io_u->buf = (unsigned long) io_u->data;
	io_u->len = len;
	io_u->offset = offset;
	io_u->ret = -1;
	io_u->done = 0;
	atom->flags = 0;
	atom->nr = __NR_pread64;
	atom->ret_ptr = &io_u->ret;
	atom->next = NULL;
	atom->arg_ptr[0] = &io_u->fd;
	atom->arg_ptr[1] = &io_u->buf;
	atom->arg_ptr[2] = &io_u->len;
	atom->arg_ptr[3] = &io_u->offset;
	atom->arg_ptr[4] = atom->arg_ptr[5] = NULL;
	atom->private = io_u;
	if (qtail) {
		qtail->next = atom;
		qtail = atom;
	} else
		qhead = qtail = atom;
	io_u->head = qhead;
}

static void commit(void)
{
	struct syslet_uatom *done;

	if (!ahu.new_thread_stack)
		ahu.new_thread_stack = thread_stack_alloc();
	done = async_exec(qhead, &ahu);
	qhead = qtail = NULL;
	if (done)
		complete_atom(done);
	else
		async_commits++;
}

static unsigned char pat(unsigned long i)
{
	return (unsigned char) (i * 7 + (i >> 8) * 13);
}

static int pfd[2];
static volatile int submitted;

static void *feeder(void *arg)
{
	(void) arg;
	while (!submitted)
		usleep(1000);
	if (write(pfd[1], "0123456789abcdef", 16) != 16)
		exit(5);
	return NULL;
}

int main(int argc, char **argv)
{
	static unsigned char file[1 << 18];
	unsigned long i, verified = 0;
	int fd, b;

	if (argc != 2)
		return 2;
	for (i = 0; i < sizeof(file); i++)
		file[i] = pat(i);
	fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, file, sizeof(file)) != (long) sizeof(file))
		return 1;

	ring = calloc(DEPTH, sizeof(struct syslet_uatom *));
	ahu.completion_ring = ring;
	ahu.ring_size_bytes = sizeof(struct syslet_uatom *) * DEPTH;
	ahu.head_stack = thread_stack_alloc();
	ahu.head_eip = (unsigned long) cachemiss_thread_start;
	ahu.new_thread_eip = (unsigned long) cachemiss_thread_start;

	/* fio's probe (2007-03-29): a getpid atom */
	{
		struct syslet_uatom probe;
		long pid = 0;

		memset(&probe, 0, sizeof(probe));
		probe.nr = __NR_getpid;
		probe.ret_ptr = &pid;
		ahu.new_thread_stack = thread_stack_alloc();
		if ((long) async_exec(&probe, &ahu) == -1 || pid != getpid()) {
			printf("fio: syslets do not appear to work\n");
			return 1;
		}
	}

	srand(1);
	for (b = 0; b < 16; b++) {
		nr_done = 0;
		for (i = 0; i < DEPTH; i++)
			queue(&ios[i], fd, (rand() % (sizeof(file) / BS)) * BS, BS);
		commit();
		getevents(DEPTH);
		for (i = 0; i < DEPTH; i++) {
			unsigned long k;
			for (k = 0; k < BS; k++)
				if ((unsigned char) ios[i].data[k] != pat(ios[i].offset + k))
					break;
			verified += k == BS;
		}
	}
	printf("batches 16 of %d pread64 atoms: verified %lu, errors %d\n", DEPTH, verified, errors);

	/* A pipe: empty when the batch is submitted, so it goes async. */
	if (pipe(pfd))
		return 1;
	{
		pthread_t t;
		long word = 40;

		pthread_create(&t, NULL, feeder, NULL);
		nr_done = 0;
		async_commits = 0;
		for (i = 0; i < 4; i++)
			queue(&ios[i], pfd[0], 0, 4);
		ios[0].atom.nr = __NR_read;	/* read(fd, buf, len): pread64 of a pipe is ESPIPE */
		ios[1].atom.nr = __NR_read;
		ios[2].atom.nr = __NR_read;
		ios[3].atom.nr = __NR_read;
		commit();
		submitted = 1;
		getevents(4);
		pthread_join(t, NULL);
		printf("pipe batch: async %d, data %.4s%.4s%.4s%.4s, errors %d\n", async_commits,
		       ios[0].data, ios[1].data, ios[2].data, ios[3].data, errors);
		printf("umem_add: %ld\n", umem_add((unsigned long *) &word, 2));
		printf("new_thread_stack kept: %d (stacks allocated %d)\n", ahu.new_thread_stack != 0,
		       stacks);
	}
	return 0;
}
