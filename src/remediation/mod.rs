//! Approval-gated remediation: propose the engine's fix for one key, approve it (never by the
//! requester), apply it with PutKeyPolicy exactly once, verify it, roll it back through the same
//! gate. Every state change is one store transaction with its audit and outbox events.

use async_trait::async_trait;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::aws::{AccountAccess, AwsError, KmsConnector, KmsSource, KmsWriter, SdkConnector};
use crate::clock::Clock;
use crate::config::{AccountConfig, RemediationConfig, RemediationMode};
use crate::policy::Policy;
use crate::policy::diff::diff;
use crate::policy::fix::{FixContext, FixOutcome, RefusalKind, check_caller_keeps_access, fix};
use crate::policy::matching::session_to_role_arn;
use crate::policy::rules::{EvalContext, KeyManager, evaluate_policy};
use crate::store::{
    ApplyResult, ApprovalRow, KeyRow, NewAuditEvent, NewRemediation, RemediationRow, Store,
    StoreError,
};

/// How long a claim to apply is honoured before crash recovery may settle its row (by reading
/// the key policy, never by writing it). It must outlast any live apply, or recovery would
/// settle a row another replica or a `keyward remediation apply` process is still applying:
/// PutKeyPolicy starts within [`PUT_DEADLINE`] of the claim or not at all, and it and the
/// verifying read are each bounded by the SDK's 180 s operation timeout, so a live apply ends
/// within 11 minutes of its claim.
pub const CLAIM_LEASE: Duration = Duration::from_secs(15 * 60);

/// An apply that has not reached PutKeyPolicy this long after its claim gives up, writing
/// nothing (back to `approved`): it keeps every write well inside [`CLAIM_LEASE`].
pub const PUT_DEADLINE: Duration = Duration::from_secs(5 * 60);

/// A name for one claim: this process and a nonce, so that not even a later claim of the same
/// process can finish an apply it did not start.
fn new_claimant() -> String {
    format!(
        "{}/{:016x}",
        crate::instance::instance_name(),
        rand::random::<u64>()
    )
}

/// Opens PutKeyPolicy writers per account·region.
#[async_trait]
pub trait KmsWriters: Send + Sync {
    async fn writer(
        &self,
        access: &AccountAccess,
        region: &str,
    ) -> Result<Arc<dyn KmsWriter>, AwsError>;
}

#[async_trait]
impl KmsWriters for SdkConnector {
    async fn writer(
        &self,
        access: &AccountAccess,
        region: &str,
    ) -> Result<Arc<dyn KmsWriter>, AwsError> {
        SdkConnector::writer(self, access, region).await
    }
}

/// Called after a policy was written, to re-evaluate the key's account at once.
#[async_trait]
pub trait AfterApply: Send + Sync {
    async fn reevaluate(&self, account_id: &str);
}

/// Re-evaluates through a sync pass of the account (its findings are reconciled at once).
pub struct SyncAfterApply {
    pub service: Arc<crate::sync::SyncService>,
    pub targets: Vec<crate::sync::Target>,
}

#[async_trait]
impl AfterApply for SyncAfterApply {
    async fn reevaluate(&self, account_id: &str) {
        if let Err(e) = self
            .service
            .run_pass(&self.targets, Some(account_id), crate::sync::Due::Always)
            .await
        {
            tracing::warn!(error = %e, account = account_id, "re-evaluation after apply failed");
        }
    }
}

/// Why a remediation request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum RemediationError {
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be carried out as asked (AWS-managed key, nothing to fix, engine
    /// refusal, apply disabled); the message says what to do.
    #[error("{0}")]
    Refused(String),
    /// Not allowed for this caller (e.g. approving one's own proposal).
    #[error("{0}")]
    Forbidden(String),
    /// The remediation is not in a state that allows the request.
    #[error("{0}")]
    Conflict(String),
    #[error("AWS: {0}")]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RemediationError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(format!("{what} does not exist")),
            StoreError::Conflict(what) => Self::Conflict(what),
            other => Self::Store(other),
        }
    }
}

pub type RemediationResult<T> = Result<T, RemediationError>;

/// What a proposal asks for.
#[derive(Debug, Clone, Default)]
pub struct Proposal {
    /// Key id or ARN.
    pub key: String,
    pub ticket: Option<String>,
    pub comment: Option<String>,
    pub idempotency_key: Option<String>,
}

/// The remediation service, shared by the API (and later the CLI).
#[derive(Clone)]
pub struct RemediationService {
    pub store: Arc<dyn Store>,
    pub connector: Arc<dyn KmsConnector>,
    pub writers: Arc<dyn KmsWriters>,
    pub clock: Arc<dyn Clock>,
    pub config: RemediationConfig,
    pub accounts: Vec<AccountConfig>,
    pub after_apply: Option<Arc<dyn AfterApply>>,
}

