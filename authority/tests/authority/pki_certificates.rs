//! The PKI: CA generated or loaded (with clear errors), server certificates' SANs, app
//! credentials, IMDS binding certificates, and the resource listener's mandatory client auth.

use std::sync::Arc;
use std::time::Duration;

use crate::kit::token::*;
use popgate_authority::pki::{CaSource, PkiError, TOKEN_HOSTS};
use popgate_authority::{Authority, AuthorityConfig, Pki};
use rustls::pki_types::ServerName;
use x509_parser::prelude::*;

#[test]
fn vector_thumbprint_is_sha256_of_the_der() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/vectors/imdsv2-issued-cert.der");
    let der = std::fs::read(path).unwrap();
    assert_eq!(
        popgate_authority::thumbprint::x5t_s256(&der),
        "MLZLzUFU2BBe37pdl3CLkghmBpr6rkHDsnsy1bXCIsI"
    );
    // The vector's base64 `certificate` is the same DER.
    use base64::Engine as _;
    let issued = vector("imdsv2-issuecredential-200.json");
    let b64 = base64::engine::general_purpose::STANDARD
        .decode(issued["certificate"].as_str().unwrap())
        .unwrap();
    assert_eq!(b64, der);
}

fn names(der: &[u8]) -> Vec<String> {
    let (_, cert) = parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap()).to_string(),
                _ => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap()).to_string(),
            },
            other => format!("{other:?}"),
        })
        .collect()
}

/// Completes a TLS handshake against `config` and returns the server's leaf certificate.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    roots: rustls::RootCertStore,
    sni: &str,
    client_cert: Option<&ClientCert>,
) -> Result<Vec<u8>, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor
            .accept(tcp)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client_cert {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        // TLS 1.3: the server's verdict on the client certificate is the server task's result.
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        Ok::<_, String>(leaf)
    })
    .await
    .map_err(|_| "timed out".to_string())?;
    let served = tokio::time::timeout(REQUEST_TIMEOUT, server_task)
        .await
        .unwrap()
        .unwrap();
    served?;
    result
}

#[tokio::test]
async fn token_certificate_covers_every_token_host_and_loopback() {
    let pki = Pki::new(&CaSource::Generate, &["graph.microsoft.com".to_string()]).unwrap();
    let leaf = handshake(
        pki.token_server_config().unwrap(),
        pki.root_store().unwrap(),
        "westus3.mtlsauth.microsoft.com",
        None,
    )
    .await
    .unwrap();
    let sans = names(&leaf);
    for host in TOKEN_HOSTS.iter().chain(&["localhost", "127.0.0.1", "::1"]) {
        assert!(
            sans.iter().any(|s| s == host),
            "{host} missing from {sans:?}"
        );
    }
    assert!(!sans.iter().any(|s| s == "graph.microsoft.com"));
}

#[tokio::test]
async fn resource_listener_requires_a_client_certificate_and_covers_resource_hosts() {
    let hosts = vec![
        "graph.microsoft.com".to_string(),
        "*.vault.azure.net".to_string(),
    ];
    let pki = Pki::new(&CaSource::Generate, &hosts).unwrap();
    let app = pki.issue_app_credential("caller").unwrap();
    let cert = ClientCert::from_credential(&app);
    let leaf = handshake(
        pki.resource_server_config().unwrap(),
        pki.root_store().unwrap(),
        "kv1.vault.azure.net",
        Some(&cert),
    )
    .await
    .unwrap();
    let sans = names(&leaf);
    assert!(
        sans.contains(&"graph.microsoft.com".to_string())
            && sans.contains(&"*.vault.azure.net".to_string())
    );
    let refused = handshake(
        pki.resource_server_config().unwrap(),
        pki.root_store().unwrap(),
        "graph.microsoft.com",
        None,
    )
    .await;
    let refused = refused.unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
}

