//! Where tokens and binding certificates come from.

pub mod binding;
pub mod static_token;
pub mod token;
