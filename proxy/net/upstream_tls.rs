//! The TLS client configuration for upstream connections: aws-lc-rs, system roots plus extra CAs,
//! the binding certificate as client certificate, ALPN h2 + http/1.1.
//!
//! One `ClientConfig` per binding certificate, never shared across certificates: a config owns its
//! TLS session cache, and TLS 1.3 resumption with a cache filled under certificate A would present
//! identity A alongside a token bound to certificate B. The routes of one certificate share its
//! config ([`shared_client_config`]): same certificate, same session cache, one config instead of
//! one per route.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};

use rustls::client::{ResolvesClientCert, VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::certs::binding::BindingCert;
use crate::locks::lock_unpoisoned;

/// Server names whose TLS sessions one config remembers (LRU). A route talks to one upstream host,
/// a `*.suffix` route to a few; rustls's default of 256 preallocates its table in every config,
/// and there is one config per route and certificate (1,000 routes: benches/load).
const SESSION_CACHE_HOSTS: usize = 16;

/// ALPN protocols offered upstream, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why an upstream TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    /// Cannot read CA file `path`: `source`.
    #[error("cannot read CA file {path}: {source}")]
    ReadCaFile {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// CA file `path` is not valid PEM: `reason`.
    #[error("CA file {path} is not valid PEM: {reason}")]
    BadCaFile {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// CA file `path` holds no certificate.
    #[error("CA file {path} holds no certificate")]
    EmptyCaFile {
        /// The file.
        path: PathBuf,
    },
    /// CA certificate #`index` from `source_name` is not a usable trust anchor: `reason`.
    #[error("CA certificate #{index} from {source_name} is not a usable trust anchor: {reason}")]
    BadCaCert {
        /// Where the CA came from (a file, or the system store).
        source_name: String,
        /// The certificate's position in that source, from 0.
        index: usize,
        /// Why it was refused.
        reason: String,
    },
    /// No trusted root at all: no system roots were found and no extra CA was given.
    #[error("no trusted root at all: no system roots were found and no extra CA was given")]
    NoRoots,
    /// Cannot build the TLS client configuration: `0`.
    #[error("cannot build the TLS client configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Cannot build the server certificate verifier: `0`.
    #[error("cannot build the server certificate verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
}

/// Extra trust anchors, parsed once (from `extra_ca_files`) and shared by every route's config.
#[derive(Clone, Debug, Default)]
pub struct ExtraRoots {
    /// Shared by the clones: every route's settings hold a copy of the set (a deep copy of the
    /// certificates cost ~1 KiB per route with the bench's two CA files; benches/README.md).
    certs: Arc<Vec<(String, CertificateDer<'static>)>>,
    /// The server verifier (system roots plus `certs`), built on first use and shared by every
    /// config made from this set or its clones. A root store of its own per route cost about
    /// 100 KiB each: 1,000 routes idled at 127 MiB (benches/load). Verification state only; the
    /// session cache stays per config (see the module comment).
    verifier: Arc<OnceLock<Arc<WebPkiServerVerifier>>>,
}

impl ExtraRoots {
    /// Adds every certificate of a PEM file; a file without certificates is an error.
    pub fn add_pem_file(&mut self, path: &Path) -> Result<(), UpstreamTlsError> {
        let bytes = std::fs::read(path).map_err(|source| UpstreamTlsError::ReadCaFile {
            path: path.to_path_buf(),
            source,
        })?;
        let mut found = 0usize;
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| UpstreamTlsError::BadCaFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            Arc::make_mut(&mut self.certs).push((path.display().to_string(), cert));
            self.verifier = Arc::default();
            found += 1;
        }
        if found == 0 {
            return Err(UpstreamTlsError::EmptyCaFile {
                path: path.to_path_buf(),
            });
        }
        Ok(())
    }

    /// Adds one DER certificate (tests, or CAs that do not come from files).
    pub fn add_der(&mut self, source_name: &str, cert: CertificateDer<'static>) {
        Arc::make_mut(&mut self.certs).push((source_name.to_string(), cert));
        self.verifier = Arc::default();
    }

    /// How many extra certificates there are.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// True when there is no extra certificate.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

/// The platform's roots, read once per process: reading them touches many files, and snapshots are
/// rebuilt on every rotation. Unreadable or unparsable system certificates are skipped.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if !found.errors.is_empty() {
            tracing::debug!(
                errors = found.errors.len(),
                "some system root certificates could not be loaded"
            );
        }
        found.certs
    })
}

