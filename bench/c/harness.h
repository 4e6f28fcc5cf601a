/*
 * harness.h — the measuring loop shared by the C benchmarks: braid's, and
 * the pthread peer's (which defines BENCH_IMPL "pthread" before including
 * it and gets no braid parts).
 *
 * bench() runs one warm-up repetition and RUNS timed ones of a rep_fn (which
 * returns the per-operation value of one repetition) and reports the median:
 * a table line, or with --json one JSON object per line (bench/README.md).
 * --quick divides the iteration count by 10.
 */
#ifndef BRAID_BENCH_HARNESS_H
#define BRAID_BENCH_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef BENCH_IMPL
#define BENCH_IMPL "braid"
#define BENCH_BRAID 1
#include "braid.h"
#endif

#define RUNS 5

static int json, quick;

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void report(const char *bench, const char *unit, double *v, int runs) {
  qsort(v, runs, sizeof *v, cmp_double);
  double med = runs % 2 ? v[runs / 2] : (v[runs / 2 - 1] + v[runs / 2]) / 2;
  if (json)
    printf("{\"bench\": \"%s\", \"impl\": \"" BENCH_IMPL "\", \"unit\": \"%s\", \"median\": %.2f, \"runs\": %d}\n",
           bench, unit, med, runs);
  else
    printf("%-30s %14.2f %s  (min %.2f, max %.2f, %d runs)\n", bench, med, unit, v[0], v[runs - 1], runs);
  fflush(stdout);
}

typedef double (*rep_fn)(long n);

static void bench(const char *name, const char *unit, rep_fn fn, long n) {
  if (quick) n /= 10;
  if (n < 1) n = 1;
  double v[RUNS];
  fn(n); /* warm-up */
  for (int i = 0; i < RUNS; i++)
    v[i] = fn(n);
  report(name, unit, v, RUNS);
}

/* Parse --json / --quick; print the title line for the table. */
static void bench_args(int argc, char **argv, const char *title) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) {
      json = 1;
    } else if (!strcmp(argv[i], "--quick")) {
      quick = 1;
    } else {
      fprintf(stderr, "usage: %s [--json] [--quick]\n", argv[0]);
      exit(2);
    }
  }
#ifdef BENCH_BRAID
  if (!json) printf("braid %s %s (median of %d runs)\n", braid_version_string(), title, RUNS);
#else
  if (!json) printf("%s %s (median of %d runs)\n", BENCH_IMPL, title, RUNS);
#endif
}

#ifdef BENCH_BRAID

/* A failed call makes the numbers meaningless: stop. */
#define BENCH_CHECK(call)                                                                                              \
  do {                                                                                                                 \
    int rc_ = (call);                                                                                                  \
    if (rc_ != 0) {                                                                                                    \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, braid_errname(rc_));                               \
      exit(1);                                                                                                         \
    }                                                                                                                  \
  } while (0)

static braid_run_opts bench_run_opts(int clock) {
  braid_run_opts o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.clock = clock;
  return o;
}

/* Run fn as the root of a new loop on `clock`; stop on any failure. */
static void bench_run(braid_fn fn, void *arg, int clock) {
  braid_run_opts o = bench_run_opts(clock);
  BENCH_CHECK(braid_run(fn, arg, &o));
}
#endif /* BENCH_BRAID */

#endif
