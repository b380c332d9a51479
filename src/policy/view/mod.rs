//! The form of a key policy that the rules read: typed, with strings borrowed rather than copied,
//! and each statement's action coverage worked out once.
//!
//! Evaluation reads policy text straight into this form ([`PolicyView::parse`]) instead of going
//! through [`Policy`], whose lossless JSON tree (order, unknown fields, a copy of every statement)
//! only `fix`, `diff` and `to_pretty` need and which cost most of the evaluation time. A [`Policy`]
//! converts into the same form ([`PolicyView::of`]), so both paths run the very same rules.

mod json;

use std::borrow::Cow;

use super::actions::ActionSet;
use super::condition::{ConditionView, admitted_types};
use super::document::{Effect, Policy, PrincipalKind, Statement, statement_label};
use super::matching::is_account_principal;

/// A key policy as the rules read it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyView<'a> {
    pub statements: Vec<StatementView<'a>>,
}

impl<'a> PolicyView<'a> {
    /// Reads policy text without building a JSON tree. `None` when the text is not a valid key
    /// policy, or takes a shape this reader leaves to [`Policy::parse`] (duplicate keys,
    /// non-scalar condition values, …): the lossless parser then decides, and words KMS-INVALID.
    ///
    /// When it returns a view, [`Policy::parse`] accepts the text and
    /// [`PolicyView::of`] gives an equal view (tested on the examples and on generated policies).
    pub fn parse(text: &'a str) -> Option<Self> {
        json::parse(text)
    }

    /// The view of a parsed policy, borrowing its strings.
    pub fn of(policy: &'a Policy) -> Self {
        PolicyView {
            statements: policy.statements().iter().map(StatementView::of).collect(),
        }
    }

    /// The effective Allow statements: statements without a resource have no effect (RULES.md §1).
    pub fn effective_allows(&self) -> impl Iterator<Item = &StatementView<'a>> {
        self.statements.iter().filter(|st| st.is_effective_allow())
    }
}

/// One statement as the rules read it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementView<'a> {
    /// Position in the document, from 0.
    pub index: usize,
    /// The Sid when it is a string.
    pub sid: Option<Cow<'a, str>>,
    pub effect: Effect,
    /// False when the statement has neither `Resource` nor `NotResource`: it has no effect. No
    /// rule reads the resources themselves.
    pub has_resource: bool,
    pub principals: PrincipalsView<'a>,
    pub actions: ActionsView<'a>,
    pub conditions: Vec<ConditionView<'a>>,
}

impl<'a> StatementView<'a> {
    /// The view of a parsed statement, borrowing its strings.
    pub fn of(st: &'a Statement) -> Self {
        StatementView {
            index: st.index,
            sid: st.sid.as_deref().map(Cow::Borrowed),
            effect: st.effect,
            has_resource: st.resources.is_some(),
            principals: PrincipalsView {
                negated: st.principals.negated,
                wildcard: st.principals.wildcard,
                entries: st
                    .principals
                    .entries
                    .iter()
                    .map(|e| (e.kind, Cow::Borrowed(e.value.as_str())))
                    .collect(),
            },
            actions: ActionsView::new(
                st.actions.negated,
                st.actions
                    .patterns
                    .iter()
                    .map(|p| Cow::Borrowed(p.as_str()))
                    .collect(),
            ),
            conditions: st.conditions.iter().map(ConditionView::of).collect(),
        }
    }

    /// An Allow statement that has a resource: the only kind the rules look at.
    pub fn is_effective_allow(&self) -> bool {
        self.effect == Effect::Allow && self.has_resource
    }

    /// `statement N ("Sid")` for messages.
    pub fn label(&self) -> String {
        statement_label(self.index, self.sid.as_deref())
    }

    /// True when `Principal` (not `NotPrincipal`) lists the account principal of `account_id`.
    pub fn names_account_principal(&self, account_id: &str) -> bool {
        !self.principals.negated
            && self
                .principals
                .aws()
                .any(|p| is_account_principal(p, account_id))
    }

    /// True when the statement grants the account principal access that IAM identities inherit
    /// (RULES.md KMS-DELEGATION).
    pub fn delegates(&self, account_id: &str) -> bool {
        self.is_effective_allow()
            && self.names_account_principal(account_id)
            && admitted_types(&self.conditions, account_id).admits_iam_identity()
    }
}

/// `Principal` or `NotPrincipal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalsView<'a> {
    /// True for `NotPrincipal`.
    pub negated: bool,
    /// True for the bare string `"*"`.
    pub wildcard: bool,
    /// Each principal string with its family, in document order.
    pub entries: Vec<(PrincipalKind, Cow<'a, str>)>,
}

impl PrincipalsView<'_> {
    /// The `AWS` entries.
    pub fn aws(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|(kind, _)| *kind == PrincipalKind::Aws)
            .map(|(_, value)| value.as_ref())
    }
}

/// `Action` or `NotAction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionsView<'a> {
    /// True for `NotAction`.
    pub negated: bool,
    /// The patterns as written, for messages and KMS-WILDCARD-ACTION's literal check.
    pub patterns: Vec<Cow<'a, str>>,
    /// The known actions the statement grants (`Actions::grants` for each).
    pub granted: ActionSet,
}

impl<'a> ActionsView<'a> {
    pub fn new(negated: bool, patterns: Vec<Cow<'a, str>>) -> Self {
        let granted = ActionSet::granted_by(patterns.iter().map(AsRef::as_ref), negated);
        ActionsView {
            negated,
            patterns,
            granted,
        }
    }
}

#[cfg(test)]
mod tests;
