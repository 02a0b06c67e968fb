//! The cluster (issue 11): vidmill nodes on 127.0.0.1:0 sharing one real
//! PostgreSQL 15 (initdb into a temp dir) and one real Garage bucket.
//! Uploads through different nodes (a tus upload's requests too), a
//! WebSocket on a third node seeing every state event in order, a node
//! SIGKILLed mid-encode (another finishes the video after the lease
//! expires: one published run, no duplicated seq, no orphaned objects),
//! PostgreSQL restarted mid-run (nothing lost), and a node cut off from
//! the database (it stops publishing and its video is taken over).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::s3::Garage;
use crate::support::Server;
use vidmill_actors::BlobStore;

#[path = "../../actors/tests/common/pg.rs"]
pub(crate) mod pg;

/// Seconds a lease lives without a heartbeat, short so takeovers are quick.
pub(crate) const LEASE_TTL: &str = "3";

/// A private PostgreSQL and Garage bucket for nodes to share; the attack
/// suite (`cluster_attack.rs`) adds its own inspections of both.
pub(crate) struct Cluster {
    pub(crate) dir: PathBuf,
    pub(crate) pg: Arc<pg::PgServer>,
    pub(crate) garage: Garage,
}

impl Cluster {
    pub(crate) fn start(dir: &Path) -> Self {
        // A server of the test's own: one test restarts it.
        let pg = pg::PgServer::private();
        let garage = Garage::start(&dir.join("garage"));
        Self {
            dir: dir.to_path_buf(),
            pg,
            garage,
        }
    }

    /// Node `name` with `role`, reaching the database at `url`, with
    /// `env` added.
    pub(crate) fn node_with(
        &self,
        name: &str,
        role: &str,
        url: &str,
        env: &[(&str, &str)],
    ) -> Server {
        let mut all = vec![
            ("VIDMILL__STORAGE__TYPE", "s3"),
            ("VIDMILL__DATABASE__URL", url),
            ("VIDMILL__DATABASE__LEASE_TTL_SECONDS", LEASE_TTL),
            ("VIDMILL__SERVER__NODE_ID", name),
            ("VIDMILL__SERVER__ROLE", role),
        ];
        all.extend_from_slice(env);
        Server::start_with_env(
            &self.dir.join(name),
            &format!("[media]\ncpu_budget = 1\n{}", self.garage.server_toml()),
            &all,
        )
    }

    /// Node `name` with `role`, reaching the database at `url`.
    pub(crate) fn node_at(&self, name: &str, role: &str, url: &str) -> Server {
        self.node_with(name, role, url, &[])
    }

    pub(crate) fn node(&self, name: &str, role: &str) -> Server {
        self.node_at(name, role, &self.pg.url("postgres"))
    }

    /// The database's address, for a proxy in front of it.
    fn pg_addr(&self) -> String {
        format!("127.0.0.1:{}", self.pg.port)
    }

    /// Keys in the bucket under `prefix`.
    pub(crate) fn objects(&self, prefix: &str) -> Vec<String> {
        let rt = runtime();
        rt.block_on(async {
            let store = crate::s3::store_on(&self.garage).await;
            store.list(prefix).await.expect("list")
        })
    }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn ws(server: &Server, path: &str, token: &str) -> Socket {
    let url = format!("ws://{}{path}?access_token={token}", server.addr);
    tungstenite::connect(url).expect("websocket").0
}

type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

/// State events of each video from a stream, until every video in `ids`
/// is ready (or `limit` passes).
fn states_until_ready(
    socket: &mut Socket,
    ids: &[String],
    limit: Duration,
) -> std::collections::HashMap<String, Vec<u64>> {
    let mut seqs: std::collections::HashMap<String, Vec<u64>> = Default::default();
    let mut ready = std::collections::HashSet::new();
    let deadline = Instant::now() + limit;
    if let MaybeTls::Plain(s) = socket.get_mut().into() {
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    }
    while ready.len() < ids.len() {
        assert!(Instant::now() < deadline, "not all ready: {seqs:?}");
        let message = match socket.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => panic!("websocket: {e}"),
        };
        let tungstenite::Message::Text(text) = message else {
            continue;
        };
        let e: serde_json::Value = serde_json::from_str(&text).expect("json");
        if e["type"] != "state" {
            continue;
        }
        let id = e["video_id"].as_str().expect("id").to_string();
        seqs.entry(id.clone())
            .or_default()
            .push(e["seq"].as_u64().expect("seq"));
        if e["state"] == "ready" {
            ready.insert(id);
        }
        assert_ne!(e["state"], "failed", "{e}");
    }
    seqs
}

/// Lets the socket's TCP stream be reached for a read timeout.
enum MaybeTls<'a> {
    Plain(&'a mut TcpStream),
    Other,
}

