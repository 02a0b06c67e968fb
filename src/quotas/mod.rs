//! Quotas and request rates per user (the token's `sub`), README "Running
//! it exposed": uploads in progress and WebSocket streams are counted in
//! this process (one node holds them); open uploads, bytes uploaded in the
//! last 24 hours and bytes stored are read from the catalog, plus the bytes
//! reserved by the user's uploads in progress (`reserve`). Byte quotas
//! answer 413 (this upload is too large for what is left), counts 422 (the
//! request is fine; it fits once something ends), rates 429.

mod rates;
mod reserve;

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use vidmill_actors::Handle;

pub use self::rates::Rates;
pub use self::reserve::Reservation;
use self::reserve::Reserved;
use crate::config::Limits;
use crate::http::error::ApiError;
use crate::slots::{Slot, Slots};

/// How often idle rate buckets and ended blocks are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Quotas(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    rates: Rates,
    uploading: Slots<String>,
    sockets: Slots<String>,
    open_uploads: u64,
    upload_bytes_per_day: u64,
    stored_bytes: u64,
    reserved: Reserved,
    /// Open uploads being created (each counts 1) until the catalog has
    /// them: `quota_open_uploads` holds across concurrent creations.
    opening: Reserved,
}

/// How many bytes one upload of a user may hold, beside what is stored and
/// what their other uploads hold, and which quota says so.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    left: u64,
    quota: u64,
    key: &'static str,
}

impl Allowance {
    /// The answer to an upload of `bytes`, more than is left.
    fn refusal(&self, bytes: u64) -> ApiError {
        let what = match self.key {
            "limits.quota_stored_bytes" => "you may store; delete videos to make room",
            _ => "you may upload in 24 hours; wait, or send a smaller file",
        };
        ApiError::QuotaExceeded {
            key: self.key,
            too_large: true,
            why: format!(
                "this upload of {bytes} bytes would take you past the {} bytes {what} ({} bytes \
                 are left, counting your uploads in progress)",
                self.quota, self.left
            ),
        }
    }
}

impl Quotas {
    /// The quotas of `limits`, with a task that sweeps the rate buckets
    /// for as long as they are in use.
    pub fn new(limits: &Limits) -> Self {
        let quotas = Self(Arc::new(Inner {
            rates: Rates::new(limits),
            uploading: Slots::new(limits.quota_uploads_in_progress),
            sockets: Slots::new(limits.quota_websocket_connections),
            open_uploads: limits.quota_open_uploads,
            upload_bytes_per_day: limits.quota_upload_bytes_per_day,
            stored_bytes: limits.quota_stored_bytes,
            reserved: Reserved::default(),
            opening: Reserved::default(),
        }));
        sweep_while_alive(Arc::downgrade(&quotas.0));
        quotas
    }

    /// Counts one authenticated request of `user` against their rate.
    pub fn request(&self, user: &str) -> Result<(), ApiError> {
        self.0.rates.request(user)
    }

    /// Refuses `client` while it is blocked for failed authentications.
    pub fn refuse_blocked(&self, client: IpAddr) -> Result<(), ApiError> {
        self.0.rates.refuse_blocked(client)
    }

    /// Counts a failed authentication from `client`.
    pub fn auth_failed(&self, client: IpAddr) -> Result<(), ApiError> {
        self.0.rates.failed(client)
    }

    /// A slot for one upload of `user` receiving bytes, held until dropped.
    pub fn upload_in_progress(&self, user: &str) -> Result<Slot<String>, ApiError> {
        let slots = &self.0.uploading;
        slots
            .take(user.to_string())
            .ok_or_else(|| ApiError::QuotaExceeded {
                key: "limits.quota_uploads_in_progress",
                too_large: false,
                why: format!(
                    "you are already sending {} uploads, the most at once; send this one when one \
                 of them has finished",
                    slots.max()
                ),
            })
    }

    /// A slot for one WebSocket stream of `user`, held until dropped.
    pub fn websocket(&self, user: &str) -> Result<Slot<String>, ApiError> {
        let slots = &self.0.sockets;
        slots
            .take(user.to_string())
            .ok_or_else(|| ApiError::QuotaExceeded {
                key: "limits.quota_websocket_connections",
                too_large: false,
                why: format!(
                    "you have {} event streams open, the most at once; close one (one /v1/events \
                 stream carries every video's events)",
                    slots.max()
                ),
            })
    }

    /// Reserves `bytes` for one upload of `user` (0 when its length is not
    /// known yet: it grows with [`Reservation::cover`]), refused when they
    /// do not fit the byte quotas beside what the user stores and what
    /// their other uploads hold; when `opening` (a resumable or direct
    /// upload is to be created), also that they have room for one more
    /// open upload. The bytes are held until the reservation is dropped,
    /// which must come after the catalog has charged them.
    pub async fn reserve(
        &self,
        handle: &Handle,
        user: &str,
        bytes: u64,
        opening: bool,
    ) -> Result<Reservation, ApiError> {
        let mut reservation = Reservation::empty(self.0.clone(), handle, user);
        if opening {
            // Counted first, then the catalog read, as bytes are (see
            // `reserve`): a creation that finished is in one or both.
            let creating = reservation.open_one();
            let usage = handle.usage(user).await?;
            let open = usage.open_uploads + creating - 1;
            if open >= self.0.open_uploads {
                return Err(ApiError::QuotaExceeded {
                    key: "limits.quota_open_uploads",
                    too_large: false,
                    why: format!(
                        "you have {open} unfinished uploads, the most allowed; finish or delete \
                         one (DELETE /v1/uploads/{{id}})"
                    ),
                });
            }
        }
        match reservation.hold(bytes).await? {
            Ok(()) => Ok(reservation),
            Err(room) => Err(room.refusal(bytes)),
        }
    }
}

fn sweep_while_alive(quotas: Weak<Inner>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            let Some(quotas) = quotas.upgrade() else {
                return;
            };
            quotas.rates.sweep();
        }
    });
}
