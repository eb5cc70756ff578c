//! The optional key-attestation hook of an IMDSv2 mint (protocol.md §3): an external command
//! that prints an attestation token, bounded in time and output, its output zeroized on drop.
//!
//! The command is given what MSAL.NET gives its attestation provider (`AttestationTokenInput`:
//! the attestation endpoint from `getplatformmetadata`, the identity's client id, and the key to
//! attest), in environment variables. popgate's key is a software key with no platform handle,
//! so the key is given as its public key (SubjectPublicKeyInfo DER, standard base64): the key
//! the CSR carries and the issued certificate binds.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use zeroize::Zeroizing;

/// seconds, and a hung command must not hold the identity's IMDS turn forever.
pub(crate) const ATTESTATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest attestation output read: MAA tokens are a few KiB; more is not a token.
pub(crate) const MAX_ATTESTATION_BYTES: usize = 64 * 1024;

/// Environment variable: `attestationEndpoint` of `getplatformmetadata` (the MAA endpoint).
pub(crate) const ENV_ENDPOINT: &str = "POPGATE_ATTESTATION_ENDPOINT";
/// Environment variable: the identity's client id (`clientId` of `getplatformmetadata`).
pub(crate) const ENV_CLIENT_ID: &str = "POPGATE_ATTESTATION_CLIENT_ID";
/// Environment variable: the identity's tenant id (`tenantId` of `getplatformmetadata`).
pub(crate) const ENV_TENANT_ID: &str = "POPGATE_ATTESTATION_TENANT_ID";
/// Environment variable: the binding key to attest, as standard base64 of its
/// SubjectPublicKeyInfo DER.
pub(crate) const ENV_PUBLIC_KEY: &str = "POPGATE_ATTESTATION_PUBLIC_KEY";

/// What the attestation command attests (MSAL's `AttestationTokenInput`). Nothing secret.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttestationInput<'a> {
    /// `attestationEndpoint` from `getplatformmetadata`.
    pub endpoint: &'a str,
    /// The identity's client id.
    pub client_id: &'a str,
    /// The identity's tenant id.
    pub tenant_id: &'a str,
    /// The binding key's SubjectPublicKeyInfo DER.
    pub public_key_spki: &'a [u8],
}

/// Runs the attestation command for `input` and returns what it printed (trimmed), zeroized on
/// drop.
pub(crate) async fn run_attestation(
    argv: &[String],
    input: &AttestationInput<'_>,
) -> Result<Zeroizing<String>, String> {
    use base64::Engine as _;
    let (program, args) = argv.split_first().ok_or("is empty")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env(ENV_ENDPOINT, input.endpoint)
        .env(ENV_CLIENT_ID, input.client_id)
        .env(ENV_TENANT_ID, input.tenant_id)
        .env(
            ENV_PUBLIC_KEY,
            base64::engine::general_purpose::STANDARD.encode(input.public_key_spki),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    const INPUT: AttestationInput<'static> = AttestationInput {
        endpoint: "https://maa.example/attest",
        client_id: "c-1",
        tenant_id: "t-1",
        public_key_spki: b"spki",
    };

    fn run(
        argv: &[String],
    ) -> impl std::future::Future<Output = Result<Zeroizing<String>, String>> + '_ {
        run_attestation(argv, &INPUT)
    }

    #[tokio::test]
    async fn the_command_gets_the_endpoint_client_id_and_public_key() {
        let script = format!(
            "printf '%s|%s|%s|%s' \"${ENV_ENDPOINT}\" \"${ENV_CLIENT_ID}\" \"${ENV_TENANT_ID}\" \"${ENV_PUBLIC_KEY}\""
        );
        let got = run(&["/bin/sh".into(), "-c".into(), script]).await.unwrap();
        assert_eq!(got.as_str(), "https://maa.example/attest|c-1|t-1|c3BraQ==");
    }

    #[tokio::test]
    async fn the_attestation_hook_is_bounded_and_reports_failures() {
        let ok = run(&["/bin/sh".into(), "-c".into(), "echo '  maa-token  '".into()])
            .await
            .unwrap();
        assert_eq!(ok.as_str(), "maa-token");
        let err = run(&[]).await.unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let err = run(&["/nonexistent/attest".into()]).await.unwrap_err();
        assert!(err.contains("cannot start"), "{err}");
        let err = run(&["/bin/sh".into(), "-c".into(), "true".into()])
            .await
            .unwrap_err();
        assert!(err.contains("printed nothing"), "{err}");
        // Far more than a pipe buffer: the hook must not wait for the command to finish writing.
        let flood = format!("head -c {} /dev/zero", 4 * MAX_ATTESTATION_BYTES);
        let err = run(&["/bin/sh".into(), "-c".into(), flood])
            .await
            .unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }
}
