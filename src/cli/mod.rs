//! The command line: `serve`, `token`, `config` and the hidden `worker`
//! start or configure the server (the hidden `media-job` is one of its
//! worker processes, see `media_job`); `probe`, `convert`, `frames` and `poster`
//! run the pipelines directly on local files (their progress display is in
//! `progress`). A failure is one line on stderr and a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod progress;
use progress::with_progress;
use vidmill_pipelines as media;

#[derive(Debug, Parser)]
#[command(
    name = "vidmill",
    version,
    about = "Self-hosted video processing and streaming server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP and WebSocket server.
    Serve {
        /// Configuration file; default ./config.toml when it exists.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (overrides server.listen).
        #[arg(long)]
        listen: Option<String>,
        /// What this node does (overrides server.role): all, api (no
        /// processing) or worker (processing; only health and metrics).
        #[arg(long, value_enum)]
        role: Option<crate::config::Role>,
    },
    /// Print an HS256 token signed with the configured secret (development).
    Token {
        #[arg(long)]
        sub: String,
        /// Lifetime: a number with s, m, h or d.
        #[arg(long, default_value = "24h")]
        ttl: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the effective configuration (file < environment), secrets masked.
    Config {
        /// Configuration file; default ./config.toml when it exists.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check the whole path a request takes and name each problem: GStreamer,
    /// database, storage, JWKS and clock here; health, ranges, body limits,
    /// request buffering and WebSockets through the public URL.
    Doctor {
        /// Configuration file; default ./config.toml when it exists.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The URL clients use (default: server.public_url, else the listen
        /// address).
        #[arg(long)]
        url: Option<String>,
    },
    /// Print what a media file holds, as JSON.
    Probe { file: PathBuf },
    /// Convert a video to web-playable MP4 (remuxed when it already is H.264).
    Convert {
        input: PathBuf,
        output: PathBuf,
        /// x264 speed preset: ultrafast … veryslow.
        #[arg(long, default_value = "veryfast")]
        preset: String,
        /// x264 constant rate factor (0–51, lower is better).
        #[arg(long, default_value_t = 23)]
        crf: u32,
        /// Scale videos down so the shorter side is at most this many lines.
        #[arg(long, default_value_t = 1080)]
        max_height: u32,
        /// Re-encode even when the source could be remuxed.
        #[arg(long)]
        no_remux: bool,
    },
    /// Extract a frame every N seconds into a ZIP with an index.csv.
    Frames {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Seconds between frames.
        #[arg(long)]
        every: f64,
        /// `exact`: the frame on screen at each time; `keyframe`: the
        /// nearest keyframe before it (faster).
        #[arg(long, default_value = "exact")]
        accuracy: String,
        /// `jpeg` or `png`.
        #[arg(long, default_value = "jpeg")]
        format: String,
        #[arg(long, default_value_t = 1080)]
        max_height: u32,
    },
    /// Run the processing core on a data directory without the network:
    /// add files as videos, print state events as JSON lines, exit when idle.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        data: PathBuf,
        /// A file to add as a new video (repeatable).
        #[arg(long)]
        add: Vec<PathBuf>,
        #[arg(long, default_value = "local")]
        owner: String,
        #[arg(long)]
        cpu_budget: Option<usize>,
        #[arg(long, default_value_t = 10.0)]
        frames_every: f64,
    },
    /// One media job in a worker process of the server: reads its request
    /// as JSON on stdin, answers in JSON lines on stdout. The arguments only
    /// say what it does, for `ps`.
    #[command(hide = true, name = "media-job")]
    MediaJob {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        about: Vec<String>,
    },
    /// Save one representative frame as JPEG.
    Poster {
        input: PathBuf,
        output: PathBuf,
        #[arg(long, default_value_t = 1080)]
        max_height: u32,
    },
}

