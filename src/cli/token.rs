//! `civicast token create|list|revoke`: API tokens; only their SHA-256 is stored.
//!
//! Owns: what is printed (the token once, on the last line). Must not store a token itself
//! in clear: the store keeps its hash.

use std::process::ExitCode;

use clap::Subcommand;

use super::open_store;
use crate::settings::Settings;
use crate::store::{ApiStore, Db};

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token; it is printed once, as the last line.
    Create {
        #[arg(long)]
        role: String,
        /// Who holds it (approvals are by a different name than the upload's).
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (never the tokens themselves).
    List,
    /// Revoke a token by id or name.
    Revoke { id_or_name: String },
}

pub async fn run(settings: &Settings, cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    let store = open_store(settings).await?;
    token_with(store, cmd).await
}

async fn token_with(store: Db, cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    use crate::store::Role;
    let now = chrono::Utc::now().timestamp_millis();
    match cmd {
        TokenCmd::Create { role, name } => {
            let Some(r) = Role::parse(&role) else {
                eprintln!("civicast: --role {role:?}: use operator, auditor or admin");
                return Ok(ExitCode::from(2));
            };
            let token = crate::api::new_token();
            let name = name.unwrap_or_else(|| format!("{}-{}", r.as_str(), &token[4..10]));
            let id = store
                .create_token(&name, r, &crate::api::token_hash(&token), now)
                .await?;
            println!(
                "token {id} for {name:?}, role {}: keep it secret, it is not shown again",
                r.as_str()
            );
            println!("{token}");
        }
        TokenCmd::List => {
            for t in store.tokens().await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    t.id,
                    t.name,
                    t.role.as_str(),
                    if t.revoked_ms.is_some() {
                        "revoked"
                    } else {
                        "live"
                    }
                );
            }
        }
        TokenCmd::Revoke { id_or_name } => {
            let n = store.revoke_token(&id_or_name, now).await?;
            if n == 0 {
                eprintln!("civicast: no live token {id_or_name:?}");
                return Ok(ExitCode::from(1));
            }
            println!("revoked {n} token(s)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
