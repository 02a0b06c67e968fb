//! One server per SQLite catalog. Two processes on one SQLite file would
//! each believe they are alone: each would release the other's leases at
//! start and run its videos a second time. The second is refused at start,
//! by name; nodes that work together share PostgreSQL (`database.url`).
//! The lock is the kernel's (`flock`), so it goes with the process however
//! the process ends.

use std::fs::{File, OpenOptions};
use std::path::Path;

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

/// Held for as long as the server runs.
#[derive(Debug)]
pub struct CatalogLock {
    _file: File,
}

impl CatalogLock {
    /// Takes the lock beside the SQLite file `db`, or says who holds it.
    pub fn take(db: &Path) -> Result<Self, String> {
        let path = db.with_extension("lock");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("database.path: {e}"))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("database.path: {}: {e}", path.display()))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Self { _file: file }),
            Err(Errno::WOULDBLOCK) => Err(format!(
                "database.path {} is in use by another vidmill server; two servers cannot \
                 share a SQLite catalog (nodes that work together share PostgreSQL: \
                 database.url, see docs/SCALING.md)",
                db.display()
            )),
            Err(e) => Err(format!(
                "database.path: cannot lock {}: {e}",
                path.display()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_by_name_until_the_first_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("vidmill.sqlite");
        let first = CatalogLock::take(&db).expect("first");
        let second = CatalogLock::take(&db).expect_err("second");
        assert!(second.contains("database.path"), "{second}");
        drop(first);
        CatalogLock::take(&db).expect("free again");
    }
}
