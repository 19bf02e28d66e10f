//! [`KeyHints`]: whether a client API key hash was seen in events.

use cpamp_domain::StoreError;
use cpamp_domain::ports::KeyHints;

use crate::dims::DimKind;
use crate::{SqliteStore, error};

impl KeyHints for SqliteStore {
    async fn is_known_api_key_hash(&self, api_key_hash: &str) -> Result<bool, StoreError> {
        // One probe of the (kind, value) unique index of the dictionary.
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM dims WHERE kind = ? AND value = ?")
                .bind(DimKind::ApiKeyHash as u8)
                .bind(api_key_hash)
                .fetch_optional(self.reader())
                .await
                .map_err(|error| error::map(error, "look up api key hash"))?;
        Ok(found.is_some())
    }
}
