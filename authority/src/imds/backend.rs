//! The seam between IMDS's HTTP surface (this module) and the authority's directory, PKI and token
//! signer (the rest of the crate). IMDS asks; the backend knows identities and signs things.

use std::time::Duration;

/// A managed identity as IMDS knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedIdentity {
    pub client_id: String,
    pub object_id: String,
    /// ARM resource id; `None` for the system-assigned identity.
    pub resource_id: Option<String>,
    pub tenant_id: String,
    pub system_assigned: bool,
}

/// How a request names a user-assigned identity (or none: the system-assigned one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UamiSelector {
    ClientId(String),
    ResourceId(String),
    ObjectId(String),
}

/// The VM identity IMDSv2 reports as `cuId` and that the CSR must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CuId {
    pub vm_id: Option<String>,
    pub vmss_id: Option<String>,
}

/// A token the backend minted (IMDS v1 / App Service Bearer).
#[derive(Clone)]
pub struct MintedToken {
    pub access_token: String,
    pub expires_in: u64,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// A refusal in ESTS shape (`error`, `AADSTSnnnn` code, description).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendError {
    pub error: String,
    pub code: u32,
    pub description: String,
}

pub trait ImdsBackend: Send + Sync + 'static {
    /// The VM's system-assigned identity, if it has one.
    fn system_assigned(&self) -> Option<ManagedIdentity>;
    /// A user-assigned identity attached to this VM.
    fn user_assigned(&self, selector: &UamiSelector) -> Option<ManagedIdentity>;
    fn cu_id(&self) -> CuId;
    /// Issue the binding certificate for a verified CSR: subject `DC={tenant}, CN={client_id}`,
    /// public key = `spki_der`. Returns the certificate's DER.
    fn issue_certificate(
        &self,
        identity: &ManagedIdentity,
        spki_der: &[u8],
        lifetime: Duration,
    ) -> Result<Vec<u8>, BackendError>;
    /// Base URL (`https://host[:port]`) returned as `mtls_authentication_endpoint`.
    fn mtls_authentication_endpoint(&self) -> String;
    /// A Bearer token for `resource` (IMDS v1 and App Service).
    fn mint_bearer_token(
        &self,
        identity: &ManagedIdentity,
        resource: &str,
    ) -> Result<MintedToken, BackendError>;
}
