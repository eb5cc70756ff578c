//! A managed identity's mTLS PoP token via IMDSv2 (protocol.md §3): platform metadata, an
//! in-memory RSA-2048 key, the RSASSA-PSS CSR, `issuecredential` (with an optional attestation
//! token from an external command), then the token over mTLS at `mtls_authentication_endpoint`.
//! One binding certificate per identity, shared by all its resources.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::certs::binding::BindingCert;
use crate::identity::csr::{BindingKey, build_csr};
use crate::identity::imds_endpoint::{ImdsBase, UamiSelector};
use crate::identity::imds_v2::{
    IssuedCredential, PlatformMetadata, issue_credential_request, parse_issued_credential,
    parse_platform_metadata, platform_metadata_request,
};
use crate::identity::token::{Token, TokenType};
use crate::identity::token_request::scope_for_resource;
use crate::identity::token_response::parse_token_response;

use super::retry::{Peer, send_with_retry};
use super::{Want, cache_key, errors, through_cache};
use crate::engine::build::EngineDeps;
use crate::engine::cache::{CacheKey, CachedToken, Failure};
use crate::engine::credential::{BoxFuture, Credential, CredentialLabels, EngineError};

/// An issued certificate is replaced this long before `notAfter` at the latest (protocol.md §3;
/// issued certificates live about seven days).
pub const REMINT_LEAD: Duration = Duration::from_secs(24 * 3600);
/// The attestation command must print its token within this: attestation services answer in
/// seconds, and a hung command must not hold the identity's IMDS turn forever.
pub const ATTESTATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest attestation output read: MAA tokens are a few KiB; more is not a token.
pub const MAX_ATTESTATION_BYTES: usize = 64 * 1024;

/// A binding certificate IMDS issued, with what came with it.
#[derive(Debug)]
pub struct Minted {
    /// The certificate and the in-memory key.
    pub binding: BindingCert,
    /// The `issuecredential` answer (client id, tenant, token endpoint).
    pub issued: IssuedCredential,
    minted_at: SystemTime,
}

