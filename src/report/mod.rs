//! Compliance exports of the stored state — JSON, CSV, OCSF and a printable HTML report —
//! streamed: findings are read in keyset-paged batches and written as they come, so an export
//! of 100 k findings never sits in memory.

mod csv;
mod html;
mod json;
mod ocsf;
mod rows;
mod summary;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::store::{Store, StoreError, StoreResult};

pub use csv::{CSV_HEADER, neutralise_formula};
pub use html::escape_html;
pub use ocsf::{OCSF_VERSION, severity_id};
pub use rows::{ReportFinding, Waiver};
pub use summary::{AccountTotals, ReportSummary};

/// How many rows one store query reads.
pub const BATCH: u32 = 1000;
/// Output is handed to the sink in chunks of about this many bytes.
const CHUNK: usize = 64 * 1024;

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// The `keyward export` document: keys, findings and a summary.
    Json,
    /// One RFC 4180 row per finding.
    Csv,
    /// A JSON array of OCSF 1.1 Compliance Findings (class 2003).
    Ocsf,
    /// A self-contained printable page.
    Html,
}

impl ReportFormat {
    /// The `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json | Self::Ocsf => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Html => "text/html; charset=utf-8",
        }
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Json | Self::Ocsf => "json",
            Self::Csv => "csv",
            Self::Html => "html",
        }
    }
}

/// What an export contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportOptions {
    /// Also export resolved findings (open and waived ones always are).
    pub include_resolved: bool,
    /// The time the export says it was made.
    pub generated_at: DateTime<Utc>,
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The reader went away (an HTTP client disconnected, a closed pipe).
    #[error("the reader of the export went away")]
    Closed,
    #[error("cannot encode the export: {0}")]
    Encode(String),
}

/// Where an export goes, one chunk at a time.
#[async_trait]
pub trait Sink: Send {
    /// Takes the next chunk; [`ReportError::Closed`] when nobody reads any more.
    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), ReportError>;
}

/// Collects the whole export: for tests and small stores.
#[async_trait]
impl Sink for Vec<u8> {
    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), ReportError> {
        self.extend_from_slice(&chunk);
        Ok(())
    }
}

/// Hands chunks to a bounded channel, so a slow reader slows the export down instead of
/// letting it pile up in memory.
pub struct ChannelSink {
    tx: mpsc::Sender<Result<Vec<u8>, ReportError>>,
}

impl ChannelSink {
    pub fn new(tx: mpsc::Sender<Result<Vec<u8>, ReportError>>) -> Self {
        ChannelSink { tx }
    }
}

#[async_trait]
impl Sink for ChannelSink {
    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), ReportError> {
        self.tx
            .send(Ok(chunk))
            .await
            .map_err(|_| ReportError::Closed)
    }
}

/// Writes the export of the stored state in `format` to `sink`.
#[tracing::instrument(skip_all, fields(format = ?format, include_resolved = options.include_resolved))]
pub async fn write_report(
    store: &dyn Store,
    format: ReportFormat,
    options: &ReportOptions,
    sink: &mut dyn Sink,
) -> Result<(), ReportError> {
    let mut out = Out::new(sink);
    match format {
        ReportFormat::Json => json::write(store, options, &mut out).await?,
        ReportFormat::Csv => csv::write(store, options, &mut out).await?,
        ReportFormat::Ocsf => ocsf::write(store, options, &mut out).await?,
        ReportFormat::Html => html::write(store, options, &mut out).await?,
    }
    out.finish().await
}

/// Buffers output and hands it to the sink in chunks.
pub(crate) struct Out<'a> {
    buf: Vec<u8>,
    sink: &'a mut dyn Sink,
}

impl<'a> Out<'a> {
    fn new(sink: &'a mut dyn Sink) -> Self {
        Out {
            buf: Vec::with_capacity(CHUNK + CHUNK / 4),
            sink,
        }
    }

    pub(crate) fn push(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// Compact JSON of `value`.
    pub(crate) fn push_json<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), ReportError> {
        serde_json::to_writer(&mut self.buf, value).map_err(|e| ReportError::Encode(e.to_string()))
    }

