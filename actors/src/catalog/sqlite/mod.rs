//! The embedded catalog: SQLite (WAL). One writer connection serialises
//! every change; a few read connections serve queries concurrently. All
//! SQLite work runs on blocking threads, never on the async executor.

mod jobs;
mod outbox;
mod schema;
mod usage;
mod videos;

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

use crate::error::CoreError;

/// Read connections: queries run in parallel up to this many.
const READERS: usize = 4;

/// Handle to the catalog; cheap to clone.
#[derive(Clone)]
pub struct SqliteCatalog {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: Arc<Path>,
}

impl std::fmt::Debug for SqliteCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteCatalog")
            .field("path", &self.path)
            .finish()
    }
}

fn configure(conn: &Connection) -> Result<(), CoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

impl SqliteCatalog {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self, CoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| CoreError::Storage(format!("create {}: {e}", dir.display())))?;
        }
        let mut writer = Connection::open(path)?;
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(CoreError::Schema(format!(
                "SQLite refused WAL mode ({mode})"
            )));
        }
        configure(&writer)?;
        schema::migrate(&mut writer)?;
        let readers = (0..READERS)
            .map(|_| {
                let c = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                configure(&c)?;
                Ok(c)
            })
            .collect::<Result<Vec<_>, CoreError>>()?;
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(Mutex::new(readers)),
            path: path.into(),
        })
    }

    /// Opens an existing database read-only, creating and migrating
    /// nothing (`vidmill doctor`); refuses a missing file or a schema other
    /// than this code's.
    pub fn inspect(path: &Path) -> Result<Self, CoreError> {
        if !path.is_file() {
            return Err(CoreError::Storage(format!(
                "{} does not exist (vidmill creates it on its first start)",
                path.display()
            )));
        }
        let open = || -> Result<Connection, CoreError> {
            let c = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            configure(&c)?;
            Ok(c)
        };
        let conn = open()?;
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version != schema::latest() {
            return Err(CoreError::Schema(format!(
                "schema version {version}, this vidmill writes {}: start the server once to migrate",
                schema::latest()
            )));
        }
        Ok(Self {
            writer: Arc::new(Mutex::new(conn)),
            readers: Arc::new(Mutex::new(vec![open()?])),
            path: path.into(),
        })
    }

    /// Runs `f` with the writer connection on a blocking thread.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, CoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, CoreError> + Send + 'static,
    {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer
                .lock()
                .map_err(|_| CoreError::Poisoned("catalog writer"))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| CoreError::Internal(format!("catalog task: {e}")))?
    }

    /// Runs `f` with a read connection on a blocking thread.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, CoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, CoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let taken = readers
                .lock()
                .map_err(|_| CoreError::Poisoned("catalog readers"))?
                .pop();
            // All readers busy: open a short-lived one rather than wait.
            let conn = match taken {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                    configure(&c)?;
                    c
                }
            };
            let result = f(&conn);
            if let Ok(mut pool) = readers.lock() {
                if pool.len() < READERS {
                    pool.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|e| CoreError::Internal(format!("catalog task: {e}")))?
    }

    /// The schema version this code writes.
    pub fn schema_version() -> u32 {
        schema::latest()
    }
}

catalog_by_inherent_methods!(SqliteCatalog);

impl SqliteCatalog {
    /// Whether the catalog answers within `limit` (`/readyz`).
    pub(crate) async fn ready(&self, limit: std::time::Duration) -> Result<(), CoreError> {
        let read = self.read(|conn| Ok(conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?));
        match tokio::time::timeout(limit, read).await {
            Ok(r) => r.map(drop),
            Err(_) => Err(CoreError::Unavailable(
                "the catalog did not answer in time".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sqlite");
        drop(SqliteCatalog::open(&path).expect("open"));
        let conn = Connection::open(&path).expect("raw");
        conn.pragma_update(None, "user_version", 999).expect("bump");
        drop(conn);
        let err = SqliteCatalog::open(&path).expect_err("refused");
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn reopening_keeps_the_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sqlite");
        drop(SqliteCatalog::open(&path).expect("open"));
        drop(SqliteCatalog::open(&path).expect("reopen"));
    }
}
