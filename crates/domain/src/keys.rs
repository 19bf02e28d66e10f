//! The admin key: generation, argon2id hashing and verification.
//!
//! The admin key is cpamp's own login secret (shown once as `cmp_admin_…`). Only an
//! argon2id PHC string of it is stored. Randomness comes from the caller, so this
//! module stays free of IO and is deterministic under test.

#![warn(missing_docs)]

use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Prefix of generated admin keys. Verification never depends on it: keys from
/// older releases (`cpamp_…`) keep working.
pub const ADMIN_KEY_PREFIX: &str = "cmp_admin_";

/// Characters of the random part of a generated admin key.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Length of the random part of a generated admin key.
pub const ADMIN_KEY_RANDOM_LEN: usize = 32;

/// argon2id parameters: the OWASP floor (19 MiB, 2 passes, 1 lane).
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// argon2id passes.
pub const ARGON2_ITERATIONS: u32 = 2;
/// argon2id lanes (parallelism).
pub const ARGON2_LANES: u32 = 1;

/// Why an admin key could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key is empty.
    #[error("admin key is required")]
    Empty,
    /// The hasher failed (the message says why).
    #[error("hash admin key: {0}")]
    Hash(String),
}

/// Generates `cmp_admin_` + 32 characters drawn uniformly from `[0-9A-Za-z]`.
pub fn generate_admin_key<R: rand::Rng + ?Sized>(rng: &mut R) -> String {
    let mut key = String::with_capacity(ADMIN_KEY_PREFIX.len() + ADMIN_KEY_RANDOM_LEN);
    key.push_str(ADMIN_KEY_PREFIX);
    while key.len() < ADMIN_KEY_PREFIX.len() + ADMIN_KEY_RANDOM_LEN {
        let byte = (rng.next_u32() & 0xff) as u8;
        // Rejection sampling: 248 = 4 * 62, so every character is equally likely.
        if byte < 248 {
            key.push(char::from(ALPHABET[usize::from(byte % 62)]));
        }
    }
    key
}

