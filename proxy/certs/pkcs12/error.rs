//! Why a PKCS#12 file cannot be used: every error names the file, never the password or key.

use std::path::PathBuf;

use super::{MAX_PKCS12_FILE_BYTES, MAX_PKCS12_ITERATIONS};

/// Why a PKCS#12 file cannot be used. Displays as `PKCS#12 file `PATH` …`.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs12Error {
    /// The file cannot be read.
    #[error("cannot read PKCS#12 file `{path}`: {reason}")]
    Read {
        /// The file, as resolved.
        path: PathBuf,
        /// What the reader said.
        reason: String,
    },
    /// The file is larger than [`MAX_PKCS12_FILE_BYTES`].
    #[error("PKCS#12 file `{path}` is larger than {MAX_PKCS12_FILE_BYTES} bytes")]
    TooLarge {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// The structure is not valid DER PKCS#12 (truncated, PEM, BER-only, …).
    #[error("PKCS#12 file `{path}` is not a valid PKCS#12 (DER) file: {reason}")]
    Malformed {
        /// The file, as resolved.
        path: PathBuf,
        /// Which part is wrong (never key material).
        reason: String,
    },
    /// The file has no integrity MAC, so a wrong password cannot be told from a corrupt file.
    #[error(
        "PKCS#12 file `{path}` has no password MAC (integrity check); re-export it with a password"
    )]
    NoMac {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// The MAC does not verify: the password is wrong or the file was altered.
    #[error(
        "PKCS#12 file `{path}`: the MAC does not verify — the password is wrong or the file is corrupt"
    )]
    MacMismatch {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// An algorithm popgate does not implement.
    #[error("PKCS#12 file `{path}` uses {what} {algorithm}, which is not supported{hint}")]
    Unsupported {
        /// The file, as resolved.
        path: PathBuf,
        /// Where the algorithm is used (e.g. "key encryption").
        what: &'static str,
        /// The algorithm's name or OID.
        algorithm: String,
        /// `": how to fix"`, or empty.
        hint: String,
    },
    /// An iteration count above [`MAX_PKCS12_ITERATIONS`] (or zero).
    #[error(
        "PKCS#12 file `{path}` asks for {iterations} {what} iterations; popgate accepts 1 to {MAX_PKCS12_ITERATIONS}"
    )]
    Iterations {
        /// The file, as resolved.
        path: PathBuf,
        /// Which KDF.
        what: &'static str,
        /// The count in the file.
        iterations: u64,
    },
    /// Decryption failed although the MAC verified (corrupt or mis-built file).
    #[error("PKCS#12 file `{path}`: cannot decrypt the {what}")]
    Decrypt {
        /// The file, as resolved.
        path: PathBuf,
        /// What was being decrypted.
        what: &'static str,
    },
    /// No private key in the file.
    #[error("PKCS#12 file `{path}` holds no private key (export it with its key)")]
    NoKey {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// More than one private key in the file.
    #[error("PKCS#12 file `{path}` holds more than one private key")]
    SeveralKeys {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// No X.509 certificate in the file.
    #[error("PKCS#12 file `{path}` holds no X.509 certificate")]
    NoCertificate {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// No certificate in the file matches its key.
    #[error("PKCS#12 file `{path}`: no certificate in it matches its private key")]
    NoMatchingCertificate {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// A certificate or the key cannot be used.
    #[error("PKCS#12 file `{path}`: {reason}")]
    Unusable {
        /// The file, as resolved.
        path: PathBuf,
        /// What rustls or the X.509 parser said (never key material).
        reason: String,
    },
}
