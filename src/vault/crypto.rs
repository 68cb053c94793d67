//! Encryption at rest for account passwords and stored tokens.
//!
//! XChaCha20-Poly1305 (an AEAD with 192-bit random nonces, so nonces never need counting)
//! under one 32-byte key: `TOKEND_SECRET_KEY` (base64) when set, otherwise the key file,
//! created with mode 0600 on first use. Each value is bound to its row by associated data
//! (`password:SITE:ACCOUNT`, `token:SITE:ACCOUNT`), so a ciphertext copied into another row
//! does not decrypt. Sealed values look like `v1.<base64url(nonce ‖ ciphertext)>`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::config::SecurityConfig;
use crate::error::{Error, Result};
use crate::vault::secret::Secret;

const VERSION_PREFIX: &str = "v1.";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// The key that seals and opens secrets at rest. Cheap to clone.
#[derive(Clone)]
pub struct SecretKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// What a sealed value belongs to; used as associated data.
pub enum SealContext<'a> {
    Password {
        site: &'a str,
        account: &'a str,
    },
    Token {
        site: &'a str,
        account: &'a str,
    },
    /// An account's own proxy URL.
    Proxy {
        site: &'a str,
        account: &'a str,
    },
}

impl SealContext<'_> {
    fn associated_data(&self) -> String {
        match self {
            SealContext::Password { site, account } => format!("password:{site}:{account}"),
            SealContext::Token { site, account } => format!("token:{site}:{account}"),
            SealContext::Proxy { site, account } => format!("proxy:{site}:{account}"),
        }
    }
}

impl SecretKey {
    /// Loads the key from the environment or the key file, creating the file if missing.
    pub fn load(security: &SecurityConfig) -> Result<SecretKey> {
        if let Some(encoded) = &security.secret_key {
            return SecretKey::from_base64(encoded.expose())
                .map_err(|message| Error::config("TOKEND_SECRET_KEY", message));
        }
        SecretKey::from_key_file(&security.key_file)
    }

    fn from_key_file(path: &Path) -> Result<SecretKey> {
        let key_err = |message: String| {
            Error::config(
                "security.key_file",
                format!("{}: {message}", path.display()),
            )
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if let Ok(meta) = std::fs::metadata(path) {
                    if meta.permissions().mode() & 0o077 != 0 {
                        log::warn!(
                            "event=key_file_permissions path={} mode={:o} hint=\"chmod 600\"",
                            path.display(),
                            meta.permissions().mode() & 0o777
                        );
                    }
                }
                SecretKey::from_base64(text.trim()).map_err(key_err)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SecretKey::create_key_file(path),
            Err(e) => Err(key_err(e.to_string())),
        }
    }

    /// Writes a fresh random key with mode 0600. If another process created the file first,
    /// its key is used instead, so that two instances never end up with different keys.
    fn create_key_file(path: &Path) -> Result<SecretKey> {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        let mut file = match file {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return SecretKey::from_key_file(path)
            }
            Err(e) => {
                return Err(Error::config(
                    "security.key_file",
                    format!("cannot create {}: {e}", path.display()),
                ))
            }
        };
        let written = writeln!(file, "{}", STANDARD.encode(key)).and_then(|_| file.sync_all());
        written.map_err(|e| Error::io(path, e))?;
        log::info!("event=key_file_created path={} mode=600", path.display());
        Ok(SecretKey {
            cipher: XChaCha20Poly1305::new(&key),
        })
    }

    /// A key from its base64 form; the error says what is wrong without echoing the input.
    pub fn from_base64(encoded: &str) -> std::result::Result<SecretKey, String> {
        let bytes = STANDARD.decode(encoded.trim()).map_err(|_| {
            "is not valid base64 (make one with `openssl rand -base64 32`)".to_string()
        })?;
        if bytes.len() != KEY_LEN {
            return Err(format!(
                "must decode to {KEY_LEN} bytes, not {}",
                bytes.len()
            ));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|e| e.to_string())?;
        Ok(SecretKey { cipher })
    }

    /// Encrypts `plaintext` for the row described by `context`.
    pub fn seal(&self, plaintext: &str, context: SealContext<'_>) -> Result<String> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = context.associated_data();
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: aad.as_bytes(),
        };
        let ciphertext = self
            .cipher
            .encrypt(&nonce, payload)
            .map_err(|_| Error::Crypto("encryption failed".into()))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Ok(format!(
            "{VERSION_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(sealed)
        ))
    }

    /// Decrypts a value sealed by [`SecretKey::seal`] for the same row.
    pub fn open(&self, sealed: &str, context: SealContext<'_>) -> Result<Secret> {
        let aad = context.associated_data();
        let corrupt = || {
            Error::Crypto(format!(
                "cannot decrypt the stored secret of {aad}: wrong TOKEND_SECRET_KEY/key file, or corrupt data"
            ))
        };
        let body = sealed.strip_prefix(VERSION_PREFIX).ok_or_else(corrupt)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| corrupt())?;
        if bytes.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: aad.as_bytes(),
        };
        let plaintext = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| corrupt())?;
        String::from_utf8(plaintext)
            .map(Secret::new)
            .map_err(|_| corrupt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap()
    }

    fn pw<'a>(site: &'a str, account: &'a str) -> SealContext<'a> {
        SealContext::Password { site, account }
    }

    #[test]
    fn round_trip_and_binding() {
        let key = key();
        let sealed = key.seal("s3cret-密码", pw("court_zxfw", "alice")).unwrap();
        assert!(!sealed.contains("s3cret"));
        assert_eq!(
            key.open(&sealed, pw("court_zxfw", "alice"))
                .unwrap()
                .expose(),
            "s3cret-密码"
        );
        // Copied into another row, it does not open.
        assert!(key.open(&sealed, pw("court_zxfw", "bob")).is_err());
        // Two seals of the same value differ (random nonce).
        assert_ne!(
            sealed,
            key.seal("s3cret-密码", pw("court_zxfw", "alice")).unwrap()
        );
    }

    #[test]
    fn wrong_key_or_garbage_is_an_error_not_a_panic() {
        let sealed = key().seal("x", pw("s", "a")).unwrap();
        let other = SecretKey::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert!(other.open(&sealed, pw("s", "a")).is_err());
        for garbage in ["", "v1.", "v1.!!!", "plaintext", "v1.AAAA"] {
            assert!(key().open(garbage, pw("s", "a")).is_err());
        }
    }

    #[test]
    fn bad_base64_keys() {
        assert!(SecretKey::from_base64("not base64!").is_err());
        assert!(SecretKey::from_base64(&STANDARD.encode([1u8; 16])).is_err());
    }

    #[test]
    fn key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokend.key");
        let config = SecurityConfig {
            key_file: path.clone(),
            secret_key: None,
        };
        let first = SecretKey::load(&config).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = first.seal("pw", pw("s", "a")).unwrap();
        let second = SecretKey::load(&config).unwrap();
        assert_eq!(second.open(&sealed, pw("s", "a")).unwrap().expose(), "pw");
    }
}
