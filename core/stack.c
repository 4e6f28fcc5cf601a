/*
 * stack.c — stacks of stackful tasks.
 *
 * Each stack is one anonymous mapping with a PROT_NONE guard page at its low
 * end, so an overflow faults instead of corrupting a neighbour. Mapping is
 * lazy (MAP_NORESERVE): an idle task costs only the pages it touched.
 *
 * A task gets its stack when it first runs, not when it is spawned, so a
 * group of many short tasks reuses a handful of stacks. Stacks of the loop's
 * default size go back to a per-loop cache on task exit. Note that each
 * guarded stack costs two kernel mappings: vm.max_map_count (65530 by
 * default on Linux) bounds how many stackful tasks can be alive at once to
 * roughly 32 000; beyond that mmap fails and the spawn's task fails with
 * BRAID_ENOMEM.
 */

#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

/* Stacks of ended tasks stay cached while the loop is busy, however many,
 * so ending (or cancelling) many tasks never waits for munmap; when the loop
 * goes idle the cache is trimmed back to BRAID__STACK_CACHE_KEEP. */
#define BRAID__STACK_CACHE_KEEP 64u

size_t braid__page_size(void) {
  static atomic_size_t page;
  size_t p = atomic_load_explicit(&page, memory_order_relaxed);
  if (!p) {
    p = (size_t)sysconf(_SC_PAGESIZE);
    atomic_store_explicit(&page, p, memory_order_relaxed);
  }
  return p;
}

static void unmap_stack(void *lo, size_t len) {
  size_t page = braid__page_size();
  munmap((char *)lo - page, len + page);
}

static void task_entry(void);

int braid__stack_get(braid_loop *loop, braid_task *t) {
  size_t len = t->stack_size;
  void *lo = NULL;
  if (len == loop->default_stack && loop->stack_cached) {
    lo = loop->stack_cache[--loop->stack_cached];
  } else {
    size_t page = braid__page_size();
    char *m =
        mmap(NULL, len + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (m == MAP_FAILED) return BRAID_ENOMEM;
    if (mprotect(m, page, PROT_NONE) != 0) {
      munmap(m, len + page);
      return BRAID_ENOMEM;
    }
    lo = m + page;
    loop->stacks_mapped++;
  }
  braid__fiber_init(&t->fiber, lo, len, task_entry);
  return 0;
}

void braid__stack_put(braid_loop *loop, braid_task *t) {
  void *lo = t->fiber.stack_lo;
  if (!lo) return;
  braid__fiber_destroy(&t->fiber);
  t->fiber.stack_lo = NULL;
  if (t->stack_size == loop->default_stack) {
    if (loop->stack_cached == loop->stack_cache_cap) {
      uint32_t cap = loop->stack_cache_cap ? loop->stack_cache_cap * 2 : 16;
      void **c = braid__realloc(loop->stack_cache, cap * sizeof *c);
      if (c) {
        loop->stack_cache = c;
        loop->stack_cache_cap = cap;
      }
    }
    if (loop->stack_cached < loop->stack_cache_cap) {
      loop->stack_cache[loop->stack_cached++] = lo;
      return;
    }
  }
  unmap_stack(lo, t->stack_size);
  loop->stacks_mapped--;
}

void braid__stack_cache_trim(braid_loop *loop) {
  while (loop->stack_cached > BRAID__STACK_CACHE_KEEP) {
    unmap_stack(loop->stack_cache[--loop->stack_cached], loop->default_stack);
    loop->stacks_mapped--;
  }
}

void braid__stack_cache_free(braid_loop *loop) {
  for (uint32_t i = 0; i < loop->stack_cached; i++)
    unmap_stack(loop->stack_cache[i], loop->default_stack);
  loop->stacks_mapped -= loop->stack_cached;
  loop->stack_cached = 0;
  braid__free(loop->stack_cache);
  loop->stack_cache = NULL;
  loop->stack_cache_cap = 0;
}

/* Defined in sched.c: runs the current task's body and never returns. */
BRAID__HIDDEN void braid__task_main(void);

static void task_entry(void) { braid__task_main(); }
