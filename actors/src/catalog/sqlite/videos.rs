//! Catalog queries: videos, their persisted state events, temp artefacts.
//! Every state or stage change updates the video and appends its event in
//! one transaction, so a change is never announced without being stored.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::SqliteCatalog;
use crate::catalog::{Artefact, Change, NewVideo, Page};
use crate::error::CoreError;
use crate::model::{StateEvent, Video};
use crate::state::{Stage, VideoState};

/// SQLite's own clock, RFC 3339 UTC with milliseconds.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

const COLUMNS: &str = "id, owner, filename, options, state, stage, attempts, crashes, error, \
                       source, outputs, last_seq, created_at, updated_at";

fn json<T: serde::Serialize>(v: &T) -> Result<String, CoreError> {
    serde_json::to_string(v).map_err(|e| CoreError::Internal(format!("encode: {e}")))
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("{what}: {e}").into(),
        )
    })
}

fn bad(what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, what.into())
}

fn video_from_row(r: &Row<'_>) -> rusqlite::Result<Video> {
    let state: String = r.get(4)?;
    let stage: Option<String> = r.get(5)?;
    let error: Option<String> = r.get(8)?;
    let source: Option<String> = r.get(9)?;
    let outputs: String = r.get(10)?;
    Ok(Video {
        id: r.get(0)?,
        owner: r.get(1)?,
        filename: r.get(2)?,
        options: parse(&r.get::<_, String>(3)?, "options")?,
        state: state.parse().map_err(bad)?,
        stage: stage.map(|s| s.parse()).transpose().map_err(bad)?,
        attempts: r.get(6)?,
        crashes: r.get(7)?,
        error: error.map(|e| parse(&e, "error")).transpose()?,
        source: source.map(|s| parse(&s, "source")).transpose()?,
        outputs: parse(&outputs, "outputs")?,
        last_seq: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

fn get_video(conn: &Connection, id: &str) -> Result<Option<Video>, CoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM videos WHERE id = ?1"),
            [id],
            video_from_row,
        )
        .optional()?)
}

/// Appends the video's current state as its next event and returns it.
fn append_event(conn: &Connection, video: &Video) -> Result<StateEvent, CoreError> {
    let seq = video.last_seq + 1;
    let event = StateEvent {
        video_id: video.id.clone(),
        owner: video.owner.clone(),
        seq,
        state: video.state,
        stage: video.stage,
        error: video.error.clone(),
        outputs: video.outputs.clone(),
    };
    conn.execute(
        &format!("INSERT INTO events (video_id, seq, kind, payload, created_at) VALUES (?1, ?2, 'state', ?3, {NOW})"),
        params![video.id, seq, json(&event)?],
    )?;
    conn.execute(
        "UPDATE videos SET last_seq = ?2 WHERE id = ?1",
        params![video.id, seq],
    )?;
    Ok(event)
}

