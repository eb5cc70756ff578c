//! The optional key-attestation hook of an IMDSv2 mint (protocol.md §3): an external command
//! that prints an attestation token, bounded in time and output, its output zeroized on drop.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use zeroize::Zeroizing;

/// seconds, and a hung command must not hold the identity's IMDS turn forever.
pub(crate) const ATTESTATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest attestation output read: MAA tokens are a few KiB; more is not a token.
pub(crate) const MAX_ATTESTATION_BYTES: usize = 64 * 1024;

/// Runs the attestation command and returns what it printed (trimmed), zeroized on drop.
pub(crate) async fn run_attestation(argv: &[String]) -> Result<Zeroizing<String>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
