//! The cluster catalog: PostgreSQL 15, shared by every node. One
//! deadpool pool serves the [`Catalog`], the [`JobLeases`] (claims with
//! `FOR UPDATE SKIP LOCKED`, lease tokens from a sequence) and the
//! [`UploadParts`](crate::parts::UploadParts) (holds on stored uploads,
//! tokens from the same sequence); [`PgBus`] carries wake-ups over
//! `LISTEN/NOTIFY` on a connection of its own. All times are the
//! database's clock, so the nodes' clocks never matter.

mod bus;
mod error;
mod jobs;
mod outbox;
mod parts;
mod schema;
mod usage;
mod videos;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::error::CoreError;

pub use bus::PgBus;

/// Connections per node: a node's catalog work is short statements, and a
/// cluster of a dozen nodes must stay well under PostgreSQL's default
/// `max_connections` of 100.
const POOL_SIZE: usize = 8;

/// How long a statement waits for a pooled connection, and a new
/// connection for the server, before the catalog answers `Unavailable`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Parses `url` and sets what a node's connections need unless the URL
/// says otherwise: a name operators can find in `pg_stat_activity`, a
/// connect timeout, and TCP keepalives that notice a cut connection in
/// about half a minute instead of the kernel's two hours.
pub(super) fn config(
    url: &str,
    application_name: &str,
) -> Result<tokio_postgres::Config, CoreError> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| CoreError::Internal(format!("database.url: {e}")))?;
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(15))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
    Ok(config)
}

/// Handle to the shared catalog as one node sees it; cheap to clone.
#[derive(Clone)]
pub struct PgCatalog {
    pool: Pool,
    /// This node's id: its artefacts and in-flight runs are its own.
    node: Arc<str>,
}

impl std::fmt::Debug for PgCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("PgCatalog")
            .field("node", &self.node)
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl PgCatalog {
    /// Connects to the database at `url` as node `node_id` and migrates
    /// it (waiting for another node that is migrating it now).
    pub async fn connect(url: &str, node_id: &str) -> Result<Self, CoreError> {
        let config = config(url, &format!("vidmill:{node_id}"))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A closed connection is noticed without a round trip; one
                // cut silently fails its statement, which answers Unavailable.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| CoreError::Internal(format!("database pool: {e}")))?;
        let catalog = Self {
            pool,
            node: node_id.into(),
        };
        let mut client = catalog.client().await?;
        schema::migrate(&mut client).await?;
        Ok(catalog)
    }

    /// The schema version this code writes.
    pub fn schema_version() -> u32 {
        schema::latest().unsigned_abs()
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub(crate) async fn client(&self) -> Result<Object, CoreError> {
        self.pool.get().await.map_err(error::pool)
    }
}

catalog_by_inherent_methods!(PgCatalog);

impl PgCatalog {
    /// Whether the catalog answers within `limit` (`/readyz`).
    pub(crate) async fn ready(&self, limit: Duration) -> Result<(), CoreError> {
        let probe = async {
            let client = self.client().await?;
            client.execute("SELECT 1", &[]).await.map_err(error::db)?;
            Ok(())
        };
        match tokio::time::timeout(limit, probe).await {
            Ok(r) => r,
            Err(_) => Err(CoreError::Unavailable(
                "the catalog did not answer in time".into(),
            )),
        }
    }
}
