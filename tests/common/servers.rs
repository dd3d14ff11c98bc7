//! Real servers for the tests that need them, and ways to break them: Mosquitto on the
//! deploy files, a PostgreSQL schema of a test's own, and a TCP proxy that can cut the
//! daemon off its database.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
/// the listener (new connections are refused); `restore` listens again on the same port.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
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
        };
        p.serve(listener);
        p
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let state = self.state.clone();
        let upstream = self.upstream;
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let conn = tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
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

    /// Listens again on the same address.
    pub async fn restore(&self) {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_reuseaddr(true).expect("reuseaddr");
        sock.bind(self.addr).expect("rebind the proxy's port");
        self.serve(sock.listen(128).expect("listen"));
    }
}
