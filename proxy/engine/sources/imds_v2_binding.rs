//! One managed identity's IMDSv2 binding certificate (protocol.md §3): platform metadata, an
//! in-memory RSA-2048 key, the RSASSA-PSS CSR, `issuecredential` (with an optional attestation
//! token), renewed ahead of `notAfter` or when the token endpoint refuses it. Shared by all the
//! identity's PoP sources.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use crate::certs::binding::BindingCert;
use crate::identity::csr::{BindingKey, build_csr};
use crate::identity::imds_endpoint::{ImdsBase, UamiSelector};
use crate::identity::imds_v2::{
    IssuedCredential, PlatformMetadata, issue_credential_request, parse_issued_credential,
    parse_platform_metadata, platform_metadata_request,
};

use super::attestation::{AttestationInput, run_attestation};
use super::errors;
use super::retry::Peer;
use super::token_call::Call;
use crate::engine::build::EngineDeps;
use crate::engine::credential::EngineError;
use crate::identity::token::TokenType;
use crate::metrics::token_steps::{self, Step};

/// An issued certificate is replaced this long before `notAfter` at the latest (protocol.md §3;
/// issued certificates live about seven days).
pub(crate) const REMINT_LEAD: Duration = Duration::from_secs(24 * 3600);

/// A binding certificate IMDS issued, with what came with it.
#[derive(Debug)]
pub(crate) struct Minted {
    /// The certificate and the in-memory key.
    pub binding: BindingCert,
    /// The `issuecredential` answer (client id, tenant, token endpoint).
    pub issued: IssuedCredential,
    minted_at: SystemTime,
}

impl Minted {
    /// Whether it is time to replace it: within [`REMINT_LEAD`] of `notAfter`, or past half its
    /// lifetime when that comes sooner (so short-lived test certificates are renewed too).
    pub(crate) fn due(&self, now: SystemTime) -> bool {
        let not_after = self.binding.not_after();
        let lifetime = not_after
            .duration_since(self.minted_at)
            .unwrap_or(Duration::ZERO);
        let lead = REMINT_LEAD.min(lifetime / 2);
        match not_after.checked_sub(lead) {
            Some(renew_at) => now >= renew_at,
            None => true,
        }
    }
}

#[derive(Default)]
struct MintState {
    metadata: Option<PlatformMetadata>,
    key: Option<Arc<BindingKey>>,
}

/// One managed identity's IMDSv2 binding certificate, shared by all its PoP credentials.
pub(crate) struct ImdsV2Identity {
    name: String,
    base: ImdsBase,
    selector: Option<UamiSelector>,
    resource_id_key: String,
    attestation_command: Option<Vec<String>>,
    deps: EngineDeps,
    /// Held for every IMDS call of this identity: IMDS throttles, so they go one at a time.
    state: tokio::sync::Mutex<MintState>,
    current: ArcSwapOption<Minted>,
    changes: watch::Sender<u64>,
}

