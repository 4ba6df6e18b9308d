#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 300) each, JOBS at a time (default 2), then
# minimises each corpus in place. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). Logs go to fuzz/logs/<target>.log; a crash leaves its input in
# fuzz/artifacts/<target>/ and the target's log says how to reproduce it.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-300}"
jobs="${2:-2}"
targets=$(cargo +nightly fuzz list)
mkdir -p logs
cargo +nightly fuzz build -O
run_one() {
    local target="$1" seconds="$2"
    mkdir -p "corpus/$target"
    cargo +nightly fuzz run -O "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"logs/$target.log" 2>&1 \
        && echo "$target: clean" || echo "$target: FAILED (see fuzz/logs/$target.log)"
    grep -E "^#[0-9]+ +DONE|^Done [0-9]+ runs" "logs/$target.log" | sed "s/^/  $target: /" || true
}
export -f run_one
printf '%s\n' $targets | xargs -P "$jobs" -I{} bash -c "run_one {} $seconds"
for target in $targets; do
    cargo +nightly fuzz cmin -O "$target" "corpus/$target" >"logs/$target.cmin.log" 2>&1 \
        || echo "$target: cmin failed (see fuzz/logs/$target.cmin.log)"
done
