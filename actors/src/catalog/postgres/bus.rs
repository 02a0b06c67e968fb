//! The cluster's event bus: `NOTIFY` to publish, `LISTEN` on a dedicated
//! connection to receive. A notification carries a wake-up (`{video,
//! seq}`) or a progress report as JSON, never a video: the event log is
//! the truth. The listener re-makes its connection by itself, with
//! backoff, and tells every subscriber to `Resync` once it listens again,
//! since whatever was published while it was away is gone.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::error::{db, encode, pool};
use crate::bus::{BusEvent, BusSubscription, EventBus, BUS_BACKLOG};
use crate::error::CoreError;

/// The notification channel every node listens on.
const CHANNEL: &str = "vidmill_bus";

/// Publishing connections per node: a `NOTIFY` is one short statement.
const PUBLISHERS: usize = 2;

/// The listener's first and longest wait before connecting again.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Handle to one node's bus; cheap to clone. The listener stops when the
/// last handle is dropped.
#[derive(Debug, Clone)]
pub struct PgBus(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    events: broadcast::Sender<BusEvent>,
    publishers: Pool,
    listener: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgBus {
    /// Connects node `node_id` to the bus of the database at `url`. The
    /// listener is listening when this returns, so a subscriber made now
    /// misses nothing published afterwards.
    pub async fn connect(url: &str, node_id: &str) -> Result<Self, CoreError> {
        let publish = super::config(url, &format!("vidmill-bus:{node_id}"))?;
        let listen = super::config(url, &format!("vidmill-listen:{node_id}"))?;
        let manager = Manager::from_config(
            publish,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let publishers = Pool::builder(manager)
            .max_size(PUBLISHERS)
            .wait_timeout(Some(super::CONNECT_TIMEOUT))
            .create_timeout(Some(super::CONNECT_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| CoreError::Internal(format!("database pool: {e}")))?;
        let (events, _) = broadcast::channel(BUS_BACKLOG);
        let session = Session::open(&listen).await?;
        let listener = tokio::spawn(listen_forever(listen, events.clone(), session));
        Ok(Self(Arc::new(Inner {
            events,
            publishers,
            listener,
        })))
    }
}

#[async_trait]
impl EventBus for PgBus {
    async fn publish(&self, event: BusEvent) -> Result<(), CoreError> {
        let payload = serde_json::to_string(&event).map_err(encode)?;
        let client = self.0.publishers.get().await.map_err(pool)?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await
            .map_err(db)?;
        Ok(())
    }

    fn subscribe(&self) -> BusSubscription {
        BusSubscription::new(self.0.events.subscribe())
    }
}

/// One listening connection: the client that said `LISTEN` and the task
/// that drives its connection, handing notifications over.
struct Session {
    _client: Client,
    payloads: mpsc::Receiver<String>,
    driver: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Session {
    async fn open(config: &tokio_postgres::Config) -> Result<Self, CoreError> {
        let (client, mut connection) = config.connect(NoTls).await.map_err(db)?;
        // As many as the bus holds for a slow subscriber: when this fills,
        // the driver stops reading and the server buffers for us.
        let (tx, payloads) = mpsc::channel(BUS_BACKLOG);
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if tx.send(n.payload().to_owned()).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        tracing::warn!(%error, "the bus listener's connection failed");
                        return;
                    }
                    None => return,
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(db)?;
        Ok(Self {
            _client: client,
            payloads,
            driver,
        })
    }

    /// Hands every notification to the subscribers until the connection ends.
    async fn forward(&mut self, events: &broadcast::Sender<BusEvent>) {
        while let Some(payload) = self.payloads.recv().await {
            match serde_json::from_str::<BusEvent>(&payload) {
                // No subscriber is no error.
                Ok(event) => drop(events.send(event)),
                Err(error) => {
                    tracing::warn!(%error, %payload, "an unreadable bus message was skipped")
                }
            }
        }
    }
}

/// Forwards notifications, re-making the connection whenever it ends.
async fn listen_forever(
    config: tokio_postgres::Config,
    events: broadcast::Sender<BusEvent>,
    mut session: Session,
) {
    loop {
        session.forward(&events).await;
        drop(session);
        let mut wait = BACKOFF.0;
        session = loop {
            tokio::time::sleep(wait).await;
            match Session::open(&config).await {
                Ok(s) => break s,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?wait, "the bus listener cannot reconnect yet");
                    wait = (wait * 2).min(BACKOFF.1);
                }
            }
        };
        tracing::info!("the bus listener reconnected; subscribers resync");
        drop(events.send(BusEvent::Resync));
    }
}
