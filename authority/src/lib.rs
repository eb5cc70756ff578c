//! The local authority: Entra ID token endpoint, IMDS v1 + v2 and a token-bound resource, as strict
//! as the real ones. Used by popgate's tests, benches and `popgate dev`, and as a standalone binary.

pub mod claims;
pub mod client_auth;
pub mod faults;
pub mod imds;
pub mod observe;
pub mod resource;
pub mod signing;
pub mod thumbprint;
