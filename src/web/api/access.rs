//! `GET /keys/{key}/access` and `GET /principals/{arn}/keys`: who can use or manage a key today,
//! and the reverse, which keys a principal can use.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiResult;
use super::keys::resolve_key;
use crate::access::{AccessFilter, AccessTable, ActionGroup, PrincipalKeys, PrincipalType};
use crate::effective_access::{self, EffectiveAccessError, InventoryStatus};
use crate::web::AppState;
use crate::web::auth::Caller;
use crate::web::error::{ApiError, ApiJson, ApiPath, ApiQuery, Problem};

/// What the evaluation covers, said with every answer.
pub const SCOPE: &str = "Key policy, IAM identity policies of the key's account (through \
    delegation, minus their Deny statements, within permission boundaries) and grants. Service \
    control policies, resource control policies, session policies and VPC endpoint policies are \
    not evaluated: they can only remove access shown here.";

impl From<EffectiveAccessError> for ApiError {
    fn from(e: EffectiveAccessError) -> Self {
        match e {
            EffectiveAccessError::PolicyUnknown(_) | EffectiveAccessError::Invalid(_) => {
                ApiError::Declined(e.to_string())
            }
            EffectiveAccessError::Store(e) => ApiError::from(e),
        }
    }
}

/// Filters of the access table.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccessQuery {
    /// `admin`, `cryptographic`, `grant` or `read`: only these actions, and principals with one.
    pub group: Option<String>,
    /// `account`, `user`, `role`, `assumed_role`, `service`, `federated`, `anyone` or `other`.
    pub principal_type: Option<String>,
}

/// Who can use or manage a key, and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyAccessResponse {
    /// The access table: `key_arn`, `account_id`, `delegates_to_iam`, `delegation_statements`,
    /// `identities_known`, and `principals` (each with `principal`, `principal_type` and
    /// `actions`: `action`, `group`, `access` = allowed | conditional, `reasons`).
    #[schema(value_type = Object)]
    pub access: AccessTable,
    /// How current the account's IAM inventory is.
    pub inventory: InventoryStatus,
    /// What the evaluation covers and what it does not.
    pub scope: &'static str,
}

/// Which keys a principal can use.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PrincipalKeysResponse {
    /// `principal`, `evaluated_as` (a session's role), `keys` (each `key_arn` with `actions`),
    /// and `unreadable_keys`.
    #[schema(value_type = Object)]
    pub keys: PrincipalKeys,
    /// The IAM inventory status of each account with keys.
    pub inventories: std::collections::BTreeMap<String, InventoryStatus>,
    pub scope: &'static str,
}

/// Filter of the reverse view.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PrincipalQuery {
    /// Only keys of this account.
    pub account: Option<String>,
}

fn parse<T: std::str::FromStr>(
    name: &str,
    value: Option<&str>,
    allowed: &str,
) -> Result<Option<T>, ApiError> {
    value
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                ApiError::BadRequest(format!("{name} must be one of {allowed}, not {v:?}"))
            })
        })
        .transpose()
}

/// Effective access to a key: every principal of the key's account and every principal named
/// in its policy or grants, with the KMS actions they may call and why.
#[utoipa::path(get, path = "/api/v1/keys/{key}/access", tag = "access",
    params(("key" = String, Path, description = "Key id or percent-encoded key ARN"), AccessQuery),
    responses((status = 200, body = KeyAccessResponse), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn key_access(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<AccessQuery>,
) -> ApiResult<KeyAccessResponse> {
    let filter = AccessFilter {
        group: parse::<ActionGroup>(
            "group",
            query.group.as_deref(),
            "admin, cryptographic, grant, read",
        )?,
        principal_type: parse::<PrincipalType>(
            "principal_type",
            query.principal_type.as_deref(),
            "account, user, role, assumed_role, service, federated, anyone, other",
        )?,
    };
    let row = resolve_key(&state, &key).await?;
    let report = effective_access::key_access(state.store.as_ref(), &row).await?;
    Ok(ApiJson(KeyAccessResponse {
        access: report.table.filtered(&filter),
        inventory: report.inventory,
        scope: SCOPE,
    }))
}

/// The reverse view: the keys a principal (user, role, or assumed-role session ARN) can use.
#[utoipa::path(get, path = "/api/v1/principals/{arn}/keys", tag = "access",
    params(("arn" = String, Path, description = "Percent-encoded principal ARN"), PrincipalQuery),
    responses((status = 200, body = PrincipalKeysResponse), (status = 400, body = Problem),
        (status = 401, body = Problem)))]
pub async fn principal_keys(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(arn): ApiPath<String>,
    ApiQuery(query): ApiQuery<PrincipalQuery>,
) -> ApiResult<PrincipalKeysResponse> {
    if arn.is_empty() || arn.len() > 2048 {
        return Err(ApiError::BadRequest(
            "the principal must be an ARN of at most 2048 characters".into(),
        ));
    }
    let report =
        effective_access::principal_keys(state.store.as_ref(), &arn, query.account.as_deref())
            .await?;
    Ok(ApiJson(PrincipalKeysResponse {
        keys: report.keys,
        inventories: report.inventories,
        scope: SCOPE,
    }))
}
