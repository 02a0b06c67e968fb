//! How PostgreSQL's failures become the core's: a connection that is down,
//! cut or refused is `Unavailable` (worth retrying, and what `/readyz`
//! reports); anything the database said about a statement is an internal
//! error, as SQLite's are, since the core's statements are not the user's.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::error::CoreError;

/// SQLSTATE classes and codes that mean "the database is not there now".
fn is_unavailable(code: &SqlState) -> bool {
    let code = code.code();
    code.starts_with("08") // connection exception
        || code.starts_with("57P") // admin or crash shutdown, cannot connect now
        || code == "53300" // too many connections
        || code == "25006" // read-only transaction: a standby answered
}

/// Maps a statement's or connection's failure.
pub(super) fn db(e: tokio_postgres::Error) -> CoreError {
    match e.code() {
        Some(code) if is_unavailable(code) => CoreError::Unavailable(format!("database: {e}")),
        Some(_) => CoreError::Database(e.to_string()),
        // No SQLSTATE: the connection failed, was closed or timed out.
        None => CoreError::Unavailable(format!("database: {e}")),
    }
}

/// Maps a failure to get a pooled connection.
pub(super) fn pool(e: PoolError) -> CoreError {
    match e {
        PoolError::Backend(e) => db(e),
        PoolError::Timeout(kind) => {
            CoreError::Unavailable(format!("database: no connection in time ({kind:?})"))
        }
        other => CoreError::Unavailable(format!("database pool: {other}")),
    }
}

/// A column that did not decode: the schema and this code disagree.
pub(super) fn column(e: tokio_postgres::Error) -> CoreError {
    CoreError::Internal(format!("database column: {e}"))
}

/// A stored JSON document that does not decode.
pub(super) fn decode(what: &str, e: serde_json::Error) -> CoreError {
    CoreError::Internal(format!("stored {what}: {e}"))
}

pub(super) fn encode(e: serde_json::Error) -> CoreError {
    CoreError::Internal(format!("encode: {e}"))
}

/// A count or size that does not fit the column's type.
pub(super) fn range(what: &str) -> CoreError {
    CoreError::Internal(format!("{what} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_codes_are_unavailable() {
        assert!(is_unavailable(&SqlState::ADMIN_SHUTDOWN));
        assert!(is_unavailable(&SqlState::CONNECTION_FAILURE));
        assert!(is_unavailable(&SqlState::TOO_MANY_CONNECTIONS));
        assert!(!is_unavailable(&SqlState::UNIQUE_VIOLATION));
        assert!(!is_unavailable(&SqlState::SYNTAX_ERROR));
    }
}
