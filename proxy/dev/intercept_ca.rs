//! `popgate dev` intercepts `https://` too: the probe listener gets a CA generated for this run
//! (in a private temporary directory, removed when the run ends) unless the config gives it one,
//! so the printed `curl --cacert … -x … https://…` examples work as they are.

use std::path::PathBuf;
use std::sync::Arc;

use crate::certs::intercept_ca::{self, InterceptCa};
use crate::config::model::{Config, Intercept};

/// The generated CA's common name.
const DEV_CA_NAME: &str = "popgate dev interception CA";

/// The CA the examples trust; removes a generated one's directory when dropped.
#[derive(Debug)]
pub(crate) struct DevCa {
    /// The CA certificate's file.
    pub cert: PathBuf,
    generated: Option<PathBuf>,
}

impl Drop for DevCa {
    fn drop(&mut self) {
        if let Some(dir) = &self.generated {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Makes listener `index` intercept, with a CA generated for this run unless it has one.
pub(crate) fn ensure(config: &mut Config, index: usize) -> Result<DevCa, String> {
    let Some(listener) = config.listeners.get_mut(index) else {
        return Err(format!("no listener #{index}"));
    };
    if let Some(intercept) = &listener.intercept {
        return Ok(DevCa {
            cert: intercept.ca_cert_file.clone(),
            generated: None,
        });
    }
    let dir = private_dir()?;
    let ca = DevCa {
        cert: dir.join("ca.pem"),
        generated: Some(dir.clone()),
    };
    let key = dir.join("ca.key");
    let (cert_pem, key_pem) = intercept_ca::generate(DEV_CA_NAME).map_err(|e| e.to_string())?;
    std::fs::write(&ca.cert, cert_pem).map_err(|e| e.to_string())?;
    write_private(&key, key_pem.as_bytes())?;
    let loaded = InterceptCa::load(&ca.cert, &key).map_err(|e| e.to_string())?;
    listener.intercept = Some(Intercept {
        ca: Arc::new(loaded),
        ca_cert_file: ca.cert.clone(),
    });
    Ok(ca)
}

/// Writes `bytes` to a new file readable by this user only (0600 from the start, as every key).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

/// A new directory only this user can enter (so the CA key inside stays private).
fn private_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt as _;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("popgate-dev-ca-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    Ok(dir)
}
