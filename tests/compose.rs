//! docker-compose.yml, the Dockerfile and the demo configuration stay in step with the
//! configuration keys Keyward really reads: Docker cannot run here, so this is what catches a
//! misspelt variable.

use std::path::Path;

use keyward::config::Config;
use serde_yaml::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml"))
        .expect("read docker-compose.yml");
    serde_yaml::from_str(&text).expect("docker-compose.yml is YAML")
}

fn services(compose: &Value) -> &serde_yaml::Mapping {
    compose["services"]
        .as_mapping()
        .expect("a services mapping")
}

/// A service's environment as (name, value) pairs, from either compose form: a mapping, or a
/// list of `NAME=value` strings.
fn environment(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Null => Vec::new(),
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => serde_yaml::to_string(other).unwrap().trim().to_string(),
                };
                (
                    k.as_str().expect("variable names are strings").to_string(),
                    value,
                )
            })
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|item| {
                let s = item.as_str().expect("NAME=value strings");
                let (k, v) = s.split_once('=').unwrap_or((s, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        other => panic!("environment is neither a mapping nor a list: {other:?}"),
    }
}

/// The words of a service's command, from either form: a string or a list.
fn command(service: &Value) -> Vec<String> {
    match &service["command"] {
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|i| i.as_str().expect("command words are strings").to_string())
            .collect(),
        other => panic!("no command: {other:?}"),
    }
}

/// `KEYWARD_SYNC__INTERVAL` → `sync.interval`, as the loader maps it.
fn config_key(variable: &str) -> Option<String> {
    let rest = variable.strip_prefix("KEYWARD_")?;
    Some(rest.to_lowercase().replace("__", "."))
}

#[test]
fn the_stack_has_its_services() {
    let compose = compose();
    let services = services(&compose);
    for name in ["postgres", "moto", "seed", "keyward"] {
        assert!(services.contains_key(name), "service {name} is missing");
    }
    let keyward = &services["keyward"];
    assert_eq!(
        keyward["build"].as_str(),
        Some("."),
        "keyward is built from the Dockerfile"
    );
    assert_eq!(command(keyward), ["serve"]);
    assert!(Path::new(&root().join("Dockerfile")).exists());
}

