//! Loading a PKCS#12 (`.pfx` / `.p12`) file into a [`BindingCert`] (RFC 7292).
//!
//! Supported: what `openssl pkcs12 -export` (OpenSSL 3) and current Windows/Azure Key Vault
//! exports write: a password-integrity MAC (HMAC with SHA-1/SHA-256/SHA-384/SHA-512, key from the
//! RFC 7292 appendix-B KDF), `data` and `encryptedData` contents, `certBag`s,
//! `pkcs8ShroudedKeyBag`s and `keyBag`s, encrypted with PBES2 (PBKDF2 + AES-CBC). The legacy
//! PKCS#12 PBE algorithms (3DES, RC2, RC4) are refused with the command that converts the file.
//!
//! Decrypted key bytes and derived keys live only in [`Zeroizing`] buffers; errors name the file
//! and the problem, never the password or key material.
//!
//! One file per concern: `asn1` the structures, `loader` the walk through the file and the
//! choice of key and leaf, `mac` the integrity check and its KDF, `pbes2` the decryption.

mod asn1;
mod error;
mod loader;
mod mac;
mod pbes2;

use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

pub use self::error::Pkcs12Error;
use self::loader::Loader;
use crate::certs::binding::BindingCert;
use crate::certs::bounded_read::{BoundedReadError, read_bounded};

/// Largest PKCS#12 file popgate reads: a key and a chain of a few certificates is a few KiB;
/// this bounds memory when a path points at something else by mistake.
pub const MAX_PKCS12_FILE_BYTES: u64 = 1024 * 1024;

/// Largest iteration count accepted for the MAC KDF or PBKDF2: real files use 2 048 (OpenSSL) to
/// 600 000; a larger count is a file built to burn CPU on every (re)load.
pub const MAX_PKCS12_ITERATIONS: u32 = 10_000_000;

/// Deepest nesting of `safeContentsBag`s followed: real files never nest; the cap keeps a crafted
/// file from exhausting the stack through recursion.
const MAX_SAFE_CONTENTS_DEPTH: usize = 4;

/// The command that rewrites a legacy-encrypted file with current algorithms.
// Two steps: OpenSSL 3.0's `pkcs12 -export` reads its input twice, so it cannot take a pipe.
const LEGACY_FIX: &str = "convert it with `openssl pkcs12 -legacy -in old.pfx -nodes -out plain.pem && openssl pkcs12 -export -in plain.pem -out new.pfx` (then delete plain.pem, it holds the unencrypted key), or convert it to PEM and use `cert_file`/`key_file`";

/// A PKCS#12 password. Zeroized on drop; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs12Password(Zeroizing<String>);

impl Pkcs12Password {
    /// Wraps a password (taken by value so no unzeroized copy is left behind by the caller).
    pub fn new(password: Zeroizing<String>) -> Self {
        Self(password)
    }

    /// The password.
    pub fn expose(&self) -> &Zeroizing<String> {
        &self.0
    }
}

impl fmt::Debug for Pkcs12Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pkcs12Password(<redacted>)")
    }
}

/// Loads the certificate chain and private key in the PKCS#12 file at `path` into a
/// [`BindingCert`], after checking the file's MAC with `password`. The chain is ordered leaf
/// first: the certificate whose public key matches the key, then the others in file order.
pub fn load_pkcs12(path: &Path, password: &Zeroizing<String>) -> Result<BindingCert, Pkcs12Error> {
    let bytes = read_file(path)?;
    Loader { path }.load(&bytes, password)
}

/// Reads the whole file (bounded by [`MAX_PKCS12_FILE_BYTES`]) into a zeroizing buffer.
fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    read_bounded(path, MAX_PKCS12_FILE_BYTES).map_err(|e| match e {
        BoundedReadError::Io(e) => Pkcs12Error::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        },
        BoundedReadError::TooLarge { .. } => Pkcs12Error::TooLarge {
            path: path.to_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_debug_is_redacted() {
        let p = Pkcs12Password::new(Zeroizing::new("hunter2".to_owned()));
        assert_eq!(format!("{p:?}"), "Pkcs12Password(<redacted>)");
    }
}
