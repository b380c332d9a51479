//! `keyward token create|list|revoke`: API tokens, managed on the server's own database.

use std::io::Write;

use super::{CliError, Exit, TokenArgs, TokenCommand, runtime};
use crate::store::{NewAuditEvent, NewToken, StoreError};
use crate::web::auth::{Role, new_token_secret, token_hash};

/// Who the audit log names for changes made at the command line.
fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

/// Runs `keyward token …`.
pub fn run(args: &TokenArgs, out: &mut dyn Write) -> Result<Exit, CliError> {
    let config = runtime::load_config(args.config.as_deref())?;
    runtime::init_logging(config.log_format);
    let rt = runtime::runtime()?;
    rt.block_on(async {
        let store = runtime::open_store(&config).await?;
        let now = chrono::Utc::now();
        let store_err = |e: StoreError| match e {
            StoreError::Conflict(_) => {
                CliError::Usage("a token with that name exists already".into())
            }
            StoreError::NotFound(what) => CliError::Usage(format!("{what} does not exist")),
            other => CliError::Store(other.to_string()),
        };
        match &args.command {
            TokenCommand::Create { name, role } => {
                let role: Role = role.parse().map_err(CliError::Usage)?;
                if name.trim().is_empty() || name.len() > 100 {
                    return Err(CliError::Usage(
                        "a token name is 1 to 100 characters".into(),
                    ));
                }
                let secret = new_token_secret();
                let row = store
                    .create_token(&NewToken {
                        name: name.clone(),
                        role: role.as_str().to_string(),
                        sha256: token_hash(&secret),
                        created_at: now,
                    })
                    .await
                    .map_err(store_err)?;
                audit(
                    &*store,
                    "token.created",
                    &row.name,
                    serde_json::json!({ "role": row.role }),
                )
                .await?;
                writeln!(out, "{secret}")?;
                eprintln!(
                    "keyward: token {:?} ({}) created; it is shown only this once",
                    row.name, row.role
                );
            }
            TokenCommand::List => {
                for t in store.list_tokens().await.map_err(store_err)? {
                    let state = match t.revoked_at {
                        Some(at) => format!("revoked {}", at.to_rfc3339()),
                        None => "active".to_string(),
                    };
                    let used = t
                        .last_used_at
                        .map(|at| at.to_rfc3339())
                        .unwrap_or_else(|| "never".into());
                    writeln!(
                        out,
                        "{:<24} {:<9} created {}  last used {}  {}",
                        t.name,
                        t.role,
                        t.created_at.to_rfc3339(),
                        used,
                        state
                    )?;
                }
            }
            TokenCommand::Revoke { name } => {
                let row = store.revoke_token(name, now).await.map_err(store_err)?;
                audit(&*store, "token.revoked", &row.name, serde_json::json!({})).await?;
                writeln!(out, "token {:?} revoked", row.name)?;
            }
        }
        Ok(Exit::Clean)
    })
}

async fn audit(
    store: &dyn crate::store::Store,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), CliError> {
    store
        .append_audit(&NewAuditEvent {
            at: chrono::Utc::now(),
            actor: cli_actor(),
            action: action.to_string(),
            target: target.to_string(),
            detail: detail.to_string(),
        })
        .await
        .map(|_| ())
        .map_err(|e| CliError::Store(e.to_string()))
}
