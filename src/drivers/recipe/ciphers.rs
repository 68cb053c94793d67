//! The ciphers of a recipe's transforms, on RustCrypto crates: `rsa_pkcs1` (PKCS #1 v1.5
//! encryption under a PEM key, a base64 DER key or `modulus_hex,exponent_hex`) and AES with
//! PKCS #7 padding in ECB or CBC mode (the key and IV are the texts' UTF-8 bytes, as
//! CryptoJS's `Utf8.parse` gives them). Each gives the ciphertext's bytes; the transform
//! encodes them.

use aes::cipher::{BlockEncryptMut, KeyInit, KeyIvInit};
use base64::Engine;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::{BigUint, Pkcs1v15Encrypt, RsaPublicKey};

/// `text` under the RSA public key `key`, PKCS #1 v1.5 padded (fresh randomness each time).
pub fn rsa_pkcs1(key: &str, text: &str) -> Result<Vec<u8>, String> {
    let key = rsa_key(key.trim())?;
    key.encrypt(&mut rsa::rand_core::OsRng, Pkcs1v15Encrypt, text.as_bytes())
        .map_err(|e| format!("rsa_pkcs1: {e}"))
}

fn rsa_key(key: &str) -> Result<RsaPublicKey, String> {
    let bad = |e: &dyn std::fmt::Display| format!("rsa_pkcs1: not an RSA public key: {e}");
    if key.contains("BEGIN RSA PUBLIC KEY") {
        return RsaPublicKey::from_pkcs1_pem(key).map_err(|e| bad(&e));
    }
    if key.contains("BEGIN") {
        return RsaPublicKey::from_public_key_pem(key).map_err(|e| bad(&e));
    }
    if let Some((modulus, exponent)) = key.split_once(',') {
        let number = |hex_text: &str| {
            hex::decode(hex_text.trim().trim_start_matches("0x"))
                .map(|bytes| BigUint::from_bytes_be(&bytes))
                .map_err(|e| bad(&e))
        };
        return RsaPublicKey::new(number(modulus)?, number(exponent)?).map_err(|e| bad(&e));
    }
    let compact: String = key.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| bad(&e))?;
    RsaPublicKey::from_public_key_der(&der)
        .or_else(|_| RsaPublicKey::from_pkcs1_der(&der))
        .map_err(|e| bad(&e))
}

/// AES-128/192/256 by the key's length (16, 24 or 32 bytes).
fn key_length(name: &str, key: &str) -> Result<usize, String> {
    match key.len() {
        16 | 24 | 32 => Ok(key.len()),
        n => Err(format!(
            "{name}: the key has {n} bytes; AES takes 16, 24 or 32"
        )),
    }
}

pub fn aes_ecb(key: &str, text: &str) -> Result<Vec<u8>, String> {
    use aes::cipher::block_padding::Pkcs7;
    let k = key.as_bytes();
    let data = text.as_bytes();
    Ok(match key_length("aes_ecb_pkcs7", key)? {
        16 => ecb::Encryptor::<aes::Aes128>::new(k.into()).encrypt_padded_vec_mut::<Pkcs7>(data),
        24 => ecb::Encryptor::<aes::Aes192>::new(k.into()).encrypt_padded_vec_mut::<Pkcs7>(data),
        _ => ecb::Encryptor::<aes::Aes256>::new(k.into()).encrypt_padded_vec_mut::<Pkcs7>(data),
    })
}

pub fn aes_cbc(key: &str, iv: &str, text: &str) -> Result<Vec<u8>, String> {
    use aes::cipher::block_padding::Pkcs7;
    if iv.len() != 16 {
        return Err(format!(
            "aes_cbc_pkcs7: the IV has {} bytes, not 16",
            iv.len()
        ));
    }
    let (k, v, data) = (key.as_bytes(), iv.as_bytes(), text.as_bytes());
    Ok(match key_length("aes_cbc_pkcs7", key)? {
        16 => cbc::Encryptor::<aes::Aes128>::new(k.into(), v.into())
            .encrypt_padded_vec_mut::<Pkcs7>(data),
        24 => cbc::Encryptor::<aes::Aes192>::new(k.into(), v.into())
            .encrypt_padded_vec_mut::<Pkcs7>(data),
        _ => cbc::Encryptor::<aes::Aes256>::new(k.into(), v.into())
            .encrypt_padded_vec_mut::<Pkcs7>(data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::EncodePublicKey;
    use rsa::traits::PublicKeyParts;

    #[test]
    fn aes_known_answers() {
        // What `openssl enc -aes-128-ecb|cbc -K <hex of the key> [-iv <hex of the IV>]` gives.
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let ecb = aes_ecb("1234567890abcdef", "hello").unwrap();
        assert_eq!(b64(&ecb), "OuG/HtvQGRTDeeep6ZO/WQ==");
        let cbc = aes_cbc("1234567890abcdef", "abcdef1234567890", "hello").unwrap();
        assert_eq!(b64(&cbc), "lHmhQSLj/3y7tkoSCBhwmw==");
        use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut};
        let plain = ecb::Decryptor::<aes::Aes128>::new(b"1234567890abcdef".into())
            .decrypt_padded_vec_mut::<Pkcs7>(&ecb)
            .unwrap();
        assert_eq!(plain, b"hello");
        assert!(aes_ecb("short", "x").unwrap_err().contains("16, 24 or 32"));
        assert!(aes_cbc("1234567890abcdef", "iv", "x").is_err());
    }

    #[test]
    fn rsa_under_pem_der_or_modulus_and_exponent() {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let public = private.to_public_key();
        let pem = public
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let pair = format!(
            "{},{}",
            hex::encode(public.n().to_bytes_be()),
            hex::encode(public.e().to_bytes_be())
        );
        for key in [pem.as_str(), body.as_str(), pair.as_str()] {
            let cipher = rsa_pkcs1(key, "pw").unwrap();
            assert_eq!(private.decrypt(Pkcs1v15Encrypt, &cipher).unwrap(), b"pw");
        }
        assert!(rsa_pkcs1("nope", "pw").is_err());
    }
}
