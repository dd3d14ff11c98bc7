//! Where the daemon finds its broker, database, files and listeners: a config file
//! (`--config civicast.toml`) overlaid by `CIVICAST_*` environment variables (the
//! environment wins), parsed once into types before anything starts.
//!
//! Owns: the names of the settings, their defaults, and parsing them. Every bad value is
//! reported at once, each named by the variable or key it came from. Secrets (the broker's
//! and the database's passwords) never show in `Debug` or in an error.
//!
//! Demo-only options (time compression, the fleet) live on the `demo` command, not here.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::url::redact;
use crate::store::DatabaseUrl;

/// Everything `serve` needs to know before it starts, parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The embedded broker, or an external one.
    pub broker: Broker,
    pub database: DatabaseUrl,
    pub http_listen: SocketAddr,
    pub devices: PathBuf,
    pub schedules: PathBuf,
    /// Topic prefix `P`.
    pub prefix: String,
    /// The daemon's MQTT client id; its persistent session keeps receipts while it is down.
    pub mqtt_client_id: String,
    /// Shared-subscription group when several daemons split the receipts on an external
    /// broker; empty (the default): a plain subscription. Mosquitto 2.0.11 does not restore
    /// shared subscriptions from its database after a restart, so with one daemon a plain
    /// subscription is what keeps receipts queued across a broker restart. The embedded
    /// broker hands receipts to the daemon directly and ignores it.
    pub share_group: String,
    /// How long a play stays valid; default one feed interval.
    pub play_ttl: Option<Duration>,
    /// Most receipts in one database transaction.
    pub batch_max: usize,
    /// Longest a receipt waits for more to join its batch; zero (the default): commit as
    /// soon as nothing more is waiting, and let the next batch gather meanwhile.
    pub batch_wait: Option<Duration>,
    /// Most connections the embedded broker takes.
    pub broker_max_connections: usize,
    /// Days of raw receipts to keep (the hourly rollup is kept for good); unset: all.
    pub retention_days: Option<u32>,
    /// How often `devices/` and `schedules/` are checked for edits; unset: never.
    pub watch_every: Option<Duration>,
    /// How long the files must stay unchanged before an edit is applied: a file modified
    /// more recently, or read differently twice this far apart, is still being written.
    pub watch_settle: Duration,
    /// The largest share (0 to 1) of the displays, or of the ad sets still to play, that a
    /// reload (or a start, against the database) may take away; more is refused and logged
    /// until accepted (`civicast reload --accept-drop`, or `serve --accept-drop`).
    pub max_drop: f64,
    /// Most slogans in one ad set uploaded over HTTP: an upload past it is refused before
    /// its slogans are checked, so one request cannot hold a worker for long.
    pub max_slogans: usize,
    /// The receipt log's signing key (written by `civicast log keygen`); unset: the log is
    /// kept but no checkpoint is signed.
    pub log_key: Option<PathBuf>,
    /// How often the daemon signs a checkpoint of the receipt log (when it grew; also at
    /// the close of each day in the deployment's zone).
    pub log_checkpoint_every: Duration,
}

/// Which broker the daemon uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Broker {
    /// The embedded broker, listening here (MQTT 3.1.1 and 5 on one port).
    Embedded { listen: SocketAddr },
    /// An external broker (`CIVICAST_MQTT_URL`).
    External(MqttUrl),
}

impl Broker {
    pub fn is_external(&self) -> bool {
        matches!(self, Broker::External(_))
    }
}

const DEFAULT_MQTT_LISTEN: &str = "127.0.0.1:1883";

/// A fifth of the city gone in one edit is rarely meant: a deleted or half-copied file is the
/// usual way to get there, and an intended one is accepted once by hand.
pub const DEFAULT_MAX_DROP: f64 = 0.2;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            broker: Broker::Embedded {
                listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            },
            database: DatabaseUrl::sqlite_file(Path::new("civicast.db")),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            devices: "devices".into(),
            schedules: "schedules".into(),
            prefix: "civicast/v1".into(),
            mqtt_client_id: "civicast-daemon".into(),
            share_group: String::new(),
            play_ttl: None,
            batch_max: 2_000,
            batch_wait: Some(Duration::ZERO),
            broker_max_connections: 20_000,
            retention_days: None,
            watch_every: Some(Duration::from_secs(2)),
            watch_settle: Duration::from_secs(1),
            max_drop: DEFAULT_MAX_DROP,
            max_slogans: 10_000,
            log_key: None,
            log_checkpoint_every: Duration::from_secs(300),
        }
    }
}

