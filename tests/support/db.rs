//! Databases for the store contract tests: a SQLite file in a temporary directory, always, and a
//! fresh Postgres database per test when `KEYWARD_TEST_POSTGRES_URL` names a server, so tests
//! run in parallel without seeing each other's rows.
#![allow(dead_code)]

use chrono::{DateTime, TimeDelta, Utc};
use keyward::clock::Clock;
use keyward::store::{self, Store};
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use std::sync::{Arc, Mutex};

/// A clock a test can set: the system time until [`TestClock::set`] or [`TestClock::advance`]
/// fixes it. Every test store reads waiver expiry against its database's clock.
#[derive(Debug, Default)]
pub struct TestClock {
    fixed: Mutex<Option<DateTime<Utc>>>,
}

impl TestClock {
    /// Stops time at `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.fixed.lock().expect("clock lock") = Some(at);
    }

    /// Moves time forward by `by` (from now, if time was still running), and stops it there.
    pub fn advance(&self, by: TimeDelta) {
        let mut fixed = self.fixed.lock().expect("clock lock");
        *fixed = Some(fixed.unwrap_or_else(Utc::now) + by);
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        self.fixed
            .lock()
            .expect("clock lock")
            .unwrap_or_else(Utc::now)
    }
}

/// The variable naming the Postgres server (any database on it; a fresh one is created).
pub const POSTGRES_ENV: &str = "KEYWARD_TEST_POSTGRES_URL";

/// One test's database, dropped (best effort) with it.
pub struct TestDb {
    url: String,
    store: Arc<dyn Store>,
    clock: Arc<TestClock>,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<Scratch>,
}

/// A scratch Postgres database and how to reach the server to drop it.
struct Scratch {
    admin_url: String,
    name: String,
}

impl TestDb {
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    pub fn shared(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// The database's URL, to read it behind the store's back.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The clock the store judges waiver expiry against.
    pub fn clock(&self) -> Arc<TestClock> {
        Arc::clone(&self.clock)
    }

    /// Runs raw SQL on the test database behind the store's back (to tamper with rows, say);
    /// returns how many rows it changed.
    pub async fn execute(&self, sql: &str) -> u64 {
        let done = if self.postgres.is_some() {
            let mut conn = PgConnection::connect(&self.url)
                .await
                .expect("connect to the test database");
            let done = conn.execute(sql).await;
            let _ = conn.close().await;
            done.map(|d| d.rows_affected())
        } else {
            let mut conn = SqliteConnection::connect(&self.url)
                .await
                .expect("open the test database");
            let done = conn.execute(sql).await;
            let _ = conn.close().await;
            done.map(|d| d.rows_affected())
        };
        done.unwrap_or_else(|e| panic!("raw SQL {sql:?} failed: {e}"))
    }

    /// A second store on the same database, as another replica would open it.
    pub async fn replica(&self) -> Arc<dyn Store> {
        store::connect_with_clock(&self.url, self.clock.clone())
            .await
            .expect("open a second store")
    }
}

/// A store on a new SQLite file.
pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("keyward.db").display());
    let clock = Arc::new(TestClock::default());
    let store = store::connect_with_clock(&url, clock.clone())
        .await
        .expect("open the SQLite store");
    TestDb {
        url,
        store,
        clock,
        _dir: Some(dir),
        postgres: None,
    }
}

/// A store on a new Postgres database, or `None` when no server is configured.
pub async fn postgres() -> Option<TestDb> {
    postgres_with(true).await
}

/// Like [`postgres`], but leaves creating the database to the store's `connect`.
pub async fn postgres_created_by_connect() -> Option<TestDb> {
    postgres_with(false).await
}

async fn postgres_with(create: bool) -> Option<TestDb> {
    let Some(server) = std::env::var(POSTGRES_ENV).ok().filter(|u| !u.is_empty()) else {
        eprintln!("{POSTGRES_ENV} is not set: skipping the Postgres run");
        return None;
    };
    let name = format!("keyward_t_{:016x}", rand::random::<u64>());
    let admin_url = with_database(&server, "postgres");
    if create {
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect to the Postgres server");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create the test database");
        let _ = admin.close().await;
    }
    let url = with_database(&server, &name);
    let clock = Arc::new(TestClock::default());
    let store = store::connect_with_clock(&url, clock.clone())
        .await
        .expect("open the Postgres store");
    Some(TestDb {
        url,
        store,
        clock,
        _dir: None,
        postgres: Some(Scratch { admin_url, name }),
    })
}

/// The same server URL with another database name.
fn with_database(url: &str, database: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let authority = head.find("://").map_or(0, |i| i + 3);
    let base = match head[authority..].find('/') {
        Some(i) => &head[..authority + i],
        None => head,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(scratch) = self.postgres.take() else {
            return;
        };
        // Drop cannot await, and the test's runtime may be going away: use a thread of its own.
        // FORCE ends the connections the store's pool may still hold.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&scratch.admin_url).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", scratch.name);
                let done = admin.execute(sql.as_str()).await.ok();
                let _ = admin.close().await;
                done
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop a scratch test database (best effort)");
        }
    }
}

#[test]
fn with_database_replaces_only_the_database() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
}
