//! Certificate thumbprints as Entra ID uses them.

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `base64url_nopad(SHA-256(der))`: `x5t#S256` of a certificate (RFC 8705 §3.1), or a key id.
pub fn x5t_s256(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, der).as_ref())
}
