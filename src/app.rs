//! The state the server's handlers share, built from the configuration: the
//! core's handle, token checking, URL signing and the object store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vidmill_actors::{Handle, HeadroomProbe, Video, VideoId};

use crate::auth::{Authenticator, KeySource};
use crate::config::{Config, StorageKind};
use crate::signing::Signer;

#[derive(Clone)]
pub struct App {
    pub handle: Handle,
    pub auth: Arc<Authenticator>,
    pub signer: Signer,
    pub config: Arc<Config>,
    pub store: Arc<dyn vidmill_actors::BlobStore>,
    /// Media work (the upload probe), each call in a worker process.
    pub engine: Arc<dyn vidmill_actors::MediaEngine>,
    pub headroom: HeadroomProbe,
    /// Base of signed links, without a trailing slash.
    pub public_url: String,
    pub metrics: crate::metrics::Metrics,
    pub recent: RecentVideos,
    /// Resumable uploads in progress (tus).
    pub uploads: crate::http::tus::Uploads,
    /// Per-user quotas and request rates.
    pub quotas: crate::quotas::Quotas,
    /// Events rendered once, as WebSocket frames, for all of a video's
    /// subscribers.
    pub rendered: crate::http::rendered::RenderedEvents,
}

/// How long a ready video's record is reused for output requests; a
/// delete forgets it at once.
const RECENT_TTL: Duration = Duration::from_secs(2);
/// Bound on the cache; past it, it starts over.
const RECENT_MAX: usize = 10_000;

/// Ready videos read recently for output requests.
#[derive(Debug, Clone, Default)]
pub struct RecentVideos(Arc<Mutex<HashMap<VideoId, (Video, std::time::Instant)>>>);

impl RecentVideos {
    pub fn get(&self, id: &str) -> Option<Video> {
        let map = self.0.lock().ok()?;
        map.get(id)
            .filter(|(_, at)| at.elapsed() < RECENT_TTL)
            .map(|(v, _)| v.clone())
    }

    pub fn put(&self, video: Video) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= RECENT_MAX {
                map.clear();
            }
            map.insert(video.id.clone(), (video, std::time::Instant::now()));
        }
    }

    pub fn forget(&self, id: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(id);
        }
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads a secret given as a value or a file; when neither is set and
/// `generate_at` is given, one is generated there on first use (mode 0600)
/// and read back on later runs. `name` is the config key, for messages.
///
/// A secret that is empty or only whitespace, from any source, is refused:
/// an empty HMAC key is a key anyone can use, so it must stop the start,
/// not be taken for a key.
pub fn secret(
    name: &str,
    value: &str,
    file: &str,
    generate_at: Option<&Path>,
) -> Result<Option<Vec<u8>>, String> {
    if !value.is_empty() {
        return non_blank(value, || {
            format!("{name} is only whitespace: set a real key")
        })
        .map(Some);
    }
    if !file.is_empty() {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{name}_file {file}: {e}"))?;
        return non_blank(&text, || {
            format!("{name}_file {file} is empty: put the key in it (it is trimmed of whitespace)")
        })
        .map(Some);
    }
    let Some(path) = generate_at else {
        return Ok(None);
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            return non_blank(&text, || {
                format!(
                    "the generated key {} is empty (a write that failed?): remove it to have a \
                     new one generated, or set {name}",
                    path.display()
                )
            })
            .map(Some)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").map_err(|e| e.to_string())?,
        &mut bytes,
    )
    .map_err(|e| e.to_string())?;
    let text = hex::encode(bytes);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    match create_private(path, &text) {
        Ok(()) => Ok(Some(text.into_bytes())),
        // Another process generated it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            secret(name, value, file, generate_at)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Shortest HMAC key accepted, in bytes: what HS256 itself asks for
/// (RFC 7518 §3.2, a key as long as the hash), so a guessable word is
/// never a key.
pub const MIN_HMAC_KEY_BYTES: usize = 32;

/// Like [`secret`], for an HMAC key (HS256, link signing, webhooks): also
/// refused when shorter than [`MIN_HMAC_KEY_BYTES`], from any source.
pub fn hmac_key(
    name: &str,
    value: &str,
    file: &str,
    generate_at: Option<&Path>,
) -> Result<Option<Vec<u8>>, String> {
    let key = secret(name, value, file, generate_at)?;
    match &key {
        Some(k) if k.len() < MIN_HMAC_KEY_BYTES => Err(format!(
            "{name} is {} bytes: use at least {MIN_HMAC_KEY_BYTES} (for instance the output of \
             `openssl rand -hex 32`)",
            k.len()
        )),
        _ => Ok(key),
    }
}

/// The secret without surrounding whitespace, or `empty()` as the error.
fn non_blank(text: &str, empty: impl FnOnce() -> String) -> Result<Vec<u8>, String> {
    let key = text.trim();
    if key.is_empty() {
        return Err(empty());
    }
    Ok(key.as_bytes().to_vec())
}

/// Creates `path` holding `text` (mode 0600) atomically: the text is
/// written and synced under a temporary name, then linked into place, so
/// `path` never exists empty or half-written, and an existing file is never
/// replaced (the link fails with `AlreadyExists`).
fn create_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(format!(".tmp-{}", vidmill_actors::new_id()));
    let temp = PathBuf::from(temp_name);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&temp, path)
    })();
    let _ = std::fs::remove_file(&temp);
    written?;
    // The new name is durable only once its directory is synced.
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Where the generated HS256 key lives.
pub fn generated_key_path(config: &Config) -> PathBuf {
    config.data_dir().join("hs256.secret")
}

