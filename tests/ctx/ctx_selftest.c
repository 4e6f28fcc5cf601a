/*
 * ctx_selftest.c — standalone check of the assembly context switch.
 *
 * Uses only core/ctx.h, core/ctx.c and core/ctx_<arch>.S: no libuv, no other
 * core file. Four participants (the thread's own stack "main" and fibers A,
 * B, C) pass control around a ring many times and check that
 *   1. callee-saved general registers survive a switch (x19-x29 on aarch64,
 *      rbx rbp r12-r15 on x86-64), both through an assembly probe that loads
 *      known values, switches and stores what came back, and through many
 *      live locals kept by the compiler across braid__fiber_switch at -O2;
 *   2. callee-saved FP registers survive (d8-d15 on aarch64), same two ways;
 *   3. the FP control state is per fiber: each participant runs with its own
 *      rounding mode (FPCR.RMode, or MXCSR.RC and the x87 control word) and
 *      flush-to-zero bit, and never sees another's;
 *   4. the stack pointer is 16-byte aligned at fiber entry and in nested
 *      calls and while suspended, and a vararg call with doubles (snprintf)
 *      works there;
 *   5. entry runs on the first switch, and a fiber switches back to main and
 *      is resumed again, indefinitely.
 * Fiber C gets a deliberately misaligned stack to exercise the rounding in
 * braid__fiber_init; bytes just above every stack are checked untouched.
 *
 * Build (native):  cc -O2 -D_GNU_SOURCE -Icore -Iinclude tests/ctx/ctx_selftest.c core/ctx.c core/ctx_x86_64.S -lm
 * Build (aarch64): scripts/check-ctx-aarch64
 */
#include "ctx.h"

#include <fenv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(BRAID_USE_UCONTEXT) || !(defined(__x86_64__) || defined(__aarch64__))
#error "ctx_selftest checks the assembly context switch (x86-64 or aarch64)"
#endif

#define NPART 4 /* main, A, B, C */
#define STACK_SIZE (256 * 1024)
#define CANARY 64 /* bytes checked above each stack's end */
#define RING_ROUNDS 20000
#define NEST_DEPTH 6
#define NEST_ROUNDS 500

static const char *const part_name[NPART] = {"main", "A", "B", "C"};
static braid__fiber part[NPART];
static unsigned char *stack_mem[NPART];
static unsigned char *stack_end[NPART];
static void (*job)(int me);
static volatile int job_done[NPART];
static volatile int entered[NPART];
static unsigned long failures;

