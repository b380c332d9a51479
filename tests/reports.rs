//! Compliance exports (CSV, JSON, OCSF, HTML) through the library and over real HTTP (server on
//! port 0, reqwest), on a real database — SQLite always, Postgres when
//! KEYWARD_TEST_POSTGRES_URL is set. Both databases must give the same snapshots.

#[path = "support/db.rs"]
mod db;

use chrono::{DateTime, TimeZone, Utc};
use keyward::clock::SystemClock;
use keyward::metrics::Metrics;
use keyward::report::{self, CSV_HEADER, ReportFormat, ReportOptions};
use keyward::store::{
    AccountRow, FindingFilter, KeyRecord, KeyUpdate, NewAuditEvent, NewFinding, NewToken,
    NewWaiver, PolicyState, RegionSync, Store, WaiverScope,
};
use keyward::web::auth::token_hash;
use keyward::web::{AppState, build_app, serve};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

const A: &str = "111122223333";
const B: &str = "444455556666";
/// Every seed timestamp is fixed, so exports are stable without redacting them.
const T0: i64 = 1_780_000_000;

fn at(offset: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(T0 + offset, 0).unwrap()
}

fn arn(account: &str, region: &str, id: &str) -> String {
    format!("arn:aws:kms:{region}:{account}:key/{id}")
}

fn record(
    account: &str,
    region: &str,
    id: &str,
    aliases: &[&str],
    tags: &[(&str, &str)],
) -> KeyRecord {
    KeyRecord {
        arn: arn(account, region, id),
        account_id: account.into(),
        region: region.into(),
        key_id: id.into(),
        description: format!("key {id}"),
        key_manager: "CUSTOMER".into(),
        key_state: "Enabled".into(),
        key_spec: "SYMMETRIC_DEFAULT".into(),
        key_usage: "ENCRYPT_DECRYPT".into(),
        origin: "AWS_KMS".into(),
        multi_region: false,
        creation_date: None,
        deletion_date: None,
        rotation_enabled: Some(true),
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        grants: Vec::new(),
        metadata: Default::default(),
    }
}

fn finding(
    rule: &str,
    severity: &str,
    locator: &str,
    statement: Option<(i64, Option<&str>)>,
    message: &str,
) -> NewFinding {
    NewFinding {
        rule_id: rule.into(),
        locator: locator.into(),
        severity: severity.into(),
        statement_index: statement.map(|(i, _)| i),
        sid: statement.and_then(|(_, sid)| sid.map(str::to_string)),
        message: message.into(),
    }
}

const DELEGATING: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
const FIXED: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"EnableRootAccessAndPreventPermissionDelegation","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalType":"Account"}}}]}"#;
const PUBLIC: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalType":"Account"}}},{"Sid":"<b>Everyone</b>","Effect":"Allow","Principal":"*","Action":["kms:Decrypt","kms:*"],"Resource":"*"}]}"#;

fn update(key: KeyRecord, text: &str, findings: Vec<NewFinding>) -> KeyUpdate {
    KeyUpdate {
        fingerprint: format!("fp-{}", key.key_id),
        policy: PolicyState::Readable {
            sha256: keyward::sync::sha256_hex(text),
            text: text.into(),
        },
        evaluation: "rules-v1;trusted=".into(),
        findings,
        remediable: true,
        key,
    }
}

async fn apply(
    store: &dyn Store,
    account: &str,
    region: &str,
    offset: i64,
    updates: Vec<KeyUpdate>,
) {
    let listed = updates.iter().map(|u| u.key.arn.clone()).collect();
    store
        .apply_region_sync(&RegionSync {
            account_id: account.into(),
            region: region.into(),
            now: at(offset),
            listed,
            listing_complete: false,
            updates,
            unread: Vec::new(),
        })
        .await
        .expect("seed");
}

fn deleg_key() -> KeyRecord {
    record(
        A,
        "us-east-1",
        "k-deleg",
        &["alias/payments"],
        &[("team", "pay")],
    )
}

