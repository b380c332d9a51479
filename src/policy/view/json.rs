//! Reads key-policy text straight into a [`PolicyView`] with serde, borrowing every string that
//! has no escapes from the text.
//!
//! The contract: it returns a view only for text that `Policy::parse` accepts, and that view equals
//! `PolicyView::of` the parsed policy. So it mirrors how `serde_json::Value` reads JSON and how
//! `document.rs` checks the grammar, and wherever mirroring would take more than a few lines
//! (duplicate keys, where `Value` keeps the last one; non-scalar condition values; every kind
//! of invalid document) it gives up and leaves the text to the lossless parser. Giving up is
//! always correct, merely slower.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use std::borrow::Cow;
use std::fmt;

use super::{ActionsView, PolicyView, PrincipalsView, StatementView};
use crate::policy::condition::{ConditionKey, ConditionView, classify_operator};
use crate::policy::document::{Effect, PrincipalKind};

pub(super) fn parse(text: &str) -> Option<PolicyView<'_>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let statements = (&mut de).deserialize_map(DocumentVisitor).ok()?;
    // As `serde_json::from_str`: nothing but whitespace may follow the document.
    de.end().ok()?;
    Some(PolicyView { statements })
}

/// The error that means "leave this text to the lossless parser"; its message is never shown.
fn give_up<E: de::Error>() -> E {
    E::custom("left to the lossless parser")
}

/// The next key of an object. `Value` gives keys spelled like serde_json's private tokens a
/// meaning of their own (an object whose first key is `$serde_json::private::RawValue` is replaced
/// by the JSON held in its value), so such documents are left to it.
fn next_key<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
    match map.next_key::<Text<'de>>()? {
        Some(Text(key)) if key.starts_with("$serde_json::private::") => Err(give_up()),
        Some(Text(key)) => Ok(Some(key)),
        None => Ok(None),
    }
}

/// The top-level object: only `Statement` matters; everything else is checked and skipped.
struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Vec<StatementView<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key policy object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut statements = None;
        while let Some(key) = next_key(&mut map)? {
            if key == "Statement" {
                if statements.is_some() {
                    return Err(give_up());
                }
                statements = Some(map.next_value_seed(StatementsSeed)?);
            } else {
                map.next_value::<Skip>()?;
            }
        }
        statements.ok_or_else(give_up)
    }
}

/// `Statement`: one object, or a non-empty array of objects.
struct StatementsSeed;

impl<'de> DeserializeSeed<'de> for StatementsSeed {
    type Value = Vec<StatementView<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StatementsSeed {
    type Value = Vec<StatementView<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a statement or an array of statements")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(vec![StatementSeed { index: 0 }.visit_map(map)?])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut statements = Vec::with_capacity(seq.size_hint().unwrap_or(8));
        while let Some(st) = seq.next_element_seed(StatementSeed {
            index: statements.len(),
        })? {
            statements.push(st);
        }
        if statements.is_empty() {
            return Err(give_up());
        }
        Ok(statements)
    }
}

/// The statement fields the grammar knows; every other field is checked and skipped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Sid,
    Effect,
    Principal,
    NotPrincipal,
    Action,
    NotAction,
    Resource,
    NotResource,
    Condition,
}

impl Field {
    fn of(key: &str) -> Option<Self> {
        Some(match key {
            "Sid" => Self::Sid,
            "Effect" => Self::Effect,
            "Principal" => Self::Principal,
            "NotPrincipal" => Self::NotPrincipal,
            "Action" => Self::Action,
            "NotAction" => Self::NotAction,
            "Resource" => Self::Resource,
            "NotResource" => Self::NotResource,
            "Condition" => Self::Condition,
            _ => return None,
        })
    }
}

/// One statement object, with the checks of `document::parse_statement`.
struct StatementSeed {
    index: usize,
}

