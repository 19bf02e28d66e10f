//! Account automation services: what runs beside the HTTP routes to label usage events
//! with CPA's credentials and act on those credentials.
//!
//! Layout:
//! - `cpa`: the CPA credential calls ([`cpa::CpaClient`]: auth files, status, delete,
//!   download, `api-call`).
//! - `enrich`: the auth-file cache that labels new events ([`enrich::Enricher`]).
//! - `ingest`: the collector's sink, wrapping the store ([`ingest::IngestSink`]).

pub mod cpa;
pub mod enrich;
pub mod ingest;

use std::sync::Arc;
use std::time::Duration;

use crate::connection::CpaConnection;

/// How long a collector start waits for the first auth-file listing of a connection.
/// Nothing is popped yet, so CPA still holds every event meanwhile.
pub const FIRST_LISTING_WAIT: Duration = Duration::from_secs(2);

/// The automation services of one process. Cheap to clone.
#[derive(Clone, Default)]
pub struct Automation {
    pub enricher: Arc<Enricher>,
}

pub use enrich::Enricher;

impl Automation {
    /// The collector (re)starts with `connection` (or stops: `None`).
    pub async fn collector_connection(&self, connection: Option<&CpaConnection>) {
        self.enricher
            .set_source(connection.map(cpa::CpaClient::new));
        if connection.is_some() {
            self.enricher.ready(FIRST_LISTING_WAIT).await;
        }
    }
}