impl Minted {
    /// Whether it is time to replace it: within [`REMINT_LEAD`] of `notAfter`, or past half its
    /// lifetime when that comes sooner (so short-lived test certificates are renewed too).
    pub fn due(&self, now: SystemTime) -> bool {
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
pub struct ImdsV2Identity {
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
    pub fn new(
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
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The certificate to use: the current one unless it is due, or unless it is `failed` (the
    /// token endpoint refused it), in which case a new one is minted.
    pub async fn binding(&self, failed: Option<&str>) -> Result<Arc<Minted>, EngineError> {
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
                let answered = send_with_retry(
                    &self.deps.transport,
                    self.deps.retry,
                    Peer::ImdsProbe,
                    "IMDSv2 getplatformmetadata",
                    &request,
                    None,
                )
                .await
                .map_err(|e| errors::transport(name, "IMDS", &e))?;
                let x = &answered.exchange;
                let metadata = parse_platform_metadata(x.status, &x.headers, &x.body)
                    .map_err(|e| errors::response(name, "IMDS", self.base.as_str(), &e))?;
                state.metadata = Some(metadata.clone());
                metadata
            }
        };
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
        .map_err(|e| local(e.to_string()))?;
        let attestation = match &self.attestation_command {
            Some(argv) => Some(
                run_attestation(argv)
                    .await
                    .map_err(|e| local(format!("attestation command: {e}")))?,
            ),
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
        let answered = send_with_retry(
            &self.deps.transport,
            self.deps.retry,
            Peer::Imds,
            "IMDSv2 issuecredential",
            &request,
            None,
        )
        .await
        .map_err(|e| errors::transport(name, "IMDS", &e))?;
        let x = &answered.exchange;
        let issued = parse_issued_credential(x.status, &x.body)
            .map_err(|e| errors::response(name, "IMDS", self.base.as_str(), &e))?;
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

/// Runs the attestation command and returns what it printed (trimmed), zeroized on drop.
async fn run_attestation(argv: &[String]) -> Result<Zeroizing<String>, String> {
    let (program, args) = argv.split_first().ok_or("is empty")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    // Allocated once at full size so no reallocation leaves a copy of the token behind.
    let mut output = Zeroizing::new(Vec::with_capacity(MAX_ATTESTATION_BYTES + 1));
    let run = async {
        (&mut stdout)
            .take(MAX_ATTESTATION_BYTES as u64 + 1)
            .read_to_end(&mut output)
            .await
            .map_err(|e| format!("cannot read the output of `{program}`: {e}"))?;
        if output.len() > MAX_ATTESTATION_BYTES {
            // Stop here: the child is killed when dropped rather than left blocked on a full pipe.
            return Err(format!(
                "`{program}` printed more than {MAX_ATTESTATION_BYTES} bytes"
            ));
        }
        child
            .wait()
            .await
            .map_err(|e| format!("`{program}` failed: {e}"))
    };
    let status = tokio::time::timeout(ATTESTATION_TIMEOUT, run)
        .await
        .map_err(|_| format!("`{program}` did not finish within {ATTESTATION_TIMEOUT:?}"))??;
    if !status.success() {
        return Err(format!("`{program}` exited with {status}"));
    }
    let text = std::str::from_utf8(&output)
        .map_err(|_| format!("`{program}` printed something that is not UTF-8"))?
        .trim();
    if text.is_empty() {
        return Err(format!("`{program}` printed nothing"));
    }
    Ok(Zeroizing::new(text.to_string()))
}

/// Tokens for one (managed identity, resource), mTLS PoP.
pub struct ManagedIdentityPop {
    labels: CredentialLabels,
    identity: Arc<ImdsV2Identity>,
    resource: String,
    scope: String,
}

impl ManagedIdentityPop {
    /// `identity` is shared by every PoP credential of the managed identity.
    pub fn new(
        labels: CredentialLabels,
        identity: Arc<ImdsV2Identity>,
        resource: &str,
    ) -> Result<Self, EngineError> {
        let scope = scope_for_resource(resource)
            .map_err(|e| errors::local(&labels.identity, e.to_string()))?;
        Ok(Self {
            labels,
            identity,
            resource: resource.to_string(),
            scope,
        })
    }

    fn key(&self, x5t: &str) -> CacheKey {
        cache_key(
            &self.labels.identity,
            &self.scope,
            TokenType::MtlsPop,
            Some(x5t),
        )
    }

    async fn obtain(&self, want: Want) -> Result<CachedToken, EngineError> {
        let minted = self.identity.binding(None).await?;
        let remint = AtomicBool::new(false);
        let cache = &self.identity.deps.cache;
        let key = self.key(minted.binding.x5t_s256());
        let first = through_cache(cache, &key, want, || self.acquire(&minted, &remint)).await;
        if first.is_ok() || !remint.load(Ordering::SeqCst) {
            return first;
        }
        // The token endpoint refused the certificate (invalid_client or TLS): mint a new one
        // and try once more.
        tracing::info!(
            identity = %self.labels.identity,
            "token endpoint refused the IMDSv2 certificate; minting a new one"
        );
        let renewed = self
            .identity
            .binding(Some(minted.binding.x5t_s256()))
            .await?;
        let key = self.key(renewed.binding.x5t_s256());
        let unused = AtomicBool::new(false);
        through_cache(cache, &key, Want::Usable, || {
            self.acquire(&renewed, &unused)
        })
        .await
    }

    async fn acquire(
        &self,
        minted: &Minted,
        remint: &AtomicBool,
    ) -> Result<Token, Failure<EngineError>> {
        let name = &self.labels.identity;
        let deps = &self.identity.deps;
        let request = minted
            .issued
            .token_request(&self.resource)
            .map_err(|e| Failure::new(errors::local(name, e.to_string())))?;
        let host = request
            .request()
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let now = SystemTime::now();
        let answered = send_with_retry(
            &deps.transport,
            deps.retry,
            Peer::TokenEndpoint,
            "IMDSv2 mTLS PoP token",
            &request,
            Some(&minted.binding),
        )
        .await
        .map_err(|e| {
            if e.is_tls() {
                remint.store(true, Ordering::SeqCst);
            }
            Failure::new(errors::transport(name, "token endpoint", &e))
        })?;
        let x = &answered.exchange;
        parse_token_response(
            x.status,
            &x.body,
            TokenType::MtlsPop,
            now,
            Some(minted.binding.clone()),
        )
        .map_err(|e| {
            if e.ests().is_some_and(|ests| ests.is_invalid_client()) {
                remint.store(true, Ordering::SeqCst);
            }
            errors::failure(
                errors::response(name, "token endpoint", &host, &e),
                answered.retry_after,
            )
        })
    }
}

impl Credential for ManagedIdentityPop {
    fn labels(&self) -> &CredentialLabels {
        &self.labels
    }

    fn get(&self) -> BoxFuture<'_, Result<CachedToken, EngineError>> {
        Box::pin(self.obtain(Want::Usable))
    }

    fn refresh(&self, seen: u64) -> BoxFuture<'_, Result<CachedToken, EngineError>> {
        Box::pin(self.obtain(Want::Refresh(seen)))
    }

    fn invalidate(&self, generation: u64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(current) = self.identity.current.load_full() {
                let key = self.key(current.binding.x5t_s256());
                self.identity.deps.cache.invalidate(&key, generation).await;
            }
        })
    }

    fn binding_changes(&self) -> watch::Receiver<u64> {
        self.identity.subscribe()
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

    #[tokio::test]
    async fn the_attestation_hook_is_bounded_and_reports_failures() {
        let ok = run_attestation(&["/bin/sh".into(), "-c".into(), "echo '  maa-token  '".into()])
            .await
            .unwrap();
        assert_eq!(ok.as_str(), "maa-token");
        let err = run_attestation(&[]).await.unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let err = run_attestation(&["/nonexistent/attest".into()])
            .await
            .unwrap_err();
        assert!(err.contains("cannot start"), "{err}");
        let err = run_attestation(&["/bin/sh".into(), "-c".into(), "true".into()])
            .await
            .unwrap_err();
        assert!(err.contains("printed nothing"), "{err}");
        // Far more than a pipe buffer: the hook must not wait for the command to finish writing.
        let flood = format!("head -c {} /dev/zero", 4 * MAX_ATTESTATION_BYTES);
        let err = run_attestation(&["/bin/sh".into(), "-c".into(), flood])
            .await
            .unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }
}
