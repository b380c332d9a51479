//! The printable HTML report: one self-contained page (inline CSS with print rules, no script,
//! no external asset) with the summary, a table of keys per account, and each non-compliant
//! key with its findings, the offending statements and the evidence hashes. Every value is
//! escaped: aliases, tags and messages come from AWS accounts Keyward does not control.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::rows::{FindingPages, KeyPages, Lookup, ReportFinding, finding_filters, timestamp};
use super::summary::{ReportSummary, SummaryBuilder};
use super::{Out, ReportError, ReportOptions};
use crate::policy::{Policy, RuleId};
use crate::store::{FindingFilter, KeyFilter, KeyRow, PolicyVersionRow, Store};

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut escaped = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

fn esc(s: &str) -> Cow<'_, str> {
    escape_html(s)
}

const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "info"];

const STYLE: &str = r#"
:root { --fg: #1a1a1a; --muted: #5b5b5b; --line: #d0d0d0; --head: #f2f2f2;
  --critical: #8b0000; --high: #c0392b; --medium: #b9770e; --low: #2e6da4; --info: #5b5b5b;
  --ok: #1e7d32; --bad: #b71c1c; }
* { box-sizing: border-box; }
body { font: 10.5pt/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg);
  margin: 2em auto; max-width: 70em; padding: 0 1.5em; }
h1 { font-size: 1.7em; margin: 0 0 .2em; }
h2 { font-size: 1.35em; border-bottom: 2px solid var(--fg); padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1.1em; margin: 1.5em 0 .4em; }
h4 { font-size: 1em; margin: 1em 0 .3em; }
.meta, .muted { color: var(--muted); }
table { border-collapse: collapse; width: 100%; margin: .4em 0 1em; }
th, td { border: 1px solid var(--line); padding: .25em .45em; text-align: left; vertical-align: top; }
th { background: var(--head); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .9em; }
.mono { overflow-wrap: anywhere; }
pre { background: #f7f7f7; border: 1px solid var(--line); padding: .6em; white-space: pre-wrap;
  overflow-wrap: anywhere; margin: .3em 0 .8em; }
