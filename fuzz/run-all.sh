#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 120) each, one after another, each a single process
# (no -jobs: libFuzzer would fork workers), from fuzz/seeds plus the corpus kept in fuzz/corpus.
# Needs cargo-fuzz (`cargo install cargo-fuzz`).
# Stable toolchain, no sanitizer (see docs/reliability.md). Exits non-zero on the first crash.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-120}"
targets=(config_load token_response imds_responses authority_assertion header_rewrite pem_files pkcs12_files framing_guard_vs_httparse)
export CARGO_INCREMENTAL=0
cargo fuzz build -s none
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "==> $t (${seconds}s)"
  cargo fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1 | tee "corpus/$t.log" |
    grep -E '^(#[0-9]+ +DONE|Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|==[0-9]+== ERROR|.*panicked)' || true
  if ls "artifacts/$t"/crash-* >/dev/null 2>&1; then
    echo "crash in $t: $(ls "artifacts/$t"/crash-*)" >&2
    exit 1
  fi
done
