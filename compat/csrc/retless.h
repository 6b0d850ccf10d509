/* The x86_64 exec entry that returns without `ret` (docs/decisions.md D22),
 * shared by libsyslet (dropin.c) and the Python builtin (pyexec.c).
 *
 * On this project's machines (AMD, SRSO mitigation "Safe RET") the first
 * `ret` after a system call, to a frame made before it, costs 60-150 ns: the
 * kernel leaves the return predictor pointing at its own text.  Returns to
 * frames made after the call are predicted as usual, and an indirect jump
 * goes by the branch target buffer, which the kernel leaves alone.
 *
 * SL_RETLESS_ENTRY(name, begin, end, slow) defines a hidden function
 * `name(a, b)` (two integer or pointer arguments, an integer or pointer
 * result) that keeps a 184-byte frame -- a struct sl_fast f at 0, a at 160,
 * b at 168 -- and does
 *
 *     if a shadow stack is active      -> slow(a, b)   (rdssp reads 0 without)
 *     if (!begin(a, b, &f))            -> slow(a, b)
 *     r = f.direct ? -EBADF             (an O_DIRECT fd: not read here, D23)
 *                  : preadv2(f.fd, f.iov, 1, f.off, RWF_NOWAIT)    the raw result
 *     return end(a, &f, r), by pop + jmp
 *
 * `slow` is reached by a jump, with a function's entry state, and returns
 * normally.  The entry carries call-frame information.  Linux does not
 * enforce indirect-branch tracking for user space (a jump to a return
 * address would need `notrack` where it did). */
#ifndef SYSLET_RETLESS_H
#define SYSLET_RETLESS_H
#if defined(__x86_64__)
#include <stddef.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "engine.h"

_Static_assert(sizeof(struct sl_fast) == 160 && offsetof(struct sl_fast, iov) == 0 &&
               offsetof(struct sl_fast, fd) == 16 && offsetof(struct sl_fast, off) == 24 &&
               offsetof(struct sl_fast, direct) == 152,
               "SL_RETLESS_ENTRY's frame offsets");
_Static_assert(SYS_preadv2 == 327 && RWF_NOWAIT == 8, "SL_RETLESS_ENTRY's constants");

#define SL_RETLESS_ENTRY(name, begin, end, slow)                                       \
    __asm__(".text\n"                                                                  \
            ".p2align 4\n"                                                             \
            ".globl " #name "\n.hidden " #name "\n.type " #name ", @function\n"       \
            #name ":\n"                                                                \
            "    .cfi_startproc\n"                                                     \
            "    xorl %eax, %eax\n"                                                    \
            "    rdsspq %rax\n"                                                        \
            "    testq %rax, %rax\n"                                                   \
            "    jnz " #slow "\n"                                                      \
            "    subq $184, %rsp\n"                                                    \
            "    .cfi_adjust_cfa_offset 184\n"                                         \
            "    movq %rdi, 160(%rsp)\n"                                               \
            "    movq %rsi, 168(%rsp)\n"                                               \
            "    movq %rsp, %rdx\n"                                                    \
            "    call " #begin "\n"                                                    \
            "    testl %eax, %eax\n"                                                   \
            "    jz 2f\n"                                                              \
            "    movq $-9, %rax\n"               /* f.direct: no read (-EBADF) */      \
            "    cmpq $0, 152(%rsp)\n"                                                 \
            "    jnz 3f\n"                                                             \
            "    movq 16(%rsp), %rdi\n"          /* fd */                              \
            "    movq %rsp, %rsi\n"              /* iov */                             \
            "    movl $1, %edx\n"                                                      \
            "    movq 24(%rsp), %r10\n"          /* pos_l; pos_h 0 */                  \
            "    xorl %r8d, %r8d\n"                                                    \
            "    movl $8, %r9d\n"                /* RWF_NOWAIT */                      \
            "    movl $327, %eax\n"              /* preadv2 */                         \
            "    syscall\n"                                                            \
            "3:\n"                                                                     \
            "    movq 160(%rsp), %rdi\n"                                               \
            "    movq %rsp, %rsi\n"                                                    \
            "    movq %rax, %rdx\n"                                                    \
            "    call " #end "\n"                                                      \
            "    .cfi_remember_state\n"                                                \
            "    addq $184, %rsp\n"                                                    \
            "    .cfi_adjust_cfa_offset -184\n"                                        \
            "    popq %rcx\n"                                                          \
            "    .cfi_adjust_cfa_offset -8\n"                                          \
            "    .cfi_register %rip, %rcx\n"                                           \
            "    jmp *%rcx\n"                                                          \
            "2:\n"                                                                     \
            "    .cfi_restore_state\n"                                                 \
            "    movq 160(%rsp), %rdi\n"                                               \
            "    movq 168(%rsp), %rsi\n"                                               \
            "    addq $184, %rsp\n"                                                    \
            "    .cfi_adjust_cfa_offset -184\n"                                        \
            "    jmp " #slow "\n"                                                      \
            "    .cfi_endproc\n"                                                       \
            ".size " #name ", .-" #name "\n")

#endif
#endif