fn audit(
    at: chrono::DateTime<chrono::Utc>,
    actor: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> NewAuditEvent {
    NewAuditEvent {
        at,
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        detail: detail.to_string(),
    }
}

/// Rule ids `policy` raises for a customer-managed key of `account`.
fn rule_ids(policy: &Policy, account: &str, trusted: &[String]) -> BTreeSet<String> {
    evaluate_policy(
        policy,
        &EvalContext {
            account_id: account,
            key_manager: KeyManager::Customer,
            trusted_accounts: trusted,
        },
    )
    .into_iter()
    .map(|f| f.rule_id.as_str().to_string())
    .collect()
}

/// Principals the stored impact says would lose a cryptographic action.
fn losing_cryptographic_access(r: &RemediationRow) -> Vec<String> {
    r.impact
        .as_ref()
        .and_then(|i| i.get("loses_cryptographic"))
        .and_then(|l| l.as_array())
        .map(|l| {
            l.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// SHA-256 (lower-case hex) of a policy text, as the sync stores it.
fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Whether two policy texts are the same policy: equal JSON once the forms AWS treats alike are
/// made one (a single string and a one-element list, the order and repetition of values in
/// Action, Resource, Principal families and condition values, a lone statement object and a
/// one-statement list; key order never counts). KMS may return a policy re-serialised, so raw
/// text or raw JSON equality would call an applied proposal failed.
pub fn same_policy(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => canonical_policy(a) == canonical_policy(b),
        _ => false,
    }
}

/// A string-or-list value as a sorted list without repeats; anything else unchanged.
fn value_set(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(_) => Value::Array(vec![v]),
        Value::Array(items) => {
            let mut items: Vec<(String, Value)> =
                items.into_iter().map(|i| (i.to_string(), i)).collect();
            items.sort_by(|x, y| x.0.cmp(&y.0));
            items.dedup_by(|x, y| x.0 == y.0);
            Value::Array(items.into_iter().map(|(_, i)| i).collect())
        }
        other => other,
    }
}

/// One statement with its set-valued fields in [`value_set`] form.
fn canonical_statement(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let Value::Object(map) = v else { return v };
    Value::Object(
        map.into_iter()
            .map(|(k, v)| {
                let v = match (k.as_str(), v) {
                    ("Action" | "NotAction" | "Resource" | "NotResource", v) => value_set(v),
                    ("Principal" | "NotPrincipal", Value::Object(families)) => Value::Object(
                        families
                            .into_iter()
                            .map(|(f, v)| (f, value_set(v)))
                            .collect(),
                    ),
                    ("Condition", Value::Object(operators)) => Value::Object(
                        operators
                            .into_iter()
                            .map(|(op, keys)| match keys {
                                Value::Object(keys) => (
                                    op,
                                    Value::Object(
                                        keys.into_iter().map(|(k, v)| (k, value_set(v))).collect(),
                                    ),
                                ),
                                other => (op, other),
                            })
                            .collect(),
                    ),
                    (_, v) => v,
                };
                (k, v)
            })
            .collect(),
    )
}

/// A policy document in the form [`same_policy`] compares (statement order is kept: it is what
/// the key shows and what a diff reports).
fn canonical_policy(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let Value::Object(map) = v else { return v };
    Value::Object(
        map.into_iter()
            .map(|(k, v)| {
                let v = match (k.as_str(), v) {
                    ("Statement", Value::Object(one)) => {
                        Value::Array(vec![canonical_statement(Value::Object(one))])
                    }
                    ("Statement", Value::Array(list)) => {
                        Value::Array(list.into_iter().map(canonical_statement).collect())
                    }
                    (_, v) => v,
                };
                (k, v)
            })
            .collect(),
    )
}

/// What to change after the engine refused a fix, by the kind of refusal.
fn refusal_hint(kind: RefusalKind, account: &str) -> String {
    match kind {
        RefusalKind::NoAdministrator => format!(
            "Configure key_admins (IAM roles or users that administer keys) for account {account} in the [[accounts]] entry of keyward.toml, then propose again"
        ),
        RefusalKind::InvalidAdministrator => format!(
            "Correct key_admins for account {account} in keyward.toml: every entry must be an IAM role or user ARN of that account"
        ),
        RefusalKind::Auditor => format!(
            "Check auditor for account {account} in keyward.toml: it must be the IAM role Keyward reads keys with"
        ),
        RefusalKind::Caller => format!(
            "Configure remediator for account {account} in keyward.toml (the IAM role Keyward applies policies as), or name that role in the key policy with kms:PutKeyPolicy"
        ),
        RefusalKind::TooLarge => "The policy is too large: shorten it (merge statements, drop unused principals) so the fix fits, then propose again".to_string(),
        RefusalKind::Other => "Nothing in keyward.toml changes this; review the key policy".to_string(),
    }
}

/// An AWS error while proposing, for the caller: a missing permission or a vanished key is
/// not a transient outage (403 stays reserved for the caller's own role, so a denial is a
/// refusal: 422). Throttling and transport errors stay [`RemediationError::Aws`] (503).
fn propose_aws_error(e: AwsError, key_arn: &str, account: &AccountConfig) -> RemediationError {
    match e {
        AwsError::AccessDenied { operation, message } => {
            let who = account.role_arn.as_deref().map_or_else(
                || "Keyward's default credentials".to_string(),
                |r| format!("the role {r}"),
            );
            let permission = match operation {
                "GetCallerIdentity" | "AssumeRole" => format!(
                    "sts:AssumeRole on the account's role_arn (and its external_id), so that the credentials act in account {}",
                    account.id
                ),
                op => format!("kms:{op} on {key_arn}"),
            };
            RemediationError::Refused(format!(
                "AWS denied {operation} to {who}: {message}. Grant {permission} (in its IAM policy and the key policy), then propose again"
            ))
        }
        AwsError::NotFound { operation, message } => RemediationError::NotFound(format!(
            "{key_arn} was not found in AWS ({operation}: {message}); it may have been deleted. Run a sync"
        )),
        other => RemediationError::Aws(other),
    }
}

impl RemediationService {
    /// The account as configured; `None` when it is no longer in the configuration. Writing
    /// or reconciling then refuses rather than falling back to the default credentials, which
    /// may reach another account, or the same one as another principal.
    fn configured_account(&self, id: &str) -> Option<AccountConfig> {
        self.accounts.iter().find(|a| a.id == id).cloned()
    }

    /// The account as configured, or only its id (default credentials) for reads.
    fn account(&self, id: &str) -> AccountConfig {
        self.configured_account(id)
            .unwrap_or_else(|| AccountConfig {
                id: id.to_string(),
                ..AccountConfig::default()
            })
    }

    fn access(account: &AccountConfig) -> AccountAccess {
        AccountAccess {
            account_id: account.id.clone(),
            role_arn: account.role_arn.clone(),
            external_id: account.external_id.clone(),
        }
    }

    /// The principal PutKeyPolicy runs as: `remediator` when configured, else the role of the
    /// credentials' STS identity.
    async fn applier(&self, account: &AccountConfig, region: &str) -> RemediationResult<String> {
        if let Some(r) = &account.remediator {
            return Ok(r.clone());
        }
        let arn = self
            .connector
            .caller_arn(&Self::access(account), region)
            .await?;
        Ok(session_to_role_arn(&arn))
    }

    async fn key(&self, key: &str) -> RemediationResult<KeyRow> {
        let mut keys = self.store.find_keys(key).await?;
        match keys.len() {
            0 => Err(RemediationError::NotFound(format!(
                "key {key} is not known; run a sync first"
            ))),
            1 => Ok(keys.remove(0)),
            _ => Err(RemediationError::Conflict(format!(
                "{key} names several keys; use the key ARN"
            ))),
        }
    }

    async fn source(&self, row: &KeyRow) -> RemediationResult<Arc<dyn KmsSource>> {
        let account = self.account(&row.key.account_id);
        Ok(self
            .connector
            .source(&Self::access(&account), &row.key.region)
            .await?)
    }

    /// Proposes the engine's fix for a key, read fresh from AWS. A proposal already stored
    /// under the idempotency key is returned (with `false`) before AWS is asked anything, so a
    /// retry after that proposal was applied still gets it rather than "nothing to fix".
    pub async fn propose(
        &self,
        proposal: &Proposal,
        requester: &str,
    ) -> RemediationResult<(RemediationRow, bool)> {
        if let Some(existing) = self.idempotent_replay(proposal).await? {
            return Ok((existing, false));
        }
        let row = self.key(&proposal.key).await?;
        let account = self.account(&row.key.account_id);
        let aws = |e: AwsError| propose_aws_error(e, &row.key.arn, &account);
        let source = self.source(&row).await.map_err(|e| match e {
            RemediationError::Aws(e) => aws(e),
            other => other,
        })?;
        let meta = source.describe_key(&row.key.key_id).await.map_err(aws)?;
        if meta.key_manager == "AWS" {
            return Err(RemediationError::Refused(format!(
                "{} is an AWS-managed key: AWS owns its policy, which cannot be changed",
                row.key.arn
            )));
        }
        if meta.key_state == "PendingDeletion" || meta.deletion_date.is_some() {
            return Err(RemediationError::Refused(format!(
                "{} is pending deletion; cancel the deletion before remediating it",
                row.key.arn
            )));
        }
        let text = source.get_key_policy(&row.key.key_id).await.map_err(aws)?;
        let policy = Policy::parse(&text).map_err(|e| {
            RemediationError::Refused(format!("the key policy cannot be read: {}", e.reason))
        })?;
        let applier = self
            .applier(&account, &row.key.region)
            .await
            .map_err(|e| match e {
                RemediationError::Aws(e) => aws(e),
                other => other,
            })?;
        let outcome = fix(
            &policy,
            &FixContext {
                account_id: &row.key.account_id,
                key_admins: &account.key_admins,
                auditor: account.auditor.as_deref(),
                caller: Some(&applier),
            },
        )
        .map_err(|r| {
            RemediationError::Refused(format!(
                "the fix was refused: {}. {}",
                r.reason,
                refusal_hint(r.kind, &row.key.account_id)
            ))
        })?;
        let fixed = match outcome {
            FixOutcome::Unchanged => {
                return Err(RemediationError::Refused(format!(
                    "nothing to fix: the policy of {} already prevents IAM delegation",
                    row.key.arn
                )));
            }
            FixOutcome::Fixed(fixed) => fixed,
        };
        check_caller_keeps_access(&fixed.policy, &row.key.account_id, &applier)
            .map_err(|r| RemediationError::Refused(r.reason))?;
        let changes = diff(&policy, &fixed.policy);
        let diff_json = serde_json::json!({"changes": fixed.changes, "diff": changes});
        let before = rule_ids(&policy, &row.key.account_id, &account.trusted_accounts);
        let after = rule_ids(
            &fixed.policy,
            &row.key.account_id,
            &account.trusted_accounts,
        );
        let impact = self.impact(&row, &text, &fixed.text).await;
        let now = self.clock.now();
        let new = NewRemediation {
            impact,
            key_arn: row.key.arn.clone(),
            account_id: row.key.account_id.clone(),
            region: row.key.region.clone(),
            requester: requester.to_string(),
            ticket: proposal.ticket.clone(),
            comment: proposal.comment.clone(),
            base_sha256: sha256_hex(&text),
            base_policy: text,
            proposed_sha256: sha256_hex(&fixed.text),
            proposed_policy: fixed.text,
            diff: diff_json.to_string(),
            resolves: before.difference(&after).cloned().collect(),
            remaining: after.into_iter().collect(),
            created_at: now,
            expires_at: now + self.expiry(),
            rollback_of: None,
            idempotency_key: proposal.idempotency_key.clone(),
        };
        self.create(&new, requester).await
    }

    /// The remediation an earlier request with the same idempotency key created, if it was
    /// for the same key; a different key under the same idempotency key is refused.
    async fn idempotent_replay(
        &self,
        proposal: &Proposal,
    ) -> RemediationResult<Option<RemediationRow>> {
        let Some(idempotency_key) = &proposal.idempotency_key else {
            return Ok(None);
        };
        let Some(existing) = self
            .store
            .remediation_by_idempotency_key(idempotency_key)
            .await?
        else {
            return Ok(None);
        };
        let same_key = proposal.key == existing.key_arn
            || self
                .store
                .find_keys(&proposal.key)
                .await?
                .iter()
                .any(|k| k.key.arn == existing.key_arn);
        if !same_key {
            return Err(RemediationError::Refused(format!(
                "this Idempotency-Key was used for remediation {} of {}; use a new key for another key",
                existing.id, existing.key_arn
            )));
        }
        Ok(Some(existing))
    }

    /// The access impact of replacing `base` with `proposed`, as JSON text; `None` (with a
    /// warning) when it cannot be computed: the proposal stands, approvers see "unknown".
    async fn impact(&self, row: &KeyRow, base: &str, proposed: &str) -> Option<String> {
        match crate::effective_access::fix_impact(self.store.as_ref(), row, base, proposed).await {
            Ok(Some(impact)) => serde_json::to_string(&impact).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(key = %row.key.arn, error = %e, "access impact not computed");
                None
            }
        }
    }

    fn expiry(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.config.expires_after).unwrap_or(chrono::TimeDelta::days(7))
    }

    async fn create(
        &self,
        new: &NewRemediation,
        requester: &str,
    ) -> RemediationResult<(RemediationRow, bool)> {
        let detail = serde_json::json!({
            "ticket": new.ticket,
            "base_sha256": new.base_sha256,
            "proposed_sha256": new.proposed_sha256,
            "rollback_of": new.rollback_of,
        });
        Ok(self
            .store
            .create_remediation(
                new,
                &audit(
                    new.created_at,
                    requester,
                    "remediation.requested",
                    &new.key_arn,
                    detail,
                ),
            )
            .await?)
    }

    pub async fn get(&self, id: i64) -> RemediationResult<RemediationRow> {
        self.store
            .get_remediation(id)
            .await?
            .ok_or_else(|| RemediationError::NotFound(format!("remediation {id} does not exist")))
    }

    /// Approves; the requester never may. When the fix takes cryptographic access away from
    /// principals, the approver must acknowledge that (`acknowledge_access_loss`).
    pub async fn approve(
        &self,
        id: i64,
        approver: &str,
        comment: Option<String>,
        acknowledge_access_loss: bool,
    ) -> RemediationResult<RemediationRow> {
        let current = self.get(id).await?;
        if current.requester == approver {
            return Err(RemediationError::Forbidden(format!(
                "{approver} requested remediation {id}; the requester can never approve it"
            )));
        }
        let losing = losing_cryptographic_access(&current);
        if !losing.is_empty() && !acknowledge_access_loss {
            return Err(RemediationError::Refused(format!(
                "applying remediation {id} removes cryptographic access to {} from {}; check \
                 that they no longer need the key, then approve with acknowledge_access_loss",
                current.key_arn,
                losing.join(", ")
            )));
        }
        let now = self.clock.now();
        let approval = ApprovalRow {
            approver: approver.to_string(),
            comment,
            created_at: now,
        };
        let row = self
            .store
            .approve_remediation(
                id,
                &approval,
                self.config.required_approvals,
                &audit(
                    now,
                    approver,
                    "remediation.approved",
                    &current.key_arn,
                    serde_json::json!({
                        "remediation": id,
                        "comment": approval.comment,
                        "acknowledged_access_loss": (!losing.is_empty()).then_some(&losing),
                    }),
                ),
            )
            .await?;
        if row.state == "approved" && self.config.auto_apply {
            // The approval stands whatever the apply does; its outcome (applied, stale, failed)
            // is recorded on the row, and a lost race to another applier is not an error here.
            return match self.apply(id, "keyward").await {
                Ok(applied) => Ok(applied),
                Err(e) => {
                    tracing::warn!(remediation = id, error = %e, "automatic apply did not run");
                    self.get(id).await
                }
            };
        }
        Ok(row)
    }

    /// Rejects; a comment is required.
    pub async fn reject(
        &self,
        id: i64,
        approver: &str,
        comment: Option<String>,
    ) -> RemediationResult<RemediationRow> {
        let Some(comment) = comment.filter(|c| !c.trim().is_empty()) else {
            return Err(RemediationError::Refused(
                "a comment is required to reject a remediation".into(),
            ));
        };
        let current = self.get(id).await?;
        let now = self.clock.now();
        Ok(self
            .store
            .reject_remediation(
                id,
                &ApprovalRow {
                    approver: approver.to_string(),
                    comment: Some(comment.clone()),
                    created_at: now,
                },
                &audit(
                    now,
                    approver,
                    "remediation.rejected",
                    &current.key_arn,
                    serde_json::json!({"remediation": id, "comment": comment}),
                ),
            )
            .await?)
    }

    /// Applies an approved remediation: claim, re-read (stale if the base changed), pre-check,
    /// PutKeyPolicy, re-read and verify.
    pub async fn apply(&self, id: i64, actor: &str) -> RemediationResult<RemediationRow> {
        if self.config.mode != RemediationMode::Apply {
            return Err(RemediationError::Refused(
                "remediation is propose-only: set [remediation] mode = \"apply\" in keyward.toml to let Keyward write key policies".into(),
            ));
        }
        let current = self.get(id).await?;
        let Some(account) = self.configured_account(&current.account_id) else {
            return Err(RemediationError::Refused(format!(
                "account {} of remediation {id} is no longer in the configuration; nothing was \
                 claimed or written. Add it back under [[accounts]] in keyward.toml to apply, or \
                 reject the remediation",
                current.account_id
            )));
        };
        // The claim → PutKeyPolicy → verify → finish sequence runs in a task of its own: a
        // caller that goes away (a client disconnect drops the request's future) cannot stop
        // it half way and leave the row `applying`.
        let service = self.clone();
        let actor = actor.to_string();
        let task =
            tokio::spawn(async move { service.claim_and_apply(current, account, &actor).await });
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(RemediationError::Conflict(format!(
                "the apply of remediation {id} was cancelled ({e}); if it was claimed, crash \
                 recovery settles it once its claim lease ends"
            ))),
        }
    }

    /// The body of [`Self::apply`], run in its own task.
    async fn claim_and_apply(
        &self,
        current: RemediationRow,
        account: AccountConfig,
        actor: &str,
    ) -> RemediationResult<RemediationRow> {
        let id = current.id;
        let claimant = new_claimant();
        let now = self.clock.now();
        let started = Instant::now();
        let claimed = self
            .store
            .claim_remediation(
                id,
                &claimant,
                now,
                &audit(
                    now,
                    actor,
                    "remediation.applying",
                    &current.key_arn,
                    serde_json::json!({"remediation": id, "claim": claimant}),
                ),
            )
            .await?;
        let Some(claimed) = claimed else {
            let state = self.get(id).await?.state;
            return Err(RemediationError::Conflict(format!(
                "remediation {id} is {state}; only an approved, unexpired remediation can be applied (once)"
            )));
        };
        let result = self.write(&claimed, &account, started).await;
        let done = self.clock.now();
        let (action, detail) = match &result {
            ApplyResult::Applied => ("remediation.applied", serde_json::Value::Null),
            ApplyResult::Stale(e) => ("remediation.stale", e.as_str().into()),
            ApplyResult::Failed(e) => ("remediation.failed", e.as_str().into()),
            ApplyResult::Unapplied(e) => ("remediation.unapplied", e.as_str().into()),
        };
        let finished = self
            .store
            .finish_remediation(
                id,
                &claimant,
                &result,
                done,
                &audit(
                    done,
                    actor,
                    action,
                    &claimed.key_arn,
                    serde_json::json!({"remediation": id, "error": detail}),
                ),
            )
            .await;
        let finished = match finished {
            Ok(row) => row,
            // Only crash recovery takes a claim away, after the lease: this apply outlived it.
            // Its outcome is not written over what recovery recorded.
            Err(StoreError::Conflict(why)) => {
                tracing::error!(remediation = id, claim = %claimant, outcome = ?result, %why, "an apply lost its claim; its outcome was not recorded");
                return Err(RemediationError::Conflict(format!(
                    "remediation {id} was settled by crash recovery while this apply ran \
                     ({why}); this apply's outcome ({result:?}) was not recorded. Check the key \
                     policy of {}",
                    claimed.key_arn
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if matches!(result, ApplyResult::Applied)
            && let Some(after) = &self.after_apply
        {
            after.reevaluate(&claimed.account_id).await;
        }
        Ok(finished)
    }

    /// The AWS half of apply, as `account` (the remediation's, as configured); `started` is
    /// when the claim was made. Never panics, every outcome is a result to store.
    async fn write(
        &self,
        r: &RemediationRow,
        account: &AccountConfig,
        started: Instant,
    ) -> ApplyResult {
        let access = Self::access(account);
        // The id, as the sync reads keys (an ARN works on AWS; emulators are stricter).
        let key_id = r.key_arn.rsplit('/').next().unwrap_or(&r.key_arn);
        let source = match self.connector.source(&access, &r.region).await {
            Ok(s) => s,
            Err(e) => return ApplyResult::Failed(e.to_string()),
        };
        let current = match source.get_key_policy(key_id).await {
            Ok(t) => t,
            Err(e) => return ApplyResult::Failed(e.to_string()),
        };
        if sha256_hex(&current) != r.base_sha256 {
            return ApplyResult::Stale(
                "the key policy changed since the proposal; nothing was written. Propose again"
                    .into(),
            );
        }
        let applier = match self.applier(account, &r.region).await {
            Ok(a) => a,
            Err(e) => return ApplyResult::Failed(e.to_string()),
        };
        match Policy::parse(&r.proposed_policy) {
            Ok(p) => {
                if let Err(refused) = check_caller_keeps_access(&p, &r.account_id, &applier) {
                    return ApplyResult::Failed(refused.reason);
                }
            }
            Err(e) => return ApplyResult::Failed(format!("invalid proposal: {}", e.reason)),
        }
        let writer = match self.writers.writer(&access, &r.region).await {
            Ok(w) => w,
            Err(e) => return ApplyResult::Failed(e.to_string()),
        };
        if started.elapsed() >= PUT_DEADLINE {
            return ApplyResult::Unapplied(format!(
                "PutKeyPolicy had not started {} s after the claim; gave up, nothing was written",
                PUT_DEADLINE.as_secs()
            ));
        }
        if let Err(e) = writer.put_key_policy(key_id, &r.proposed_policy).await {
            return ApplyResult::Failed(e.to_string());
        }
        match source.get_key_policy(key_id).await {
            Ok(after) if same_policy(&after, &r.proposed_policy) => ApplyResult::Applied,
            Ok(_) => ApplyResult::Failed(
                "PutKeyPolicy succeeded but the key policy read back differs from the proposal"
                    .into(),
            ),
            Err(e) => ApplyResult::Failed(format!("verifying: {e}")),
        }
    }

    /// Crash recovery: every remediation left `applying` under a claim older than
    /// [`CLAIM_LEASE`] (its process died, or gave up, between the claim and the end of the
    /// apply) is settled by re-reading the key policy, never by writing it: equal to the
    /// proposal → `applied`; equal to the base → back to `approved` (nothing was written);
    /// anything else → `failed` with the reason. A fresher claim belongs to an apply that may
    /// still be running (on this or another replica, or a CLI process) and is left alone. A
    /// policy that cannot be read leaves the row `applying` for the next run; an account no
    /// longer configured makes it `failed` with the reason, for an operator to check. Runs at
    /// start-up and periodically. Returns the rows settled.
    pub async fn reconcile_applying(&self) -> RemediationResult<Vec<RemediationRow>> {
        let lease = chrono::TimeDelta::from_std(CLAIM_LEASE)
            .unwrap_or_else(|_| chrono::TimeDelta::minutes(15));
        let abandoned = self
            .store
            .abandoned_remediations(self.clock.now() - lease)
            .await?;
        let mut settled = Vec::new();
        for r in abandoned {
            let key_id = r.key_arn.rsplit('/').next().unwrap_or(&r.key_arn);
            let result = match self.configured_account(&r.account_id) {
                None => ApplyResult::Failed(format!(
                    "found applying after its claim lease ended, and account {} is no longer in \
                     the configuration: the key policy was not re-read, so whether the proposal \
                     was written is unknown. Check the key policy by hand",
                    r.account_id
                )),
                Some(account) => {
                    let read = match self
                        .connector
                        .source(&Self::access(&account), &r.region)
                        .await
                    {
                        Ok(source) => source.get_key_policy(key_id).await,
                        Err(e) => Err(e),
                    };
                    let current = match read {
                        Ok(text) => text,
                        Err(e) => {
                            tracing::warn!(remediation = r.id, error = %e, "cannot reconcile a remediation left applying; it stays applying");
                            continue;
                        }
                    };
                    if same_policy(&current, &r.proposed_policy) {
                        ApplyResult::Applied
                    } else if same_policy(&current, &r.base_policy) {
                        ApplyResult::Unapplied(
                            "found applying after its claim lease ended with the key policy still equal to the base: nothing was written".into(),
                        )
                    } else {
                        ApplyResult::Failed(
                            "found applying after its claim lease ended with a key policy equal to neither the base nor the proposal; nothing was written. Review the key policy and propose again".into(),
                        )
                    }
                }
            };
            let (action, detail) = match &result {
                ApplyResult::Applied => ("remediation.applied", serde_json::Value::Null),
                ApplyResult::Unapplied(e) => ("remediation.unapplied", e.as_str().into()),
                ApplyResult::Stale(e) | ApplyResult::Failed(e) => {
                    ("remediation.failed", e.as_str().into())
                }
            };
            let claim = r.claimed_by.clone().unwrap_or_default();
            let now = self.clock.now();
            let row = match self
                .store
                .finish_remediation(
                    r.id,
                    &claim,
                    &result,
                    now,
                    &audit(
                        now,
                        "keyward",
                        action,
                        &r.key_arn,
                        serde_json::json!({"remediation": r.id, "reconciled": true, "claim": claim, "error": detail}),
                    ),
                )
                .await
            {
                Ok(row) => row,
                // Its own apply (or another replica's recovery) finished it meanwhile.
                Err(StoreError::Conflict(why)) => {
                    tracing::info!(remediation = r.id, %why, "a remediation left applying was settled meanwhile");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            tracing::info!(remediation = r.id, state = %row.state, "reconciled a remediation left applying");
            if matches!(result, ApplyResult::Applied)
                && let Some(after) = &self.after_apply
            {
                after.reevaluate(&r.account_id).await;
            }
            settled.push(row);
        }
        Ok(settled)
    }

    /// Expires every pending or approved remediation past its `expires_at`; returns their ids.
    pub async fn expire(&self) -> RemediationResult<Vec<i64>> {
        Ok(self.store.expire_remediations(self.clock.now()).await?)
    }

    /// Proposes the base policy of an applied remediation again, through the same gate.
    pub async fn rollback(
        &self,
        id: i64,
        requester: &str,
        ticket: Option<String>,
        comment: Option<String>,
    ) -> RemediationResult<(RemediationRow, bool)> {
        let original = self.get(id).await?;
        if original.state != "applied" {
            return Err(RemediationError::Conflict(format!(
                "remediation {id} is {}; only an applied remediation can be rolled back",
                original.state
            )));
        }
        let row = self.key(&original.key_arn).await?;
        let source = self.source(&row).await?;
        let text = source.get_key_policy(&row.key.key_id).await?;
        if same_policy(&text, &original.base_policy) {
            return Err(RemediationError::Refused(format!(
                "nothing to roll back: the policy of {} already equals remediation {id}'s base",
                original.key_arn
            )));
        }
        let account = self.account(&original.account_id);
        let applier = self.applier(&account, &original.region).await?;
        let base = Policy::parse(&original.base_policy).map_err(|e| {
            RemediationError::Refused(format!("the base policy is invalid: {}", e.reason))
        })?;
        check_caller_keeps_access(&base, &original.account_id, &applier)
            .map_err(|r| RemediationError::Refused(r.reason))?;
        let current = Policy::parse(&text).map_err(|e| {
            RemediationError::Refused(format!("the key policy cannot be read: {}", e.reason))
        })?;
        let before = rule_ids(&current, &original.account_id, &account.trusted_accounts);
        let after = rule_ids(&base, &original.account_id, &account.trusted_accounts);
        let impact = self.impact(&row, &text, &original.base_policy).await;
        let now = self.clock.now();
        let new = NewRemediation {
            impact,
            key_arn: original.key_arn.clone(),
            account_id: original.account_id.clone(),
            region: original.region.clone(),
            requester: requester.to_string(),
            ticket: ticket.or(original.ticket.clone()),
            comment: comment.or_else(|| Some(format!("rollback of remediation {id}"))),
            base_sha256: sha256_hex(&text),
            base_policy: text,
            proposed_sha256: sha256_hex(&original.base_policy),
            proposed_policy: original.base_policy.clone(),
            diff: serde_json::json!({
                "changes": [format!("restores the policy before remediation {id}")],
                "diff": diff(&current, &base),
            })
            .to_string(),
            resolves: before.difference(&after).cloned().collect(),
            remaining: after.into_iter().collect(),
            created_at: now,
            expires_at: now + self.expiry(),
            rollback_of: Some(id),
            idempotency_key: None,
        };
        self.create(&new, requester).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fix::{FixContext, fix};

    const ACCOUNT: &str = "111122223333";

    fn refusal(policy: &str, key_admins: &[String]) -> crate::policy::fix::FixRefused {
        let policy = Policy::parse(policy).unwrap();
        fix(
            &policy,
            &FixContext {
                account_id: ACCOUNT,
                key_admins,
                auditor: None,
                caller: None,
            },
        )
        .unwrap_err()
    }

    #[test]
    fn each_engine_refusal_gets_its_own_hint() {
        let delegating = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}}]}}"#
        );
        let none = refusal(&delegating, &[]);
        assert_eq!(none.kind, RefusalKind::NoAdministrator);
        let hint = refusal_hint(none.kind, ACCOUNT);
        assert!(
            hint.contains("key_admins") && hint.contains(ACCOUNT),
            "{hint}"
        );

        let foreign = refusal(
            &delegating,
            &["arn:aws:iam::444455556666:role/Admin".to_string()],
        );
        assert_eq!(foreign.kind, RefusalKind::InvalidAdministrator);
        assert!(refusal_hint(foreign.kind, ACCOUNT).contains("must be an IAM role or user"));

        for kind in [RefusalKind::TooLarge, RefusalKind::Other] {
            assert!(
                !refusal_hint(kind, ACCOUNT).contains("key_admins"),
                "{kind:?}"
            );
        }
        assert!(refusal_hint(RefusalKind::TooLarge, ACCOUNT).contains("shorten"));
        assert!(refusal_hint(RefusalKind::Caller, ACCOUNT).contains("remediator"));
        assert!(refusal_hint(RefusalKind::Auditor, ACCOUNT).contains("auditor"));
    }

    #[test]
    fn aws_errors_while_proposing_are_denials_missing_keys_or_outages() {
        let account = AccountConfig {
            id: ACCOUNT.into(),
            role_arn: Some(format!("arn:aws:iam::{ACCOUNT}:role/KeywardAudit")),
            ..AccountConfig::default()
        };
        let arn = format!("arn:aws:kms:us-east-1:{ACCOUNT}:key/k");
        let denied = propose_aws_error(
            AwsError::AccessDenied {
                operation: "DescribeKey",
                message: "no".into(),
            },
            &arn,
            &account,
        );
        assert!(
            matches!(&denied, RemediationError::Refused(m)
                if m.contains("kms:DescribeKey") && m.contains("role/KeywardAudit")),
            "{denied}"
        );
        let gone = propose_aws_error(
            AwsError::NotFound {
                operation: "DescribeKey",
                message: "gone".into(),
            },
            &arn,
            &account,
        );
        assert!(matches!(gone, RemediationError::NotFound(_)), "{gone}");
        let throttled = propose_aws_error(
            AwsError::Service {
                operation: "GetKeyPolicy",
                code: "ThrottlingException".into(),
                message: "slow down".into(),
            },
            &arn,
            &account,
        );
        assert!(matches!(throttled, RemediationError::Aws(_)), "{throttled}");
    }

    const APPLIED: &str = r#"{"Version":"2012-10-17","Id":"k","Statement":[
        {"Sid":"Root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},
         "Action":"kms:*","Resource":"*",
         "Condition":{"StringEquals":{"aws:PrincipalType":"Account"}}},
        {"Sid":"Admins","Effect":"Allow",
         "Principal":{"AWS":["arn:aws:iam::111122223333:role/A","arn:aws:iam::111122223333:role/B"]},
         "Action":["kms:Describe*","kms:Put*"],"Resource":"*"}]}"#;

    #[test]
    fn forms_aws_treats_alike_are_the_same_policy() {
        // Keys reordered, one-element lists for strings (and back), list order and repeats.
        let returned = r#"{"Statement":[
            {"Resource":["*"],"Action":["kms:*"],"Effect":"Allow","Sid":"Root",
             "Condition":{"StringEquals":{"aws:PrincipalType":["Account"]}},
             "Principal":{"AWS":["arn:aws:iam::111122223333:root"]}},
            {"Sid":"Admins","Effect":"Allow","Resource":"*",
             "Principal":{"AWS":["arn:aws:iam::111122223333:role/B","arn:aws:iam::111122223333:role/A",
                                 "arn:aws:iam::111122223333:role/B"]},
             "Action":["kms:Put*","kms:Describe*"]}],
            "Id":"k","Version":"2012-10-17"}"#;
        assert!(same_policy(APPLIED, returned));
        assert!(same_policy(returned, APPLIED));
        // A lone statement object is a one-statement list.
        let one = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*"}}"#;
        let list = r#"{"Statement":[{"Resource":["*"],"Action":["kms:Decrypt"],"Principal":"*","Effect":"Allow"}],"Version":"2012-10-17"}"#;
        assert!(same_policy(one, list));
    }

    #[test]
    fn different_policies_are_not_the_same() {
        for other in [
            // a principal more
            APPLIED.replace(
                "role/B\"]",
                "role/B\",\"arn:aws:iam::111122223333:role/C\"]",
            ),
            // an action less
            APPLIED.replace("[\"kms:Describe*\",\"kms:Put*\"]", "\"kms:Describe*\""),
            // a condition value changed
            APPLIED.replace("\"Account\"", "\"User\""),
            // Allow → Deny
            APPLIED.replacen("\"Allow\"", "\"Deny\"", 1),
            // NotAction is not Action
            APPLIED.replace("\"Action\":\"kms:*\"", "\"NotAction\":\"kms:*\""),
        ] {
            assert_ne!(other, APPLIED, "the edit applies");
            assert!(!same_policy(APPLIED, &other), "{other}");
        }
        // Statement order is kept: it is what the key shows.
        let v: serde_json::Value = serde_json::from_str(APPLIED).unwrap();
        let mut swapped = v.clone();
        swapped["Statement"].as_array_mut().unwrap().swap(0, 1);
        assert!(!same_policy(APPLIED, &swapped.to_string()));
        assert!(!same_policy(APPLIED, "not json"));
    }
}
