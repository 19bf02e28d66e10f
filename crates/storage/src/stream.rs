//! Event streams: any number of events read page by page from one snapshot.
//!
//! A stream owns a read-only connection of its own (so a long download never
//! holds a slot of the query pool) with a transaction open for its whole life:
//! SQLite's WAL snapshot isolation then guarantees it sees exactly the events
//! committed before it opened, while the writer keeps committing. Pages are
//! read by keyset on `(timestamp_ms, id)`, so memory stays flat at any size.
//!
//! Holding the snapshot keeps the WAL from being reset until the stream ends;
//! WAL maintenance catches up afterwards. Streams end (and release it) when
//! read to the end or dropped.

use std::collections::{HashMap, HashSet, VecDeque};

use cpamp_domain::StoreError;
use cpamp_domain::analytics::query::RawEvent;
use cpamp_domain::analytics::usage_payload_key;
use cpamp_domain::ports::{EventPages, EventSelection, EventStream, StreamOrder, StreamTallies};
use sqlx::SqliteConnection;

use crate::analytics::{EVENT_COLUMNS, lock_read};
use crate::{SqliteStore, error};

/// Events per page.
const PAGE: i64 = 1024;
/// Events per page of a stream in usage-payload order (read by id, whole rows).
const GROUPED_PAGE: usize = 256;

fn db(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| error::map(source, context)
}

/// An open stream (see the module documentation).
pub struct SqliteEventPages {
    store: SqliteStore,
    connection: Option<SqliteConnection>,
    /// `WHERE` conditions every page adds its keyset bound to.
    filter: String,
    order: StreamOrder,
    /// The last delivered `(timestamp_ms, id)`, or the starting bound.
    after: (i64, i64),
    total: u64,
    remaining: u64,
    /// The ids still to deliver, in order, when the order is not by time
    /// (`open_usage_groups`).
    ids: Option<VecDeque<i64>>,
}

