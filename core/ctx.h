/*
 * ctx.h — switching between stacks.
 *
 * A fiber is a saved execution context. Three implementations:
 *   - ctx_x86_64.S: System V x86-64, saves rbx rbp r12-r15, MXCSR and the
 *     x87 control word;
 *   - ctx_aarch64.S: AAPCS64, saves x19-x30, d8-d15 and FPCR;
 *   - ctx_ucontext.c: portable fallback on getcontext/swapcontext, selected
 *     with -DBRAID_CONTEXT=ucontext or on other architectures.
 *
 * The switch is annotated for AddressSanitizer and ThreadSanitizer so that
 * sanitizer builds follow tasks across stacks.
 */
#ifndef BRAID_CTX_H
#define BRAID_CTX_H

#include <stddef.h>

#if defined(BRAID_USE_UCONTEXT)
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define BRAID__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BRAID__ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define BRAID__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BRAID__TSAN 1
#endif
#endif

typedef struct braid__fiber {
#if defined(BRAID_USE_UCONTEXT)
  ucontext_t uc;
#else
  void *sp;
#endif
  void *stack_lo; /* lowest usable address of the stack (above the guard) */
  size_t stack_len;
#if defined(BRAID__ASAN)
  void *asan_fake;
#endif
#if defined(BRAID__TSAN)
  void *tsan_fiber;
#endif
} braid__fiber;

/* Prepare `f` to run entry() on [stack_lo, stack_lo + len) at its first
 * switch. entry must never return. */
void braid__fiber_init(braid__fiber *f, void *stack_lo, size_t len, void (*entry)(void));

/* Describe the current thread's own stack as fiber `f` (the scheduler). */
void braid__fiber_init_thread(braid__fiber *f);

/* Release sanitizer state of a fiber that will never run again. */
void braid__fiber_destroy(braid__fiber *f);

/* First thing a new fiber's entry calls (sanitizer bookkeeping). */
void braid__fiber_started(braid__fiber *self);

#if defined(BRAID__ASAN)
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(BRAID__TSAN)
#include <sanitizer/tsan_interface.h>
#endif

#if !defined(BRAID_USE_UCONTEXT)
void braid__ctx_jump(void **save_sp, void *new_sp);
#endif

/* Save the current context in `from` and continue `to`. When `from_dying`
 * is set, `from` will never be resumed. Returns when someone switches back.
 * Inline: this is the hottest path of the scheduler. */
static inline void braid__fiber_switch(braid__fiber *from, braid__fiber *to, int from_dying) {
#if defined(BRAID__ASAN)
  __sanitizer_start_switch_fiber(from_dying ? NULL : &from->asan_fake, to->stack_lo, to->stack_len);
#endif
#if defined(BRAID__TSAN)
  __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
  (void)from_dying;
#if defined(BRAID_USE_UCONTEXT)
  swapcontext(&from->uc, &to->uc);
#else
  braid__ctx_jump(&from->sp, to->sp);
#endif
#if defined(BRAID__ASAN)
  __sanitizer_finish_switch_fiber(from->asan_fake, NULL, NULL);
#endif
}

#endif
