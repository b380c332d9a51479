//! Statement-level diff of two key policies, so a human can review what a change does to a key.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};
use similar::{ChangeTag, TextDiff};

use super::document::{Policy, Statement};

/// What happened to one statement between the two documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Unchanged,
    Added,
    Removed,
    Modified,
}

/// One statement of either document and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatementChange {
    pub kind: ChangeKind,
    /// Position in the `before` document (`None` for Added).
    pub before_index: Option<usize>,
    /// Position in the `after` document (`None` for Removed).
    pub after_index: Option<usize>,
    /// The non-empty Sid of the `after` statement, or of the `before` one when it was removed.
    pub sid: Option<String>,
    /// The statement JSON before (`None` for Added).
    pub before: Option<Value>,
    /// The statement JSON after (`None` for Removed).
    pub after: Option<Value>,
    /// For Modified: the top-level statement fields that differ, sorted by name.
    pub fields: Vec<String>,
}

/// One top-level document field (not `Statement`) that differs, with its value on each side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub name: String,
    /// `None` when the field was added.
    pub before: Option<Value>,
    /// `None` when the field was removed.
    pub after: Option<Value>,
}

/// Every statement of both documents, paired up, plus the changes outside `Statement`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyDiff {
    /// In `after` order; a removed statement follows the surviving statement that preceded it.
    pub statements: Vec<StatementChange>,
    /// Top-level keys other than `Statement` that were added, removed or changed, sorted by name.
    pub document_fields: Vec<String>,
    /// The same keys as `document_fields`, with their values.
    pub document_changes: Vec<FieldChange>,
}

/// Compares two policies statement by statement.
///
/// Statements are paired in four passes, each over what the earlier ones left: (1) by a Sid
/// that is non-empty and unique in both documents; (2) by identical JSON, in document order;
/// (3) by resemblance: the same `Effect` and the same principal block or the same action
/// block, the pairs that share the most fields first; (4) the rest are Removed or Added.
pub fn diff(before: &Policy, after: &Policy) -> PolicyDiff {
    let old = before.statements();
    let new = after.statements();

    let mut new_to_old: Vec<Option<usize>> = vec![None; new.len()];
    let mut old_to_new: Vec<Option<usize>> = vec![None; old.len()];
    for (i, j) in pair_statements(old, new) {
        new_to_old[j] = Some(i);
        old_to_new[i] = Some(j);
    }

    // A removed statement rides behind the nearest earlier statement that survived, so the
    // deletion shows up where the reader last saw it rather than at the end of the list.
    let mut leading = Vec::new();
    let mut trailing: Vec<Vec<usize>> = vec![Vec::new(); new.len()];
    let mut anchor: Option<usize> = None;
    for (i, paired) in old_to_new.iter().enumerate() {
        match (*paired, anchor) {
            (Some(j), _) => anchor = Some(j),
            (None, Some(j)) => trailing[j].push(i),
            (None, None) => leading.push(i),
        }
    }

    let mut statements = Vec::with_capacity(old.len() + new.len());
    statements.extend(leading.iter().map(|&i| removed(&old[i])));
    for (j, st) in new.iter().enumerate() {
        statements.push(match new_to_old[j] {
            Some(i) => kept(&old[i], st),
            None => added(st),
        });
        statements.extend(trailing[j].iter().map(|&i| removed(&old[i])));
    }

    // `Statement` is compared statement by statement above; comparing it here too would report
    // a change when only its shape went from a single object to a one-element array.
    let document_fields = differing_fields(before.raw(), after.raw(), &["Statement"]);
    let document_changes = document_fields
        .iter()
        .map(|name| FieldChange {
            name: name.clone(),
            before: before.raw().get(name).cloned(),
            after: after.raw().get(name).cloned(),
        })
        .collect();

    PolicyDiff {
        statements,
        document_fields,
        document_changes,
    }
}

impl PolicyDiff {
    /// True when every statement is unchanged (order aside) and no document field changed.
    pub fn is_empty(&self) -> bool {
        self.document_fields.is_empty()
            && self
                .statements
                .iter()
                .all(|c| c.kind == ChangeKind::Unchanged)
    }