/// One setting that cannot be used, named by its variable or key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("{name}={value}: {message}")]
    Bad {
        /// `CIVICAST_BATCH_MAX`, or `batch_max in civicast.toml`.
        name: String,
        /// As given, quoted; a secret is shown redacted.
        value: String,
        message: String,
    },
}

/// Every setting that cannot be used, one a line.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsErrors(pub Vec<SettingsError>);

impl fmt::Display for SettingsErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for SettingsErrors {}

/// Each setting: its key in the config file and its environment variable.
const KEYS: &[(&str, &str)] = &[
    ("mqtt_url", "CIVICAST_MQTT_URL"),
    ("mqtt_listen", "CIVICAST_MQTT_LISTEN"),
    ("database_url", "CIVICAST_DATABASE_URL"),
    ("http_listen", "CIVICAST_HTTP_LISTEN"),
    ("devices", "CIVICAST_DEVICES"),
    ("schedules", "CIVICAST_SCHEDULES"),
    ("prefix", "CIVICAST_PREFIX"),
    ("mqtt_client_id", "CIVICAST_MQTT_CLIENT_ID"),
    ("share_group", "CIVICAST_SHARE_GROUP"),
    ("play_ttl", "CIVICAST_PLAY_TTL"),
    ("batch_max", "CIVICAST_BATCH_MAX"),
    ("batch_wait", "CIVICAST_BATCH_WAIT"),
    ("broker_max_connections", "CIVICAST_BROKER_MAX_CONNECTIONS"),
    ("retention_days", "CIVICAST_RETENTION_DAYS"),
    ("watch_every", "CIVICAST_WATCH_EVERY"),
    ("watch_settle", "CIVICAST_WATCH_SETTLE"),
    ("max_drop", "CIVICAST_MAX_DROP"),
    ("max_slogans", "CIVICAST_MAX_SLOGANS"),
    ("log_key", "CIVICAST_LOG_KEY"),
    ("log_checkpoint_every", "CIVICAST_LOG_CHECKPOINT_EVERY"),
];

/// A value as given, and where it came from (for the error that names it).
#[derive(Clone)]
struct Given {
    text: String,
    origin: String,
}

/// The settings as given, before parsing: file values overlaid by the environment.
#[derive(Default)]
struct Layers {
    given: BTreeMap<&'static str, Given>,
    errors: Vec<SettingsError>,
}

