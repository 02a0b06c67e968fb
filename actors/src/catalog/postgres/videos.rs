//! Videos, their event log and this node's artefacts on PostgreSQL. A
//! change locks its video's row (`FOR UPDATE`), so concurrent changes from
//! any node take turns and each event's `seq` is the last one plus one;
//! the change, its event, its outbox rows and its job move in one
//! transaction. Locks are always taken video row first, job row second.

use tokio_postgres::{GenericClient, Row};

use super::error::{column, db, decode, encode, range};
use super::PgCatalog;
use crate::catalog::{Artefact, Change, NewVideo, Page};
use crate::error::CoreError;
use crate::model::{StateEvent, Video};
use crate::state::{Stage, VideoState};

/// A timestamp as the API shows it: RFC 3339 UTC with milliseconds, the
/// same text SQLite writes.
macro_rules! rfc3339 {
    ($col:literal) => {
        concat!(
            "to_char(",
            $col,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
        )
    };
}

const COLUMNS: &str = concat!(
    "id, owner, filename, options::text, state, stage, attempts, crashes, error::text, ",
    "source::text, outputs::text, last_seq, ",
    rfc3339!("created_at"),
    ", ",
    rfc3339!("updated_at")
);

pub(super) fn json<T: serde::Serialize>(v: &T) -> Result<String, CoreError> {
    serde_json::to_string(v).map_err(encode)
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, CoreError> {
    serde_json::from_str(text).map_err(|e| decode(what, e))
}

fn video_from_row(r: &Row) -> Result<Video, CoreError> {
    let state: String = r.try_get(4).map_err(column)?;
    let stage: Option<String> = r.try_get(5).map_err(column)?;
    let error: Option<String> = r.try_get(8).map_err(column)?;
    let source: Option<String> = r.try_get(9).map_err(column)?;
    let outputs: String = r.try_get(10).map_err(column)?;
    let count = |i: usize, what: &str| -> Result<u32, CoreError> {
        u32::try_from(r.try_get::<_, i32>(i).map_err(column)?).map_err(|_| range(what))
    };
    let bad = |e: String| CoreError::Internal(format!("stored video: {e}"));
    Ok(Video {
        id: r.try_get(0).map_err(column)?,
        owner: r.try_get(1).map_err(column)?,
        filename: r.try_get(2).map_err(column)?,
        options: parse(r.try_get(3).map_err(column)?, "options")?,
        state: state.parse().map_err(bad)?,
        stage: stage.map(|s| s.parse()).transpose().map_err(bad)?,
        attempts: count(6, "attempts")?,
        crashes: count(7, "crashes")?,
        error: error.map(|e| parse(&e, "error")).transpose()?,
        source: source.map(|s| parse(&s, "source")).transpose()?,
        outputs: parse(&outputs, "outputs")?,
        last_seq: u64::try_from(r.try_get::<_, i64>(11).map_err(column)?)
            .map_err(|_| range("last_seq"))?,
        created_at: r.try_get(12).map_err(column)?,
        updated_at: r.try_get(13).map_err(column)?,
    })
}

/// The video `id`; with `lock`, its row stays locked until the
/// transaction ends.
async fn get_video(
    c: &impl GenericClient,
    id: &str,
    lock: bool,
) -> Result<Option<Video>, CoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM videos WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    c.query_opt(&sql, &[&id])
        .await
        .map_err(db)?
        .map(|r| video_from_row(&r))
        .transpose()
}

fn seq(n: u64) -> Result<i64, CoreError> {
    i64::try_from(n).map_err(|_| range("seq"))
}

/// Appends the video's current state as its next event and returns it.
async fn append_event(c: &impl GenericClient, video: &Video) -> Result<StateEvent, CoreError> {
    let event = StateEvent {
        video_id: video.id.clone(),
        owner: video.owner.clone(),
        seq: video.last_seq + 1,
        state: video.state,
        stage: video.stage,
        error: video.error.clone(),
        outputs: video.outputs.clone(),
    };
    let n = seq(event.seq)?;
    c.execute(
        "INSERT INTO events (video_id, seq, kind, payload) VALUES ($1, $2, 'state', $3::text::jsonb)",
        &[&video.id, &n, &json(&event)?],
    )
    .await
    .map_err(db)?;
    c.execute(
        "UPDATE videos SET last_seq = $2 WHERE id = $1",
        &[&video.id, &n],
    )
    .await
    .map_err(db)?;
    Ok(event)
}