#[test]
fn app_credentials_are_rsa_2048_pkcs8_and_not_debug_printed() {
    let pki = Pki::new(&CaSource::Generate, &[]).unwrap();
    let credential = pki.issue_app_credential("my-app").unwrap();
    assert!(
        credential
            .key_pem
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    assert!(
        credential
            .cert_pem
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let (_, cert) = parse_x509_certificate(credential.cert_der.as_ref()).unwrap();
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "my-app"
    );
    match cert.public_key().parsed().unwrap() {
        x509_parser::public_key::PublicKey::RSA(rsa) => assert_eq!(rsa.key_size(), 2048),
        other => panic!("not RSA: {other:?}"),
    }
    assert_eq!(
        credential.x5t_s256,
        popgate_authority::thumbprint::x5t_s256(credential.cert_der.as_ref())
    );
    let debug = format!("{credential:?}");
    assert!(!debug.contains("PRIVATE KEY") && debug.contains(&credential.x5t_s256));
    credential.key_der().unwrap();
}

#[test]
fn binding_certificate_subject_issuer_and_key() {
    use rcgen::PublicKeyData as _;
    let pki = Pki::new(&CaSource::Generate, &[]).unwrap();
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let spki = key.subject_public_key_info();
    let der = pki
        .issue_binding_cert(
            &spki,
            TENANT,
            "6325cd32-9911-41f3-819c-416cdf9104e7",
            Duration::from_secs(7 * 24 * 3600),
        )
        .unwrap();
    let (_, cert) = parse_x509_certificate(&der).unwrap();
    // DC first, then CN.
    let rdns: Vec<String> = cert
        .subject()
        .iter_attributes()
        .map(|a| format!("{}={}", a.attr_type(), a.as_str().unwrap()))
        .collect();
    assert_eq!(
        rdns,
        vec![
            format!("0.9.2342.19200300.100.1.25={TENANT}"),
            "2.5.4.3=6325cd32-9911-41f3-819c-416cdf9104e7".to_string()
        ]
    );
    assert_eq!(cert.public_key().raw, &spki[..]);
    let (_, imds_ca) = parse_x509_certificate(pki.imds_ca_der().as_ref()).unwrap();
    assert_eq!(cert.issuer(), imds_ca.subject());
    let days = (cert.validity().not_after.timestamp() - unix_now() as i64) / 86_400;
    assert!((6..=7).contains(&days), "{days}");
    assert!(pki.issued_by_imds_ca(&der));
    // The IMDS CA itself chains to the root.
    let (_, root) = parse_x509_certificate(pki.ca_der().as_ref()).unwrap();
    assert_eq!(imds_ca.issuer(), root.subject());
    assert!(popgate_authority::cert_check::signed_by(
        pki.imds_ca_der().as_ref(),
        root.public_key().raw.to_vec()
    ));
    // Not a public key at all.
    let err = pki
        .issue_binding_cert(b"not a key", TENANT, "c", Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(err, PkiError::BadPublicKey { .. }), "{err}");
}

fn write_ca(
    dir: &std::path::Path,
    is_ca: bool,
) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test CA");
    if is_ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
    }
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path, cert.pem())
}

#[tokio::test]
async fn a_ca_loaded_from_files_signs_the_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem, pem) = write_ca(dir.path(), true);
    let authority = Authority::start(AuthorityConfig {
        ca: CaSource::Files { cert_pem, key_pem },
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(authority.ca_pem().trim(), pem.trim());
    // A real token request, trusting the loaded CA.
    let (app, credential) = authority.new_certificate_app("loaded").unwrap();
    let cert = ClientCert::from_credential(&credential);
    post_token(
        &authority,
        MTLS,
        Some(&cert),
        &pop_form(&app.client_id, GRAPH_SCOPE),
    )
    .await
    .token();
    let written = dir.path().join("written-ca.pem");
    authority.write_ca(&written).unwrap();
    assert_eq!(
        std::fs::read_to_string(written).unwrap(),
        authority.ca_pem()
    );
}

#[test]
fn bad_ca_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path, _) = write_ca(dir.path(), true);
    let missing = dir.path().join("nope.pem");
    let load = |cert: &std::path::Path, key: &std::path::Path| {
        Pki::new(
            &CaSource::Files {
                cert_pem: cert.to_path_buf(),
                key_pem: key.to_path_buf(),
            },
            &[],
        )
        .unwrap_err()
    };

    let err = load(&missing, &key_path);
    assert!(
        matches!(
            err,
            PkiError::ReadCa {
                what: "certificate",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("nope.pem"));
    let err = load(&cert_path, &missing);
    assert!(matches!(err, PkiError::ReadCa { what: "key", .. }), "{err}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let err = load(&garbage, &key_path);
    assert!(matches!(err, PkiError::BadCaCert { .. }), "{err}");
    let err = load(&cert_path, &garbage);
    assert!(matches!(err, PkiError::BadCaKey { .. }), "{err}");

    // A key that is not the certificate's.
    let other_dir = tempfile::tempdir().unwrap();
    let (_, other_key, _) = write_ca(other_dir.path(), true);
    let err = load(&cert_path, &other_key);
    assert!(err.to_string().contains("does not match"), "{err}");

    // A certificate that is not a CA.
    let leaf_dir = tempfile::tempdir().unwrap();
    let (leaf_cert, leaf_key, _) = write_ca(leaf_dir.path(), false);
    let err = load(&leaf_cert, &leaf_key);
    assert!(err.to_string().contains("not a CA"), "{err}");
}
