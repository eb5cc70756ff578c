//! The password-integrity MAC: HMAC over the authenticated safe, keyed by the RFC 7292
//! appendix-B KDF.

use aws_lc_rs::{digest, hmac};
use der::asn1::ObjectIdentifier as Oid;
use zeroize::Zeroizing;

use super::Pkcs12Error;
use super::asn1::{MacData, oid};
use super::loader::Loader;

impl Loader<'_> {
    /// Checks the password-integrity MAC over the authenticated safe's octets.
    pub(super) fn verify_mac(
        &self,
        mac: &MacData<'_>,
        auth_safe: &[u8],
        password: &Zeroizing<String>,
    ) -> Result<(), Pkcs12Error> {
        let alg = &mac.mac.algorithm.oid;
        if *alg == oid::PBMAC1 {
            return Err(self.unsupported("MAC algorithm", alg));
        }
        let (md, hm) = digest_for(alg).ok_or_else(|| self.unsupported("MAC digest", alg))?;
        let iterations = self.iterations("MAC", mac.iterations.unwrap_or(1))?;
        let salt = mac.salt.as_bytes();
        let expected = mac.mac.digest.as_bytes();
        // OpenSSL writes an empty password as the BMPString terminator only ("\0\0") but also
        // accepts no bytes at all, so both are tried for an empty password.
        let mut candidates = vec![bmp_password(password)];
        if password.is_empty() {
            candidates.push(Zeroizing::new(Vec::new()));
        }
        for pw in &candidates {
            let key = pkcs12_kdf(md, MAC_KEY_ID, pw, salt, iterations, md.output_len());
            let key = hmac::Key::new(hm, &key);
            if hmac::verify(&key, auth_safe, expected).is_ok() {
                return Ok(());
            }
        }
        Err(Pkcs12Error::MacMismatch {
            path: self.path.to_owned(),
        })
    }
}

/// The digest and HMAC for a MAC `DigestInfo` algorithm.
fn digest_for(alg: &Oid) -> Option<(&'static digest::Algorithm, hmac::Algorithm)> {
    match *alg {
        o if o == oid::SHA1 => Some((
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        )),
        o if o == oid::SHA256 => Some((&digest::SHA256, hmac::HMAC_SHA256)),
        o if o == oid::SHA384 => Some((&digest::SHA384, hmac::HMAC_SHA384)),
        o if o == oid::SHA512 => Some((&digest::SHA512, hmac::HMAC_SHA512)),
        _ => None,
    }
}

/// The password as RFC 7292 appendix B.1 wants it for the MAC KDF: big-endian UTF-16 with a
/// two-byte terminator.
fn bmp_password(password: &Zeroizing<String>) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(password.len() * 2 + 2));
    for unit in password.encode_utf16() {
        out.extend_from_slice(&unit.to_be_bytes());
    }
    out.extend_from_slice(&[0, 0]);
    out
}

/// Appendix B.3 `ID` for MAC key material.
const MAC_KEY_ID: u8 = 3;

/// RFC 7292 appendix B.2 key derivation: `n` bytes from `password` (already BMP-encoded),
/// `salt` and `iterations` with hash `md`.
fn pkcs12_kdf(
    md: &'static digest::Algorithm,
    id: u8,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    n: usize,
) -> Zeroizing<Vec<u8>> {
    let u = md.output_len();
    let v = md.block_len();
    let fill = |src: &[u8]| -> Vec<u8> {
        if src.is_empty() {
            return Vec::new();
        }
        let len = v * src.len().div_ceil(v);
        src.iter().copied().cycle().take(len).collect()
    };
    let d = vec![id; v];
    let mut i = Zeroizing::new(fill(salt));
    i.extend_from_slice(&Zeroizing::new(fill(password)));
    let mut out = Zeroizing::new(Vec::with_capacity(n.div_ceil(u) * u));
    while out.len() < n {
        let mut ctx = digest::Context::new(md);
        ctx.update(&d);
        ctx.update(&i);
        let mut a = Zeroizing::new(ctx.finish().as_ref().to_vec());
        for _ in 1..iterations {
            a = Zeroizing::new(digest::digest(md, &a).as_ref().to_vec());
        }
        out.extend_from_slice(&a);
        if out.len() >= n {
            break;
        }
        // I_j = (I_j + B + 1) mod 2^(8v) for each v-byte block, B = A repeated to v bytes.
        let b: Zeroizing<Vec<u8>> = Zeroizing::new(a.iter().copied().cycle().take(v).collect());
        for block in i.chunks_mut(v) {
            let mut carry: u16 = 1;
            for k in (0..v).rev() {
                let sum = u16::from(block[k]) + u16::from(b[k]) + carry;
                block[k] = (sum & 0xff) as u8;
                carry = sum >> 8;
            }
        }
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7292 has no test vectors; this one is from the PKCS#12 KDF test set used by OpenSSL
    /// and Bouncy Castle (SHA-1, ID 1, password "smeg", 1 iteration, 24 bytes).
    #[test]
    fn kdf_matches_known_vector() {
        let pw = bmp_password(&Zeroizing::new("smeg".to_owned()));
        let salt = [0x0A, 0x58, 0xCF, 0x64, 0x53, 0x0D, 0x82, 0x3F];
        let out = pkcs12_kdf(&digest::SHA1_FOR_LEGACY_USE_ONLY, 1, &pw, &salt, 1, 24);
        let expected = [
            0x8A, 0xAA, 0xE6, 0x29, 0x7B, 0x6C, 0xB0, 0x46, 0x42, 0xAB, 0x5B, 0x07, 0x78, 0x51,
            0x28, 0x4E, 0xB7, 0x12, 0x8F, 0x1A, 0x2A, 0x7F, 0xBC, 0xA3,
        ];
        assert_eq!(out.as_slice(), expected.as_slice());
    }
}
