//! The aws-sdk-iam implementation of `IamSource`: one account's identities and the managed
//! policies attached to them, from GetAccountAuthorizationDetails.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_iam::types::{
    AttachedPermissionsBoundary, AttachedPolicy, EntityType, GroupDetail, ManagedPolicyDetail,
    PolicyDetail, RoleDetail, UserDetail,
};
use percent_encoding::percent_decode_str;

use super::sdk::{call, incomplete, next_page};
use super::{AwsError, IamSource};
use crate::access::{IamGroup, IamInventory, IamRole, IamUser, InlinePolicy, ManagedPolicy};
use crate::metrics::Metrics;

const GET_ACCOUNT_AUTHORIZATION_DETAILS: &str = "GetAccountAuthorizationDetails";
/// The largest page IAM serves (its default is 100): a large account's inventory in a few round
/// trips rather than dozens, each of which could be throttled.
const PAGE_SIZE: i32 = 1000;

/// IAM of one account.
pub(super) struct SdkIam {
    client: aws_sdk_iam::Client,
    account_id: String,
    metrics: Arc<Metrics>,
}

impl SdkIam {
    pub(super) fn new(
        client: aws_sdk_iam::Client,
        account_id: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        SdkIam {
            client,
            account_id,
            metrics,
        }
    }
}

#[async_trait]
impl IamSource for SdkIam {
    async fn authorization_details(&self) -> Result<IamInventory, AwsError> {
        let mut details = Details::default();
        let mut marker: Option<String> = None;
        loop {
            let page = call(
                &self.metrics,
                GET_ACCOUNT_AUTHORIZATION_DETAILS,
                self.client
                    .get_account_authorization_details()
                    .filter(EntityType::User)
                    .filter(EntityType::Role)
                    .filter(EntityType::Group)
                    .filter(EntityType::LocalManagedPolicy)
                    .filter(EntityType::AwsManagedPolicy)
                    .max_items(PAGE_SIZE)
                    .set_marker(marker.clone())
                    .send(),
            )
            .await?;
            details.add_users(page.user_detail_list());
            details.add_groups(page.group_detail_list());
            details.add_roles(page.role_detail_list());
            details.add_policies(page.policies());
            // The same rule as KMS listings: a truncated page without a new marker is an error,
            // never a short inventory (which would silently drop permissions).
            match next_page(
                &self.metrics,
                GET_ACCOUNT_AUTHORIZATION_DETAILS,
                page.is_truncated(),
                page.marker(),
                marker.as_deref(),
            )? {
                Some(next) => marker = Some(next),
                None => break,
            }
        }
        details
            .into_inventory(self.account_id.clone())
            .map_err(|message| {
                incomplete(&self.metrics, GET_ACCOUNT_AUTHORIZATION_DETAILS, &message)
            })
    }
}

/// Every page's entries, keyed by ARN so that the result is sorted (the store hashes the
/// inventory's JSON for change detection) and an entity repeated across pages counts once.
#[derive(Default)]
struct Details {
    users: BTreeMap<String, IamUser>,
    groups: BTreeMap<String, IamGroup>,
    roles: BTreeMap<String, IamRole>,
    /// Every managed policy IAM listed; only the used ones make it into the inventory.
    policies: BTreeMap<String, ManagedPolicyDetail>,
}

impl Details {
    fn add_users(&mut self, users: &[UserDetail]) {
        for u in users {
            let arn = u.arn().unwrap_or_default().to_string();
            let name = name_or_from_arn(u.user_name(), &arn);
            let mut groups: Vec<String> = u.group_list().to_vec();
            groups.sort();
            groups.dedup();
            self.users.insert(
                arn.clone(),
                IamUser {
                    arn,
                    name,
                    groups,
                    inline_policies: inline_policies(u.user_policy_list()),
                    attached_policies: attached(u.attached_managed_policies()),
                    permissions_boundary: boundary(u.permissions_boundary()),
                },
            );
        }
    }

    fn add_groups(&mut self, groups: &[GroupDetail]) {
        for g in groups {
            let arn = g.arn().unwrap_or_default().to_string();
            let name = name_or_from_arn(g.group_name(), &arn);
            self.groups.insert(
                arn.clone(),
                IamGroup {
                    arn,
                    name,
                    inline_policies: inline_policies(g.group_policy_list()),
                    attached_policies: attached(g.attached_managed_policies()),
                },
            );
        }
    }

    fn add_roles(&mut self, roles: &[RoleDetail]) {
        for r in roles {
            let arn = r.arn().unwrap_or_default().to_string();
            let name = name_or_from_arn(r.role_name(), &arn);
            self.roles.insert(
                arn.clone(),
                IamRole {
                    arn,
                    name,
                    inline_policies: inline_policies(r.role_policy_list()),
                    attached_policies: attached(r.attached_managed_policies()),
                    permissions_boundary: boundary(r.permissions_boundary()),
                },
            );
        }
    }

    fn add_policies(&mut self, policies: &[ManagedPolicyDetail]) {
        for p in policies {
            if let Some(arn) = p.arn() {
                self.policies.insert(arn.to_string(), p.clone());
            }
        }
    }

