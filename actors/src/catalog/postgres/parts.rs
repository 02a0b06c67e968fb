//! Stored uploads on PostgreSQL: the `stored_uploads` table, one row per
//! resumable upload whose bytes wait in the object store, and the
//! [`UploadParts`] that hold and record them. A hold is a token from the
//! `lease_tokens` sequence with an expiry; taking one locks the row, so
//! two takers take turns and the second sees the first's hold. Recording
//! is one `UPDATE` whose `WHERE` checks the token and the expiry, so a
//! record by a hold that was lost (or taken over while it waited on the
//! row) changes nothing. Expiry is by `clock_timestamp()`, as the job
//! leases' is (see `jobs`). The row references its video with `ON DELETE
//! CASCADE`: deleting the video forgets the upload.

use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::error::SqlState;

use super::error::{column, db, decode, range};
use super::jobs::ms;
use super::videos::json;
use super::PgCatalog;
use crate::error::CoreError;
use crate::parts::{StoredUpload, TailPiece, UploadParts};
use crate::ports::StoredPart;

fn signed(n: u64, what: &str) -> Result<i64, CoreError> {
    i64::try_from(n).map_err(|_| range(what))
}

fn unsigned(n: i64, what: &str) -> Result<u64, CoreError> {
    u64::try_from(n).map_err(|_| range(what))
}

#[async_trait]
impl UploadParts for PgCatalog {
    async fn open_parts(&self, id: &str, length: u64, multipart: &str) -> Result<(), CoreError> {
        let length = signed(length, "upload length")?;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO stored_uploads (video_id, length, multipart) VALUES ($1, $2, $3)",
                &[&id, &length, &multipart],
            )
            .await
            .map_err(|e| match e.code() {
                Some(code) if *code == SqlState::FOREIGN_KEY_VIOLATION => {
                    CoreError::NotFound(id.to_string())
                }
                Some(code) if *code == SqlState::UNIQUE_VIOLATION => {
                    CoreError::Internal(format!("upload {id} is open already"))
                }
                _ => db(e),
            })?;
        Ok(())
    }

    async fn stored_upload(&self, id: &str) -> Result<Option<StoredUpload>, CoreError> {
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(
                "SELECT length, multipart, parts::text, tail::text,
                        floor(EXTRACT(EPOCH FROM touched_at) * 1000)::bigint, next_part
                 FROM stored_uploads WHERE video_id = $1",
                &[&id],
            )
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        let parts: String = row.try_get(2).map_err(column)?;
        let parts: Vec<StoredPart> =
            serde_json::from_str(&parts).map_err(|e| decode("upload parts", e))?;
        let tail: String = row.try_get(3).map_err(column)?;
        let tail: Vec<TailPiece> =
            serde_json::from_str(&tail).map_err(|e| decode("upload tail", e))?;
        let next_number: i32 = row.try_get(5).map_err(column)?;
        Ok(Some(StoredUpload {
            id: id.to_string(),
            length: unsigned(row.try_get(0).map_err(column)?, "upload length")?,
            multipart: row.try_get(1).map_err(column)?,
            parts,
            tail,
            next_number: u32::try_from(next_number).map_err(|_| range("upload next part"))?,
            touched_ms: unsigned(row.try_get(4).map_err(column)?, "upload touched_at")?,
        }))
    }

    async fn take_hold(&self, id: &str, ttl: Duration) -> Result<Option<i64>, CoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // The row lock makes takers take turns: the second sees the hold
        // the first committed.
        let Some(row) = tx
            .query_opt(
                "SELECT COALESCE(held_until > clock_timestamp(), false)
                 FROM stored_uploads WHERE video_id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(db)?
        else {
            return Err(CoreError::NotFound(id.to_string()));
        };
        let held: bool = row.try_get(0).map_err(column)?;
        let token = if held {
            tx.execute(
                "UPDATE stored_uploads SET wanted = true WHERE video_id = $1",
                &[&id],
            )
            .await
            .map_err(db)?;
            None
        } else {
            let token: i64 = tx
                .query_one(
                    "UPDATE stored_uploads SET holder_token = nextval('lease_tokens'),
                         held_until = clock_timestamp() + $2::bigint * interval '1 millisecond',
                         holder_node = $3, wanted = false
                     WHERE video_id = $1 RETURNING holder_token",
                    &[&id, &ms(ttl), &self.node()],
                )
                .await
                .map_err(db)?
                .try_get(0)
                .map_err(column)?;
            Some(token)
        };
        tx.commit().await.map_err(db)?;
        Ok(token)
    }

    async fn renew_hold(&self, id: &str, token: i64, ttl: Duration) -> Result<bool, CoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE stored_uploads
                 SET held_until = clock_timestamp() + $3::bigint * interval '1 millisecond'
                 WHERE video_id = $1 AND holder_token = $2 RETURNING wanted",
                &[&id, &token, &ms(ttl)],
            )
            .await
            .map_err(db)?;
        match row {
            Some(row) => row.try_get(0).map_err(column),
            None => Err(CoreError::LeaseLost(id.to_string())),
        }
    }

    async fn reserve_part(&self, id: &str, token: i64) -> Result<u32, CoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE stored_uploads SET next_part = next_part + 1
                 WHERE video_id = $1 AND holder_token = $2 AND held_until > clock_timestamp()
                 RETURNING next_part - 1",
                &[&id, &token],
            )
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Err(CoreError::LeaseLost(id.to_string()));
        };
        let number: i32 = row.try_get(0).map_err(column)?;
        u32::try_from(number).map_err(|_| range("upload part number"))
    }

    async fn record_parts(
        &self,
        id: &str,
        token: i64,
        parts: &[StoredPart],
        tail: &[TailPiece],
    ) -> Result<(), CoreError> {
        let parts = json(&parts)?;
        let tail = json(&tail)?;
        let client = self.client().await?;
        // One statement: a take-over that commits first makes it match
        // nothing (the row is re-checked after its lock is released).
        let recorded = client
            .execute(
                "UPDATE stored_uploads
                 SET parts = $3::text::jsonb, tail = $4::text::jsonb,
                     touched_at = clock_timestamp()
                 WHERE video_id = $1 AND holder_token = $2 AND held_until > clock_timestamp()",
                &[&id, &token, &parts, &tail],
            )
            .await
            .map_err(db)?;
        match recorded {
            0 => Err(CoreError::LeaseLost(id.to_string())),
            _ => Ok(()),
        }
    }

    async fn drop_hold(&self, id: &str, token: i64) -> Result<(), CoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE stored_uploads
                 SET holder_token = NULL, held_until = NULL, holder_node = NULL, wanted = false
                 WHERE video_id = $1 AND holder_token = $2",
                &[&id, &token],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn close_parts(&self, id: &str) -> Result<(), CoreError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM stored_uploads WHERE video_id = $1", &[&id])
            .await
            .map_err(db)?;
        Ok(())
    }
}
