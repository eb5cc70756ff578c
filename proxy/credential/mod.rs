//! Where tokens and binding certificates come from.

pub mod binding;
pub mod token;