impl SqliteCatalog {
    /// Creates a video and its first event.
    pub async fn insert(&self, new: NewVideo) -> Result<(Video, StateEvent), CoreError> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                &format!(
                    "INSERT INTO videos (id, owner, filename, options, state, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, {NOW}, {NOW})"
                ),
                params![new.id, new.owner, new.filename, json(&new.options)?, new.state.as_str()],
            )?;
            if new.source_bytes > 0 {
                super::usage::charge(&tx, &new.id, &new.owner, new.source_bytes)?;
            }
            if matches!(new.state, VideoState::Queued | VideoState::Processing) {
                super::jobs::enqueue(&tx, &new.id, &new.owner)?;
            }
            let video = get_video(&tx, &new.id)?.ok_or_else(|| CoreError::NotFound(new.id.clone()))?;
            let event = append_event(&tx, &video)?;
            tx.commit()?;
            Ok((Video { last_seq: event.seq, ..video }, event))
        })
        .await
    }

    /// Applies `change` and appends the resulting state event. A change that
    /// alters neither state, stage, error nor outputs records no event.
    pub async fn apply(
        &self,
        id: &str,
        change: Change,
    ) -> Result<(Video, Option<StateEvent>), CoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let before = get_video(&tx, &id)?.ok_or_else(|| CoreError::NotFound(id.clone()))?;
            if let Some(token) = change.fence {
                if !super::jobs::held(&tx, &id, token)? {
                    return Err(CoreError::LeaseLost(id.clone()));
                }
            }
            let after = change.applied_to(&before);
            tx.execute(
                &format!(
                    "UPDATE videos SET state = ?2, stage = ?3, error = ?4, source = ?5, outputs = ?6,
                     attempts = ?7, in_flight = COALESCE(?8, in_flight), updated_at = {NOW} WHERE id = ?1"
                ),
                params![
                    id,
                    after.state.as_str(),
                    after.stage.map(Stage::as_str),
                    after.error.as_ref().map(json).transpose()?,
                    after.source.as_ref().map(json).transpose()?,
                    json(&after.outputs)?,
                    after.attempts,
                    change.in_flight,
                ],
            )?;
            let visible = after.state != before.state
                || after.stage != before.stage
                || after.error != before.error
                || after.outputs != before.outputs;
            let event = if visible { Some(append_event(&tx, &after)?) } else { None };
            if let Some(e) = event.as_ref().filter(|_| after.state != before.state) {
                super::outbox::enqueue(&tx, e)?;
            }
            if change.state == Some(VideoState::Queued) {
                super::jobs::enqueue(&tx, &id, &after.owner)?;
            } else if after.state.is_terminal() {
                super::jobs::remove(&tx, &id)?;
            }
            let video = get_video(&tx, &id)?.ok_or_else(|| CoreError::NotFound(id.clone()))?;
            tx.commit()?;
            Ok((video, event))
        })
        .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<Video>, CoreError> {
        let id = id.to_string();
        self.read(move |conn| get_video(conn, &id)).await
    }

    /// `owner`'s videos, newest first (ids are time-ordered ULIDs, so the
    /// cursor is simply the last id of the previous page).
    pub async fn list(
        &self,
        owner: &str,
        state: Option<VideoState>,
        limit: u32,
        cursor: Option<String>,
    ) -> Result<Page, CoreError> {
        let owner = owner.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM videos WHERE owner = ?1 AND (?2 IS NULL OR state = ?2)
                 AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
            ))?;
            let mut videos = stmt
                .query_map(
                    params![
                        owner,
                        state.map(VideoState::as_str),
                        cursor,
                        limit as i64 + 1
                    ],
                    video_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
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
        })
        .await
    }

    /// State events of a video after `seq`, in order.
    pub async fn events_after(&self, id: &str, seq: u64) -> Result<Vec<StateEvent>, CoreError> {
        let id = id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT payload FROM events WHERE video_id = ?1 AND seq > ?2 ORDER BY seq",
            )?;
            let rows = stmt
                .query_map(params![id, seq], |r| r.get::<_, String>(0))?
                .map(|p| {
                    p.map_err(CoreError::from).and_then(|p| {
                        serde_json::from_str(&p)
                            .map_err(|e| CoreError::Internal(format!("event payload: {e}")))
                    })
                })
                .collect::<Result<Vec<StateEvent>, CoreError>>()?;
            Ok(rows)
        })
        .await
    }

    /// The newest ready video with an MP4, whoever owns it (for
    /// `vidmill doctor`'s range probe).
    pub async fn newest_playable(&self) -> Result<Option<Video>, CoreError> {
        self.read(|conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM videos WHERE state = 'ready'
                         AND outputs LIKE '%\"mp4\"%' ORDER BY id DESC LIMIT 1"
                    ),
                    [],
                    video_from_row,
                )
                .optional()?)
        })
        .await
    }

    /// Videos left unfinished (uploading, queued or processing), oldest first.
    pub async fn unfinished(&self) -> Result<Vec<Video>, CoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM videos WHERE state IN ('uploading', 'queued', 'processing') ORDER BY id"
            ))?;
            let rows = stmt.query_map([], video_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// Clears the marks of the videos that were processing when the process
    /// last stopped (their `in_flight` mark survived) and returns how many
    /// there were. They count as no crash: pipelines run in worker
    /// processes, so a death of the whole server (power loss, OOM kill,
    /// SIGKILL) says nothing about the video; it is simply run again.
    pub async fn clear_interrupted_runs(&self) -> Result<usize, CoreError> {
        self.write(|conn| {
            Ok(conn.execute("UPDATE videos SET in_flight = 0 WHERE in_flight = 1", [])?)
        })
        .await
    }

    /// Counts one crash of a video's processing; returns the new count.
    pub async fn add_crash(&self, id: &str) -> Result<u32, CoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            conn.execute(
                "UPDATE videos SET crashes = crashes + 1, in_flight = 0 WHERE id = ?1",
                [&id],
            )?;
            Ok(
                conn.query_row("SELECT crashes FROM videos WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }

    /// Starts the crash count afresh (a user's explicit retry).
    pub async fn reset_crashes(&self, id: &str) -> Result<(), CoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            conn.execute("UPDATE videos SET crashes = 0 WHERE id = ?1", [&id])?;
            Ok(())
        })
        .await
    }

    /// Removes a video, its events and its artefact records.
    pub async fn delete(&self, id: &str) -> Result<bool, CoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM events WHERE video_id = ?1", [&id])?;
            tx.execute("DELETE FROM outbox WHERE video_id = ?1", [&id])?;
            super::jobs::remove(&tx, &id)?;
            let gone = tx.execute("DELETE FROM videos WHERE id = ?1", [&id])? > 0;
            tx.commit()?;
            Ok(gone)
        })
        .await
    }

    /// Number of videos in each state (for metrics).
    pub async fn count_by_state(&self) -> Result<Vec<(VideoState, u64)>, CoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM videos GROUP BY state")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows
                .into_iter()
                .filter_map(|(s, n)| s.parse().ok().map(|s| (s, n)))
                .collect())
        })
        .await
    }

    /// Records an artefact before it is created, so a crash cannot leak it.
    pub async fn record_artefact(&self, artefact: Artefact) -> Result<(), CoreError> {
        self.write(move |conn| {
            conn.execute(
                &format!(
                    "INSERT OR REPLACE INTO artefacts (location, kind, video_id, created_at)
                     VALUES (?1, ?2, ?3, {NOW})"
                ),
                params![artefact.location, artefact.kind, artefact.video_id],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn forget_artefact(&self, location: &str) -> Result<(), CoreError> {
        let location = location.to_string();
        self.write(move |conn| {
            conn.execute("DELETE FROM artefacts WHERE location = ?1", [location])?;
            Ok(())
        })
        .await
    }

    /// Every recorded artefact (what a start-up sweep must remove).
    pub async fn artefacts(&self) -> Result<Vec<Artefact>, CoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare("SELECT location, kind, video_id FROM artefacts ORDER BY created_at")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Artefact {
                        location: r.get(0)?,
                        kind: r.get(1)?,
                        video_id: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{new_id, Mp4Output, Options, Outputs};

    async fn catalog() -> (tempfile::TempDir, SqliteCatalog) {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = SqliteCatalog::open(&dir.path().join("c.sqlite")).expect("open");
        (dir, c)
    }

    fn new(owner: &str) -> NewVideo {
        NewVideo {
            id: new_id(),
            owner: owner.into(),
            filename: "a.mov".into(),
            options: Options::default(),
            state: VideoState::Queued,
            source_bytes: 0,
        }
    }

    #[tokio::test]
    async fn usage_counts_sources_outputs_open_uploads_and_the_day_after_deletion() {
        let (_d, c) = catalog().await;
        let mut upload = new("alice");
        upload.state = VideoState::Uploading;
        upload.source_bytes = 100;
        c.insert(upload.clone()).await.expect("upload");
        let mut done = new("alice");
        done.source_bytes = 40;
        c.insert(done.clone()).await.expect("done");
        c.insert(NewVideo {
            source_bytes: 7,
            ..new("bob")
        })
        .await
        .expect("bob");
        c.apply(
            &done.id,
            Change {
                outputs: Some(Outputs {
                    mp4: Some(Mp4Output {
                        size_bytes: 5,
                        duration: None,
                        width: 2,
                        height: 2,
                        method: "remux".into(),
                    }),
                    ..Outputs::default()
                }),
                ..Change::default()
            },
        )
        .await
        .expect("output");
        let usage = c.usage("alice").await.expect("usage");
        assert_eq!(
            usage,
            crate::catalog::Usage {
                stored_bytes: 145,
                uploaded_last_day: 140,
                open_uploads: 1,
            }
        );
        c.delete(&upload.id).await.expect("delete");
        let usage = c.usage("alice").await.expect("usage");
        assert_eq!(usage.stored_bytes, 45, "a deleted video stores nothing");
        assert_eq!(
            usage.uploaded_last_day, 140,
            "but its bytes count for the day"
        );
        assert_eq!(usage.open_uploads, 0);
    }

    #[tokio::test]
    async fn interrupted_runs_are_cleared_without_counting_a_crash() {
        let (_d, c) = catalog().await;
        let (v, _) = c.insert(new("alice")).await.expect("insert");
        c.apply(
            &v.id,
            Change {
                in_flight: Some(true),
                ..Change::default()
            },
        )
        .await
        .expect("apply");
        assert_eq!(c.clear_interrupted_runs().await.expect("clear"), 1);
        assert_eq!(c.clear_interrupted_runs().await.expect("clear"), 0);
        assert_eq!(c.get(&v.id).await.expect("get").expect("video").crashes, 0);
        assert_eq!(c.add_crash(&v.id).await.expect("crash"), 1);
    }
}
