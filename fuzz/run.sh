#!/usr/bin/env bash
# Builds and runs one fuzz target, single job: fuzz/run.sh TARGET [SECONDS] [libFuzzer flags...]
# New inputs go to fuzz/corpus/TARGET (ignored by git), crashes to fuzz/artifacts/TARGET.
# With clang installed, libjpeg-turbo and lancefeed's C are instrumented too (coverage
# that libFuzzer sees, ASan), in a target dir of their own; without, only the Rust is.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: fuzz/run.sh decode_full|decode_batch [seconds] [libFuzzer flags...]}
seconds=${2:-300}
shift $(($# < 2 ? $# : 2))
build=()
if command -v clang >/dev/null; then
  host=$(rustc +nightly -vV | sed -n 's/^host: //p' | tr - _)
  export "CC_$host=clang"
  export "CFLAGS_$host=-g -fsanitize=address -fsanitize-coverage=inline-8bit-counters,pc-table,trace-cmp"
  build=(--target-dir fuzz/target/c-coverage)
fi
mkdir -p "fuzz/corpus/$target"
exec cargo +nightly fuzz run "${build[@]}" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
  -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -timeout=20 \
  -dict=fuzz/decode.dict -print_final_stats=1 "$@"
