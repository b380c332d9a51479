//! Configuration: defaults, then `keyward.toml`, then `KEYWARD_*` environment variables (`__`
//! nests: `KEYWARD_SYNC__INTERVAL=5m`). Invalid configuration fails at start, naming the key.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::policy::matching::{Arn, is_account_id, is_iam_identity_of, session_to_role_arn};

/// The configuration file read when `--config` is not given and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "keyward.toml";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Keyward's whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `sqlite://keyward.db` (created if missing) or `postgres://user@host/db`.
    pub database_url: String,
    /// Where `keyward serve` listens.
    pub listen: SocketAddr,
    pub aws: AwsConfig,
    pub sync: SyncConfig,
    pub accounts: Vec<AccountConfig>,
    /// Where to POST events (`[[webhooks]]`), for ticketing systems.
    pub webhooks: Vec<WebhookConfig>,
    pub auth: AuthConfig,
    /// Approval-gated remediation (`[remediation]`).
    pub remediation: RemediationConfig,
    /// `text` for people, `json` for log pipelines.
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "sqlite://keyward.db".to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            aws: AwsConfig::default(),
            sync: SyncConfig::default(),
            accounts: Vec::new(),
            webhooks: Vec::new(),
            auth: AuthConfig::default(),
            remediation: RemediationConfig::default(),
            log_format: LogFormat::Text,
        }
    }
}

/// How to reach AWS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// An AWS-compatible endpoint (an emulator); `AWS_ENDPOINT_URL` is honoured too.
    pub endpoint_url: Option<String>,
}

/// The periodic sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Time between passes (humantime: `15m`, `1h`).
    #[serde(serialize_with = "ser_duration", deserialize_with = "de_duration")]
    pub interval: Duration,
    /// Keys read at once per account·region; a key's calls run one after another, so this is
    /// also the number of AWS requests in flight per account·region.
    pub concurrency: usize,
    /// Account·regions synced at the same time.
    pub parallel_regions: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            interval: Duration::from_secs(15 * 60),
            concurrency: 16,
            parallel_regions: 4,
        }
    }
}

/// Whether Keyward may write key policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemediationMode {
    /// Proposals and approvals only; apply is refused.
    #[default]
    ProposeOnly,
    /// Approved proposals may be applied with PutKeyPolicy.
    Apply,
}

/// Approval-gated remediation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemediationConfig {
    /// `propose-only` (default) or `apply`.
    pub mode: RemediationMode,
    /// Distinct approvers (never the requester) a proposal needs.
    pub required_approvals: u32,
    /// Apply as soon as a proposal is approved; only with `mode = "apply"`.
    pub auto_apply: bool,
    /// How long a proposal waits for approval and apply (humantime: `7d`).
    #[serde(serialize_with = "ser_duration", deserialize_with = "de_duration")]
    pub expires_after: Duration,
}

impl Default for RemediationConfig {
    fn default() -> Self {
        RemediationConfig {
            mode: RemediationMode::ProposeOnly,
            required_approvals: 1,
            auto_apply: false,
            expires_after: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Who may see what: the API's tokens, and how the dashboard signs people in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Serve `/metrics` without a token.
    pub metrics_public: bool,
    /// How long a dashboard sign-in lasts (humantime: `12h`).
    #[serde(serialize_with = "ser_duration", deserialize_with = "de_duration")]
    pub session_ttl: Duration,
    /// When the session cookie carries `Secure`: `auto` (when the request came over HTTPS, as a
    /// trusted proxy reports it), `always` or `never`.
    pub secure_cookies: SecureCookies,
    /// Keyward sits behind a reverse proxy that sets `X-Forwarded-Proto` and `X-Forwarded-Host`
    /// (and strips them from clients): only then are those headers believed.
    pub trusted_proxy: bool,
    /// A header a trusted reverse proxy (oauth2-proxy, say) sets to the signed-in user, e.g.
    /// `X-Forwarded-User`. Only honoured when set; Keyward must then be reachable only through
    /// that proxy, which must strip the header from clients.
    pub proxy_header: Option<String>,
    /// Dashboard role of each proxy user: `alice = "approver"`.
    pub proxy_roles: std::collections::BTreeMap<String, String>,
    /// Role of proxy users not in `proxy_roles`; none (the default) refuses them.
    pub default_role: Option<String>,
}

/// When session cookies are marked `Secure`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecureCookies {
    /// When the request came over HTTPS (`X-Forwarded-Proto: https` from a trusted proxy).
    #[default]
    Auto,
    Always,
    Never,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            metrics_public: true,
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: SecureCookies::Auto,
            trusted_proxy: false,
            proxy_header: None,
            proxy_roles: std::collections::BTreeMap::new(),
            default_role: None,
        }
    }
}

