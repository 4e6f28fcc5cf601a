#!/usr/bin/env bash
# Build the Boost.Context fcontext peer bench: build.sh OUTDIR
# Produces OUTDIR/bench_fcontext. Needs g++ and libboost-context-dev.
set -euo pipefail
out=${1:?usage: build.sh OUTDIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$out"
"${CXX:-g++}" -O2 -std=c++17 -Wall -Wextra \
  -o "$out/bench_fcontext" "$here/bench_fcontext.cpp" -lboost_context