.tiles { display: flex; flex-wrap: wrap; gap: .8em; margin: 1em 0; }
.tile { border: 1px solid var(--line); padding: .5em .9em; min-width: 9em; }
.tile b { display: block; font-size: 1.6em; }
.sev { font-weight: 600; text-transform: uppercase; font-size: .85em; }
.sev-critical { color: var(--critical); } .sev-high { color: var(--high); }
.sev-medium { color: var(--medium); } .sev-low { color: var(--low); } .sev-info { color: var(--info); }
.yes { color: var(--ok); font-weight: 600; } .no { color: var(--bad); font-weight: 600; }
article.key { border-top: 1px solid var(--line); margin-top: 1.5em; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1em 1em; margin: .3em 0 .8em; }
dt { color: var(--muted); } dd { margin: 0; }
figure { margin: 0; } figcaption { font-size: .9em; color: var(--muted); }
td.msg { white-space: pre-line; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { margin: 0; max-width: none; padding: 0; font-size: 9.5pt; }
  h2 { break-before: page; } section:first-of-type h2 { break-before: auto; }
  h2, h3, h4 { break-after: avoid; }
  thead { display: table-header-group; }
  tr, figure, .tile { break-inside: avoid; }
  pre { white-space: pre-wrap; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"#;

pub(super) async fn write(
    store: &dyn Store,
    options: &ReportOptions,
    out: &mut Out<'_>,
) -> Result<(), ReportError> {
    let mut lookup = Lookup::new(store).await?;
    // The summary comes first on the page, so it is counted first: one pass over the keys and
    // the open findings, keeping only counters.
    let mut builder = SummaryBuilder::default();
    let mut keys = KeyPages::live(store);
    while let Some(batch) = keys.next().await? {
        batch.iter().for_each(|k| builder.add_key(k));
    }
    let mut open = FindingPages::new(
        store,
        FindingFilter {
            status: Some("open".into()),
            ..FindingFilter::default()
        },
    );
    while let Some(batch) = open.next().await? {
        batch.iter().for_each(|f| builder.add_finding(f));
    }
    let summary = builder.finish(lookup.account_names());

    head(out, options);
    summary_section(out, &summary);
    out.flush_if_full().await?;

    out.push("<section id=\"accounts\">\n<h2>Keys by account</h2>\n");
    for account in &summary.accounts {
        let name = if account.account_name.is_empty() {
            account.account_id.clone()
        } else {
            format!("{} ({})", account.account_name, account.account_id)
        };
        let _ = write!(
            out,
            "<h3>{}</h3>\n<p class=\"muted\">Keys: {} · compliant: {} ({}&nbsp;%) · open findings: {}</p>\n",
            esc(&name),
            account.keys,
            account.keys_compliant,
            account.compliance_percent,
            account.open_findings
        );
        if account.keys == 0 {
            out.push("<p>No keys.</p>\n");
            continue;
        }
        out.push(
            "<table>\n<thead><tr><th>Alias</th><th>Key id</th><th>Region</th><th>State</th>\
             <th>Manager</th><th>Compliant</th><th class=\"num\">Open findings</th></tr></thead>\n<tbody>\n",
        );
        let mut keys = KeyPages::new(
            store,
            KeyFilter {
                account: Some(account.account_id.clone()),
                ..KeyFilter::default()
            },
        );
        while let Some(batch) = keys.next().await? {
            for key in &batch {
                key_row(out, key);
            }
            out.flush_if_full().await?;
        }
        out.push("</tbody>\n</table>\n");
    }
    out.push("</section>\n");

    out.push("<section id=\"noncompliant\">\n<h2>Non-compliant keys</h2>\n");
    let mut any = false;
    let mut keys = KeyPages::new(
        store,
        KeyFilter {
            compliant: Some(false),
            ..KeyFilter::default()
        },
    );
    while let Some(batch) = keys.next().await? {
        for key in &batch {
            any = true;
            key_detail(store, options, &mut lookup, out, key).await?;
            out.flush_if_full().await?;
        }
    }
    if !any {
        out.push("<p>Every key is compliant.</p>\n");
    }
    out.push("</section>\n");
    let _ = write!(
        out,
        "<footer class=\"muted\"><p>Evidence: each finding names the SHA-256 of the policy text it was \
         judged on, exactly as GetKeyPolicy returned it; the stored versions can be fetched from \
         <code>/api/v1/keys/{{key}}/history</code>. Keyward {}.</p></footer>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    Ok(())
}

fn head(out: &mut Out<'_>, options: &ReportOptions) {
    let generated = timestamp(options.generated_at);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>KMS key policy compliance report {generated}</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n<header>\n<h1>KMS key policy compliance report</h1>\n\
         <p class=\"meta\">Generated at <time datetime=\"{generated}\">{generated}</time> by Keyward {}. \
         Findings shown: {}.</p>\n</header>\n",
        env!("CARGO_PKG_VERSION"),
        if options.include_resolved {
            "open, waived and resolved"
        } else {
            "open and waived"
        }
    );
}

fn summary_section(out: &mut Out<'_>, s: &ReportSummary) {
    let _ = write!(
        out,
        "<section id=\"summary\">\n<h2>Summary</h2>\n<div class=\"tiles\">\
         <div class=\"tile\"><b>{}&nbsp;%</b>compliant keys</div>\
         <div class=\"tile\"><b>{}</b>keys</div>\
         <div class=\"tile\"><b>{}</b>compliant</div>\
         <div class=\"tile\"><b>{}</b>non-compliant</div>\
         <div class=\"tile\"><b>{}</b>open findings</div></div>\n",
        s.compliance_percent, s.keys, s.keys_compliant, s.keys_noncompliant, s.open_findings
    );
    out.push(
        "<h3>Open findings by severity</h3>\n<table>\n<thead><tr><th>Severity</th>\
         <th class=\"num\">Open findings</th></tr></thead>\n<tbody>\n",
    );
    for sev in SEVERITIES {
        let n = s.open_findings_by_severity.get(sev).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "<tr><td class=\"sev sev-{sev}\">{sev}</td><td class=\"num\">{n}</td></tr>"
        );
    }
    for (sev, n) in &s.open_findings_by_severity {
        if !SEVERITIES.contains(&sev.as_str()) {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"num\">{n}</td></tr>",
                esc(sev)
            );
        }
    }
    out.push("</tbody>\n</table>\n");

    out.push(
        "<h3>Open findings by rule</h3>\n<table>\n<thead><tr><th>Rule</th><th>Title</th>\
         <th>Severity</th><th class=\"num\">Open findings</th></tr></thead>\n<tbody>\n",
    );
    if s.open_findings_by_rule.is_empty() {
        out.push("<tr><td colspan=\"4\">None.</td></tr>\n");
    }
    for (rule, n) in &s.open_findings_by_rule {
        let info = rule.parse::<RuleId>().ok().map(RuleId::info);
        let (title, sev) = info.map_or(("", ""), |i| (i.title, i.severity.as_str()));
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"sev sev-{sev}\">{sev}</td>\
             <td class=\"num\">{n}</td></tr>",
            esc(rule),
            esc(title)
        );
    }
    out.push("</tbody>\n</table>\n");

    out.push(
        "<h3>By account</h3>\n<table>\n<thead><tr><th>Account</th><th>Name</th>\
         <th class=\"num\">Keys</th><th class=\"num\">Compliant</th><th class=\"num\">Compliance</th>\
         <th class=\"num\">Open findings</th></tr></thead>\n<tbody>\n",
    );
    for a in &s.accounts {
        let _ = writeln!(
            out,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}&nbsp;%</td><td class=\"num\">{}</td></tr>",
            esc(&a.account_id),
            esc(&a.account_name),
            a.keys,
            a.keys_compliant,
            a.compliance_percent,
            a.open_findings
        );
    }
    out.push("</tbody>\n</table>\n</section>\n");
}