    /// `(added, removed, modified)` statement counts.
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |kind| self.statements.iter().filter(|c| c.kind == kind).count();
        (
            count(ChangeKind::Added),
            count(ChangeKind::Removed),
            count(ChangeKind::Modified),
        )
    }

    /// A terminal rendering: a header line per statement, then a line diff of its pretty JSON.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        if !self.document_fields.is_empty() {
            let _ = writeln!(
                out,
                "~ document: {} changed",
                self.document_fields.join(", ")
            );
            // These are small values such as `Version` and `Id`: one compact line per side
            // reads better than a line diff.
            for field in &self.document_changes {
                for (sign, value) in [("-", &field.before), ("+", &field.after)] {
                    if let Some(value) = value {
                        let _ = writeln!(out, "{sign} \"{}\": {}", field.name, compact(value));
                    }
                }
            }
            out.push('\n');
        }
        for change in &self.statements {
            render_statement(&mut out, change);
        }
        out
    }
}

impl StatementChange {
    /// `statement N ("Sid")`, numbered in `after`, or in `before` for a removed statement.
    pub fn label(&self) -> String {
        let index = self.after_index.or(self.before_index).unwrap_or_default();
        match &self.sid {
            Some(sid) => format!("statement {index} (\"{sid}\")"),
            None => format!("statement {index}"),
        }
    }
}

/// Pairs `(before index, after index)` of the statements that are the same statement.
fn pair_statements(old: &[Statement], new: &[Statement]) -> Vec<(usize, usize)> {
    let mut old_free = vec![true; old.len()];
    let mut new_free = vec![true; new.len()];
    let mut pairs = Vec::new();

    // A Sid is the only identity a statement has, but only when it names exactly one statement
    // on each side: AWS does not require Sids to be unique, and a duplicated one names nothing.
    let old_sids = unique_sids(old);
    let new_sids = unique_sids(new);
    for (j, st) in new.iter().enumerate() {
        let Some(sid) = sid_of(st) else { continue };
        if let (Some(Some(_)), Some(Some(i))) = (new_sids.get(sid), old_sids.get(sid)) {
            pairs.push((*i, j));
            old_free[*i] = false;
            new_free[j] = false;
        }
    }

    for (j, st) in new.iter().enumerate() {
        if !new_free[j] {
            continue;
        }
        // Map equality ignores key order, so a statement whose keys were merely reordered
        // still counts as identical.
        if let Some(i) = (0..old.len()).find(|&i| old_free[i] && old[i].raw() == st.raw()) {
            pairs.push((i, j));
            old_free[i] = false;
            new_free[j] = false;
        }
    }

    // Greedy over every plausible pair, best first. A Sid left over here is duplicated, so it
    // only breaks ties in content; then the closest positions win, then the earliest, so the
    // result never depends on iteration order.
    let mut candidates = Vec::new();
    for (i, o) in old.iter().enumerate().filter(|(i, _)| old_free[*i]) {
        for (j, n) in new.iter().enumerate().filter(|(j, _)| new_free[*j]) {
            if let Some(score) = resemblance(o, n) {
                let same_sid = sid_of(o).is_some() && sid_of(o) == sid_of(n);
                candidates.push((Reverse(score), Reverse(same_sid), i.abs_diff(j), j, i));
            }
        }
    }
    candidates.sort_unstable();
    for (_, _, _, j, i) in candidates {
        if old_free[i] && new_free[j] {
            pairs.push((i, j));
            old_free[i] = false;
            new_free[j] = false;
        }
    }

    pairs
}

/// How alike two statements are, or `None` when they are not plausibly the same statement.
///
/// An edit keeps a statement's intent, who may do what: the same `Effect`, and the same
/// principals or the same actions. When both of those changed it is a different statement, and
/// Removed plus Added says so more honestly than Modified. The score counts the top-level fields
/// with equal values, leaving out the Sid: what a statement grants says more than its name.
fn resemblance(old: &Statement, new: &Statement) -> Option<usize> {
    let same = |keys: &[&str]| keys.iter().all(|k| old.raw().get(*k) == new.raw().get(*k));
    let plausible = old.effect == new.effect
        && (same(&["Principal", "NotPrincipal"]) || same(&["Action", "NotAction"]));
    if !plausible {
        return None;
    }
    let score = union_keys(old.raw(), new.raw())
        .filter(|k| *k != "Sid" && old.raw().get(*k) == new.raw().get(*k))
        .count();
    Some(score)
}

