//! The notifier: delivers the outbox through the [`Notifier`] port. Rows
//! go out oldest first; a video whose notification failed on a channel
//! waits for its retry before its later ones go on that channel (order per
//! video and channel), while everything else proceeds. Email goes to the
//! owner's address from their latest upload, and is dropped without one. Failures back off exponentially (1 s doubling to 10 min); a
//! notification older than the configured age is dropped with a warning.
//! It runs as one task woken when a video ends and when the first
//! notification of a lane is due (never polling rows that wait behind one).
//! Delivered rows are kept 30 days, then purged. A video's notifications
//! go with it when it is deleted: there is nothing left to link to.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::deps::Deps;
use crate::error::CoreError;
use crate::model::VideoId;
use crate::ports::{Notification, Notifier};

/// Rows looked at per round.
const BATCH: u32 = 200;
/// Longest wait between rounds when nothing is due.
const IDLE: Duration = Duration::from_secs(60);
const MAX_BACKOFF_SECONDS: u64 = 600;

/// Seconds before the next attempt after `attempts` failed ones.
pub(crate) fn backoff_seconds(attempts: u32) -> u64 {
    1u64.checked_shl(attempts.saturating_sub(1))
        .unwrap_or(u64::MAX)
        .min(MAX_BACKOFF_SECONDS)
}

/// Delivered notifications are kept this long (to look into deliveries).
const KEEP_DELIVERED_DAYS: u32 = 30;

/// Starts the delivery task.
pub(crate) fn spawn(deps: Arc<Deps>, notifier: Arc<dyn Notifier>, wake: Arc<Notify>) {
    tokio::spawn(async move {
        let mut last_purge: Option<std::time::Instant> = None;
        loop {
            if last_purge.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                last_purge = Some(std::time::Instant::now());
                if let Err(e) = deps.catalog.purge_delivered(KEEP_DELIVERED_DAYS).await {
                    tracing::warn!(error = %e, "could not purge delivered notifications");
                }
            }
            let wait = match round(&deps, notifier.as_ref()).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "notification round failed");
                    Duration::from_secs(5)
                }
            };
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}

/// Delivers what is due; returns how long to wait before the next round.
async fn round(deps: &Deps, notifier: &dyn Notifier) -> Result<Duration, CoreError> {
    let catalog = &deps.catalog;
    let max_age = deps.config.notify_max_age.as_secs_f64();
    let mut blocked: HashSet<(VideoId, String)> = HashSet::new();
    let mut next = IDLE;
    for p in catalog.pending_notifications(BATCH).await? {
        let lane = (p.video_id.clone(), p.channel.clone());
        if blocked.contains(&lane) {
            continue;
        }
        if !notifier.enabled(&p.channel) {
            catalog.drop_notification(p.id).await?;
            continue;
        }
        if p.age_seconds >= max_age {
            tracing::warn!(video = %p.video_id, seq = p.seq, kind = %p.kind, attempts = p.attempts,
                "giving up a notification older than notify.max_age_seconds");
            catalog.drop_notification(p.id).await?;
            continue;
        }
        if p.wait_seconds > 0.0 {
            // The head of its lane is not due: nothing behind it goes, and
            // the next round is when it is due.
            next = next.min(Duration::from_secs_f64(p.wait_seconds));
            blocked.insert(lane);
            continue;
        }
        let Some(video) = catalog.get(&p.video_id).await? else {
            // Deleted since: nobody to tell about it.
            catalog.drop_notification(p.id).await?;
            continue;
        };
        let email = match p.channel.as_str() {
            "email" => match catalog.contact(&video.owner).await? {
                Some(address) => Some(address),
                None => {
                    // The owner's tokens never carried an address.
                    catalog.drop_notification(p.id).await?;
                    continue;
                }
            },
            _ => None,
        };
        let note = Notification {
            kind: p.kind.clone(),
            channel: p.channel.clone(),
            email,
            event: p.event.clone(),
            video,
        };
        match notifier.deliver(&note).await {
            Ok(()) => catalog.notification_delivered(p.id).await?,
            Err(e) => {
                let delay = backoff_seconds(p.attempts + 1);
                tracing::warn!(video = %p.video_id, seq = p.seq, channel = %p.channel, attempts = p.attempts + 1,
                    retry_in = delay, error = %e, "notification not delivered");
                catalog.notification_failed(p.id, delay).await?;
                next = next.min(Duration::from_secs(delay));
                blocked.insert(lane);
            }
        }
    }
    Ok(next.max(Duration::from_millis(50)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_to_ten_minutes() {
        let steps: Vec<u64> = (1..=12).map(backoff_seconds).collect();
        assert_eq!(steps, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(backoff_seconds(200), 600);
    }
}