impl Layers {
    /// The keys of a TOML config file; unknown keys and non-scalar values are errors.
    fn file(&mut self, path: &Path, text: &str) {
        let shown = path.display().to_string();
        let table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => {
                self.errors.push(SettingsError::File {
                    path: shown,
                    message: e.to_string(),
                });
                return;
            }
        };
        for (k, v) in table {
            let Some(&(key, _)) = KEYS.iter().find(|(f, _)| *f == k) else {
                let known: Vec<&str> = KEYS.iter().map(|(f, _)| *f).collect();
                self.errors.push(SettingsError::File {
                    path: shown.clone(),
                    message: format!("unknown key {k:?} (known: {})", known.join(", ")),
                });
                continue;
            };
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    self.errors.push(SettingsError::File {
                        path: shown.clone(),
                        message: format!(
                            "{k}: want a string or a number, not {}",
                            other.type_str()
                        ),
                    });
                    continue;
                }
            };
            let origin = format!("{key} in {shown}");
            self.given.insert(key, Given { text, origin });
        }
    }

    /// `CIVICAST_*` variables from `get`. An empty variable counts as unset, except
    /// `CIVICAST_SHARE_GROUP`, whose empty value asks for a plain subscription.
    fn env(&mut self, get: &dyn Fn(&str) -> Option<String>) {
        for &(key, var) in KEYS {
            let Some(text) = get(var) else { continue };
            if text.is_empty() && key != "share_group" {
                continue;
            }
            let origin = var.to_owned();
            self.given.insert(key, Given { text, origin });
        }
    }

    /// Parses every given value over the defaults; every error at once.
    fn resolve(mut self) -> Result<Settings, SettingsErrors> {
        let mut s = Settings::default();
        let mut p = Parser {
            given: std::mem::take(&mut self.given),
            errors: std::mem::take(&mut self.errors),
        };
        s.broker = p.broker();
        p.set("database_url", &mut s.database, |t| {
            DatabaseUrl::parse(t).map_err(|e| e.to_string())
        });
        p.set("http_listen", &mut s.http_listen, parse_addr);
        p.set("devices", &mut s.devices, |t| Ok(PathBuf::from(t)));
        p.set("schedules", &mut s.schedules, |t| Ok(PathBuf::from(t)));
        p.set("prefix", &mut s.prefix, |t| Ok(t.to_owned()));
        p.set(
            "mqtt_client_id",
            &mut s.mqtt_client_id,
            |t| Ok(t.to_owned()),
        );
        p.set("share_group", &mut s.share_group, |t| Ok(t.to_owned()));
        p.set("play_ttl", &mut s.play_ttl, |t| parse_duration(t).map(Some));
        p.set("batch_max", &mut s.batch_max, parse_positive);
        p.set("batch_wait", &mut s.batch_wait, |t| {
            parse_duration(t).map(Some)
        });
        p.set(
            "broker_max_connections",
            &mut s.broker_max_connections,
            parse_positive,
        );
        p.set("retention_days", &mut s.retention_days, |t| {
            t.parse::<u32>().map(Some).map_err(|e| e.to_string())
        });
        p.set("watch_every", &mut s.watch_every, |t| {
            parse_duration(t).map(Some)
        });
        p.set("watch_settle", &mut s.watch_settle, parse_duration);
        p.set("max_drop", &mut s.max_drop, parse_share);
        p.set("max_slogans", &mut s.max_slogans, parse_positive);
        p.set("log_key", &mut s.log_key, |t| Ok(Some(PathBuf::from(t))));
        p.set("log_checkpoint_every", &mut s.log_checkpoint_every, |t| {
            parse_duration(t).and_then(|d| {
                if d.is_zero() {
                    Err("must be longer than zero".into())
                } else {
                    Ok(d)
                }
            })
        });
        if p.errors.is_empty() {
            Ok(s)
        } else {
            Err(SettingsErrors(p.errors))
        }
    }
}

struct Parser {
    given: BTreeMap<&'static str, Given>,
    errors: Vec<SettingsError>,
}

impl Parser {
    /// Sets `slot` from the value given for `key`, if any; a bad value is noted.
    fn set<T>(&mut self, key: &str, slot: &mut T, parse: impl Fn(&str) -> Result<T, String>) {
        let Some(g) = self.given.get(key) else { return };
        match parse(&g.text) {
            Ok(v) => *slot = v,
            Err(message) => self.errors.push(bad(g, message)),
        }
    }

    fn broker(&mut self) -> Broker {
        let listen = self.given.get("mqtt_listen").cloned();
        let listen = match listen {
            None => parse_addr(DEFAULT_MQTT_LISTEN).ok(),
            Some(g) => parse_addr(&g.text)
                .map_err(|m| self.errors.push(bad(&g, m)))
                .ok(),
        };
        let url = self.given.get("mqtt_url").cloned();
        match (url, listen) {
            (Some(g), _) => match MqttUrl::parse(&g.text) {
                Ok(u) => Broker::External(u),
                Err(m) => {
                    self.errors.push(bad(&g, m));
                    Settings::default().broker
                }
            },
            (None, Some(listen)) => Broker::Embedded { listen },
            (None, None) => Settings::default().broker,
        }
    }
}

/// A bad value, named by where it came from; a URL's password is never shown.
fn bad(g: &Given, message: String) -> SettingsError {
    SettingsError::Bad {
        name: g.origin.clone(),
        value: format!("{:?}", redact(&g.text)),
        message,
    }
}

