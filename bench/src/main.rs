//! `cargo run --release -p redlock-bench`: see docs/benchmarks.md.

fn main() {
    redlock_bench::run();
}
