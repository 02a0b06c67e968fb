//! Webhook notifications (API.md "Processing semantics"): each
//! `video.ready` / `video.failed` event of the outbox's webhook channel is POSTed
//! as JSON with `Idempotency-Key: <video_id>:<seq>` and
//! `Vidmill-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`. Any 2xx
//! acknowledges it; anything else is retried by the core with backoff.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use vidmill_actors::Notification;

use super::Attached;
use crate::app::unix_now;
use crate::http::render;

/// How long one delivery may take, connection included.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The value of `Vidmill-Signature` for `body` sent at `t`.
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts notifications to `notify.webhook_url`.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Where to and with what client; none when no webhook is configured
    /// (the client, with its TLS roots, is only built when needed).
    target: Option<(reqwest::Url, reqwest::Client)>,
    secret: Vec<u8>,
    app: Attached,
}

impl Webhook {
    /// A webhook to `url` (none when empty) signed with `secret`.
    pub fn new(url: &str, secret: &[u8], app: Attached) -> Result<Self, String> {
        let target = if url.is_empty() {
            None
        } else {
            let url = reqwest::Url::parse(url).map_err(|e| format!("notify.webhook_url: {e}"))?;
            let client = reqwest::Client::builder()
                .timeout(DELIVERY_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("vidmill/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("webhook client: {e}"))?;
            Some((url, client))
        };
        Ok(Self {
            target,
            secret: secret.to_vec(),
            app,
        })
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    pub async fn deliver(&self, note: &Notification) -> Result<(), String> {
        match &self.target {
            Some((url, client)) => self.post(client, url, note).await,
            None => Ok(()),
        }
    }

    async fn post(
        &self,
        client: &reqwest::Client,
        url: &reqwest::Url,
        note: &Notification,
    ) -> Result<(), String> {
        let app = self.app.get().await?;
        let key = format!("{}:{}", note.event.video_id, note.event.seq);
        let body = serde_json::to_vec(&serde_json::json!({
            "id": key,
            "type": note.kind,
            "event": render::state_event(app, &note.video, &note.event),
            "video": render::video(app, &note.video, None),
        }))
        .map_err(|e| e.to_string())?;
        let response = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", &key)
            .header(
                "Vidmill-Signature",
                signature(&self.secret, unix_now(), &body),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("the webhook answered {}", response.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' |
        //   openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature(b"secret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