/// Two accounts (names with a comma and a formula), three keys: one delegating (fixed later, so
/// one resolved finding), one clean, one public with hostile aliases, tags, Sid and messages.
async fn seed(store: &dyn Store) {
    store
        .upsert_accounts(&[
            AccountRow {
                id: A.into(),
                name: "Payments, Prod".into(),
                regions: vec!["us-east-1".into()],
            },
            AccountRow {
                id: B.into(),
                name: "=cmd|' /C calc'!A0".into(),
                regions: vec!["eu-west-1".into()],
            },
        ])
        .await
        .unwrap();
    apply(
        store,
        A,
        "us-east-1",
        0,
        vec![
            update(
                deleg_key(),
                DELEGATING,
                vec![
                    finding(
                        "KMS-DELEGATION",
                        "high",
                        "sid:Enable IAM User Permissions",
                        Some((0, Some("Enable IAM User Permissions"))),
                        "statement 0 (\"Enable IAM User Permissions\") lets IAM policies grant this key",
                    ),
                    finding(
                        "KMS-NO-ADMIN",
                        "medium",
                        "key",
                        None,
                        "no principal other than root can administer the key",
                    ),
                ],
            ),
            update(record(A, "us-east-1", "k-clean", &[], &[]), FIXED, vec![]),
        ],
    )
    .await;
    apply(
        store,
        B,
        "eu-west-1",
        0,
        vec![update(
            record(
                B,
                "eu-west-1",
                "k-public",
                &[
                    "=HYPERLINK(\"http://evil.example\",\"click\")",
                    "alias/shared",
                ],
                &[("env", "<script>alert(1)</script>")],
            ),
            PUBLIC,
            vec![
                finding(
                    "KMS-PUBLIC",
                    "critical",
                    "statement:1",
                    Some((1, Some("<b>Everyone</b>"))),
                    "Principal \"*\" can call kms:Decrypt, from any account\nsee statement 1",
                ),
                finding(
                    "KMS-WILDCARD-ACTION",
                    "medium",
                    "statement:1",
                    Some((1, Some("<b>Everyone</b>"))),
                    "@SUM(1+1) kms:* is granted to <img src=x onerror=alert(1)>",
                ),
            ],
        )],
    )
    .await;
    // the delegating key is fixed a minute later: a second policy version, delegation resolved
    // (the waivers come after it, below)
    apply(
        store,
        A,
        "us-east-1",
        60,
        vec![update(
            deleg_key(),
            FIXED,
            vec![finding(
                "KMS-NO-ADMIN",
                "medium",
                "key",
                None,
                "no principal other than root can administer the key",
            )],
        )],
    )
    .await;
    // accepted risk: the wildcard on the public key (a reason that looks like a formula), and
    // the missing administrator on every key of account A, which makes k-deleg compliant
    waive(
        store,
        A,
        "KMS-NO-ADMIN",
        WaiverScope::Account,
        ACCOUNT_REASON,
        ACCOUNT_EXPIRY,
    )
    .await;
    waive(
        store,
        B,
        "KMS-WILDCARD-ACTION",
        WaiverScope::Key,
        KEY_REASON,
        KEY_EXPIRY,
    )
    .await;
}

/// Why KMS-WILDCARD-ACTION is accepted on k-public, and until when (far ahead: the store judges
/// waivers by the wall clock, and snapshots must not change when time passes).
const KEY_REASON: &str = "=accepted by SEC-7, see wiki";
const KEY_EXPIRY: &str = "2099-01-01T00:00:00Z";
const ACCOUNT_REASON: &str = "Break-glass admin role is managed outside KMS";
const ACCOUNT_EXPIRY: &str = "2099-06-30T00:00:00Z";

/// Waives the open finding of `rule` in `account`.
async fn waive(
    store: &dyn Store,
    account: &str,
    rule: &str,
    scope: WaiverScope,
    reason: &str,
    expires_at: &str,
) {
    let filter = FindingFilter {
        account: Some(account.into()),
        rule: Some(rule.into()),
        status: Some("open".into()),
        ..FindingFilter::default()
    };
    let (found, _) = store.query_findings(&filter, None, 10).await.unwrap();
    assert_eq!(found.len(), 1, "{rule} in {account}");
    store
        .waive_finding(
            found[0].id,
            &NewWaiver {
                scope,
                reason: reason.into(),
                author: "auditor".into(),
                created_at: at(120),
                expires_at: DateTime::parse_from_rfc3339(expires_at).unwrap().into(),
            },
            &NewAuditEvent {
                at: at(120),
                actor: "auditor".into(),
                action: "finding.waived".into(),
                target: format!("finding:{}", found[0].id),
                detail: "{}".into(),
            },
        )
        .await
        .unwrap();
}

fn options(include_resolved: bool) -> ReportOptions {
    ReportOptions {
        include_resolved,
        generated_at: at(3600),
    }
}

/// The export through the library.
async fn export(store: &dyn Store, format: ReportFormat, include_resolved: bool) -> String {
    let mut out = Vec::new();
    report::write_report(store, format, &options(include_resolved), &mut out)
        .await
        .expect("export");
    String::from_utf8(out).expect("UTF-8")
}

