#!/usr/bin/env bash
# Runs each test-only mutant of the crate against its safety-suite test and expects the
# named checker to flag it (the test itself asserts that, by reading the active cfg).
#
#   scripts/mutants.sh                 # all mutants
#   scripts/mutants.sh plain_del ...   # some
#
# Each mutant gets its own target dir (RUSTFLAGS changes rebuild every dependency, so
# sharing one dir would rebuild everything for each mutant). Base dir: $MUTANT_TARGET_BASE,
# else target/mutants. The first run of each mutant is a full build (minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
all=(skip_validity plain_del constant_value quorum_half incr_max semaphore_count)
mutants=("${@:-${all[@]}}")
base="${MUTANT_TARGET_BASE:-$PWD/target/mutants}"
failed=()
# The module of each mutant's test: safety, unless listed here.
test_of() {
  case "$1" in
    semaphore_count) echo "kinds::mutant_$1" ;;
    *) echo "safety::mutant_$1" ;;
  esac
}
for m in "${mutants[@]}"; do
  t="$(test_of "$m")"
  echo "=== mutant $m: expect $t to be flagged"
  if CARGO_TARGET_DIR="$base/$m" RUSTFLAGS="--cfg redlock_mutant=\"$m\"" \
      cargo test --all-features --test it "$t" -- --exact --nocapture; then
    echo "=== mutant $m: caught"
  else
    echo "=== mutant $m: NOT caught (or the test broke)"
    failed+=("$m")
  fi
done
# Without any mutant the same tests must be clean.
echo "=== no mutant: the mutant tests must be clean"
cargo test --all-features --test it mutant_ -- --nocapture || failed+=("(none)")
if ((${#failed[@]})); then
  echo "mutants not caught: ${failed[*]}" >&2
  exit 1
fi
echo "every mutant was caught"
