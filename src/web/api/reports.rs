//! `GET /reports/compliance`: the compliance export (CSV, JSON, OCSF or printable HTML),
//! streamed from the store to the client as it is written.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::Instrument;
use utoipa::ToSchema;

use crate::report::{self, ChannelSink, JsonExport, ReportError, ReportFormat, ReportOptions};
use crate::web::AppState;
use crate::web::auth::Caller;
use crate::web::error::{ApiError, ApiQuery, Problem};

/// The export formats of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ComplianceFormat {
    /// One row per finding, RFC 4180 (`text/csv`).
    Csv,
    /// The `keyward export` document with a summary (`application/json`).
    Json,
    /// An array of OCSF 1.1 Compliance Findings, class 2003 (`application/json`).
    Ocsf,
    /// A printable, self-contained page (`text/html`).
    Html,
}

impl From<ComplianceFormat> for ReportFormat {
    fn from(f: ComplianceFormat) -> Self {
        match f {
            ComplianceFormat::Csv => ReportFormat::Csv,
            ComplianceFormat::Json => ReportFormat::Json,
            ComplianceFormat::Ocsf => ReportFormat::Ocsf,
            ComplianceFormat::Html => ReportFormat::Html,
        }
    }
}

/// Parameters of `GET /reports/compliance`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ComplianceQuery {
    /// `csv`, `json`, `ocsf` or `html`.
    #[param(inline)]
    pub format: ComplianceFormat,
    /// Also export resolved findings (open and waived ones always are).
    #[serde(default)]
    pub include_resolved: bool,
}

/// The JSON bodies: the export document for `format=json`, an array of OCSF Compliance Finding
/// events for `format=ocsf`. Only the OpenAPI document uses it: the bodies are streamed.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ComplianceJson {
    Document(JsonExport),
    Ocsf(OcsfEvents),
}

/// OCSF 1.1.0 Compliance Finding events (class_uid 2003), one per finding.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Vec<Object>)]
#[allow(dead_code)]
pub struct OcsfEvents(Vec<serde_json::Value>);

/// The compliance export, streamed. CSV comes as an attachment named
/// `keyward-compliance-<timestamp>.csv`; JSON and OCSF as `application/json`; HTML as a page to
/// print.
#[utoipa::path(get, path = "/api/v1/reports/compliance", tag = "reports", params(ComplianceQuery),
    responses(
        (status = 200, description = "The export, in the requested format",
            content(
                (String = "text/csv"),
                (ComplianceJson = "application/json"),
                (String = "text/html"),
            )),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 500, body = Problem)))]
pub async fn compliance_report(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<ComplianceQuery>,
) -> Result<Response, ApiError> {
    let format = ReportFormat::from(q.format);
    let generated_at = state.clock.now();
    let options = ReportOptions {
        include_resolved: q.include_resolved,
        generated_at,
    };
    let (tx, mut rx) = mpsc::channel(4);
    let store = state.store.clone();
    let span = tracing::info_span!("compliance_report", ?format);
    tokio::spawn(
        async move {
            let mut sink = ChannelSink::new(tx.clone());
            match report::write_report(store.as_ref(), format, &options, &mut sink).await {
                Ok(()) => {}
                Err(ReportError::Closed) => tracing::debug!("the client went away"),
                Err(e) => {
                    tracing::error!(error = %e, "the compliance export failed");
                    let _ = tx.send(Err(e)).await;
                }
            }
        }
        .instrument(span),
    );
    // Nothing is sent before the first chunk, so a failure up to then (the database is down)
    // is still a proper problem response. A failure later aborts the body instead: a client
    // never mistakes a cut-off export for a complete one.
    let first = match rx.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(ReportError::Store(e))) => return Err(ApiError::from(e)),
        Some(Err(e)) => return Err(ApiError::Internal(e.to_string())),
        None => return Err(ApiError::Internal("the export ended without output".into())),
    };
    let rest = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let body = futures::stream::once(async move { Ok(first) })
        .chain(rest)
        .map(|item| item.map_err(std::io::Error::other));
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if format == ReportFormat::Csv {
        let disposition = format!(
            "attachment; filename=\"keyward-compliance-{}.csv\"",
            generated_at.format("%Y%m%dT%H%M%SZ")
        );
        if let Ok(value) = HeaderValue::from_str(&disposition) {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
    }
    Ok(response)
}
