//! Reads and checks the credential files before pingora sees them. pingora's rustls connector
//! `unwrap`s/panics on a bad CA or key and silently drops client auth when the key file holds no
//! key, so every one of those cases is caught here first and reported as `error: ...`.

use std::path::Path;

use http::HeaderValue;
use pingora::tls::{self, ClientConfig, RootCertStore};

/// What the proxy needs at run time. The Authorization value is a secret: it is marked sensitive
/// and never printed (this struct has no Debug on purpose).
pub struct Creds {
    pub authorization: HeaderValue,
    /// UTF-8 paths, the form pingora's `ConnectorOptions` takes.
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// Loads and validates all four files. The error text names the flag and file, never contents.
pub fn load(
    ca: &Path,
    cert: &Path,
    key: &Path,
    authorization_file: &Path,
) -> Result<Creds, String> {
    let authorization = authorization(authorization_file)?;
    let (ca, cert, key) = (
        utf8(ca, "--ca")?,
        utf8(cert, "--cert")?,
        utf8(key, "--key")?,
    );
    for (path, flag) in [(&ca, "--ca"), (&cert, "--cert"), (&key, "--key")] {
        std::fs::metadata(path).map_err(|e| format!("cannot read {flag} {path}: {e}"))?;
    }

    // The same provider pingora installs; done now so the checks below build a real config.
    tls::install_default_crypto_provider();

    let mut roots = RootCertStore::empty();
    tls::load_ca_file_into_store(&ca, &mut roots)
        .map_err(|e| format!("--ca {ca}: not a PEM file of certificates: {e}"))?;
    if roots.is_empty() {
        return Err(format!("--ca {ca}: no certificate in it"));
    }
    let (chain, private_key) = tls::load_certs_and_key_files(&cert, &key)
        .map_err(|e| format!("--cert {cert} / --key {key}: unreadable PEM: {e}"))?
        .ok_or_else(|| {
            format!(
                "--cert {cert} needs at least one CERTIFICATE and --key {key} one PKCS#8, \
                 PKCS#1 (RSA) or SEC1 (EC) PRIVATE KEY block"
            )
        })?;
    // The very call pingora makes when it builds its connector (where a failure panics).
    ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private_key)
        .map_err(|e| format!("--cert {cert} / --key {key}: rejected by rustls: {e}"))?;

    Ok(Creds {
        authorization,
        ca,
        cert,
        key,
    })
}

/// The file's bytes with trailing CR/LF/whitespace trimmed, as one header value.
fn authorization(path: &Path) -> Result<HeaderValue, String> {
    let shown = path.display();
    let raw = std::fs::read(path)
        .map_err(|e| format!("cannot read --authorization-file {shown}: {e}"))?;
    let end = raw
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    if end == 0 {
        return Err(format!("--authorization-file {shown} is empty"));
    }
    // The message says what is wrong without echoing the (secret) bytes.
    let mut value = HeaderValue::from_bytes(&raw[..end]).map_err(|_| {
        format!("--authorization-file {shown}: not a valid header value (a control character or a line break inside it)")
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn utf8(path: &Path, flag: &str) -> Result<String, String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{flag} {}: path is not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_is_trimmed_and_checked() {
        let dir = std::env::temp_dir().join(format!("pbp-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a");
        std::fs::write(&f, "mtls_pop eyJ.x.y\r\n").unwrap();
        assert_eq!(authorization(&f).unwrap(), "mtls_pop eyJ.x.y");
        std::fs::write(&f, "\n").unwrap();
        assert!(authorization(&f).is_err());
        std::fs::write(&f, "a\nb").unwrap();
        assert!(authorization(&f).is_err());
        assert!(authorization(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
