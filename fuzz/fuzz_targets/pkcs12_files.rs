//! PKCS#12 files: `pkcs12::load_pkcs12` on arbitrary bytes. Never a panic.
//!
//! Layout: a selector byte, then the input. Even selector: the input is the whole file. Odd: the
//! input is the authenticated safe (the `SEQUENCE OF ContentInfo`), wrapped here in a PFX whose
//! MAC verifies with [`PASSWORD`], so the fuzzer gets past the MAC (which random bytes never
//! pass) to the bag walk, PBES2 decryption and the choice of key and leaf.
#![no_main]

#[path = "input_file.rs"]
mod input_file;

use aws_lc_rs::{digest, hmac};
use der::asn1::ObjectIdentifier;
use der::{Encode as _, Header, Tag, TagNumber};
use libfuzzer_sys::fuzz_target;
use popgate::certs::pkcs12;
use zeroize::Zeroizing;

/// 31 characters: with its two-byte terminator the BMPString password is exactly one SHA-256
/// block (64 bytes), as is [`SALT`], so the RFC 7292 KDF needs no padding (see [`mac_key`]).
const PASSWORD: &str = "fuzzing-popgate-pkcs12-loader!!";
const SALT: [u8; 64] = [0x5a; 64];
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");

fn tlv(tag: Tag, content: &[u8]) -> Vec<u8> {
    let len = der::Length::try_from(content.len()).expect("fuzz inputs are far below 256 MiB");
    let mut out = Header::new(tag, len)
        .expect("header")
        .to_der()
        .expect("header");
    out.extend_from_slice(content);
    out
}

/// The MAC key for [`PASSWORD`] and [`SALT`] at one iteration: RFC 7292 B.2 with ID 3, where
/// `I = S || P` needs no padding because both are one block already.
fn mac_key() -> hmac::Key {
    let mut input = vec![3u8; 64];
    input.extend_from_slice(&SALT);
    for unit in PASSWORD.encode_utf16().chain([0]) {
        input.extend_from_slice(&unit.to_be_bytes());
    }
    hmac::Key::new(
        hmac::HMAC_SHA256,
        digest::digest(&digest::SHA256, &input).as_ref(),
    )
}

/// A version-3 PFX around `auth_safe` with a SHA-256 MAC (iterations: the default, 1).
fn pfx(auth_safe: &[u8]) -> Vec<u8> {
    let octets = |bytes: &[u8]| tlv(Tag::OctetString, bytes);
    let explicit0 = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::N0,
    };
    let mut content_info = ID_DATA.to_der().expect("oid");
    content_info.extend(tlv(explicit0, &octets(auth_safe)));
    let mac = hmac::sign(&mac_key(), auth_safe);
    let mut algorithm = ID_SHA256.to_der().expect("oid");
    algorithm.extend([0x05, 0x00]);
    let mut digest_info = tlv(Tag::Sequence, &algorithm);
    digest_info.extend(octets(mac.as_ref()));
    let mut mac_data = tlv(Tag::Sequence, &digest_info);
    mac_data.extend(octets(&SALT));
    let mut body = vec![0x02, 0x01, 0x03];
    body.extend(tlv(Tag::Sequence, &content_info));
    body.extend(tlv(Tag::Sequence, &mac_data));
    tlv(Tag::Sequence, &body)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let file = if selector & 1 == 0 {
        input.to_vec()
    } else {
        pfx(input)
    };
    let path = input_file::path("input.pfx");
    std::fs::write(path, file).expect("write the fuzzed file");
    let _ = pkcs12::load_pkcs12(path, &Zeroizing::new(PASSWORD.to_owned()));
});
