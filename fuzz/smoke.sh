#!/usr/bin/env bash
# Builds every fuzz target and runs each for a short while (20 s by
# default, FUZZ_SECONDS to change it), one after the other on one core.
# Exits non-zero as soon as a target crashes; the input is left in
# fuzz/artifacts/<target>/. Needs a nightly toolchain and cargo-fuzz.
set -euo pipefail

cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-20}"

cargo +nightly fuzz build
for target in $(cargo +nightly fuzz list); do
    corpus="corpus/$target"
    mkdir -p "$corpus"
    if [ -d "seeds/$target" ]; then
        cp -n seeds/"$target"/* "$corpus"/ 2>/dev/null || true
    fi
    echo "== $target (${seconds}s)"
    cargo +nightly fuzz run "$target" "$corpus" -- \
        -max_total_time="$seconds" -print_final_stats=1
done
echo "all fuzz targets ran ${seconds}s without a crash"
