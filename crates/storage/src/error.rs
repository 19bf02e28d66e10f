//! Maps sqlx errors into the domain's [`StoreError`], inside storage.

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

/// True when the error means "try again later" (locked, read-only, disk full, IO).
pub fn is_unavailable(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable { .. })
}
