//! Reading the configuration: the file, then `VIDMILL__SECTION__KEY`
//! environment overrides, then validation. Errors name the key at fault.

use std::path::Path;

use super::{Config, StorageKind};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Loads `path` (missing is fine when `required` is false) over the
/// defaults, then applies environment overrides from `env`.
pub fn load(
    path: &Path,
    required: bool,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
        Err(e) => {
            return Err(ConfigError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    load_text(&text, &path.display().to_string(), env)
}

/// [`load`] of TOML text already read; `source` names it in errors. No I/O:
/// the config fuzz target calls it.
pub fn load_text(
    text: &str,
    source: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut table = text
        .parse::<toml::Table>()
        .map_err(|e| ConfigError::Invalid(format!("{source}: {e}")))?;
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("VIDMILL__") else {
            continue;
        };
        let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if parts.len() < 2 || parts.iter().any(String::is_empty) {
            return Err(ConfigError::Invalid(format!(
                "{name}: expected VIDMILL__SECTION__KEY"
            )));
        }
        set(&mut table, &parts, env_value(&value));
    }
    let config: Config = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
    validate(&config)?;
    Ok(config)
}

/// An environment value as TOML would read it (numbers, booleans), falling
/// back to a plain string.
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table())
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn set(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [key] => {
            table.insert(key.clone(), value);
        }
        [section, rest @ ..] => {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = entry {
                set(inner, rest, value);
            }
        }
        [] => {}
    }
}

/// A JWKS URL must be HTTPS: keys fetched in the clear could be swapped on
/// the way. Plain HTTP is accepted only to this machine (an identity
/// provider's sidecar, tests).
fn check_jwks_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("expected an https:// URL: {e}"))?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => {
            Err("keys must be fetched over https:// (plain http:// only to localhost)".into())
        }
        other => Err(format!("expected an https:// URL, not {other}://")),
    }
}

