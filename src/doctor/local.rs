//! Checks on this machine: GStreamer elements, the database, storage and
//! free disk, the JWKS and the clock.

use std::time::{Duration, SystemTime};

use vidmill_actors::SqliteCatalog;

use super::{Check, Outcome};
use crate::auth::{KeyCache, KeySource};
use crate::config::{Config, StorageKind};

pub async fn checks(config: &Config) -> Vec<Check> {
    vec![
        Check::new("gstreamer", gstreamer()),
        Check::new("database", database(config)),
        Check::new("storage", storage(config).await),
        Check::new("jwks", jwks(config).await),
    ]
}

fn gstreamer() -> Outcome {
    match vidmill_pipelines::missing_elements() {
        Ok(missing) if missing.is_empty() => {
            Outcome::Ok("every element the pipelines need is installed".into())
        }
        Ok(missing) => Outcome::Fail(format!(
            "missing GStreamer elements: {} (install gstreamer1.0-plugins-base, -good, -bad, -ugly and gstreamer1.0-libav)",
            missing.join(", ")
        )),
        Err(e) => Outcome::Fail(format!("GStreamer does not start: {e}")),
    }
}

fn database(config: &Config) -> Outcome {
    let path = &config.database.path;
    match SqliteCatalog::inspect(path) {
        Ok(_) => Outcome::Ok(format!("{} opens, schema up to date", path.display())),
        Err(e) => Outcome::Fail(format!("database.path: {e}")),
    }
}

async fn storage(config: &Config) -> Outcome {
    if config.storage.kind == StorageKind::S3 {
        let bucket = &config.storage.s3.bucket;
        return match crate::app::store(config).await {
            Ok(store) => match store.check().await {
                Ok(()) => Outcome::Ok(format!("S3 bucket {bucket} reachable")),
                Err(e) => Outcome::Fail(format!("storage.s3: {e}")),
            },
            Err(e) => Outcome::Fail(e),
        };
    }
    let root = std::path::Path::new(&config.storage.path);
    if !root.is_dir() {
        return Outcome::Fail(format!(
            "storage.path {} does not exist (vidmill creates it on its first start)",
            root.display()
        ));
    }
    let probe = root.join(format!(".doctor-{}", vidmill_actors::new_id()));
    let written = std::fs::write(&probe, b"vidmill doctor")
        .and_then(|()| std::fs::File::open(&probe)?.sync_all());
    let _ = std::fs::remove_file(&probe);
    if let Err(e) = written {
        return Outcome::Fail(format!(
            "storage.path {} is not writable: {e}",
            root.display()
        ));
    }
    let free = vidmill_actors::system_headroom(root.to_path_buf())().free_disk;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    if free < config.limits.min_free_disk_bytes {
        return Outcome::Fail(format!(
            "{} has {:.1} GiB free, below limits.min_free_disk_bytes ({:.1} GiB): uploads are refused with 507",
            root.display(),
            gib(free),
            gib(config.limits.min_free_disk_bytes)
        ));
    }
    Outcome::Ok(format!(
        "{} writable, {:.1} GiB free",
        root.display(),
        gib(free)
    ))
}

async fn jwks(config: &Config) -> Outcome {
    let a = &config.auth;
    let source = if !a.jwks_url.is_empty() {
        match KeySource::url(&a.jwks_url) {
            Ok(s) => s,
            Err(e) => return Outcome::Fail(e.to_string()),
        }
    } else if !a.jwks_path.is_empty() {
        KeySource::File(a.jwks_path.clone().into())
    } else {
        return Outcome::Skip("no auth.jwks_url or auth.jwks_path: HS256 tokens only".into());
    };
    let cache = match KeyCache::new(source) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(format!("auth.jwks_path: {e}")),
    };
    let keys = match cache.refresh().await {
        Ok(0) => return Outcome::Fail("the JWKS holds no RS256/ES256 key with a kid".into()),
        Ok(n) => n,
        Err(e) => return Outcome::Fail(format!("the JWKS cannot be read: {e}")),
    };
    if a.jwks_url.is_empty() {
        return Outcome::Ok(format!("{keys} keys in {}", a.jwks_path));
    }
    match clock_skew(&a.jwks_url).await {
        Some(skew) if skew > Duration::from_secs(a.leeway_seconds) => Outcome::Fail(format!(
            "{keys} keys, but this clock is {}s off the identity provider's (auth.leeway_seconds is {}): fix NTP or tokens will be refused",
            skew.as_secs(),
            a.leeway_seconds
        )),
        Some(skew) => Outcome::Ok(format!("{keys} keys; clock within {}s of the identity provider", skew.as_secs())),
        None => Outcome::Ok(format!("{keys} keys (its server sent no Date to compare clocks with)")),
    }
}

/// How far this clock is from the `Date` the JWKS server sends.
async fn clock_skew(url: &str) -> Option<Duration> {
    let response = reqwest::Client::new()
        .head(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let date = response
        .headers()
        .get(reqwest::header::DATE)?
        .to_str()
        .ok()?;
    let theirs = httpdate::parse_http_date(date).ok()?;
    // Either side may be ahead.
    Some(match SystemTime::now().duration_since(theirs) {
        Ok(ahead) => ahead,
        Err(behind) => behind.duration(),
    })
}
