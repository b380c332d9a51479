//! What names this process to other replicas: sync leases and remediation claims.

/// This process among replicas and claims: host (`HOSTNAME`, else `/etc/hostname`) and pid.
pub fn instance_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "keyward".into());
        format!("{host}-{}", std::process::id())
    })
}
