//! The catalog's schema as an ordered list of migrations. The database's
//! `user_version` says how many have run; a database from a newer vidmill
//! (a higher version than this code knows) is refused rather than guessed at.

use rusqlite::Connection;

use crate::error::CoreError;

/// Each entry moves the schema one version up; never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    // 1: videos, their event log, temp artefacts and the notification outbox.
    "CREATE TABLE videos (
        id            TEXT PRIMARY KEY,
        owner         TEXT NOT NULL,
        filename      TEXT NOT NULL,
        options       TEXT NOT NULL,
        state         TEXT NOT NULL,
        stage         TEXT,
        attempts      INTEGER NOT NULL DEFAULT 1,
        crashes       INTEGER NOT NULL DEFAULT 0,
        in_flight     INTEGER NOT NULL DEFAULT 0,
        error         TEXT,
        source        TEXT,
        outputs       TEXT NOT NULL DEFAULT '{}',
        last_seq      INTEGER NOT NULL DEFAULT 0,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL
    );
    CREATE INDEX videos_by_owner ON videos (owner, id DESC);
    CREATE INDEX videos_by_state ON videos (state);
    CREATE TABLE events (
        video_id      TEXT NOT NULL,
        seq           INTEGER NOT NULL,
        kind          TEXT NOT NULL,
        payload       TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        PRIMARY KEY (video_id, seq)
    );
    CREATE TABLE artefacts (
        location      TEXT PRIMARY KEY,
        kind          TEXT NOT NULL,
        video_id      TEXT,
        created_at    TEXT NOT NULL
    );
    CREATE TABLE outbox (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        video_id      TEXT NOT NULL,
        seq           INTEGER NOT NULL,
        kind          TEXT NOT NULL,
        payload       TEXT NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        delivered_at  TEXT,
        created_at    TEXT NOT NULL
    );",
    // 2: the notifier reads undelivered rows in order.
    "CREATE INDEX outbox_undelivered ON outbox (delivered_at, id);",
    // 3: a notification per channel (webhook, email); where to mail owners.
    "ALTER TABLE outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'webhook';
     CREATE TABLE contacts (
        owner         TEXT PRIMARY KEY,
        email         TEXT NOT NULL,
        updated_at    TEXT NOT NULL
     );",
    // 4: bytes each upload brought, for the per-owner quotas: kept while
    // the video exists (its share of stored bytes) and for a day after it
    // was charged (bytes uploaded per day), so deleting a video does not
    // hand back the day's allowance.
    "CREATE TABLE uploads_ledger (
        video_id      TEXT PRIMARY KEY,
        owner         TEXT NOT NULL,
        bytes         INTEGER NOT NULL,
        charged_at_ms INTEGER NOT NULL
     );
     CREATE INDEX uploads_ledger_by_owner ON uploads_ledger (owner, charged_at_ms);",
    // 5: job leases (which node processes which video), the fair order's
    // memory of whom it served last, and the lease token counter. Videos
    // queued or processing become jobs.
    "CREATE TABLE jobs (
        video_id      TEXT PRIMARY KEY,
        owner         TEXT NOT NULL,
        node          TEXT,
        token         INTEGER,
        expires_at_ms INTEGER,
        progress      TEXT
     );
     CREATE INDEX jobs_by_owner ON jobs (owner);
     CREATE TABLE owner_turns (
        owner         TEXT PRIMARY KEY,
        served        INTEGER NOT NULL
     );
     CREATE TABLE counters (
        name          TEXT PRIMARY KEY,
        value         INTEGER NOT NULL
     );
     INSERT INTO counters (name, value) VALUES ('lease', 0);
     INSERT INTO jobs (video_id, owner)
        SELECT id, owner FROM videos WHERE state IN ('queued', 'processing');",
];

/// The schema version this code writes.
pub(crate) fn latest() -> u32 {
    MIGRATIONS.len() as u32
}

/// Runs the migrations the database has not seen yet, in one transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, CoreError> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > latest() {
        return Err(CoreError::Schema(format!(
            "the database has schema version {current}, newer than this vidmill knows ({}); \
             upgrade vidmill or point database.path elsewhere",
            latest()
        )));
    }
    let tx = conn.transaction()?;
    for sql in &MIGRATIONS[current as usize..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", latest())?;
    tx.commit()?;
    Ok(latest())
}