    /// The inventory, with only the managed policies some identity uses (attached or as its
    /// boundary): an account lists some 1,300 AWS managed policies, nearly all unused. Fails when
    /// a used policy lacks its default version's document, since evaluating without it would
    /// under-report access.
    fn into_inventory(self, account_id: String) -> Result<IamInventory, String> {
        let used: BTreeSet<&str> = self
            .users
            .values()
            .flat_map(|u| u.attached_policies.iter().chain(&u.permissions_boundary))
            .chain(self.groups.values().flat_map(|g| &g.attached_policies))
            .chain(
                self.roles
                    .values()
                    .flat_map(|r| r.attached_policies.iter().chain(&r.permissions_boundary)),
            )
            .map(String::as_str)
            .collect();
        let mut policies = Vec::with_capacity(used.len());
        for arn in &used {
            // A policy attached to an identity but missing from the listing cannot happen on a
            // complete listing; it is skipped here and shows up as an unknown ARN downstream.
            let Some(detail) = self.policies.get(*arn) else {
                tracing::warn!(policy = %arn, "attached managed policy missing from GetAccountAuthorizationDetails");
                continue;
            };
            policies.push(managed_policy(arn, detail)?);
        }
        Ok(IamInventory {
            account_id,
            users: self.users.into_values().collect(),
            groups: self.groups.into_values().collect(),
            roles: self.roles.into_values().collect(),
            policies,
        })
    }
}

/// A managed policy with its default version's document.
fn managed_policy(arn: &str, detail: &ManagedPolicyDetail) -> Result<ManagedPolicy, String> {
    let versions = detail.policy_version_list();
    // IsDefaultVersion is authoritative; DefaultVersionId is the fallback for an answer that
    // omits the flag (the XML boolean defaults to false when absent).
    let default = versions
        .iter()
        .find(|v| v.is_default_version())
        .or_else(|| {
            let id = detail.default_version_id()?;
            versions.iter().find(|v| v.version_id() == Some(id))
        });
    let Some(version) = default else {
        return Err(format!("managed policy {arn} lacks its default version"));
    };
    let Some(document) = version.document() else {
        return Err(format!(
            "managed policy {arn}: the default version lacks its document"
        ));
    };
    Ok(ManagedPolicy {
        arn: arn.to_string(),
        name: name_or_from_arn(detail.policy_name(), arn),
        default_version_id: version
            .version_id()
            .or(detail.default_version_id())
            .unwrap_or_default()
            .to_string(),
        document: decode_document(document),
    })
}

/// The entity's name, or the last segment of its ARN when the answer omits it: moto 5.2.5 sends
/// ManagedPolicyDetail without PolicyName. IAM names cannot contain `/`, and paths end in one,
/// so the segment after the last `/` is the name.
fn name_or_from_arn(name: Option<&str>, arn: &str) -> String {
    match name {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => arn.rsplit('/').next().unwrap_or_default().to_string(),
    }
}

/// Inline policies sorted by name, documents decoded.
fn inline_policies(list: &[PolicyDetail]) -> Vec<InlinePolicy> {
    let mut policies: Vec<InlinePolicy> = list
        .iter()
        .map(|p| InlinePolicy {
            name: p.policy_name().unwrap_or_default().to_string(),
            document: decode_document(p.policy_document().unwrap_or_default()),
        })
        .collect();
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    policies
}

/// Attached managed policy ARNs, sorted and unique.
fn attached(list: &[AttachedPolicy]) -> Vec<String> {
    let arns: BTreeSet<String> = list
        .iter()
        .filter_map(|p| p.policy_arn().map(str::to_string))
        .collect();
    arns.into_iter().collect()
}

fn boundary(b: Option<&AttachedPermissionsBoundary>) -> Option<String> {
    b.and_then(|b| b.permissions_boundary_arn())
        .filter(|arn| !arn.is_empty())
        .map(str::to_string)
}

