//! The storage test suite, written once (`storage/suite.rs`) against the traits of
//! `ai_rate_limiter::store` and instantiated per backend by `storage_tests!`.
//!
//! Every test gets its own fresh database: a temp file for SQLite; for PostgreSQL a new
//! database `airl_test_<uuid>` created on the server `TEST_DATABASE_URL` points at (and dropped
//! afterwards). Without `TEST_DATABASE_URL` the PostgreSQL tests are skipped, except in CI
//! (`CI` set), where they fail.
//!
//! Run: `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test --test storage`

// A test file is a crate root: its modules resolve next to it unless told otherwise.
#[path = "storage/fixtures.rs"]
mod fixtures;
#[path = "storage/suite.rs"]
mod suite;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;
use uuid::Uuid;

use ai_rate_limiter::Error;
use ai_rate_limiter::store::{self, Store};

/// One fresh, migrated store and what it takes to throw it away.
struct TestDb {
    store: Arc<dyn Store>,
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    /// Holds the temp directory until the test ends.
    Sqlite {
        _dir: tempfile::TempDir,
    },
    Postgres {
        admin_url: String,
        name: String,
    },
}

impl TestDb {
    /// Drops the database (best effort; a failed test leaves its database behind).
    async fn finish(self) {
        let TestDb { store, cleanup, .. } = self;
        drop(store);
        if let Cleanup::Postgres { admin_url, name } = cleanup
            && let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await
        {
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await;
            let _ = admin.close().await;
        }
    }
}

/// A store on a new SQLite file.
async fn sqlite_db() -> Option<TestDb> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    let store = store::connect(&url).await.expect("open SQLite store");
    Some(TestDb {
        store,
        url,
        cleanup: Cleanup::Sqlite { _dir: dir },
    })
}

/// The server to create test databases on, or `None` (skip) outside CI.
fn test_database_url() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "TEST_DATABASE_URL must be set in CI (e.g. postgres://postgres@127.0.0.1:5432/test)"
            )
        }
        _ => {
            eprintln!("skipped: TEST_DATABASE_URL not set");
            None
        }
    }
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let mut u = reqwest::Url::parse(url).expect("TEST_DATABASE_URL is not a URL");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

/// A store on a new PostgreSQL database.
async fn postgres_db() -> Option<TestDb> {
    let admin_url = test_database_url()?;
    let name = format!("airl_test_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to TEST_DATABASE_URL");
    let sql = format!("CREATE DATABASE \"{name}\"");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let _ = admin.close().await;
    let url = with_database(&admin_url, &name);
    let store = store::connect(&url).await.expect("open PostgreSQL store");
    Some(TestDb {
        store,
        url,
        cleanup: Cleanup::Postgres { admin_url, name },
    })
}

/// Instantiates the suite for one backend: `storage_tests!(name, make_db().await)` generates
/// `mod name { #[tokio::test] async fn <each test of suite.rs>() {..} }`.
macro_rules! storage_tests {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            storage_tests!(@each $make;
                answers_ping,
                creates_and_lists_workspaces,
                creates_a_workspace_with_its_keys,
                duplicate_workspace_is_a_conflict,
                failed_workspace_creation_writes_nothing,
                sets_worker_count,
                deleting_a_workspace_cascades_to_keys_and_messages,
                inserts_lists_and_gets_keys,
                key_of_a_missing_workspace_is_refused,
                updates_keys,
                sets_key_health,
                deletes_keys,
                secrets_round_trip_exactly,
                key_config_round_trips,
                token_limit_round_trips,
                inserts_and_gets_messages,
                message_of_a_missing_workspace_is_refused,
                insert_message_is_idempotent,
                message_id_of_another_workspace_returns_the_original,
                mark_processing_keeps_the_first_start,
                claiming_returns_unfinished_messages_marked_processing,
                completes_a_message_once,
                completes_a_pending_message_as_failed,
                json_results_round_trip,
                timestamps_round_trip,
                unfinished_messages_are_oldest_first_and_not_final,
                batch_insert_is_one_idempotent_transaction,
                batch_insert_returns_existing_for_known_ids_in_order,
                batch_completion_writes_each_once,
                messages_are_listed_in_document_order_and_paginated,
                listing_filters_by_status_and_counts_all,
                grants_are_recorded_and_read_back_per_workspace,
                old_grants_are_pruned_by_their_key_period,
                grants_go_with_their_key,
            );

            #[tokio::test]
            async fn reports_its_backend() {
                let Some(db) = $make else { return };
                assert_eq!(db.store.backend(), stringify!($backend));
                db.finish().await;
            }

            #[tokio::test]
            async fn reopening_keeps_data_and_migrating_again_is_harmless() {
                let Some(db) = $make else { return };
                let w = fixtures::workspace("kept", fixtures::at(0, 0));
                db.store.create_workspace(&w, &[]).await.unwrap();
                store::migrate(&db.url).await.unwrap();
                let reopened = store::connect(&db.url).await.unwrap();
                assert_eq!(
                    reopened.list_workspaces(None).await.unwrap(),
                    vec![fixtures::ws_us(w)]
                );
                drop(reopened);
                db.finish().await;
            }
        }
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some(db) = $make else { return };
                suite::$name(db.store.clone()).await;
                db.finish().await;
            }
        )*
    };
}

