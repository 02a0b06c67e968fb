//! The notification outbox: one row per channel for each `ready` or
//! `failed` state event, written in the same transaction as the event (so
//! none is lost), then delivered in order per video and channel, retried
//! with backoff, dropped when too old. Also where owners are mailed.

use rusqlite::{params, OptionalExtension};

use super::SqliteCatalog;
use crate::catalog::{Pending, CHANNELS};
use crate::error::CoreError;
use crate::model::{StateEvent, VideoId};

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// Adds the notification for `event` when it ends a video's processing.
pub(super) fn enqueue(conn: &rusqlite::Connection, event: &StateEvent) -> Result<(), CoreError> {
    let kind = match event.state {
        crate::state::VideoState::Ready => "video.ready",
        crate::state::VideoState::Failed => "video.failed",
        _ => return Ok(()),
    };
    let payload =
        serde_json::to_string(event).map_err(|e| CoreError::Internal(format!("encode: {e}")))?;
    for channel in CHANNELS {
        conn.execute(
            &format!(
                "INSERT INTO outbox (video_id, seq, kind, payload, channel, next_attempt_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, {NOW}, {NOW})"
            ),
            params![event.video_id, event.seq, kind, payload, channel],
        )?;
    }
    Ok(())
}

impl SqliteCatalog {
    /// Undelivered notifications, oldest first (at most `limit`).
    pub async fn pending_notifications(&self, limit: u32) -> Result<Vec<Pending>, CoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, video_id, seq, kind, channel, payload, attempts,
                        MAX(0.0, (julianday(next_attempt_at) - julianday('now')) * 86400.0),
                        (julianday('now') - julianday(created_at)) * 86400.0
                 FROM outbox WHERE delivered_at IS NULL ORDER BY id LIMIT ?1",
            )?;
            type Row = (i64, VideoId, u64, String, String, String, u32, f64, f64);
            let rows = stmt.query_map([limit], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (
                    id,
                    video_id,
                    seq,
                    kind,
                    channel,
                    payload,
                    attempts,
                    wait_seconds,
                    age_seconds,
                ): Row = row?;
                let event = serde_json::from_str(&payload)
                    .map_err(|e| CoreError::Internal(format!("outbox payload: {e}")))?;
                out.push(Pending {
                    id,
                    video_id,
                    seq,
                    kind,
                    channel,
                    event,
                    attempts,
                    wait_seconds,
                    age_seconds,
                });
            }
            Ok(out)
        })
        .await
    }

    pub async fn notification_delivered(&self, id: i64) -> Result<(), CoreError> {
        self.write(move |conn| {
            conn.execute(
                &format!(
                    "UPDATE outbox SET delivered_at = {NOW}, attempts = attempts + 1 WHERE id = ?1"
                ),
                [id],
            )?;
            Ok(())
        })
        .await
    }

    /// Counts a failed attempt and sets the next one `delay_seconds` away.
    pub async fn notification_failed(&self, id: i64, delay_seconds: u64) -> Result<(), CoreError> {
        self.write(move |conn| {
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1,
                 next_attempt_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?2) WHERE id = ?1",
                params![id, format!("+{delay_seconds} seconds")],
            )?;
            Ok(())
        })
        .await
    }

    /// Removes delivered notifications older than `days` (kept that long
    /// to look into deliveries).
    pub async fn purge_delivered(&self, days: u32) -> Result<usize, CoreError> {
        self.write(move |conn| {
            Ok(conn.execute(
                "DELETE FROM outbox WHERE delivered_at IS NOT NULL
                 AND julianday(delivered_at) < julianday('now') - ?1",
                [days],
            )?)
        })
        .await
    }

    /// Forgets a notification that will not be delivered.
    pub async fn drop_notification(&self, id: i64) -> Result<(), CoreError> {
        self.write(move |conn| {
            conn.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
    }
}

impl SqliteCatalog {
    /// Remembers where to mail `owner` (the `email` claim of their latest
    /// upload's token).
    pub async fn set_contact(&self, owner: &str, email: &str) -> Result<(), CoreError> {
        let (owner, email) = (owner.to_string(), email.to_string());
        self.write(move |conn| {
            conn.execute(
                &format!(
                    "INSERT INTO contacts (owner, email, updated_at) VALUES (?1, ?2, {NOW})
                     ON CONFLICT (owner) DO UPDATE SET email = ?2, updated_at = {NOW}
                     WHERE email != ?2"
                ),
                params![owner, email],
            )?;
            Ok(())
        })
        .await
    }

    /// Where to mail `owner`, when known.
    pub async fn contact(&self, owner: &str) -> Result<Option<String>, CoreError> {
        let owner = owner.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT email FROM contacts WHERE owner = ?1",
                    [owner],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }
}