fn validate(c: &Config) -> Result<(), ConfigError> {
    let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
    if c.server.listen.parse::<std::net::SocketAddr>().is_err() {
        return bad(
            "server.listen",
            "expected address:port, e.g. 127.0.0.1:8080",
        );
    }
    if !matches!(c.server.log_format.as_str(), "text" | "json") {
        return bad("server.log_format", "expected text or json");
    }
    if c.server.max_connections == 0 {
        return bad("server.max_connections", "expected at least 1");
    }
    if c.server.max_connections_per_ip == 0 {
        return bad("server.max_connections_per_ip", "expected at least 1");
    }
    if c.server.header_timeout_seconds == 0 {
        return bad("server.header_timeout_seconds", "expected at least 1");
    }
    if c.server.body_idle_timeout_seconds == 0 {
        return bad("server.body_idle_timeout_seconds", "expected at least 1");
    }
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&c.server.max_header_bytes) {
        return bad(
            "server.max_header_bytes",
            &format!("expected {MIN_HEADER_BYTES} to {MAX_HEADER_BYTES} bytes"),
        );
    }
    for origin in &c.server.allowed_origins {
        if let Err(why) = check_origin(origin) {
            return bad("server.allowed_origins", &format!("`{origin}`: {why}"));
        }
    }
    if !c.auth.jwks_url.is_empty() {
        if !c.auth.jwks_path.is_empty() {
            return bad(
                "auth.jwks_url",
                "set either auth.jwks_path or auth.jwks_url, not both",
            );
        }
        if let Err(why) = check_jwks_url(&c.auth.jwks_url) {
            return bad("auth.jwks_url", &why);
        }
    }
    if c.database.is_cluster() {
        let url = c.database.url.trim();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return bad(
                "database.url",
                "expected postgres://user:password@host:5432/database",
            );
        }
        if c.storage.kind != StorageKind::S3 {
            return bad(
                "storage.type",
                "a cluster member (database.url set) keeps every object in the shared bucket: set storage.type = \"s3\"",
            );
        }
    }
    if !(3..=3600).contains(&c.database.lease_ttl_seconds) {
        return bad("database.lease_ttl_seconds", "expected 3 to 3600 seconds");
    }
    match c.storage.kind {
        StorageKind::File => {}
        StorageKind::S3 => {
            let s3 = &c.storage.s3;
            if s3.bucket.is_empty() {
                return bad("storage.s3.bucket", "name the bucket objects go to");
            }
            if s3.region.is_empty() {
                return bad(
                    "storage.s3.region",
                    "name the region (Garage: its s3_region)",
                );
            }
            let http = |u: &str| {
                reqwest::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
            };
            if !s3.endpoint.is_empty() && !http(&s3.endpoint) {
                return bad(
                    "storage.s3.endpoint",
                    "expected an http(s) URL, e.g. http://127.0.0.1:3900",
                );
            }
            if s3.access_key_id.is_empty()
                != (s3.secret_access_key.is_empty() && s3.secret_access_key_file.is_empty())
            {
                return bad(
                    "storage.s3.access_key_id",
                    "set both the key id and its secret, or neither (the AWS default chain)",
                );
            }
        }
    }
    if !c.notify.webhook_url.is_empty() {
        match reqwest::Url::parse(&c.notify.webhook_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => return bad("notify.webhook_url", "expected an http:// or https:// URL"),
        }
        if c.notify.webhook_secret.is_empty() && c.notify.webhook_secret_file.is_empty() {
            return bad(
                "notify.webhook_secret",
                "set a secret (or notify.webhook_secret_file): receivers check the signature with it",
            );
        }
    }
    if !c.notify.smtp_url.is_empty() && c.notify.from.is_empty() {
        return bad(
            "notify.from",
            "set the sender address mail goes out from, e.g. `vidmill <video@example.org>`",
        );
    }
    if c.notify.max_age_seconds < 60 {
        return bad(
            "notify.max_age_seconds",
            "expected at least 60 (notifications are retried this long)",
        );
    }
    if c.limits.upload_expiry_seconds == 0 {
        return bad(
            "limits.upload_expiry_seconds",
            "expected at least 1 second (unfinished resumable uploads are kept this long)",
        );
    }
    if c.limits.max_upload_bytes == 0 {
        return bad("limits.max_upload_bytes", "expected at least 1 byte");
    }
    if c.limits.worker_memory_bytes < 64 << 20 {
        return bad(
            "limits.worker_memory_bytes",
            "expected at least 67108864 (64 MiB): GStreamer alone needs some",
        );
    }
    if c.limits.worker_timeout_floor_seconds == 0 {
        return bad("limits.worker_timeout_floor_seconds", "expected at least 1");
    }
    if !(c.limits.worker_timeout_factor.is_finite() && c.limits.worker_timeout_factor > 0.0) {
        return bad(
            "limits.worker_timeout_factor",
            "expected a positive number of seconds per second of source",
        );
    }
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(c.limits.max_duration_seconds) {
        return bad(
            "limits.max_duration_seconds",
            "expected a positive number of seconds",
        );
    }
    if !positive(c.limits.max_frame_rate) {
        return bad(
            "limits.max_frame_rate",
            "expected a positive number of frames per second",
        );
    }
    if c.limits.max_pixels < 64 * 64 {
        return bad("limits.max_pixels", "expected at least 4096 (64x64)");
    }
    if c.limits.max_frames == 0 {
        return bad("limits.max_frames", "expected at least 1");
    }
    if c.limits.max_output_bytes < 1 << 20 {
        return bad(
            "limits.max_output_bytes",
            "expected at least 1048576 (1 MiB)",
        );
    }
    validate_quotas(&c.limits)?;
    if c.media.crf > 51 {
        return bad("media.crf", "expected 0 to 51");
    }
    const PRESETS: &[&str] = &[
        "ultrafast",
        "superfast",
        "veryfast",
        "faster",
        "fast",
        "medium",
        "slow",
        "slower",
        "veryslow",
    ];
    if !PRESETS.contains(&c.media.preset.as_str()) {
        return bad(
            "media.preset",
            "expected an x264 preset: ultrafast ... veryslow",
        );
    }
    if !(1..=100).contains(&c.media.jpeg_quality) {
        return bad("media.jpeg_quality", "expected 1 to 100");
    }
    if !(c.media.frames_every.is_finite() && c.media.frames_every >= 0.01) {
        return bad("media.frames_every", "expected seconds, at least 0.01");
    }
    if c.media.max_height < 16 {
        return bad("media.max_height", "expected at least 16");
    }
    if !c.auth.hs256_secret.is_empty() && c.auth.hs256_secret.trim().len() < 32 {
        return bad("auth.hs256_secret", "use at least 32 characters");
    }
    if c.signing.ttl_seconds == 0 {
        return bad("signing.ttl_seconds", "expected at least 1");
    }
    if c.signing.max_ttl_seconds < c.signing.ttl_seconds {
        return bad(
            "signing.max_ttl_seconds",
            "expected at least signing.ttl_seconds",
        );
    }
    Ok(())
}

