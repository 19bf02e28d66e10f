//! The credential and client-key fields that many response rows carry
//! (`auth_file_snapshot`, `auth_index`, `source`, `source_hash`, `api_key_hash`,
//! `account_snapshot`, `auth_label_snapshot`, `auth_provider_snapshot`,
//! `auth_project_id_snapshot`), held once in [`IdentityFields`] and flattened into
//! each row.
//!
//! The rows differ in which of these keys they show, in what order, and whether an
//! empty value is left out or written as `""` (the Go server's struct tags decided
//! that per row type, and the panel reads those shapes). A zero-sized [`Layout`]
//! type names those rules once per row kind, so a row type declares its field as
//! `#[serde(flatten)] pub identity: IdentityFields<ChannelKeys>` and cannot get
//! the keys wrong.

#![warn(missing_docs)]

use std::fmt;
use std::marker::PhantomData;

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::query::{Identity, Text};

/// One identity key of a response row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// `auth_file_snapshot`.
    AuthFile,
    /// `auth_index`.
    AuthIndex,
    /// `source` (masked).
    Source,
    /// `source_hash`.
    SourceHash,
    /// `api_key_hash`.
    ApiKeyHash,
    /// `account_snapshot`.
    Account,
    /// `auth_label_snapshot`.
    Label,
    /// `auth_provider_snapshot`.
    Provider,
    /// `auth_project_id_snapshot`.
    Project,
}

impl Key {
    /// The JSON key.
    pub fn name(self) -> &'static str {
        match self {
            Key::AuthFile => "auth_file_snapshot",
            Key::AuthIndex => "auth_index",
            Key::Source => "source",
            Key::SourceHash => "source_hash",
            Key::ApiKeyHash => "api_key_hash",
            Key::Account => "account_snapshot",
            Key::Label => "auth_label_snapshot",
            Key::Provider => "auth_provider_snapshot",
            Key::Project => "auth_project_id_snapshot",
        }
    }
}

/// Whether a key is written when its value is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Empty {
    /// Left out when `""`.
    Omit,
    /// Always written, `""` when empty.
    Keep,
}

/// Which identity keys a row kind shows, in wire order.
pub trait Layout {
    /// The keys in wire order, each with its rule for empty values.
    const KEYS: &'static [(Key, Empty)];
}

use Empty::{Keep, Omit};

