//! The notifier: delivers the outbox through the [`Notifier`] port. Rows
//! go out oldest first; a video whose notification failed on a channel
//! waits for its retry before its later ones go on that channel (order per
//! video and channel), while everything else proceeds. Email goes to the
//! owner's address from their latest upload, and is dropped without one.
//! Failures back off exponentially (1 s doubling to 10 min); a
//! notification older than the configured age is dropped with a warning.
//! It is an actor woken when a video ends ([`NotifierMsg::Wake`]) and by a
//! timer set for when the first notification of a lane is due (never
//! polling rows that wait behind one). It keeps nothing the outbox does
//! not hold, so a restart loses nothing. Delivered rows are kept 30 days,
//! then purged. A video's notifications go with it when it is deleted:
//! there is nothing left to link to.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};

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

pub(crate) enum NotifierMsg {
    /// A notification was written at this instant.
    Wake(Instant),
    /// The timer of round `generation` went off.
    Timer(u64),
}

impl std::fmt::Debug for NotifierMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Wake(_) => f.write_str("Wake"),
            Self::Timer(g) => write!(f, "Timer({g})"),
        }
    }
}

pub(crate) struct NotifierActor {
    pub deps: Arc<Deps>,
    pub port: Arc<dyn Notifier>,
}

pub(crate) struct NotifierState {
    /// Rounds started; a timer of an older round is stale.
    generation: u64,
    last_round: Option<Instant>,
    last_purge: Option<Instant>,
}

impl NotifierActor {
    async fn round(&self, myself: &ActorRef<NotifierMsg>, state: &mut NotifierState) {
        if state
            .last_purge
            .is_none_or(|t| t.elapsed() > Duration::from_secs(3600))
        {
            state.last_purge = Some(Instant::now());
            if let Err(e) = self.deps.catalog.purge_delivered(KEEP_DELIVERED_DAYS).await {
                tracing::warn!(error = %e, "could not purge delivered notifications");
            }
        }
        state.generation += 1;
        state.last_round = Some(Instant::now());
        let wait = match round(&self.deps, self.port.as_ref()).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::warn!(error = %e, "notification round failed");
                Duration::from_secs(5)
            }
        };
        let generation = state.generation;
        myself.send_after(wait, move || NotifierMsg::Timer(generation));
    }
}

impl Actor for NotifierActor {
    type Msg = NotifierMsg;
    type State = NotifierState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<NotifierMsg>,
        _: (),
    ) -> Result<NotifierState, ActorProcessingErr> {
        myself.cast(NotifierMsg::Timer(0))?;
        Ok(NotifierState {
            generation: 0,
            last_round: None,
            last_purge: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<NotifierMsg>,
        message: NotifierMsg,
        state: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        let due = match message {
            // A round that started after the row was written has seen it.
            NotifierMsg::Wake(at) => state.last_round.is_none_or(|r| r < at),
            NotifierMsg::Timer(g) => g == state.generation,
        };
        if due {
            self.round(&myself, state).await;
        }
        Ok(())
    }
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
