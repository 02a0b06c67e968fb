//! The PostgreSQL schema as an ordered list of migrations, recorded in
//! `schema_migrations`. Migrating runs in one transaction under an
//! advisory lock, so nodes starting together take turns and the second
//! finds the work done; a database migrated by a newer vidmill (a version
//! this code does not know) is refused rather than guessed at.

use tokio_postgres::Client;

use super::error::db;
use crate::error::CoreError;

/// The advisory lock key migrations hold ("vidmill" in ASCII, 7 bytes).
const MIGRATION_LOCK: i64 = 0x76_69_64_6d_69_6c_6c;

/// Each entry moves the schema one version up; never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    // 1: videos and their event log, per-node temp artefacts, the
    // notification outbox, owners' contacts, the uploads ledger, and the
    // job queue with its leases, the fair order's memory and the token
    // sequence. `in_flight_node` is the node whose run is under way, so a
    // node starting again clears its own runs only.
    "CREATE TABLE videos (
        id             TEXT PRIMARY KEY,
        owner          TEXT NOT NULL,
        filename       TEXT NOT NULL,
        options        JSONB NOT NULL,
        state          TEXT NOT NULL,
        stage          TEXT,
        attempts       INTEGER NOT NULL DEFAULT 1,
        crashes        INTEGER NOT NULL DEFAULT 0,
        in_flight_node TEXT,
        error          JSONB,
        source         JSONB,
        outputs        JSONB NOT NULL DEFAULT '{}',
        last_seq       BIGINT NOT NULL DEFAULT 0,
        created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX videos_by_owner ON videos (owner, id DESC);
    CREATE INDEX videos_by_state ON videos (state);
    CREATE TABLE events (
        video_id       TEXT NOT NULL,
        seq            BIGINT NOT NULL,
        kind           TEXT NOT NULL,
        payload        JSONB NOT NULL,
        created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (video_id, seq)
    );
    CREATE TABLE artefacts (
        node           TEXT NOT NULL,
        location       TEXT NOT NULL,
        kind           TEXT NOT NULL,
        video_id       TEXT,
        created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (node, location)
    );
    CREATE TABLE outbox (
        id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        video_id       TEXT NOT NULL,
        seq            BIGINT NOT NULL,
        kind           TEXT NOT NULL,
        channel        TEXT NOT NULL,
        payload        JSONB NOT NULL,
        attempts       INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        delivered_at   TIMESTAMPTZ,
        created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX outbox_undelivered ON outbox (id) WHERE delivered_at IS NULL;
    CREATE INDEX outbox_by_video ON outbox (video_id);
    CREATE TABLE contacts (
        owner          TEXT PRIMARY KEY,
        email          TEXT NOT NULL,
        updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE TABLE uploads_ledger (
        video_id       TEXT PRIMARY KEY,
        owner          TEXT NOT NULL,
        bytes          BIGINT NOT NULL,
        charged_at     TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX uploads_ledger_by_owner ON uploads_ledger (owner, charged_at);
    CREATE TABLE jobs (
        video_id       TEXT PRIMARY KEY,
        owner          TEXT NOT NULL,
        node           TEXT,
        token          BIGINT,
        expires_at     TIMESTAMPTZ,
        progress       TEXT
    );
    CREATE INDEX jobs_by_owner ON jobs (owner);
    CREATE INDEX jobs_by_node ON jobs (node) WHERE node IS NOT NULL;
    CREATE TABLE owner_turns (
        owner          TEXT PRIMARY KEY,
        served         BIGINT NOT NULL
    );
    CREATE SEQUENCE lease_tokens;",
    // 2: a notification is claimed by the node about to deliver it, so
    // each row goes out from one node; a claim that is not settled (the
    // node died) lapses and any node may take the row.
    "ALTER TABLE outbox ADD COLUMN claimed_by TEXT, ADD COLUMN claimed_until TIMESTAMPTZ;",
    // 3: resumable uploads whose bytes wait in the object store (their
    // parts, tail pieces and the next part number to hand out), with the
    // hold a node writes one under (its token from `lease_tokens`) and
    // whether another request wants it. The row goes with its video.
    "CREATE TABLE stored_uploads (
        video_id       TEXT PRIMARY KEY REFERENCES videos (id) ON DELETE CASCADE,
        length         BIGINT NOT NULL,
        multipart      TEXT NOT NULL,
        parts          JSONB NOT NULL DEFAULT '[]',
        tail           JSONB NOT NULL DEFAULT '[]',
        next_part      INTEGER NOT NULL DEFAULT 1,
        touched_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
        holder_token   BIGINT,
        held_until     TIMESTAMPTZ,
        holder_node    TEXT,
        wanted         BOOLEAN NOT NULL DEFAULT false
    );",
];

/// The schema version this code writes.
pub(crate) fn latest() -> i32 {
    MIGRATIONS.len() as i32
}

/// Runs the migrations the database has not seen yet; returns the version.
pub(super) async fn migrate(client: &mut Client) -> Result<i32, CoreError> {
    let tx = client.transaction().await.map_err(db)?;
    // Held until commit or rollback: a second node waits here, then sees
    // the first one's work.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(db)?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(super::error::column)?;
    if current > latest() {
        return Err(CoreError::Schema(format!(
            "the database has schema version {current}, newer than this vidmill knows ({}); \
             upgrade vidmill or point database.url elsewhere",
            latest()
        )));
    }
    for (version, sql) in (1..).zip(MIGRATIONS).skip(current as usize) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| CoreError::Schema(format!("migration {version}: {}", db(e))))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(latest())
}
