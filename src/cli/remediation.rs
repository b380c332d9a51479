//! `keyward remediation`: the approval-gated remediation workflow for people without the
//! dashboard, through the same service as the API. The actor is `cli:$USER`.

use std::io::Write;
use std::sync::Arc;

use super::{CliError, Exit, RemediationArgs, RemediationCommand, runtime};
use crate::clock::SystemClock;
use crate::metrics::Metrics;
use crate::remediation::{Proposal, RemediationError, RemediationService, SyncAfterApply};
use crate::store::RemediationRow;

/// The actor the CLI acts as: `cli:` and the login name.
pub fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_string());
    format!("cli:{user}")
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
        let who = actor();
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