/// The HS256 key: configured, else the generated one (created on first
/// use when `generate`, else only read if it exists).
fn hs256_key(config: &Config, generate: bool) -> Result<Option<Vec<u8>>, String> {
    let a = &config.auth;
    let generated = generated_key_path(config);
    if generate || generated.exists() {
        hmac_key(
            "auth.hs256_secret",
            &a.hs256_secret,
            &a.hs256_secret_file,
            Some(&generated),
        )
    } else {
        hmac_key(
            "auth.hs256_secret",
            &a.hs256_secret,
            &a.hs256_secret_file,
            None,
        )
    }
}

/// Builds the token checker from the `auth` section.
pub fn authenticator(config: &Config) -> Result<Authenticator, String> {
    build_authenticator(config, true)
}

/// The token checker with the keys that exist, creating none (`vidmill
/// doctor`).
pub fn existing_authenticator(config: &Config) -> Result<Authenticator, String> {
    build_authenticator(config, false)
}

fn build_authenticator(config: &Config, generate: bool) -> Result<Authenticator, String> {
    let a = &config.auth;
    let hs = hs256_key(config, generate)?;
    let jwks = if !a.jwks_path.is_empty() {
        Some(KeySource::File(PathBuf::from(&a.jwks_path)))
    } else if !a.jwks_url.is_empty() {
        Some(KeySource::url(&a.jwks_url).map_err(|e| format!("auth.jwks_url: {e}"))?)
    } else {
        None
    };
    Authenticator::new(
        hs.as_deref(),
        jwks,
        &a.issuer,
        &a.audience,
        a.leeway_seconds,
    )
    .map_err(|e| e.to_string())
}

/// Builds the URL signer: its own key, or one derived from the HS256 key.
pub fn signer(config: &Config) -> Result<Signer, String> {
    build_signer(config, true)
}

/// The URL signer from keys that exist, creating none (`vidmill doctor`).
pub fn existing_signer(config: &Config) -> Result<Signer, String> {
    build_signer(config, false)
}

fn build_signer(config: &Config, generate: bool) -> Result<Signer, String> {
    let s = &config.signing;
    if let Some(key) = hmac_key("signing.key", &s.key, &s.key_file, None)? {
        return Ok(Signer::new(&key));
    }
    let hs = hs256_key(config, generate)?
        .filter(|k| !k.is_empty())
        .ok_or("no signing key yet: start the server once so it creates one")?;
    // A separate key per purpose, so a token secret never signs URLs as is.
    Ok(Signer::new(
        Signer::new(&hs)
            .sign("vidmill", "url-signing-key", 0)
            .as_bytes(),
    ))
}

impl App {
    /// A signed URL for one output, valid for `signing.ttl` plus the video's
    /// duration (at most `signing.max_ttl`) so a player's later range
    /// requests still work.
    pub fn signed_url(&self, video: &Video, output: &str) -> String {
        let exp = unix_now() + self.link_lifetime(video).as_secs();
        let path = format!("/v1/videos/{}/{output}", video.id);
        let sig = self.signer.sign(&video.owner, &path, exp);
        format!("{}{path}?exp={exp}&sig={sig}", self.public_url)
    }

    /// How long a link to `video`'s outputs works: `signing.ttl` plus its
    /// duration, so a player started near the end still gets its ranges,
    /// but never past `signing.max_ttl`: the duration is what the uploaded
    /// file declares, so without the cap its uploader would choose.
    pub fn link_lifetime(&self, video: &Video) -> Duration {
        let duration = video.source.as_ref().and_then(|s| s.duration);
        link_lifetime(&self.config.signing, duration)
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.config.signing.ttl_seconds)
    }
}

