#!/usr/bin/env bash
# Runs one fuzz target for 10 million executions or 30 minutes, whichever
# comes first, on a scratch corpus (work/, not committed) seeded from the
# committed seeds in corpus/<target>/. Needs cargo-fuzz; on a stable
# toolchain RUSTC_BOOTSTRAP=1 lets it pass its nightly-only flags.
#   fuzz/run.sh parse_check [extra libFuzzer flags]
set -euo pipefail
cd "$(dirname "$0")"
target="$1"
shift
mkdir -p "work/$target" artifacts
RUSTC_BOOTSTRAP=1 exec cargo fuzz run --sanitizer none "$target" \
  "work/$target" "corpus/$target" -- \
  -runs=10000000 -max_total_time=1800 -timeout=10 -print_final_stats=1 "$@"