impl std::fmt::Debug for SqliteEventPages {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SqliteEventPages")
            .field("total", &self.total)
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl EventStream for SqliteStore {
    type Pages = SqliteEventPages;
    type Export = crate::SqliteExport;

    async fn open_export(
        &self,
        selection: EventSelection,
        format: cpamp_domain::transfer::export::ExportFormat,
    ) -> Result<crate::SqliteExport, StoreError> {
        self.open_export_stream(selection, format).await
    }

    async fn open_event_stream(
        &self,
        selection: EventSelection,
    ) -> Result<SqliteEventPages, StoreError> {
        let mut connection = self.dedicated_reader().await?;
        // The snapshot starts with the first read after BEGIN and lasts until the
        // stream ends: every later statement sees the same database.
        sqlx::query("BEGIN")
            .execute(&mut connection)
            .await
            .map_err(db("begin snapshot"))?;
        self.refresh(&mut connection).await?;
        let Some(filter) = self.filter_sql(&mut connection, &selection).await? else {
            return Ok(self.empty_stream(selection.order));
        };
        let (from_ms, to_ms) = (filter.from_ms, filter.to_ms);
        let whole = filter.conditions.join(" AND ");
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM usage_events WHERE {whole}"
        )))
        .fetch_one(&mut connection)
        .await
        .map_err(db("count events"))?;
        let mut total = u64::try_from(count).unwrap_or(0);
        // Pages carry their time bound in the keyset alone: given a second bound on
        // `timestamp_ms` in the same direction, SQLite may walk the index from the
        // selection's start on every page, which makes a large export quadratic.
        let mut conditions = filter.conditions;
        let (mut start, bound) = match selection.order {
            StreamOrder::OldestFirst => ((from_ms, i64::MIN), format!("timestamp_ms < {to_ms}")),
            StreamOrder::NewestFirst => (
                (to_ms.saturating_sub(1), i64::MAX),
                format!("timestamp_ms >= {from_ms}"),
            ),
        };
        conditions[0] = bound;
        let mut filter = conditions.join(" AND ");
        if let Some(newest) = selection.newest
            && newest < total
        {
            total = newest;
            if newest == 0 {
                return Ok(self.empty_stream(selection.order));
            }
            // The oldest event that is still among the newest `n`.
            let cutoff: (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT timestamp_ms, id FROM usage_events WHERE {whole} \
                 ORDER BY timestamp_ms DESC, id DESC LIMIT 1 OFFSET ?"
            )))
            .bind(i64::try_from(newest - 1).unwrap_or(i64::MAX))
            .fetch_one(&mut connection)
            .await
            .map_err(db("find the newest events"))?;
            match selection.order {
                // The oldest of the newest `n` is where the pages start.
                StreamOrder::OldestFirst => start = (cutoff.0, cutoff.1.saturating_sub(1)),
                StreamOrder::NewestFirst => filter.push_str(&format!(
                    " AND (timestamp_ms > {0} OR (timestamp_ms = {0} AND id >= {1}))",
                    cutoff.0, cutoff.1
                )),
            }
        }
        Ok(SqliteEventPages {
            store: self.clone(),
            connection: Some(connection),
            filter,
            order: selection.order,
            after: start,
            total,
            remaining: total,
            ids: None,
        })
    }

    async fn open_usage_groups(
        &self,
        limit: u64,
    ) -> Result<(SqliteEventPages, StreamTallies), StoreError> {
        let mut connection = self.dedicated_reader().await?;
        sqlx::query("BEGIN")
            .execute(&mut connection)
            .await
            .map_err(db("begin snapshot"))?;
        self.refresh(&mut connection).await?;
        // Only the columns the order and the tallies need: a few words per event.
        let rows: Vec<EventKey> = sqlx::query_as(
            "SELECT id, endpoint_id, model_id, requested_model_id, failed, total_tokens FROM usage_events \
             ORDER BY timestamp_ms DESC, id DESC LIMIT ?",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut connection)
        .await
        .map_err(db("list the newest events"))?;
        let mut tallies = StreamTallies::default();
        let mut order = Vec::with_capacity(rows.len());
        {
            let state = lock_read(self.read_cache());
            for (position, (id, endpoint, model, requested, failed, tokens)) in
                rows.into_iter().enumerate()
            {
                tallies.events += 1;
                tallies.failed += u64::from(failed != 0);
                tallies.total_tokens = tallies.total_tokens.saturating_add(tokens);
                order.push((
                    state.text(endpoint),
                    state.analytics_model(model, requested),
                    position,
                    id,
                ));
            }
        }
        // Newest first within a group: the position in the newest-first listing.
        order.sort_unstable_by(|a, b| {
            usage_payload_key(&a.0)
                .cmp(usage_payload_key(&b.0))
                .then_with(|| usage_payload_key(&a.1).cmp(usage_payload_key(&b.1)))
                .then_with(|| a.2.cmp(&b.2))
        });
        let ids: VecDeque<i64> = order.into_iter().map(|entry| entry.3).collect();
        let mut pages = self.empty_stream(StreamOrder::NewestFirst);
        pages.total = tallies.events;
        pages.remaining = tallies.events;
        if !ids.is_empty() {
            pages.connection = Some(connection);
            pages.ids = Some(ids);
        }
        Ok((pages, tallies))
    }
}

/// Id, endpoint, model and requested model ids, failed flag and total tokens.
type EventKey = (i64, Option<i64>, Option<i64>, Option<i64>, i64, i64);

impl SqliteStore {
    fn empty_stream(&self, order: StreamOrder) -> SqliteEventPages {
        SqliteEventPages {
            store: self.clone(),
            connection: None,
            filter: String::new(),
            order,
            after: (0, 0),
            total: 0,
            remaining: 0,
            ids: None,
        }
    }

