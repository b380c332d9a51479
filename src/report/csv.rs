//! CSV: one RFC 4180 row per finding (CRLF, quotes only where needed, UTF-8, header row), safe
//! to open in a spreadsheet: a cell that would start a formula is neutralised (OWASP CSV
//! injection guidance).

use std::borrow::Cow;

use super::rows::{FindingPages, Lookup, ReportFinding, finding_filters, timestamp};
use super::{Out, ReportError, ReportOptions};
use crate::store::Store;

/// The header row's column names, in order.
pub const CSV_HEADER: [&str; 15] = [
    "key_arn",
    "account_id",
    "account_name",
    "region",
    "aliases",
    "rule_id",
    "severity",
    "status",
    "waiver_reason",
    "waiver_expires_at",
    "first_seen",
    "last_seen",
    "policy_sha256",
    "policy_fetched_at",
    "message",
];

pub(super) async fn write(
    store: &dyn Store,
    options: &ReportOptions,
    out: &mut Out<'_>,
) -> Result<(), ReportError> {
    let mut lookup = Lookup::new(store).await?;
    write_row(out, CSV_HEADER.iter().map(|s| Cow::Borrowed(*s)));
    for filter in finding_filters(options.include_resolved) {
        let mut findings = FindingPages::new(store, filter);
        while let Some(batch) = findings.next().await? {
            for row in batch {
                let finding = lookup.finding(row).await?;
                write_row(out, cells(&finding).into_iter());
                out.flush_if_full().await?;
            }
        }
    }
    Ok(())
}

/// The cells of a finding's row, in [`CSV_HEADER`] order.
fn cells(f: &ReportFinding) -> [Cow<'_, str>; 15] {
    let opt_time =
        |t: Option<chrono::DateTime<chrono::Utc>>| Cow::Owned(t.map(timestamp).unwrap_or_default());
    [
        Cow::Borrowed(f.key_arn.as_str()),
        Cow::Borrowed(f.account_id.as_str()),
        Cow::Borrowed(f.account_name.as_str()),
        Cow::Borrowed(f.region.as_str()),
        Cow::Owned(f.aliases.join(" ")),
        Cow::Borrowed(f.rule_id.as_str()),
        Cow::Borrowed(f.severity.as_str()),
        Cow::Borrowed(f.status.as_str()),
        Cow::Borrowed(f.waiver.as_ref().map_or("", |w| w.reason.as_str())),
        opt_time(f.waiver.as_ref().and_then(|w| w.expires_at)),
        Cow::Owned(timestamp(f.first_seen)),
        Cow::Owned(timestamp(f.last_seen)),
        Cow::Borrowed(f.policy_sha256.as_deref().unwrap_or("")),
        opt_time(f.policy_fetched_at),
        Cow::Borrowed(f.message.as_str()),
    ]
}

fn write_row<'c>(out: &mut Out<'_>, cells: impl Iterator<Item = Cow<'c, str>>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(",");
        }
        push_cell(out, &neutralise_formula(&cell));
    }
    out.push("\r\n");
}

/// RFC 4180: a field holding a comma, a double quote, CR or LF is quoted, its quotes doubled.
fn push_cell(out: &mut Out<'_>, cell: &str) {
    if cell.contains([',', '"', '\r', '\n']) {
        out.push("\"");
        out.push(&cell.replace('"', "\"\""));
        out.push("\"");
    } else {
        out.push(cell);
    }
}

/// A cell a spreadsheet would read as a formula (it starts with `=`, `+`, `-`, `@`, a tab or
/// a carriage return) gets a leading `'`, so it is shown as text and never evaluated.
pub fn neutralise_formula(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> String {
        let mut sink = Vec::new();
        let mut out = Out::new(&mut sink);
        write_row(&mut out, cells.iter().map(|c| Cow::Borrowed(*c)));
        String::from_utf8(std::mem::take(&mut out.buf)).unwrap()
    }

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(row(&["a", "b c", ""]), "a,b c,\r\n");
        assert_eq!(row(&["x,y"]), "\"x,y\"\r\n");
        assert_eq!(row(&["say \"hi\""]), "\"say \"\"hi\"\"\"\r\n");
        assert_eq!(row(&["two\nlines", "cr\r"]), "\"two\nlines\",\"cr\r\"\r\n");
        assert_eq!(row(&["ünïcødé"]), "ünïcødé\r\n");
    }

    #[test]
    fn formulas_are_neutralised() {
        for cell in ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise_formula(cell), format!("'{cell}"));
        }
        for cell in ["", "a=b", "KMS-DELEGATION", "'already"] {
            assert_eq!(neutralise_formula(cell), cell);
        }
        // neutralised first, then quoted
        assert_eq!(
            row(&["=HYPERLINK(\"http://x\",\"y\")"]),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"\r\n"
        );
        assert_eq!(row(&["\rcr"]), "\"'\rcr\"\r\n");
    }
}
