#!/usr/bin/env bash
# Fuzzes every target (or those named) for SECONDS_PER_TARGET (default 300)
# each, JOBS (default 2) at a time, in a working corpus fuzz/work/<target>
# that starts from the committed fuzz/corpus/<target>; then merges into
# fuzz/corpus/<target> the inputs that reach new edges (the committed corpus
# stays small), and prints one line per target: executions, coverage
# (libFuzzer's edge count, at the end and half way) and corpus sizes. A
# crash stops that target and leaves its input in fuzz/artifacts/<target>/.
# Needs `cargo install cargo-fuzz`; runs on stable Rust (-s none).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${SECONDS_PER_TARGET:-300}"
jobs="${JOBS:-2}"
targets="${*:-image checkpoint torch_legacy torch_zip affectnet afew_va aff_wild2 generic_csv face_boxes config video}"
cargo fuzz build -s none -O
mkdir -p logs
export TMPDIR="${TMPDIR:-/dev/shm}"
for t in $targets; do
  mkdir -p "work/$t"
  for f in corpus/"$t"/*; do [ -e "work/$t/${f##*/}" ] || cp "$f" "work/$t/"; done
done
printf '%s\n' $targets | xargs -P "$jobs" -I{} sh -c \
  "cargo fuzz run -s none -O {} work/{} -- -max_total_time=$seconds -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -print_final_stats=1 > logs/{}.log 2>&1 || echo '{}: stopped early, see fuzz/logs/{}.log'"
for t in $targets; do
  "target/x86_64-unknown-linux-gnu/release/$t" -merge=1 -use_counters=0 "corpus/$t" "work/$t" > "logs/merge-$t.log" 2>&1
done
# Coverage at the end and when half the executions were done: equal
# numbers mean the target reached a plateau.
for t in $targets; do
  awk -v t="$t" -v files="$(ls "corpus/$t" | wc -l) committed, $(ls "work/$t" | wc -l) working" '
    /^#[0-9]+/ && / cov: / { n = substr($1, 2) + 0; for (i = 1; i <= NF; i++) if ($i == "cov:") c = $(i + 1); at[++k] = n; cv[k] = c }
    /stat::number_of_executed_units/ { execs = $2 }
    END {
      half = 0; for (i = 1; i <= k; i++) if (at[i] <= execs / 2) half = cv[i]
      printf "%s: %s executions, coverage %s edges (%s at half way), corpus %s files\n", t, execs, cv[k], half, files
    }' "logs/$t.log"
done
