//! `keyward remediation`: the approval-gated remediation workflow for people without the
//! dashboard, through the same service as the API. The subcommands that change something act
//! as an API token, with the API's roles, so the requester rule holds here as over HTTP.

use std::io::Write;
use std::sync::Arc;

use super::{CliError, Exit, RemediationArgs, RemediationCommand, runtime};
use crate::clock::{Clock, SystemClock};
use crate::metrics::Metrics;
use crate::remediation::{Proposal, RemediationError, RemediationService, SyncAfterApply};
use crate::store::{RemediationRow, Store};
use crate::web::auth::{Role, token_hash};

/// The environment variable read when `--token` is not given.
pub const TOKEN_ENV: &str = "KEYWARD_TOKEN";

/// The role a subcommand needs (the API endpoint's), and its name for messages; `None` for the
/// read-only ones, which need no token: whoever runs them can read the database anyway.
fn needed_role(command: &RemediationCommand) -> Option<(Role, &'static str)> {
    match command {
        RemediationCommand::List | RemediationCommand::Show { .. } => None,
        RemediationCommand::Propose { .. } => Some((Role::Operator, "remediation propose")),
        RemediationCommand::Approve { .. } => Some((Role::Approver, "remediation approve")),
        RemediationCommand::Reject { .. } => Some((Role::Approver, "remediation reject")),
        RemediationCommand::Apply { .. } => Some((Role::Approver, "remediation apply")),
    }
}

/// The name of the token `secret` if the store accepts it with at least `needed`: the actor,
/// exactly as the API would record it.
async fn authenticate(
    store: &dyn Store,
    secret: Option<&str>,
    needed: Role,
    command: &'static str,
) -> Result<String, CliError> {
    let secret = secret.map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| {
        CliError::Unauthenticated(format!(
            "`{command}` needs an API token with the {needed} role: pass --token or set {TOKEN_ENV} (create one with `keyward token create --name NAME --role {needed}`)"
        ))
    })?;
    let token = store
        .authenticate(&token_hash(secret), SystemClock.now())
        .await
        .map_err(|e| CliError::Store(e.to_string()))?
        .ok_or_else(|| {
            CliError::Unauthenticated(
                "the API token is not valid (unknown or revoked); check --token or KEYWARD_TOKEN"
                    .to_string(),
            )
        })?;
    let role: Role = token
        .role
        .parse()
        .map_err(|e: String| CliError::Store(format!("token {}: {e}", token.name)))?;
    if role < needed {
        return Err(CliError::RoleTooLow {
            name: token.name,
            has: role.to_string(),
            needed: needed.to_string(),
            command,
        });
    }
    Ok(token.name)
}

fn cli_error(e: RemediationError) -> CliError {
    match e {
        RemediationError::Aws(e) => CliError::Aws(e.to_string()),
        RemediationError::Store(e) => CliError::Store(e.to_string()),
        other => CliError::Usage(other.to_string()),
    }
}

