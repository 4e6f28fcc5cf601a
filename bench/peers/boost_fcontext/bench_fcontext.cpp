// bench_fcontext: Boost.Context peer benchmark for braid (impl "boost_fcontext").
//
// raw_switch: two execution contexts -- the main stack and one coroutine
// stack set up with make_fcontext -- ping-pong with jump_fcontext. One loop
// iteration is a round trip (two switches); we report ns per single switch.
// There is no scheduler or queue involved: this is the floor for a
// stackful-coroutine context switch (register save/restore + stack swap).
//
// Timing: one uncounted warm-up repetition, then RUNS repetitions of a loop
// timed with clock_gettime(CLOCK_MONOTONIC); the median per-op time is printed.
//
// Usage: bench_fcontext [--json] [--quick]   (--quick: 10x fewer iterations)
#include <boost/context/detail/fcontext.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

namespace ctx = boost::context::detail;

static const int RUNS = 5;

static double now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

// Coroutine body: jump straight back to whoever jumped here, forever.
static void pong(ctx::transfer_t t) {
  for (;;) t = ctx::jump_fcontext(t.fctx, nullptr);
}

int main(int argc, char **argv) {
  bool json = false, quick = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) {
      json = true;
    } else if (!strcmp(argv[i], "--quick")) {
      quick = true;
    } else {
      fprintf(stderr, "usage: %s [--json] [--quick]\n", argv[0]);
      return 2;
    }
  }
  const long rounds = quick ? 1000000 : 10000000;  // round trips per repetition

  const size_t stack_size = 64 * 1024;
  char *stack = static_cast<char *>(malloc(stack_size));
  if (!stack) return 1;
  ctx::fcontext_t other = ctx::make_fcontext(stack + stack_size, stack_size, pong);

  std::vector<double> per_switch;
  for (int rep = 0; rep <= RUNS; rep++) {  // rep 0 is the warm-up
    double t0 = now_ns();
    for (long i = 0; i < rounds; i++) other = ctx::jump_fcontext(other, nullptr).fctx;
    double dt = now_ns() - t0;
    if (rep > 0) per_switch.push_back(dt / (2.0 * rounds));
  }
  std::sort(per_switch.begin(), per_switch.end());
  double median = per_switch[RUNS / 2];

  if (json) {
    printf("{\"bench\": \"raw_switch\", \"impl\": \"boost_fcontext\", \"unit\": \"ns/op\", "
           "\"median\": %.2f, \"runs\": %d}\n", median, RUNS);
  } else {
    printf("%-18s %-16s %12s  %-10s %s\n", "bench", "impl", "median", "unit", "runs");
    printf("%-18s %-16s %12.2f  %-10s %d\n", "raw_switch", "boost_fcontext", median, "ns/op", RUNS);
  }
  return 0;  // the coroutine stack is deliberately leaked; pong never returns
}
