//! The password encryption of `court_zxfw` (SPEC §15): SM2 public-key encryption (RustCrypto
//! `sm2`, no curve code of ours) under the portal's key, laid out C1‖C3‖C2, as lowercase hex
//! with C1's `04` prefix dropped — what the portal's own JavaScript (sm-crypto, mode 1) sends.

use sm2::pke::{EncryptingKey, Mode};

/// The portal's key as it comes: 128 hex digits (x‖y), or 130 with a leading `04`.
/// The error says what is wrong with it, never a panic.
#[cfg(test)]
pub fn encrypting_key(public_key_hex: &str) -> Result<EncryptingKey, String> {
    encrypting_key_in(public_key_hex, Mode::C1C3C2)
}

/// The same, for ciphertexts laid out as `mode` says (recipes: `sm2_c1c3c2`, `sm2_c1c2c3`).
pub fn encrypting_key_in(public_key_hex: &str, mode: Mode) -> Result<EncryptingKey, String> {
    let hex_text: String = public_key_hex
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let xy = match hex_text.len() {
        128 => hex_text.as_str(),
        130 if hex_text.starts_with("04") => &hex_text[2..],
        n => {
            return Err(format!(
                "the SM2 public key has {n} hex digits; expected 128 (x‖y) or 130 starting with 04"
            ))
        }
    };
    let mut sec1 = vec![0x04];
    sec1.extend(hex::decode(xy).map_err(|e| format!("the SM2 public key is not hex: {e}"))?);
    let public = sm2::PublicKey::from_sec1_bytes(&sec1)
        .map_err(|_| "the SM2 public key is not a point on the SM2 curve".to_string())?;
    Ok(EncryptingKey::new_with_mode(public, mode))
}

/// `password` encrypted under `key` with the randomness of `rng`: lowercase hex of
/// C1 (x‖y, without `04`) ‖ C3 (SM3, 32 bytes) ‖ C2 (as long as the password).
pub fn encrypt_with<R: sm2::elliptic_curve::rand_core::TryCryptoRng>(
    key: &EncryptingKey,
    rng: &mut R,
    password: &[u8],
) -> Result<String, String> {
    let cipher = key
        .encrypt(rng, password)
        .map_err(|_| "SM2 encryption failed".to_string())?;
    // The crate writes C1 as an uncompressed SEC1 point: 04 ‖ x ‖ y.
    match cipher.split_first() {
        Some((0x04, rest)) => Ok(hex::encode(rest)),
        _ => Err("SM2 encryption gave an unexpected C1 encoding".to_string()),
    }
}

/// The password as the portal expects it, under its public key (operating system randomness).
#[cfg(test)]
pub fn encrypt_password(public_key_hex: &str, password: &str) -> Result<String, String> {
    let key = encrypting_key(public_key_hex)?;
    encrypt_with(&key, &mut getrandom::SysRng, password.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm2::elliptic_curve::rand_core::{TryCryptoRng, TryRng};
    use sm2::pke::DecryptingKey;

    /// The fixed private key of the committed fixture (`tests/fixtures/sm2_kat.json`).
    const FIXTURE: &str = include_str!("../../../tests/fixtures/sm2_kat.json");

    /// A deterministic "random" source, so that one encryption is a known answer.
    struct Counter(u8);

    impl TryRng for Counter {
        type Error = std::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            let mut b = [0; 4];
            self.try_fill_bytes(&mut b)?;
            Ok(u32::from_le_bytes(b))
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            let mut b = [0; 8];
            self.try_fill_bytes(&mut b)?;
            Ok(u64::from_le_bytes(b))
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
            for byte in dest {
                self.0 = self.0.wrapping_mul(31).wrapping_add(7);
                *byte = self.0;
            }
            Ok(())
        }
    }
    impl TryCryptoRng for Counter {}

    fn fixture() -> serde_json::Value {
        serde_json::from_str(FIXTURE).unwrap()
    }

    fn private_key() -> DecryptingKey {
        let hex_key = fixture()["private_key"].as_str().unwrap().to_string();
        DecryptingKey::from_slice(&hex::decode(hex_key).unwrap()).unwrap()
    }

    fn public_hex(key: &DecryptingKey) -> String {
        hex::encode(&key.encrypting_key().to_sec1_bytes()[1..])
    }

    #[test]
    fn known_answer_with_a_fixed_key_and_nonce() {
        let fixture = fixture();
        let key = private_key();
        assert_eq!(public_hex(&key), fixture["public_key"].as_str().unwrap());
        let encrypting = encrypting_key(fixture["public_key"].as_str().unwrap()).unwrap();
        let plain = fixture["plaintext"].as_str().unwrap();
        let got = encrypt_with(&encrypting, &mut Counter(1), plain.as_bytes()).unwrap();
        assert_eq!(got, fixture["ciphertext_c1c3c2_hex"].as_str().unwrap());
        // Layout: C1 = 64 bytes (no 04), C3 = 32, C2 = the message's length; lowercase hex.
        assert_eq!(got.len(), 2 * (64 + 32 + plain.len()));
        assert_eq!(got, got.to_ascii_lowercase());
    }

    #[test]
    fn a_gmssl_ciphertext_decrypts_with_the_fixed_key() {
        // Written by another implementation (Python gmssl, mode 1): the layout is the same.
        let fixture = fixture();
        let cipher = hex::decode(fixture["gmssl_ciphertext_c1c3c2_hex"].as_str().unwrap()).unwrap();
        let mut with_prefix = vec![0x04];
        with_prefix.extend(&cipher);
        let plain = private_key().decrypt(&with_prefix).unwrap();
        assert_eq!(plain, fixture["plaintext"].as_str().unwrap().as_bytes());
        // C3 is SM3(x2 ‖ M ‖ y2): the same bytes read as C1C2C3 do not decrypt.
        let swapped = [&with_prefix[..65], &with_prefix[97..], &with_prefix[65..97]].concat();
        assert!(private_key().decrypt(&swapped).is_err());
    }

    #[test]
    fn fresh_encryptions_differ_and_decrypt() {
        let key = private_key();
        let a = encrypt_password(&public_hex(&key), "密码 pw").unwrap();
        let b = encrypt_password(&format!("04{}", public_hex(&key)), "密码 pw").unwrap();
        assert_ne!(a, b);
        let bytes = [vec![0x04], hex::decode(&b).unwrap()].concat();
        assert_eq!(key.decrypt(&bytes).unwrap(), "密码 pw".as_bytes());
    }

    #[test]
    fn bad_keys_are_errors_not_panics() {
        assert!(encrypting_key("abcd").unwrap_err().contains("4 hex digits"));
        assert!(encrypting_key(&"zz".repeat(64))
            .unwrap_err()
            .contains("not hex"));
        assert!(encrypting_key(&"00".repeat(64))
            .unwrap_err()
            .contains("not a point"));
        assert!(encrypting_key(&format!("05{}", "00".repeat(64))).is_err());
    }
}
