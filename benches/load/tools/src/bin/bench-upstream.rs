//! Token-bound mTLS upstream for the load harness; see benches/load/tools/README.md.
#![forbid(unsafe_code)]

fn main() {
    popgate_bench_tools::upstream::main();
}
