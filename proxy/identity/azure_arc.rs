//! Azure Arc-enabled servers (MSAL.NET's `AzureArcManagedIdentitySource`):
//! `GET {IDENTITY_ENDPOINT}?api-version=2020-06-01&resource=…` with `Metadata: true`. The agent
//! answers `401` with `WWW-Authenticate: Basic realm=<file>`; the file's content, read only when
//! it is `<name>.key` directly in the agent's token directory and at most 4096 bytes, goes back
//! as `Authorization: Basic <content>`. No user-assigned identities.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::identity::imds_endpoint::query;
use crate::identity::imds_v1::strip_default_suffix;
use crate::identity::mi_source::{
    IDENTITY_ENDPOINT_ENV, MiSourceError, MiSourceKind, endpoint_url,
};
use crate::identity::outbound_request::{
    Assemble, CredentialRequest, METADATA, RequestError, parse_uri, require,
};

/// The Arc identity API version MSAL speaks.
pub const ARC_API_VERSION: &str = "2020-06-01";
/// The agent's endpoint when it was found on disk but `IDENTITY_ENDPOINT` is unset (MSAL's).
pub const ARC_DEFAULT_ENDPOINT: &str = "http://127.0.0.1:40342/metadata/identity/oauth2/token";
/// Largest secret file read (MSAL's 4096 bytes: the agent writes a short random key).
pub const ARC_SECRET_FILE_MAX_BYTES: u64 = 4096;
/// Where the Arc agent writes its challenge files on Linux (MSAL's `IsValidPath`).
pub const LINUX_ARC_TOKEN_DIR: &str = "/var/opt/azcmagent/tokens/";
/// The same on Windows, under `%ProgramData%`.
pub const WINDOWS_ARC_TOKEN_SUBDIR: &str = "AzureConnectedMachineAgent\\Tokens\\";
/// MSAL's `MsalError.ManagedIdentityRequestFailed`.
pub const MI_REQUEST_FAILED: &str = "managed_identity_request_failed";
/// MSAL's `ManagedIdentityNoChallengeError`.
pub const NO_CHALLENGE: &str = "[Managed Identity] Did not receive expected WWW-Authenticate header in the response from Azure Arc Managed Identity Endpoint.";
/// MSAL's `ManagedIdentityInvalidChallenge`.
pub const INVALID_CHALLENGE: &str = "[Managed Identity] The WWW-Authenticate header in the response from Azure Arc Managed Identity Endpoint did not match the expected format.";
/// MSAL's `ManagedIdentityInvalidFile`.
pub const INVALID_FILE: &str =
    "[Managed Identity] The file on the file path in the WWW-Authenticate header is not secure.";
/// MSAL's `ManagedIdentityPlatformNotSupported`.
pub const PLATFORM_NOT_SUPPORTED: &str = "[Managed Identity] The platform is not supported by Azure Arc. Azure Arc only supports Windows and Linux.";

fn failed(message: &str) -> MiSourceError {
    MiSourceError {
        code: MI_REQUEST_FAILED,
        message: message.to_string(),
    }
}

/// The Arc agent's identity endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArcEndpoint {
    endpoint: String,
}

impl ArcEndpoint {
    /// `IDENTITY_ENDPOINT`, or MSAL's default when the agent was found on disk without it.
    pub fn new(identity_endpoint: Option<&str>) -> Result<Self, MiSourceError> {
        let url = identity_endpoint
            .filter(|v| !v.is_empty())
            .unwrap_or(ARC_DEFAULT_ENDPOINT);
        Ok(Self {
            endpoint: endpoint_url(IDENTITY_ENDPOINT_ENV, url, MiSourceKind::AzureArc)?,
        })
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.endpoint
    }
}

/// The Basic secret read from the challenge file: zeroized, never shown.
pub struct ArcSecret(Zeroizing<String>);

impl std::fmt::Debug for ArcSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArcSecret(<redacted>)")
    }
}

impl ArcSecret {
    /// The file's bytes, which must be text usable in a header (the agent writes ASCII).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, MiSourceError> {
        let text = std::str::from_utf8(bytes).map_err(|_| failed(INVALID_FILE))?;
        if text.is_empty() || HeaderValue::from_str(&format!("Basic {text}")).is_err() {
            return Err(failed(INVALID_FILE));
        }
        Ok(Self(Zeroizing::new(text.to_string())))
    }
}

/// The token request for `resource`; the retry after the challenge carries `secret`.
pub fn token_request(
    endpoint: &ArcEndpoint,
    resource: &str,
    secret: Option<&ArcSecret>,
) -> Result<CredentialRequest, RequestError> {
    const WHAT: &str = "Azure Arc token request";
    let resource = strip_default_suffix(resource);
    require(WHAT, "resource", resource)?;
    let pairs = [("api-version", ARC_API_VERSION), ("resource", resource)];
    let uri = parse_uri(
        WHAT,
        IDENTITY_ENDPOINT_ENV,
        &format!("{}?{}", endpoint.endpoint, query(&pairs)),
    )?;
    let mut headers = vec![(METADATA, HeaderValue::from_static("true"))];
    if let Some(secret) = secret {
        let basic = Zeroizing::new(format!("Basic {}", secret.0.as_str()));
        let mut value = HeaderValue::from_str(&basic)
            .map_err(|_| RequestError::bad(WHAT, "secret file", "is not a valid header value"))?;
        value.set_sensitive(true);
        headers.push((AUTHORIZATION, value));
    }
    Assemble {
        method: Method::GET,
        uri,
        headers,
        accept_json: false,
        content_type: None,
        body: Bytes::new(),
    }
    .finish(WHAT, Uuid::new_v4())
}

