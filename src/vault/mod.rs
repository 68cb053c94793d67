//! Secrets at rest and in memory: [`crypto`] (the key and XChaCha20-Poly1305 sealing of
//! passwords and tokens) and [`secret`] (values that never print; the fingerprint and
//! redacted forms a token may take in logs).
pub mod crypto;
pub mod secret;
