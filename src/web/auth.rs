//! API tokens and roles: `Authorization: Bearer <token>`, checked against the SHA-256 hashes in
//! the store. Roles are ordered: viewer < operator < approver < admin.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;

/// What a token may do; each role includes the ones below it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also triggers syncs, waives findings and requests remediations.
    Operator,
    /// Also approves and rejects remediations.
    Approver,
    /// Also manages tokens.
    Admin,
}

impl Role {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Approver => "approver",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "operator" => Ok(Self::Operator),
            "approver" => Ok(Self::Approver),
            "admin" => Ok(Self::Admin),
            _ => Err(format!(
                "role must be viewer, operator, approver or admin, not {s:?}"
            )),
        }
    }
}

/// Lower-case hex SHA-256 of a token secret: all the store ever sees.
pub fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random token secret: `kw_` and 64 hex digits (256 bits from the OS generator).
pub fn new_token_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("kw_{}", hex::encode(bytes))
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name: the actor in the audit log.
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// Refuses with 403 unless the caller's role is at least `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                needed: needed.as_str(),
                has: self.role.to_string(),
            })
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let secret = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let token = state
            .store
            .authenticate(&token_hash(secret), state.clock.now())
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let role = token
            .role
            .parse()
            .map_err(|e: String| ApiError::Internal(format!("token {}: {e}", token.name)))?;
        Ok(Caller {
            name: token.name,
            role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(
            Role::Viewer < Role::Operator
                && Role::Operator < Role::Approver
                && Role::Approver < Role::Admin
        );
        for r in [Role::Viewer, Role::Operator, Role::Approver, Role::Admin] {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
        let caller = Caller {
            name: "t".into(),
            role: Role::Operator,
        };
        assert!(caller.require(Role::Viewer).is_ok());
        assert!(matches!(
            caller.require(Role::Approver),
            Err(ApiError::Forbidden { .. })
        ));
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let (a, b) = (new_token_secret(), new_token_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("kw_") && a.len() == 67);
        assert_eq!(
            token_hash("x"),
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        );
    }
}
