//! CPA's management-key check with per-IP failure counting: the fifth failure without an
//! intervening success bans the IP (30 minutes by default). Shared by HTTP and RESP.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures that start a ban.
pub const MAX_FAILURES: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// The IP is banned; carries CPA's message.
    Banned(String),
    Missing,
    Invalid,
}

impl AuthFailure {
    pub(crate) fn message(&self) -> String {
        match self {
            AuthFailure::Banned(message) => message.clone(),
            AuthFailure::Missing => "missing management key".to_string(),
            AuthFailure::Invalid => "invalid management key".to_string(),
        }
    }
}

#[derive(Default)]
struct IpEntry {
    failures: u32,
    banned_until: Option<Instant>,
}

pub(crate) struct AuthTable {
    key: String,
    ban_duration: Duration,
    entries: Mutex<HashMap<IpAddr, IpEntry>>,
    total_failures: Mutex<u64>,
}

impl AuthTable {
    pub(crate) fn new(key: String, ban_duration: Duration) -> AuthTable {
        AuthTable {
            key,
            ban_duration,
            entries: Mutex::new(HashMap::new()),
            total_failures: Mutex::new(0),
        }
    }

    /// Decides like CPA: ban check first, then empty key, then wrong key; success resets.
    pub(crate) fn check(&self, ip: IpAddr, provided: &str) -> Result<(), AuthFailure> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = entries.entry(ip).or_default();
        let now = Instant::now();
        if let Some(until) = entry.banned_until {
            if until > now {
                return Err(AuthFailure::Banned(format!(
                    "IP banned due to too many failed attempts. Try again in {}",
                    go_duration_seconds(until - now)
                )));
            }
            entry.banned_until = None;
        }
        let failure = if provided.is_empty() {
            AuthFailure::Missing
        } else if provided != self.key {
            AuthFailure::Invalid
        } else {
            entry.failures = 0;
            return Ok(());
        };
        entry.failures += 1;
        if entry.failures >= MAX_FAILURES {
            entry.failures = 0;
            entry.banned_until = Some(now + self.ban_duration);
        }
        *self
            .total_failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) += 1;
        Err(failure)
    }

    /// Counts a command sent before AUTH: CPA checks the empty key, so it is a failure too.
    pub(crate) fn pre_auth_command(&self, ip: IpAddr) -> AuthFailure {
        match self.check(ip, "") {
            Err(AuthFailure::Banned(message)) => AuthFailure::Banned(message),
            _ => AuthFailure::Missing,
        }
    }

    pub(crate) fn total_failures(&self) -> u64 {
        *self
            .total_failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn is_banned(&self, ip: IpAddr) -> bool {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(&ip)
            .and_then(|entry| entry.banned_until)
            .is_some_and(|until| until > Instant::now())
    }

    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }
}

/// Go `time.Duration.String()` of a duration rounded to whole seconds (`30m0s`, `4m7s`, `59s`).
pub(crate) fn go_duration_seconds(duration: Duration) -> String {
    let total = (duration.as_millis() + 500) / 1000;
    let (hours, minutes, seconds) = (total / 3600, (total % 3600) / 60, total % 60);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn fifth_failure_bans_and_correct_key_does_not_lift_it() {
        let table = AuthTable::new("k".into(), Duration::from_secs(1800));
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..4 {
            assert_eq!(table.check(ip, "wrong"), Err(AuthFailure::Invalid));
        }
        assert_eq!(table.check(ip, ""), Err(AuthFailure::Missing));
        match table.check(ip, "k") {
            Err(AuthFailure::Banned(message)) => {
                assert!(message.ends_with("Try again in 30m0s"), "{message}")
            }
            other => panic!("expected a ban, got {other:?}"),
        }
        assert_eq!(table.total_failures(), 5);
    }

    #[test]
    fn success_resets_the_counter() {
        let table = AuthTable::new("k".into(), Duration::from_secs(1800));
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..4 {
            let _ = table.check(ip, "wrong");
        }
        assert_eq!(table.check(ip, "k"), Ok(()));
        for _ in 0..4 {
            let _ = table.check(ip, "wrong");
        }
        assert!(!table.is_banned(ip));
    }

    #[test]
    fn go_duration_rendering() {
        assert_eq!(go_duration_seconds(Duration::from_secs(1800)), "30m0s");
        assert_eq!(
            go_duration_seconds(Duration::from_millis(1_799_400)),
            "29m59s"
        );
        assert_eq!(go_duration_seconds(Duration::from_secs(247)), "4m7s");
        assert_eq!(go_duration_seconds(Duration::from_secs(59)), "59s");
        assert_eq!(go_duration_seconds(Duration::from_secs(3600)), "1h0m0s");
    }
}
