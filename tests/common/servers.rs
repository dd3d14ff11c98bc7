//! Real servers for the tests that need them, and ways to break them: Mosquitto on the
//! deploy files, a PostgreSQL schema of a test's own, and a TCP proxy that can cut the
//! daemon off its database.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use civicast::store::PgStore;
use sqlx::Connection;

use super::repo::repo_path;

/// Accounts in the password file; each password is `pw-{account}`.
pub const ACCOUNTS: [&str; 5] = ["civicast", "observer", "bus-1", "bus-2", "taxi-1"];

// ---------------------------------------------------------------------------------------
// Mosquitto
// ---------------------------------------------------------------------------------------

fn deploy(rel: &str) -> PathBuf {
    repo_path("deploy/mosquitto").join(rel)
}

/// A Mosquitto child process on a temporary folder; killed on drop (also on panic).
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Writes the deploy files into a new folder and starts Mosquitto on them.
    pub async fn start() -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let conf = std::fs::read_to_string(deploy("mosquitto.conf")).expect("mosquitto.conf");
        let mut rewritten = 0;
        let lines: Vec<String> = conf
            .lines()
            .map(|l| {
                let new = match l.split_whitespace().next() {
                    Some("listener") => format!("listener {port} 127.0.0.1"),
                    Some("password_file") => {
                        format!("password_file {}", d.join("passwd").display())
                    }
                    Some("acl_file") => format!("acl_file {}", d.join("acl").display()),
                    Some("persistence_location") => {
                        format!("persistence_location {}/", d.display())
                    }
                    _ => return l.to_owned(),
                };
                rewritten += 1;
                new
            })
            .collect();
        assert_eq!(
            rewritten, 4,
            "the deploy conf has one listener and one of each path"
        );
        std::fs::write(d.join("mosquitto.conf"), lines.join("\n") + "\n").expect("write conf");
        std::fs::copy(deploy("acl"), d.join("acl")).expect("copy acl");
        for (i, a) in ACCOUNTS.iter().enumerate() {
            let mut c = Command::new("mosquitto_passwd");
            c.arg("-b");
            if i == 0 {
                c.arg("-c");
            }
            let st = c
                .arg(d.join("passwd"))
                .arg(a)
                .arg(format!("pw-{a}"))
                .status()
                .expect("mosquitto_passwd runs");
            assert!(st.success(), "mosquitto_passwd {a}");
        }
        own_by_mosquitto_if_root(d);
        Self::spawn(dir, port).await
    }

    /// Mosquitto open to anyone on loopback, with unlimited queues and no persistence: for
    /// clients that do not log in (`civicast simulate`), as the bench's private broker.
    pub async fn start_open() -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n\
             max_inflight_messages 0\npersistence false\n"
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).expect("write conf");
        Self::spawn(dir, port).await
    }

    async fn spawn(dir: tempfile::TempDir, port: u16) -> Mosquitto {
        let d = dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("mosquitto.log"))
            .expect("log file");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(d.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto starts");
        let mut m = Mosquitto {
            child: Some(child),
            port,
            dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            let exited = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "mosquitto exited ({exited:?}):\n{}",
                m.log()
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "mosquitto did not listen on {port}:\n{}",
                m.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        m
    }

    /// Stops Mosquitto the way systemd does (SIGTERM: it saves its database) and waits
    /// until it has exited. Start it again with [`Mosquitto::start_again`].
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(st.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().expect("wait").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto ignores SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a stopped Mosquitto again on the same folder (its saved database) and port.
    pub async fn start_again(mut self) -> Mosquitto {
        assert!(self.child.is_none(), "stop it first");
        let port = self.port;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        Mosquitto::spawn(dir, port).await
    }
}

impl Mosquitto {
    /// [`Mosquitto::start_again`] in place, for a broker held in a struct.
    pub async fn restart_stopped(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        *self = Mosquitto::spawn(dir, self.port).await;
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- mosquitto log ---\n{}", self.log());
        }
    }
}