    /// Hands a chunk over once enough has gathered; call between rows.
    pub(crate) async fn flush_if_full(&mut self) -> Result<(), ReportError> {
        if self.buf.len() >= CHUNK {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + CHUNK / 4));
            self.sink.send(chunk).await?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(), ReportError> {
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.sink.send(chunk).await?;
        }
        Ok(())
    }
}

impl std::fmt::Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s);
        Ok(())
    }
}

/// The `keyward export --format json` document, held in memory. [`write_report`] streams the
/// same document; this form suits tests and programs that want the typed value.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = ComplianceDocument)]
pub struct JsonExport {
    pub generated_at: DateTime<Utc>,
    /// Live keys, in ARN order.
    pub keys: Vec<ExportKey>,
    /// Open and waived findings (resolved ones too when asked), in the order they were found.
    pub findings: Vec<ExportFinding>,
    pub summary: ReportSummary,
}

/// A live key in the export.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ExportKey {
    pub arn: String,
    pub account_id: String,
    pub region: String,
    pub key_id: String,
    pub aliases: Vec<String>,
    pub key_manager: String,
    pub key_state: String,
    pub policy_sha256: Option<String>,
    /// No open finding.
    pub compliant: bool,
    pub open_findings: u64,
}

impl From<crate::store::KeyRow> for ExportKey {
    fn from(k: crate::store::KeyRow) -> Self {
        ExportKey {
            compliant: k.open_findings == 0,
            open_findings: k.open_findings,
            arn: k.key.arn,
            account_id: k.key.account_id,
            region: k.key.region,
            key_id: k.key.key_id,
            aliases: k.key.aliases,
            key_manager: k.key.key_manager,
            key_state: k.key.key_state,
            policy_sha256: k.policy_sha256,
        }
    }
}

/// A finding in the export.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ExportFinding {
    /// The finding's id in the API (`/api/v1/findings`).
    pub id: i64,
    pub key_arn: String,
    pub account_id: String,
    pub account_name: String,
    pub region: String,
    pub rule_id: String,
    /// Where in the policy: `statement:N`, `sid:…` or `key`.
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
    pub waiver_reason: Option<String>,
    pub waiver_expires_at: Option<DateTime<Utc>>,
    /// Evidence: the policy version the finding was judged on…
    pub policy_sha256: Option<String>,
    /// …and when that version was last fetched from AWS.
    pub policy_fetched_at: Option<DateTime<Utc>>,
}

impl From<ReportFinding> for ExportFinding {
    fn from(f: ReportFinding) -> Self {
        let (waiver_reason, waiver_expires_at) = match f.waiver {
            Some(w) => (Some(w.reason), w.expires_at),
            None => (None, None),
        };
        ExportFinding {
            id: f.id,
            key_arn: f.key_arn,
            account_id: f.account_id,
            account_name: f.account_name,
            region: f.region,
            rule_id: f.rule_id,
            locator: f.locator,
            severity: f.severity,
            status: f.status,
            statement_index: f.statement_index,
            sid: f.sid,
            message: f.message,
            first_seen: f.first_seen,
            last_seen: f.last_seen,
            resolved_at: f.resolved_at,
            waiver_reason,
            waiver_expires_at,
            policy_sha256: f.policy_sha256,
            policy_fetched_at: f.policy_fetched_at,
        }
    }
}

/// Builds the JSON export in memory: live keys, open and waived findings (resolved ones too
/// when asked) and the summary. Reads in the same batches as [`write_report`].
pub async fn json_export(
    store: &dyn Store,
    include_resolved: bool,
    now: DateTime<Utc>,
) -> StoreResult<JsonExport> {
    let mut summary = summary::SummaryBuilder::default();
    let mut keys = Vec::new();
    let mut pages = rows::KeyPages::live(store);
    while let Some(batch) = pages.next().await? {
        for k in batch {
            summary.add_key(&k);
            keys.push(ExportKey::from(k));
        }
    }
    let mut lookup = rows::Lookup::new(store).await?;
    let mut findings = Vec::new();
    for filter in rows::finding_filters(include_resolved) {
        let mut pages = rows::FindingPages::new(store, filter);
        while let Some(batch) = pages.next().await? {
            for f in batch {
                summary.add_finding(&f);
                findings.push(ExportFinding::from(lookup.finding(f).await?));
            }
        }
    }
    Ok(JsonExport {
        generated_at: now,
        keys,
        findings,
        summary: summary.finish(lookup.account_names()),
    })
}
