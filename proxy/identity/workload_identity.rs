//! Kubernetes workload identity: the projected service-account token (the "federated token") is
//! the client assertion of an ordinary `jwt-bearer` client-credentials request to `login.*`.
//! The kubelet rotates the file, so it is read afresh for every acquisition, never cached.

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::certs::bounded_read::{BoundedReadError, read_bounded_async};
use crate::identity::outbound_request::{CredentialRequest, RequestError};
use crate::identity::token_request::{TokenEndpoint, jwt_bearer};

/// Environment variable (set by the workload identity webhook) naming the token file.
pub(crate) const FEDERATED_TOKEN_FILE_ENV: &str = "AZURE_FEDERATED_TOKEN_FILE";

/// Largest federated token file accepted. Projected service-account tokens are about 1–2 KiB;
/// a bigger file is a misconfigured path, and reading it whole would waste memory.
pub(crate) const MAX_FEDERATED_TOKEN_BYTES: usize = 16 * 1024;

/// The federated token read from the file. Zeroized on drop; `Debug` shows only its length.
pub(crate) struct FederatedToken(Zeroizing<String>);

impl FederatedToken {
    /// The token, for the request body only.
    pub(crate) fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for FederatedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FederatedToken(<redacted, {} bytes>)", self.0.len())
    }
}

/// Why the federated token file could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FederatedTokenError {
    /// Opening or reading failed.
    #[error("cannot read the federated token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file holds only whitespace.
    #[error("the federated token file {path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file is over [`MAX_FEDERATED_TOKEN_BYTES`].
    #[error("the federated token file {path} is larger than {MAX_FEDERATED_TOKEN_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The content cannot be a JWT.
    #[error(
        "the federated token file {path} is not a JWT (it holds non-UTF-8 bytes or inner whitespace)"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

/// Reads the token file now (surrounding whitespace trimmed).
pub(crate) async fn read_federated_token(
    path: &Path,
) -> Result<FederatedToken, FederatedTokenError> {
    // The limit is 16 KiB, so it always fits in a u64.
    let max = MAX_FEDERATED_TOKEN_BYTES as u64;
    let buf = read_bounded_async(path.to_path_buf(), max)
        .await
        .map_err(|e| match e {
            BoundedReadError::Io(source) => FederatedTokenError::Io {
                path: path.to_path_buf(),
                source,
            },
            BoundedReadError::TooLarge { .. } => FederatedTokenError::TooLarge {
                path: path.to_path_buf(),
            },
        })?;
    let text = std::str::from_utf8(&buf).map_err(|_| FederatedTokenError::Malformed {
        path: path.to_path_buf(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(FederatedTokenError::Empty {
            path: path.to_path_buf(),
        });
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(FederatedTokenError::Malformed {
            path: path.to_path_buf(),
        });
    }
    Ok(FederatedToken(Zeroizing::new(token.to_owned())))
}

/// The Bearer token request for `resource`, authenticated by the federated token.
pub(crate) fn token_request(
    endpoint: &TokenEndpoint,
    client_id: &str,
    resource: &str,
    federated_token: &FederatedToken,
) -> Result<CredentialRequest, RequestError> {
    jwt_bearer(
        "workload identity token request",
        endpoint,
        client_id,
        resource,
        federated_token.expose_secret(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::token_request::ASSERTION_TYPE_JWT_BEARER;

    #[tokio::test]
    async fn the_file_is_read_afresh_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "eyJ.first.sig\n").unwrap();
        let first = read_federated_token(&path).await.unwrap();
        assert_eq!(first.expose_secret(), "eyJ.first.sig");
        // The kubelet swaps the file; the next acquisition must see the new token.
        std::fs::write(&path, "eyJ.second.sig").unwrap();
        let second = read_federated_token(&path).await.unwrap();
        assert_eq!(second.expose_secret(), "eyJ.second.sig");
        assert!(!format!("{second:?}").contains("second"));

        let endpoint = TokenEndpoint::new("login.microsoftonline.com", "tid").unwrap();
        let req = token_request(&endpoint, "app", "https://graph.microsoft.com", &second).unwrap();
        let form: Vec<(String, String)> = form_urlencoded::parse(req.request().body())
            .into_owned()
            .collect();
        let expect: Vec<(String, String)> = [
            ("client_id", "app"),
            ("grant_type", "client_credentials"),
            ("scope", "https://graph.microsoft.com/.default"),
            ("client_info", "2"),
            ("client_assertion_type", ASSERTION_TYPE_JWT_BEARER),
            ("client_assertion", "eyJ.second.sig"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(form, expect);
    }

    #[tokio::test]
    async fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = read_federated_token(&missing)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read the federated token file") && err.contains("missing"),
            "{err}"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "  \n").unwrap();
        assert!(matches!(
            read_federated_token(&empty).await,
            Err(FederatedTokenError::Empty { .. })
        ));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_FEDERATED_TOKEN_BYTES + 1]).unwrap();
        assert!(matches!(
            read_federated_token(&big).await,
            Err(FederatedTokenError::TooLarge { .. })
        ));
        let spaced = dir.path().join("spaced");
        std::fs::write(&spaced, "a b").unwrap();
        assert!(matches!(
            read_federated_token(&spaced).await,
            Err(FederatedTokenError::Malformed { .. })
        ));
        let binary = dir.path().join("binary");
        std::fs::write(&binary, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            read_federated_token(&binary).await,
            Err(FederatedTokenError::Malformed { .. })
        ));
    }
}