/// A policy document as JSON text.
///
/// IAM returns documents percent-encoded (RFC 3986) and aws-sdk-iam passes them on as they
/// come; moto encodes them too. A document that already parses as JSON is kept as it is, so a
/// source that decodes (another emulator, a future SDK) is not decoded twice, which would
/// corrupt a literal `%` in a condition value.
pub(super) fn decode_document(raw: &str) -> String {
    if serde_json::from_str::<serde::de::IgnoredAny>(raw).is_ok() {
        return raw.to_string();
    }
    match percent_decode_str(raw).decode_utf8() {
        Ok(decoded) => decoded.into_owned(),
        // Not UTF-8 after decoding: leave it to the policy parser to reject.
        Err(_) => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_iam::types::PolicyVersion;

    #[test]
    fn documents_are_decoded_once() {
        let json = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{"StringLike":{"aws:userid":"AIDA%"}}}]}"#;
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22kms%3A%2A%22%2C%22Resource%22%3A%22%2A%22%2C%22Condition%22%3A%7B%22StringLike%22%3A%7B%22aws%3Auserid%22%3A%22AIDA%25%22%7D%7D%7D%5D%7D";
        assert_eq!(decode_document(encoded), json);
        // Already JSON (with a literal `%25` that a second decoding would turn into `%`).
        let literal = r#"{"Statement":[{"Condition":{"StringEquals":{"k":"a%25b"}}}]}"#;
        assert_eq!(decode_document(literal), literal);
        // `+` is a literal plus in RFC 3986, not a space.
        assert_eq!(
            decode_document("%7B%22a%22%3A%22x+y%20z%22%7D"),
            r#"{"a":"x+y z"}"#
        );
    }

    fn version(id: &str, default: bool, document: &str) -> PolicyVersion {
        PolicyVersion::builder()
            .version_id(id)
            .is_default_version(default)
            .document(document)
            .build()
    }

    #[test]
    fn names_fall_back_to_the_arn() {
        assert_eq!(name_or_from_arn(Some("n"), "arn:aws:iam::1:policy/x"), "n");
        assert_eq!(
            name_or_from_arn(None, "arn:aws:iam::aws:policy/service-role/AWSConfigRole"),
            "AWSConfigRole"
        );
        assert_eq!(name_or_from_arn(Some(""), "arn:aws:iam::1:user/a/b/c"), "c");
    }

    #[test]
    fn the_default_version_wins() {
        let detail = ManagedPolicyDetail::builder()
            .arn("arn:aws:iam::1:policy/p")
            .policy_name("p")
            .default_version_id("v2")
            .policy_version_list(version("v1", false, "%7B%7D"))
            .policy_version_list(version("v2", true, r#"{"v":2}"#))
            .build();
        let p = managed_policy("arn:aws:iam::1:policy/p", &detail).unwrap();
        assert_eq!(
            (p.default_version_id.as_str(), p.document.as_str()),
            ("v2", r#"{"v":2}"#)
        );

        // Without the flag, DefaultVersionId decides.
        let detail = ManagedPolicyDetail::builder()
            .default_version_id("v1")
            .policy_version_list(version("v1", false, "%7B%7D"))
            .policy_version_list(version("v2", false, "[]"))
            .build();
        let p = managed_policy("a", &detail).unwrap();
        assert_eq!(
            (p.default_version_id.as_str(), p.document.as_str()),
            ("v1", "{}")
        );

        let err = managed_policy("a", &ManagedPolicyDetail::builder().build()).unwrap_err();
        assert!(err.contains("default version"), "{err}");
    }

    #[test]
    fn only_used_policies_are_kept_and_everything_is_sorted() {
        let policy = |arn: &str| {
            ManagedPolicyDetail::builder()
                .arn(arn)
                .policy_name(arn.rsplit('/').next().unwrap())
                .default_version_id("v1")
                .policy_version_list(version("v1", true, "%7B%7D"))
                .build()
        };
        let attach = |arn: &str| AttachedPolicy::builder().policy_arn(arn).build();
        let mut d = Details::default();
        d.add_users(&[
            UserDetail::builder()
                .arn("arn:aws:iam::1:user/zed")
                .user_name("zed")
                .group_list("ops")
                .group_list("dev")
                .attached_managed_policies(attach("arn:aws:iam::1:policy/b"))
                .attached_managed_policies(attach("arn:aws:iam::1:policy/a"))
                .build(),
            UserDetail::builder()
                .arn("arn:aws:iam::1:user/amy")
                .user_name("amy")
                .permissions_boundary(
                    AttachedPermissionsBoundary::builder()
                        .permissions_boundary_arn("arn:aws:iam::1:policy/boundary")
                        .build(),
                )
                .user_policy_list(
                    PolicyDetail::builder()
                        .policy_name("z")
                        .policy_document("%7B%7D")
                        .build(),
                )
                .user_policy_list(
                    PolicyDetail::builder()
                        .policy_name("a")
                        .policy_document("{}")
                        .build(),
                )
                .build(),
        ]);
        d.add_policies(&[
            policy("arn:aws:iam::1:policy/unused"),
            policy("arn:aws:iam::1:policy/b"),
            policy("arn:aws:iam::1:policy/boundary"),
            policy("arn:aws:iam::1:policy/a"),
        ]);
        let inv = d.into_inventory("1".into()).unwrap();
        let names = |v: Vec<&str>| v.into_iter().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            inv.users
                .iter()
                .map(|u| u.name.as_str())
                .collect::<Vec<_>>(),
            ["amy", "zed"]
        );
        assert_eq!(inv.users[1].groups, names(vec!["dev", "ops"]));
        assert_eq!(
            inv.users[1].attached_policies,
            names(vec!["arn:aws:iam::1:policy/a", "arn:aws:iam::1:policy/b"])
        );
        assert_eq!(
            inv.users[0]
                .inline_policies
                .iter()
                .map(|p| (p.name.as_str(), p.document.as_str()))
                .collect::<Vec<_>>(),
            [("a", "{}"), ("z", "{}")]
        );
        assert_eq!(
            inv.policies
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b", "boundary"]
        );
    }
}