/// Every quota and rate must let a user do something: 0 would refuse
/// every request of its kind, which turning a feature off is not.
fn validate_quotas(l: &super::Limits) -> Result<(), ConfigError> {
    let at_least_one = [
        (
            "limits.quota_uploads_in_progress",
            l.quota_uploads_in_progress as u64,
        ),
        ("limits.quota_open_uploads", l.quota_open_uploads),
        (
            "limits.quota_upload_bytes_per_day",
            l.quota_upload_bytes_per_day,
        ),
        ("limits.quota_stored_bytes", l.quota_stored_bytes),
        (
            "limits.quota_websocket_connections",
            l.quota_websocket_connections as u64,
        ),
        (
            "limits.rate_requests_per_second",
            l.rate_requests_per_second.into(),
        ),
        (
            "limits.rate_auth_failures_per_minute",
            l.rate_auth_failures_per_minute.into(),
        ),
    ];
    for (key, value) in at_least_one {
        if value == 0 {
            return Err(ConfigError::Invalid(format!("{key}: expected at least 1")));
        }
    }
    if l.rate_request_burst < l.rate_requests_per_second {
        return Err(ConfigError::Invalid(
            "limits.rate_request_burst: expected at least limits.rate_requests_per_second".into(),
        ));
    }
    Ok(())
}

/// hyper reads a request head into a buffer of at least 8 KiB; a cap
/// above 1 MiB would let one request head hold that much memory.
const MIN_HEADER_BYTES: usize = 8 << 10;
const MAX_HEADER_BYTES: usize = 1 << 20;

