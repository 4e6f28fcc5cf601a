/*
 * alloc.c — the one allocation hook, versions and error names.
 *
 * Every heap allocation of libbraid goes through braid__alloc/braid__free so
 * that tests can make any single allocation fail (braid_set_allocator).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void *default_realloc(void *ud, void *p, size_t n) {
  (void)ud;
  return realloc(p, n);
}
static void default_free(void *ud, void *p) {
  (void)ud;
  free(p);
}

static braid_allocator g_alloc = {sizeof(braid_allocator), default_realloc, default_free, NULL};
atomic_int braid__loops_running;

int braid_set_allocator(const braid_allocator *a) {
  if (a && (a->size < sizeof(braid_allocator) || !a->realloc || !a->free)) return BRAID_EINVAL;
  if (atomic_load(&braid__loops_running) > 0 || braid__workers_alive() > 0) return BRAID_ESTATE;
  if (a) {
    g_alloc = *a;
  } else {
    g_alloc.realloc = default_realloc;
    g_alloc.free = default_free;
    g_alloc.ud = NULL;
  }
  return 0;
}

void *braid__alloc(size_t size) { return g_alloc.realloc(g_alloc.ud, NULL, size ? size : 1); }

void *braid__calloc(size_t size) {
  void *p = braid__alloc(size);
  if (p) memset(p, 0, size);
  return p;
}

void *braid__realloc(void *p, size_t size) { return g_alloc.realloc(g_alloc.ud, p, size ? size : 1); }

void braid__free(void *p) {
  if (p) g_alloc.free(g_alloc.ud, p);
}

char *braid__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = braid__alloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

unsigned braid_version(void) { return (BRAID_VERSION_MAJOR << 16) | (BRAID_VERSION_MINOR << 8) | BRAID_VERSION_PATCH; }

#define BRAID__STR2(x) #x
#define BRAID__STR(x) BRAID__STR2(x)
const char *braid_version_string(void) {
  return BRAID__STR(BRAID_VERSION_MAJOR) "." BRAID__STR(BRAID_VERSION_MINOR) "." BRAID__STR(BRAID_VERSION_PATCH);
}

static const struct {
  int code;
  const char *name, *text;
} errors[] = {
    {0, "BRAID_OK", "success"},
    {BRAID_EINVAL, "BRAID_EINVAL", "invalid argument"},
    {BRAID_ENOMEM, "BRAID_ENOMEM", "out of memory"},
    {BRAID_ECANCELED, "BRAID_ECANCELED", "cancelled"},
    {BRAID_ETIMEDOUT, "BRAID_ETIMEDOUT", "deadline exceeded"},
    {BRAID_ESTATE, "BRAID_ESTATE", "operation not valid in this state"},
    {BRAID_EFAILED, "BRAID_EFAILED", "task group had failures"},
    {BRAID_EPENDING, "BRAID_EPENDING", "wait registered (stepped task)"},
    {BRAID_ETHREAD, "BRAID_ETHREAD", "called from the wrong thread"},
    {BRAID_EDEADLK, "BRAID_EDEADLK", "would deadlock"},
    {BRAID_EPERM, "BRAID_EPERM", "not the owner"},
    {BRAID_EWOULDBLOCK, "BRAID_EWOULDBLOCK", "operation would block"},
    {BRAID_EEOF, "BRAID_EEOF", "end of stream"},
    {BRAID_EBROKEN, "BRAID_EBROKEN", "the other end is closed"},
    {BRAID_ECLOSED, "BRAID_ECLOSED", "the object is closed"},
    {BRAID_ESYS, "BRAID_ESYS", "system call failed"},
};

const char *braid_strerror(int code) {
  for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
    if (errors[i].code == code) return errors[i].text;
  return "unknown error";
}

const char *braid_errname(int code) {
  for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
    if (errors[i].code == code) return errors[i].name;
  return "BRAID_E?";
}
