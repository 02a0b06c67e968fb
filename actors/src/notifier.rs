//! The notifier: delivers the outbox through the [`Notifier`] port. Rows
//! go out oldest first; a video whose notification failed on a channel
//! waits for its retry before its later ones go on that channel (order per
//! video and channel), while everything else proceeds. Email goes to the
//! owner's address from their latest upload, and is dropped without one. Failures back off exponentially (1 s doubling to 10 min); a
//! notification older than the configured age is dropped with a warning.
//! It runs as one task woken when a video ends and when a retry is due.

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

/// Starts the delivery task.
pub(crate) fn spawn(deps: Arc<Deps>, notifier: Arc<dyn Notifier>, wake: Arc<Notify>) {
    tokio::spawn(async move {
        loop {
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
        if !p.due {
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
                blocked.insert(lane);
            }
        }
    }
    Ok(match catalog.next_notification_in().await? {
        Some(seconds) => Duration::from_secs_f64(seconds.clamp(0.05, IDLE.as_secs_f64())),
        None => IDLE,
    })
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
