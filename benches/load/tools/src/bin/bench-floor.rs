//! The least an HTTP/1.1 proxy can do per request, as a yardstick; see src/floor/mod.rs.
#![forbid(unsafe_code)]

fn main() {
    popgate_bench_tools::floor::main();
}