struct Server {
    base: String,
    http: reqwest::Client,
    _db: db::TestDb,
}

impl Server {
    async fn start(db: db::TestDb) -> Server {
        let store = db.shared();
        for role in ["viewer", "admin"] {
            store
                .create_token(&NewToken {
                    name: format!("{role}-bot"),
                    role: role.into(),
                    sha256: token_hash(&format!("secret-{role}")),
                    created_at: Utc::now(),
                })
                .await
                .unwrap();
        }
        let app = build_app(AppState {
            store,
            metrics: Arc::new(Metrics::new()),
            clock: Arc::new(SystemClock),
            sync: None,
            remediation: None,
            metrics_public: true,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(listener, app, std::future::pending()));
        Server {
            base,
            http: reqwest::Client::new(),
            _db: db,
        }
    }

    fn store(&self) -> &dyn Store {
        self._db.store()
    }

    /// `GET path` as a viewer.
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth("secret-viewer")
            .send()
            .await
            .unwrap()
    }
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

async fn assert_problem(r: reqwest::Response, want: StatusCode) -> Value {
    assert_eq!(r.status(), want);
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], want.as_u16(), "{body}");
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "problem without {field}: {body}");
    }
    body
}

/// Splits RFC 4180 text into records of fields (quoted fields may hold CR, LF, commas).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {
                assert_eq!(chars.next(), Some('\n'), "a bare CR ends no record");
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, '\n') => panic!("a record ends with LF only: {text:?}"),
            (false, c) => field.push(c),
        }
    }
    assert!(
        field.is_empty() && record.is_empty(),
        "the last record has no CRLF"
    );
    records
}

macro_rules! on_both_databases {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::db::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = crate::db::postgres().await {
                    super::$name(db).await;
                }
            }
        }
    };
}

on_both_databases!(csv_rows_quoting_and_formulas);
on_both_databases!(json_document_and_summary);
on_both_databases!(ocsf_events_have_required_attributes);
on_both_databases!(html_report_escapes_everything);
on_both_databases!(include_resolved_adds_resolved_findings);
on_both_databases!(errors_are_problems);
on_both_databases!(large_export_streams);

async fn csv_rows_quoting_and_formulas(db: db::TestDb) {
    seed(db.store()).await;
    let s = Server::start(db).await;
    let text = export(s.store(), ReportFormat::Csv, false).await;
    insta::assert_snapshot!("csv", text);

    let records = parse_csv(&text);
    assert_eq!(records[0], CSV_HEADER);
    assert_eq!(
        records.len(),
        4,
        "header + one open and two waived findings: {text}"
    );
    let column = |name: &str| CSV_HEADER.iter().position(|c| *c == name).unwrap();
    let rules: Vec<&str> = records[1..]
        .iter()
        .map(|r| r[column("rule_id")].as_str())
        .collect();
    // open findings first, then waived ones, each in the order they were found
    assert_eq!(rules, ["KMS-PUBLIC", "KMS-NO-ADMIN", "KMS-WILDCARD-ACTION"]);
    let statuses: Vec<&str> = records[1..]
        .iter()
        .map(|r| r[column("status")].as_str())
        .collect();
    assert_eq!(statuses, ["open", "waived", "waived"]);
    // waived by the account-wide waiver of KMS-NO-ADMIN
    let no_admin = &records[2];
    assert_eq!(no_admin[column("account_name")], "Payments, Prod");
    assert_eq!(no_admin[column("aliases")], "alias/payments");
    assert_eq!(no_admin[column("waiver_reason")], ACCOUNT_REASON);
    assert_eq!(no_admin[column("waiver_expires_at")], ACCOUNT_EXPIRY);
    assert_eq!(no_admin[column("first_seen")], "2026-05-28T20:26:40Z");
    assert_eq!(no_admin[column("last_seen")], "2026-05-28T20:27:40Z");
    assert_eq!(
        no_admin[column("policy_sha256")],
        keyward::sync::sha256_hex(FIXED)
    );
    // evidence: when that policy version was last fetched
    assert_eq!(
        no_admin[column("policy_fetched_at")],
        "2026-05-28T20:27:40Z"
    );
    let public = &records[1];
    assert_eq!(public[column("waiver_reason")], "");
    assert_eq!(public[column("waiver_expires_at")], "");
    // formulas are neutralised, then quoted as RFC 4180 wants
    assert_eq!(public[column("account_name")], "'=cmd|' /C calc'!A0");
    assert_eq!(
        public[column("aliases")],
        "'=HYPERLINK(\"http://evil.example\",\"click\") alias/shared"
    );
    assert_eq!(
        public[column("message")],
        "Principal \"*\" can call kms:Decrypt, from any account\nsee statement 1"
    );
    assert_eq!(
        records[3][column("message")],
        "'@SUM(1+1) kms:* is granted to <img src=x onerror=alert(1)>"
    );
    // the key waiver's reason starts like a formula, and is neutralised too
    assert_eq!(
        records[3][column("waiver_reason")],
        format!("'{KEY_REASON}")
    );
    assert_eq!(records[3][column("waiver_expires_at")], KEY_EXPIRY);
    assert!(
        text.contains("\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"click\"\") alias/shared\"")
    );
    for record in &records {
        assert_eq!(record.len(), CSV_HEADER.len());
        for cell in record {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "a formula cell: {cell:?}"
            );
        }
    }

    // over HTTP: the same bytes, as an attachment
    let r = s.get("/api/v1/reports/compliance?format=csv").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "text/csv; charset=utf-8");
    let disposition = header(&r, "content-disposition").to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"keyward-compliance-")
            && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    assert_eq!(r.text().await.unwrap(), text);
}

