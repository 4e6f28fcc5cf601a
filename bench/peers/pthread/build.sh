#!/usr/bin/env bash
# Build the C pthread peer bench: build.sh OUTDIR
# Produces OUTDIR/bench_pthread. Needs a C compiler (cc, or $CC).
set -euo pipefail
out=${1:?usage: build.sh OUTDIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$out"
"${CC:-cc}" -O2 -std=c11 -Wall -Wextra -D_GNU_SOURCE -pthread -I"$here/../../c" \
  -o "$out/bench_pthread" "$here/bench_pthread.c"
