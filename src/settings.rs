//! Where the daemon finds its broker, database, files and listeners: a config file
//! (`--config civicast.toml`) overlaid by `CIVICAST_*` environment variables (the
//! environment wins), checked before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything `serve` needs to know before it starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// External broker, `mqtt://user:pass@host:port`; unset: the embedded broker.
    pub mqtt_url: Option<String>,
    /// Where the embedded broker listens.
    pub mqtt_listen: String,
    pub database_url: String,
    pub http_listen: String,
    pub devices: PathBuf,
    pub schedules: PathBuf,
    /// Topic prefix `P`.
    pub prefix: String,
    /// The daemon's MQTT client id; its persistent session keeps receipts while it is down.
    pub mqtt_client_id: String,
    /// Shared-subscription group when several daemons split the receipts on an external
    /// broker; empty (the default): a plain subscription. Mosquitto 2.0.11 does not restore
    /// shared subscriptions from its database after a restart, so with one daemon a plain
    /// subscription is what keeps receipts queued across a broker restart; rumqttd 0.20
    /// (the embedded broker) holds back the newest message of a shared group.
    pub share_group: String,
    /// How long a play stays valid; default one feed interval.
    #[serde(with = "humantime_serde_opt")]
    pub play_ttl: Option<Duration>,
    /// Most receipts in one database transaction.
    pub batch_max: usize,
    /// Longest a receipt waits for more to join its batch; zero (the default): commit as
    /// soon as nothing more is waiting, and let the next batch gather meanwhile.
    #[serde(with = "humantime_serde_opt")]
    pub batch_wait: Option<Duration>,
    /// Most connections the embedded broker takes.
    pub broker_max_connections: usize,
    /// Days of raw receipts to keep (the hourly rollup is kept for good); unset: all.
    pub retention_days: Option<u32>,
    /// How often `devices/` and `schedules/` are checked for edits.
    #[serde(with = "humantime_serde_opt")]
    pub watch_every: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mqtt_url: None,
            mqtt_listen: "127.0.0.1:1883".into(),
            database_url: "sqlite://civicast.db".into(),
            http_listen: "127.0.0.1:8080".into(),
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
        }
    }
}

mod humantime_serde_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A setting that cannot be used, named by its variable or key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("{name}={value:?}: {message}")]
    Bad {
        name: &'static str,
        value: String,
        message: String,
    },
}