/// The file a `401`'s `WWW-Authenticate: Basic realm=<path>` names (MSAL splits the value on
/// `=` and wants exactly two parts).
pub fn challenge_path(headers: &HeaderMap) -> Result<String, MiSourceError> {
    let challenge = headers
        .get(WWW_AUTHENTICATE)
        .ok_or_else(|| failed(NO_CHALLENGE))?
        .to_str()
        .map_err(|_| failed(INVALID_CHALLENGE))?;
    let parts: Vec<&str> = challenge.split('=').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [_, path] => Ok((*path).to_string()),
        _ => Err(failed(INVALID_CHALLENGE)),
    }
}

/// The directory challenge files must be in. Production always uses the agent's documented one
/// ([`ArcTokenDir::platform`]); only `popgate dev` and tests (cargo feature `dev`, Rust API
/// only: no flag, variable or config key reaches it) can name another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArcTokenDir {
    /// Ends with the path separator; `None`: a platform Arc does not run on.
    dir: Option<String>,
}

impl ArcTokenDir {
    /// `/var/opt/azcmagent/tokens/` on Linux, `%ProgramData%\AzureConnectedMachineAgent\Tokens\`
    /// on Windows; none elsewhere.
    pub fn platform() -> Self {
        let dir = if cfg!(target_os = "linux") {
            Some(LINUX_ARC_TOKEN_DIR.to_string())
        } else if cfg!(windows) {
            std::env::var("ProgramData")
                .ok()
                .map(|p| format!("{}\\{WINDOWS_ARC_TOKEN_SUBDIR}", p.trim_end_matches('\\')))
        } else {
            None
        };
        Self { dir }
    }

    /// Another directory, for `popgate dev` and tests only.
    #[cfg(feature = "dev")]
    pub fn for_dev(dir: &Path) -> Self {
        let mut dir = dir.to_string_lossy().into_owned();
        if !dir.ends_with(std::path::MAIN_SEPARATOR) {
            dir.push(std::path::MAIN_SEPARATOR);
        }
        Self { dir: Some(dir) }
    }

    /// The directory, when there is one.
    pub fn dir(&self) -> Option<&str> {
        self.dir.as_deref()
    }

    /// MSAL's `IsValidPath`: `path` must be exactly `<dir><file name without extension>.key`, so
    /// no other directory, no `..`, no subdirectory, no other extension.
    pub fn check(&self, path: &str) -> Result<PathBuf, MiSourceError> {
        let dir = self
            .dir
            .as_deref()
            .ok_or_else(|| failed(PLATFORM_NOT_SUPPORTED))?;
        let stem = Path::new(path)
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| failed(INVALID_FILE))?;
        let expected = format!("{dir}{stem}.key");
        if path != expected {
            return Err(failed(INVALID_FILE));
        }
        Ok(PathBuf::from(expected))
    }
}

/// Turns a failed read of the challenge file into MSAL's error (missing, unreadable or larger
/// than [`ARC_SECRET_FILE_MAX_BYTES`] are all "not secure").
pub fn unreadable_file() -> MiSourceError {
    failed(INVALID_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_and_retry_shapes() {
        let ep = ArcEndpoint::new(None).unwrap();
        let first = token_request(&ep, "https://management.azure.com/.default", None).unwrap();
        let r = first.request();
        assert_eq!(
            r.uri().to_string(),
            "http://127.0.0.1:40342/metadata/identity/oauth2/token?api-version=2020-06-01&resource=https%3A%2F%2Fmanagement.azure.com"
        );
        assert_eq!(r.headers()["metadata"], "true");
        assert_eq!(r.headers().len(), 1);
        let secret = ArcSecret::from_file_bytes(b"k3y").unwrap();
        let second = token_request(&ep, "https://management.azure.com", Some(&secret)).unwrap();
        assert_eq!(second.request().headers()["authorization"], "Basic k3y");
        assert!(second.request().headers()["authorization"].is_sensitive());
        assert!(!format!("{second:?} {secret:?}").contains("k3y"));
    }

    #[test]
    fn challenges_are_parsed_as_msal_does() {
        let mut h = HeaderMap::new();
        assert_eq!(challenge_path(&h).unwrap_err().message, NO_CHALLENGE);
        h.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=/var/opt/azcmagent/tokens/a.key"),
        );
        assert_eq!(
            challenge_path(&h).unwrap(),
            "/var/opt/azcmagent/tokens/a.key"
        );
        h.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=/x=y"),
        );
        assert_eq!(challenge_path(&h).unwrap_err().message, INVALID_CHALLENGE);
        h.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        assert_eq!(challenge_path(&h).unwrap_err().message, INVALID_CHALLENGE);
    }

    #[test]
    fn only_key_files_directly_in_the_agent_directory() {
        let dir = ArcTokenDir {
            dir: Some(LINUX_ARC_TOKEN_DIR.into()),
        };
        assert_eq!(
            dir.check("/var/opt/azcmagent/tokens/abc.key").unwrap(),
            PathBuf::from("/var/opt/azcmagent/tokens/abc.key")
        );
        for bad in [
            "/etc/shadow",
            "/etc/abc.key",
            "/var/opt/azcmagent/tokens/abc.txt",
            "/var/opt/azcmagent/tokens/abc",
            "/var/opt/azcmagent/tokens/sub/abc.key",
            "/var/opt/azcmagent/tokens/../../../etc/abc.key",
            "/var/opt/azcmagent/tokens/.key",
            "var/opt/azcmagent/tokens/abc.key",
        ] {
            assert_eq!(dir.check(bad).unwrap_err().message, INVALID_FILE, "{bad}");
        }
        let none = ArcTokenDir { dir: None };
        assert_eq!(
            none.check("/var/opt/azcmagent/tokens/abc.key")
                .unwrap_err()
                .message,
            PLATFORM_NOT_SUPPORTED
        );
    }
}