impl PgCatalog {
    /// Creates a video and its first event.
    pub async fn insert(&self, new: NewVideo) -> Result<(Video, StateEvent), CoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO videos (id, owner, filename, options, state) VALUES ($1, $2, $3, $4::text::jsonb, $5)",
            &[&new.id, &new.owner, &new.filename, &json(&new.options)?, &new.state.as_str()],
        )
        .await
        .map_err(db)?;
        if new.source_bytes > 0 {
            super::usage::charge(&*tx, &new.id, &new.owner, new.source_bytes).await?;
        }
        if matches!(new.state, VideoState::Queued | VideoState::Processing) {
            super::jobs::enqueue(&*tx, &new.id, &new.owner).await?;
        }
        let video = get_video(&*tx, &new.id, false)
            .await?
            .ok_or_else(|| CoreError::NotFound(new.id.clone()))?;
        let event = append_event(&*tx, &video).await?;
        tx.commit().await.map_err(db)?;
        Ok((
            Video {
                last_seq: event.seq,
                ..video
            },
            event,
        ))
    }

    /// Applies `change` and appends the resulting state event. A change
    /// that alters neither state, stage, error nor outputs records none.
    pub async fn apply(
        &self,
        id: &str,
        change: Change,
    ) -> Result<(Video, Option<StateEvent>), CoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let before = get_video(&*tx, id, true)
            .await?
            .ok_or_else(|| CoreError::NotFound(id.to_string()))?;
        if let Some(token) = change.fence {
            if !super::jobs::hold(&*tx, id, token).await? {
                return Err(CoreError::LeaseLost(id.to_string()));
            }
        }
        let after = change.applied_to(&before);
        let attempts = i32::try_from(after.attempts).map_err(|_| range("attempts"))?;
        tx.execute(
            "UPDATE videos SET state = $2, stage = $3, error = $4::text::jsonb,
                 source = $5::text::jsonb, outputs = $6::text::jsonb, attempts = $7,
                 in_flight_node = CASE WHEN $8::boolean IS NULL THEN in_flight_node
                                       WHEN $8::boolean THEN $9 END,
                 updated_at = now()
             WHERE id = $1",
            &[
                &id,
                &after.state.as_str(),
                &after.stage.map(Stage::as_str),
                &after.error.as_ref().map(json).transpose()?,
                &after.source.as_ref().map(json).transpose()?,
                &json(&after.outputs)?,
                &attempts,
                &change.in_flight,
                &&*self.node,
            ],
        )
        .await
        .map_err(db)?;
        let visible = after.state != before.state
            || after.stage != before.stage
            || after.error != before.error
            || after.outputs != before.outputs;
        let event = match visible {
            true => Some(append_event(&*tx, &after).await?),
            false => None,
        };
        if let Some(e) = event.as_ref().filter(|_| after.state != before.state) {
            super::outbox::enqueue(&*tx, e).await?;
        }
        if change.state == Some(VideoState::Queued) {
            super::jobs::enqueue(&*tx, id, &after.owner).await?;
        } else if after.state.is_terminal() {
            super::jobs::remove(&*tx, id).await?;
        }
        let video = get_video(&*tx, id, false)
            .await?
            .ok_or_else(|| CoreError::NotFound(id.to_string()))?;
        tx.commit().await.map_err(db)?;
        Ok((video, event))
    }

    pub async fn get(&self, id: &str) -> Result<Option<Video>, CoreError> {
        get_video(&**self.client().await?, id, false).await
    }

    /// `owner`'s videos, newest first (ids are time-ordered, so the cursor
    /// is the last id of the previous page).
    pub async fn list(
        &self,
        owner: &str,
        state: Option<VideoState>,
        limit: u32,
        cursor: Option<String>,
    ) -> Result<Page, CoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM videos WHERE owner = $1
                     AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR id < $3)
                     ORDER BY id DESC LIMIT $4"
                ),
                &[
                    &owner,
                    &state.map(VideoState::as_str),
                    &cursor,
                    &(i64::from(limit) + 1),
                ],
            )
            .await
            .map_err(db)?;
        let mut videos = rows
            .iter()
            .map(video_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if videos.len() > limit as usize {
            videos.truncate(limit as usize);
            videos.last().map(|v| v.id.clone())
        } else {
            None
        };
        Ok(Page {
            videos,
            next_cursor,
        })
    }

    /// State events of a video after `seq`, in order.
    pub async fn events_after(&self, id: &str, after: u64) -> Result<Vec<StateEvent>, CoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT payload::text FROM events WHERE video_id = $1 AND seq > $2 ORDER BY seq",
                &[&id, &seq(after)?],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| parse(r.try_get(0).map_err(column)?, "event"))
            .collect()
    }

    /// The newest ready video with an MP4, whoever owns it.
    pub async fn newest_playable(&self) -> Result<Option<Video>, CoreError> {
        let client = self.client().await?;
        client
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM videos WHERE state = 'ready' AND outputs ? 'mp4'
                     ORDER BY id DESC LIMIT 1"
                ),
                &[],
            )
            .await
            .map_err(db)?
            .map(|r| video_from_row(&r))
            .transpose()
    }

    /// Videos left unfinished (uploading, queued or processing), oldest first.
    pub async fn unfinished(&self) -> Result<Vec<Video>, CoreError> {
        let client = self.client().await?;
        client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM videos
                     WHERE state IN ('uploading', 'queued', 'processing') ORDER BY id"
                ),
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(video_from_row)
            .collect()
    }

    /// Clears the marks of the runs this node had under way when its last
    /// process stopped; other nodes' runs are theirs.
    pub async fn clear_interrupted_runs(&self) -> Result<usize, CoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE videos SET in_flight_node = NULL WHERE in_flight_node = $1",
                &[&&*self.node],
            )
            .await
            .map_err(db)?;
        Ok(n as usize)
    }

    /// Counts one crash of a video's processing; returns the new count.
    pub async fn add_crash(&self, id: &str) -> Result<u32, CoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE videos SET crashes = crashes + 1, in_flight_node = NULL WHERE id = $1
                 RETURNING crashes",
                &[&id],
            )
            .await
            .map_err(db)?
            .ok_or_else(|| CoreError::NotFound(id.to_string()))?;
        u32::try_from(row.try_get::<_, i32>(0).map_err(column)?).map_err(|_| range("crashes"))
    }

    /// Starts the crash count afresh (a user's explicit retry).
    pub async fn reset_crashes(&self, id: &str) -> Result<(), CoreError> {
        let client = self.client().await?;
        client
            .execute("UPDATE videos SET crashes = 0 WHERE id = $1", &[&id])
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Removes a video, its events, its notifications and its job.
    pub async fn delete(&self, id: &str) -> Result<bool, CoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // The video row first, as every change locks it, then the rest.
        let exists = tx
            .query_opt("SELECT 1 FROM videos WHERE id = $1 FOR UPDATE", &[&id])
            .await
            .map_err(db)?
            .is_some();
        tx.execute("DELETE FROM events WHERE video_id = $1", &[&id])
            .await
            .map_err(db)?;
        tx.execute("DELETE FROM outbox WHERE video_id = $1", &[&id])
            .await
            .map_err(db)?;
        super::jobs::remove(&*tx, id).await?;
        if exists {
            tx.execute("DELETE FROM videos WHERE id = $1", &[&id])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(exists)
    }

    /// Number of videos in each state (for metrics).
    pub async fn count_by_state(&self) -> Result<Vec<(VideoState, u64)>, CoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT state, COUNT(*) FROM videos GROUP BY state", &[])
            .await
            .map_err(db)?;
        let mut out = Vec::new();
        for r in rows {
            let state: String = r.try_get(0).map_err(column)?;
            let n: i64 = r.try_get(1).map_err(column)?;
            if let Ok(state) = state.parse() {
                out.push((state, n.unsigned_abs()));
            }
        }
        Ok(out)
    }

    /// Records an artefact of this node before it is created.
    pub async fn record_artefact(&self, artefact: Artefact) -> Result<(), CoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO artefacts (node, location, kind, video_id) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (node, location) DO UPDATE
                 SET kind = excluded.kind, video_id = excluded.video_id, created_at = now()",
                &[
                    &&*self.node,
                    &artefact.location,
                    &artefact.kind,
                    &artefact.video_id,
                ],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    pub async fn forget_artefact(&self, location: &str) -> Result<(), CoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM artefacts WHERE node = $1 AND location = $2",
                &[&&*self.node, &location],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// This node's recorded artefacts (what its start-up sweep removes).
    pub async fn artefacts(&self) -> Result<Vec<Artefact>, CoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT location, kind, video_id FROM artefacts WHERE node = $1
                 ORDER BY created_at, location",
                &[&&*self.node],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(Artefact {
                    location: r.try_get(0).map_err(column)?,
                    kind: r.try_get(1).map_err(column)?,
                    video_id: r.try_get(2).map_err(column)?,
                })
            })
            .collect()
    }
}
