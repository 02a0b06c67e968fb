//! Notifications: the core's outbox hands each `video.ready` /
//! `video.failed` event here once per channel; the webhook POSTs it, the
//! mailer emails the owner. Both render the video as the API shows it, with
//! signed links, so they need the assembled server ([`Attached`]).

mod mail;
mod webhook;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use vidmill_actors::{BoxFuture, Notification, Notifier};

pub use mail::Mailer;
pub use webhook::{signature, Webhook};

use crate::app::App;
use crate::config::Config;

/// The server, handed over once it is assembled (right after the core
/// starts; the core may deliver a notification left from the last run
/// before that).
#[derive(Debug, Clone, Default)]
pub struct Attached(Arc<OnceLock<App>>);

impl Attached {
    pub fn attach(&self, app: &App) {
        let _ = self.0.set(app.clone());
    }

    /// The server, waiting up to 5 s for it.
    async fn get(&self) -> Result<&App, String> {
        for _ in 0..500 {
            if let Some(app) = self.0.get() {
                return Ok(app);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err("the server is still starting".into())
    }
}

/// Every configured channel behind the core's one port.
#[derive(Debug, Clone)]
pub struct Channels {
    webhook: Webhook,
    mailer: Option<Mailer>,
}

impl Channels {
    /// The channels `notify` configures; `app` is attached later.
    pub fn new(config: &Config, app: Attached) -> Result<Self, String> {
        let n = &config.notify;
        let secret = crate::app::hmac_key(
            "notify.webhook_secret",
            &n.webhook_secret,
            &n.webhook_secret_file,
            None,
        )?
        .unwrap_or_default();
        if !n.webhook_url.is_empty() && secret.is_empty() {
            return Err(
                "notify.webhook_secret is empty: receivers check signatures with it".into(),
            );
        }
        let mailer = (!n.smtp_url.is_empty())
            .then(|| Mailer::new(&n.smtp_url, &n.from, app.clone()))
            .transpose()?;
        Ok(Self {
            webhook: Webhook::new(&n.webhook_url, &secret, app)?,
            mailer,
        })
    }
}

impl Notifier for Channels {
    fn enabled(&self, channel: &str) -> bool {
        match channel {
            "webhook" => self.webhook.enabled(),
            "email" => self.mailer.is_some(),
            _ => false,
        }
    }

    fn deliver<'a>(&'a self, note: &'a Notification) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            match (note.channel.as_str(), &self.mailer) {
                ("webhook", _) => self.webhook.deliver(note).await,
                ("email", Some(mailer)) => mailer.deliver(note).await,
                (other, _) => Err(format!("no channel `{other}`")),
            }
        })
    }
}