/// Each non-empty Sid mapped to its index, or to `None` when several statements carry it.
fn unique_sids(statements: &[Statement]) -> HashMap<&str, Option<usize>> {
    let mut sids: HashMap<&str, Option<usize>> = HashMap::new();
    for (i, st) in statements.iter().enumerate() {
        if let Some(sid) = sid_of(st) {
            sids.entry(sid)
                .and_modify(|seen| *seen = None)
                .or_insert(Some(i));
        }
    }
    sids
}

/// An empty Sid is allowed by AWS but identifies nothing, so it counts as no Sid.
fn sid_of(st: &Statement) -> Option<&str> {
    st.sid.as_deref().filter(|s| !s.is_empty())
}

fn union_keys<'a>(
    a: &'a Map<String, Value>,
    b: &'a Map<String, Value>,
) -> impl Iterator<Item = &'a str> {
    a.keys()
        .chain(b.keys().filter(|k| !a.contains_key(*k)))
        .map(String::as_str)
}

/// The keys, outside `skip`, whose values differ or exist on one side only, sorted.
fn differing_fields(a: &Map<String, Value>, b: &Map<String, Value>, skip: &[&str]) -> Vec<String> {
    let mut fields: Vec<String> = union_keys(a, b)
        .filter(|k| !skip.contains(k) && a.get(*k) != b.get(*k))
        .map(str::to_string)
        .collect();
    fields.sort_unstable();
    fields
}

fn kept(old: &Statement, new: &Statement) -> StatementChange {
    let fields = differing_fields(old.raw(), new.raw(), &[]);
    StatementChange {
        kind: if fields.is_empty() {
            ChangeKind::Unchanged
        } else {
            ChangeKind::Modified
        },
        before_index: Some(old.index),
        after_index: Some(new.index),
        sid: sid_of(new).map(str::to_string),
        before: Some(Value::Object(old.raw().clone())),
        after: Some(Value::Object(new.raw().clone())),
        fields,
    }
}

fn added(new: &Statement) -> StatementChange {
    StatementChange {
        kind: ChangeKind::Added,
        before_index: None,
        after_index: Some(new.index),
        sid: sid_of(new).map(str::to_string),
        before: None,
        after: Some(Value::Object(new.raw().clone())),
        fields: Vec::new(),
    }
}

fn removed(old: &Statement) -> StatementChange {
    StatementChange {
        kind: ChangeKind::Removed,
        before_index: Some(old.index),
        after_index: None,
        sid: sid_of(old).map(str::to_string),
        before: Some(Value::Object(old.raw().clone())),
        after: None,
        fields: Vec::new(),
    }
}

fn render_statement(out: &mut String, change: &StatementChange) {
    let label = change.label();
    let moved = match (change.before_index, change.after_index) {
        (Some(i), Some(j)) if i != j => format!(", moved from statement {i}"),
        _ => String::new(),
    };
    let _ = match change.kind {
        ChangeKind::Unchanged => writeln!(out, "  {label} unchanged{moved}"),
        ChangeKind::Added => writeln!(out, "+ {label} added"),
        ChangeKind::Removed => writeln!(out, "- {label} removed"),
        ChangeKind::Modified => writeln!(
            out,
            "~ {label}: {} changed{moved}",
            change.fields.join(", ")
        ),
    };
    if change.kind == ChangeKind::Unchanged {
        return;
    }
    let old = change.before.as_ref().map(pretty).unwrap_or_default();
    let new = change.after.as_ref().map(pretty).unwrap_or_default();
    for line in TextDiff::from_lines(&old, &new).iter_all_changes() {
        let sign = match line.tag() {
            ChangeTag::Delete => "- ",
            ChangeTag::Insert => "+ ",
            ChangeTag::Equal => "  ",
        };
        let _ = writeln!(out, "{sign}{}", line.value().trim_end_matches('\n'));
    }
    // A blank line ends the block so the next header does not read as part of this JSON.
    out.push('\n');
}

