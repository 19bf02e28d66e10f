//! Shared application state handed to every handler.

use cpamp_domain::analytics::query::AnalyticsStore;
use cpamp_domain::ports::{EventSink, SettingsStore, StoreStats};

/// Everything the API needs from storage, as one bound. The binary names the
/// concrete type once (`configure::<SqliteStore>`).
pub trait Store: EventSink + SettingsStore + StoreStats + AnalyticsStore {}

impl<T: EventSink + SettingsStore + StoreStats + AnalyticsStore> Store for T {}

/// Per-process state shared by all workers (registered as `web::Data<AppState<S>>`;
/// the [`crate::auth::AdminAuthenticator`] is registered beside it).
pub struct AppState<S: Store> {
    pub store: S,
    /// Unix ms when the application was built; reported by `/usage-service/info`.
    pub started_at_ms: i64,
    /// Canonical absolute path of the SQLite database.
    pub db_path: String,
    /// `USAGE_QUERY_LIMIT`: most events the compatible usage endpoint and export return.
    pub query_limit: i64,
}