fn hasher() -> Result<Argon2<'static>, KeyError> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_LANES, None)
        .map_err(|error| KeyError::Hash(error.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a (trimmed) admin key to an argon2id PHC string with the given 16-byte salt.
pub fn hash_admin_key(key: &str, salt: &[u8; 16]) -> Result<String, KeyError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    let hash = hasher()?
        .hash_password_with_salt(key.as_bytes(), salt)
        .map_err(|error| KeyError::Hash(error.to_string()))?;
    Ok(hash.to_string())
}

/// Bytes reserved for argon2's working memory: more than the largest size (32 MiB on
/// 64-bit targets) up to which glibc's `malloc` raises its mmap threshold after a free.
/// The buffer is therefore always a mapping of its own that goes back to the operating
/// system when the check ends, instead of staying behind in a per-thread arena (a few
/// failed logins used to leave 19 MiB per blocking thread resident). Only the blocks the
/// parameters need are ever touched, so resident memory is that size, not the reserve.
const WORKING_MEMORY_RESERVE_BYTES: usize = 33 * 1024 * 1024;

/// Checks a presented key against a stored PHC string. Comparison is constant-time.
/// Slow by design: run it on a blocking thread, and bound how many run at once (each
/// needs [`ARGON2_MEMORY_KIB`] of working memory while it runs, returned afterwards).
pub fn verify_admin_key(phc: &str, presented: &str) -> bool {
    let presented = presented.trim();
    if presented.is_empty() {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version {
        Some(number) => match Version::try_from(number) {
            Ok(version) => version,
            Err(_) => return false,
        },
        None => Version::V0x13,
    };
    let (Ok(params), Some(salt), Some(expected)) =
        (Params::try_from(&parsed), parsed.salt, parsed.hash)
    else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let blocks = argon2.params().block_count();
    let mut memory: Vec<Block> =
        Vec::with_capacity(blocks.max(WORKING_MEMORY_RESERVE_BYTES / Block::SIZE));
    memory.resize(blocks, Block::new());
    let mut derived = vec![0u8; expected.len()];
    if argon2
        .hash_password_into_with_memory(presented.as_bytes(), &salt, &mut derived, &mut memory[..])
        .is_err()
    {
        return false;
    }
    constant_time_eq(&derived, expected.as_bytes())
}

/// Checks a presented key against a credential record of the Go server (version 1):
/// `HMAC-SHA256(key = salt, message = trimmed admin key)`, or PBKDF2-HMAC-SHA256 with
/// `iterations` rounds when that is above 1. `salt` and `expected` are the decoded
/// record fields. The final comparison is constant-time.
pub fn verify_legacy_admin_key(
    salt: &[u8],
    expected: &[u8],
    iterations: u32,
    presented: &str,
) -> bool {
    use hmac::{KeyInit, Mac};
    type HmacSha256 = hmac::Hmac<sha2::Sha256>;
    let presented = presented.trim();
    if presented.is_empty() || expected.len() != 32 {
        return false;
    }
    let derived: [u8; 32] = if iterations <= 1 {
        let Ok(mut mac) = HmacSha256::new_from_slice(salt) else {
            return false;
        };
        mac.update(presented.as_bytes());
        mac.finalize().into_bytes().into()
    } else {
        // PBKDF2 with a 32-byte output is exactly one block: U1 = HMAC(P, S || 1),
        // Ui = HMAC(P, Ui-1), result = U1 xor ... xor Uc.
        let Ok(mac) = HmacSha256::new_from_slice(presented.as_bytes()) else {
            return false;
        };
        let mut round = mac.clone();
        round.update(salt);
        round.update(&1u32.to_be_bytes());
        let mut block: [u8; 32] = round.finalize().into_bytes().into();
        let mut result = block;
        for _ in 1..iterations {
            let mut round = mac.clone();
            round.update(&block);
            block = round.finalize().into_bytes().into();
            for (out, byte) in result.iter_mut().zip(block.iter()) {
                *out ^= byte;
            }
        }
        result
    };
    constant_time_eq(&derived, expected)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right.iter())
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let mut rng = rand::rng();
        let key = generate_admin_key(&mut rng);
        assert!(key.starts_with("cmp_admin_"), "{key}");
        assert_eq!(key.len(), 42);
        assert!(key[10..].bytes().all(|byte| byte.is_ascii_alphanumeric()));
        assert_ne!(key, generate_admin_key(&mut rng));
    }

    #[test]
    fn hashes_verify_only_the_right_key_whatever_its_prefix() {
        let salt = [7u8; 16];
        let phc = hash_admin_key("cpamp_OldStyleKey123", &salt).expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_admin_key(&phc, "cpamp_OldStyleKey123"));
        assert!(verify_admin_key(&phc, "  cpamp_OldStyleKey123 "));
        assert!(!verify_admin_key(&phc, "cpamp_OldStyleKey124"));
        assert!(!verify_admin_key(&phc, ""));
        assert!(!verify_admin_key(
            "not a phc string",
            "cpamp_OldStyleKey123"
        ));
        assert!(matches!(hash_admin_key("  ", &salt), Err(KeyError::Empty)));
    }

    #[test]
    fn go_records_verify_with_hmac_sha256() {
        use hmac::{KeyInit, Mac};
        let salt = [5u8; 16];
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&salt).expect("hmac");
        mac.update(b"cpamp_GoGeneratedKey");
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert!(verify_legacy_admin_key(
            &salt,
            &expected,
            1,
            " cpamp_GoGeneratedKey "
        ));
        assert!(!verify_legacy_admin_key(
            &salt,
            &expected,
            1,
            "cpamp_GoGeneratedKez"
        ));
        assert!(!verify_legacy_admin_key(&salt, &expected, 1, ""));
        assert!(!verify_legacy_admin_key(
            &salt,
            &expected[..31],
            1,
            "cpamp_GoGeneratedKey"
        ));
        // PBKDF2 with one round equals a single HMAC over salt || 1 keyed by the password;
        // two rounds must differ from it.
        assert!(!verify_legacy_admin_key(
            &salt,
            &expected,
            2,
            "cpamp_GoGeneratedKey"
        ));
        // PBKDF2-HMAC-SHA256 reference vectors (password "password", salt "salt").
        let two = hex::decode("ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43")
            .expect("hex");
        assert!(verify_legacy_admin_key(b"salt", &two, 2, "password"));
        let many = hex::decode("c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a")
            .expect("hex");
        assert!(verify_legacy_admin_key(b"salt", &many, 4096, "password"));
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
    }
}
