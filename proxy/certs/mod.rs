//! Certificates and keys: the binding certificate, PEM and PKCS#12 files. The lowest layer: it
//! imports nothing else of popgate's.

pub mod binding;
pub(crate) mod bounded_read;
pub mod cert_files;
pub mod pkcs12;
pub(crate) mod x509;
pub mod intercept_ca;
