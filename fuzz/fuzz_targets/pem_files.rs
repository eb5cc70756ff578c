//! PEM / token files: `cert_files::load_cert_chain`, `load_private_key` and `static_token::load`
//! on arbitrary file contents. Never a panic.
#![no_main]

#[path = "input_file.rs"]
mod input_file;

use libfuzzer_sys::fuzz_target;
use popgate::identity::token::TokenType;
use popgate::certs::cert_files;
use popgate::identity::static_token;

fuzz_target!(|data: &[u8]| {
    let path = input_file::path("input.pem");
    std::fs::write(path, data).expect("write the fuzzed file");
    let _ = cert_files::load_cert_chain(path);
    let _ = cert_files::load_private_key(path);
    let _ = cert_files::load_binding_cert(path, path);
    let _ = static_token::load(path, None, TokenType::Bearer);
});
