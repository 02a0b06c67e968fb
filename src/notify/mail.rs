//! Email notifications: the owner (the `email` claim of their latest
//! upload's token) is mailed each video's result with its signed links,
//! over SMTP (`notify.smtp_url`: `smtp://` plain or STARTTLS with
//! `?tls=required`, `smtps://` TLS; credentials in the URL).

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use vidmill_actors::{Notification, VideoState};

use super::Attached;
use crate::app::App;

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    app: Attached,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    pub fn new(url: &str, from: &str, app: Attached) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("notify.smtp_url: {e}"))?
            .timeout(Some(std::time::Duration::from_secs(20)))
            .build();
        let from = from.parse::<Mailbox>().map_err(|e| {
            format!("notify.from: expected an address like `vidmill <video@example.org>`: {e}")
        })?;
        Ok(Self {
            transport,
            from,
            app,
        })
    }

    pub async fn deliver(&self, note: &Notification) -> Result<(), String> {
        let Some(to) = note.email.as_deref() else {
            return Ok(());
        };
        let to = match to.parse::<Mailbox>() {
            Ok(to) => to,
            // A malformed address never gets better: nothing to retry.
            Err(e) => {
                tracing::warn!(video = %note.video.id, error = %e, "not mailing an invalid address");
                return Ok(());
            }
        };
        let app = self.app.get().await?;
        let (subject, body) = compose(app, note);
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| e.to_string())?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The subject and plain-text body for a notification.
fn compose(app: &App, note: &Notification) -> (String, String) {
    let v = &note.video;
    let name = &v.filename;
    if note.event.state == VideoState::Ready {
        let mut body = format!("Your video \"{name}\" is ready.\n\n");
        let outputs = &note.event.outputs;
        if outputs.mp4.is_some() {
            body.push_str(&format!("Watch:   {}\n", app.signed_url(v, "video.mp4")));
        }
        if let Some(f) = &outputs.frames {
            body.push_str(&format!(
                "Frames:  {} ({} images)\n",
                app.signed_url(v, "frames.zip"),
                f.count
            ));
        }
        if outputs.poster.is_some() {
            body.push_str(&format!("Poster:  {}\n", app.signed_url(v, "poster.jpg")));
        }
        let minutes = app.config.signing.ttl_seconds / 60;
        body.push_str(&match minutes {
            0..=119 => {
                format!("\nThe links work for {minutes} minutes; the API gives fresh ones.\n")
            }
            _ => format!(
                "\nThe links work for {} hours; the API gives fresh ones.\n",
                minutes / 60
            ),
        });
        (format!("vidmill: \"{name}\" is ready"), body)
    } else {
        let why = note
            .event
            .error
            .as_ref()
            .map_or("unknown error".to_string(), |e| {
                format!("{} ({})", e.message, e.code)
            });
        (
            format!("vidmill: \"{name}\" could not be processed"),
            format!(
                "Your video \"{name}\" could not be processed: {why}.\n\n\
                 You can retry it without uploading again: POST /v1/videos/{}/retry\n",
                v.id
            ),
        )
    }
}