#[test]
fn every_keyward_variable_is_a_configuration_key() {
    let known = Config::known_keys();
    let compose = compose();
    let mut checked = 0;
    for (name, service) in services(&compose) {
        for (variable, _) in environment(service) {
            let Some(key) = config_key(&variable) else {
                continue;
            };
            assert!(
                known.contains(&key),
                "service {}: {variable} sets {key:?}, which is not a configuration key; known: {known:?}",
                name.as_str().unwrap_or("?")
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "the keyward service is configured through KEYWARD_* variables"
    );
}

#[test]
fn keyward_waits_for_its_dependencies_and_reaches_them() {
    let compose = compose();
    let services = services(&compose);
    let keyward = &services["keyward"];
    let depends = &keyward["depends_on"];
    assert_eq!(
        depends["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );
    assert_eq!(
        depends["seed"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
    assert_eq!(
        services["seed"]["depends_on"]["moto"]["condition"].as_str(),
        Some("service_healthy")
    );
    for name in ["postgres", "moto"] {
        assert!(
            !services[name]["healthcheck"]["test"].is_null(),
            "{name} has a healthcheck"
        );
    }

    let env: std::collections::HashMap<String, String> = environment(keyward).into_iter().collect();
    // The URL's password and database are the ones the postgres service creates.
    let postgres: std::collections::HashMap<String, String> =
        environment(&services["postgres"]).into_iter().collect();
    let url = &env["KEYWARD_DATABASE_URL"];
    assert!(url.starts_with("postgres://"), "{url}");
    assert!(
        url.contains(&format!(
            ":{}@postgres:5432/",
            postgres["POSTGRES_PASSWORD"]
        )),
        "{url}"
    );
    assert!(
        url.ends_with(&format!("/{}", postgres["POSTGRES_DB"])),
        "{url}"
    );
    assert_eq!(env["KEYWARD_AWS__ENDPOINT_URL"], "http://moto:5000");
    // The seed writes where Keyward reads.
    assert!(
        command(&services["seed"])
            .join(" ")
            .contains("--endpoint http://moto:5000")
    );
    let port = env["KEYWARD_LISTEN"]
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let ports: Vec<&str> = keyward["ports"]
        .as_sequence()
        .expect("keyward publishes a port")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        ports.iter().any(|p| p.ends_with(&format!(":{port}"))),
        "{ports:?} publish {port}"
    );
    // Every file mounted from the repository exists.
    for (name, service) in services {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let Some(source) = volume.as_str().and_then(|v| v.split(':').next()) else {
                continue;
            };
            if source.starts_with("./") {
                assert!(
                    root().join(source).exists(),
                    "{}: {source} does not exist",
                    name.as_str().unwrap()
                );
            }
        }
    }
}

#[test]
fn the_demo_configuration_is_valid() {
    let path = root().join("examples/keyward.demo.toml");
    let config = Config::load(Some(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ids: Vec<&str> = config.accounts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["111111111111", "222222222222"]);
    for a in &config.accounts {
        assert_eq!(a.regions, ["us-east-1", "eu-west-1"]);
        assert!(
            a.role_arn.is_some() && a.auditor.is_some() && !a.key_admins.is_empty(),
            "{a:?}"
        );
    }
}

/// The variables a Dockerfile's `ENV` instructions set, in both forms (`ENV A=1 B="x y"` and the
/// legacy `ENV A 1`), across line continuations.
fn dockerfile_env(text: &str) -> Vec<(String, String)> {
    let joined = text.replace("\\\n", " ");
    let mut vars = Vec::new();
    for line in joined.lines() {
        let line = line.trim();
        let Some((instruction, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        if !instruction.eq_ignore_ascii_case("ENV") {
            continue;
        }
        let rest = rest.trim();
        let first = rest.split_whitespace().next().unwrap_or("");
        if !first.contains('=') {
            let (name, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            vars.push((name.to_string(), value.trim().to_string()));
            continue;
        }
        // KEY=VALUE pairs; a value may be double-quoted and hold spaces.
        let mut chars = rest.chars().peekable();
        while chars.peek().is_some() {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if name.is_empty() {
                break;
            }
            let mut value = String::new();
            let mut quoted = false;
            while let Some(&c) = chars.peek() {
                if c == '"' {
                    quoted = !quoted;
                } else if c.is_whitespace() && !quoted {
                    break;
                } else {
                    value.push(c);
                }
                chars.next();
            }
            vars.push((name, value));
        }
    }
    vars
}

#[test]
fn dockerfile_env_reads_both_forms() {
    let text = "FROM x\nENV A=1 B=\"two words\" \\\n    C=3\nenv LEGACY some value\nRUN ENV=no\n";
    assert_eq!(
        dockerfile_env(text),
        [
            ("A".to_string(), "1".to_string()),
            ("B".into(), "two words".into()),
            ("C".into(), "3".into()),
            ("LEGACY".into(), "some value".into()),
        ]
    );
}

#[test]
fn every_keyward_variable_of_the_dockerfile_is_a_configuration_key() {
    let known = Config::known_keys();
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let mut checked = 0;
    for (variable, value) in dockerfile_env(&text) {
        let Some(key) = config_key(&variable) else {
            continue;
        };
        assert!(
            known.contains(&key),
            "Dockerfile: ENV {variable} sets {key:?}, which is not a configuration key; known: {known:?}"
        );
        assert!(!value.is_empty(), "Dockerfile: ENV {variable} is empty");
        checked += 1;
    }
    assert!(
        checked >= 1,
        "the image listens beyond its own loopback through KEYWARD_LISTEN"
    );
}