/// Runs the command line; the exit code is non-zero with a one-line reason
/// on stderr when the command fails.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::MediaJob { .. } = cli.command {
        // Its logs go to stderr, which the server reads.
        crate::telemetry::init("text", "warn");
        return crate::media_job::child::run();
    }
    if !matches!(cli.command, Command::Serve { .. }) {
        crate::telemetry::init("text", "warn");
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vidmill: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why a command failed; printed as one line.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Media(#[from] media::MediaError),
    #[error("{0}")]
    Other(String),
}

impl From<String> for CliError {
    fn from(s: String) -> Self {
        Self::Other(s)
    }
}

fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve {
            config,
            listen,
            role,
        } => {
            let mut c = load_config(config.as_deref())?;
            if let Some(addr) = listen {
                c.server.listen = addr;
            }
            if let Some(role) = role {
                c.server.role = role;
            }
            crate::telemetry::init(&c.server.log_format, "info");
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(&c.server.listen)
                    .await
                    .map_err(|e| format!("server.listen {}: {e}", c.server.listen))?;
                crate::server::run(c, listener, crate::telemetry::shutdown_signal()).await
            })?;
        }
        Command::Token {
            sub,
            ttl,
            email,
            config,
        } => {
            let c = load_config(config.as_deref())?;
            let ttl = parse_ttl(&ttl)
                .ok_or_else(|| format!("--ttl {ttl}: expected a number with s, m, h or d"))?;
            let auth = crate::app::authenticator(&c)?;
            print_out(
                &auth
                    .mint(&sub, ttl, email.as_deref())
                    .map_err(|e| e.to_string())?,
            );
        }
        Command::Config { config } => {
            let c = load_config(config.as_deref())?;
            let text = toml::to_string(&c.masked()).map_err(|e| e.to_string())?;
            print!("{text}");
        }
        Command::Doctor { config, url } => {
            let c = load_config(config.as_deref())?;
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            if !runtime.block_on(crate::doctor::run(&c, url.as_deref()))? {
                return Err("problems found (above)".to_string().into());
            }
        }
        Command::Probe { file } => {
            let facts = media::probe(&file)?;
            print_out(&to_json(&facts));
        }
        Command::Convert {
            input,
            output,
            preset,
            crf,
            max_height,
            no_remux,
        } => {
            let facts = media::probe(&input)?;
            let spec = media::ConvertSpec {
                preset,
                crf,
                max_height,
                allow_remux: !no_remux,
                ..media::ConvertSpec::new(absolute(&output))
            };
            let report = with_progress("converting", |ctl| {
                media::convert(&input, &facts, &spec, ctl)
            })?;
            print_out(&to_json(&report));
        }
        Command::Frames {
            input,
            output,
            every,
            accuracy,
            format,
            max_height,
        } => {
            let spec = media::FramesSpec {
                accuracy: accuracy.parse()?,
                format: format.parse()?,
                max_height,
                ..media::FramesSpec::new(absolute(&output), every)
            };
            let facts = media::probe(&input)?;
            let report = with_progress("extracting frames", |ctl| {
                media::frames(&input, &facts, &spec, ctl)
            })?;
            print_out(&to_json(&report));
        }
        Command::Worker {
            data,
            add,
            owner,
            cpu_budget,
            frames_every,
        } => {
            let args = crate::worker::WorkerArgs {
                data,
                add,
                owner,
                cpu_budget,
                frames_every,
            };
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            runtime.block_on(crate::worker::run(args))?;
        }
        Command::MediaJob { .. } => {
            return Err("media-job runs only as a worker of the server"
                .to_string()
                .into())
        }
        Command::Poster {
            input,
            output,
            max_height,
        } => {
            let facts = media::probe(&input)?;
            let spec = media::PosterSpec {
                max_height,
                ..media::PosterSpec::new(absolute(&output))
            };
            let report = with_progress("poster", |ctl| media::poster(&input, &facts, &spec, ctl))?;
            print_out(&to_json(&report));
        }
    }
    Ok(())
}

/// `90s`, `15m`, `24h`, `7d`.
fn parse_ttl(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

/// Loads the named file (which must exist), or `./config.toml` when present,
/// over the defaults, then the environment.
fn load_config(path: Option<&Path>) -> Result<crate::config::Config, CliError> {
    let (file, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from("config.toml"), false),
    };
    crate::config::load(&file, required, std::env::vars())
        .map_err(|e| CliError::Other(e.to_string()))
}

/// Outputs get a temporary sibling name, which needs a directory part.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A line on stdout. A reader that went away (`vidmill probe f | head`) is
/// no failure of the command: the write error is not a panic.
fn print_out(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
