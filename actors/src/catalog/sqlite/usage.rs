//! What each owner uses, for the quotas the edges enforce: bytes stored
//! (sources and outputs), bytes uploaded over the last 24 hours and uploads
//! still open. Sources are counted from the uploads ledger, which charges
//! each upload's bytes once, when its video is created (a resumable upload:
//! its declared length) or when a direct upload is completed.

use rusqlite::{params, Connection};

use super::SqliteCatalog;
use crate::catalog::{Usage, UPLOAD_DAY_MS};
use crate::error::CoreError;

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Charges `bytes` to `owner` for video `id`, and drops the rows that count
/// for nothing any more (past the day, video gone), so the ledger holds at
/// most the live videos plus a day of uploads.
pub(crate) fn charge(
    conn: &Connection,
    id: &str,
    owner: &str,
    bytes: u64,
) -> Result<(), CoreError> {
    let now = now_ms();
    conn.execute(
        "DELETE FROM uploads_ledger WHERE charged_at_ms < ?1
         AND video_id NOT IN (SELECT id FROM videos)",
        params![now.saturating_sub(UPLOAD_DAY_MS) as i64],
    )?;
    conn.execute(
        "INSERT OR REPLACE INTO uploads_ledger (video_id, owner, bytes, charged_at_ms)
         VALUES (?1, ?2, ?3, ?4)",
        params![id, owner, bytes as i64, now as i64],
    )?;
    Ok(())
}

impl SqliteCatalog {
    /// Charges a direct upload's bytes once they are known.
    pub async fn charge_upload(&self, id: &str, owner: &str, bytes: u64) -> Result<(), CoreError> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.write(move |conn| charge(conn, &id, &owner, bytes))
            .await
    }

    /// What `owner` uses now.
    pub async fn usage(&self, owner: &str) -> Result<Usage, CoreError> {
        let owner = owner.to_string();
        let since = now_ms().saturating_sub(UPLOAD_DAY_MS) as i64;
        self.read(move |conn| {
            let sources: i64 = conn.query_row(
                "SELECT COALESCE(SUM(l.bytes), 0) FROM uploads_ledger l
                 JOIN videos v ON v.id = l.video_id WHERE v.owner = ?1",
                [&owner],
                |r| r.get(0),
            )?;
            let (outputs, open_uploads): (i64, i64) = conn.query_row(
                "SELECT COALESCE(SUM(COALESCE(json_extract(outputs, '$.mp4.size_bytes'), 0)
                                   + COALESCE(json_extract(outputs, '$.frames.size_bytes'), 0)
                                   + COALESCE(json_extract(outputs, '$.poster.size_bytes'), 0)), 0),
                        COUNT(CASE WHEN state = 'uploading' THEN 1 END)
                 FROM videos WHERE owner = ?1",
                [&owner],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let uploaded: i64 = conn.query_row(
                "SELECT COALESCE(SUM(bytes), 0) FROM uploads_ledger
                 WHERE owner = ?1 AND charged_at_ms >= ?2",
                params![owner, since],
                |r| r.get(0),
            )?;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            Ok(Usage {
                stored_bytes: count(sources) + count(outputs),
                uploaded_last_day: count(uploaded),
                open_uploads: count(open_uploads),
            })
        })
        .await
    }
}