/// Run as root, Mosquitto drops to the `mosquitto` user, which must read the password and
/// ACL files and write its database (the production layout: owned by mosquitto, 0640).
fn own_by_mosquitto_if_root(d: &Path) {
    let id = |args: &[&str]| -> Option<u32> {
        let o = Command::new("id").args(args).output().ok()?;
        String::from_utf8(o.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"]) != Some(0) {
        return;
    }
    let (Some(uid), Some(gid)) = (id(&["-u", "mosquitto"]), id(&["-g", "mosquitto"])) else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    for p in [d.to_path_buf(), d.join("passwd"), d.join("acl")] {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown");
    }
    std::fs::set_permissions(d.join("passwd"), std::fs::Permissions::from_mode(0o640))
        .expect("chmod");
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: a fresh schema per test
// ---------------------------------------------------------------------------------------

/// A schema of its own in the `CIVICAST_TEST_PG` database.
#[derive(Clone, Debug)]
pub struct PgSchema {
    /// `CIVICAST_TEST_PG` as given.
    pub base: String,
    pub name: String,
}

impl PgSchema {
    /// `base` with `search_path` set to this schema in the URL (`options=-csearch_path=...`),
    /// as `CIVICAST_DATABASE_URL` would carry it.
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", self.base, self.name)
    }

    /// A store on this schema, straight to the database (not through any proxy): for
    /// creating the schema and reading what the daemon stored.
    pub async fn store(&self) -> PgStore {
        PgStore::connect_schema(&self.base, &self.name)
            .await
            .expect("connect to CIVICAST_TEST_PG")
    }

    /// `base` split into (scheme, user info with its `@`, host:port, path and query).
    fn parts(&self) -> (&str, &str, String, &str) {
        let (scheme, rest) = self.base.split_once("://").expect("a postgres:// URL");
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (&authority[..=i], &authority[i + 1..]),
            None => ("", authority),
        };
        let hostport = if hostport.contains(':') {
            hostport.to_owned()
        } else {
            format!("{hostport}:5432")
        };
        (scheme, userinfo, hostport, path)
    }

    /// The database server's address.
    pub async fn upstream(&self) -> SocketAddr {
        let hostport = self.parts().2;
        let mut addrs = tokio::net::lookup_host(hostport)
            .await
            .expect("resolve the database host");
        addrs.next().expect("an address for the database host")
    }

    /// `base` pointed at `via` instead of the database server.
    pub fn base_via(&self, via: SocketAddr) -> String {
        let (scheme, userinfo, _, path) = self.parts();
        format!("{scheme}://{userinfo}{via}{path}")
    }

    async fn drop_schema(&self) {
        let mut c = sqlx::PgConnection::connect(&self.base)
            .await
            .expect("reconnect to drop the test schema");
        sqlx::raw_sql(&format!(
            "SET lock_timeout = '20s'; DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.name
        ))
        .execute(&mut c)
        .await
        .expect("drop test schema");
    }
}

/// Runs `test` with a fresh schema that is dropped afterwards, also when the test fails.
pub async fn with_schema<F, Fut>(base: String, test: F)
where
    F: FnOnce(PgSchema) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let schema = PgSchema {
        base,
        name: format!("fail_{}", ulid::Ulid::new().to_string().to_lowercase()),
    };
    // Creates the schema (so a daemon can be pointed at it by URL alone).
    schema.store().await.pool().close().await;
    let outcome = tokio::spawn(test(schema.clone())).await;
    schema.drop_schema().await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("test task: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// A TCP proxy that can be cut
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct ProxyState {
    accept: Option<tokio::task::JoinHandle<()>>,
    conns: Vec<tokio::task::JoinHandle<()>>,
}

/// Forwards 127.0.0.1:`port` to `upstream`. `cut` drops every open connection and closes
/// the listener (new connections are refused); `restore` listens again on the same port;
/// `lose_next_commit_answer` drops PostgreSQL's answer to one COMMIT it has carried out.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    lose: Arc<AtomicBool>,
    lost: Arc<AtomicUsize>,
}

/// PostgreSQL's CommandComplete for a COMMIT: tag `C`, length 11, `COMMIT\0`. The server
/// sends it once the transaction is durable.
const COMMIT_DONE: &[u8] = b"C\0\0\0\x0bCOMMIT\0";