storage_tests!(sqlite, sqlite_db().await);
storage_tests!(postgres, postgres_db().await);

// ---------------------------------------------------------------------------------------------
// Backend selection and connection failures (no database needed)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unreachable_postgres_fails_fast_without_leaking_the_password() {
    let started = Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        store::connect("postgres://user:s3cr3t@127.0.0.1:1/x"),
    )
    .await
    .expect("connect must not hang");
    let Err(err) = res else {
        panic!("connecting to a closed port must fail")
    };
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    eprintln!("error as reported: {err}");
    assert!(matches!(err, Error::Unavailable(_)), "got {err:?}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("s3cr3t"), "password leaked: {text}");
    assert!(
        text.contains("127.0.0.1:1"),
        "should name the server: {text}"
    );

    // A password given as a parameter, and a URL that does not parse, leak nothing either.
    for url in [
        "postgres://user@127.0.0.1:1/x?password=s3cr3t",
        "postgres://user:s3cr3t@127.0.0.1:notaport/x",
    ] {
        let err = store::connect(url).await.err().expect("must fail");
        let text = format!("{err} {err:?}");
        assert!(!text.contains("s3cr3t"), "password leaked: {text}");
    }

    // Same without a password, and with the other scheme.
    let err = store::connect("postgresql://postgres@127.0.0.1:1/nope")
        .await
        .err()
        .expect("must fail");
    assert!(matches!(err, Error::Unavailable(_)), "got {err:?}");
}

#[tokio::test]
async fn unknown_url_scheme_is_refused_naming_both_backends() {
    for url in ["mysql://u:p@h/db", "nonsense"] {
        let err = store::connect(url).await.err().expect("must fail");
        assert!(matches!(err, Error::Validation(_)), "got {err:?}");
        let text = err.to_string();
        assert!(
            text.contains("sqlite:") && text.contains("postgres://"),
            "{text}"
        );
        assert!(!text.contains(":p@"), "{text}");
        assert!(store::migrate(url).await.is_err());
    }
}

#[tokio::test]
async fn wrong_postgres_password_is_unavailable_and_not_echoed() {
    let Some(admin_url) = test_database_url() else {
        return;
    };
    // Trust auth may accept any password; then there is nothing to check.
    let mut u = reqwest::Url::parse(&admin_url).unwrap();
    u.set_username("airl_no_such_role").unwrap();
    u.set_password(Some("pa55-w0rd")).unwrap();
    let err = store::connect(u.as_str())
        .await
        .err()
        .expect("unknown role must fail");
    assert!(matches!(err, Error::Unavailable(_)), "got {err:?}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("pa55-w0rd"), "password leaked: {text}");
}

#[tokio::test]
async fn postgres_refuses_nul_in_input_and_cleans_it_from_results() {
    let Some(db) = postgres_db().await else {
        return;
    };
    use ai_rate_limiter::domain::{MessageResult, MessageStatus};
    use ai_rate_limiter::store::Completion;
    use fixtures::*;

    let s = &db.store;
    s.create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let mut bad = message("w", at(0, 0));
    bad.request.prompt = "a\0b".into();
    let err = s.insert_message(&bad).await.unwrap_err();
    assert!(matches!(err, Error::Validation(_)), "got {err:?}");
    // In a batch, it refuses the whole batch.
    let fine = message("w", at(0, 0));
    let err = s
        .insert_messages(&[fine.clone(), bad.clone()])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Validation(_)), "got {err:?}");
    assert_eq!(s.get_message(fine.id).await.unwrap(), None);

    let mut k = key("w", at(0, 0));
    k.config.model = "m\0".into();
    assert!(matches!(
        s.insert_key(&k).await.unwrap_err(),
        Error::Validation(_)
    ));

    // Provider output is stored whatever it holds, with U+FFFD for NUL.
    let m = message("w", at(0, 0));
    s.insert_message(&m).await.unwrap();
    let done = Completion {
        status: MessageStatus::Success,
        result: Some(MessageResult {
            text: "x\0y".into(),
            json: Some(serde_json::json!({"k\0": ["v\0"]})),
            model: "m".into(),
            usage: None,
        }),
        error: Some("e\0".into()),
        attempts: 1,
        key_id: None,
        completed_at: at(1, 0),
    };
    assert!(s.complete_message(m.id, &done).await.unwrap());
    let got = s.get_message(m.id).await.unwrap().unwrap();
    let r = got.result.unwrap();
    assert_eq!(r.text, "x\u{FFFD}y");
    assert_eq!(
        r.json,
        Some(serde_json::json!({"k\u{FFFD}": ["v\u{FFFD}"]}))
    );
    assert_eq!(got.error.as_deref(), Some("e\u{FFFD}"));

    // Also in a batch.
    let m2 = message("w", at(2, 0));
    s.insert_message(&m2).await.unwrap();
    assert_eq!(
        s.complete_messages(&[(m2.id, done)]).await.unwrap(),
        vec![true]
    );
    let got = s.get_message(m2.id).await.unwrap().unwrap();
    assert_eq!(got.result.unwrap().text, "x\u{FFFD}y");
    db.finish().await;
}
