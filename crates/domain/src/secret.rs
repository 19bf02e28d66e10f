//! [`Secret`]: a string that never shows itself in `Debug` or `Display`.

#![warn(missing_docs)]

/// A secret value (admin key, CPA Management Key, data key material).
/// Its `Debug` prints only whether it is set, so it can sit in settings structs
/// that are logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself. Call only where it is sent to its destination.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// No value is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A short hint safe to show: the first 4 and last 4 characters of long values.
    pub fn masked(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        if chars.is_empty() {
            String::new()
        } else if chars.len() <= 8 {
            "****".to_string()
        } else {
            let head: String = chars[..4].iter().collect();
            let tail: String = chars[chars.len() - 4..].iter().collect();
            format!("{head}...{tail}")
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            formatter.write_str("Secret(unset)")
        } else {
            formatter.write_str("Secret(redacted)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_and_mask_never_reveal_the_value() {
        let secret = Secret::new("mgmt-key-0123456789");
        assert_eq!(format!("{secret:?}"), "Secret(redacted)");
        assert_eq!(secret.masked(), "mgmt...6789");
        assert_eq!(Secret::new("short").masked(), "****");
        assert_eq!(format!("{:?}", Secret::default()), "Secret(unset)");
    }
}