fn parse_addr(t: &str) -> Result<SocketAddr, String> {
    t.parse::<SocketAddr>()
        .map_err(|e| format!("{e} (want host:port, e.g. 127.0.0.1:1883)"))
}

fn parse_duration(t: &str) -> Result<Duration, String> {
    humantime::parse_duration(t).map_err(|e| e.to_string())
}

/// A share from 0 to 1, written `0.2` or `20%`.
pub fn parse_share(t: &str) -> Result<f64, String> {
    let t = t.trim();
    let (num, scale) = match t.strip_suffix('%') {
        Some(p) => (p.trim(), 100.0),
        None => (t, 1.0),
    };
    match num.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&(v / scale)) => Ok(v / scale),
        _ => Err("want a share from 0 to 1, e.g. 0.2 or 20%".into()),
    }
}

fn parse_positive(t: &str) -> Result<usize, String> {
    match t.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

impl Settings {
    /// Reads the optional config file, then the environment, and parses both.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsErrors> {
        Settings::load_with(file, &|k| std::env::var(k).ok())
    }

    /// As `load`, with the environment given by `env`.
    pub fn load_with(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingsErrors> {
        let mut layers = Layers::default();
        if let Some(p) = file {
            match std::fs::read_to_string(p) {
                Ok(text) => layers.file(p, &text),
                Err(e) => layers.errors.push(SettingsError::File {
                    path: p.display().to_string(),
                    message: e.to_string(),
                }),
            }
        }
        layers.env(env);
        layers.resolve()
    }
}

/// A secret that never shows in `Debug` or `Display`.
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// An external broker's address and credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttUrl {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl MqttUrl {
    pub fn parse(u: &str) -> Result<MqttUrl, String> {
        let rest = u
            .strip_prefix("mqtt://")
            .or_else(|| u.strip_prefix("tcp://"))
            .ok_or("want mqtt://[user:pass@]host[:port]")?;
        let rest = rest.trim_end_matches('/');
        let (cred, hostport) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, rest),
        };
        let (username, password) = match cred {
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (Some(u.to_owned()), Some(Secret::new(p))),
                None => (Some(c.to_owned()), None),
            },
            None => (None, None),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.contains('[') => (
                h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                p.parse().map_err(|_| format!("bad port {p:?}"))?,
            ),
            _ => (hostport.to_owned(), 1883),
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(MqttUrl {
            host,
            port,
            username,
            password,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn environment_wins_over_defaults() {
        let s = Settings::load_with(
            None,
            &env(&[
                ("CIVICAST_DATABASE_URL", "postgres://x/y"),
                ("CIVICAST_MQTT_LISTEN", "127.0.0.1:0"),
            ]),
        )
        .expect("settings");
        assert_eq!(s.database.expose(), "postgres://x/y");
        assert_eq!(
            s.broker,
            Broker::Embedded {
                listen: "127.0.0.1:0".parse().expect("addr")
            }
        );
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("civicast.toml");
        std::fs::write(
            &file,
            "batch_max = 10\nprefix = \"city\"\nbatch_wait = \"1s\"\n",
        )
        .expect("write");
        let s = Settings::load_with(Some(&file), &env(&[("CIVICAST_BATCH_MAX", "20")]))
            .expect("settings");
        assert_eq!(s.batch_max, 20);
        assert_eq!(s.prefix, "city");
        assert_eq!(s.batch_wait, Some(Duration::from_secs(1)));
    }

    #[test]
    fn every_bad_value_is_named_at_once() {
        let e = Settings::load_with(
            None,
            &env(&[
                ("CIVICAST_HTTP_LISTEN", "localhost"),
                ("CIVICAST_DATABASE_URL", "mysql://x"),
                ("CIVICAST_BATCH_MAX", "0"),
                ("CIVICAST_PLAY_TTL", "soon"),
            ]),
        )
        .expect_err("bad");
        let names: Vec<String> =
            e.0.iter()
                .map(|x| match x {
                    SettingsError::Bad { name, .. } => name.clone(),
                    other => other.to_string(),
                })
                .collect();
        assert_eq!(
            names,
            [
                "CIVICAST_DATABASE_URL",
                "CIVICAST_HTTP_LISTEN",
                "CIVICAST_PLAY_TTL",
                "CIVICAST_BATCH_MAX"
            ]
        );
        let text = e.to_string();
        assert!(
            text.contains("CIVICAST_BATCH_MAX=\"0\": must be at least 1"),
            "{text}"
        );
    }

    #[test]
    fn file_errors_name_the_file_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("civicast.toml");
        std::fs::write(&file, "batch_max = \"many\"\nbogus = 1\n").expect("write");
        let e = Settings::load_with(Some(&file), &env(&[])).expect_err("bad");
        let text = e.to_string();
        assert!(text.contains("unknown key \"bogus\""), "{text}");
        assert!(text.contains("batch_max in "), "{text}");
        assert_eq!(e.0.len(), 2, "{text}");
        let missing = Settings::load_with(Some(&dir.path().join("nope.toml")), &env(&[]));
        assert!(missing
            .expect_err("missing")
            .to_string()
            .contains("nope.toml"));
    }

    #[test]
    fn passwords_never_show() {
        let s = Settings::load_with(
            None,
            &env(&[("CIVICAST_MQTT_URL", "mqtt://civicast:s3cret@127.0.0.1:1884")]),
        )
        .expect("settings");
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(s.broker.is_external());
        let e = Settings::load_with(
            None,
            &env(&[("CIVICAST_MQTT_URL", "mqtt://civicast:s3cret@h:port")]),
        )
        .expect_err("bad port");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = Settings::load_with(
            None,
            &env(&[("CIVICAST_DATABASE_URL", "mysql://u:pw@db/x")]),
        )
        .expect_err("bad scheme");
        assert!(e.to_string().contains("mysql://u:***@db/x"), "{e}");
    }

    #[test]
    fn an_empty_share_group_asks_for_a_plain_subscription() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("civicast.toml");
        std::fs::write(&file, "share_group = \"civicast\"\n").expect("write");
        let s = Settings::load_with(Some(&file), &env(&[("CIVICAST_SHARE_GROUP", "")]))
            .expect("settings");
        assert_eq!(s.share_group, "");
        let s = Settings::load_with(None, &env(&[("CIVICAST_PREFIX", "")])).expect("settings");
        assert_eq!(
            s.prefix, "civicast/v1",
            "other empty variables count as unset"
        );
    }

    #[test]
    fn the_largest_drop_is_a_share_from_the_file_or_the_environment() {
        assert_eq!(Settings::default().max_drop, 0.2);
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("civicast.toml");
        std::fs::write(&file, "max_drop = 0.5\nwatch_settle = \"300ms\"\n").expect("write");
        let s = Settings::load_with(Some(&file), &env(&[])).expect("settings");
        assert_eq!(s.max_drop, 0.5);
        assert_eq!(s.watch_settle, Duration::from_millis(300));
        let s = Settings::load_with(Some(&file), &env(&[("CIVICAST_MAX_DROP", "5%")]))
            .expect("settings");
        assert!((s.max_drop - 0.05).abs() < 1e-9, "{}", s.max_drop);
        for bad in ["1.5", "-0.1", "much", "120%"] {
            let e = Settings::load_with(None, &|k: &str| {
                (k == "CIVICAST_MAX_DROP").then(|| bad.to_owned())
            })
            .expect_err(bad);
            assert!(e.to_string().contains("CIVICAST_MAX_DROP"), "{e}");
            assert!(e.to_string().contains("from 0 to 1"), "{e}");
        }
    }

    #[test]
    fn mqtt_urls() {
        let u = MqttUrl::parse("mqtt://civicast:s3cret@127.0.0.1:1884").expect("url");
        assert_eq!(
            (u.host.as_str(), u.port, u.username.as_deref()),
            ("127.0.0.1", 1884, Some("civicast"))
        );
        assert_eq!(u.password.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(MqttUrl::parse("mqtt://localhost").map(|u| u.port), Ok(1883));
        assert!(MqttUrl::parse("http://x").is_err());
        assert!(MqttUrl::parse("mqtt://h:notaport").is_err());
    }
}
