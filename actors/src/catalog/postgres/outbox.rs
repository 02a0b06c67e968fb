//! The notification outbox on PostgreSQL: one row per channel for each
//! `ready` or `failed` state event, written in the same transaction as the
//! event, retried with backoff by the database's clock. Also where owners
//! are mailed.

use tokio_postgres::GenericClient;

use super::error::{column, db, decode, range};
use super::videos::json;
use super::PgCatalog;
use crate::catalog::{Pending, CHANNELS};
use crate::error::CoreError;
use crate::model::StateEvent;
use crate::state::VideoState;

/// Adds the notifications for `event` when it ends a video's processing.
pub(super) async fn enqueue(c: &impl GenericClient, event: &StateEvent) -> Result<(), CoreError> {
    let kind = match event.state {
        VideoState::Ready => "video.ready",
        VideoState::Failed => "video.failed",
        _ => return Ok(()),
    };
    let payload = json(event)?;
    let seq = i64::try_from(event.seq).map_err(|_| range("seq"))?;
    for channel in CHANNELS {
        c.execute(
            "INSERT INTO outbox (video_id, seq, kind, channel, payload)
             VALUES ($1, $2, $3, $4, $5::text::jsonb)",
            &[&event.video_id, &seq, &kind, &channel, &payload],
        )
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// How long a node's claim on a notification holds: longer than one
/// delivery attempt takes (a webhook's timeout), short enough that a dead
/// node's rows go out soon after.
const CLAIM: std::time::Duration = std::time::Duration::from_secs(120);

impl PgCatalog {
    /// Undelivered notifications, oldest first (at most `limit`), claimed
    /// by this node for [`CLAIM`]: no other node delivers them meanwhile.
    /// Rows another node has claimed are passed over until its claim lapses.
    pub async fn pending_notifications(&self, limit: u32) -> Result<Vec<Pending>, CoreError> {
        let client = self.client().await?;
        let mut rows = client
            .query(
                "WITH picked AS (
                     SELECT id FROM outbox
                     WHERE delivered_at IS NULL
                       AND (claimed_until IS NULL OR claimed_until < now() OR claimed_by = $2)
                     ORDER BY id LIMIT $1
                     FOR UPDATE SKIP LOCKED)
                 UPDATE outbox o SET claimed_by = $2,
                        claimed_until = now() + $3::bigint * interval '1 second'
                 FROM picked WHERE o.id = picked.id
                 RETURNING o.id, o.video_id, o.seq, o.kind, o.channel, o.payload::text, o.attempts,
                        GREATEST(0, EXTRACT(EPOCH FROM o.next_attempt_at - now()))::float8,
                        EXTRACT(EPOCH FROM now() - o.created_at)::float8",
                &[
                    &i64::from(limit),
                    &&*self.node,
                    &CLAIM.as_secs().cast_signed(),
                ],
            )
            .await
            .map_err(db)?;
        // RETURNING keeps no order.
        rows.sort_by_key(|r| r.try_get::<_, i64>(0).unwrap_or(i64::MAX));
        rows.iter()
            .map(|r| {
                let seq: i64 = r.try_get(2).map_err(column)?;
                let attempts: i32 = r.try_get(6).map_err(column)?;
                Ok(Pending {
                    id: r.try_get(0).map_err(column)?,
                    video_id: r.try_get(1).map_err(column)?,
                    seq: u64::try_from(seq).map_err(|_| range("seq"))?,
                    kind: r.try_get(3).map_err(column)?,
                    channel: r.try_get(4).map_err(column)?,
                    event: serde_json::from_str(r.try_get(5).map_err(column)?)
                        .map_err(|e| decode("outbox payload", e))?,
                    attempts: u32::try_from(attempts).map_err(|_| range("attempts"))?,
                    wait_seconds: r.try_get(7).map_err(column)?,
                    age_seconds: r.try_get(8).map_err(column)?,
                })
            })
            .collect()
    }

    pub async fn notification_delivered(&self, id: i64) -> Result<(), CoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE outbox SET delivered_at = now(), attempts = attempts + 1 WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Counts a failed attempt and sets the next one `delay_seconds` away.
    pub async fn notification_failed(&self, id: i64, delay_seconds: u64) -> Result<(), CoreError> {
        let delay = i64::try_from(delay_seconds).unwrap_or(i64::MAX);
        let client = self.client().await?;
        client
            .execute(
                "UPDATE outbox SET attempts = attempts + 1,
                     next_attempt_at = now() + $2::bigint * interval '1 second',
                     claimed_by = NULL, claimed_until = NULL
                 WHERE id = $1",
                &[&id, &delay],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Removes delivered notifications older than `days`.
    pub async fn purge_delivered(&self, days: u32) -> Result<usize, CoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM outbox WHERE delivered_at IS NOT NULL
                 AND delivered_at < now() - $1::bigint * interval '1 day'",
                &[&i64::from(days)],
            )
            .await
            .map_err(db)?;
        Ok(n as usize)
    }

    /// Forgets a notification that will not be delivered.
    pub async fn drop_notification(&self, id: i64) -> Result<(), CoreError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM outbox WHERE id = $1", &[&id])
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Remembers where to mail `owner`.
    pub async fn set_contact(&self, owner: &str, email: &str) -> Result<(), CoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO contacts (owner, email) VALUES ($1, $2)
                 ON CONFLICT (owner) DO UPDATE SET email = excluded.email, updated_at = now()
                 WHERE contacts.email <> excluded.email",
                &[&owner, &email],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Where to mail `owner`, when known.
    pub async fn contact(&self, owner: &str) -> Result<Option<String>, CoreError> {
        let client = self.client().await?;
        client
            .query_opt("SELECT email FROM contacts WHERE owner = $1", &[&owner])
            .await
            .map_err(db)?
            .map(|r| r.try_get(0).map_err(column))
            .transpose()
    }
}