/// An origin as browsers send it: `scheme://host[:port]`, nothing more.
fn check_origin(origin: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(origin).map_err(|e| format!("not an origin: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected http(s)://host[:port]".into());
    }
    if url.origin().ascii_serialization() != origin.trim_end_matches('/').to_ascii_lowercase() {
        return Err("expected only scheme, host and port, e.g. https://app.example".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn the_committed_config_file_is_the_defaults() {
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let parsed = load(&committed, true, none()).expect("config.toml parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn environment_overrides_the_file_and_is_typed() {
        let env = vec![
            (
                "VIDMILL__SERVER__LISTEN".to_string(),
                "127.0.0.1:9000".to_string(),
            ),
            ("VIDMILL__MEDIA__CRF".to_string(), "20".to_string()),
            (
                "VIDMILL__AUTH__ISSUER".to_string(),
                "https://id.example".to_string(),
            ),
            ("OTHER".to_string(), "ignored".to_string()),
        ];
        let c = load(Path::new("/nonexistent.toml"), false, env).expect("load");
        assert_eq!(c.server.listen, "127.0.0.1:9000");
        assert_eq!(c.media.crf, 20);
        assert_eq!(c.auth.issuer, "https://id.example");
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[media]\ncrf = 99\n").expect("write");
        assert!(load(&file, true, none())
            .expect_err("bad")
            .to_string()
            .contains("media.crf"));
        std::fs::write(&file, "[media]\ncfr = 20\n").expect("write");
        assert!(load(&file, true, none())
            .expect_err("unknown")
            .to_string()
            .contains("cfr"));
        std::fs::write(&file, "[server]\nlisten = \"nowhere\"\n").expect("write");
        assert!(load(&file, true, none())
            .expect_err("bad")
            .to_string()
            .contains("server.listen"));
        std::fs::write(&file, "[storage]\ntype = \"ftp\"\n").expect("write");
        let why = load(&file, true, none()).expect_err("ftp").to_string();
        assert!(why.contains("type") && why.contains("s3"), "{why}");
        assert!(
            load(&dir.path().join("missing.toml"), true, none()).is_err(),
            "a named file must exist"
        );
    }

    #[test]
    fn notification_and_upload_limits_must_be_positive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        for (text, key) in [
            ("[notify]\nmax_age_seconds = 10\n", "notify.max_age_seconds"),
            (
                "[limits]\nupload_expiry_seconds = 0\n",
                "limits.upload_expiry_seconds",
            ),
            ("[storage]\ntype = \"s3\"\n", "storage.s3.bucket"),
            (
                "[database]\nurl = \"postgres://u:p@db/vidmill\"\n",
                "storage.type",
            ),
            ("[database]\nurl = \"mysql://db\"\n", "database.url"),
            (
                "[database]\nlease_ttl_seconds = 1\n",
                "database.lease_ttl_seconds",
            ),
            (
                "[storage]\ntype = \"s3\"\n[storage.s3]\nbucket = \"b\"\nregion = \"\"\n",
                "storage.s3.region",
            ),
            (
                "[storage]\ntype = \"s3\"\n[storage.s3]\nbucket = \"b\"\nendpoint = \"ftp://x\"\n",
                "storage.s3.endpoint",
            ),
            (
                "[notify]\nsmtp_url = \"smtp://127.0.0.1:25\"\n",
                "notify.from",
            ),
            (
                "[limits]\nworker_memory_bytes = 1000\n",
                "limits.worker_memory_bytes",
            ),
            (
                "[limits]\nworker_timeout_floor_seconds = 0\n",
                "limits.worker_timeout_floor_seconds",
            ),
            (
                "[limits]\nworker_timeout_factor = -1.0\n",
                "limits.worker_timeout_factor",
            ),
            (
                "[server]\nmax_connections_per_ip = 0\n",
                "server.max_connections_per_ip",
            ),
            (
                "[server]\nmax_header_bytes = 100\n",
                "server.max_header_bytes",
            ),
            (
                "[server]\nheader_timeout_seconds = 0\n",
                "server.header_timeout_seconds",
            ),
            (
                "[server]\nallowed_origins = [\"https://a.example/path\"]\n",
                "server.allowed_origins",
            ),
            (
                "[server]\nallowed_origins = [\"ftp://a.example\"]\n",
                "server.allowed_origins",
            ),
            (
                "[signing]\nttl_seconds = 7200\nmax_ttl_seconds = 3600\n",
                "signing.max_ttl_seconds",
            ),
            (
                "[limits]\nquota_uploads_in_progress = 0\n",
                "limits.quota_uploads_in_progress",
            ),
            (
                "[limits]\nquota_open_uploads = 0\n",
                "limits.quota_open_uploads",
            ),
            (
                "[limits]\nquota_websocket_connections = 0\n",
                "limits.quota_websocket_connections",
            ),
            (
                "[limits]\nrate_requests_per_second = 0\n",
                "limits.rate_requests_per_second",
            ),
            (
                "[limits]\nrate_requests_per_second = 50\nrate_request_burst = 10\n",
                "limits.rate_request_burst",
            ),
            (
                "[limits]\nrate_auth_failures_per_minute = 0\n",
                "limits.rate_auth_failures_per_minute",
            ),
            (
                "[limits]\nquota_upload_bytes_per_day = 0\n",
                "limits.quota_upload_bytes_per_day",
            ),
            (
                "[limits]\nquota_stored_bytes = 0\n",
                "limits.quota_stored_bytes",
            ),
        ] {
            std::fs::write(&file, text).expect("write");
            let err = load(&file, true, none()).expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn a_jwks_url_is_https_or_loopback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        let with = |url: &str, path: &str| {
            std::fs::write(
                &file,
                format!("[auth]\njwks_url = \"{url}\"\njwks_path = \"{path}\"\n"),
            )
            .expect("write");
            load(&file, true, none())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        for ok in [
            "https://id.example/.well-known/jwks.json",
            "http://127.0.0.1:8081/jwks",
            "http://[::1]:8081/jwks",
            "http://localhost/jwks",
        ] {
            assert_eq!(with(ok, ""), Ok(()), "{ok}");
        }
        for bad in [
            "http://id.example/jwks",
            "http://10.0.0.1/jwks",
            "ftp://id.example/jwks",
            "not a url",
        ] {
            let err = with(bad, "").expect_err(bad);
            assert!(err.contains("auth.jwks_url"), "{err}");
        }
        let err = with("https://id.example/jwks", "/etc/jwks.json").expect_err("both");
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn secrets_are_masked() {
        let mut c = Config::default();
        c.auth.hs256_secret = "s3cr3t-s3cr3t-s3cr3t".into();
        c.notify.smtp_url = "smtp://user:pass@mail.example:587".into();
        c.database.url = "postgres://vidmill:hunter2@db.internal/vidmill".into();
        let m = c.masked();
        assert_eq!(m.auth.hs256_secret, "***");
        assert_eq!(m.notify.smtp_url, "smtp://***@mail.example:587");
        assert_eq!(m.database.url, "postgres://***@db.internal/vidmill");
    }
}
