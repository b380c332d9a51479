//! Every row of every table of a test database, to show what a sync pass wrote: the benchmark's
//! table diff (benches/sync.rs), for SQLite and Postgres.
#![allow(dead_code)]

use sqlx::{Connection, PgConnection, Row, SqliteConnection};
use std::collections::BTreeMap;

/// Each table's rows as JSON objects (sorted text), without the masked columns.
pub type Tables = BTreeMap<String, Vec<String>>;

/// Reads every table at `url`; `masked` lists `(table, column)` pairs left out of the rows.
pub async fn table_rows(url: &str, masked: &[(&str, &str)]) -> Tables {
    let raw = if url.starts_with("sqlite:") {
        sqlite_rows(url).await
    } else {
        postgres_rows(url).await
    };
    raw.into_iter()
        .map(|(table, rows)| {
            let mut rows: Vec<String> = rows
                .into_iter()
                .map(|text| {
                    let mut row: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(&text).expect("a row as a JSON object");
                    for (_, column) in masked.iter().filter(|(t, _)| *t == table) {
                        row.remove(*column);
                    }
                    serde_json::Value::Object(row).to_string()
                })
                .collect();
            rows.sort();
            (table, rows)
        })
        .collect()
}

async fn sqlite_rows(url: &str) -> BTreeMap<String, Vec<String>> {
    let mut conn = SqliteConnection::connect(url).await.expect("open SQLite");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    let mut out = BTreeMap::new();
    for table in tables {
        let columns: Vec<String> = sqlx::query(&format!("PRAGMA table_info(\"{table}\")"))
            .fetch_all(&mut conn)
            .await
            .expect("columns")
            .iter()
            .map(|r| r.get::<String, _>("name"))
            .collect();
        let object = columns
            .iter()
            .map(|c| format!("'{c}', \"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT json_object({object}) FROM \"{table}\""))
                .fetch_all(&mut conn)
                .await
                .expect("rows");
        out.insert(table, rows);
    }
    let _ = conn.close().await;
    out
}

async fn postgres_rows(url: &str) -> BTreeMap<String, Vec<String>> {
    let mut conn = PgConnection::connect(url)
        .await
        .expect("connect to Postgres");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
         AND table_name <> '_sqlx_migrations' ORDER BY table_name",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    let mut out = BTreeMap::new();
    for table in tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM \"{table}\" t"))
                .fetch_all(&mut conn)
                .await
                .expect("rows");
        out.insert(table, rows);
    }
    let _ = conn.close().await;
    out
}

/// The rows of `table` in `after` that are not in `before`, and those of `before` gone from
/// `after` (as multisets).
pub fn table_diff(before: &Tables, after: &Tables, table: &str) -> (Vec<String>, Vec<String>) {
    let empty = Vec::new();
    let old = before.get(table).unwrap_or(&empty);
    let new = after.get(table).unwrap_or(&empty);
    (minus(new, old), minus(old, new))
}

fn minus(a: &[String], b: &[String]) -> Vec<String> {
    let mut rest: BTreeMap<&str, usize> = BTreeMap::new();
    for r in b {
        *rest.entry(r.as_str()).or_default() += 1;
    }
    a.iter()
        .filter(|r| match rest.get_mut(r.as_str()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .cloned()
        .collect()
}
