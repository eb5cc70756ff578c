//! `popgate ca init --out DIR`: writes a new interception CA (certificate and 0600 key), never
//! over existing files, and prints how to make apps trust it.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use popgate::certs::intercept_ca;

/// The CA certificate's file name in `--out`.
pub(crate) const CA_CERT_FILE: &str = "popgate-ca.pem";
/// The CA key's file name in `--out`.
pub(crate) const CA_KEY_FILE: &str = "popgate-ca.key";
/// The CA's common name.
const CA_COMMON_NAME: &str = "popgate interception CA";

/// Writes the CA into `out`; exit 1 (with the reason on stderr) if it cannot.
pub(crate) fn init(out: &Path) -> ExitCode {
    match write_ca(out) {
        Ok(()) => {
            print_trust_steps(&out.join(CA_CERT_FILE), &out.join(CA_KEY_FILE));
            ExitCode::SUCCESS
        }
        Err(reason) => {
            let _ = writeln!(std::io::stderr(), "popgate ca init: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Writes a new CA as `popgate-ca.pem` and `popgate-ca.key` in `dir`.
pub(crate) fn write_ca(dir: &Path) -> Result<(), String> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(format!(
                "`{}` exists; refusing to overwrite it (move it away, or choose another --out)",
                path.display()
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let (cert, key) = intercept_ca::generate(CA_COMMON_NAME).map_err(|e| e.to_string())?;
    // The key first, created 0600 and never over an existing file (create_new), so it is never
    // readable by others, not even for a moment.
    write_new(&key_path, key.as_bytes(), 0o600)?;
    write_new(&cert_path, cert.as_bytes(), 0o644)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create `{}`: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

fn print_trust_steps(cert: &Path, key: &Path) {
    let (cert, key) = (cert.display(), key.display());
    let text = format!(
        "\
wrote {cert} (CA certificate) and {key} (its key, mode 0600: keep it that way)

Use it on a listener in routes.yaml:
  listeners:
    - address: 127.0.0.1:3128
      intercept: {{ ca_cert_file: {cert}, ca_key_file: {key} }}

Then make the apps on this host trust the CA (only the apps that go through popgate need it):
  Debian/Ubuntu:  sudo cp {cert} /usr/local/share/ca-certificates/popgate-ca.crt && sudo update-ca-certificates
  RHEL/Fedora:    sudo cp {cert} /etc/pki/ca-trust/source/anchors/popgate-ca.pem && sudo update-ca-trust
  Java:           keytool -importcert -noprompt -alias popgate-ca -file {cert} -cacerts -storepass changeit
  .NET (Linux):   trusts the system store: use the Debian/RHEL step above
  Python:         SSL_CERT_FILE={cert} (ssl, urllib), REQUESTS_CA_BUNDLE={cert} (requests)
  curl:           curl --cacert {cert} -x http://127.0.0.1:3128 https://graph.microsoft.com/v1.0/me

and point them at popgate: HTTPS_PROXY=http://127.0.0.1:3128
"
    );
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
