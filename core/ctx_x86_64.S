/*
 * ctx_x86_64.S — context switch for the System V x86-64 ABI.
 *
 * void braid__ctx_jump(void **save_sp, void *new_sp)
 *   Pushes the callee-saved registers and the FP control state (MXCSR and
 *   the x87 control word) on the current stack, stores the stack pointer in
 *   *save_sp, loads new_sp and pops the same frame from there.
 *
 * Frame layout, from the saved stack pointer upwards:
 *   [sp+0]  MXCSR (4 bytes), x87 control word (2 bytes), padding
 *   [sp+8]  r15   [sp+16] r14   [sp+24] r13   [sp+32] r12
 *   [sp+40] rbx   [sp+48] rbp   [sp+56] return address
 *
 * A new stack is prepared by braid__fiber_init (ctx_asm.c) with r12 = entry
 * function and the return address = braid__ctx_trampoline.
 */
#if defined(__x86_64__) && !defined(BRAID_USE_UCONTEXT)
    .text
    .globl braid__ctx_jump
    .hidden braid__ctx_jump
    .type braid__ctx_jump, @function
    .p2align 4
braid__ctx_jump:
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .cfi_endproc
    .size braid__ctx_jump, .-braid__ctx_jump

    .globl braid__ctx_trampoline
    .hidden braid__ctx_trampoline
    .type braid__ctx_trampoline, @function
    .p2align 4
braid__ctx_trampoline:
    .cfi_startproc
    .cfi_undefined rip
    /* rsp is 16-byte aligned here; the entry never returns */
    xorl %ebp, %ebp
    callq *%r12
    ud2
    .cfi_endproc
    .size braid__ctx_trampoline, .-braid__ctx_trampoline
#endif
    .section .note.GNU-stack,"",@progbits