    /// The selection as SQL conditions (ids are inlined integers), or `None`
    /// when a filter names only values that were never stored.
    pub(crate) async fn filter_sql(
        &self,
        connection: &mut SqliteConnection,
        selection: &EventSelection,
    ) -> Result<Option<Filter>, StoreError> {
        let from_ms = selection.from_ms.unwrap_or(i64::MIN);
        let to_ms = selection.to_ms.unwrap_or(i64::MAX);
        let mut conditions = vec![range_sql(from_ms, to_ms)];
        if !selection.models.is_empty() {
            let analytics: HashSet<i64> = self
                .model_ids(connection, &selection.models)
                .await?
                .into_iter()
                .collect();
            let effective = lock_read(self.read_cache()).effective_models_of(&analytics);
            if effective.is_empty() {
                return Ok(None);
            }
            conditions.push(format!(
                "coalesce(requested_model_id, model_id) IN ({})",
                join_ids(&effective)
            ));
        }
        if !selection.api_key_hashes.is_empty() {
            let mut ids = Vec::new();
            for hash in &selection.api_key_hashes {
                let id: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM dims WHERE kind = ? AND value = ?")
                        .bind(crate::dims::DimKind::ApiKeyHash as i64)
                        .bind(hash.trim().to_ascii_lowercase())
                        .fetch_optional(&mut *connection)
                        .await
                        .map_err(db("read key ids"))?;
                ids.extend(id);
            }
            if ids.is_empty() {
                return Ok(None);
            }
            conditions.push(format!("api_key_hash_id IN ({})", join_ids(&ids)));
        }
        Ok(Some(Filter {
            from_ms,
            to_ms,
            conditions,
        }))
    }
}

/// A selection as SQL: its time range (also the first condition) and every condition.
pub(crate) struct Filter {
    pub(crate) from_ms: i64,
    pub(crate) to_ms: i64,
    pub(crate) conditions: Vec<String>,
}

fn range_sql(from_ms: i64, to_ms: i64) -> String {
    format!("timestamp_ms >= {from_ms} AND timestamp_ms < {to_ms}")
}

fn join_ids(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

impl EventPages for SqliteEventPages {
    fn total(&self) -> u64 {
        self.total
    }

    async fn next_page(&mut self) -> Result<Vec<RawEvent>, StoreError> {
        if self.remaining == 0 {
            self.finish().await;
            return Ok(Vec::new());
        }
        let Some(connection) = self.connection.as_mut() else {
            return Ok(Vec::new());
        };
        if let Some(ids) = self.ids.as_mut() {
            let wanted: Vec<i64> = ids.drain(..ids.len().min(GROUPED_PAGE)).collect();
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM usage_events WHERE id IN ({})",
                join_ids(&wanted)
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut *connection)
                .await
                .map_err(db("read events"))?;
            let mut found: HashMap<i64, RawEvent> = {
                let state = lock_read(self.store.read_cache());
                rows.iter()
                    .map(|row| {
                        let event = self.store.event_from_row(&state, row);
                        (event.id, event)
                    })
                    .collect()
            };
            drop(rows);
            let events: Vec<RawEvent> = wanted.iter().filter_map(|id| found.remove(id)).collect();
            self.remaining = self.remaining.saturating_sub(wanted.len() as u64);
            if self.remaining == 0 {
                self.finish().await;
            }
            return Ok(events);
        }
        let (keyset, order) = match self.order {
            StreamOrder::OldestFirst => (
                "timestamp_ms >= ?1 AND (timestamp_ms > ?1 OR id > ?2)",
                "timestamp_ms, id",
            ),
            StreamOrder::NewestFirst => (
                "timestamp_ms <= ?1 AND (timestamp_ms < ?1 OR id < ?2)",
                "timestamp_ms DESC, id DESC",
            ),
        };
        let limit = i64::try_from(self.remaining).unwrap_or(PAGE).min(PAGE);
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM usage_events WHERE {} AND {keyset} ORDER BY {order} LIMIT {limit}",
            self.filter
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.after.0)
            .bind(self.after.1)
            .fetch_all(&mut *connection)
            .await
            .map_err(db("read events"))?;
        let events: Vec<RawEvent> = {
            let state = lock_read(self.store.read_cache());
            rows.iter()
                .map(|row| self.store.event_from_row(&state, row))
                .collect()
        };
        if let Some(last) = events.last() {
            self.after = (last.timestamp_ms, last.id);
        }
        self.remaining = self.remaining.saturating_sub(events.len() as u64);
        if events.is_empty() {
            self.remaining = 0;
            self.finish().await;
        }
        Ok(events)
    }
}

impl SqliteEventPages {
    /// Ends the snapshot and closes the connection.
    async fn finish(&mut self) {
        if let Some(mut connection) = self.connection.take() {
            let _ = sqlx::query("COMMIT").execute(&mut connection).await;
            let _ = sqlx::Connection::close(connection).await;
        }
    }
}
