//! Azure IMDS (v1 token, v2 getplatformmetadata + issuecredential) and the App Service endpoint.

pub mod backend;
