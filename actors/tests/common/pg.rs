//! A real PostgreSQL 15 for the tests: `initdb` into a temporary
//! directory, the server on 127.0.0.1 at a free port (its unix socket in
//! that directory too), a fresh database per test. The server is shared
//! by the tests of one process while any of them holds it, and stopped
//! and removed when the last lets go. As root, the server runs as the
//! `postgres` user (or `nobody`), since PostgreSQL refuses to run as root.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// A running server; stopped and removed on drop.
#[derive(Debug)]
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<String>,
    /// The server user's uid and gid when it is not this process's.
    owner: Option<(u32, u32)>,
    pub port: u16,
}

/// A fresh database on the shared server.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    pub name: String,
    server: Arc<PgServer>,
}

static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());

/// Where the PostgreSQL 15 programs are: `VIDMILL_PG_BIN`, Debian's
/// directory, or the directory of an `initdb` on `PATH`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VIDMILL_PG_BIN") {
        return dir.into();
    }
    let debian = Path::new("/usr/lib/postgresql/15/bin");
    if debian.join("initdb").is_file() {
        return debian.into();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| d.join("initdb").is_file())
        .expect("PostgreSQL 15 is not installed (make deps installs postgresql-15)")
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a command");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The unprivileged user to run the server as when this process is root.
fn server_user() -> Option<(String, u32, u32)> {
    if output(Command::new("id").arg("-u")) != "0" {
        return None;
    }
    ["postgres", "nobody"].into_iter().find_map(|user| {
        let uid = output(Command::new("id").args(["-u", user])).parse().ok()?;
        let gid = output(Command::new("id").args(["-g", user])).parse().ok()?;
        Some((user.to_string(), uid, gid))
    })
}

impl PgServer {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        // The server's user may not be able to enter the test's directory.
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// Makes an empty cluster in `data` (created or empty).
    fn initdb(&self, data: &Path) -> bool {
        self.command("initdb")
            .arg("-D")
            .arg(data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A cluster made by `initdb` once per build directory and user and
    /// copied for each server: `initdb` takes a second, a copy a tenth of
    /// that. Made aside and renamed into place, so a process that sees it
    /// sees it whole; `None` when it cannot be made (then each server runs
    /// `initdb` itself).
    fn template(&self) -> Option<PathBuf> {
        let user = self.run_as.as_deref().unwrap_or("self");
        // Tests have a build-directory scratch space; the benchmark (a
        // binary) has not.
        let base =
            option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = base.join(format!("pg15-template-{user}"));
        if dir.join("PG_VERSION").is_file() {
            return Some(dir);
        }
        let staging = dir.with_extension(format!("staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).ok()?;
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&staging, Some(uid), Some(gid)).ok()?;
        }
        if !self.initdb(&staging) || std::fs::rename(&staging, &dir).is_err() {
            // Failed, or another process put its template in place first.
            let _ = std::fs::remove_dir_all(&staging);
        }
        dir.join("PG_VERSION").is_file().then_some(dir)
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("pg")
    }

    /// A watcher that stops the server (immediate shutdown) and removes its
    /// directory once this process is gone, however it ends: a server held
    /// in a static is never dropped, and a test process killed by a signal
    /// drops nothing, and each would leave a PostgreSQL running.
    fn stop_when_this_process_ends(&self) {
        let me = std::process::id();
        let pid_file = self.home().join("data").join("postmaster.pid");
        let dir = self.dir.path().display().to_string();
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 1; done; \
             pid=$(head -n 1 '{}' 2>/dev/null) && kill -QUIT \"$pid\" 2>/dev/null; \
             sleep 2; rm -rf '{dir}'",
            pid_file.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }

    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let user = server_user();
        let home = dir.path().join("pg");
        std::fs::create_dir(&home).expect("mkdir");
        if let Some((_, uid, gid)) = &user {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            std::os::unix::fs::chown(&home, Some(*uid), Some(*gid)).expect("chown");
        }
        let mut server = Self {
            dir,
            bin: bin_dir(),
            owner: user.as_ref().map(|(_, uid, gid)| (*uid, *gid)),
            run_as: user.map(|(name, _, _)| name),
            port: 0,
        };
        let data = home.join("data");
        let copied = server.template().is_some_and(|template| {
            // As root, -a keeps the server user as the owner.
            Command::new("cp")
                .arg("-a")
                .arg(&template)
                .arg(&data)
                .status()
                .is_ok_and(|s| s.success())
        });
        if !copied {
            let _ = std::fs::remove_dir_all(&data);
            assert!(server.initdb(&data), "initdb failed");
        }
        // A port found free may be taken before the server binds it: try again.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
                 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                home.display()
            );
            let started = server
                .command("pg_ctl")
                .arg("-D")
                .arg(home.join("data"))
                .arg("-l")
                .arg(home.join("log"))
                .args(["-w", "-t", "60", "-o", &options, "start"])
                .stdout(std::process::Stdio::null())
                .status()
                .expect("run pg_ctl");
            if started.success() {
                server.port = port;
                server.stop_when_this_process_ends();
                return server;
            }
        }
        let log = std::fs::read_to_string(home.join("log")).unwrap_or_default();
        panic!("PostgreSQL did not start:\n{log}");
    }

    /// A server of the caller's own, for a test that stops or restarts it.
    pub fn private() -> Arc<Self> {
        Arc::new(Self::start())
    }

    /// Stops the server (fast: connections are cut) and starts it again on
    /// the same port.
    pub fn restart(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.home().display()
        );
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.home().join("data"))
            .arg("-l")
            .arg(self.home().join("log"))
            .args(["-m", "fast", "-w", "-t", "60", "-o", &options, "restart"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run pg_ctl");
        assert!(status.success(), "PostgreSQL did not restart");
    }

    /// The server this process's tests share, started if none runs.
    pub fn shared() -> Arc<Self> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let server = Arc::new(Self::start());
        *shared = Arc::downgrade(&server);
        server
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.home().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// Connects to `url` as a plain client (the test's own side door).
pub async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
}

impl TestDb {
    /// A new, empty database on the shared server.
    pub async fn new() -> Self {
        let server = tokio::task::spawn_blocking(PgServer::shared)
            .await
            .expect("start PostgreSQL");
        Self::on(server).await
    }

    /// A new, empty database on `server`.
    pub async fn on(server: Arc<PgServer>) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        client(&server.url("postgres"))
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        Self {
            url: server.url(&name),
            name,
            server,
        }
    }

    /// The server this database lives on.
    pub fn server(&self) -> &Arc<PgServer> {
        &self.server
    }

    /// Ends every connection to this database whose application name is
    /// `application_name`; returns how many there were.
    pub async fn terminate(&self, application_name: &str) -> u64 {
        let admin = client(&self.url).await;
        let rows = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND application_name = $2",
                &[&self.name, &application_name],
            )
            .await
            .expect("terminate");
        rows.len() as u64
    }
}