impl<'a> From<&'a mut tungstenite::stream::MaybeTlsStream<TcpStream>> for MaybeTls<'a> {
    fn from(s: &'a mut tungstenite::stream::MaybeTlsStream<TcpStream>) -> Self {
        match s {
            tungstenite::stream::MaybeTlsStream::Plain(t) => Self::Plain(t),
            _ => Self::Other,
        }
    }
}

fn assert_in_order(seqs: &std::collections::HashMap<String, Vec<u64>>) {
    for (id, s) in seqs {
        assert!(
            s.windows(2).all(|w| w[1] == w[0] + 1),
            "{id}: state events in order, none twice, none missing: {s:?}"
        );
    }
}

/// Every state event of video `id`, replayed from the log by node `s`
/// (`since=0`), checked to be in order, each once.
fn replayed(s: &Server, token: &str, id: &str) -> std::collections::HashMap<String, Vec<u64>> {
    let mut replay = ws(
        s,
        &format!("/v1/videos/{id}/events"),
        &format!("{token}&since=0"),
    );
    let seqs = states_until_ready(&mut replay, &[id.to_string()], Duration::from_secs(30));
    assert_in_order(&seqs);
    seqs
}

fn id_of(created: &crate::support::Response) -> String {
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    created.json()["id"].as_str().expect("id").to_string()
}

/// The run prefixes holding objects of video `id`.
fn runs(cluster: &Cluster, id: &str) -> std::collections::BTreeSet<String> {
    cluster
        .objects(&format!("videos/{id}/runs/"))
        .into_iter()
        .filter_map(|k| k.split('/').nth(3).map(str::to_string))
        .collect()
}

#[test]
fn three_nodes_share_uploads_work_and_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path());
    let a = cluster.node("a", "all");
    let b = cluster.node("b", "all");
    let c = cluster.node("c", "api");
    let token = a.token("alice");
    // Subscribed on the API-only node before anything is uploaded.
    let mut socket = ws(&c, "/v1/events", &token);
    let source = crate::support::webm(dir.path(), 3.0);
    let mut ids = Vec::new();
    for (i, node) in [&a, &b, &a, &b].into_iter().enumerate() {
        ids.push(id_of(&node.upload(
            &token,
            &format!("filename=c{i}.webm&frames_every=1"),
            &source,
        )));
    }
    // A direct upload: presigned on one node, completed on another.
    let created = b.request(
        "POST",
        "/v1/videos?upload=direct&filename=direct.webm",
        &[("Authorization", format!("Bearer {token}"))],
        b"",
    );
    let direct = id_of(&created);
    let put = crate::s3::put_presigned(&created.json()["upload"], &source, dir.path());
    assert_eq!(put, "200");
    let done = c.request(
        "POST",
        &format!("/v1/videos/{direct}/complete"),
        &[("Authorization", format!("Bearer {token}"))],
        b"",
    );
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    ids.push(direct);

    let seqs = states_until_ready(&mut socket, &ids, Duration::from_secs(180));
    assert_in_order(&seqs);
    for id in &ids {
        // Any node answers for any video, the bytes from the bucket.
        let v = c.get(&format!("/v1/videos/{id}"), &token).json();
        assert_eq!(v["state"], "ready", "{v}");
        let mp4 = a.get(&format!("/v1/videos/{id}/video.mp4"), &token);
        assert_eq!(mp4.status, 200);
        assert_eq!(runs(&cluster, id).len(), 1, "{id}: one published run");
    }
    // Both processing nodes took a share; the API node none.
    let worked = |s: &Server| {
        String::from_utf8_lossy(&s.get("/metrics", &token).body)
            .lines()
            .find_map(|l| l.strip_prefix("vidmill_stage_seconds_count{stage=\"converting\"} "))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        worked(&a) > 0.0 && worked(&b) > 0.0,
        "work spread over a and b"
    );
    assert_eq!(worked(&c), 0.0, "an api node processes nothing");
}

/// An H.264 MP4 of a few megabytes more than two parts (noise keeps
/// x264 from squeezing it), made once by ffmpeg as a camera or editor
/// would.
pub(crate) fn big_mp4() -> Vec<u8> {
    static MEDIA: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    MEDIA
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("big.mp4");
            let made = std::process::Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
                .arg("testsrc2=size=640x360:rate=30")
                .args(["-t", "3", "-vf", "noise=alls=12:allf=t", "-c:v", "libx264"])
                .args(["-preset", "ultrafast", "-crf", "14", "-pix_fmt", "yuv420p"])
                .arg(&path)
                .status()
                .expect("ffmpeg");
            assert!(made.success());
            std::fs::read(path).expect("read")
        })
        .clone()
}