/// The crypto provider every upstream config uses (aws-lc-rs), built once per process.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// The verifier for `extra` plus the system roots: built once per root set, then shared.
fn verifier(extra: &ExtraRoots) -> Result<Arc<WebPkiServerVerifier>, UpstreamTlsError> {
    if let Some(built) = extra.verifier.get() {
        return Ok(Arc::clone(built));
    }
    let mut roots = RootCertStore::empty();
    let (_added, _skipped) = roots.add_parsable_certificates(system_roots().iter().cloned());
    for (index, (source_name, cert)) in extra.certs.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|e| UpstreamTlsError::BadCaCert {
                source_name: source_name.clone(),
                index,
                reason: e.to_string(),
            })?;
    }
    if roots.is_empty() {
        return Err(UpstreamTlsError::NoRoots);
    }
    let built = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build()?;
    // Two first uses racing build twice; both results are equal and the first one stored wins.
    Ok(Arc::clone(extra.verifier.get_or_init(|| built)))
}

/// Builds the client config that presents `binding` (no client certificate when `None`).
pub fn client_config(
    binding: Option<&BindingCert>,
    extra: &ExtraRoots,
) -> Result<Arc<ClientConfig>, UpstreamTlsError> {
    build_config(verifier(extra)?, binding.map(BindingCert::certified_key))
}

/// The configs [`shared_client_config`] handed out, by the addresses of their verifier and
/// certified key (0: no client certificate). Each config holds both, so while its entry upgrades
/// those addresses are the very objects it was built from; a dead entry is never upgraded, and is
/// dropped on the next insert.
type SharedConfigs = HashMap<(usize, usize), Weak<ClientConfig>>;

/// Shared configs. A `Mutex`: taken only when a route's snapshot is built (a token acquired or
/// rotated), never per request.
static SHARED: LazyLock<Mutex<SharedConfigs>> = LazyLock::new(Mutex::default);

/// Like [`client_config`], but the routes that present the same certified key (the same
/// `BindingCert`, not a copy) with the same root set share one config and its session cache,
/// instead of one config each (1,000 routes of one identity: benches/README.md, memory). Sharing is
/// safe because the session cache then only ever holds sessions made with that one certificate.
pub fn shared_client_config(
    binding: Option<&BindingCert>,
    extra: &ExtraRoots,
) -> Result<Arc<ClientConfig>, UpstreamTlsError> {
    let verifier = verifier(extra)?;
    let key = binding.map(BindingCert::certified_key);
    let id = (
        Arc::as_ptr(&verifier) as usize,
        key.as_ref().map_or(0, |k| Arc::as_ptr(k) as usize),
    );
    let mut shared = lock_unpoisoned(&SHARED);
    if let Some(config) = shared.get(&id).and_then(Weak::upgrade) {
        return Ok(config);
    }
    shared.retain(|_, config| config.strong_count() > 0);
    let config = build_config(verifier, key)?;
    shared.insert(id, Arc::downgrade(&config));
    Ok(config)
}

