//! The file store: objects as files under `storage.path`. A put lands under
//! a temporary name, is flushed to disk and renamed, so an object is either
//! complete or absent, also across a power cut.

use std::path::{Path, PathBuf};

use vidmill_actors::{BlobObject, BlobStore, BoxFuture, StoreError};

use super::file_read;

#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The file of `key`. Keys are made by vidmill (`videos/{id}/{name}`);
    /// anything that could climb out of the root is refused.
    pub fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let safe = !key.is_empty()
            && key
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        if !safe {
            return Err(StoreError::NotFound(key.into()));
        }
        Ok(self.root.join(key))
    }
}

fn unavailable(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
}

/// Moves `file` to `target` atomically and durably: a rename when both are
/// on one filesystem, else a copy to a temporary sibling first.
fn place(file: &Path, target: &Path) -> Result<u64, StoreError> {
    let dir = target
        .parent()
        .ok_or_else(|| StoreError::Unavailable("object has no directory".into()))?;
    std::fs::create_dir_all(dir).map_err(|e| unavailable("create", dir, e))?;
    if std::fs::rename(file, target).is_err() {
        let temp = target.with_extension("vidmill-tmp");
        let copied = std::fs::copy(file, &temp)
            .and_then(|_| std::fs::File::open(&temp)?.sync_all())
            .and_then(|_| std::fs::rename(&temp, target));
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&temp);
            return Err(unavailable("copy to", target, e));
        }
        let _ = std::fs::remove_file(file);
    }
    let f = std::fs::File::open(target).map_err(|e| unavailable("open", target, e))?;
    f.sync_all().map_err(|e| unavailable("sync", target, e))?;
    // The rename itself is durable only once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(f.metadata()
        .map_err(|e| unavailable("stat", target, e))?
        .len())
}

impl BlobStore for FileStore {
    fn put_file<'a>(
        &'a self,
        key: &'a str,
        file: &'a Path,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let target = self.path(key)?;
            let file = file.to_path_buf();
            tokio::task::spawn_blocking(move || place(&file, &target))
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?
        })
    }

    fn local_copy<'a>(
        &'a self,
        key: &'a str,
        _scratch: &'a Path,
    ) -> BoxFuture<'a, Result<PathBuf, StoreError>> {
        // Objects are local files already: no copy.
        Box::pin(async move {
            let path = self.path(key)?;
            match tokio::fs::metadata(&path).await {
                Ok(_) => Ok(path),
                Err(_) => Err(StoreError::NotFound(key.into())),
            }
        })
    }

    fn len<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let path = self.path(key)?;
            tokio::fs::metadata(&path)
                .await
                .map(|m| m.len())
                .map_err(|_| StoreError::NotFound(key.into()))
        })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let dir = self.path(prefix.trim_end_matches('/'))?;
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(unavailable("remove", &dir, e)),
            }
        })
    }

    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let (from_path, to_path) = (self.path(from)?, self.path(to)?);
            match tokio::fs::rename(&from_path, &to_path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(StoreError::NotFound(from.into()))
                }
                Err(e) => Err(unavailable("rename", &from_path, e)),
            }
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let root = self.root.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&root)?;
                // A name of its own per check: concurrent checks sharing one
                // file would remove each other's and report the store broken.
                let probe = root.join(format!(".readyz-{}", vidmill_actors::new_id()));
                let written = std::fs::write(&probe, b"ok");
                let removed = std::fs::remove_file(&probe);
                written.and(removed)
            })
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
            // No path here: the message may reach an unauthenticated caller.
            .map_err(|e| StoreError::Unavailable(format!("the file store is not writable: {e}")))
        })
    }

    fn open<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn BlobObject>, StoreError>> {
        Box::pin(async move {
            let path = self.path(key)?;
            match file_read::open(&path).await {
                Ok(object) => Ok(Box::new(object) as Box<dyn BlobObject>),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(StoreError::NotFound(key.into()))
                }
                Err(e) => Err(unavailable("open", &path, e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn objects_arrive_whole_and_leave_with_their_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::new(dir.path().join("objects"));
        let upload = dir.path().join("upload");
        std::fs::write(&upload, b"0123456789").expect("write");
        assert_eq!(
            store
                .put_file("videos/a/source", &upload)
                .await
                .expect("put"),
            10
        );
        assert!(!upload.exists(), "moved, not copied");
        assert_eq!(store.len("videos/a/source").await.expect("len"), 10);
        let local = store
            .local_copy("videos/a/source", dir.path())
            .await
            .expect("local");
        assert_eq!(std::fs::read(local).expect("read"), b"0123456789");
        store.delete_prefix("videos/a/").await.expect("delete");
        assert!(matches!(
            store.len("videos/a/source").await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn concurrent_checks_do_not_trip_over_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::new(dir.path().join("objects"));
        let checks = (0..64).map(|_| store.check());
        for result in futures_util::future::join_all(checks).await {
            result.expect("check");
        }
        let left = std::fs::read_dir(dir.path().join("objects"))
            .expect("dir")
            .count();
        assert_eq!(left, 0, "no probe file left behind");
    }

    #[test]
    fn keys_cannot_climb_out_of_the_root() {
        let store = FileStore::new("/srv/objects");
        for key in ["../etc/passwd", "videos/../../x", "", "videos//x", "/abs"] {
            assert!(store.path(key).is_err(), "{key}");
        }
        assert!(store.path("videos/01J/video.mp4").is_ok());
    }
}
