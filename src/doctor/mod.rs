//! `vidmill doctor`: checks the whole path a user's request takes and names
//! each problem (API.md "Operations"). On this machine: the GStreamer
//! elements, the database, storage, the JWKS and the clock. Through the
//! public URL, as a client would see it behind any proxy: health, ranged
//! reads, how large a body gets through, whether bodies are buffered, and
//! WebSocket upgrades.

mod local;
mod remote;

use crate::config::Config;

/// How one check came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(String),
    /// A problem, said so that it names what to fix.
    Fail(String),
    /// Could not be checked here, and why.
    Skip(String),
}

/// One named check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
}

impl Check {
    fn new(name: &'static str, outcome: Outcome) -> Self {
        Self { name, outcome }
    }
}

/// The base URL clients use: `--url`, else `server.public_url`, else the
/// listen address (a wildcard address read as this machine).
pub fn public_url(config: &Config, url: Option<&str>) -> String {
    let base = match url.filter(|u| !u.is_empty()) {
        Some(u) => u.to_string(),
        None if !config.server.public_url.is_empty() => config.server.public_url.clone(),
        None => format!(
            "http://{}",
            config
                .server
                .listen
                .replace("0.0.0.0", "127.0.0.1")
                .replace("[::]", "[::1]")
        ),
    };
    base.trim_end_matches('/').to_string()
}

/// Runs every check and prints one line each; `Ok(false)` when any failed.
pub async fn run(config: &Config, url: Option<&str>) -> Result<bool, String> {
    let base = public_url(config, url);
    println!("vidmill doctor: {base}");
    let mut checks = local::checks(config).await;
    checks.extend(remote::checks(config, &base).await?);
    let mut problems = 0;
    for c in &checks {
        let (tag, text) = match &c.outcome {
            Outcome::Ok(t) => ("ok  ", t),
            Outcome::Fail(t) => {
                problems += 1;
                ("FAIL", t)
            }
            Outcome::Skip(t) => ("skip", t),
        };
        println!("  {tag}  {:<15} {text}", c.name);
    }
    match problems {
        0 => println!("no problems found"),
        1 => println!("1 problem"),
        n => println!("{n} problems"),
    }
    Ok(problems == 0)
}
