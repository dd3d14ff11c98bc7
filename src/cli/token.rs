//! `civicast token create|list|revoke`: API tokens; only their SHA-256 is stored.
//!
//! Owns: what is printed (the token once, on the last line). Must not store a token itself
//! in clear: the store keeps its hash.

use std::process::ExitCode;

use clap::Subcommand;

use super::open_store;
use crate::settings::Settings;
use crate::store::{ApiStore, Db, InspectStore, TokenRow};

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token; it is printed once, as the last line.
    Create {
        #[arg(long)]
        role: String,
        /// Who holds it (approvals are by a different name than the upload's).
        #[arg(long)]
        name: Option<String>,
        /// The operating company a `company` token answers for (as the unit lists name it).
        #[arg(long)]
        company: Option<String>,
    },
    /// List tokens (never the tokens themselves).
    List,
    /// Revoke one token: `--id N`, `--name NAME`, or one argument that is either (refused
    /// when it is the id of one token and the name of another).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id_or_name", "id", "name"])))]
    Revoke {
        id_or_name: Option<String>,
        #[arg(long)]
        id: Option<i64>,
        #[arg(long)]
        name: Option<String>,
    },
}

pub async fn run(settings: &Settings, cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    let store = open_store(settings).await?;
    token_with(store, cmd).await
}

async fn token_with(store: Db, cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    use crate::store::Role;
    let now = chrono::Utc::now().timestamp_millis();
    match cmd {
        TokenCmd::Create {
            role,
            name,
            company,
        } => {
            let Some(r) = Role::parse(&role) else {
                eprintln!(
                    "civicast: --role {role:?}: use operator, auditor, admin, inspector or company"
                );
                return Ok(ExitCode::from(2));
            };
            let company = company.map(|c| c.trim().to_owned());
            match (r, &company) {
                (Role::Company, None) => {
                    eprintln!("civicast: --role company needs --company NAME, the operating company it answers for");
                    return Ok(ExitCode::from(2));
                }
                (Role::Company, Some(c)) if c.is_empty() => {
                    eprintln!("civicast: --company: give the company's name");
                    return Ok(ExitCode::from(2));
                }
                (Role::Company, _) => {}
                (_, Some(_)) => {
                    eprintln!("civicast: --company is for --role company only");
                    return Ok(ExitCode::from(2));
                }
                (_, None) => {}
            }
            let token = crate::api::new_token();
            let name = name.unwrap_or_else(|| format!("{}-{}", r.as_str(), &token[4..10]));
            // Names are unique (revoked tokens' too): approvals tell people apart by them.
            if store.tokens().await?.iter().any(|t| t.name == name) {
                eprintln!(
                    "civicast: --name {name:?}: a token of that name exists already (see `civicast token list`); choose another name"
                );
                return Ok(ExitCode::from(2));
            }
            let hash = crate::api::token_hash(&token);
            let id = match &company {
                Some(c) => store.create_company_token(&name, &hash, c, now).await?,
                None => store.create_token(&name, r, &hash, now).await?,
            };
            let of = company
                .map(|c| format!(" of company {c:?}"))
                .unwrap_or_default();
            println!(
                "token {id} for {name:?}, role {}{of}: keep it secret, it is not shown again",
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
        TokenCmd::Revoke {
            id_or_name,
            id,
            name,
        } => {
            let tokens = store.tokens().await?;
            let target = match which_token(&tokens, id_or_name.as_deref(), id, name.as_deref()) {
                Ok(t) => t,
                Err(message) => {
                    eprintln!("civicast: {message}");
                    return Ok(ExitCode::from(1));
                }
            };
            if !store.revoke_token(target.id, now).await? {
                eprintln!(
                    "civicast: token {} ({:?}) is already revoked",
                    target.id, target.name
                );
                return Ok(ExitCode::from(1));
            }
            println!("revoked token {} ({:?})", target.id, target.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The one token that `revoke` names: by `--id`, by `--name`, or by one argument that is
/// an id or a name but not both of two different tokens.
fn which_token<'t>(
    tokens: &'t [TokenRow],
    id_or_name: Option<&str>,
    id: Option<i64>,
    name: Option<&str>,
) -> Result<&'t TokenRow, String> {
    let by_id = |n: i64| tokens.iter().find(|t| t.id == n);
    let by_name = |s: &str| tokens.iter().find(|t| t.name == s);
    if let Some(n) = id {
        return by_id(n).ok_or_else(|| format!("--id {n}: no token has that id"));
    }
    if let Some(s) = name {
        return by_name(s).ok_or_else(|| format!("--name {s:?}: no token has that name"));
    }
    let arg = id_or_name.unwrap_or_default();
    let as_id = arg.parse::<i64>().ok().and_then(by_id);
    match (as_id, by_name(arg)) {
        (Some(a), Some(b)) if a.id != b.id => Err(format!(
            "{arg:?} is the id of token {:?} and the name of token {}: say --id {arg} or --name {arg}",
            a.name, b.id
        )),
        (Some(t), _) | (None, Some(t)) => Ok(t),
        (None, None) => Err(format!("{arg:?}: no token has that id or name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Role;

    fn token(id: i64, name: &str) -> TokenRow {
        TokenRow {
            id,
            name: name.to_owned(),
            role: Role::Operator,
            created_ms: 0,
            revoked_ms: None,
        }
    }

    #[test]
    fn revoke_names_one_token_and_refuses_an_argument_that_names_two() {
        let tokens = [token(7, "alice"), token(8, "7"), token(9, "9")];
        let pick = |a: Option<&str>, id, name| which_token(&tokens, a, id, name).map(|t| t.id);
        assert_eq!(pick(Some("alice"), None, None), Ok(7));
        // "9" is token 9's id and its own name: one token, no doubt.
        assert_eq!(pick(Some("9"), None, None), Ok(9));
        let err = pick(Some("7"), None, None).expect_err("7 is an id and another's name");
        assert!(err.contains("--id 7") && err.contains("--name 7"), "{err}");
        assert_eq!(pick(None, Some(7), None), Ok(7));
        assert_eq!(pick(None, None, Some("7")), Ok(8));
        assert!(pick(Some("nobody"), None, None).is_err());
        assert!(pick(None, Some(70), None).is_err());
    }
}
