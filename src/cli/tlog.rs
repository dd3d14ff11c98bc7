//! `civicast log keygen`, `civicast audit verify [BUNDLE]`, `civicast audit export` and
//! `civicast witness`: the receipt log's commands (src/receipt_log/).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::open_store;
use crate::receipt_log::{self, bundle, cosign, live};
use crate::settings::Settings;

#[derive(Subcommand, Debug)]
pub enum LogCmd {
    /// Write a new signing key (owner-only) and its verifier key beside it (FILE.pub);
    /// name it in the settings as log_key (CIVICAST_LOG_KEY). With --witness, a witness's
    /// cosignature key instead.
    Keygen {
        /// Where to write the key.
        #[arg(long, default_value = "civicast-log.key")]
        out: PathBuf,
        /// The log's origin (its checkpoints' first line), or the witness's name.
        #[arg(long, default_value = "civicast.local/receipts")]
        name: String,
        /// A witness key (cosignature/v1) instead of the log's.
        #[arg(long)]
        witness: bool,
    },
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// A bundle written by `audit export`: checked offline. Without it, the live database.
    pub bundle: Option<PathBuf>,
    /// The log's verifier key (text or a file holding it): needed for a bundle; with the
    /// live database, the newest checkpoint's signature is checked too.
    #[arg(long)]
    pub key: Option<String>,
    /// A witness's verifier key: its cosignature must be on the bundle's checkpoint.
    #[arg(long)]
    pub witness: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Start of the period (RFC 3339 or a date), on the receipts' start times.
    #[arg(long)]
    pub from: String,
    /// End of the period (exclusive).
    #[arg(long)]
    pub to: String,
    #[arg(long)]
    pub class: Option<String>,
    /// The operating company (the devices' `operator` column).
    #[arg(long)]
    pub company: Option<String>,
    #[arg(long)]
    pub device: Option<String>,
    /// Where to write the bundle.
    #[arg(long)]
    pub output: PathBuf,
}

#[derive(Args, Debug)]
pub struct WitnessArgs {
    /// The daemon's HTTP address (http://host:port).
    #[arg(long)]
    pub log: String,
    /// The log's verifier key (text or file).
    #[arg(long)]
    pub log_key: String,
    /// The witness's own key (`civicast log keygen --witness`).
    #[arg(long)]
    pub key: PathBuf,
    /// The witness's state: the last checkpoint it cosigned.
    #[arg(long)]
    pub state: PathBuf,
    /// Where the cosigned checkpoint is written.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Also store the cosignature in the log's database (CIVICAST_DATABASE_URL), where
    /// `audit export` puts it in bundles.
    #[arg(long)]
    pub store: bool,
}

pub fn log(cmd: LogCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        LogCmd::Keygen { out, name, witness } => {
            let vkey = if witness {
                cosign::witness_keygen(&out, &name)?
            } else {
                receipt_log::keygen(&out, &name)?
            };
            eprintln!(
                "wrote {} (secret) and {}",
                out.display(),
                receipt_log::pub_path(&out).display()
            );
            println!("{vkey}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn verify(settings: &Settings, a: VerifyArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = &a.bundle {
        let Some(key) = &a.key else {
            bail!("--key: a bundle is checked against the log's verifier key");
        };
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let out = bundle::verify_bundle(&text, key, &a.witness)?;
        for p in &out.problems {
            println!("FAIL {p}");
        }
        println!(
            "bundle {}: {} receipts in {} leaves checked, checkpoint at size {}; {} problems",
            path.display(),
            out.receipts,
            out.leaves,
            out.tree_size,
            out.problems.len()
        );
        return Ok(if out.problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let key = a
        .key
        .as_deref()
        .map(receipt_log::load_verifier)
        .transpose()?;
    let db = open_store(settings).await?;
    let out = live::verify_live(&db, key.as_ref()).await?;
    for f in &out.findings {
        println!("FAIL {f}");
    }
    for p in &out.tree_problems {
        println!("FAIL tree: {p}");
    }
    println!(
        "log: {} leaves, {} receipts valid, {} pruned by retention, {} stored before the log began, checkpoint at size {}; {} problems",
        out.leaves,
        out.valid,
        out.pruned,
        out.before_log,
        out.checkpoint_size
            .map_or("none".to_owned(), |s| s.to_string()),
        out.findings.len() + out.tree_problems.len()
    );
    Ok(if out.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn export(settings: &Settings, a: ExportArgs) -> anyhow::Result<ExitCode> {
    let db = open_store(settings).await?;
    let catalog = crate::files::load_dirs(&settings.devices, &settings.schedules).catalog;
    let tz = catalog
        .as_ref()
        .map_or(chrono_tz::Asia::Shanghai, |c| c.timezone);
    let bound = |field, s: &str| {
        crate::core::audit::parse_bound(field, s, tz)
            .map(|t| t.timestamp_millis())
            .map_err(|e| anyhow::anyhow!("--{field}: {}", e.message))
    };
    let filter = bundle::Filter {
        from_ms: bound("from", &a.from)?,
        to_ms: bound("to", &a.to)?,
        class: a.class,
        company: a.company,
        device: a.device,
    };
    let devices = catalog.map(|c| c.devices).unwrap_or_default();
    let Some(key) = &settings.log_key else {
        bail!("audit export signs the bundle with the log's key: set log_key (CIVICAST_LOG_KEY)");
    };
    let signer = receipt_log::load_signer(key)?;
    let mut b = bundle::export(&db, &filter, &devices).await?;
    bundle::sign(&mut b, &signer)?;
    let text = bundle::to_bytes(&b)?;
    std::fs::write(&a.output, &text).with_context(|| format!("writing {}", a.output.display()))?;
    println!(
        "wrote {}: {} receipts in {} leaves, checkpoint at size {}",
        a.output.display(),
        b.receipts.len(),
        b.leaves.len(),
        b.tree_size
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn witness(settings: &Settings, a: WitnessArgs) -> anyhow::Result<ExitCode> {
    match crate::receipt_log::witness::run(&a.log, &a.log_key, &a.key, &a.state).await {
        Ok(w) => {
            if a.store {
                let db = open_store(settings).await?;
                db.store_cosignature(w.size, &w.name, &w.line).await?;
            }
            if let Some(out) = &a.output {
                std::fs::write(out, &w.cosigned)
                    .with_context(|| format!("writing {}", out.display()))?;
            }
            println!("{}", w.summary);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("civicast witness: REFUSED: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}