/// Forwards both ways until either side closes; while `lose` is set, the first answer from
/// upstream that completes a COMMIT is not forwarded and the connection is dropped, so
/// the client sees an error for a transaction that was committed.
async fn forward(
    inbound: tokio::net::TcpStream,
    out: tokio::net::TcpStream,
    lose: Arc<AtomicBool>,
    lost: Arc<AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_in, mut client_out) = inbound.into_split();
    let (mut server_in, mut server_out) = out.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_in, &mut server_out).await;
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_in.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if lose.load(Ordering::SeqCst)
                && chunk.windows(COMMIT_DONE.len()).any(|w| w == COMMIT_DONE)
                && lose.swap(false, Ordering::SeqCst)
            {
                lost.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if client_out.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let p = Proxy {
            addr: listener.local_addr().expect("addr"),
            upstream,
            state: Arc::new(Mutex::new(ProxyState::default())),
            lose: Arc::new(AtomicBool::new(false)),
            lost: Arc::new(AtomicUsize::new(0)),
        };
        p.serve(listener);
        p
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let state = self.state.clone();
        let upstream = self.upstream;
        let (lose, lost) = (self.lose.clone(), self.lost.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let (lose, lost) = (lose.clone(), lost.clone());
                let conn = tokio::spawn(async move {
                    let Ok(out) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    forward(inbound, out, lose, lost).await;
                });
                let mut s = state.lock().expect("lock");
                s.conns.retain(|c| !c.is_finished());
                s.conns.push(conn);
            }
        });
        self.state.lock().expect("lock").accept = Some(accept);
    }

    /// Drops every open connection and stops listening; returns how many were open.
    pub async fn cut(&self) -> usize {
        let (accept, conns) = {
            let mut s = self.state.lock().expect("lock");
            (s.accept.take(), std::mem::take(&mut s.conns))
        };
        if let Some(a) = accept {
            a.abort();
            let _ = a.await;
        }
        let mut open = 0;
        for c in conns {
            if !c.is_finished() {
                open += 1;
            }
            c.abort();
            let _ = c.await;
        }
        open
    }

    /// The next COMMIT PostgreSQL carries out through the proxy is not answered: its
    /// connection is dropped instead, as when the server or the network fails between the
    /// commit and its answer.
    pub fn lose_next_commit_answer(&self) {
        self.lose.store(true, Ordering::SeqCst);
    }

    /// How many COMMIT answers were lost so far.
    pub fn commit_answers_lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }

    /// Listens again on the same address.
    pub async fn restore(&self) {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_reuseaddr(true).expect("reuseaddr");
        sock.bind(self.addr).expect("rebind the proxy's port");
        self.serve(sock.listen(128).expect("listen"));
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: a private cluster, to stop and start at will
// ---------------------------------------------------------------------------------------

/// The newest installed PostgreSQL's `bin/` folder (Debian's layout).
fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL installed under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL server binary")
}

/// The `postgres` system user's (uid, gid): the server refuses to run as root.
fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let o = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id");
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .expect("a postgres user")
    };
    (id("-u"), id("-g"))
}

/// One `initdb` per test binary (2 s); each cluster starts from a copy of it.
fn pg_template() -> &'static Path {
    static TEMPLATE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
            let out = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pg_bin().join("initdb"))
                .arg("-D")
                .arg(dir.path().join("data"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync"])
                .output()
                .expect("initdb runs");
            assert!(
                out.status.success(),
                "initdb: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            dir
        })
        .path()
}

/// A PostgreSQL cluster of a test's own (a copy of one `initdb`, on a free loopback port,
/// run as the `postgres` user), so that a test can stop and restart it without touching
/// the shared server. Killed on drop (also on panic).
pub struct PgCluster {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PgCluster {
    pub async fn start() -> PgCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = Command::new("cp")
            .arg("-a")
            .arg(pg_template().join("data"))
            .arg(dir.path())
            .status()
            .expect("cp");
        assert!(st.success(), "copying the template cluster");
        let (uid, gid) = postgres_user();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mut c = PgCluster {
            child: None,
            port,
            dir,
        };
        c.start_again().await;
        c
    }

    /// `postgres://postgres@127.0.0.1:{port}/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Starts the server on its data folder and port; returns once it accepts queries.
    pub async fn start_again(&mut self) {
        use std::os::unix::process::CommandExt;
        assert!(self.child.is_none(), "stop it first");
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("postgres.log"))
            .expect("log file");
        let (uid, gid) = postgres_user();
        std::os::unix::fs::chown(d.join("postgres.log"), Some(uid), Some(gid)).expect("chown");
        let child = Command::new(pg_bin().join("postgres"))
            .arg("-D")
            .arg(d.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(d)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=50",
            ])
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = sqlx::PgConnection::connect(&self.url()).await {
                if sqlx::query("SELECT 1").execute(&mut c).await.is_ok() {
                    let _ = c.close().await;
                    return;
                }
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "postgres exited ({exited:?}):\n{}",
                self.log()
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "postgres not ready on {}:\n{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An immediate shutdown (SIGQUIT: every backend dies mid-statement, and the next start
    /// recovers from the WAL, as after a crash); waits until the server has exited.
    pub async fn crash(&mut self) {
        let mut child = self.child.take().expect("running");
        signal(child.id(), libc::SIGQUIT);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("wait").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "postgres ignores SIGQUIT"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGQUIT);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- postgres log ---\n{}", self.log());
        }
    }
}