impl ImdsV2Identity {
    /// Nothing is fetched until the first token is asked for.
    pub(crate) fn new(
        name: &str,
        base: ImdsBase,
        selector: Option<UamiSelector>,
        resource_id_key: &str,
        attestation_command: Option<Vec<String>>,
        deps: EngineDeps,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_string(),
            base,
            selector,
            resource_id_key: resource_id_key.to_string(),
            attestation_command,
            deps,
            state: tokio::sync::Mutex::new(MintState::default()),
            current: ArcSwapOption::empty(),
            changes: watch::channel(0).0,
        })
    }

    /// Changes whenever a new certificate is minted.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The certificate to use: the current one unless it is due, or unless it is `failed` (the
    /// token endpoint refused it), in which case a new one is minted.
    pub(crate) async fn binding(&self, failed: Option<&str>) -> Result<Arc<Minted>, EngineError> {
        let usable =
            |m: &Arc<Minted>| !m.due(SystemTime::now()) && failed != Some(m.binding.x5t_s256());
        if let Some(current) = self.current.load_full()
            && usable(&current)
        {
            return Ok(current);
        }
        let mut state = self.state.lock().await;
        // Another caller may have minted while this one waited for the turn.
        if let Some(current) = self.current.load_full()
            && usable(&current)
        {
            return Ok(current);
        }
        let minted = Arc::new(self.mint(&mut state).await?);
        tracing::info!(
            identity = %self.name,
            x5t_s256 = %minted.binding.x5t_s256(),
            "IMDSv2 binding certificate minted"
        );
        if let Some(old) = self.current.swap(Some(Arc::clone(&minted))) {
            self.deps.transport.retire(old.binding.x5t_s256());
        }
        self.changes.send_modify(|n| *n += 1);
        Ok(minted)
    }

    /// An IMDS call for this identity; errors name the IMDS base URL.
    fn call(&self, peer: Peer, what: &'static str) -> Call<'_> {
        Call {
            host: Some(self.base.as_str()),
            ..Call::new(&self.deps, &self.name, peer, what)
        }
    }

    async fn mint(&self, state: &mut MintState) -> Result<Minted, EngineError> {
        let name = &self.name;
        let local = |e: String| errors::local(name, e);
        let metadata = match &state.metadata {
            Some(m) => m.clone(),
            None => {
                let request = platform_metadata_request(
                    &self.base,
                    self.selector.as_ref(),
                    &self.resource_id_key,
                )
                .map_err(|e| local(e.to_string()))?;
                let metadata = self
                    .call(Peer::ImdsProbe, "IMDSv2 getplatformmetadata")
                    .timed(Step::Metadata, TokenType::MtlsPop)
                    .send(&request, |x| {
                        parse_platform_metadata(x.status, &x.headers, &x.body)
                    })
                    .await
                    .map_err(|e| e.error)?;
                state.metadata = Some(metadata.clone());
                metadata
            }
        };
        let csr_started = std::time::Instant::now();
        let key = match &state.key {
            Some(k) => Arc::clone(k),
            None => {
                // RSA key generation takes long enough to stall a runtime worker.
                let key = tokio::task::spawn_blocking(BindingKey::generate)
                    .await
                    .map_err(|e| local(format!("key generation task failed: {e}")))?
                    .map_err(|e| local(e.to_string()))?;
                let key = Arc::new(key);
                state.key = Some(Arc::clone(&key));
                key
            }
        };
        let csr = build_csr(
            &key,
            &metadata.tenant_id,
            &metadata.client_id,
            &metadata.cu_id,
        )
        .map_err(|e| local(e.to_string()));
        token_steps::observe(
            name,
            TokenType::MtlsPop,
            Step::Csr,
            csr.is_ok(),
            csr_started.elapsed(),
        );
        let csr = csr?;
        let attestation = match &self.attestation_command {
            Some(argv) => {
                let spki = key.spki_der().map_err(|e| local(e.to_string()))?;
                let input = AttestationInput {
                    endpoint: &metadata.attestation_endpoint,
                    client_id: &metadata.client_id,
                    tenant_id: &metadata.tenant_id,
                    public_key_spki: &spki,
                };
                Some(
                    run_attestation(argv, &input)
                        .await
                        .map_err(|e| local(format!("attestation command: {e}")))?,
                )
            }
            None => None,
        };
        let request = issue_credential_request(
            &self.base,
            self.selector.as_ref(),
            &self.resource_id_key,
            &csr,
            attestation.as_deref().map(|s| s.as_str()),
        )
        .map_err(|e| local(e.to_string()))?;
        drop(attestation);
        // Failures here carry no Retry-After block: the caller's backoff paces the next mint.
        let issued = self
            .call(Peer::Imds, "IMDSv2 issuecredential")
            .timed(Step::Credential, TokenType::MtlsPop)
            .send(&request, |x| parse_issued_credential(x.status, &x.body))
            .await
            .map_err(|e| e.error)?;
        let binding = issued
            .binding_cert(&key)
            .map_err(|e| local(format!("IMDS issued an unusable certificate: {e}")))?;
        Ok(Minted {
            binding,
            issued,
            minted_at: SystemTime::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    fn minted(not_after: SystemTime, minted_at: SystemTime) -> Minted {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["mi.test".to_string()]).unwrap();
        params.not_before = (minted_at - Duration::from_secs(60)).into();
        params.not_after = not_after.into();
        let cert = params.self_signed(&key).unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        Minted {
            binding: BindingCert::from_der(
                vec![der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap(),
            issued: IssuedCredential {
                client_id: "c".into(),
                tenant_id: "t".into(),
                certificate: der,
                identity_type: "UserAssigned".into(),
                mtls_authentication_endpoint: "https://mtlsauth.microsoft.com".into(),
            },
            minted_at,
        }
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn a_week_long_certificate_is_renewed_a_day_before_it_expires() {
        let now = SystemTime::now();
        let m = minted(now + 7 * DAY, now);
        assert!(!m.due(now));
        assert!(!m.due(now + 5 * DAY));
        assert!(m.due(now + 6 * DAY + Duration::from_secs(60)));
        assert!(m.due(now + 8 * DAY));
    }

    #[test]
    fn a_short_certificate_is_renewed_at_half_its_lifetime() {
        let now = SystemTime::now();
        let m = minted(now + Duration::from_secs(100), now);
        assert!(!m.due(now + Duration::from_secs(40)));
        assert!(m.due(now + Duration::from_secs(60)));
    }
}
