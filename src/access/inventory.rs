//! The IAM inventory of one account, as GetAccountAuthorizationDetails describes it: users,
//! groups, roles and the managed policies attached to them, with policy documents as JSON text.

use serde::{Deserialize, Serialize};

/// Everything the access evaluation needs to know about one account's IAM identities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IamInventory {
    /// The account the identities live in.
    pub account_id: String,
    pub users: Vec<IamUser>,
    pub groups: Vec<IamGroup>,
    pub roles: Vec<IamRole>,
    /// Managed policies (customer and AWS managed) that are attached to some identity or used
    /// as a permissions boundary, each with its default version's document.
    pub policies: Vec<ManagedPolicy>,
}

/// An IAM user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IamUser {
    pub arn: String,
    pub name: String,
    /// Names of the groups the user is a member of.
    pub groups: Vec<String>,
    pub inline_policies: Vec<InlinePolicy>,
    /// ARNs of the attached managed policies.
    pub attached_policies: Vec<String>,
    /// ARN of the managed policy set as the permissions boundary.
    pub permissions_boundary: Option<String>,
}

/// An IAM group: its policies apply to every member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IamGroup {
    pub arn: String,
    pub name: String,
    pub inline_policies: Vec<InlinePolicy>,
    pub attached_policies: Vec<String>,
}

/// An IAM role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IamRole {
    pub arn: String,
    pub name: String,
    pub inline_policies: Vec<InlinePolicy>,
    pub attached_policies: Vec<String>,
    pub permissions_boundary: Option<String>,
}

/// A policy embedded in one user, group or role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlinePolicy {
    pub name: String,
    /// The policy document as JSON text (already URL-decoded).
    pub document: String,
}

/// A managed policy with the document of its default version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedPolicy {
    pub arn: String,
    pub name: String,
    pub default_version_id: String,
    /// The default version's document as JSON text (already URL-decoded).
    pub document: String,
}
