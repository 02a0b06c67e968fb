//! A real S3 server for the tests and benchmarks: Garage (installed by
//! `make test-clients` with `cargo install garage`) on loopback ports,
//! with one bucket and one key made for it, killed on drop. Plain std, so
//! the benchmarks can include it too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Garage server with one bucket and one key, killed on drop.
pub struct Garage {
    child: Child,
    pub bucket: String,
    pub region: String,
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

fn garage_bin() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let installed = home.join(".cargo/bin/garage");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("garage")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

impl Garage {
    pub fn start(dir: &Path) -> Self {
        let (rpc, s3) = (free_port(), free_port());
        std::fs::create_dir_all(dir).expect("garage dir");
        let conf = dir.join("garage.toml");
        let d = dir.display();
        let secret: String = (0..64)
            .map(|i| b"0123456789abcdef"[(i * 7 + 3) % 16] as char)
            .collect();
        std::fs::write(
            &conf,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n"
            ),
        )
        .expect("garage config");
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(&conf)
            .arg("server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("garage (`make test-clients` installs it with cargo install)");
        let cli = |args: &[&str]| -> String {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let out = Command::new(garage_bin())
                    .arg("-c")
                    .arg(&conf)
                    .args(args)
                    .output()
                    .expect("garage cli");
                if out.status.success() {
                    return String::from_utf8_lossy(&out.stdout).into_owned();
                }
                assert!(
                    Instant::now() < deadline,
                    "garage {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        let node = cli(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().expect("node id").to_string();
        cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        cli(&["layout", "apply", "--version", "1"]);
        let key = cli(&["key", "create", "vidmill-test"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no `{name}` in {key}"))
        };
        let (key_id, secret_key) = (field("Key ID:"), field("Secret key:"));
        cli(&["bucket", "create", "vidmill"]);
        cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "vidmill",
            "--key",
            "vidmill-test",
        ]);
        Self {
            child,
            bucket: "vidmill".into(),
            region: "garage".into(),
            endpoint: format!("http://127.0.0.1:{s3}"),
            access_key_id: key_id,
            secret_access_key: secret_key,
        }
    }

    /// Config for a vidmill server storing here.
    pub fn server_toml(&self) -> String {
        format!(
            "[storage.s3]\nbucket = \"{}\"\nregion = \"{}\"\nendpoint = \"{}\"\npath_style = true\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            self.bucket, self.region, self.endpoint, self.access_key_id, self.secret_access_key
        )
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