fn build_config(
    verifier: Arc<WebPkiServerVerifier>,
    key: Option<Arc<CertifiedKey>>,
) -> Result<Arc<ClientConfig>, UpstreamTlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_webpki_verifier(verifier);
    let mut config = match key {
        Some(key) => builder.with_client_cert_resolver(Arc::new(AlwaysPresent(key))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    config.resumption = rustls::client::Resumption::in_memory_sessions(SESSION_CACHE_HOSTS);
    Ok(Arc::new(config))
}

/// Presents the one binding certificate whenever the server asks, whatever CA hints it sends: the
/// upstream decides whether it trusts it, and a PoP token is useless without it.
#[derive(Debug)]
struct AlwaysPresent(Arc<CertifiedKey>);

impl ResolvesClientCert for AlwaysPresent {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        // Only offer the certificate when its key can sign with a scheme the server accepts;
        // otherwise rustls would fail the handshake on our side with a less clear error.
        self.0.key.choose_scheme(sigschemes)?;
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_certificates_and_an_addition_stays_with_its_set() {
        let mut extra = ExtraRoots::default();
        extra.add_der("test", CertificateDer::from(vec![1u8, 2, 3]));
        let mut copy = extra.clone();
        assert!(
            Arc::ptr_eq(&extra.certs, &copy.certs),
            "a clone copied the certificates"
        );
        copy.add_der("only-in-the-copy", CertificateDer::from(vec![4u8, 5, 6]));
        assert_eq!((extra.len(), copy.len()), (1, 2));
    }

    #[test]
    fn missing_and_empty_ca_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = ExtraRoots::default().add_pem_file(&missing).unwrap_err();
        assert!(err.to_string().contains("nope.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "just some text\n").unwrap();
        let err = ExtraRoots::default().add_pem_file(&empty).unwrap_err();
        assert!(matches!(err, UpstreamTlsError::EmptyCaFile { .. }), "{err}");
        assert!(err.to_string().contains("empty.pem"), "{err}");

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = ExtraRoots::default().add_pem_file(&broken).unwrap_err();
        assert!(err.to_string().contains("broken.pem"), "{err}");
    }

    fn test_ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
    }

    #[test]
    fn configs_from_one_root_set_share_one_verifier() {
        let ca = test_ca();
        let mut extra = ExtraRoots::default();
        extra.add_der("test", ca.der().clone());
        let shared = extra.clone();
        client_config(None, &extra).unwrap();
        client_config(None, &shared).unwrap();
        let first = Arc::clone(extra.verifier.get().expect("built on first use"));
        assert!(Arc::ptr_eq(&first, shared.verifier.get().unwrap()));
        // Changing the set drops the built verifier: the next config sees the new anchors.
        extra.add_der("test-2", ca.der().clone());
        assert!(extra.verifier.get().is_none());
        client_config(None, &extra).unwrap();
        assert!(!Arc::ptr_eq(&first, extra.verifier.get().unwrap()));
    }

    #[test]
    fn routes_of_one_certificate_share_a_config_and_other_certificates_do_not() {
        let ca = test_ca();
        let mut extra = ExtraRoots::default();
        extra.add_der("test-ca", ca.der().clone());
        let binding = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
            let cert = params.self_signed(&key).unwrap();
            BindingCert::from_der(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap()
        };
        let a = binding("a.test");
        let b = binding("b.test");
        let first = shared_client_config(Some(&a), &extra).unwrap();
        let again = shared_client_config(Some(&a.clone()), &extra).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let other = shared_client_config(Some(&b), &extra).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        let none = shared_client_config(None, &extra).unwrap();
        assert!(!Arc::ptr_eq(&first, &none));
        assert!(!none.client_auth_cert_resolver.has_certs());
        // Another root set never gets this set's config.
        let mut roots = extra.clone();
        roots.add_der("test-ca-2", test_ca().der().clone());
        let rooted = shared_client_config(Some(&a), &roots).unwrap();
        assert!(!Arc::ptr_eq(&first, &rooted));
        // Once every route has dropped it, the next build is a new config.
        let weak = Arc::downgrade(&first);
        drop((first, again));
        assert!(weak.upgrade().is_none());
        assert!(shared_client_config(Some(&a), &extra).is_ok());
    }

    #[test]
    fn garbage_der_is_rejected_as_a_trust_anchor() {
        let mut extra = ExtraRoots::default();
        extra.add_der("test", CertificateDer::from(vec![1u8, 2, 3]));
        let err = client_config(None, &extra).unwrap_err();
        assert!(err.to_string().contains("from test"), "{err}");
    }

    #[test]
    fn config_offers_h2_then_http11() {
        let ca = test_ca();
        let mut extra = ExtraRoots::default();
        extra.add_der("test-ca", ca.der().clone());
        let config = client_config(None, &extra).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(!config.client_auth_cert_resolver.has_certs());
    }
}
