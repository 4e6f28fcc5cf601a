/*
 * ctx_aarch64.S — context switch for AAPCS64 (aarch64 Linux).
 *
 * void braid__ctx_jump(void **save_sp, void *new_sp)
 *   Saves x19-x30, d8-d15 and FPCR in a 176-byte frame on the current stack,
 *   stores sp in *save_sp, switches to new_sp and restores the same frame.
 *
 * Frame layout (offsets from the saved sp):
 *   0 x19 x20 | 16 x21 x22 | 32 x23 x24 | 48 x25 x26 | 64 x27 x28
 *   80 x29 x30 | 96 d8 d9 | 112 d10 d11 | 128 d12 d13 | 144 d14 d15
 *   160 FPCR | 168 padding
 *
 * A new stack is prepared by braid__fiber_init (ctx_asm.c) with x19 = entry
 * function and x30 = braid__ctx_trampoline.
 */
#if defined(__aarch64__) && !defined(BRAID_USE_UCONTEXT)
    .text
    .globl braid__ctx_jump
    .hidden braid__ctx_jump
    .type braid__ctx_jump, %function
    .p2align 4
braid__ctx_jump:
    sub sp, sp, #176
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mrs x9, fpcr
    str x9, [sp, #160]
    mov x9, sp
    str x9, [x0]
    mov sp, x1
    ldr x9, [sp, #160]
    msr fpcr, x9
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    add sp, sp, #176
    ret
    .size braid__ctx_jump, .-braid__ctx_jump

    .globl braid__ctx_trampoline
    .hidden braid__ctx_trampoline
    .type braid__ctx_trampoline, %function
    .p2align 4
braid__ctx_trampoline:
    mov x29, #0
    blr x19
    brk #0
    .size braid__ctx_trampoline, .-braid__ctx_trampoline
#endif
    .section .note.GNU-stack,"",%progbits