impl<'de> DeserializeSeed<'de> for StatementSeed {
    type Value = StatementView<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for StatementSeed {
    type Value = StatementView<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a statement object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = 0u16;
        let mut sid = None;
        let mut effect = None;
        let mut principals = None;
        let mut actions = None;
        let mut has_resource = false;
        let mut conditions = Vec::new();
        while let Some(key) = next_key(&mut map)? {
            let Some(field) = Field::of(&key) else {
                map.next_value::<Skip>()?;
                continue;
            };
            // `Value` keeps the last of duplicate keys; leave that reading to it.
            let bit = 1 << field as u16;
            if seen & bit != 0 {
                return Err(give_up());
            }
            seen |= bit;
            match field {
                Field::Sid => sid = map.next_value::<Sid<'de>>()?.0,
                Field::Effect => {
                    effect = Some(match map.next_value::<Text<'de>>()?.0.as_ref() {
                        "Allow" => Effect::Allow,
                        "Deny" => Effect::Deny,
                        _ => return Err(give_up()),
                    });
                }
                Field::Principal | Field::NotPrincipal => {
                    // Having both is invalid.
                    if principals.is_some() {
                        return Err(give_up());
                    }
                    principals = Some(map.next_value_seed(PrincipalSeed {
                        negated: field == Field::NotPrincipal,
                    })?);
                }
                Field::Action | Field::NotAction => {
                    let patterns = map.next_value::<StringList<'de>>()?.0;
                    if actions.is_some() || patterns.is_empty() {
                        return Err(give_up());
                    }
                    actions = Some(ActionsView::new(field == Field::NotAction, patterns));
                }
                Field::Resource | Field::NotResource => {
                    // No rule reads resources, only whether the statement has one.
                    map.next_value::<Skip>()?;
                    if has_resource {
                        return Err(give_up());
                    }
                    has_resource = true;
                }
                Field::Condition => conditions = map.next_value_seed(ConditionBlockSeed)?,
            }
        }
        match (effect, principals, actions) {
            (Some(effect), Some(principals), Some(actions)) => Ok(StatementView {
                index: self.index,
                sid,
                effect,
                has_resource,
                principals,
                actions,
                conditions,
            }),
            _ => Err(give_up()),
        }
    }
}

/// `Principal` / `NotPrincipal`: `"*"` or a non-empty map of known families to strings.
struct PrincipalSeed {
    negated: bool,
}

impl<'de> DeserializeSeed<'de> for PrincipalSeed {
    type Value = PrincipalsView<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PrincipalSeed {
    type Value = PrincipalsView<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"*\" or a map of principals")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v != "*" {
            return Err(give_up());
        }
        Ok(PrincipalsView {
            negated: self.negated,
            wildcard: true,
            entries: Vec::new(),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        let mut kinds_seen = 0u8;
        while let Some(key) = next_key(&mut map)? {
            let kind = PrincipalKind::from_key(&key).ok_or_else(give_up)?;
            let bit = 1 << kind as u8;
            if kinds_seen & bit != 0 {
                return Err(give_up());
            }
            kinds_seen |= bit;
            let values = map.next_value::<StringList<'de>>()?.0;
            entries.extend(values.into_iter().map(|value| (kind, value)));
        }
        if kinds_seen == 0 {
            return Err(give_up());
        }
        Ok(PrincipalsView {
            negated: self.negated,
            wildcard: false,
            entries,
        })
    }
}

/// `Condition`: an object of objects, flattened to one entry per operator × key.
struct ConditionBlockSeed;

impl<'de> DeserializeSeed<'de> for ConditionBlockSeed {
    type Value = Vec<ConditionView<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ConditionBlockSeed {
    type Value = Vec<ConditionView<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a condition block")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        let mut operators: Vec<Cow<'de, str>> = Vec::new();
        while let Some(name) = next_key(&mut map)? {
            if operators.contains(&name) {
                return Err(give_up());
            }
            let (base, set, if_exists) = classify_operator(&name);
            map.next_value_seed(OperatorSeed {
                template: ConditionView {
                    base,
                    set,
                    if_exists,
                    key: ConditionKey::Other,
                    values: Vec::new(),
                },
                entries: &mut entries,
            })?;
            operators.push(name);
        }
        Ok(entries)
    }
}

/// The keys of one condition operator, appended to `entries`.
struct OperatorSeed<'e, 'de> {
    template: ConditionView<'de>,
    entries: &'e mut Vec<ConditionView<'de>>,
}

impl<'de> DeserializeSeed<'de> for OperatorSeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OperatorSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of condition keys")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        while let Some(key) = next_key(&mut map)? {
            if keys.contains(&key) {
                return Err(give_up());
            }
            let values = map.next_value::<ConditionValues<'de>>()?.0;
            self.entries.push(ConditionView {
                key: ConditionKey::of(&key),
                values,
                ..self.template.clone()
            });
            keys.push(key);
        }
        Ok(())
    }
}