/// One AWS account Keyward watches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountConfig {
    /// The 12-digit account id.
    pub id: String,
    /// A name for people; defaults to the id.
    pub name: Option<String>,
    /// Role to assume in the account; without it the default credentials are used.
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    /// Regions to sync; at least one.
    pub regions: Vec<String>,
    /// IAM roles/users the fix names as key administrators.
    pub key_admins: Vec<String>,
    /// Keyward's reading principal in the account: keeps read access after a fix.
    pub auditor: Option<String>,
    /// The role Keyward applies fixes as, when it has a path STS does not show.
    pub remediator: Option<String>,
    /// External accounts allowed to use keys without a KMS-CROSS-ACCOUNT finding.
    pub trusted_accounts: Vec<String>,
}

impl AccountConfig {
    /// The display name.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// A receiver of signed event notifications.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// An http(s) URL; events are POSTed to it as JSON.
    pub url: String,
    /// The HMAC-SHA256 key of `X-Keyward-Signature`.
    pub secret: String,
    /// The events to send: finding.opened, finding.resolved, finding.waived,
    /// remediation.requested, remediation.approved, remediation.applied, remediation.failed,
    /// remediation.applying, remediation.rejected, remediation.stale, remediation.expired,
    /// remediation.rolled_back, remediation.unapplied, sync.failed (`store::events::ALL`).
    pub events: Vec<String>,
}

// The secret never reaches logs.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .field("events", &self.events)
            .finish()
    }
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!("{text:?} is not a duration like \"15m\": {e}"))
    })
}