#define CHECK(me, cond, ...)                                                                                           \
  do {                                                                                                                 \
    if (!(cond)) {                                                                                                     \
      if (failures++ < 20) {                                                                                           \
        fprintf(stderr, "FAIL [%s] %s:%d: %s: ", part_name[me], __FILE__, __LINE__, #cond);                            \
        fprintf(stderr, __VA_ARGS__);                                                                                  \
        fputc('\n', stderr);                                                                                           \
      }                                                                                                                \
    }                                                                                                                  \
  } while (0)

static int next_of(int me) { return (me + 1) % NPART; }

static void switch_next(int me) { braid__fiber_switch(&part[me], &part[next_of(me)], 0); }

/* ---- assembly probes ---------------------------------------------------- */

/* uintptr_t caller_sp(void): the stack pointer at the call instruction,
 * which the ABI requires to be 16-byte aligned.
 *
 * void regs_switch(void **save_sp, void *new_sp, const uint64_t *in, uint64_t *out):
 * saves its caller's callee-saved registers, loads them all from in[],
 * calls braid__ctx_jump(save_sp, new_sp), stores them all to out[] once
 * resumed, restores the caller's values and returns. */
#if defined(__x86_64__)
#define NREGS 6 /* rbx rbp r12 r13 r14 r15 */
__asm__(".pushsection .text\n"
        ".p2align 4\n"
        "caller_sp:\n"
        "  leaq 8(%rsp), %rax\n"
        "  ret\n"
        ".p2align 4\n"
        "regs_switch:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  pushq %rcx\n" /* out; the stack is 16-byte aligned again */
        "  movq 0(%rdx), %rbx\n"
        "  movq 8(%rdx), %rbp\n"
        "  movq 16(%rdx), %r12\n"
        "  movq 24(%rdx), %r13\n"
        "  movq 32(%rdx), %r14\n"
        "  movq 40(%rdx), %r15\n"
        "  call braid__ctx_jump\n"
        "  popq %rcx\n"
        "  movq %rbx, 0(%rcx)\n"
        "  movq %rbp, 8(%rcx)\n"
        "  movq %r12, 16(%rcx)\n"
        "  movq %r13, 24(%rcx)\n"
        "  movq %r14, 32(%rcx)\n"
        "  movq %r15, 40(%rcx)\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".popsection\n");
#else
#define NREGS 19 /* x19-x28, d8-d15 as bit patterns, x29 */
__asm__(".pushsection .text\n"
        ".p2align 4\n"
        "caller_sp:\n"
        "  mov x0, sp\n"
        "  ret\n"
        ".p2align 4\n"
        "regs_switch:\n"
        "  stp x29, x30, [sp, #-176]!\n"
        "  mov x29, sp\n"
        "  stp x19, x20, [sp, #16]\n"
        "  stp x21, x22, [sp, #32]\n"
        "  stp x23, x24, [sp, #48]\n"
        "  stp x25, x26, [sp, #64]\n"
        "  stp x27, x28, [sp, #80]\n"
        "  stp d8, d9, [sp, #96]\n"
        "  stp d10, d11, [sp, #112]\n"
        "  stp d12, d13, [sp, #128]\n"
        "  stp d14, d15, [sp, #144]\n"
        "  str x3, [sp, #160]\n"
        "  ldp x19, x20, [x2, #0]\n"
        "  ldp x21, x22, [x2, #16]\n"
        "  ldp x23, x24, [x2, #32]\n"
        "  ldp x25, x26, [x2, #48]\n"
        "  ldp x27, x28, [x2, #64]\n"
        "  ldp d8, d9, [x2, #80]\n"
        "  ldp d10, d11, [x2, #96]\n"
        "  ldp d12, d13, [x2, #112]\n"
        "  ldp d14, d15, [x2, #128]\n"
        "  ldr x29, [x2, #144]\n"
        "  bl braid__ctx_jump\n"
        "  ldr x3, [sp, #160]\n"
        "  stp x19, x20, [x3, #0]\n"
        "  stp x21, x22, [x3, #16]\n"
        "  stp x23, x24, [x3, #32]\n"
        "  stp x25, x26, [x3, #48]\n"
        "  stp x27, x28, [x3, #64]\n"
        "  stp d8, d9, [x3, #80]\n"
        "  stp d10, d11, [x3, #96]\n"
        "  stp d12, d13, [x3, #112]\n"
        "  stp d14, d15, [x3, #128]\n"
        "  str x29, [x3, #144]\n"
        "  ldp x19, x20, [sp, #16]\n"
        "  ldp x21, x22, [sp, #32]\n"
        "  ldp x23, x24, [sp, #48]\n"
        "  ldp x25, x26, [sp, #64]\n"
        "  ldp x27, x28, [sp, #80]\n"
        "  ldp d8, d9, [sp, #96]\n"
        "  ldp d10, d11, [sp, #112]\n"
        "  ldp d12, d13, [sp, #128]\n"
        "  ldp d14, d15, [sp, #144]\n"
        "  ldp x29, x30, [sp], #176\n"
        "  ret\n"
        ".popsection\n");
#endif
uintptr_t caller_sp(void);
void regs_switch(void **save_sp, void *new_sp, const uint64_t *in, uint64_t *out);

/* Hide a value from the optimiser so alignment checks are not folded. */
static uintptr_t launder(uintptr_t v) {
  __asm__ volatile("" : "+r"(v));
  return v;
}

/* ---- FP control state ---------------------------------------------------- */

#if defined(__x86_64__)
static unsigned get_mxcsr(void) {
  unsigned v;
  __asm__ volatile("stmxcsr %0" : "=m"(v));
  return v;
}
static void set_mxcsr(unsigned v) { __asm__ volatile("ldmxcsr %0" : : "m"(v)); }
static unsigned get_x87cw(void) {
  unsigned short v;
  __asm__ volatile("fnstcw %0" : "=m"(v));
  return v;
}
#define FTZ_BIT (1u << 15) /* MXCSR.FTZ */
static unsigned get_ftz(void) { return get_mxcsr() & FTZ_BIT; }
static void set_ftz(int on) { set_mxcsr(on ? (get_mxcsr() | FTZ_BIT) : (get_mxcsr() & ~FTZ_BIT)); }
#else
static uint64_t get_fpcr(void) {
  uint64_t v;
  __asm__ volatile("mrs %0, fpcr" : "=r"(v));
  return v;
}
static void set_fpcr(uint64_t v) { __asm__ volatile("msr fpcr, %0" : : "r"(v)); }
#define FZ_BIT ((uint64_t)1 << 24) /* FPCR.FZ */
static unsigned get_ftz(void) { return (get_fpcr() & FZ_BIT) != 0; }
static void set_ftz(int on) { set_fpcr(on ? (get_fpcr() | FZ_BIT) : (get_fpcr() & ~FZ_BIT)); }
#endif

static volatile double v_one = 1.0, v_three = 3.0, v_tiny = 0x1p-1022, v_half = 0.5;
static double nearest_third; /* 1/3 rounded to nearest, computed by main */

/* Check that the hardware really rounds as `mode` says (both the library
 * view and the arithmetic unit used for doubles). */
static void check_round_mode(int me, int mode, int ftz) {
  CHECK(me, fegetround() == mode, "fegetround() = %#x, expected %#x", (unsigned)fegetround(), (unsigned)mode);
#if defined(__x86_64__)
  unsigned rc = (unsigned)mode >> 10; /* FE_* are x87 RC bits << 10 */
  CHECK(me, ((get_mxcsr() >> 13) & 3) == rc, "MXCSR = %#x, expected RC %u", get_mxcsr(), rc);
  CHECK(me, ((get_x87cw() >> 10) & 3) == rc, "x87 CW = %#x, expected RC %u", get_x87cw(), rc);
#else
  unsigned rmode = (unsigned)mode >> 22; /* FE_* are FPCR.RMode << 22 */
  CHECK(me, ((get_fpcr() >> 22) & 3) == rmode, "FPCR = %#llx, expected RMode %u", (unsigned long long)get_fpcr(),
        rmode);
#endif
  CHECK(me, !get_ftz() == !ftz, "flush-to-zero is %u, expected %d", get_ftz(), ftz);
  double pos = v_one / v_three, neg = -v_one / v_three;
  switch (mode) {
  case FE_TONEAREST:
    CHECK(me, pos == nearest_third && neg == -nearest_third, "1/3 = %a, -1/3 = %a", pos, neg);
    break;
  case FE_UPWARD:
    CHECK(me, pos > nearest_third && neg == -nearest_third, "1/3 = %a, -1/3 = %a", pos, neg);
    break;
  case FE_DOWNWARD:
    CHECK(me, pos == nearest_third && neg < -nearest_third, "1/3 = %a, -1/3 = %a", pos, neg);
    break;
  case FE_TOWARDZERO:
    CHECK(me, pos == nearest_third && neg == -nearest_third, "1/3 = %a, -1/3 = %a", pos, neg);
    break;
  }
  /* A subnormal result is flushed to zero only with FTZ/FZ set. */
  double sub = v_tiny * v_half;
  CHECK(me, (sub == 0.0) == !!ftz, "2^-1022 * 0.5 = %a with flush-to-zero %d", sub, ftz);
}

/* ---- fiber body ----------------------------------------------------------- */

static void check_aligned(int me, const char *where) {
  uintptr_t sp = launder(caller_sp());
  uintptr_t fp = launder((uintptr_t)__builtin_frame_address(0));
  _Alignas(16) volatile char local[16];
  uintptr_t lp = launder((uintptr_t)&local[0]);
  local[0] = 1;
  CHECK(me, sp % 16 == 0, "%s: sp %#lx not 16-byte aligned", where, (unsigned long)sp);
  CHECK(me, fp % 16 == 0, "%s: frame %#lx not 16-byte aligned", where, (unsigned long)fp);
  CHECK(me, lp % 16 == 0, "%s: _Alignas(16) local at %#lx", where, (unsigned long)lp);
  if (me != 0) {
    CHECK(me, sp > (uintptr_t)part[me].stack_lo && sp <= (uintptr_t)stack_end[me], "%s: sp %#lx outside own stack",
          where, (unsigned long)sp);
  }
}

static void fiber_entry(int me) {
  check_aligned(me, "entry");
  braid__fiber_started(&part[me]);
  entered[me]++;
  for (;;) {
    if (job) job(me);
    job_done[me] = 1;
    braid__fiber_switch(&part[me], &part[0], 0);
    CHECK(me, (uintptr_t)part[0].sp % 16 == 0, "main suspended with sp %p", part[0].sp);
  }
}

static void entry_a(void) { fiber_entry(1); }
static void entry_b(void) { fiber_entry(2); }
static void entry_c(void) { fiber_entry(3); }

/* Main's side of a phase: take part in the ring, then resume every fiber
 * until it has finished its part (each one is left inside its last switch
 * when main's last switch returns). */
static void run_phase(void (*fn)(int me)) {
  job = fn;
  for (int i = 1; i < NPART; i++)
    job_done[i] = 0;
  if (fn) fn(0);
  for (int i = 1; i < NPART; i++) {
    while (!job_done[i])
      braid__fiber_switch(&part[0], &part[i], 0);
  }
  job = NULL;
  /* The saved stack pointer of a suspended fiber must be 16-byte aligned
   * too: AAPCS64 faults on sp-relative accesses through a misaligned sp,
   * which an emulator may not check. */
  for (int i = 1; i < NPART; i++) {
    CHECK(0, (uintptr_t)part[i].sp % 16 == 0, "fiber %s suspended with sp %p", part_name[i], part[i].sp);
  }
}

/* ---- phase 1: registers through the assembly probe ----------------------- */

static uint64_t pattern(int me, unsigned round, int reg) {
  uint64_t x = ((uint64_t)(me + 1) << 56) ^ ((uint64_t)round << 16) ^ (uint64_t)(reg + 1);
  x *= 0x9E3779B97F4A7C15u;
  return x ^ (x >> 29);
}

static void job_regs(int me) {
  uint64_t in[NREGS], out[NREGS];
  for (unsigned r = 0; r < RING_ROUNDS; r++) {
    for (int i = 0; i < NREGS; i++)
      in[i] = pattern(me, r, i);
    memset(out, 0, sizeof out);
    regs_switch(&part[me].sp, part[next_of(me)].sp, in, out);
    for (int i = 0; i < NREGS; i++) {
      CHECK(me, out[i] == in[i], "round %u register #%d: %#llx, expected %#llx", r, i, (unsigned long long)out[i],
            (unsigned long long)in[i]);
    }
  }
}

/* ---- phase 2: compiler-allocated locals across braid__fiber_switch ------- */

static volatile uint64_t src_u[NPART][12];
static volatile double src_d[NPART][10];

__attribute__((noinline)) static void locals_round(int me, unsigned r) {
  for (int i = 0; i < 12; i++)
    src_u[me][i] = pattern(me, r, i);
  for (int i = 0; i < 10; i++)
    src_d[me][i] = (double)pattern(me, r, 100 + i) * 0x1p-40;
  uint64_t u0 = src_u[me][0], u1 = src_u[me][1], u2 = src_u[me][2], u3 = src_u[me][3];
  uint64_t u4 = src_u[me][4], u5 = src_u[me][5], u6 = src_u[me][6], u7 = src_u[me][7];
  uint64_t u8 = src_u[me][8], u9 = src_u[me][9], u10 = src_u[me][10], u11 = src_u[me][11];
  double d0 = src_d[me][0], d1 = src_d[me][1], d2 = src_d[me][2], d3 = src_d[me][3], d4 = src_d[me][4];
  double d5 = src_d[me][5], d6 = src_d[me][6], d7 = src_d[me][7], d8 = src_d[me][8], d9 = src_d[me][9];
  switch_next(me);
  /* The sources are volatile, so the compiler had to keep the values above
   * in registers or its own stack slots across the switch. */
  uint64_t w[12];
  double e[10];
  for (int i = 0; i < 12; i++)
    w[i] = src_u[me][i];
  for (int i = 0; i < 10; i++)
    e[i] = src_d[me][i];
  CHECK(me,
        u0 == w[0] && u1 == w[1] && u2 == w[2] && u3 == w[3] && u4 == w[4] && u5 == w[5] && u6 == w[6] && u7 == w[7] &&
            u8 == w[8] && u9 == w[9] && u10 == w[10] && u11 == w[11],
        "round %u: integer locals changed across a switch", r);
  CHECK(me,
        d0 == e[0] && d1 == e[1] && d2 == e[2] && d3 == e[3] && d4 == e[4] && d5 == e[5] && d6 == e[6] && d7 == e[7] &&
            d8 == e[8] && d9 == e[9],
        "round %u: double locals changed across a switch", r);
}

static void job_locals(int me) {
  for (unsigned r = 0; r < RING_ROUNDS; r++)
    locals_round(me, r);
}

/* ---- phase 3: FP control state per fiber ---------------------------------- */

static const int own_mode[NPART] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};
static const int own_ftz[NPART] = {0, 1, 0, 1};

static void job_fp(int me) {
  /* Whatever the previous participant just set, this one starts from the
   * state it was created with (or left at the end of phase 4). */
  check_round_mode(me, FE_TONEAREST, 0);
  if (me != 0) {
    fesetround(own_mode[me]);
    set_ftz(own_ftz[me]);
  }
  for (unsigned r = 0; r < RING_ROUNDS / 4; r++) {
    check_round_mode(me, own_mode[me], own_ftz[me]);
    switch_next(me);
  }
  check_round_mode(me, own_mode[me], own_ftz[me]);
}

/* Phase 4: the fibers still hold their mode after main ran; reset it. */
static void job_fp_reset(int me) {
  check_round_mode(me, own_mode[me], own_ftz[me]);
  fesetround(FE_TONEAREST);
  set_ftz(0);
  check_round_mode(me, FE_TONEAREST, 0);
  switch_next(me);
  check_round_mode(me, FE_TONEAREST, 0);
}

/* ---- phase 5: alignment in nested calls, varargs with doubles ------------- */

__attribute__((noinline)) static void nest(int me, int depth, double x) {
  char buf[96];
  check_aligned(me, "nested call");
  int n = snprintf(buf, sizeof buf, "%.2f|%g|%.1e|%d|%s", x, x * 4.0, x * 1e10, depth, part_name[me]);
  char want[96];
  int k = (int)(x * 100.0 + 0.5);
  int m = snprintf(want, sizeof want, "%d.%02d|", k / 100, k % 100);
  CHECK(me, n > 0 && m > 0 && strncmp(buf, want, (size_t)m) == 0, "snprintf gave \"%s\", expected prefix \"%s\"", buf,
        want);
  if (depth > 0) nest(me, depth - 1, x + 0.25);
  switch_next(me);
  check_aligned(me, "after switch in nested call");
}

static void job_nest(int me) {
  for (unsigned r = 0; r < NEST_ROUNDS; r++)
    nest(me, NEST_DEPTH, (double)(me + 1) + 0.5);
}

/* ---- main ------------------------------------------------------------------ */

int main(void) {
  static void (*const entries[NPART])(void) = {NULL, entry_a, entry_b, entry_c};
  volatile double v_nearest = v_one / v_three;
  nearest_third = v_nearest;

  braid__fiber_init_thread(&part[0]);
  {
    uintptr_t here = launder((uintptr_t)__builtin_frame_address(0));
    uintptr_t lo = (uintptr_t)part[0].stack_lo;
    if (!(lo && here > lo && here < lo + part[0].stack_len))
      fprintf(stderr, "note: braid__fiber_init_thread gave stack [%p, +%zu), frame at %p\n", part[0].stack_lo,
              part[0].stack_len, (void *)here);
  }
  for (int i = 1; i < NPART; i++) {
    void *mem = NULL;
    if (posix_memalign(&mem, 4096, STACK_SIZE + CANARY) != 0) {
      perror("posix_memalign");
      return 2;
    }
    stack_mem[i] = mem;
    unsigned char *lo = stack_mem[i];
    size_t len = STACK_SIZE;
    if (i == 3) { /* misaligned bottom and top */
      lo += 8;
      len -= 8 + 24;
    }
    stack_end[i] = lo + len;
    memset(stack_mem[i], 0xEE, STACK_SIZE + CANARY);
    braid__fiber_init(&part[i], lo, len, entries[i]);
  }

  /* 5: entry runs at the first switch, a fiber returns to main and is
   * resumed repeatedly. */
  for (int i = 1; i < NPART; i++) {
    run_phase(NULL);
    CHECK(0, entered[i] == 1, "fiber %s entered %d times", part_name[i], entered[i]);
  }
  for (int k = 0; k < 1000; k++)
    run_phase(NULL);
  for (int i = 1; i < NPART; i++)
    CHECK(0, entered[i] == 1, "fiber %s re-entered", part_name[i]);

  fesetround(FE_TONEAREST);
  check_round_mode(0, FE_TONEAREST, 0);

  run_phase(job_regs);
  printf("ctx_selftest: callee-saved registers (%d per switch, %d switches): %s\n", NREGS, RING_ROUNDS * NPART,
         failures ? "FAIL" : "ok");

  unsigned long before = failures;
  run_phase(job_locals);
  printf("ctx_selftest: live locals across braid__fiber_switch: %s\n", failures != before ? "FAIL" : "ok");

  before = failures;
  run_phase(job_fp);
  check_round_mode(0, FE_TONEAREST, 0);
  run_phase(job_fp_reset);
  check_round_mode(0, FE_TONEAREST, 0);
  printf("ctx_selftest: FP control state per fiber: %s\n", failures != before ? "FAIL" : "ok");

  before = failures;
  run_phase(job_nest);
  printf("ctx_selftest: stack alignment in entry, nested calls, snprintf: %s\n", failures != before ? "FAIL" : "ok");

  before = failures;
  for (int k = 0; k < 1000; k++)
    run_phase(NULL);
  for (int i = 1; i < NPART; i++) {
    CHECK(0, entered[i] == 1, "fiber %s entered %d times", part_name[i], entered[i]);
    for (int b = 0; b < CANARY; b++) {
      if (stack_end[i][b] != 0xEE) {
        CHECK(0, 0, "fiber %s overwrote byte %d above its stack end", part_name[i], b);
        break;
      }
    }
  }
  printf("ctx_selftest: fibers resumed from main, stacks in bounds: %s\n", failures != before ? "FAIL" : "ok");

  /* The fibers never return; their stacks are simply dropped. */
  for (int i = 1; i < NPART; i++) {
    braid__fiber_destroy(&part[i]);
    free(stack_mem[i]);
  }
  if (failures) {
    printf("ctx_selftest: %lu check(s) FAILED\n", failures);
    return 1;
  }
  printf("ctx_selftest: all checks passed\n");
  return 0;
}