/// A string, borrowed from the text unless it has escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(v)))
    }
}

/// A string or an array of strings (`document::string_list`).
struct StringList<'de>(Vec<Cow<'de, str>>);

impl<'de> de::Deserialize<'de> for StringList<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringListVisitor)
    }
}

struct StringListVisitor;

impl<'de> Visitor<'de> for StringListVisitor {
    type Value = StringList<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(StringList(vec![Cow::Borrowed(v)]))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(StringList(vec![Cow::Owned(v.to_owned())]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(Text(s)) = seq.next_element()? {
            list.push(s);
        }
        Ok(StringList(list))
    }
}

/// `Sid`: any JSON value, kept only when it is a string (as `document::parse_statement`).
struct Sid<'de>(Option<Cow<'de, str>>);

impl<'de> de::Deserialize<'de> for Sid<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SidVisitor)
    }
}

struct SidVisitor;

impl<'de> Visitor<'de> for SidVisitor {
    type Value = Sid<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Sid(Some(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Sid(Some(Cow::Owned(v.to_owned()))))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Sid(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Sid(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Sid(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Sid(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Sid(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        SkipVisitor.visit_seq(seq)?;
        Ok(Sid(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        SkipVisitor.visit_map(map)?;
        Ok(Sid(None))
    }
}

/// Condition values as `condition::condition_values` reads them: one scalar or an array of
/// scalars, each as its string. Nulls and nested values (which `condition_values` turns into
/// JSON text) are left to the lossless parser.
struct ConditionValues<'de>(Vec<Cow<'de, str>>);

impl<'de> de::Deserialize<'de> for ConditionValues<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ConditionValuesVisitor)
    }
}

struct ConditionValuesVisitor;

impl<'de> Visitor<'de> for ConditionValuesVisitor {
    type Value = ConditionValues<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a condition value or an array of them")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(ConditionValues(vec![
            ScalarVisitor.visit_borrowed_str::<E>(v)?.0,
        ]))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(ConditionValues(vec![ScalarVisitor.visit_str::<E>(v)?.0]))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(ConditionValues(vec![ScalarVisitor.visit_bool::<E>(v)?.0]))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(ConditionValues(vec![ScalarVisitor.visit_u64::<E>(v)?.0]))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(ConditionValues(vec![ScalarVisitor.visit_i64::<E>(v)?.0]))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(ConditionValues(vec![ScalarVisitor.visit_f64::<E>(v)?.0]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(2));
        while let Some(Scalar(value)) = seq.next_element()? {
            values.push(value);
        }
        Ok(ConditionValues(values))
    }
}

/// One condition value: a string, or a boolean or number as its JSON text (what
/// `condition::scalar_text` gives for `Value`'s numbers, which are these very `Number`s).
struct Scalar<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, boolean or number")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar(Cow::Owned(v.to_owned())))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        // JSON `true`/`false` compare as the strings "true"/"false" (RULES.md §1).
        Ok(Scalar(Cow::Borrowed(if v { "true" } else { "false" })))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar(Cow::Owned(Number::from(v).to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar(Cow::Owned(Number::from(v).to_string())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // `Value` would hold a non-finite float as null; JSON text cannot produce one anyway.
        let n = Number::from_f64(v).ok_or_else(give_up)?;
        Ok(Scalar(Cow::Owned(n.to_string())))
    }
}

/// Any JSON value, read exactly as `Value` reads it but not kept. (`serde::de::IgnoredAny` would
/// skip numbers without the range check that makes `Value` reject `1e400`.)
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while next_key(&mut map)?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(Skip)
    }
}
