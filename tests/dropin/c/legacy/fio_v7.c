/* A 2007 program for Zach Brown's indirect syslets (December 2007,
 * x86_64), built unmodified: its own header (syslet.h and indirect.h of
 * fio's tree: numbers 286/287 under #ifndef, ESYSLETPENDING 132, the ring,
 * the registers, FILL_IN) and fio's syslet-rw engine of that month in
 * miniature: a power-of-two ring, the getpid probe, pread64 through
 * indirect with a return frame (a function that exits the thread) and a
 * one-page stack, -1/ESYSLETPENDING queued, reaping from user_tail to
 * kernel_head after a read barrier, syslet_ring_wait(ring, user_tail)
 * asserted to return 0 while an SA_RESTART timer fires.  Then reads of a
 * pipe filled by a helper thread after they were submitted (they go
 * async), and a short read whose "error" fio took from errno: a stale
 * errno, which the call must not have changed.
 *
 * Runs only under LD_PRELOAD=libsyslet.so with SYSLET_COMPAT_ABI=v7:
 * otherwise 286/287 are the kernel's timerfd_settime/timerfd_gettime. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- "syslet.h" and "indirect.h" of the time ---- */
#ifndef __NR_indirect
#define __NR_indirect		286
#define __NR_syslet_ring_wait	287
#endif
#define ESYSLETPENDING		132

struct syslet_frame {
	uint64_t ip;
	uint64_t sp;
};

struct syslet_args {
	uint64_t ring_ptr;
	uint64_t caller_data;
	struct syslet_frame frame;
};

struct syslet_completion {
	uint64_t status;
	uint64_t caller_data;
};

struct syslet_ring {
	uint32_t kernel_head;
	uint32_t user_tail;
	uint32_t elements;
	uint32_t wait_group;
	struct syslet_completion comp[0];
};

struct indirect_registers {
	uint64_t rax, rdi, rsi, rdx, r10, r8, r9;
};

union indirect_params {
	struct {
		int flags;
	} file_flags;
	struct syslet_args syslet;
};

#define FILL_IN(regs, id, arg1, arg2, arg3, arg4, arg5, arg6) \
	do { (regs).rax = id; (regs).rdi = arg1; (regs).rsi = arg2; (regs).rdx = arg3; \
	     (regs).r10 = arg4; (regs).r8 = arg5; (regs).r9 = arg6; } while (0)

static inline void fill_syslet_args(struct syslet_args *args, struct syslet_ring *ring,
				    uint64_t caller_data, void (*func)(void), void *stack)
{
	args->ring_ptr = (uint64_t) (unsigned long) ring;
	args->caller_data = caller_data;
	args->frame.ip = (uint64_t) (unsigned long) func;
	args->frame.sp = (uint64_t) (unsigned long) stack;
}

#define read_barrier()	__asm__ __volatile__("lfence" ::: "memory")

/* ---- the engine ---- */
#define DEPTH	6		/* the ring: 8 (rounded up to a power of two) */
#define BS	512

struct io_u {
	int fd;
	char buf[BS];
	unsigned long len, offset;
	long resid;
	int error, done;
};

static struct syslet_ring *ring;
static unsigned ring_mask;
static void *stack;
static int nr_events;

static void ret_func(void)
{
	syscall(__NR_exit);
}

static void add_events(unsigned nr)
{
	unsigned i, uidx = ring->user_tail;

	read_barrier();
	for (i = 0; i < nr; i++) {
		struct syslet_completion *comp = &ring->comp[(i + uidx) & ring_mask];
		struct io_u *io_u = (struct io_u *) (long) comp->caller_data;
		long ret = comp->status;

		if (ret <= 0) {
			io_u->resid = io_u->len;
			io_u->error = -ret;
		} else {
			io_u->resid = io_u->len - ret;
			io_u->error = 0;
		}
		io_u->done = 1;
		nr_events++;
	}
}

static void wait_for_events(void)
{
	do {
		unsigned kh = ring->kernel_head;
		int ret;

		if (ring->user_tail != kh) {
			add_events(kh - ring->user_tail);
			ring->user_tail = kh;
			break;
		}
		ret = syscall(__NR_syslet_ring_wait, ring, ring->user_tail);
		assert(!ret);
	} while (1);
}

/* 1: queued, 0: completed (io_u->error set) */
static int queue(struct io_u *io_u, long nr)
{
	union indirect_params params;
	struct indirect_registers regs;
	int ret;

	memset(&params, 0, sizeof(params));
	fill_syslet_args(&params.syslet, ring, (long) io_u, ret_func, stack);
	FILL_IN(regs, nr, (long) io_u->fd, (long) io_u->buf, (long) io_u->len,
		(long) io_u->offset, 0, 0);
	io_u->done = 0;
	ret = syscall(__NR_indirect, &regs, &params, sizeof(params), 0);
	if (ret == (int) io_u->len) {
		io_u->resid = 0;
		io_u->error = 0;
		io_u->done = 1;
		return 0;
	} else if (ret < 0) {
		if (errno == ESYSLETPENDING)
			return 1;
	}
	io_u->resid = ret < 0 ? (long) io_u->len : (long) io_u->len - ret;
	io_u->error = errno;
	io_u->done = 1;
	return 0;
}

