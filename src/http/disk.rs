//! The free-disk floor (`limits.min_free_disk_bytes`) for uploads: checked
//! when one starts and again while its bytes arrive, since uploads running
//! side by side would otherwise fill the disk between their first checks;
//! a full disk is the client's 507 (try again later), not a 500.

use super::error::ApiError;
use crate::app::App;

/// Refuses with 507 when free disk is below the floor.
pub async fn check_disk(app: &App) -> Result<(), ApiError> {
    let probe = app.headroom.clone();
    let free = tokio::task::spawn_blocking(move || probe().free_disk)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if free < app.config.limits.min_free_disk_bytes {
        return Err(ApiError::InsufficientStorage);
    }
    Ok(())
}

/// Free disk is checked again after every this many bytes of an upload:
/// often enough that parallel uploads stop near the floor, rarely enough
/// to cost nothing (one `statvfs`).
const DISK_CHECK_EVERY: u64 = 4 << 20;

/// Holds an upload to the floor while its bytes arrive.
#[derive(Debug)]
pub struct DiskGuard<'a> {
    app: &'a App,
    unchecked: u64,
}

impl<'a> DiskGuard<'a> {
    pub fn new(app: &'a App) -> Self {
        Self { app, unchecked: 0 }
    }

    /// Accounts for `bytes` about to be written; past the floor, 507.
    pub async fn writing(&mut self, bytes: usize) -> Result<(), ApiError> {
        self.unchecked += bytes as u64;
        if self.unchecked >= DISK_CHECK_EVERY {
            self.unchecked = 0;
            check_disk(self.app).await?;
        }
        Ok(())
    }
}

/// A failed write of upload bytes: a full disk is the client's 507 (try
/// again later), anything else is ours.
pub fn write_error(e: std::io::Error) -> ApiError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        return ApiError::InsufficientStorage;
    }
    ApiError::Internal(format!("write upload: {e}"))
}