macro_rules! layouts {
    ($($(#[$doc:meta])* $name:ident => [$(($key:ident, $empty:ident)),* $(,)?];)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
            pub struct $name;
            impl Layout for $name {
                const KEYS: &'static [(Key, Empty)] = &[$((Key::$key, $empty)),*];
            }
        )*
    };
}

layouts! {
    /// Account, credential and API-key rows and their timelines.
    GroupKeys => [
        (AuthFile, Omit), (AuthIndex, Omit), (Source, Omit), (SourceHash, Omit),
        (Account, Omit), (Label, Omit), (Provider, Omit), (Project, Omit),
    ];
    /// Channel rows (`channel_share`, dashboard `channel_health`): keyed by auth index.
    ChannelKeys => [
        (AuthIndex, Keep), (Source, Omit), (Account, Omit), (Label, Omit), (Provider, Omit),
    ];
    /// Failure-source rows: keyed by (source hash, auth index).
    FailureSourceKeys => [
        (Source, Omit), (SourceHash, Keep), (AuthIndex, Keep),
        (Account, Omit), (Label, Omit), (Provider, Omit),
    ];
    /// Failed requests in failure lists.
    RecentFailureKeys => [
        (ApiKeyHash, Keep), (Source, Omit), (SourceHash, Keep), (AuthIndex, Keep),
        (Account, Omit), (Label, Omit), (Provider, Omit), (Project, Omit),
    ];
    /// Event items of monitoring pages.
    EventKeys => [
        (AuthIndex, Keep), (Source, Keep), (SourceHash, Keep), (ApiKeyHash, Keep),
        (Account, Keep), (Label, Keep), (AuthFile, Omit), (Provider, Keep), (Project, Omit),
    ];
    /// Header snapshots.
    SnapshotKeys => [
        (AuthFile, Omit), (AuthIndex, Omit), (Account, Omit), (Label, Omit),
        (Provider, Omit), (Project, Omit), (Source, Omit), (SourceHash, Omit),
    ];
    /// The credential contexts of an API-key row.
    ContextKeys => [
        (Account, Omit), (Label, Omit), (Provider, Omit),
        (AuthIndex, Omit), (Source, Omit), (SourceHash, Omit),
    ];
    /// Task buckets.
    TaskKeys => [(Source, Keep), (SourceHash, Keep), (AuthIndex, Keep)];
    /// Details of the CPA-compatible usage payload.
    UsageDetailKeys => [
        (Source, Keep), (AuthIndex, Omit), (ApiKeyHash, Omit), (Account, Omit),
        (Label, Omit), (AuthFile, Omit), (Provider, Omit), (Project, Omit),
    ];
}

/// The identity values of one response row, serialized flat under the keys and
/// rules of `L`. `""` means "not set". Values the layout does not list are never
/// written, so filling them is harmless.
pub struct IdentityFields<L> {
    /// The credential's auth file name.
    pub auth_file_snapshot: Text,
    /// The credential's `auth_index`.
    pub auth_index: Text,
    /// The masked source.
    pub source: Text,
    /// SHA-256 of the unmasked source.
    pub source_hash: Text,
    /// SHA-256 of the client's API key.
    pub api_key_hash: Text,
    /// The credential's account.
    pub account_snapshot: Text,
    /// The credential's label.
    pub auth_label_snapshot: Text,
    /// The snapshot provider; [`IdentityFields::of`] falls back to the event provider.
    pub auth_provider_snapshot: Text,
    /// The credential's project id.
    pub auth_project_id_snapshot: Text,
    /// Marks which keys are written (see [`Layout`]); carries no data.
    pub layout: PhantomData<L>,
}

impl<L> IdentityFields<L> {
    /// The values of a stored identity, with the provider snapshot falling back to
    /// the event provider.
    pub fn of(identity: &Identity) -> IdentityFields<L> {
        IdentityFields {
            auth_file_snapshot: identity.auth_file.clone(),
            auth_index: identity.auth_index.clone(),
            source: identity.source.clone(),
            source_hash: identity.source_hash.clone(),
            api_key_hash: identity.api_key_hash.clone(),
            account_snapshot: identity.account.clone(),
            auth_label_snapshot: identity.auth_label.clone(),
            auth_provider_snapshot: if identity.auth_provider.is_empty() {
                identity.provider.clone()
            } else {
                identity.auth_provider.clone()
            },
            auth_project_id_snapshot: identity.auth_project.clone(),
            layout: PhantomData,
        }
    }

    /// The value under `key`.
    pub fn get(&self, key: Key) -> &str {
        match key {
            Key::AuthFile => &self.auth_file_snapshot,
            Key::AuthIndex => &self.auth_index,
            Key::Source => &self.source,
            Key::SourceHash => &self.source_hash,
            Key::ApiKeyHash => &self.api_key_hash,
            Key::Account => &self.account_snapshot,
            Key::Label => &self.auth_label_snapshot,
            Key::Provider => &self.auth_provider_snapshot,
            Key::Project => &self.auth_project_id_snapshot,
        }
    }
}

impl<L> Default for IdentityFields<L> {
    fn default() -> IdentityFields<L> {
        let empty = Text::from("");
        IdentityFields {
            auth_file_snapshot: empty.clone(),
            auth_index: empty.clone(),
            source: empty.clone(),
            source_hash: empty.clone(),
            api_key_hash: empty.clone(),
            account_snapshot: empty.clone(),
            auth_label_snapshot: empty.clone(),
            auth_provider_snapshot: empty.clone(),
            auth_project_id_snapshot: empty,
            layout: PhantomData,
        }
    }
}

impl<L> Clone for IdentityFields<L> {
    fn clone(&self) -> IdentityFields<L> {
        IdentityFields {
            auth_file_snapshot: self.auth_file_snapshot.clone(),
            auth_index: self.auth_index.clone(),
            source: self.source.clone(),
            source_hash: self.source_hash.clone(),
            api_key_hash: self.api_key_hash.clone(),
            account_snapshot: self.account_snapshot.clone(),
            auth_label_snapshot: self.auth_label_snapshot.clone(),
            auth_provider_snapshot: self.auth_provider_snapshot.clone(),
            auth_project_id_snapshot: self.auth_project_id_snapshot.clone(),
            layout: PhantomData,
        }
    }
}

impl<L: Layout> fmt::Debug for IdentityFields<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, _) in L::KEYS {
            map.entry(&key.name(), &self.get(*key));
        }
        map.finish()
    }
}

impl<L: Layout> Serialize for IdentityFields<L> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, empty) in L::KEYS {
            let value = self.get(*key);
            if *empty == Keep || !value.is_empty() {
                map.serialize_entry(key.name(), value)?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Row {
        id: &'static str,
        #[serde(flatten)]
        identity: IdentityFields<ChannelKeys>,
        calls: i64,
    }

    #[test]
    fn flattened_keys_follow_the_layout_order_and_empty_rules() {
        let identity = Identity {
            provider: "openai".into(),
            auth_index: "".into(),
            source: "key-1".into(),
            source_hash: "sh1".into(),
            account: "a@example.com".into(),
            ..Identity::default()
        };
        let row = Row {
            id: "x",
            identity: IdentityFields::of(&identity),
            calls: 2,
        };
        assert_eq!(
            serde_json::to_string(&row).expect("json"),
            r#"{"id":"x","auth_index":"","source":"key-1","account_snapshot":"a@example.com","auth_provider_snapshot":"openai","calls":2}"#
        );
    }

    #[test]
    fn snapshot_provider_wins_over_the_event_provider() {
        let identity = Identity {
            provider: "openai".into(),
            auth_provider: "codex".into(),
            ..Identity::default()
        };
        let fields: IdentityFields<EventKeys> = IdentityFields::of(&identity);
        assert_eq!(fields.get(Key::Provider), "codex");
    }
}
