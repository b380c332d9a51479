//! The rows every format is built from: keyset-paged reads of keys and findings, and findings
//! enriched with what the finding row does not carry (account name, aliases, when the evidence
//! was fetched), looked up per key through a small cache.

use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::BATCH;
use crate::store::{FindingFilter, FindingRow, KeyFilter, KeyRow, Store, StoreResult};

/// Keys in ARN order, a batch at a time.
pub(crate) struct KeyPages<'a> {
    store: &'a dyn Store,
    filter: KeyFilter,
    after: Option<String>,
    done: bool,
}

impl<'a> KeyPages<'a> {
    pub(crate) fn new(store: &'a dyn Store, filter: KeyFilter) -> Self {
        KeyPages {
            store,
            filter,
            after: None,
            done: false,
        }
    }

    /// Every live key.
    pub(crate) fn live(store: &'a dyn Store) -> Self {
        Self::new(store, KeyFilter::default())
    }

    /// The next batch; `None` after the last.
    pub(crate) async fn next(&mut self) -> StoreResult<Option<Vec<KeyRow>>> {
        if self.done {
            return Ok(None);
        }
        let (rows, _) = self
            .store
            .query_keys(&self.filter, self.after.as_deref(), BATCH)
            .await?;
        self.done = rows.len() < BATCH as usize;
        self.after = rows.last().map(|k| k.key.arn.clone());
        Ok((!rows.is_empty()).then_some(rows))
    }
}

/// Findings in id order (the order they were found), a batch at a time.
pub(crate) struct FindingPages<'a> {
    store: &'a dyn Store,
    filter: FindingFilter,
    after: Option<i64>,
    done: bool,
}

impl<'a> FindingPages<'a> {
    pub(crate) fn new(store: &'a dyn Store, filter: FindingFilter) -> Self {
        FindingPages {
            store,
            filter,
            after: None,
            done: false,
        }
    }

    /// The next batch; `None` after the last.
    pub(crate) async fn next(&mut self) -> StoreResult<Option<Vec<FindingRow>>> {
        if self.done {
            return Ok(None);
        }
        let (rows, _) = self
            .store
            .query_findings(&self.filter, self.after, BATCH)
            .await?;
        self.done = rows.len() < BATCH as usize;
        self.after = rows.last().map(|f| f.id);
        Ok((!rows.is_empty()).then_some(rows))
    }
}

/// The finding queries of an export, run one after the other: open and waived findings, or every
/// finding when resolved ones are asked for too. One status per query keeps resolved history
/// (which only grows) from being read just to be skipped.
pub(crate) fn finding_filters(include_resolved: bool) -> Vec<FindingFilter> {
    let with_status = |status: Option<&str>| FindingFilter {
        status: status.map(str::to_string),
        ..FindingFilter::default()
    };
    if include_resolved {
        vec![with_status(None)]
    } else {
        vec![with_status(Some("open")), with_status(Some("waived"))]
    }
}

/// Accepted risk on a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiver {
    pub reason: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The waiver the store reports for a finding (every format reads the waiver from here).
fn waiver_of(row: &FindingRow) -> Option<Waiver> {
    row.waiver_reason.as_ref().map(|reason| Waiver {
        reason: reason.clone(),
        expires_at: row.waiver_expires_at,
    })
}

/// A finding with everything the exports show about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFinding {
    pub id: i64,
    pub key_arn: String,
    pub account_id: String,
    /// The configured name; empty for an account no longer configured.
    pub account_name: String,
    pub region: String,
    pub aliases: Vec<String>,
    pub rule_id: String,
    pub locator: String,
    pub severity: String,
    /// `open`, `waived` or `resolved`.
    pub status: String,
    pub statement_index: Option<i64>,
    pub sid: Option<String>,
    pub message: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub waiver: Option<Waiver>,
    /// The policy version the finding was judged on.
    pub policy_sha256: Option<String>,
    /// When that version was last fetched from AWS (its last-seen stamp).
    pub policy_fetched_at: Option<DateTime<Utc>>,
}

/// What the exports need of a key for its findings' rows.
#[derive(Debug, Default)]
struct KeyFacts {
    aliases: Vec<String>,
    /// (SHA-256, last seen) of every stored policy version, oldest first; texts are not kept.
    versions: Vec<(String, DateTime<Utc>)>,
}

/// Keys looked up for findings, at most this many at a time. Findings of one key are mostly
/// found together, so a small cache serves nearly every row.
const KEY_CACHE: usize = 256;

/// Enriches finding rows: account names (all of them, they are few) and per-key facts (cached).
pub(crate) struct Lookup<'a> {
    store: &'a dyn Store,
    accounts: HashMap<String, String>,
    keys: HashMap<String, Arc<KeyFacts>>,
    order: VecDeque<String>,
}

impl<'a> Lookup<'a> {
    pub(crate) async fn new(store: &'a dyn Store) -> StoreResult<Self> {
        let accounts = store
            .list_accounts()
            .await?
            .into_iter()
            .map(|a| (a.id, a.name))
            .collect();
        Ok(Lookup {
            store,
            accounts,
            keys: HashMap::new(),
            order: VecDeque::new(),
        })
    }

    /// Configured account id → name.
    pub(crate) fn account_names(&self) -> &HashMap<String, String> {
        &self.accounts
    }

    /// The configured name of an account, empty when it is not configured (any more).
    pub(crate) fn account_name(&self, id: &str) -> String {
        self.accounts.get(id).cloned().unwrap_or_default()
    }

    async fn key(&mut self, arn: &str) -> StoreResult<Arc<KeyFacts>> {
        if let Some(facts) = self.keys.get(arn) {
            return Ok(facts.clone());
        }
        let aliases = self
            .store
            .find_keys(arn)
            .await?
            .into_iter()
            .find(|k| k.key.arn == arn)
            .map(|k| k.key.aliases)
            .unwrap_or_default();
        let versions = self
            .store
            .policy_versions(arn)
            .await?
            .into_iter()
            .map(|v| (v.sha256, v.last_seen))
            .collect();
        let facts = Arc::new(KeyFacts { aliases, versions });
        if self.order.len() >= KEY_CACHE
            && let Some(oldest) = self.order.pop_front()
        {
            self.keys.remove(&oldest);
        }
        self.order.push_back(arn.to_string());
        self.keys.insert(arn.to_string(), facts.clone());
        Ok(facts)
    }

    /// The finding with its account name, the key's aliases and the evidence's fetch time.
    pub(crate) async fn finding(&mut self, row: FindingRow) -> StoreResult<ReportFinding> {
        let facts = self.key(&row.key_arn).await?;
        let policy_fetched_at = row.policy_sha256.as_deref().and_then(|sha| {
            // A policy can return to an earlier text: the newest version with that hash.
            facts
                .versions
                .iter()
                .rev()
                .find(|(s, _)| s == sha)
                .map(|(_, at)| *at)
        });
        let waiver = waiver_of(&row);
        Ok(ReportFinding {
            account_name: self.account_name(&row.account_id),
            aliases: facts.aliases.clone(),
            policy_fetched_at,
            waiver,
            id: row.id,
            key_arn: row.key_arn,
            account_id: row.account_id,
            region: row.region,
            rule_id: row.rule_id,
            locator: row.locator,
            severity: row.severity,
            status: row.status,
            statement_index: row.statement_index,
            sid: row.sid,
            message: row.message,
            first_seen: row.first_seen,
            last_seen: row.last_seen,
            resolved_at: row.resolved_at,
            policy_sha256: row.policy_sha256,
        })
    }
}

/// RFC 3339 in whole seconds with `Z`: what people and spreadsheets read.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
