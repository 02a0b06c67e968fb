//! Prometheus metrics with the stable names of API.md. Counters and
//! histograms are updated where things happen; gauges of the core's state
//! are read when `/metrics` is scraped.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    videos: Family<Labels, Gauge>,
    queue_depth: Gauge,
    running: Gauge,
    ws_connections: Gauge,
    http_requests: Family<Labels, Counter>,
    http_duration: Family<Labels, Histogram>,
    bytes_served: Counter<u64, AtomicU64>,
    admission_wait: Histogram,
    stage_seconds: Family<Labels, Histogram>,
    realtime_factor: Gauge<f64, std::sync::atomic::AtomicU64>,
    stalls: Counter,
    reaped_bytes: Counter<u64, AtomicU64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new("local")
    }
}

impl Metrics {
    /// The metrics of node `node`, which `vidmill_node_info{node}` names
    /// (the nodes of a cluster are told apart by it).
    pub fn new(node: &str) -> Self {
        let mut registry = Registry::with_prefix("vidmill");
        let node_info = Family::<Labels, Gauge>::default();
        registry.register(
            "node_info",
            "This node's id (server.node_id); always 1",
            node_info.clone(),
        );
        node_info
            .get_or_create(&vec![("node", node.to_string())])
            .set(1);
        let videos = Family::<Labels, Gauge>::default();
        registry.register("videos", "Videos by state", videos.clone());
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Videos waiting for a pipeline slot",
            queue_depth.clone(),
        );
        let running = Gauge::default();
        registry.register(
            "pipelines_running",
            "Pipelines running now",
            running.clone(),
        );
        let ws_connections = Gauge::default();
        registry.register(
            "ws_connections",
            "Open WebSocket connections",
            ws_connections.clone(),
        );
        let http_requests = Family::<Labels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        let http_duration = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 4.0, 10))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request time by route",
            http_duration.clone(),
        );
        let bytes_served = Counter::<u64, AtomicU64>::default();
        registry.register("bytes_served", "Output bytes sent", bytes_served.clone());
        let admission_wait = Histogram::new(exponential_buckets(0.01, 4.0, 10));
        registry.register(
            "admission_wait_seconds",
            "Time videos waited in the queue for a pipeline slot",
            admission_wait.clone(),
        );
        let stage_seconds = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 4.0, 10))
        });
        registry.register(
            "stage_seconds",
            "Time spent in each processing stage",
            stage_seconds.clone(),
        );
        // Every stage is listed from the start, so dashboards see zeros, not gaps.
        for stage in vidmill_actors::Stage::ALL {
            let _ = stage_seconds.get_or_create(&vec![("stage", stage.as_str().to_string())]);
        }
        let realtime_factor = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "realtime_factor",
            "Media seconds processed per wall second, latest report",
            realtime_factor.clone(),
        );
        let stalls = Counter::default();
        registry.register("stalls", "Pipelines failed as stalled", stalls.clone());
        let reaped_bytes = Counter::<u64, AtomicU64>::default();
        registry.register(
            "reaped_bytes",
            "Bytes of leftover temp files removed",
            reaped_bytes.clone(),
        );
        Self {
            registry: Arc::new(registry),
            videos,
            queue_depth,
            running,
            ws_connections,
            http_requests,
            http_duration,
            bytes_served,
            admission_wait,
            stage_seconds,
            realtime_factor,
            stalls,
            reaped_bytes,
        }
    }

    pub fn admission_waited(&self, seconds: f64) {
        self.admission_wait.observe(seconds);
    }

    pub fn stage_took(&self, stage: &str, seconds: f64) {
        self.stage_seconds
            .get_or_create(&vec![("stage", stage.to_string())])
            .observe(seconds);
    }

    pub fn speed(&self, factor: f64) {
        self.realtime_factor.set(factor);
    }

    pub fn stalled(&self) {
        self.stalls.inc();
    }

    pub fn reaped(&self, bytes: u64) {
        self.reaped_bytes.inc_by(bytes);
    }

    pub fn bytes_served(&self, n: u64) {
        self.bytes_served.inc_by(n);
    }

    pub fn ws_opened(&self) {
        self.ws_connections.inc();
    }

    pub fn ws_closed(&self) {
        self.ws_connections.dec();
    }

    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
        self.http_duration
            .get_or_create(&vec![("route", route.to_string())])
            .observe(seconds);
    }

    /// Renders the exposition text after refreshing the state gauges.
    pub fn render(&self, stats: Option<&vidmill_actors::Stats>) -> String {
        if let Some(s) = stats {
            for state in vidmill_actors::VideoState::ALL {
                let n = s
                    .by_state
                    .iter()
                    .find(|(st, _)| *st == state)
                    .map_or(0, |(_, n)| *n);
                self.videos
                    .get_or_create(&vec![("state", state.as_str().to_string())])
                    .set(n as i64);
            }
            self.queue_depth.set(s.admission.queued as i64);
            self.running.set(s.admission.running as i64);
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