fn aliases(key: &KeyRow) -> String {
    if key.key.aliases.is_empty() {
        "—".to_string()
    } else {
        key.key
            .aliases
            .iter()
            .map(|a| esc(a).into_owned())
            .collect::<Vec<_>>()
            .join("<br>")
    }
}

fn yes_no(compliant: bool) -> &'static str {
    if compliant {
        "<span class=\"yes\">yes</span>"
    } else {
        "<span class=\"no\">no</span>"
    }
}

fn key_row(out: &mut Out<'_>, key: &KeyRow) {
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td class=\"num\">{}</td></tr>",
        aliases(key),
        esc(&key.key.key_id),
        esc(&key.key.region),
        esc(&key.key.key_state),
        esc(&key.key.key_manager),
        yes_no(key.open_findings == 0),
        key.open_findings
    );
}

/// A non-compliant key: its facts, its findings, and the statements they point at.
async fn key_detail(
    store: &dyn Store,
    options: &ReportOptions,
    lookup: &mut Lookup<'_>,
    out: &mut Out<'_>,
    key: &KeyRow,
) -> Result<(), ReportError> {
    let k = &key.key;
    // One key's findings and policy versions: small, and released before the next key.
    let mut findings: Vec<ReportFinding> = Vec::new();
    for mut filter in finding_filters(options.include_resolved) {
        filter.key_arn = Some(k.arn.clone());
        let mut pages = FindingPages::new(store, filter);
        while let Some(batch) = pages.next().await? {
            for row in batch {
                findings.push(lookup.finding(row).await?);
            }
        }
    }
    let versions = store.policy_versions(&k.arn).await?;
    let current = key
        .policy_sha256
        .as_deref()
        .and_then(|sha| versions.iter().rev().find(|v| v.sha256 == sha));

    let title = k.aliases.first().unwrap_or(&k.key_id);
    let _ = write!(
        out,
        "<article class=\"key\">\n<h3>{}</h3>\n<dl>\n<dt>ARN</dt><dd class=\"mono\">{}</dd>\n\
         <dt>Account</dt><dd>{}</dd>\n<dt>Region</dt><dd>{}</dd>\n\
         <dt>State</dt><dd>{} · {} · {}</dd>\n<dt>Aliases</dt><dd>{}</dd>\n",
        esc(title),
        esc(&k.arn),
        esc(&account_label(lookup, &k.account_id)),
        esc(&k.region),
        esc(&k.key_state),
        esc(&k.key_manager),
        esc(&k.key_spec),
        aliases(key)
    );
    if !k.tags.is_empty() {
        let tags = k
            .tags
            .iter()
            .map(|(t, v)| format!("<code>{}={}</code>", esc(t), esc(v)))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(out, "<dt>Tags</dt><dd>{tags}</dd>");
    }
    match (current, &key.policy_error) {
        (Some(v), _) => {
            let _ = writeln!(
                out,
                "<dt>Policy SHA-256</dt><dd class=\"mono\">{}</dd>\n\
                 <dt>Policy fetched</dt><dd>{}</dd>",
                esc(&v.sha256),
                timestamp(v.last_seen)
            );
        }
        (None, Some(error)) => {
            let _ = writeln!(out, "<dt>Policy</dt><dd>unreadable: {}</dd>", esc(error));
        }
        (None, None) => out.push("<dt>Policy</dt><dd>not stored</dd>\n"),
    }
    out.push("</dl>\n");

    out.push(
        "<h4>Findings</h4>\n<table>\n<thead><tr><th>Rule</th><th>Severity</th><th>Status</th>\
         <th>Where</th><th>First seen</th><th>Last seen</th><th>Evidence (policy SHA-256)</th>\
         <th>Message</th></tr></thead>\n<tbody>\n",
    );
    for f in &findings {
        let mut status = esc(&f.status).into_owned();
        if let Some(w) = &f.waiver {
            let _ = write!(status, "<br><span class=\"muted\">{}", esc(&w.reason));
            if let Some(at) = w.expires_at {
                let _ = write!(status, " (until {})", timestamp(at));
            }
            status.push_str("</span>");
        }
        let sev = esc(&f.severity);
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td class=\"sev sev-{sev}\">{sev}</td><td>{status}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"msg\">{}</td></tr>",
            esc(&f.rule_id),
            esc(&location(f)),
            timestamp(f.first_seen),
            timestamp(f.last_seen),
            esc(f.policy_sha256.as_deref().unwrap_or("—")),
            esc(&f.message)
        );
        out.flush_if_full().await?;
    }
    out.push("</tbody>\n</table>\n");

    // Each statement once, with the rules that point at it, from the version each was judged on.
    let mut statements: BTreeMap<(String, i64), Vec<&str>> = BTreeMap::new();
    for f in &findings {
        if let (Some(sha), Some(index)) = (&f.policy_sha256, f.statement_index) {
            statements
                .entry((sha.clone(), index))
                .or_default()
                .push(f.rule_id.as_str());
        }
    }
    if !statements.is_empty() {
        out.push("<h4>Offending statements</h4>\n");
    }
    for ((sha, index), rules) in &statements {
        let mut rules = rules.clone();
        rules.sort_unstable();
        rules.dedup();
        let version = versions.iter().rev().find(|v| &v.sha256 == sha);
        let _ = write!(
            out,
            "<figure>\n<figcaption>Statement {index} — {} — policy <span class=\"mono\">{}</span>{}\
             </figcaption>\n",
            esc(&rules.join(", ")),
            esc(sha),
            version.map_or(String::new(), |v| format!(
                ", fetched {}",
                timestamp(v.last_seen)
            ))
        );
        match version.and_then(|v| statement_text(v, *index)) {
            Some(text) => {
                let _ = writeln!(out, "<pre>{}</pre>", esc(&text));
            }
            None => out.push("<p class=\"muted\">The statement is not available.</p>\n"),
        }
        out.push("</figure>\n");
        out.flush_if_full().await?;
    }
    out.push("</article>\n");
    Ok(())
}

fn account_label(lookup: &Lookup<'_>, id: &str) -> String {
    match lookup.account_name(id) {
        name if name.is_empty() => id.to_string(),
        name => format!("{name} ({id})"),
    }
}

/// Where in the policy a finding points, for people.
fn location(f: &ReportFinding) -> String {
    match (f.statement_index, f.sid.as_deref()) {
        (Some(i), Some(sid)) if !sid.is_empty() => format!("statement {i} (\"{sid}\")"),
        (Some(i), _) => format!("statement {i}"),
        (None, _) if f.locator == "key" => "the key".to_string(),
        (None, _) => f.locator.clone(),
    }
}

/// The statement at `index` of a stored policy version, pretty-printed.
fn statement_text(version: &PolicyVersionRow, index: i64) -> Option<String> {
    let policy = Policy::parse(&version.text).ok()?;
    let statement = policy.statements().get(usize::try_from(index).ok()?)?;
    serde_json::to_string_pretty(statement.raw()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(escape_html("plain"), "plain");
        assert_eq!(
            escape_html("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }
}
