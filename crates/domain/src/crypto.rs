//! The data key and the envelope that protects secrets stored in SQLite.
//!
//! The data key (32 bytes, from `data.key` or `CPA_MANAGER_DATA_KEY`) never encrypts
//! anything directly: a working key is derived per purpose with HKDF-SHA256. Stored
//! secrets are sealed with ChaCha20-Poly1305 under a fresh random 12-byte nonce, and the
//! associated data names the field the value belongs to, so a ciphertext copied into a
//! different field does not decrypt.
//!
//! Envelope: `enc:v2:<base64 nonce>:<base64 ciphertext+tag>` (base64 standard alphabet,
//! no padding). Values written by the Go server start with `enc:v1:` (AES-256-GCM); they
//! are recognised but not decrypted, so such a value needs to be entered again (save
//! the CPA connection once). Nonces come from the caller, which keeps this module free
//! of IO and deterministic under test.

#![warn(missing_docs)]

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;

/// Prefix of values sealed by this server.
pub const ENVELOPE_V2: &str = "enc:v2:";
/// Prefix of values sealed by the Go server (AES-256-GCM), which this server cannot open.
pub const ENVELOPE_V1: &str = "enc:v1:";

/// HKDF salt and info for turning free-form data-key material into 32 bytes. These
/// match the Go server, so the same `CPA_MANAGER_DATA_KEY` gives the same key.
const MATERIAL_SALT: &[u8] = b"cpa-manager-plus";
const MATERIAL_INFO: &[u8] = b"data-key-v1";
/// HKDF salt and info of the working key for sealed settings.
const SEAL_SALT: &[u8] = b"cpamp";
const SEAL_INFO: &[u8] = b"settings-secrets-v2/chacha20poly1305";

/// The 32-byte data key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("DataKey(redacted)")
    }
}

/// Why the text of a data key file is not a data key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataKeyError {
    /// The file holds nothing (whitespace only).
    #[error("data key is empty")]
    Empty,
    /// Neither 32 raw bytes nor base64 of 32 bytes.
    #[error("data key must be 32 bytes or base64-encoded 32 bytes")]
    WrongSize,
}

/// Why a stored secret could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// A Go-era AES-GCM value; it has to be entered again.
    #[error("secret was encrypted by an older release (enc:v1) and must be entered again")]
    LegacyEnvelope,
    /// Not the `enc:v2:<nonce>:<ciphertext>` envelope this release writes.
    #[error("invalid encrypted secret format")]
    Format,
    /// Another data key sealed it, it was sealed for another field, or it is damaged.
    #[error("decrypt secret: invalid data key or corrupted ciphertext")]
    Decrypt,
}

impl DataKey {
    /// A data key from its 32 bytes (the contents of `data.key`).
    pub fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(bytes)
    }

    /// Key material from the environment or a secret file: 32 bytes (base64 or literal)
    /// are used as they are; anything else is stretched with HKDF, so any passphrase works.
    pub fn from_material(material: &str) -> DataKey {
        let material = material.trim();
        if let Some(bytes) = decode_32(material) {
            return DataKey(bytes);
        }
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's output limit, so expand cannot fail.
        let _ = Hkdf::<Sha256>::new(Some(MATERIAL_SALT), material.as_bytes())
            .expand(MATERIAL_INFO, &mut okm);
        DataKey(okm)
    }

    /// The content of a `data.key` file: exactly 32 bytes, base64 or literal.
    pub fn parse_file(text: &str) -> Result<DataKey, DataKeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(DataKeyError::Empty);
        }
        decode_32(text).map(DataKey).ok_or(DataKeyError::WrongSize)
    }

    /// What a newly created `data.key` holds: base64 without padding and a newline
    /// (the Go server's format, so either server can read the file).
    pub fn file_text(&self) -> String {
        format!("{}\n", STANDARD_NO_PAD.encode(self.0))
    }

    fn seal_cipher(&self) -> ChaCha20Poly1305 {
        let mut okm = [0u8; 32];
        let _ = Hkdf::<Sha256>::new(Some(SEAL_SALT), &self.0).expand(SEAL_INFO, &mut okm);
        ChaCha20Poly1305::new(&okm.into())
    }

    /// Seals `plaintext` for the settings field named `field` (the associated data).
    /// Empty values stay empty.
    pub fn seal(&self, field: &str, plaintext: &str, nonce: [u8; 12]) -> String {
        if plaintext.is_empty() {
            return String::new();
        }
        let nonce_value = Nonce::from(nonce);
        let sealed = self.seal_cipher().encrypt(
            &nonce_value,
            Payload {
                msg: plaintext.as_bytes(),
                aad: field.as_bytes(),
            },
        );
        // ChaCha20-Poly1305 encryption fails only for messages longer than 256 GiB.
        let sealed = sealed.unwrap_or_default();
        format!(
            "{ENVELOPE_V2}{}:{}",
            STANDARD_NO_PAD.encode(nonce),
            STANDARD_NO_PAD.encode(sealed)
        )
    }

    /// Opens a stored value of the field `field`. Empty stays empty; a value without an
    /// `enc:` prefix is legacy plaintext and is returned as it is (it is sealed on the
    /// next save).
    pub fn open(&self, field: &str, stored: &str) -> Result<String, SealError> {
        if stored.is_empty() {
            return Ok(String::new());
        }
        if stored.starts_with(ENVELOPE_V1) {
            return Err(SealError::LegacyEnvelope);
        }
        let Some(rest) = stored.strip_prefix(ENVELOPE_V2) else {
            if stored.starts_with("enc:") {
                return Err(SealError::Format);
            }
            return Ok(stored.to_string());
        };
        let (nonce_text, sealed_text) = rest.split_once(':').ok_or(SealError::Format)?;
        let nonce: [u8; 12] = STANDARD_NO_PAD
            .decode(nonce_text)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(SealError::Format)?;
        let sealed = STANDARD_NO_PAD
            .decode(sealed_text)
            .map_err(|_| SealError::Format)?;
        let plain = self
            .seal_cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed,
                    aad: field.as_bytes(),
                },
            )
            .map_err(|_| SealError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| SealError::Decrypt)
    }
}

