//! Where tokens and binding certificates come from.

pub mod authority_host;
pub mod binding;
pub mod cert_files;
pub mod token;
