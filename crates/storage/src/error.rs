//! Maps sqlx and rusqlite errors into the domain's [`StoreError`], inside storage.

use cpamp_domain::StoreError;

/// Turns a sqlx error into a store error that says what the caller can do.
pub(crate) fn map(error: sqlx::Error, context: &str) -> StoreError {
    match error {
        sqlx::Error::RowNotFound => StoreError::NotFound(context.to_string()),
        sqlx::Error::Database(ref database_error) if database_error.is_unique_violation() => {
            StoreError::Conflict(format!("{context}: {database_error}"))
        }
        other => {
            let message = format!("{context}: {other}");
            StoreError::unavailable(message, other)
        }
    }
}

/// Turns a rusqlite error into a store error, like [`map`] does for sqlx.
pub(crate) fn sqlite(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |error| match error {
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound(context.to_string()),
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            StoreError::Conflict(format!("{context}: {error}"))
        }
        other => StoreError::unavailable(format!("{context}: {other}"), other),
    }
}

/// True when the error means "try again later" (locked, read-only, disk full, IO).
pub fn is_unavailable(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable { .. })
}