/// `signing.ttl` plus `duration` seconds, capped at `signing.max_ttl`; a
/// duration that is no number of seconds adds nothing.
fn link_lifetime(signing: &crate::config::Signing, duration: Option<f64>) -> Duration {
    let extra = duration
        .filter(|d| d.is_finite() && *d > 0.0)
        .map_or(0, |d| d.ceil().min(u64::MAX as f64) as u64);
    let secs = signing
        .ttl_seconds
        .saturating_add(extra)
        .min(signing.max_ttl_seconds);
    Duration::from_secs(secs)
}

/// The object store `storage` configures.
pub async fn store(config: &Config) -> Result<Arc<dyn vidmill_actors::BlobStore>, String> {
    match config.storage.kind {
        StorageKind::S3 => {
            let s3 = &config.storage.s3;
            let secret = secret(
                "storage.s3.secret_access_key",
                &s3.secret_access_key,
                &s3.secret_access_key_file,
                None,
            )?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
            Ok(Arc::new(crate::store::S3Store::new(s3, secret).await?))
        }
        StorageKind::File => Ok(Arc::new(crate::store::FileStore::new(&config.storage.path))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signing(ttl: u64, max: u64) -> crate::config::Signing {
        crate::config::Signing {
            ttl_seconds: ttl,
            max_ttl_seconds: max,
            ..Default::default()
        }
    }

    #[test]
    fn a_link_lives_ttl_plus_duration_up_to_the_cap() {
        let s = signing(3600, 86_400);
        assert_eq!(link_lifetime(&s, None), Duration::from_secs(3600));
        assert_eq!(link_lifetime(&s, Some(60.2)), Duration::from_secs(3661));
        for lie in [1e12, f64::MAX] {
            assert_eq!(
                link_lifetime(&s, Some(lie)),
                Duration::from_secs(86_400),
                "{lie}"
            );
        }
        for nonsense in [f64::NAN, f64::INFINITY, -5.0] {
            assert_eq!(link_lifetime(&s, Some(nonsense)), Duration::from_secs(3600));
        }
    }

    #[test]
    fn short_hmac_keys_are_refused_from_every_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let short = "a-key-of-31-bytes-is-not-enough";
        assert_eq!(short.len(), 31);
        let err = hmac_key("signing.key", short, "", None).expect_err("short value");
        assert!(
            err.contains("signing.key") && err.contains("at least 32"),
            "{err}"
        );
        let file = dir.path().join("k");
        std::fs::write(&file, format!("{short}\n")).expect("write");
        let f = file.to_str().expect("utf-8");
        let err = hmac_key("notify.webhook_secret", "", f, None).expect_err("short file");
        assert!(err.contains("notify.webhook_secret"), "{err}");
        let long = format!("{short}!");
        assert_eq!(
            hmac_key("auth.hs256_secret", &long, "", None).expect("32 bytes"),
            Some(long.into_bytes())
        );
        // A generated key is long enough.
        let generated = dir.path().join("generated.secret");
        assert!(hmac_key("auth.hs256_secret", "", "", Some(&generated)).is_ok());
    }

    #[test]
    fn empty_or_blank_secrets_are_refused_from_every_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("key");
        let f = file.to_str().expect("utf8");
        for blank in ["", " \n\t", "\n"] {
            std::fs::write(&file, blank).expect("write");
            let err = secret("auth.hs256_secret", "", f, None).expect_err("empty file accepted");
            assert!(
                err.contains("auth.hs256_secret_file") && err.contains("empty"),
                "{err}"
            );
            let err =
                secret("auth.hs256_secret", "", "", Some(&file)).expect_err("empty generated");
            assert!(err.contains("empty"), "{err}");
        }
        let err = secret("signing.key", "   ", "", None).expect_err("blank value");
        assert!(err.contains("signing.key"), "{err}");
        std::fs::write(&file, " key-with-spaces-around \n").expect("write");
        assert_eq!(
            secret("k", "", f, None).expect("read"),
            Some(b"key-with-spaces-around".to_vec())
        );
    }

    #[test]
    fn a_generated_key_is_written_whole_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/hs256.secret");
        let first = secret("auth.hs256_secret", "", "", Some(&path))
            .expect("generate")
            .expect("key");
        assert_eq!(first.len(), 64);
        assert_eq!(std::fs::read(&path).expect("read"), first);
        let again = secret("auth.hs256_secret", "", "", Some(&path)).expect("read back");
        assert_eq!(again, Some(first));
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("hs256.secret")],
            "no temp file left"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
