//! What each owner uses, for the quotas the edges enforce, on PostgreSQL:
//! bytes stored (sources from the uploads ledger, outputs from the
//! videos), bytes charged over the last 24 hours by the database's clock,
//! and uploads still open.

use tokio_postgres::GenericClient;

use super::error::{column, db, range};
use super::PgCatalog;
use crate::catalog::{Usage, UPLOAD_DAY_MS};
use crate::error::CoreError;

fn day_ms() -> i64 {
    i64::try_from(UPLOAD_DAY_MS).unwrap_or(i64::MAX)
}

/// Charges `bytes` to `owner` for video `id`, and drops the rows that
/// count for nothing any more (past the day, video gone).
pub(super) async fn charge(
    c: &impl GenericClient,
    id: &str,
    owner: &str,
    bytes: u64,
) -> Result<(), CoreError> {
    let bytes = i64::try_from(bytes).map_err(|_| range("bytes"))?;
    c.execute(
        "DELETE FROM uploads_ledger WHERE charged_at < now() - $1::bigint * interval '1 millisecond'
         AND NOT EXISTS (SELECT 1 FROM videos v WHERE v.id = uploads_ledger.video_id)",
        &[&day_ms()],
    )
    .await
    .map_err(db)?;
    c.execute(
        "INSERT INTO uploads_ledger (video_id, owner, bytes, charged_at) VALUES ($1, $2, $3, now())
         ON CONFLICT (video_id) DO UPDATE
         SET owner = excluded.owner, bytes = excluded.bytes, charged_at = excluded.charged_at",
        &[&id, &owner, &bytes],
    )
    .await
    .map_err(db)?;
    Ok(())
}

impl PgCatalog {
    /// Charges a direct upload's bytes once they are known.
    pub async fn charge_upload(&self, id: &str, owner: &str, bytes: u64) -> Result<(), CoreError> {
        charge(&**self.client().await?, id, owner, bytes).await
    }

    /// What `owner` uses now.
    pub async fn usage(&self, owner: &str) -> Result<Usage, CoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT
                   (SELECT COALESCE(SUM(l.bytes), 0)::bigint FROM uploads_ledger l
                      JOIN videos v ON v.id = l.video_id WHERE v.owner = $1),
                   (SELECT COALESCE(SUM(COALESCE((outputs->'mp4'->>'size_bytes')::bigint, 0)
                                      + COALESCE((outputs->'frames'->>'size_bytes')::bigint, 0)
                                      + COALESCE((outputs->'poster'->>'size_bytes')::bigint, 0)), 0)::bigint
                      FROM videos WHERE owner = $1),
                   (SELECT COUNT(*) FROM videos WHERE owner = $1 AND state = 'uploading'),
                   (SELECT COALESCE(SUM(bytes), 0)::bigint FROM uploads_ledger
                      WHERE owner = $1 AND charged_at >= now() - $2::bigint * interval '1 millisecond')",
                &[&owner, &day_ms()],
            )
            .await
            .map_err(db)?;
        let count = |i: usize| -> Result<u64, CoreError> {
            Ok(u64::try_from(row.try_get::<_, i64>(i).map_err(column)?).unwrap_or(0))
        };
        Ok(Usage {
            stored_bytes: count(0)? + count(1)?,
            open_uploads: count(2)?,
            uploaded_last_day: count(3)?,
        })
    }
}