pub(crate) fn tus_headers(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Authorization", format!("Bearer {token}")),
        ("Tus-Resumable", "1.0.0".into()),
    ]
}

fn tus_patch(
    s: &Server,
    token: &str,
    id: &str,
    at: usize,
    bytes: &[u8],
) -> crate::support::Response {
    // Sent from another thread: a refusal comes before the body is through.
    let head = format!(
        "PATCH /v1/uploads/{id} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: {at}\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        s.addr,
        bytes.len()
    );
    s.request_while_sending(head, bytes.to_vec())
}

fn tus_offset(s: &Server, token: &str, id: &str) -> usize {
    let h = s.request(
        "HEAD",
        &format!("/v1/uploads/{id}"),
        &tus_headers(token),
        b"",
    );
    assert_eq!(h.status, 200, "{h:?}");
    h.header("upload-offset")
        .and_then(|o| o.parse().ok())
        .expect("Upload-Offset")
}

/// A tus upload whose requests go to different nodes, as behind a load
/// balancer: its bytes wait in the bucket as a multipart upload, so any
/// node takes the next request, HEAD on any node tells the same offset,
/// and a request on one node takes over from one hanging on another.
#[test]
fn a_tus_upload_moves_between_nodes() {
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path());
    let a = cluster.node("a", "all");
    let b = cluster.node("b", "api");
    let token = a.token("alice");
    let media = big_mp4();
    assert!(
        media.len() > 11 * MIB,
        "{} bytes: two parts and more",
        media.len()
    );

    let mut h = tus_headers(&token);
    h.push(("Upload-Length", media.len().to_string()));
    h.push(("Upload-Metadata", "filename YmlnLm1wNA==".into()));
    let created = a.request("POST", "/v1/uploads", &h, b"");
    assert_eq!(created.status, 201, "{created:?}");
    let id = created
        .header("location")
        .and_then(|l| l.rsplit('/').next())
        .expect("location")
        .to_string();

    // A part's worth on b, a little more on a (kept as the tail).
    let first = tus_patch(&b, &token, &id, 0, &media[..6 * MIB]);
    assert_eq!(first.status, 204, "{first:?}");
    // a, which received none of it, tells the percent stored.
    let percent = a.get(&format!("/v1/videos/{id}"), &token).json()["progress"]["percent"]
        .as_f64()
        .expect("percent");
    let expected = (6 * MIB) as f64 * 100.0 / media.len() as f64;
    assert!((percent - expected).abs() < 0.01, "{percent} vs {expected}");
    let second = tus_patch(&a, &token, &id, 6 * MIB, &media[6 * MIB..7 * MIB]);
    assert_eq!(second.status, 204, "{second:?}");
    assert_eq!(
        tus_offset(&b, &token, &id),
        7 * MIB,
        "b knows what a stored"
    );

    // A request on a that sends 2 MiB of the rest, then hangs.
    let rest = media.len() - 7 * MIB;
    let mut hanging = TcpStream::connect(&a.addr).expect("connect");
    hanging
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "PATCH /v1/uploads/{id} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Tus-Resumable: 1.0.0\r\nUpload-Offset: {}\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {rest}\r\n\r\n",
        a.addr,
        7 * MIB
    );
    hanging.write_all(head.as_bytes()).expect("head");
    hanging
        .write_all(&media[7 * MIB..9 * MIB])
        .expect("two MiB");
    std::thread::sleep(Duration::from_millis(500));
    let hung = std::thread::spawn(move || crate::support::read_response(hanging, false));

    // The client gives up on it and resumes on b from the offset it last
    // knew: b takes the upload over (a is told, and stores what it got),
    // then refuses the stale offset; asked again, it tells the new one.
    let stale = tus_patch(&b, &token, &id, 7 * MIB, &media[7 * MIB..]);
    assert_eq!(stale.status, 409, "{stale:?}");
    let taken = hung.join().expect("hung request");
    assert_eq!(
        taken.status, 409,
        "the hanging request was taken over: {taken:?}"
    );
    let now = tus_offset(&b, &token, &id);
    assert_eq!(now, 9 * MIB, "what a received is kept");
    let last = tus_patch(&b, &token, &id, now, &media[now..]);
    assert_eq!(last.status, 204, "{last:?}");

    let ready = a.wait_for(&token, &id, |v| {
        v["state"] == "ready" || v["state"] == "failed"
    });
    assert_eq!(ready["state"], "ready", "{ready}");
    let keys = cluster.objects(&format!("videos/{id}/"));
    assert!(
        !keys.iter().any(|k| k.contains("upload-tail")),
        "no tail outlives the upload: {keys:?}"
    );
    let source = runtime().block_on(async {
        let store = crate::s3::store_on(&cluster.garage).await;
        store
            .get_bytes(&format!("videos/{id}/source"))
            .await
            .expect("source")
    });
    assert!(source == media, "the source is the bytes sent, in order");
    let mp4 = b.get(&format!("/v1/videos/{id}/video.mp4"), &token);
    assert_eq!(mp4.status, 200);
}