/// Sends `sig` to process `pid` (one of the test's own children).
pub fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid");
    // SAFETY: kill(2) takes plain integers; the pid is a child this test spawned.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

// ---------------------------------------------------------------------------------------
// A small file system that can be filled
// ---------------------------------------------------------------------------------------

/// A tmpfs of a fixed size mounted on a temporary folder (needs root), to run out of
/// space on purpose; unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -t tmpfs -o size=...`); the error says why not.
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn filler(&self) -> PathBuf {
        self.dir.path().join("filler")
    }

    /// Writes a file until the file system is full (ENOSPC); returns the bytes written.
    pub fn fill(&self) -> u64 {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .expect("filler");
        let chunk = vec![0xA5u8; 4096];
        let mut n = 0;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the file system: {e}"),
            }
        }
        n
    }

    /// Deletes what [`Tmpfs::fill`] wrote.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a daemon still holding the database open must not keep the mount alive.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

// ---------------------------------------------------------------------------------------
// An MQTT tap: what the broker delivered to one client and what it acknowledged
// ---------------------------------------------------------------------------------------

/// What a tap saw.
#[derive(Default)]
struct TapState {
    /// QoS 1 publishes the broker delivered, not yet acknowledged by the client: packet id
    /// -> (topic, play id in the payload, if any).
    unacked: BTreeMap<u16, (String, Option<String>)>,
    /// When the client sent each PUBACK.
    pubacks: Vec<Instant>,
    /// QoS 1 publishes delivered (redeliveries included).
    delivered: usize,
    conns: Vec<tokio::task::JoinHandle<()>>,
}

/// A relay between one MQTT client (the daemon) and its broker that reads the packets as
/// they pass: which QoS 1 messages the broker delivered and which the client acknowledged,
/// and when. An oracle outside the daemon for "acknowledged only after it is stored": the
/// broker redelivers, after a reconnect, exactly the messages that were not acknowledged,
/// with the same packet ids. Connections to the broker are made per client connection, so
/// the tap outlives broker restarts.
pub struct MqttTap {
    pub port: u16,
    state: Arc<Mutex<TapState>>,
    accept: tokio::task::JoinHandle<()>,
}

impl MqttTap {
    pub async fn start(upstream_port: u16) -> MqttTap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the tap");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(TapState::default()));
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let st2 = st.clone();
                let conn = tokio::spawn(async move {
                    let Ok(out) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                    else {
                        return;
                    };
                    relay(inbound, out, st2).await;
                });
                let mut s = st.lock().expect("lock");
                s.conns.retain(|c| !c.is_finished());
                s.conns.push(conn);
            }
        });
        MqttTap {
            port,
            state,
            accept,
        }
    }

    /// PUBACKs the client sent within [from, to).
    pub fn acks_between(&self, from: Instant, to: Instant) -> usize {
        let s = self.state.lock().expect("lock");
        s.pubacks.iter().filter(|t| **t >= from && **t < to).count()
    }

    pub fn acks(&self) -> usize {
        self.state.lock().expect("lock").pubacks.len()
    }

    pub fn delivered(&self) -> usize {
        self.state.lock().expect("lock").delivered
    }

    /// Receipts delivered to the client and not (yet) acknowledged: (device, play id).
    pub fn unacked_receipts(&self) -> BTreeSet<(String, String)> {
        let s = self.state.lock().expect("lock");
        s.unacked
            .values()
            .filter_map(|(topic, play)| {
                let dev = topic.strip_suffix("/receipts")?.rsplit('/').next()?;
                Some((dev.to_owned(), play.clone()?))
            })
            .collect()
    }

    /// Messages of any kind delivered and not acknowledged.
    pub fn unacked(&self) -> usize {
        self.state.lock().expect("lock").unacked.len()
    }
}

impl Drop for MqttTap {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.state.lock().expect("lock").conns.drain(..) {
            c.abort();
        }
    }
}