impl Settings {
    /// Reads the optional config file, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        let mut s = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| SettingsError::File {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| SettingsError::File {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?
            }
            None => Settings::default(),
        };
        s.overlay_env(|k| std::env::var(k).ok())?;
        s.check()?;
        Ok(s)
    }

    /// Applies `CIVICAST_*` variables from `get`.
    pub fn overlay_env(
        &mut self,
        raw: impl Fn(&str) -> Option<String>,
    ) -> Result<(), SettingsError> {
        if let Some(v) = raw("CIVICAST_SHARE_GROUP") {
            // Set but empty: a plain subscription, for a broker without shared subscriptions.
            self.share_group = v;
        }
        let get = |k: &str| raw(k).filter(|v| !v.is_empty());
        if let Some(v) = get("CIVICAST_MQTT_URL") {
            self.mqtt_url = Some(v);
        }
        if let Some(v) = get("CIVICAST_MQTT_LISTEN") {
            self.mqtt_listen = v;
        }
        if let Some(v) = get("CIVICAST_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = get("CIVICAST_HTTP_LISTEN") {
            self.http_listen = v;
        }
        if let Some(v) = get("CIVICAST_DEVICES") {
            self.devices = v.into();
        }
        if let Some(v) = get("CIVICAST_SCHEDULES") {
            self.schedules = v.into();
        }
        if let Some(v) = get("CIVICAST_PREFIX") {
            self.prefix = v;
        }
        if let Some(v) = get("CIVICAST_MQTT_CLIENT_ID") {
            self.mqtt_client_id = v;
        }
        if let Some(v) = get("CIVICAST_PLAY_TTL") {
            self.play_ttl =
                Some(
                    humantime::parse_duration(&v).map_err(|e| SettingsError::Bad {
                        name: "CIVICAST_PLAY_TTL",
                        value: v.clone(),
                        message: e.to_string(),
                    })?,
                );
        }
        if let Some(v) = get("CIVICAST_BATCH_MAX") {
            self.batch_max =
                v.parse()
                    .map_err(|e: std::num::ParseIntError| SettingsError::Bad {
                        name: "CIVICAST_BATCH_MAX",
                        value: v.clone(),
                        message: e.to_string(),
                    })?;
        }
        if let Some(v) = get("CIVICAST_RETENTION_DAYS") {
            self.retention_days =
                Some(
                    v.parse()
                        .map_err(|e: std::num::ParseIntError| SettingsError::Bad {
                            name: "CIVICAST_RETENTION_DAYS",
                            value: v.clone(),
                            message: e.to_string(),
                        })?,
                );
        }
        if let Some(v) = get("CIVICAST_BROKER_MAX_CONNECTIONS") {
            self.broker_max_connections =
                v.parse()
                    .map_err(|e: std::num::ParseIntError| SettingsError::Bad {
                        name: "CIVICAST_BROKER_MAX_CONNECTIONS",
                        value: v.clone(),
                        message: e.to_string(),
                    })?;
        }
        Ok(())
    }

    pub fn check(&self) -> Result<(), SettingsError> {
        let addr = |name: &'static str, v: &str| {
            v.parse::<SocketAddr>()
                .map(|_| ())
                .map_err(|e| SettingsError::Bad {
                    name,
                    value: v.to_owned(),
                    message: format!("{e} (want host:port, e.g. 127.0.0.1:1883)"),
                })
        };
        addr("CIVICAST_MQTT_LISTEN", &self.mqtt_listen)?;
        addr("CIVICAST_HTTP_LISTEN", &self.http_listen)?;
        if let Some(u) = &self.mqtt_url {
            MqttUrl::parse(u).map_err(|message| SettingsError::Bad {
                name: "CIVICAST_MQTT_URL",
                value: u.clone(),
                message,
            })?;
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return Err(SettingsError::Bad {
                name: "CIVICAST_DATABASE_URL",
                value: self.database_url.clone(),
                message: "want sqlite://PATH or postgres://...".into(),
            });
        }
        if self.batch_max == 0 {
            return Err(SettingsError::Bad {
                name: "CIVICAST_BATCH_MAX",
                value: "0".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// An external broker's address and credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttUrl {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
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
                Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
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

    #[test]
    fn environment_wins_over_defaults() {
        let mut s = Settings::default();
        s.overlay_env(|k| match k {
            "CIVICAST_DATABASE_URL" => Some("postgres://x/y".into()),
            "CIVICAST_MQTT_LISTEN" => Some("127.0.0.1:0".into()),
            _ => None,
        })
        .expect("env");
        assert_eq!(s.database_url, "postgres://x/y");
        assert_eq!(s.mqtt_listen, "127.0.0.1:0");
        assert!(s.check().is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        let s = Settings {
            http_listen: "localhost".into(),
            ..Settings::default()
        };
        let e = s.check().expect_err("bad").to_string();
        assert!(e.contains("CIVICAST_HTTP_LISTEN"), "{e}");
        let s = Settings {
            database_url: "mysql://x".into(),
            ..Settings::default()
        };
        assert!(s
            .check()
            .expect_err("bad")
            .to_string()
            .contains("CIVICAST_DATABASE_URL"));
    }

    #[test]
    fn mqtt_urls() {
        assert_eq!(
            MqttUrl::parse("mqtt://civicast:s3cret@127.0.0.1:1884"),
            Ok(MqttUrl {
                host: "127.0.0.1".into(),
                port: 1884,
                username: Some("civicast".into()),
                password: Some("s3cret".into())
            })
        );
        assert_eq!(MqttUrl::parse("mqtt://localhost").map(|u| u.port), Ok(1883));
        assert!(MqttUrl::parse("http://x").is_err());
        assert!(MqttUrl::parse("mqtt://h:notaport").is_err());
    }
}
