//! Azure IMDS (v1 token, v2 getplatformmetadata + issuecredential) and the App Service endpoint.

/// App Service `/msi/token` (`X-IDENTITY-HEADER`).
pub mod app_service;
pub mod backend;
/// PKCS#10 verification for `issuecredential`.
pub mod csr_verify;
/// Azure Arc, Service Fabric, Cloud Shell and Machine Learning identity endpoints.
pub mod mi_sources;
/// Service Fabric's self-signed endpoint certificate.
pub mod service_fabric_tls;
pub(crate) mod query;
pub(crate) mod respond;
/// The listener, settings and fault/observation wrapper.
pub mod server;
/// IMDS v1 token endpoint.
pub mod v1;
/// IMDSv2 `getplatformmetadata` and `issuecredential`.
pub mod v2;

pub use server::{ImdsHandle, ImdsSettings, spawn};
