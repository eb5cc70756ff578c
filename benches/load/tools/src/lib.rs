//! Load-harness tools for issue 7: `bench-upstream` (the token-bound mTLS service every proxy
//! forwards to) and `bench-load` (the load generator). See README.md for the CLI contract.
#![forbid(unsafe_code)]

pub mod cli;
pub mod floor;
pub mod load;
pub mod tls;
pub mod token;
pub mod upstream;