/// Runs `keyward remediation`.
pub fn run(args: &RemediationArgs, out: &mut dyn Write) -> Result<Exit, CliError> {
    let config = runtime::load_config(args.config.as_deref())?;
    runtime::init_logging(config.log_format);
    let rt = runtime::runtime()?;
    rt.block_on(async {
        let store = runtime::open_store(&config).await?;
        // Before anything reaches AWS: a refused caller costs nothing.
        let who = match needed_role(&args.command) {
            None => String::new(),
            Some((needed, command)) => {
                let env = std::env::var(TOKEN_ENV).ok();
                let secret = args.token.as_deref().or(env.as_deref());
                authenticate(store.as_ref(), secret, needed, command).await?
            }
        };
        let metrics = Arc::new(Metrics::new());
        let (sync, connector) = runtime::sync_service(&config, store.clone(), metrics.clone());
        // Only an apply re-evaluates the key afterwards, which needs the accounts to sync.
        let after_apply: Option<Arc<dyn crate::remediation::AfterApply>> =
            if matches!(args.command, RemediationCommand::Apply { .. }) {
                let targets = runtime::targets(&config, connector.as_ref()).await?;
                Some(Arc::new(SyncAfterApply {
                    service: sync,
                    targets,
                }))
            } else {
                None
            };
        let service = RemediationService {
            store,
            connector: connector.clone(),
            writers: connector,
            clock: Arc::new(SystemClock),
            config: config.remediation.clone(),
            accounts: config.accounts.clone(),
            after_apply,
        };
        match &args.command {
            RemediationCommand::List => {
                let mut before = None;
                let mut rows = Vec::new();
                loop {
                    let (page, _) = service
                        .store
                        .list_remediations(before, 500)
                        .await
                        .map_err(|e| CliError::Store(e.to_string()))?;
                    let Some(last) = page.last() else { break };
                    before = Some(last.id);
                    rows.extend(page);
                }
                for r in &rows {
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{}",
                        r.id,
                        r.state,
                        r.key_arn,
                        r.requester,
                        r.ticket.as_deref().unwrap_or("-")
                    )?;
                }
                writeln!(out, "{} remediations", rows.len())?;
            }
            RemediationCommand::Show { id } => {
                let row = service.get(*id).await.map_err(cli_error)?;
                show(out, &row)?;
            }
            RemediationCommand::Propose {
                key,
                ticket,
                comment,
            } => {
                let (row, _) = service
                    .propose(
                        &Proposal {
                            key: key.clone(),
                            ticket: ticket.clone(),
                            comment: comment.clone(),
                            idempotency_key: None,
                        },
                        &who,
                    )
                    .await
                    .map_err(cli_error)?;
                show(out, &row)?;
            }
            RemediationCommand::Approve {
                id,
                comment,
                acknowledge_access_loss,
            } => {
                let row = service
                    .approve(*id, &who, comment.clone(), *acknowledge_access_loss)
                    .await
                    .map_err(cli_error)?;
                show(out, &row)?;
            }
            RemediationCommand::Reject { id, comment } => {
                let row = service
                    .reject(*id, &who, Some(comment.clone()))
                    .await
                    .map_err(cli_error)?;
                show(out, &row)?;
            }
            RemediationCommand::Apply { id } => {
                let row = service.apply(*id, &who).await.map_err(cli_error)?;
                show(out, &row)?;
                if row.state != crate::store::remediation_state::APPLIED {
                    return Ok(Exit::Findings);
                }
            }
        }
        Ok(Exit::Clean)
    })
}

/// A remediation for a person: a summary, then the proposed policy.
fn show(out: &mut dyn Write, r: &RemediationRow) -> Result<(), CliError> {
    writeln!(out, "remediation {}: {}", r.id, r.state)?;
    writeln!(out, "key:        {}", r.key_arn)?;
    writeln!(out, "requester:  {}", r.requester)?;
    if let Some(t) = &r.ticket {
        writeln!(out, "ticket:     {t}")?;
    }
    if let Some(c) = &r.comment {
        writeln!(out, "comment:    {c}")?;
    }
    let approvers: Vec<&str> = r.approvals.iter().map(|a| a.approver.as_str()).collect();
    writeln!(out, "approvals:  {}", approvers.join(", "))?;
    writeln!(out, "resolves:   {}", r.resolves.join(", "))?;
    writeln!(out, "remaining:  {}", r.remaining.join(", "))?;
    writeln!(out, "expires:    {}", r.expires_at.to_rfc3339())?;
    match &r.impact {
        None => writeln!(
            out,
            "impact:     unknown (no IAM inventory for the account yet)"
        )?,
        Some(impact) => {
            for (label, side) in [("loses:     ", "lose"), ("gains:     ", "gain")] {
                for change in impact[side].as_array().into_iter().flatten() {
                    let actions: Vec<&str> = change["actions"]
                        .as_object()
                        .into_iter()
                        .flat_map(|groups| groups.values())
                        .flat_map(|a| a.as_array().into_iter().flatten())
                        .filter_map(|a| a.as_str())
                        .collect();
                    writeln!(
                        out,
                        "{label} {} ({})",
                        change["principal"].as_str().unwrap_or("?"),
                        actions.join(", ")
                    )?;
                }
            }
        }
    }
    if let Some(e) = &r.error {
        writeln!(out, "error:      {e}")?;
    }
    writeln!(out, "proposed policy:")?;
    let pretty = serde_json::from_str::<serde_json::Value>(&r.proposed_policy)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| r.proposed_policy.clone());
    writeln!(out, "{pretty}")?;
    Ok(())
}