/// Pretty JSON ending in a newline, so the last line of each side compares like the others.
fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROOT: &str = "arn:aws:iam::111122223333:root";
    const ADMIN: &str = "arn:aws:iam::111122223333:role/KeyAdmin";
    const APP: &str = "arn:aws:iam::111122223333:role/App";

    fn policy(statements: &[Value]) -> Policy {
        document(json!({"Version": "2012-10-17", "Statement": statements}))
    }

    fn document(value: Value) -> Policy {
        Policy::from_value(value).expect("valid test policy")
    }

    /// An Allow statement; `sid` `None` leaves the Sid out.
    fn allow(sid: Option<&str>, principal: &str, action: &str) -> Value {
        let mut st = json!({
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": action,
            "Resource": "*"
        });
        if let (Some(sid), Value::Object(map)) = (sid, &mut st) {
            map.shift_insert(0, "Sid".into(), json!(sid));
        }
        st
    }

    fn with_condition(mut st: Value) -> Value {
        st["Condition"] = json!({"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}});
        st
    }

    fn kinds(d: &PolicyDiff) -> Vec<ChangeKind> {
        d.statements.iter().map(|c| c.kind).collect()
    }

    fn indices(d: &PolicyDiff) -> Vec<(Option<usize>, Option<usize>)> {
        d.statements
            .iter()
            .map(|c| (c.before_index, c.after_index))
            .collect()
    }

    fn root() -> Value {
        allow(Some("EnableRoot"), ROOT, "kms:*")
    }

    use ChangeKind::{Added, Modified, Removed, Unchanged};

    #[test]
    fn identical_documents_are_empty() {
        let p = policy(&[root(), allow(None, APP, "kms:Decrypt")]);
        let d = diff(&p, &p);
        assert!(d.is_empty());
        assert_eq!(d.counts(), (0, 0, 0));
        assert_eq!(indices(&d), [(Some(0), Some(0)), (Some(1), Some(1))]);
        assert!(d.document_fields.is_empty());
        assert_eq!(
            d.render_text(),
            "  statement 0 (\"EnableRoot\") unchanged\n  statement 1 unchanged\n"
        );
    }

    #[test]
    fn single_object_statement_equals_one_element_array() {
        let one = document(json!({"Version": "2012-10-17", "Statement": root()}));
        let many = policy(&[root()]);
        assert!(diff(&one, &many).is_empty());
        assert!(diff(&many, &one).is_empty());
    }

    #[test]
    fn key_order_inside_a_statement_is_not_a_change() {
        let before = policy(&[
            json!({"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}),
        ]);
        let after = policy(&[
            json!({"Resource": "*", "Action": "kms:Decrypt", "Principal": "*", "Effect": "Allow"}),
        ]);
        assert!(diff(&before, &after).is_empty());
    }

    #[test]
    fn added_statement() {
        let before = policy(&[root(), allow(Some("Use"), APP, "kms:Decrypt")]);
        let grant = allow(Some("Admin"), ADMIN, "kms:Put*");
        let after = policy(&[
            root(),
            allow(Some("Use"), APP, "kms:Decrypt"),
            grant.clone(),
        ]);
        let d = diff(&before, &after);
        assert!(!d.is_empty());
        assert_eq!(d.counts(), (1, 0, 0));
        assert_eq!(kinds(&d), [Unchanged, Unchanged, Added]);
        let change = &d.statements[2];
        assert_eq!(change.after_index, Some(2));
        assert_eq!(change.before_index, None);
        assert_eq!(change.before, None);
        assert_eq!(change.after, Some(grant));
        assert_eq!(change.sid.as_deref(), Some("Admin"));
        let text = d.render_text();
        assert!(text.contains("+ statement 2 (\"Admin\") added\n"), "{text}");
        assert!(text.contains("\n+   \"Sid\": \"Admin\",\n"), "{text}");
        assert!(!text.contains("\n- "), "{text}");
    }

    #[test]
    fn removed_statement_stays_near_its_former_position() {
        let a = allow(Some("A"), ROOT, "kms:*");
        let b = allow(Some("B"), APP, "kms:Decrypt");
        let c = allow(Some("C"), ADMIN, "kms:Put*");
        let d = diff(
            &policy(&[a.clone(), b.clone(), c.clone()]),
            &policy(&[a.clone(), c.clone()]),
        );
        assert_eq!(d.counts(), (0, 1, 0));
        assert_eq!(kinds(&d), [Unchanged, Removed, Unchanged]);
        assert_eq!(
            indices(&d),
            [(Some(0), Some(0)), (Some(1), None), (Some(2), Some(1))]
        );
        assert_eq!(d.statements[1].before, Some(b.clone()));
        assert_eq!(d.statements[1].after, None);
        let text = d.render_text();
        assert!(text.contains("- statement 1 (\"B\") removed\n"), "{text}");
        assert!(text.contains("\n-   \"Sid\": \"B\",\n"), "{text}");
        assert!(!text.contains("\n+ "), "{text}");

        // With no surviving statement before it, a removal comes first.
        let d = diff(&policy(&[b, a.clone(), c.clone()]), &policy(&[a, c]));
        assert_eq!(kinds(&d), [Removed, Unchanged, Unchanged]);
        assert_eq!(d.statements[0].before_index, Some(0));
    }

    #[test]
    fn modified_statement_names_the_changed_fields() {
        let before = policy(&[root(), allow(Some("Use"), APP, "kms:Decrypt")]);
        let after = policy(&[root(), allow(Some("Use"), APP, "kms:Encrypt")]);
        let d = diff(&before, &after);
        assert_eq!(d.counts(), (0, 0, 1));
        assert_eq!(kinds(&d), [Unchanged, Modified]);
        assert_eq!(d.statements[1].fields, ["Action"]);
        let text = d.render_text();
        assert!(
            text.contains("~ statement 1 (\"Use\"): Action changed\n"),
            "{text}"
        );
        assert!(
            text.contains("\n-   \"Action\": \"kms:Decrypt\",\n"),
            "{text}"
        );
        assert!(
            text.contains("\n+   \"Action\": \"kms:Encrypt\",\n"),
            "{text}"
        );
        assert!(text.contains("\n    \"Effect\": \"Allow\",\n"), "{text}");
    }

    #[test]
    fn a_unique_sid_pairs_statements_however_much_they_changed() {
        let before = policy(&[allow(Some("Use"), APP, "kms:Decrypt")]);
        let after = policy(&[
            json!({"Sid": "Use", "Effect": "Deny", "Principal": "*", "Action": "kms:Sign", "Resource": "*"}),
        ]);
        let d = diff(&before, &after);
        assert_eq!(kinds(&d), [Modified]);
        assert_eq!(d.statements[0].fields, ["Action", "Effect", "Principal"]);
    }

    #[test]
    fn reordered_statements_are_unchanged_and_follow_the_new_order() {
        let a = allow(Some("A"), ROOT, "kms:*");
        let b = allow(Some("B"), APP, "kms:Decrypt");
        let c = allow(Some("C"), ADMIN, "kms:Put*");
        let d = diff(
            &policy(&[a.clone(), b.clone(), c.clone()]),
            &policy(&[c, a, b]),
        );
        assert!(d.is_empty());
        let sids: Vec<_> = d.statements.iter().map(|c| c.sid.as_deref()).collect();
        assert_eq!(sids, [Some("C"), Some("A"), Some("B")]);
        assert_eq!(
            indices(&d),
            [(Some(2), Some(0)), (Some(0), Some(1)), (Some(1), Some(2))]
        );
        let text = d.render_text();
        assert!(
            text.contains("  statement 0 (\"C\") unchanged, moved from statement 2\n"),
            "{text}"
        );
    }

    #[test]
    fn reordered_unnamed_statements_pair_by_identical_json() {
        let x = allow(None, APP, "kms:Decrypt");
        let y = allow(None, ADMIN, "kms:Put*");
        let d = diff(&policy(&[x.clone(), y.clone()]), &policy(&[y, x]));
        assert!(d.is_empty());
        assert_eq!(indices(&d), [(Some(1), Some(0)), (Some(0), Some(1))]);
    }

    #[test]
    fn an_untouched_copy_wins_over_an_edited_one() {
        // The edited copy shares as many fields as the identical one and sits closer, so only
        // the identical-JSON pass keeps the original statement Unchanged.
        let x = allow(None, APP, "kms:Decrypt");
        let d = diff(
            &policy(std::slice::from_ref(&x)),
            &policy(&[with_condition(x.clone()), x]),
        );
        assert_eq!(kinds(&d), [Added, Unchanged]);
        assert_eq!(d.statements[1].before_index, Some(0));
    }

    #[test]
    fn renamed_sid_is_a_modification() {
        let before = policy(&[root(), allow(Some("Old"), APP, "kms:Decrypt")]);
        let after = policy(&[root(), allow(Some("New"), APP, "kms:Decrypt")]);
        let d = diff(&before, &after);
        assert_eq!(d.counts(), (0, 0, 1));
        assert_eq!(kinds(&d), [Unchanged, Modified]);
        let change = &d.statements[1];
        assert_eq!(change.fields, ["Sid"]);
        assert_eq!(
            (change.before_index, change.after_index),
            (Some(1), Some(1))
        );
        assert_eq!(change.sid.as_deref(), Some("New"));
        let text = d.render_text();
        assert!(
            text.contains("~ statement 1 (\"New\"): Sid changed\n"),
            "{text}"
        );
        assert!(
            text.contains("\n-   \"Sid\": \"Old\",\n+   \"Sid\": \"New\",\n"),
            "{text}"
        );
    }

    #[test]
    fn merged_condition_pairs_with_the_closest_statement() {
        // Both old statements resemble both new ones (same principal), and by position each would
        // pair with the wrong one: only the score picks the statement with the same action.
        let decrypt = allow(None, APP, "kms:Decrypt");
        let encrypt = allow(None, APP, "kms:Encrypt");
        let before = policy(&[decrypt.clone(), encrypt.clone()]);
        let after = policy(&[with_condition(encrypt), with_condition(decrypt)]);
        let d = diff(&before, &after);
        assert_eq!(d.counts(), (0, 0, 2));
        assert_eq!(indices(&d), [(Some(1), Some(0)), (Some(0), Some(1))]);
        for change in &d.statements {
            assert_eq!(change.kind, Modified);
            assert_eq!(change.fields, ["Condition"]);
        }
        let text = d.render_text();
        assert!(
            text.contains("~ statement 0: Condition changed, moved from statement 1\n"),
            "{text}"
        );
        assert!(text.contains("\n+   \"Condition\": {\n"), "{text}");
    }

    #[test]
    fn content_outranks_a_duplicated_sid_which_outranks_position() {
        // `Dup` names two statements before, so it is no identity; the new statement has the
        // Sid of statement 0 but the principal and action of statement 1.
        let after = policy(&[with_condition(allow(Some("Dup"), APP, "kms:Decrypt"))]);
        let before = policy(&[
            allow(Some("Dup"), ADMIN, "kms:Decrypt"),
            allow(Some("Other"), APP, "kms:Decrypt"),
            allow(Some("Dup"), ADMIN, "kms:Put*"),
        ]);
        let d = diff(&before, &after);
        assert_eq!(d.statements[1].kind, Modified);
        assert_eq!(d.statements[1].before_index, Some(1));
        assert_eq!(d.statements[1].fields, ["Condition", "Sid"]);

        // Equal content: the shared Sid wins over the closer position.
        let before = policy(&[
            allow(Some("Other"), APP, "kms:Decrypt"),
            allow(Some("Dup"), APP, "kms:Decrypt"),
            allow(Some("Dup"), ADMIN, "kms:Put*"),
        ]);
        let d = diff(&before, &after);
        let modified: Vec<_> = d.statements.iter().filter(|c| c.kind == Modified).collect();
        assert_eq!(modified.len(), 1);
        assert_eq!(modified[0].before_index, Some(1));
        assert_eq!(modified[0].fields, ["Condition"]);
    }

    #[test]
    fn a_statement_with_new_principals_and_actions_is_replaced_not_modified() {
        let before = policy(&[root(), allow(None, APP, "kms:Decrypt")]);
        let after = policy(&[root(), allow(None, ADMIN, "kms:Put*")]);
        let d = diff(&before, &after);
        assert_eq!(d.counts(), (1, 1, 0));
        // Like a line diff: the old statement goes out before the new one takes its place.
        assert_eq!(kinds(&d), [Unchanged, Removed, Added]);
    }

    #[test]
    fn effect_flip_is_not_paired_without_a_sid() {
        let deny = json!({"Effect": "Deny", "Principal": {"AWS": APP}, "Action": "kms:Decrypt", "Resource": "*"});
        let d = diff(
            &policy(&[allow(None, APP, "kms:Decrypt")]),
            &policy(&[deny]),
        );
        assert_eq!(d.counts(), (1, 1, 0));
    }

    #[test]
    fn document_field_changes() {
        let before = document(
            json!({"Version": "2012-10-17", "Id": "key-default-1", "Statement": [root()]}),
        );
        let after =
            document(json!({"Id": "key-consolepolicy-3", "Statement": [root()], "Comment": "x"}));
        let d = diff(&before, &after);
        assert!(!d.is_empty());
        assert_eq!(d.counts(), (0, 0, 0));
        assert_eq!(d.document_fields, ["Comment", "Id", "Version"]);
        assert_eq!(
            d.document_changes[1],
            FieldChange {
                name: "Id".into(),
                before: Some(json!("key-default-1")),
                after: Some(json!("key-consolepolicy-3")),
            }
        );
        let text = d.render_text();
        assert!(
            text.starts_with("~ document: Comment, Id, Version changed\n"),
            "{text}"
        );
        assert!(text.contains("\n+ \"Comment\": \"x\"\n"), "{text}");
        assert!(
            text.contains("\n- \"Id\": \"key-default-1\"\n+ \"Id\": \"key-consolepolicy-3\"\n"),
            "{text}"
        );
        assert!(text.contains("\n- \"Version\": \"2012-10-17\"\n"), "{text}");
        assert!(!text.contains("+ \"Version\""), "{text}");
    }

    #[test]
    fn duplicate_sids_fall_back_to_content() {
        let dup_decrypt = allow(Some("Dup"), APP, "kms:Decrypt");
        let dup_encrypt = allow(Some("Dup"), APP, "kms:Encrypt");
        let before = policy(&[dup_decrypt.clone(), dup_encrypt.clone()]);
        let after = policy(&[
            dup_encrypt,
            with_condition(dup_decrypt),
            allow(Some("Dup"), ADMIN, "kms:Put*"),
        ]);
        let d = diff(&before, &after);
        assert_eq!(d.counts(), (1, 0, 1));
        assert_eq!(kinds(&d), [Unchanged, Modified, Added]);
        assert_eq!(
            indices(&d),
            [(Some(1), Some(0)), (Some(0), Some(1)), (None, Some(2))]
        );
        assert_eq!(d.statements[1].fields, ["Condition"]);
        assert!(d.render_text().contains("+ statement 2 (\"Dup\") added\n"));
    }

    #[test]
    fn a_sid_duplicated_on_one_side_only_is_not_an_identity() {
        // Were `Dup` paired by Sid, the first new statement would absorb the old one whatever its
        // content; by content the old statement is unchanged at position 1.
        let before = policy(&[allow(Some("Dup"), APP, "kms:Decrypt")]);
        let after = policy(&[
            allow(Some("Dup"), ADMIN, "kms:Put*"),
            allow(Some("Dup"), APP, "kms:Decrypt"),
        ]);
        let d = diff(&before, &after);
        assert_eq!(kinds(&d), [Added, Unchanged]);
        assert_eq!(d.statements[1].before_index, Some(0));
    }

    #[test]
    fn empty_sids_are_no_sids() {
        let x = allow(Some(""), APP, "kms:Decrypt");
        let y = allow(Some(""), ADMIN, "kms:Put*");
        let d = diff(&policy(&[x.clone(), y.clone()]), &policy(&[y, x]));
        assert!(d.is_empty());
        assert!(d.statements.iter().all(|c| c.sid.is_none()));
        assert!(
            d.render_text()
                .contains("  statement 0 unchanged, moved from statement 1\n")
        );
    }

    #[test]
    fn serializes_kinds_in_snake_case() {
        let d = diff(
            &policy(&[root()]),
            &policy(&[root(), allow(None, APP, "kms:Decrypt")]),
        );
        let value = serde_json::to_value(&d).expect("serializable");
        assert_eq!(value["statements"][0]["kind"], "unchanged");
        assert_eq!(value["statements"][1]["kind"], "added");
        assert_eq!(value["statements"][1]["before"], Value::Null);
    }
}
