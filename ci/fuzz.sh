#!/usr/bin/env bash
# Fuzzes every parser for a bounded time: builds the targets of fuzz/, runs each on its
# corpus (fuzz/corpus/<target>, read only: new inputs go to a temporary directory) for
# FUZZ_SECONDS (default 30) seconds, and fails on any crash, panic, hang or leak, printing the
# input that caused it. Stable Rust only: no sanitizer (`-s none`, see fuzz/README.md).
#
#   ci/fuzz.sh                 every target, 30 s each
#   FUZZ_SECONDS=300 ci/fuzz.sh receipt feeds
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
# A single input slower than this counts as a hang (libFuzzer's -timeout).
timeout=${FUZZ_TIMEOUT:-10}

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

mapfile -t targets < <(if (($#)); then printf '%s\n' "$@"; else cargo fuzz list --fuzz-dir fuzz; fi)
if ((${#targets[@]} == 0)); then
  echo "fuzz: no fuzz target found in fuzz/" >&2
  exit 1
fi

cargo fuzz build -s none --fuzz-dir fuzz

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  if [[ ! -d $corpus ]]; then
    echo "fuzz: $t has no corpus ($corpus)" >&2
    failed+=("$t")
    continue
  fi
  mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
  log=$scratch/$t.log
  echo "fuzz: $t for ${seconds}s"
  if cargo fuzz run -s none --fuzz-dir fuzz "$t" "$scratch/$t" "$corpus" -- \
      -max_total_time="$seconds" -timeout="$timeout" \
      -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1; then
    grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" |
      sed "s/^/fuzz: $t: /"
  else
    tail -40 "$log" >&2
    # libFuzzer names the input it saved: "Test unit written to fuzz/artifacts/<t>/crash-...".
    input=$(grep -o 'Test unit written to .*' "$log" | tail -1 | sed 's/^Test unit written to //')
    echo "fuzz: $t FAILED; input: ${input:-(none saved, see the log above)}" >&2
    [[ -n $input ]] && echo "fuzz: reproduce with: cargo fuzz run -s none --fuzz-dir fuzz $t $input" >&2
    failed+=("$t")
  fi
done

if ((${#failed[@]})); then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