/// Copies both ways, reading MQTT packets on the way (3.1.1 and 5 frame them alike; the
/// version, from CONNECT, says whether a PUBLISH carries properties).
async fn relay(
    inbound: tokio::net::TcpStream,
    out: tokio::net::TcpStream,
    st: Arc<Mutex<TapState>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut ci, mut co) = inbound.into_split();
    let (mut si, mut so) = out.into_split();
    let v5 = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (st1, v51) = (st.clone(), v5.clone());
    let up = async move {
        let mut frames = Frames::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match ci.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for (head, body) in frames.push(&buf[..n]) {
                match head >> 4 {
                    // CONNECT: protocol name (2-byte length + text), then the level.
                    1 => {
                        let name = body
                            .get(..2)
                            .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
                        if body.get(2 + name) == Some(&5) {
                            v51.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    // PUBACK: the packet id first.
                    4 if body.len() >= 2 => {
                        let id = u16::from_be_bytes([body[0], body[1]]);
                        let mut s = st1.lock().expect("lock");
                        s.unacked.remove(&id);
                        s.pubacks.push(Instant::now());
                    }
                    _ => {}
                }
            }
            if so.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = so.shutdown().await;
    };
    let down = async move {
        let mut frames = Frames::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match si.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for (head, body) in frames.push(&buf[..n]) {
                if head >> 4 == 3 && (head >> 1) & 3 == 1 {
                    let v5 = v5.load(std::sync::atomic::Ordering::Relaxed);
                    if let Some((id, topic, play)) = parse_publish(&body, v5) {
                        let mut s = st.lock().expect("lock");
                        s.delivered += 1;
                        s.unacked.insert(id, (topic, play));
                    }
                }
            }
            if co.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = co.shutdown().await;
    };
    tokio::join!(up, down);
}

/// Splits a byte stream into MQTT packets: (first header byte, body).
#[derive(Default)]
struct Frames(Vec<u8>);

impl Frames {
    fn push(&mut self, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        self.0.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let b = &self.0;
            if b.len() < 2 {
                break;
            }
            // The remaining length: up to four bytes, seven bits each, low first.
            let (mut len, mut mult, mut i) = (0usize, 1usize, 1usize);
            let complete = loop {
                let Some(&x) = b.get(i) else { break false };
                len += usize::from(x & 0x7f) * mult;
                mult *= 128;
                i += 1;
                if x & 0x80 == 0 {
                    break true;
                }
            };
            if !complete || b.len() < i + len {
                break;
            }
            out.push((b[0], b[i..i + len].to_vec()));
            self.0.drain(..i + len);
        }
        out
    }
}

/// A QoS 1 PUBLISH body: (packet id, topic, the payload's `play_id`).
fn parse_publish(body: &[u8], v5: bool) -> Option<(u16, String, Option<String>)> {
    let tlen = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let topic = String::from_utf8_lossy(body.get(2..2 + tlen)?).into_owned();
    let at = 2 + tlen;
    let id = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
    let mut at = at + 2;
    if v5 {
        let (mut plen, mut mult) = (0usize, 1usize);
        loop {
            let x = *body.get(at)?;
            at += 1;
            plen += usize::from(x & 0x7f) * mult;
            mult *= 128;
            if x & 0x80 == 0 {
                break;
            }
        }
        at += plen;
    }
    let payload = body.get(at..)?;
    let play = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v["play_id"].as_str().map(str::to_owned));
    Some((id, topic, play))
}

/// A private PostgreSQL cluster reached through a [`Proxy`] that can cut it off: `store`
/// goes through the proxy (give it to the daemon), `direct` does not (read what was
/// stored with it).
pub struct ProxiedPg {
    pub cluster: PgCluster,
    pub proxy: Proxy,
    pub direct: PgStore,
    pub store: PgStore,
}

impl ProxiedPg {
    pub async fn start() -> ProxiedPg {
        let cluster = PgCluster::start().await;
        let direct = PgStore::connect(&cluster.url())
            .await
            .expect("connect to the cluster");
        let proxy = Proxy::start(cluster.addr()).await;
        let via = format!("postgres://postgres@{}/postgres", proxy.addr);
        let store = PgStore::connect(&via)
            .await
            .expect("connect through the proxy");
        ProxiedPg {
            cluster,
            proxy,
            direct,
            store,
        }
    }
}
