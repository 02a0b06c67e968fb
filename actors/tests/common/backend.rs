//! The catalog the core's tests run on: every test of the core runs once
//! on SQLite and, with the `postgres` feature (on in a workspace build),
//! once more on a real PostgreSQL 15 (`pg.rs`): the same suite, two
//! backends. A test's backend is a task-local set by [`on`]; the catalog
//! of a test directory is the same database however often it is opened
//! (a restart test writes before the core starts, and reads after).

use std::path::Path;
#[cfg(feature = "postgres")]
use std::path::PathBuf;
use std::sync::Arc;

use vidmill_actors::{Catalog, Shared, SqliteCatalog};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    #[cfg(feature = "postgres")]
    Postgres,
}

tokio::task_local! {
    static BACKEND: Backend;
}

/// Runs `test` with `backend` as its catalog.
pub async fn on<F: std::future::Future<Output = ()>>(backend: Backend, test: F) {
    BACKEND.scope(backend, test).await
}

pub fn backend() -> Backend {
    BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite)
}

/// The node name the core's tests run as (the core's default).
pub const NODE: &str = "local";

/// The shared state of the test directory `dir` on the current backend.
pub async fn shared_for(dir: &Path) -> Shared {
    match backend() {
        Backend::Sqlite => {
            Shared::sqlite(SqliteCatalog::open(&dir.join("db.sqlite")).expect("catalog"))
        }
        #[cfg(feature = "postgres")]
        Backend::Postgres => {
            let url = database_for(dir).await;
            Shared::postgres(&url, NODE).await.expect("postgres")
        }
    }
}

/// The catalog of the test directory `dir`, as a test reads it.
pub async fn catalog_for(dir: &Path) -> Arc<dyn Catalog> {
    shared_for(dir).await.catalog
}

/// One database per test directory, kept for the whole test process.
#[cfg(feature = "postgres")]
async fn database_for(dir: &Path) -> String {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static DATABASES: Mutex<Option<HashMap<PathBuf, Arc<super::pg::TestDb>>>> = Mutex::new(None);
    let known = DATABASES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(dir)
        .map(|db| db.url.clone());
    if let Some(url) = known {
        return url;
    }
    let db = Arc::new(super::pg::TestDb::new().await);
    let url = db.url.clone();
    DATABASES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(dir.to_path_buf(), db);
    url
}

/// Declares each listed `async fn` test once per backend:
/// `on_sqlite::name` and `on_postgres::name`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::backend::on($crate::common::backend::Backend::Sqlite, super::$name()).await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::backend::on($crate::common::backend::Backend::Postgres, super::$name()).await;
                }
            )*
        }
    };
}
