//! Job leases on SQLite (one node): the `jobs` table, whose rows the
//! catalog's own transactions create and remove (see [`crate::catalog`]),
//! and the [`JobLeases`] that move leases on them. Times are SQLite's
//! clock in milliseconds since the epoch.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::SqliteCatalog;
use crate::error::CoreError;
use crate::leases::{JobLeases, Lease, LeasedProgress, QueueSnapshot};

/// SQLite's clock, milliseconds since the epoch.
pub(super) const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

/// Queues `video`'s job, or puts it back in the queue without its lease.
pub(super) fn enqueue(conn: &Connection, video: &str, owner: &str) -> Result<(), CoreError> {
    conn.execute(
        "INSERT INTO jobs (video_id, owner) VALUES (?1, ?2)
         ON CONFLICT (video_id) DO UPDATE SET node = NULL, token = NULL, expires_at_ms = NULL, progress = NULL",
        params![video, owner],
    )?;
    Ok(())
}

pub(super) fn remove(conn: &Connection, video: &str) -> Result<(), CoreError> {
    conn.execute("DELETE FROM jobs WHERE video_id = ?1", [video])?;
    Ok(())
}

/// Whether lease `token` on `video` is held and unexpired.
pub(super) fn held(conn: &Connection, video: &str, token: i64) -> Result<bool, CoreError> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT 1 FROM jobs WHERE video_id = ?1 AND token = ?2 AND expires_at_ms > {NOW_MS}"
            ),
            params![video, token],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl JobLeases for SqliteCatalog {
    async fn claim(&self, node: &str, ttl: Duration) -> Result<Option<Lease>, CoreError> {
        let node = node.to_string();
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let next = tx
                .query_row(
                    &format!(
                        "SELECT j.video_id, j.owner, j.node IS NOT NULL FROM jobs j
                         LEFT JOIN (SELECT owner, COUNT(*) AS n FROM jobs
                                    WHERE node IS NOT NULL AND expires_at_ms > {NOW_MS} GROUP BY owner) r
                           ON r.owner = j.owner
                         LEFT JOIN owner_turns t ON t.owner = j.owner
                         WHERE j.node IS NULL OR j.expires_at_ms <= {NOW_MS}
                         ORDER BY COALESCE(r.n, 0), COALESCE(t.served, 0), j.video_id
                         LIMIT 1"
                    ),
                    [],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, bool>(2)?)),
                )
                .optional()?;
            let Some((video, owner, taken_over)) = next else {
                return Ok(None);
            };
            let token: i64 = tx.query_row(
                "UPDATE counters SET value = value + 1 WHERE name = 'lease' RETURNING value",
                [],
                |r| r.get(0),
            )?;
            tx.execute(
                &format!(
                    "UPDATE jobs SET node = ?2, token = ?3, expires_at_ms = {NOW_MS} + ?4, progress = NULL
                     WHERE video_id = ?1"
                ),
                params![video, node, token, ms(ttl)],
            )?;
            tx.execute(
                "INSERT INTO owner_turns (owner, served) VALUES (?1, ?2)
                 ON CONFLICT (owner) DO UPDATE SET served = excluded.served",
                params![owner, token],
            )?;
            tx.commit()?;
            Ok(Some(Lease {
                video,
                owner,
                token,
                taken_over,
            }))
        })
        .await
    }

    async fn renew(
        &self,
        lease: &Lease,
        ttl: Duration,
        progress: Option<LeasedProgress>,
    ) -> Result<(), CoreError> {
        let (video, token) = (lease.video.clone(), lease.token);
        let progress = progress
            .map(|p| serde_json::to_string(&p))
            .transpose()
            .map_err(|e| CoreError::Internal(format!("encode: {e}")))?;
        self.write(move |conn| {
            let renewed = conn.execute(
                &format!(
                    "UPDATE jobs SET expires_at_ms = {NOW_MS} + ?3, progress = COALESCE(?4, progress)
                     WHERE video_id = ?1 AND token = ?2 AND expires_at_ms > {NOW_MS}"
                ),
                params![video, token, ms(ttl), progress],
            )?;
            match renewed {
                0 => Err(CoreError::LeaseLost(video)),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), CoreError> {
        let (video, token) = (lease.video.clone(), lease.token);
        self.write(move |conn| {
            conn.execute(
                "UPDATE jobs SET node = NULL, token = NULL, expires_at_ms = NULL, progress = NULL
                 WHERE video_id = ?1 AND token = ?2",
                params![video, token],
            )?;
            Ok(())
        })
        .await
    }

    async fn release_node(&self, node: &str) -> Result<usize, CoreError> {
        let node = node.to_string();
        self.write(move |conn| {
            Ok(conn.execute(
                "UPDATE jobs SET node = NULL, token = NULL, expires_at_ms = NULL, progress = NULL
                 WHERE node = ?1",
                [node],
            )?)
        })
        .await
    }

    async fn queue(&self) -> Result<QueueSnapshot, CoreError> {
        self.read(|conn| {
            let mut snapshot = QueueSnapshot::default();
            let mut stmt = conn.prepare(&format!(
                "SELECT owner, video_id, node IS NOT NULL AND expires_at_ms > {NOW_MS} FROM jobs"
            ))?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })?;
            for row in rows {
                let (owner, video, leased) = row?;
                if leased {
                    *snapshot.running.entry(owner).or_default() += 1;
                } else {
                    snapshot.waiting.push((owner, video));
                }
            }
            let mut stmt = conn.prepare("SELECT owner, served FROM owner_turns")?;
            let served =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            snapshot.served = served
                .map(|r| r.map(|(o, s)| (o, s.max(0) as u64)))
                .collect::<rusqlite::Result<HashMap<_, _>>>()?;
            Ok(snapshot)
        })
        .await
    }

    async fn progress(&self, video: &str) -> Result<Option<LeasedProgress>, CoreError> {
        let video = video.to_string();
        self.read(move |conn| {
            let text: Option<String> = conn
                .query_row(
                    &format!(
                        "SELECT progress FROM jobs WHERE video_id = ?1 AND expires_at_ms > {NOW_MS}"
                    ),
                    [video],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
        })
        .await
    }
}