impl Config {
    /// Loads the configuration: `path` if given (it must exist), else `./keyward.toml` if present;
    /// then the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, environment())
    }

    fn load_with_env(path: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(p) if !p.exists() => return Err(ConfigError::Missing(p.to_path_buf())),
            Some(p) => figment = figment.merge(Toml::file_exact(p)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE));
            }
            None => {}
        }
        let config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Parse(figment_message(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ids, ARNs, ranges, the database URL.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres:")
            || self.database_url.starts_with("postgresql:"))
        {
            return Err(invalid(
                "database_url",
                format!(
                    "{:?} must start with sqlite: or postgres:",
                    self.database_url
                ),
            ));
        }
        if self.sync.interval < Duration::from_secs(10) {
            return Err(invalid("sync.interval", "must be at least 10s"));
        }
        if !(1..=256).contains(&self.sync.concurrency) {
            return Err(invalid("sync.concurrency", "must be between 1 and 256"));
        }
        if !(1..=64).contains(&self.sync.parallel_regions) {
            return Err(invalid("sync.parallel_regions", "must be between 1 and 64"));
        }
        if !(1..=10).contains(&self.remediation.required_approvals) {
            return Err(invalid(
                "remediation.required_approvals",
                "must be between 1 and 10",
            ));
        }
        if self.remediation.auto_apply && self.remediation.mode != RemediationMode::Apply {
            return Err(invalid(
                "remediation.auto_apply",
                "needs mode = \"apply\": in propose-only mode Keyward never writes key policies",
            ));
        }
        if self.remediation.expires_after < Duration::from_secs(60) {
            return Err(invalid("remediation.expires_after", "must be at least 1m"));
        }
        if self.auth.session_ttl < Duration::from_secs(60)
            || self.auth.session_ttl > Duration::from_secs(31 * 24 * 3600)
        {
            return Err(invalid("auth.session_ttl", "must be between 1m and 31d"));
        }
        if let Some(h) = &self.auth.proxy_header
            && axum::http::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            return Err(invalid(
                "auth.proxy_header",
                format!("{h:?} is not a header name"),
            ));
        }
        for (user, role) in &self.auth.proxy_roles {
            if role.parse::<crate::web::auth::Role>().is_err() {
                return Err(invalid(
                    format!("auth.proxy_roles.{user}"),
                    format!("{role:?} is not viewer, operator, approver or admin"),
                ));
            }
        }
        if let Some(role) = &self.auth.default_role
            && role.parse::<crate::web::auth::Role>().is_err()
        {
            return Err(invalid(
                "auth.default_role",
                format!("{role:?} is not viewer, operator, approver or admin"),
            ));
        }
        if let Some(url) = &self.aws.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "aws.endpoint_url",
                format!("{url:?} is not an http(s) URL"),
            ));
        }
        let mut seen = Vec::new();
        for (i, a) in self.accounts.iter().enumerate() {
            let key = |field: &str| format!("accounts[{i}].{field}");
            if !is_account_id(&a.id) {
                return Err(invalid(
                    key("id"),
                    format!("{:?} is not a 12-digit account id", a.id),
                ));
            }
            if seen.contains(&a.id) {
                return Err(invalid(
                    key("id"),
                    format!("account {} is configured twice", a.id),
                ));
            }
            seen.push(a.id.clone());
            if a.regions.is_empty() {
                return Err(invalid(key("regions"), "list at least one region"));
            }
            for r in &a.regions {
                let ok = !r.is_empty()
                    && r.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !ok {
                    return Err(invalid(
                        key("regions"),
                        format!("{r:?} is not a region name"),
                    ));
                }
            }
            if let Some(role) = &a.role_arn {
                let arn = Arn::parse(role);
                if !arn.is_some_and(|arn| arn.service == "iam" && arn.resource.starts_with("role/"))
                {
                    return Err(invalid(
                        key("role_arn"),
                        format!("{role:?} is not an IAM role ARN"),
                    ));
                }
            }
            for admin in &a.key_admins {
                if !is_iam_identity_of(&session_to_role_arn(admin), &a.id) {
                    return Err(invalid(
                        key("key_admins"),
                        format!("{admin:?} is not an IAM role or user of account {}", a.id),
                    ));
                }
            }
            for (field, value) in [("auditor", &a.auditor), ("remediator", &a.remediator)] {
                if let Some(v) = value
                    && Arn::parse(v).is_none()
                {
                    return Err(invalid(key(field), format!("{v:?} is not an ARN")));
                }
            }
            for t in &a.trusted_accounts {
                if !is_account_id(t) {
                    return Err(invalid(
                        key("trusted_accounts"),
                        format!("{t:?} is not a 12-digit account id"),
                    ));
                }
            }
        }
        let mut urls = Vec::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            let key = |field: &str| format!("webhooks[{i}].{field}");
            let url_ok = reqwest::Url::parse(&w.url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
            });
            if !url_ok {
                return Err(invalid(
                    key("url"),
                    format!("{:?} is not an http(s) URL", w.url),
                ));
            }
            // Deliveries are kept per URL: two entries would share them.
            if urls.contains(&w.url) {
                return Err(invalid(
                    key("url"),
                    format!("webhook {} is configured twice", w.url),
                ));
            }
            urls.push(w.url.clone());
            if w.secret.trim().is_empty() {
                return Err(invalid(key("secret"), "must not be empty"));
            }
            if w.events.is_empty() {
                return Err(invalid(key("events"), "list at least one event"));
            }
            for e in &w.events {
                if !crate::store::events::ALL.contains(&e.as_str()) {
                    return Err(invalid(
                        key("events"),
                        format!(
                            "{e:?} is not an event; known: {}",
                            crate::store::events::ALL.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every configuration key, dotted, for tooling that sets them from the environment.
    pub fn known_keys() -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(Config::default()) {
            for (k, v) in map {
                match v {
                    serde_json::Value::Object(inner) => {
                        out.extend(inner.keys().map(|i| format!("{k}.{i}")));
                    }
                    _ => out.push(k),
                }
            }
        }
        out
    }
}

/// `KEYWARD_*` variables; `KEYWARD_TEST_*` belong to the test suite and `KEYWARD_TOKEN` to
/// `keyward remediation` (an API token), not to the configuration.
fn environment() -> Env {
    Env::prefixed("KEYWARD_")
        .filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            !key.starts_with("test_") && key != "token"
        })
        .split("__")
}

/// Figment's errors already name the key (`for key "sync.interval"`); keep all of them.
fn figment_message(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    // figment's Jail wants its own (large) error type from the closure; it is test-only.
    #[allow(clippy::result_large_err)]
    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(toml.as_bytes()).unwrap();
        // Jail resets the environment when it returns, so the lookup must happen inside it.
        let mut result = None;
        figment::Jail::expect_with(|jail| {
            for (k, v) in env {
                jail.set_env(k, v);
            }
            result = Some(Config::load_with_env(Some(f.path()), environment()));
            Ok(())
        });
        result.unwrap()
    }

    #[test]
    fn defaults() {
        let c = load("", &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.sync.interval, Duration::from_secs(900));
    }

    #[test]
    fn file_then_environment() {
        let c = load(
            r#"
database_url = "postgres://postgres@127.0.0.1/keyward"
listen = "0.0.0.0:9000"
[aws]
endpoint_url = "http://127.0.0.1:5000"
[sync]
interval = "5m"
concurrency = 8
[[accounts]]
id = "111122223333"
name = "prod"
role_arn = "arn:aws:iam::111122223333:role/KeywardAudit"
external_id = "xyz"
regions = ["us-east-1", "eu-west-1"]
key_admins = ["arn:aws:iam::111122223333:role/KMSAdmin"]
auditor = "arn:aws:iam::111122223333:role/KeywardAudit"
trusted_accounts = ["444455556666"]
"#,
            &[
                ("KEYWARD_SYNC__INTERVAL", "1h"),
                ("KEYWARD_LISTEN", "127.0.0.1:7000"),
                ("KEYWARD_LOG_FORMAT", "json"),
                ("KEYWARD_TEST_POSTGRES_URL", "postgres://ignored"),
                ("KEYWARD_TOKEN", "kw_not_configuration"),
            ],
        )
        .unwrap();
        assert_eq!(c.sync.interval, Duration::from_secs(3600));
        assert_eq!(c.sync.concurrency, 8);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.accounts[0].regions, vec!["us-east-1", "eu-west-1"]);
        assert_eq!(c.accounts[0].display_name(), "prod");
        assert_eq!(c.aws.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
    }

    #[test]
    fn errors_name_the_key() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case; 14] = [
            ("[sync]\ninterval = \"soon\"", &[], "interval"),
            ("[sync]\nconcurrency = 0", &[], "sync.concurrency"),
            ("surprise = 1", &[], "surprise"),
            ("database_url = \"mysql://x\"", &[], "database_url"),
            (
                "[[accounts]]\nid = \"123\"\nregions = [\"us-east-1\"]",
                &[],
                "accounts[0].id",
            ),
            (
                "[[accounts]]\nid = \"111122223333\"",
                &[],
                "accounts[0].regions",
            ),
            (
                "[[accounts]]\nid = \"111122223333\"\nregions = [\"us-east-1\"]\nkey_admins = [\"arn:aws:iam::444455556666:role/A\"]",
                &[],
                "accounts[0].key_admins",
            ),
            (
                "[[accounts]]\nid = \"111122223333\"\nregions = [\"us-east-1\"]\nrole_arn = \"nope\"",
                &[],
                "accounts[0].role_arn",
            ),
            ("", &[("KEYWARD_SYNC__CONCURRENCY", "many")], "concurrency"),
            (
                "[[webhooks]]\nurl = \"ftp://x\"\nsecret = \"s\"\nevents = [\"sync.failed\"]",
                &[],
                "webhooks[0].url",
            ),
            (
                "[[webhooks]]\nurl = \"https://t.example/h\"\nsecret = \"\"\nevents = [\"sync.failed\"]",
                &[],
                "webhooks[0].secret",
            ),
            (
                "[[webhooks]]\nurl = \"https://t.example/h\"\nsecret = \"s\"\nevents = [\"finding.exploded\"]",
                &[],
                "webhooks[0].events",
            ),
            (
                "[[webhooks]]\nurl = \"https://t.example/h\"\nsecret = \"s\"",
                &[],
                "webhooks[0].events",
            ),
            (
                "[[webhooks]]\nurl = \"https://t.example/h\"\nsecret = \"s\"\nevents = [\"sync.failed\"]\n[[webhooks]]\nurl = \"https://t.example/h\"\nsecret = \"t\"\nevents = [\"sync.failed\"]",
                &[],
                "webhooks[1].url",
            ),
        ];
        for (toml, env, key) in cases {
            let err = load(toml, env).unwrap_err().to_string();
            // figment reports environment keys in upper case
            assert!(err.to_lowercase().contains(key), "{toml:?}: {err}");
        }
    }

    #[test]
    fn webhooks_load_and_hide_their_secret() {
        let c = load(
            r#"
[[webhooks]]
url = "https://tickets.example.com/keyward"
secret = "s3cret"
events = ["finding.opened", "finding.resolved", "sync.failed"]
"#,
            &[],
        )
        .unwrap();
        assert_eq!(c.webhooks.len(), 1);
        assert_eq!(c.webhooks[0].events.len(), 3);
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn auto_apply_needs_apply_mode() {
        let err = load("[remediation]\nauto_apply = true\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("remediation.auto_apply"), "{err}");
        let ok = load("[remediation]\nmode = \"apply\"\nauto_apply = true\n", &[]).unwrap();
        assert!(ok.remediation.auto_apply);
    }

    #[test]
    fn dashboard_auth_settings_load_and_are_checked() {
        let c = load(
            "[auth]\nsession_ttl = \"2h\"\nsecure_cookies = \"always\"\nproxy_header = \"X-Forwarded-User\"\ndefault_role = \"viewer\"\n[auth.proxy_roles]\nalice = \"approver\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.auth.session_ttl, Duration::from_secs(7200));
        assert_eq!(c.auth.secure_cookies, SecureCookies::Always);
        assert_eq!(c.auth.proxy_roles["alice"], "approver");
        assert_eq!(
            Config::default().auth.session_ttl,
            Duration::from_secs(12 * 3600)
        );
        for (toml, key) in [
            ("[auth]\nsession_ttl = \"1s\"", "auth.session_ttl"),
            ("[auth.proxy_roles]\nbob = \"root\"", "auth.proxy_roles.bob"),
            ("[auth]\ndefault_role = \"god\"", "auth.default_role"),
            ("[auth]\nproxy_header = \"X User\"", "auth.proxy_header"),
        ] {
            let err = load(toml, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/keyward.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::Missing(_)));
    }

    #[test]
    fn known_keys_cover_nested_sections() {
        let keys = Config::known_keys();
        for k in [
            "database_url",
            "listen",
            "sync.interval",
            "aws.endpoint_url",
            "auth.metrics_public",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} in {keys:?}");
        }
    }
}
