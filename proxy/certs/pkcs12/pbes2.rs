//! PBES2 decryption (PBKDF2 + AES-CBC), the only encryption current exports use.

use std::num::NonZeroU32;

use aws_lc_rs::{cipher, pbkdf2};
use der::asn1::OctetStringRef;
use spki::AlgorithmIdentifierRef;
use zeroize::Zeroizing;

use super::Pkcs12Error;
use super::asn1::{Pbes2Params, Pbkdf2Params, oid};
use super::loader::Loader;

impl Loader<'_> {
    /// Decrypts PBES2 (PBKDF2 + AES-CBC) ciphertext; anything else is refused by name.
    pub(super) fn pbes2_decrypt(
        &self,
        alg: &AlgorithmIdentifierRef<'_>,
        ciphertext: &[u8],
        password: &Zeroizing<String>,
        what: &'static str,
        object: &'static str,
    ) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
        if alg.oid != oid::PBES2 {
            return Err(self.unsupported(what, &alg.oid));
        }
        let params: Pbes2Params<'_> = alg
            .parameters
            .ok_or_else(|| self.malformed("PBES2 without parameters"))?
            .decode_as()
            .map_err(|e| self.malformed(format!("PBES2 parameters: {e}")))?;
        if params.kdf.oid != oid::PBKDF2 {
            return Err(self.unsupported("key derivation", &params.kdf.oid));
        }
        let kdf: Pbkdf2Params<'_> = params
            .kdf
            .parameters
            .ok_or_else(|| self.malformed("PBKDF2 without parameters"))?
            .decode_as()
            .map_err(|e| self.malformed(format!("PBKDF2 parameters: {e}")))?;
        let prf = match &kdf.prf {
            None => pbkdf2::PBKDF2_HMAC_SHA1,
            Some(p) if p.oid == oid::HMAC_SHA1 => pbkdf2::PBKDF2_HMAC_SHA1,
            Some(p) if p.oid == oid::HMAC_SHA256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Some(p) if p.oid == oid::HMAC_SHA384 => pbkdf2::PBKDF2_HMAC_SHA384,
            Some(p) if p.oid == oid::HMAC_SHA512 => pbkdf2::PBKDF2_HMAC_SHA512,
            Some(p) => return Err(self.unsupported("PBKDF2 PRF", &p.oid)),
        };
        let (cipher_alg, key_len) = match params.encryption.oid {
            o if o == oid::AES128_CBC => (&cipher::AES_128, 16),
            o if o == oid::AES192_CBC => (&cipher::AES_192, 24),
            o if o == oid::AES256_CBC => (&cipher::AES_256, 32),
            o => return Err(self.unsupported(what, &o)),
        };
        if kdf.key_length.is_some_and(|l| l != key_len as u64) {
            return Err(self.malformed("PBKDF2 key length does not match the cipher"));
        }
        let iv: OctetStringRef<'_> = params
            .encryption
            .parameters
            .ok_or_else(|| self.malformed("AES-CBC without an IV"))?
            .decode_as()
            .map_err(|e| self.malformed(format!("AES-CBC IV: {e}")))?;
        let iv: [u8; 16] = iv
            .as_bytes()
            .try_into()
            .map_err(|_| self.malformed("AES-CBC IV is not 16 bytes"))?;
        let iterations = NonZeroU32::new(self.iterations("PBKDF2", kdf.iterations)?)
            .ok_or_else(|| self.malformed("PBKDF2 iteration count 0"))?;
        let mut key = Zeroizing::new(vec![0u8; key_len]);
        // `derive` panics only when the output is longer than (2^32 - 1) * PRF length; AES keys
        // are at most 32 bytes.
        pbkdf2::derive(
            prf,
            iterations,
            kdf.salt.as_bytes(),
            password.as_bytes(),
            &mut key,
        );
        let decrypt_err = || Pkcs12Error::Decrypt {
            path: self.path.to_owned(),
            what: object,
        };
        let unbound = cipher::UnboundCipherKey::new(cipher_alg, &key).map_err(|_| decrypt_err())?;
        let dec =
            cipher::PaddedBlockDecryptingKey::cbc_pkcs7(unbound).map_err(|_| decrypt_err())?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let plain_len = dec
            .decrypt(&mut buf, cipher::DecryptionContext::Iv128(iv.into()))
            .map_err(|_| decrypt_err())?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}
