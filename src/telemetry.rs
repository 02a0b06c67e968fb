//! Logging (text or JSON to stderr, filtered by `VIDMILL_LOG`) and the one
//! shutdown signal: SIGTERM or Ctrl-C.

/// Starts logging; `default_level` applies when `VIDMILL_LOG` is unset
/// (`info` for the server, `warn` for the offline commands).
pub fn init(format: &str, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIDMILL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        "json" => builder.json().try_init(),
        _ => builder.try_init(),
    };
}

/// Resolves on SIGTERM (systemd's stop) or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