static int check_syslet_support(void)
{
	union indirect_params params;
	struct indirect_registers regs;
	pid_t pid;

	memset(&params, 0, sizeof(params));
	fill_syslet_args(&params.syslet, ring, 0, ret_func, stack);
	FILL_IN(regs, __NR_getpid, 0, 0, 0, 0, 0, 0);
	pid = syscall(__NR_indirect, &regs, &params, sizeof(params), 0);
	return pid != getpid();
}

static unsigned char pat(unsigned long i)
{
	return (unsigned char) (i * 7 + (i >> 8) * 13);
}

static int pfd[2];
static volatile int submitted;

static void *feeder(void *arg)
{
	sigset_t s;

	(void) arg;
	sigemptyset(&s);
	sigaddset(&s, SIGALRM);
	pthread_sigmask(SIG_BLOCK, &s, NULL);
	while (!submitted)
		usleep(1000);
	usleep(20000);
	if (write(pfd[1], "0123456789ab", 12) != 12)
		exit(5);
	return NULL;
}

static volatile sig_atomic_t ticks;
static void on_alarm(int sig) { (void) sig; ticks++; }

int main(int argc, char **argv)
{
	static unsigned char file[1 << 18];
	static struct io_u ios[DEPTH];
	unsigned ring_nr = DEPTH, i, b;
	unsigned long verified = 0;
	int fd, errors = 0, queued = 0;

	if (argc != 2)
		return 2;
	for (i = 0; i < sizeof(file); i++)
		file[i] = pat(i);
	fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, file, sizeof(file)) != (long) sizeof(file))
		return 1;

	if (ring_nr & (ring_nr - 1))
		ring_nr = 1 << (32 - __builtin_clz(ring_nr));
	if (posix_memalign((void **) &ring, sizeof(uint64_t),
			   sizeof(struct syslet_ring) + ring_nr * sizeof(struct syslet_completion)) ||
	    posix_memalign(&stack, 4096, 4096))
		return 1;
	memset(ring, 0, sizeof(struct syslet_ring) + ring_nr * sizeof(struct syslet_completion));
	ring->elements = ring_nr;
	ring_mask = ring_nr - 1;
	if (check_syslet_support()) {
		printf("fio: syslets do not appear to work\n");
		return 1;
	}

	/* fio's 250 ms timer, faster: the waits restart under it */
	{
		struct sigaction sa;
		struct itimerval it = {{0, 5000}, {0, 5000}};

		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_alarm;
		sa.sa_flags = SA_RESTART;
		sigaction(SIGALRM, &sa, NULL);
		setitimer(ITIMER_REAL, &it, NULL);
	}

	srand(1);
	for (b = 0; b < 16; b++) {
		int pending = 0;

		nr_events = 0;
		for (i = 0; i < DEPTH; i++) {
			ios[i].fd = fd;
			ios[i].len = BS;
			ios[i].offset = (rand() % (sizeof(file) / BS)) * BS;
			pending += queue(&ios[i], __NR_pread64);
		}
		queued += pending;
		while (nr_events < pending)
			wait_for_events();
		for (i = 0; i < DEPTH; i++) {
			unsigned long k;

			errors += ios[i].error != 0 || ios[i].resid != 0 || !ios[i].done;
			for (k = 0; k < BS; k++)
				if ((unsigned char) ios[i].buf[k] != pat(ios[i].offset + k))
					break;
			verified += k == BS;
		}
	}
	printf("16 x %d pread64 through indirect: verified %lu, errors %d\n", DEPTH, verified, errors);

	/* a pipe, empty when the reads are submitted */
	{
		pthread_t t;
		int pending = 0;

		if (pipe(pfd))
			return 1;
		pthread_create(&t, NULL, feeder, NULL);
		nr_events = 0;
		for (i = 0; i < 3; i++) {
			ios[i].fd = pfd[0];
			ios[i].len = 4;
			ios[i].offset = 0;
			pending += queue(&ios[i], __NR_read);
		}
		submitted = 1;
		while (nr_events < pending)
			wait_for_events();
		pthread_join(t, NULL);
		/* (pending calls finish in any order: each got one 4-byte piece) */
		int seen = 0;
		for (i = 0; i < 3; i++)
			for (b = 0; b < 3; b++)
				if (memcmp(ios[i].buf, "0123456789ab" + 4 * b, 4) == 0)
					seen |= 1 << b;
		printf("pipe reads: pending %d, the three pieces: %d, errors %d %d %d\n", pending,
		       seen == 7, ios[0].error, ios[1].error, ios[2].error);
	}

	/* a short read, just after a pending call: fio's error is the stale errno */
	{
		struct io_u *io_u = &ios[0];

		io_u->fd = pfd[0];
		io_u->len = 4;
		nr_events = 0;
		if (queue(io_u, __NR_read) != 1)	/* empty pipe: pending, errno ESYSLETPENDING */
			return 1;
		if (write(pfd[1], "zz", 2) != 2)
			return 1;
		while (nr_events < 1)
			wait_for_events();
		if (write(pfd[1], "yy", 2) != 2)
			return 1;
		errno = ESYSLETPENDING;
		queue(io_u, __NR_read);		/* completes at once with 2 of 4 bytes */
		printf("short read: resid %ld, error (from errno) %d\n", io_u->resid, io_u->error);
	}
	{
		struct itimerval it;

		memset(&it, 0, sizeof(it));
		setitimer(ITIMER_REAL, &it, NULL);
	}
	return 0;
}
