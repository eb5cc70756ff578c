//! Identity layer: PKCS#12 and PEM credentials, golden wire vectors, the token and IMDS wire
//! protocol. One test binary; each file is a module.

#[path = "../kit/mod.rs"]
mod kit;

mod credential_pkcs12;
mod credential_vectors;
mod credential_wire;