/// True when `stored` is a sealed value (of any version).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with("enc:")
}

fn decode_32(text: &str) -> Option<[u8; 32]> {
    for engine in [&STANDARD_NO_PAD, &STANDARD, &URL_SAFE_NO_PAD] {
        if let Ok(bytes) = engine.decode(text)
            && let Ok(bytes) = <[u8; 32]>::try_from(bytes)
        {
            return Some(bytes);
        }
    }
    <[u8; 32]>::try_from(text.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELD: &str = "cpamp/settings/manager_config_v1/cpaConnection.managementKey";

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_field() {
        let key = DataKey::from_bytes([3u8; 32]);
        let sealed = key.seal(FIELD, "mgmt-secret", [9u8; 12]);
        assert!(sealed.starts_with("enc:v2:"), "{sealed}");
        assert!(!sealed.contains("mgmt-secret"));
        assert_eq!(key.open(FIELD, &sealed), Ok("mgmt-secret".to_string()));
        assert_eq!(
            key.open("cpamp/settings/setup/managementKey", &sealed),
            Err(SealError::Decrypt)
        );
        let other = DataKey::from_bytes([4u8; 32]);
        assert_eq!(other.open(FIELD, &sealed), Err(SealError::Decrypt));
        // Different nonces give different ciphertexts for the same value.
        assert_ne!(sealed, key.seal(FIELD, "mgmt-secret", [8u8; 12]));
    }

    #[test]
    fn legacy_plaintext_empty_and_malformed_values() {
        let key = DataKey::from_bytes([3u8; 32]);
        assert_eq!(key.seal(FIELD, "", [0u8; 12]), "");
        assert_eq!(key.open(FIELD, ""), Ok(String::new()));
        assert_eq!(key.open(FIELD, "plain-key"), Ok("plain-key".to_string()));
        assert_eq!(
            key.open(FIELD, "enc:v1:AAAA:BBBB"),
            Err(SealError::LegacyEnvelope)
        );
        assert_eq!(key.open(FIELD, "enc:v2:nonce"), Err(SealError::Format));
        assert_eq!(key.open(FIELD, "enc:v9:a:b"), Err(SealError::Format));
        let mut tampered = key.seal(FIELD, "mgmt-secret", [1u8; 12]);
        tampered.pop();
        tampered.push('A');
        assert!(key.open(FIELD, &tampered).is_err());
    }

    #[test]
    fn data_key_files_and_material() {
        let key = DataKey::from_bytes([7u8; 32]);
        let text = key.file_text();
        assert_eq!(text.len(), 44);
        assert_eq!(DataKey::parse_file(&text), Ok(key.clone()));
        assert_eq!(DataKey::parse_file("  \n"), Err(DataKeyError::Empty));
        assert_eq!(
            DataKey::parse_file("too short"),
            Err(DataKeyError::WrongSize)
        );
        assert_eq!(
            DataKey::parse_file("0123456789abcdef0123456789abcdef"),
            Ok(DataKey::from_bytes(*b"0123456789abcdef0123456789abcdef"))
        );
        // Any passphrase works as env material and is stable.
        assert_eq!(
            DataKey::from_material("correct horse"),
            DataKey::from_material(" correct horse ")
        );
        assert_ne!(
            DataKey::from_material("correct horse"),
            DataKey::from_material("battery staple")
        );
        assert_eq!(DataKey::from_material(&text), key);
        assert_eq!(format!("{key:?}"), "DataKey(redacted)");
    }
}
