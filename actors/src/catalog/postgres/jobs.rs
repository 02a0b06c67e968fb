//! Job leases on PostgreSQL: the `jobs` table, whose rows the catalog's
//! own transactions create and remove (see [`crate::catalog`]), and the
//! [`JobLeases`] that move leases on them. Claims take a transaction-scoped
//! advisory lock, so the fair order is exact cluster-wide (each claim sees
//! the one before it), and lock the chosen row `FOR UPDATE SKIP LOCKED`, so
//! a claim never waits on a row a run is renewing or a fenced change is
//! checking. Expiry is always by `clock_timestamp()`: the database's clock
//! at the moment of the statement, not of the transaction's start.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::GenericClient;

use super::error::{column, db, decode, encode};
use super::PgCatalog;
use crate::error::CoreError;
use crate::leases::{JobLeases, Lease, LeasedProgress, QueueSnapshot};

/// The advisory lock key claims take turns on ("claim" in ASCII).
const CLAIM_LOCK: i64 = 0x63_6c_61_69_6d;

/// Queues `video`'s job, or puts it back in the queue without its lease.
pub(super) async fn enqueue(
    c: &impl GenericClient,
    video: &str,
    owner: &str,
) -> Result<(), CoreError> {
    c.execute(
        "INSERT INTO jobs (video_id, owner) VALUES ($1, $2)
         ON CONFLICT (video_id) DO UPDATE
         SET node = NULL, token = NULL, expires_at = NULL, progress = NULL",
        &[&video, &owner],
    )
    .await
    .map_err(db)?;
    Ok(())
}

pub(super) async fn remove(c: &impl GenericClient, video: &str) -> Result<(), CoreError> {
    c.execute("DELETE FROM jobs WHERE video_id = $1", &[&video])
        .await
        .map_err(db)?;
    Ok(())
}

/// Whether lease `token` on `video` is held and unexpired; when it is, the
/// job's row stays share-locked until the transaction ends, so no claim
/// can take it over before the fenced change commits.
pub(super) async fn hold(
    c: &impl GenericClient,
    video: &str,
    token: i64,
) -> Result<bool, CoreError> {
    Ok(c.query_opt(
        "SELECT 1 FROM jobs WHERE video_id = $1 AND token = $2
         AND expires_at > clock_timestamp() FOR SHARE",
        &[&video, &token],
    )
    .await
    .map_err(db)?
    .is_some())
}

/// `d` in whole milliseconds, for `$n::bigint * interval '1 millisecond'`.
pub(super) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl JobLeases for PgCatalog {
    async fn claim(&self, node: &str, ttl: Duration) -> Result<Option<Lease>, CoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CLAIM_LOCK])
            .await
            .map_err(db)?;
        let next = tx
            .query_opt(
                "SELECT j.video_id, j.owner, j.node IS NOT NULL FROM jobs j
                 LEFT JOIN (SELECT owner, COUNT(*) AS n FROM jobs
                            WHERE node IS NOT NULL AND expires_at > clock_timestamp()
                            GROUP BY owner) r ON r.owner = j.owner
                 LEFT JOIN owner_turns t ON t.owner = j.owner
                 WHERE j.node IS NULL OR j.expires_at <= clock_timestamp()
                 ORDER BY COALESCE(r.n, 0), COALESCE(t.served, 0), j.video_id
                 LIMIT 1
                 FOR UPDATE OF j SKIP LOCKED",
                &[],
            )
            .await
            .map_err(db)?;
        let Some(row) = next else {
            return Ok(None);
        };
        let video: String = row.try_get(0).map_err(column)?;
        let owner: String = row.try_get(1).map_err(column)?;
        let taken_over: bool = row.try_get(2).map_err(column)?;
        let token: i64 = tx
            .query_one(
                "UPDATE jobs SET node = $2, token = nextval('lease_tokens'),
                     expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond',
                     progress = NULL
                 WHERE video_id = $1 RETURNING token",
                &[&video, &node, &ms(ttl)],
            )
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(column)?;
        tx.execute(
            "INSERT INTO owner_turns (owner, served) VALUES ($1, $2)
             ON CONFLICT (owner) DO UPDATE SET served = excluded.served",
            &[&owner, &token],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Some(Lease {
            video,
            owner,
            token,
            taken_over,
        }))
    }

    async fn renew(
        &self,
        lease: &Lease,
        ttl: Duration,
        progress: Option<LeasedProgress>,
    ) -> Result<(), CoreError> {
        let progress = progress
            .map(|p| serde_json::to_string(&p))
            .transpose()
            .map_err(encode)?;
        let client = self.client().await?;
        let renewed = client
            .execute(
                "UPDATE jobs SET expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond',
                     progress = COALESCE($4, progress)
                 WHERE video_id = $1 AND token = $2 AND expires_at > clock_timestamp()",
                &[&lease.video, &lease.token, &ms(ttl), &progress],
            )
            .await
            .map_err(db)?;
        match renewed {
            0 => Err(CoreError::LeaseLost(lease.video.clone())),
            _ => Ok(()),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), CoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE jobs SET node = NULL, token = NULL, expires_at = NULL, progress = NULL
                 WHERE video_id = $1 AND token = $2",
                &[&lease.video, &lease.token],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn release_node(&self, node: &str) -> Result<usize, CoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE jobs SET node = NULL, token = NULL, expires_at = NULL, progress = NULL
                 WHERE node = $1",
                &[&node],
            )
            .await
            .map_err(db)?;
        Ok(n as usize)
    }

    async fn queue(&self) -> Result<QueueSnapshot, CoreError> {
        let client = self.client().await?;
        let mut snapshot = QueueSnapshot::default();
        let rows = client
            .query(
                "SELECT owner, video_id,
                        COALESCE(node IS NOT NULL AND expires_at > clock_timestamp(), false)
                 FROM jobs ORDER BY video_id",
                &[],
            )
            .await
            .map_err(db)?;
        for r in rows {
            let owner: String = r.try_get(0).map_err(column)?;
            let video: String = r.try_get(1).map_err(column)?;
            if r.try_get::<_, bool>(2).map_err(column)? {
                *snapshot.running.entry(owner).or_default() += 1;
            } else {
                snapshot.waiting.push((owner, video));
            }
        }
        let rows = client
            .query("SELECT owner, served FROM owner_turns", &[])
            .await
            .map_err(db)?;
        snapshot.served = rows
            .iter()
            .map(|r| {
                let served: i64 = r.try_get(1).map_err(column)?;
                Ok((r.try_get(0).map_err(column)?, served.max(0).unsigned_abs()))
            })
            .collect::<Result<HashMap<_, _>, CoreError>>()?;
        Ok(snapshot)
    }

    async fn progress(&self, video: &str) -> Result<Option<LeasedProgress>, CoreError> {
        let client = self.client().await?;
        let text: Option<String> = client
            .query_opt(
                "SELECT progress FROM jobs WHERE video_id = $1 AND expires_at > clock_timestamp()",
                &[&video],
            )
            .await
            .map_err(db)?
            .map(|r| r.try_get(0).map_err(column))
            .transpose()?
            .flatten();
        text.map(|t| serde_json::from_str(&t).map_err(|e| decode("progress", e)))
            .transpose()
    }
}