async fn json_document_and_summary(db: db::TestDb) {
    seed(db.store()).await;
    let s = Server::start(db).await;
    let text = export(s.store(), ReportFormat::Json, false).await;
    let doc: Value = serde_json::from_str(&text).expect("the stream is one JSON document");
    insta::assert_json_snapshot!("json", doc, {
        ".generated_at" => "[generated_at]",
        ".findings[].id" => "[id]",
    });

    assert_eq!(doc["generated_at"], "2026-05-28T21:26:40Z");
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    for field in [
        "arn",
        "account_id",
        "region",
        "key_id",
        "aliases",
        "key_manager",
        "key_state",
        "policy_sha256",
        "compliant",
    ] {
        assert!(
            keys.iter().all(|k| k.get(field).is_some()),
            "keys without {field}"
        );
    }
    let findings = doc["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 3);
    for field in [
        "key_arn",
        "account_id",
        "region",
        "rule_id",
        "severity",
        "status",
        "first_seen",
        "last_seen",
        "policy_sha256",
        "message",
        "waiver_reason",
        "waiver_expires_at",
        "policy_fetched_at",
    ] {
        assert!(
            findings.iter().all(|f| f.get(field).is_some()),
            "findings without {field}"
        );
    }
    // waived findings are listed with their waiver…
    let by_rule = |rule: &str| findings.iter().find(|f| f["rule_id"] == rule).unwrap();
    assert_eq!(by_rule("KMS-PUBLIC")["status"], "open");
    assert!(by_rule("KMS-PUBLIC")["waiver_reason"].is_null());
    for (rule, reason, expiry) in [
        ("KMS-NO-ADMIN", ACCOUNT_REASON, ACCOUNT_EXPIRY),
        ("KMS-WILDCARD-ACTION", KEY_REASON, KEY_EXPIRY),
    ] {
        assert_eq!(by_rule(rule)["status"], "waived");
        // JSON carries the text as it is: only CSV cells are neutralised
        assert_eq!(by_rule(rule)["waiver_reason"], reason);
        assert_eq!(by_rule(rule)["waiver_expires_at"], expiry);
    }
    // …but neither counted as open nor making their key non-compliant: k-deleg's only open
    // finding is waived account-wide, so it is compliant
    let summary = &doc["summary"];
    assert_eq!(summary["keys"], 3);
    assert_eq!(summary["keys_compliant"], 2);
    assert_eq!(summary["keys_noncompliant"], 1);
    assert_eq!(summary["compliance_percent"], 66.7);
    assert_eq!(summary["open_findings"], 1);
    assert_eq!(
        summary["open_findings_by_severity"],
        serde_json::json!({"critical": 1})
    );
    assert_eq!(
        summary["open_findings_by_rule"],
        serde_json::json!({"KMS-PUBLIC": 1})
    );
    assert_eq!(
        summary["accounts"],
        serde_json::json!([
            {"account_id": A, "account_name": "Payments, Prod", "keys": 2, "keys_compliant": 2,
             "keys_noncompliant": 0, "compliance_percent": 100.0, "open_findings": 0},
            {"account_id": B, "account_name": "=cmd|' /C calc'!A0", "keys": 1, "keys_compliant": 0,
             "keys_noncompliant": 1, "compliance_percent": 0.0, "open_findings": 1},
        ])
    );
    let compliant: Vec<(&str, bool)> = keys
        .iter()
        .map(|k| {
            (
                k["key_id"].as_str().unwrap(),
                k["compliant"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(compliant.contains(&("k-deleg", true)), "{compliant:?}");
    assert!(compliant.contains(&("k-public", false)), "{compliant:?}");

    // the in-memory form is the same document
    let typed = report::json_export(s.store(), false, at(3600))
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), doc);

    // over HTTP: the same document but for when it was made
    let r = s.get("/api/v1/reports/compliance?format=json").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "application/json");
    let mut over_http: Value = r.json().await.unwrap();
    assert!(over_http["generated_at"].is_string());
    over_http["generated_at"] = doc["generated_at"].clone();
    assert_eq!(over_http, doc);
}

async fn ocsf_events_have_required_attributes(db: db::TestDb) {
    seed(db.store()).await;
    let s = Server::start(db).await;
    let text = export(s.store(), ReportFormat::Ocsf, true).await;
    let events: Vec<Value> = serde_json::from_str(&text).expect("a JSON array");
    insta::assert_json_snapshot!("ocsf", events, {
        "[].unmapped.keyward.finding_id" => "[id]",
        "[].metadata.product.version" => "[version]",
    });
    assert_eq!(events.len(), 4);
    for e in &events {
        // OCSF 1.1.0 Compliance Finding: the class's required attributes…
        for field in [
            "activity_id",
            "category_uid",
            "class_uid",
            "compliance",
            "finding_info",
            "metadata",
            "severity_id",
            "time",
            "type_uid",
            // …and the cloud profile's, which the events declare
            "cloud",
        ] {
            assert!(!e[field].is_null(), "event without {field}: {e}");
        }
        assert_eq!(e["category_uid"], 2);
        assert_eq!(e["class_uid"], 2003);
        assert_eq!(
            e["type_uid"].as_u64().unwrap(),
            2003 * 100 + e["activity_id"].as_u64().unwrap()
        );
        assert!(
            e["time"].as_i64().unwrap() > 1_700_000_000_000,
            "time in ms"
        );
        assert!((1..=5).contains(&e["severity_id"].as_u64().unwrap()));
        // …and the required attributes of the objects they hold
        assert_eq!(e["metadata"]["version"], "1.1.0");
        assert_eq!(e["metadata"]["product"]["name"], "Keyward");
        assert_eq!(e["metadata"]["product"]["vendor_name"], "Keyward");
        assert_eq!(
            e["metadata"]["product"]["version"],
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(e["metadata"]["profiles"], serde_json::json!(["cloud"]));
        assert!(
            e["finding_info"]["uid"]
                .as_str()
                .is_some_and(|u| !u.is_empty())
        );
        assert!(
            e["finding_info"]["title"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        );
        assert!(e["finding_info"]["first_seen_time"].is_i64());
        assert!(e["finding_info"]["last_seen_time"].is_i64());
        assert!(
            e["compliance"]["standards"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
        );
        assert!(e["compliance"]["control"].is_string());
        assert_eq!(e["cloud"]["provider"], "AWS");
        assert!(e["cloud"]["account"]["uid"].is_string());
        assert!(
            e["resource"]["uid"]
                .as_str()
                .unwrap()
                .starts_with("arn:aws:kms:")
        );
        assert_eq!(e["resource"]["type"], "AWS::KMS::Key");
    }
    let by_rule = |rule: &str| {
        events
            .iter()
            .find(|e| e["compliance"]["control"] == rule)
            .unwrap()
    };
    let public = by_rule("KMS-PUBLIC");
    assert_eq!(public["severity_id"], 5);
    assert_eq!(public["activity_id"], 1);
    assert_eq!(public["status"], "New");
    assert_eq!(public["compliance"]["status_id"], 3);
    assert_eq!(public["compliance"]["status"], "Fail");
    assert_eq!(public["cloud"]["account"]["uid"], B);
    assert_eq!(public["cloud"]["region"], "eu-west-1");
    let resolved = by_rule("KMS-DELEGATION");
    assert_eq!(resolved["severity_id"], 4);
    assert_eq!(resolved["activity_id"], 3);
    assert_eq!(resolved["type_uid"], 200303);
    assert_eq!(resolved["status_id"], 4);
    assert_eq!(resolved["compliance"]["status"], "Pass");
    assert_eq!(by_rule("KMS-NO-ADMIN")["severity_id"], 3);
    // a waived finding is suppressed, not passed: the control still fails
    for (rule, reason, expiry) in [
        ("KMS-NO-ADMIN", ACCOUNT_REASON, ACCOUNT_EXPIRY),
        ("KMS-WILDCARD-ACTION", KEY_REASON, KEY_EXPIRY),
    ] {
        let waived = by_rule(rule);
        assert_eq!(waived["status_id"], 3, "{rule}");
        assert_eq!(waived["status"], "Suppressed", "{rule}");
        assert_eq!(waived["activity_id"], 2, "{rule}");
        assert_eq!(waived["type_uid"], 200302, "{rule}");
        assert_eq!(waived["compliance"]["status_id"], 3, "{rule}");
        assert_eq!(waived["compliance"]["status"], "Fail", "{rule}");
        let keyward = &waived["unmapped"]["keyward"];
        assert_eq!(keyward["waiver_reason"], reason, "{rule}");
        let expires_ms = DateTime::parse_from_rfc3339(expiry)
            .unwrap()
            .timestamp_millis();
        assert_eq!(keyward["waiver_expires_at"], expires_ms, "{rule}");
    }
    assert_eq!(public["status_id"], 1);
    // the uid is stable: the same in a second export (row ids are not portable, uids are)
    let again: Vec<Value> =
        serde_json::from_str(&export(s.store(), ReportFormat::Ocsf, true).await).unwrap();
    let uids = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .map(|e| e["finding_info"]["uid"].clone())
            .collect()
    };
    assert_eq!(uids(&again), uids(&events));
    let mut distinct = uids(&events);
    distinct.sort_by_key(|v| v.to_string());
    distinct.dedup();
    assert_eq!(distinct.len(), 4);

    let r = s
        .get("/api/v1/reports/compliance?format=ocsf&include_resolved=true")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "application/json");
    assert_eq!(r.text().await.unwrap(), text);
}

async fn html_report_escapes_everything(db: db::TestDb) {
    seed(db.store()).await;
    let s = Server::start(db).await;
    // with the seed's waivers: k-deleg's only open finding is waived, so the key is compliant
    // and left out of the details; the waived wildcard shows its reason and expiry
    let waived = export(s.store(), ReportFormat::Html, false).await;
    assert!(waived.contains("<b>66.7&nbsp;%</b>compliant keys"));
    let noncompliant = &waived[waived.find("id=\"noncompliant\"").unwrap()..];
    assert!(noncompliant.contains("key/k-public"));
    assert!(
        !noncompliant.contains("key/k-deleg"),
        "a waived key in the details"
    );
    assert!(noncompliant.contains(&format!(
        "<td>waived<br><span class=\"muted\">{KEY_REASON} (until {KEY_EXPIRY})</span></td>"
    )));
    // the rest is checked with the account-wide waiver revoked, so k-deleg (with its resolved
    // delegation finding) is non-compliant again
    let (no_admin, _) = s
        .store()
        .query_findings(
            &FindingFilter {
                rule: Some("KMS-NO-ADMIN".into()),
                ..FindingFilter::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    s.store()
        .revoke_waivers(
            no_admin[0].id,
            Utc::now(),
            "auditor",
            &NewAuditEvent {
                at: Utc::now(),
                actor: "auditor".into(),
                action: "finding.unwaived".into(),
                target: format!("finding:{}", no_admin[0].id),
                detail: "{}".into(),
            },
        )
        .await
        .unwrap();
    let html = export(s.store(), ReportFormat::Html, false).await;
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    // hostile values appear escaped, never as markup
    assert!(
        html.contains("env=&lt;script&gt;alert(1)&lt;/script&gt;"),
        "tag value"
    );
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "message"
    );
    assert!(html.contains("=HYPERLINK(&quot;http://evil.example&quot;,&quot;click&quot;)"));
    assert!(
        html.contains("&lt;b&gt;Everyone&lt;/b&gt;"),
        "Sid in the statement"
    );
    assert!(html.contains("Payments, Prod (111122223333)"));
    for markup in [
        "<script",
        "<img",
        "<b>Everyone",
        "<link",
        "src=\"",
        "href=",
        "@import",
    ] {
        assert!(!html.contains(markup), "{markup} in the report");
    }
    // self-contained and printable
    assert!(html.contains("<style>") && html.contains("@media print"));
    assert!(html.contains("Generated at <time datetime=\"2026-05-28T21:26:40Z\">"));
    // summary, per-account tables, non-compliant keys with their statements and evidence
    assert!(html.contains("<b>33.3&nbsp;%</b>compliant keys"));
    assert!(html.contains("<td class=\"sev sev-critical\">critical</td><td class=\"num\">1</td>"));
    assert!(html.contains("<h3>Payments, Prod (111122223333)</h3>"));
    assert!(html.contains("<td class=\"mono\">k-clean</td>"));
    let noncompliant = &html[html.find("id=\"noncompliant\"").unwrap()..];
    assert!(noncompliant.contains("arn:aws:kms:eu-west-1:444455556666:key/k-public"));
    assert!(noncompliant.contains("arn:aws:kms:us-east-1:111122223333:key/k-deleg"));
    assert!(
        !noncompliant.contains("key/k-clean"),
        "a compliant key in the details"
    );
    assert!(noncompliant.contains("Statement 1 — KMS-PUBLIC, KMS-WILDCARD-ACTION"));
    assert!(
        noncompliant.contains("&quot;Principal&quot;: &quot;*&quot;"),
        "the statement"
    );
    assert!(
        noncompliant.contains(&keyward::sync::sha256_hex(PUBLIC)),
        "evidence hash"
    );
    assert!(
        !noncompliant.contains("KMS-DELEGATION"),
        "resolved findings are not shown"
    );

    let with_resolved = export(s.store(), ReportFormat::Html, true).await;
    let noncompliant = &with_resolved[with_resolved.find("id=\"noncompliant\"").unwrap()..];
    assert!(noncompliant.contains("<code>KMS-DELEGATION</code>"));
    assert!(
        noncompliant.contains("&quot;Sid&quot;: &quot;Enable IAM User Permissions&quot;"),
        "the resolved finding's statement, from the version it was judged on"
    );

    let r = s.get("/api/v1/reports/compliance?format=html").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    assert!(header(&r, "content-disposition").is_empty());
    let over_http = r.text().await.unwrap();
    assert!(over_http.contains("env=&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!over_http.contains("<script"));
}

async fn include_resolved_adds_resolved_findings(db: db::TestDb) {
    seed(db.store()).await;
    let s = Server::start(db).await;
    for (query, rows, rules) in [
        (
            "",
            3,
            vec!["KMS-PUBLIC", "KMS-NO-ADMIN", "KMS-WILDCARD-ACTION"],
        ),
        (
            "&include_resolved=false",
            3,
            vec!["KMS-PUBLIC", "KMS-NO-ADMIN", "KMS-WILDCARD-ACTION"],
        ),
        (
            "&include_resolved=true",
            4,
            vec![
                "KMS-DELEGATION",
                "KMS-NO-ADMIN",
                "KMS-PUBLIC",
                "KMS-WILDCARD-ACTION",
            ],
        ),
    ] {
        let r = s
            .get(&format!("/api/v1/reports/compliance?format=json{query}"))
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{query}");
        let doc: Value = r.json().await.unwrap();
        let findings = doc["findings"].as_array().unwrap();
        assert_eq!(findings.len(), rows, "{query}");
        let got: Vec<&str> = findings
            .iter()
            .map(|f| f["rule_id"].as_str().unwrap())
            .collect();
        assert_eq!(got, rules, "{query}");
        // the summary counts open findings whatever else is listed
        assert_eq!(doc["summary"]["open_findings"], 1, "{query}");
    }
    let r = s
        .get("/api/v1/reports/compliance?format=csv&include_resolved=true")
        .await;
    let csv = r.text().await.unwrap();
    let records = parse_csv(&csv);
    assert_eq!(records.len(), 5);
    let resolved = &records[1];
    assert_eq!(resolved[5], "KMS-DELEGATION");
    assert_eq!(resolved[7], "resolved");
    // evidence of the resolved finding: the delegating version, last fetched at T0
    assert_eq!(resolved[12], keyward::sync::sha256_hex(DELEGATING));
    assert_eq!(resolved[13], "2026-05-28T20:26:40Z");
}

async fn errors_are_problems(db: db::TestDb) {
    seed(db.store()).await;
    let s = Server::start(db).await;
    let body = assert_problem(
        s.get("/api/v1/reports/compliance?format=xml").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("xml") && detail.contains("csv"), "{detail}");
    assert_problem(
        s.get("/api/v1/reports/compliance").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        s.get("/api/v1/reports/compliance?format=csv&include_resolved=maybe")
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        s.get("/api/v1/reports/compliance?format=csv&colour=blue")
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    // no token, or a wrong one: 401 before anything else is looked at
    for token in [None, Some("not-a-token")] {
        let mut request = s
            .http
            .get(format!("{}/api/v1/reports/compliance?format=xml", s.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await.unwrap();
        assert_eq!(header(&r, "www-authenticate"), "Bearer");
        assert_problem(r, StatusCode::UNAUTHORIZED).await;
    }
    // the endpoint is documented
    let doc: Value = s.get("/api/openapi.json").await.json().await.unwrap();
    let op = &doc["paths"]["/api/v1/reports/compliance"]["get"];
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["format", "include_resolved"]);
    let format = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "format")
        .unwrap();
    assert_eq!(format["required"], true);
    assert_eq!(
        format["schema"]["enum"],
        serde_json::json!(["csv", "json", "ocsf", "html"])
    );
    let include_resolved = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "include_resolved")
        .unwrap();
    assert_ne!(include_resolved["required"], true);
    assert_eq!(include_resolved["schema"]["type"], "boolean");
    // every schema the document refers to is in it
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in &all {
        let (kind, name) = r
            .strip_prefix("#/components/")
            .and_then(|r| r.split_once('/'))
            .unwrap();
        assert!(doc["components"][kind][name].is_object(), "dangling {r}");
    }
    for schema in [
        "ComplianceDocument",
        "ReportSummary",
        "ExportFinding",
        "OcsfEvents",
    ] {
        assert!(
            all.iter().any(|r| r.ends_with(&format!("/{schema}"))),
            "{schema} is not referenced"
        );
    }
    let content = op["responses"]["200"]["content"].as_object().unwrap();
    let mut types: Vec<&str> = content.keys().map(String::as_str).collect();
    types.sort();
    assert_eq!(types, ["application/json", "text/csv", "text/html"]);
}

async fn large_export_streams(db: db::TestDb) {
    // 50 keys × 100 findings: five store pages, cache misses and evictions, many chunks
    for batch in 0..5 {
        let updates = (0..10)
            .map(|k| {
                let id = format!("k-{:03}", batch * 10 + k);
                let findings = (0..100)
                    .map(|i| {
                        finding(
                            "KMS-WILDCARD-ACTION",
                            "medium",
                            &format!("statement:{i}"),
                            Some((i, None)),
                            &format!("finding {i} of {id}, with a comma"),
                        )
                    })
                    .collect();
                update(record(A, "us-east-1", &id, &[], &[]), FIXED, findings)
            })
            .collect();
        apply(db.store(), A, "us-east-1", batch, updates).await;
    }
    // the library hands the export over in bounded chunks as it goes…
    for format in [
        ReportFormat::Csv,
        ReportFormat::Json,
        ReportFormat::Ocsf,
        ReportFormat::Html,
    ] {
        let mut chunks = Chunks::default();
        report::write_report(db.store(), format, &options(false), &mut chunks)
            .await
            .unwrap();
        assert!(chunks.sizes.len() > 5, "{format:?}: {:?}", chunks.sizes);
        assert!(
            chunks.sizes.iter().all(|n| *n < 96 * 1024),
            "{format:?}: {:?}",
            chunks.sizes
        );
    }
    // …and stops as soon as nobody reads
    let mut closed = Chunks {
        close_after: Some(1),
        ..Chunks::default()
    };
    let stopped =
        report::write_report(db.store(), ReportFormat::Csv, &options(false), &mut closed).await;
    assert!(
        matches!(stopped, Err(report::ReportError::Closed)),
        "{stopped:?}"
    );
    assert_eq!(closed.sizes.len(), 2, "one chunk taken, one refused");

    let s = Server::start(db).await;
    let r = s.get("/api/v1/reports/compliance?format=csv").await;
    assert_eq!(r.status(), StatusCode::OK);
    // streamed: no length known up front
    assert!(r.headers().get("content-length").is_none());
    let text = r.text().await.unwrap();
    assert_eq!(text.matches("\r\n").count(), 5001);
    let records = parse_csv(&text);
    assert_eq!(records.len(), 5001);
    assert!(
        records[1..]
            .iter()
            .all(|r| r[4].is_empty() && r[7] == "open")
    );
    assert_eq!(records[5000][0], arn(A, "us-east-1", "k-049"));

    let events: Vec<Value> = s
        .get("/api/v1/reports/compliance?format=ocsf")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events.len(), 5000);
    let doc: Value = s
        .get("/api/v1/reports/compliance?format=json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["findings"].as_array().unwrap().len(), 5000);
    assert_eq!(doc["summary"]["open_findings"], 5000);
    assert_eq!(doc["summary"]["keys_noncompliant"], 50);
}

/// Records the size of every chunk; refuses chunks after `close_after` like a reader gone away.
#[derive(Default)]
struct Chunks {
    sizes: Vec<usize>,
    close_after: Option<usize>,
}

#[async_trait::async_trait]
impl report::Sink for Chunks {
    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), report::ReportError> {
        self.sizes.push(chunk.len());
        match self.close_after {
            Some(n) if self.sizes.len() > n => Err(report::ReportError::Closed),
            _ => Ok(()),
        }
    }
}
