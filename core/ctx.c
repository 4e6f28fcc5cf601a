/*
 * ctx.c — preparing fibers for their first switch.
 *
 * The switch itself is braid__fiber_switch in ctx.h, which calls the
 * assembly routine braid__ctx_jump (ctx_x86_64.S, ctx_aarch64.S) or
 * swapcontext in the portable build. This file writes the initial frame a
 * new stack starts from, describes the thread's own stack for the
 * sanitizers, and keeps their fiber bookkeeping.
 */

#include "ctx.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#if defined(BRAID_USE_UCONTEXT)
#include <fenv.h>
#endif

#if !defined(BRAID_USE_UCONTEXT)
void braid__ctx_trampoline(void);
#endif

void braid__fiber_init(braid__fiber *f, void *stack_lo, size_t len, void (*entry)(void)) {
  f->stack_lo = stack_lo;
  f->stack_len = len;
#if defined(BRAID__ASAN)
  f->asan_fake = NULL;
#endif
#if defined(BRAID__TSAN)
  f->tsan_fiber = __tsan_create_fiber(0);
#endif
#if defined(BRAID_USE_UCONTEXT)
  getcontext(&f->uc);
  f->uc.uc_stack.ss_sp = stack_lo;
  f->uc.uc_stack.ss_size = len;
  f->uc.uc_link = NULL;
  makecontext(&f->uc, entry, 0);
#elif defined(__x86_64__)
  uintptr_t top = ((uintptr_t)stack_lo + len) & ~(uintptr_t)15;
  uint64_t *frame = (uint64_t *)(top - 64);
  uint32_t mxcsr = 0x1F80; /* all exceptions masked, round to nearest */
  uint16_t fpucw = 0x037F; /* x87 default control word */
  memset(frame, 0, 64);
  memcpy(&frame[0], &mxcsr, 4);
  memcpy((char *)&frame[0] + 4, &fpucw, 2);
  frame[4] = (uint64_t)(uintptr_t)entry;                 /* r12 */
  frame[7] = (uint64_t)(uintptr_t)braid__ctx_trampoline; /* return address */
  f->sp = frame;
#elif defined(__aarch64__)
  uintptr_t top = ((uintptr_t)stack_lo + len) & ~(uintptr_t)15;
  uint64_t *frame = (uint64_t *)(top - 176);
  memset(frame, 0, 176);
  frame[0] = (uint64_t)(uintptr_t)entry;                  /* x19 */
  frame[11] = (uint64_t)(uintptr_t)braid__ctx_trampoline; /* x30 */
  f->sp = frame;
#else
#error "no assembly context switch for this architecture: build with -DBRAID_CONTEXT=ucontext"
#endif
}

void braid__fiber_init_thread(braid__fiber *f) {
  memset(f, 0, sizeof *f);
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void *addr = NULL;
    size_t size = 0;
    if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
      f->stack_lo = addr;
      f->stack_len = size;
    }
    pthread_attr_destroy(&attr);
  }
#if defined(BRAID__TSAN)
  f->tsan_fiber = __tsan_get_current_fiber();
#endif
}

void braid__fiber_destroy(braid__fiber *f) {
#if defined(BRAID__TSAN)
  if (f->tsan_fiber) __tsan_destroy_fiber(f->tsan_fiber);
  f->tsan_fiber = NULL;
#endif
  (void)f;
}

void braid__fiber_started(braid__fiber *self) {
#if defined(BRAID__ASAN)
  __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
#if defined(BRAID_USE_UCONTEXT)
  /* getcontext captured whatever FP environment the creating task had; a
   * task starts with the default one, as in the assembly builds. */
  fesetenv(FE_DFL_ENV);
#endif
  (void)self;
}
