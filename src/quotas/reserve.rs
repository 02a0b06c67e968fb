//! Bytes promised to uploads in progress, per user, so that the byte
//! quotas hold across concurrent uploads: each upload reserves its bytes
//! before it stores them (a declared length at once, a body of unknown
//! length step by step as it arrives), and the catalog's stored bytes plus
//! every reservation of the user never pass a quota. A reservation is a
//! guard: dropping it (the upload finished, failed, or its client went
//! away and the handler's future was dropped) gives its bytes back.
//!
//! The catalog and the reservations are two sources, so their order
//! matters. An upload that finishes charges the catalog first and then
//! drops its reservation; an upload that checks takes its reservation and
//! the total of everyone's first, then reads the catalog. Whatever
//! interleaving, a finished upload's bytes are in the reservations it saw,
//! in the catalog it read, or in both (counted twice is only cautious).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vidmill_actors::Handle;

use super::{Allowance, Inner};
use crate::http::error::ApiError;

/// The least and the most a body of unknown length reserves ahead of what
/// it has sent: ahead, so that a large upload does not read the catalog
/// for every chunk; at most 8 MiB, so that it holds little it may not use.
const AHEAD_MIN: u64 = 64 << 10;
const AHEAD_MAX: u64 = 8 << 20;

/// Bytes reserved per user; users with nothing reserved are not held.
#[derive(Debug, Default)]
pub(super) struct Reserved(Mutex<HashMap<String, u64>>);

impl Reserved {
    /// Moves `user`'s reservation from `from` to `to` bytes and answers the
    /// user's total after the move.
    fn shift(&self, user: &str, from: u64, to: u64) -> u64 {
        let Ok(mut held) = self.0.lock() else {
            // A panic while held: nothing is counted any more; the catalog
            // check alone still holds for uploads that start later.
            return to;
        };
        let total = held.entry(user.to_string()).or_insert(0);
        *total = total.saturating_sub(from).saturating_add(to);
        let now = *total;
        if now == 0 {
            held.remove(user);
        }
        now
    }

    #[cfg(test)]
    fn of(&self, user: &str) -> u64 {
        self.0
            .lock()
            .ok()
            .and_then(|h| h.get(user).copied())
            .unwrap_or(0)
    }
}

/// Bytes held for one upload of one user until dropped.
pub struct Reservation {
    inner: Arc<Inner>,
    handle: Handle,
    user: String,
    bytes: u64,
    /// Holds a place among the user's open uploads.
    opening: bool,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("user", &self.user)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Reservation {
    /// Nothing held yet.
    pub(super) fn empty(inner: Arc<Inner>, handle: &Handle, user: &str) -> Self {
        Self {
            inner,
            handle: handle.clone(),
            user: user.to_string(),
            bytes: 0,
            opening: false,
        }
    }

    /// Holds a place among the user's open uploads being created; answers
    /// how many are being created now, this one included.
    pub(super) fn open_one(&mut self) -> u64 {
        self.opening = true;
        self.inner.opening.shift(&self.user, 0, 1)
    }

    /// Holds at least `total` bytes (what the upload has received so far),
    /// reserving ahead when it must grow; refuses with the quota that
    /// `total` would pass.
    pub async fn cover(&mut self, total: u64) -> Result<(), ApiError> {
        if total <= self.bytes {
            return Ok(());
        }
        let ahead = total.saturating_add(total.clamp(AHEAD_MIN, AHEAD_MAX));
        let room = match self.hold(ahead).await? {
            Ok(()) => return Ok(()),
            Err(room) => room,
        };
        // Near the quota: hold what is left, if the bytes sent fit in it.
        if room.left < total {
            return Err(room.refusal(total));
        }
        match self.hold(room.left).await? {
            Ok(()) => Ok(()),
            Err(room) => Err(room.refusal(total)),
        }
    }

    /// Holds exactly `target` bytes when they fit the user's quotas beside
    /// what is stored and reserved by their other uploads; otherwise keeps
    /// what it held and answers the room there was.
    pub(super) async fn hold(&mut self, target: u64) -> Result<Result<(), Allowance>, ApiError> {
        let before = self.bytes;
        // Reserve first, then read the catalog (the module's note says why).
        let total = self.inner.reserved.shift(&self.user, before, target);
        self.bytes = target;
        let usage = match self.handle.usage(&self.user).await {
            Ok(usage) => usage,
            Err(e) => {
                self.give_back(before);
                return Err(e.into());
            }
        };
        let others = total.saturating_sub(target);
        let q = &self.inner;
        let per_day = Allowance {
            left: q
                .upload_bytes_per_day
                .saturating_sub(usage.uploaded_last_day.saturating_add(others)),
            quota: q.upload_bytes_per_day,
            key: "limits.quota_upload_bytes_per_day",
        };
        let stored = Allowance {
            left: q
                .stored_bytes
                .saturating_sub(usage.stored_bytes.saturating_add(others)),
            quota: q.stored_bytes,
            key: "limits.quota_stored_bytes",
        };
        let room = if stored.left < per_day.left {
            stored
        } else {
            per_day
        };
        if target <= room.left {
            return Ok(Ok(()));
        }
        self.give_back(before);
        Ok(Err(room))
    }

    fn give_back(&mut self, to: u64) {
        self.inner.reserved.shift(&self.user, self.bytes, to);
        self.bytes = to;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.give_back(0);
        if self.opening {
            self.inner.opening.shift(&self.user, 1, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_add_up_per_user_and_are_forgotten_at_zero() {
        let r = Reserved::default();
        assert_eq!(r.shift("a", 0, 100), 100);
        assert_eq!(r.shift("a", 0, 50), 150, "a second upload of a");
        assert_eq!(r.shift("b", 0, 7), 7, "b counts apart");
        assert_eq!(r.shift("a", 100, 300), 350, "the first grows");
        assert_eq!(r.shift("a", 300, 0), 50);
        assert_eq!(r.shift("a", 50, 0), 0);
        assert!(r.0.lock().expect("lock").get("a").is_none());
        assert_eq!(r.of("b"), 7);
    }
}
