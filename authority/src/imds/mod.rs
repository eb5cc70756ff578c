//! Azure IMDS (v1 token, v2 getplatformmetadata + issuecredential) and the App Service endpoint.

pub mod app_service;
pub mod backend;
pub mod csr_verify;
pub(crate) mod query;
pub(crate) mod respond;
pub mod server;
pub mod v1;
pub mod v2;

pub use server::{ImdsHandle, ImdsSettings, spawn};
