//! `cargo bench -p redlock-bench`: see docs/benchmarks.md.

fn main() {
    redlock_bench::run();
}
