//! The `keyward export` JSON document, written incrementally: `generated_at`, `keys`,
//! `findings`, then `summary` (last, because it is counted from the rows written before it).

use serde::Serialize;

use super::rows::{FindingPages, KeyPages, Lookup, finding_filters};
use super::summary::SummaryBuilder;
use super::{ExportFinding, ExportKey, Out, ReportError, ReportOptions};
use crate::store::Store;

pub(super) async fn write(
    store: &dyn Store,
    options: &ReportOptions,
    out: &mut Out<'_>,
) -> Result<(), ReportError> {
    let mut lookup = Lookup::new(store).await?;
    let mut summary = SummaryBuilder::default();
    out.push("{\n  \"generated_at\": ");
    out.push_json(&options.generated_at)?;

    out.push(",\n  \"keys\": [");
    let mut array = Array::default();
    let mut keys = KeyPages::live(store);
    while let Some(batch) = keys.next().await? {
        for key in batch {
            summary.add_key(&key);
            array.item(out, &ExportKey::from(key))?;
        }
        out.flush_if_full().await?;
    }
    array.close(out);

    out.push(",\n  \"findings\": [");
    let mut array = Array::default();
    for filter in finding_filters(options.include_resolved) {
        let mut findings = FindingPages::new(store, filter);
        while let Some(batch) = findings.next().await? {
            for row in batch {
                summary.add_finding(&row);
                let finding = ExportFinding::from(lookup.finding(row).await?);
                array.item(out, &finding)?;
                out.flush_if_full().await?;
            }
        }
    }
    array.close(out);

    out.push(",\n  \"summary\": ");
    pretty(out, &summary.finish(lookup.account_names()), "  ")?;
    out.push("\n}\n");
    Ok(())
}

/// Writes the items of a JSON array one by one, pretty-printed at the document's depth.
#[derive(Default)]
struct Array {
    items: u64,
}

impl Array {
    fn item<T: Serialize>(&mut self, out: &mut Out<'_>, value: &T) -> Result<(), ReportError> {
        out.push(if self.items == 0 { "\n    " } else { ",\n    " });
        self.items += 1;
        pretty(out, value, "    ")
    }

    fn close(self, out: &mut Out<'_>) {
        out.push(if self.items == 0 { "]" } else { "\n  ]" });
    }
}

/// Pretty JSON indented by `indent` after its first line. Serialised JSON has no raw newline
/// inside a string, so re-indenting line by line is safe.
fn pretty<T: Serialize + ?Sized>(
    out: &mut Out<'_>,
    value: &T,
    indent: &str,
) -> Result<(), ReportError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| ReportError::Encode(e.to_string()))?;
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push("\n");
            out.push(indent);
        }
        out.push(line);
    }
    Ok(())
}