/// Waits until video `id` is converting, as node `s` reports it.
fn wait_converting(s: &Server, token: &str, id: &str) {
    s.wait_for(token, id, |v| {
        v["state"] == "processing" && v["stage"] == "converting"
    });
}

#[test]
fn a_node_killed_mid_encode_loses_its_video_to_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path());
    let a = cluster.node("a", "all");
    let token = a.token("alice");
    let source = crate::support::webm(dir.path(), 40.0);
    let id = id_of(&a.upload(&token, "filename=long.webm", &source));
    wait_converting(&a, &token, &id);
    let b = cluster.node("b", "all");
    let mut watch = ws(&b, &format!("/v1/videos/{id}/events"), &token);
    let killed = Instant::now();
    a.kill();
    // The takeover is the new run's first state event: probing again.
    loop {
        let tungstenite::Message::Text(text) = watch.read().expect("events") else {
            continue;
        };
        let e: serde_json::Value = serde_json::from_str(&text).expect("json");
        if e["type"] == "state" && (e["stage"] == "probing" || e["state"] == "ready") {
            break;
        }
    }
    let takeover = killed.elapsed();
    let ready = b.wait_for(&token, &id, |v| {
        v["state"] == "ready" || v["state"] == "failed"
    });
    assert_eq!(ready["state"], "ready", "{ready}");
    assert_eq!(
        ready["attempts"], 1,
        "a node's death costs the video nothing"
    );
    eprintln!("node death to takeover: {takeover:?} (lease {LEASE_TTL} s)");
    assert!(takeover < Duration::from_secs(15), "{takeover:?}");
    // Every state event once, in order, from the log.
    let seqs = replayed(&b, &token, &id);
    assert_eq!(seqs[&id].first(), Some(&1));
    assert_eq!(
        runs(&cluster, &id).len(),
        1,
        "the dead run's objects are gone"
    );
}

#[test]
fn postgres_restarting_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path());
    let a = cluster.node("a", "all");
    let token = a.token("alice");
    let source = crate::support::webm(dir.path(), 20.0);
    let id = id_of(&a.upload(&token, "filename=pg.webm", &source));
    wait_converting(&a, &token, &id);
    cluster.pg.restart();
    let ready = a.wait_for(&token, &id, |v| {
        v["state"] == "ready" || v["state"] == "failed"
    });
    assert_eq!(ready["state"], "ready", "{ready}");
    replayed(&a, &token, &id);
    // Work resumes: a new upload after the restart goes through.
    let next = id_of(&a.upload(
        &token,
        "filename=after.webm",
        &crate::support::webm(dir.path(), 2.0),
    ));
    let v = a.wait_for(&token, &next, |v| {
        v["state"] == "ready" || v["state"] == "failed"
    });
    assert_eq!(v["state"], "ready", "{v}");
}

/// A TCP proxy to the database that can cut every connection through it.
pub(crate) struct Cuttable {
    pub(crate) addr: String,
    cut: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Cuttable {
    pub(crate) fn to(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, s) = (cut.clone(), streams.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                if let Ok(mut all) = s.lock() {
                    all.extend(client.try_clone().ok());
                    all.extend(server.try_clone().ok());
                }
                pipe(
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                pipe(server, client);
            }
        });
        Self { addr, cut, streams }
    }

    /// Drops every connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Ok(all) = self.streams.lock() {
            for s in all.iter() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

#[test]
fn a_node_cut_from_the_database_stops_publishing_and_its_video_is_taken_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path());
    let proxy = Cuttable::to(cluster.pg_addr());
    let a = cluster.node_at(
        "a",
        "all",
        &format!("postgres://postgres@{}/postgres", proxy.addr),
    );
    let token = a.token("alice");
    let source = crate::support::webm(dir.path(), 40.0);
    let id = id_of(&a.upload(&token, "filename=cut.webm", &source));
    wait_converting(&a, &token, &id);
    let b = cluster.node("b", "all");
    proxy.cut();
    let ready = b.wait_for(&token, &id, |v| {
        v["state"] == "ready" || v["state"] == "failed"
    });
    assert_eq!(ready["state"], "ready", "{ready}");
    replayed(&b, &token, &id);
    // Give the cut-off node time to notice; it must not have published.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        runs(&cluster, &id).len(),
        1,
        "only the published run's objects"
    );
    drop(a);
}
