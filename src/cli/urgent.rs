//! `civicast urgent send|approve|cancel|list`: urgent messages through the running daemon's
//! HTTP API (it holds the MQTT session that publishes them), with the caller's API token, so
//! the four-eyes rule and the roles are exactly the API's.
//!
//! Owns: the flags, what is printed, and a minimal HTTP/1.1 client for a plain `http://`
//! address (the daemon's listener; no TLS). Must not decide anything the API decides.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::settings::Settings;

/// How long a call may take, end to end.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
pub struct UrgentArgs {
    /// The daemon's HTTP API (default: http:// and CIVICAST_HTTP_LISTEN).
    #[arg(long, env = "CIVICAST_API", global = true)]
    pub api: Option<String>,
    /// An API token: an admin's sends at once, an operator's asks for a second operator.
    #[arg(long, env = "CIVICAST_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub cmd: UrgentCmd,
}

#[derive(Subcommand, Debug)]
pub enum UrgentCmd {
    /// Send one text now to feeds and/or displays (an operator's waits for approval).
    Send {
        /// The text, checked against every display class it reaches.
        #[arg(long)]
        text: String,
        /// A feed: every display of it (repeat for more).
        #[arg(long = "feed")]
        feeds: Vec<String>,
        /// A display (repeat for more).
        #[arg(long = "device")]
        devices: Vec<String>,
        /// When it ends: a duration from now (`30m`, `2h`) or an RFC 3339 time.
        #[arg(long)]
        expires: String,
    },
    /// Approve another operator's request: it is published at once.
    Approve { id: String },
    /// Withdraw a pending request, or end a published message early (the rotation resumes).
    Cancel { id: String },
    /// Every urgent message with its status.
    List {
        /// Print the API's JSON as is.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(settings: &Settings, a: UrgentArgs) -> anyhow::Result<ExitCode> {
    let api = a
        .api
        .clone()
        .unwrap_or_else(|| format!("http://{}", settings.http_listen));
    let Some(token) = a.token.as_deref() else {
        eprintln!("civicast: an API token is needed: --token or CIVICAST_TOKEN (`civicast token create --role operator`)");
        return Ok(ExitCode::from(2));
    };
    let (status, body) = match &a.cmd {
        UrgentCmd::Send {
            text,
            feeds,
            devices,
            expires,
        } => {
            let mut b = json!({"text": text, "feeds": feeds, "devices": devices});
            if chrono::DateTime::parse_from_rfc3339(expires.trim()).is_ok() {
                b["expires_at"] = json!(expires.trim());
            } else {
                b["expires_in"] = json!(expires);
            }
            call(&api, "POST", "/api/v1/urgent", token, Some(&b)).await?
        }
        UrgentCmd::Approve { id } => {
            let path = format!("/api/v1/urgent/{id}/approve");
            call(&api, "POST", &path, token, None).await?
        }
        UrgentCmd::Cancel { id } => {
            let path = format!("/api/v1/urgent/{id}/cancel");
            call(&api, "POST", &path, token, None).await?
        }
        UrgentCmd::List { .. } => call(&api, "GET", "/api/v1/urgent", token, None).await?,
    };
    if !(200..300).contains(&status) {
        print_error(status, &body);
        return Ok(ExitCode::FAILURE);
    }
    match &a.cmd {
        UrgentCmd::List { json: true } => println!("{body:#}"),
        UrgentCmd::List { json: false } => print_list(&body),
        _ => print_one(&body),
    }
    Ok(ExitCode::SUCCESS)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

pub(super) fn print_error(status: u16, body: &Value) {
    eprintln!("civicast: {status}: {}", s(&body["error"]));
    for d in body["details"].as_array().into_iter().flatten() {
        eprintln!("  {}: {}", s(&d["field"]), s(&d["message"]));
    }
}

fn print_one(m: &Value) {
    match s(&m["status"]) {
        "pending" => println!(
            "urgent message {} requested by {}: pending until another operator approves it (civicast urgent approve {})",
            s(&m["id"]),
            s(&m["requested_by"]),
            s(&m["id"])
        ),
        "published" if m["displays"].is_u64() => println!(
            "urgent message {} published to {} displays, until {}",
            s(&m["id"]),
            m["displays"],
            s(&m["expires_at"])
        ),
        other => println!("urgent message {} {other}", s(&m["id"])),
    }
}

fn print_list(body: &Value) {
    println!("id\tstatus\texpires_at\trequested_by\tapproved_by\ttargets\ttext");
    for m in body["rows"].as_array().into_iter().flatten() {
        let names = |k: &str| -> Vec<String> {
            m[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(|x| format!("{}:{x}", &k[..k.len() - 1])))
                .collect()
        };
        let mut targets = names("feeds");
        targets.extend(names("devices"));
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            s(&m["id"]),
            s(&m["status"]),
            s(&m["expires_at"]),
            s(&m["requested_by"]),
            s(&m["approved_by"]),
            targets.join(","),
            s(&m["text"])
        );
    }
}

/// One request to `api` (`http://host:port`); the status and the JSON answer.
pub async fn call(
    api: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    call_raw(
        api,
        method,
        path,
        token,
        "application/json",
        payload.as_bytes(),
    )
    .await
}

/// [`call`] with a body of any type (a photo).
pub async fn call_raw(
    api: &str,
    method: &str,
    path: &str,
    token: &str,
    content_type: &str,
    payload: &[u8],
) -> anyhow::Result<(u16, Value)> {
    let Some(rest) = api.strip_prefix("http://") else {
        bail!(
            "--api {api:?}: give the daemon's plain http:// address (e.g. http://127.0.0.1:8080)"
        );
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(payload);
    let raw = tokio::time::timeout(CALL_TIMEOUT, async {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(&request).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .with_context(|| {
        format!(
            "the API at {api} did not answer within {} s",
            CALL_TIMEOUT.as_secs()
        )
    })?
    .with_context(|| format!("calling the API at {api}: is `civicast serve` running there?"))?;
    parse_response(&raw).with_context(|| format!("reading the answer of {api}{path}"))
}

/// Status and JSON body of an HTTP/1.1 answer read to its end (length-delimited, chunked,
/// or closed).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Value)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    let v = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).context("the answer is not JSON")?
    };
    Ok((status, v))
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk without its size line")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).context("a chunk size that is not hex")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("a chunk cut short");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_whether_sized_or_chunked() {
        let sized =
            b"HTTP/1.1 422 Unprocessable Entity\r\ncontent-length: 13\r\n\r\n{\"error\":\"x\"}";
        let (code, v) = parse_response(sized).expect("sized");
        assert_eq!((code, v["error"].as_str()), (422, Some("x")));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n";
        let (code, v) = parse_response(chunked).expect("chunked");
        assert_eq!((code, v["a"].as_i64()), (200, Some(1)));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\nnot json").is_err());
    }
}
