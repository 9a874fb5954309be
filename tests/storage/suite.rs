//! The storage test bodies, written once against the traits of `ai_rate_limiter::store` and run
//! on every backend by `storage_tests!`. Each body gets a fresh, empty, migrated store.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use ai_rate_limiter::Error;
use ai_rate_limiter::domain::{
    ApiKey, KeyConfig, Message, MessageResult, MessageStatus, ProviderKind, RateLimit, RatePeriod,
    Usage,
};
use ai_rate_limiter::store::{Completion, Inserted, MessagePage, Store};

use super::fixtures::*;

type S = Arc<dyn Store>;

fn success(at_secs: i64, key_id: Option<Uuid>) -> Completion {
    Completion {
        status: MessageStatus::Success,
        result: Some(MessageResult {
            text: "Hello, how are you?".into(),
            json: None,
            model: "gpt-4o-mini-2024-07-18".into(),
            usage: Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 7,
                total_tokens: 19,
            }),
        }),
        error: None,
        attempts: 2,
        key_id,
        completed_at: at(at_secs, 999_999_999),
    }
}

pub async fn answers_ping(store: S) {
    store.ping().await.unwrap();
}

pub async fn creates_and_lists_workspaces(store: S) {
    assert!(store.list_workspaces(None).await.unwrap().is_empty());
    // Inserted out of order; listed by creation time, then id.
    let b = workspace("b", at(2, 0));
    let c = workspace("c", at(1, 0));
    let a = workspace("a", at(1, 0));
    // Mixed sub-second precision must still order by time (not by text).
    let d = workspace("d", at(1, 500_000_000));
    let e = workspace("e", at(1, 123_456_000));
    for w in [&b, &c, &a, &d, &e] {
        store.create_workspace(w, &[]).await.unwrap();
    }
    let all = store.list_workspaces(None).await.unwrap();
    let expected: Vec<_> = [&a, &c, &e, &d, &b]
        .into_iter()
        .map(|w| ws_us(w.clone()))
        .collect();
    assert_eq!(all, expected);

    let only_c = store.list_workspaces(Some(&wid("c"))).await.unwrap();
    assert_eq!(only_c, vec![ws_us(c.clone())]);
    assert!(
        store
            .list_workspaces(Some(&wid("zzz")))
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        store.get_workspace(&wid("b")).await.unwrap(),
        Some(ws_us(b))
    );
    assert_eq!(store.get_workspace(&wid("nope")).await.unwrap(), None);
}

pub async fn creates_a_workspace_with_its_keys(store: S) {
    let w = workspace("ws-1", at(0, 0));
    let k1 = key("ws-1", at(0, 0));
    let mut k2 = key("ws-1", at(0, 0));
    k2.provider = ProviderKind::Mock;
    store
        .create_workspace(&w, &[k1.clone(), k2.clone()])
        .await
        .unwrap();
    let mut expected = vec![key_us(k1), key_us(k2)];
    // Same creation time: ordered by key id.
    expected.sort_by_key(|k| k.id);
    assert_eq!(store.list_keys(Some(&wid("ws-1"))).await.unwrap(), expected);
}

pub async fn duplicate_workspace_is_a_conflict(store: S) {
    let w = workspace("dup", at(0, 0));
    let k = key("dup", at(0, 0));
    store
        .create_workspace(&w, std::slice::from_ref(&k))
        .await
        .unwrap();

    let again = workspace("dup", at(5, 0));
    let other_key = key("dup", at(5, 0));
    let err = store
        .create_workspace(&again, &[other_key])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "got {err:?}");
    assert!(err.to_string().contains("dup"), "{err}");

    // Nothing of the failed registration was written.
    assert_eq!(
        store.get_workspace(&wid("dup")).await.unwrap(),
        Some(ws_us(w))
    );
    assert_eq!(store.list_keys(None).await.unwrap(), vec![key_us(k)]);
}

pub async fn failed_workspace_creation_writes_nothing(store: S) {
    // Two keys with the same id: the second insert fails, the transaction rolls back.
    let w = workspace("atomic", at(0, 0));
    let k = key("atomic", at(0, 0));
    assert!(store.create_workspace(&w, &[k.clone(), k]).await.is_err());
    assert_eq!(store.get_workspace(&wid("atomic")).await.unwrap(), None);
    assert!(store.list_keys(None).await.unwrap().is_empty());
    // The id is free again.
    store.create_workspace(&w, &[]).await.unwrap();
}

pub async fn sets_worker_count(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    assert!(store.set_worker_count(&wid("w"), 7).await.unwrap());
    assert_eq!(
        store
            .get_workspace(&wid("w"))
            .await
            .unwrap()
            .unwrap()
            .worker_count,
        7
    );
    assert!(store.set_worker_count(&wid("w"), 0).await.unwrap());
    assert_eq!(
        store
            .get_workspace(&wid("w"))
            .await
            .unwrap()
            .unwrap()
            .worker_count,
        0
    );
    assert!(!store.set_worker_count(&wid("missing"), 3).await.unwrap());
}

pub async fn deleting_a_workspace_cascades_to_keys_and_messages(store: S) {
    let k_gone = key("gone", at(0, 0));
    let k_kept = key("kept", at(0, 0));
    store
        .create_workspace(&workspace("gone", at(0, 0)), std::slice::from_ref(&k_gone))
        .await
        .unwrap();
    store
        .create_workspace(&workspace("kept", at(0, 0)), std::slice::from_ref(&k_kept))
        .await
        .unwrap();
    let m_gone = message("gone", at(1, 0));
    let m_kept = message("kept", at(1, 0));
    store.insert_message(&m_gone).await.unwrap();
    store.insert_message(&m_kept).await.unwrap();

    assert!(store.delete_workspace(&wid("gone")).await.unwrap());
    assert!(!store.delete_workspace(&wid("gone")).await.unwrap());

    assert_eq!(store.get_workspace(&wid("gone")).await.unwrap(), None);
    assert_eq!(store.get_key(k_gone.id).await.unwrap(), None);
    assert_eq!(store.get_message(m_gone.id).await.unwrap(), None);
    assert_eq!(
        store.unfinished_messages().await.unwrap(),
        vec![(wid("kept"), m_kept.id)]
    );
    // The other workspace is untouched.
    assert_eq!(store.list_keys(None).await.unwrap(), vec![key_us(k_kept)]);
    assert_eq!(
        store.get_message(m_kept.id).await.unwrap().map(msg_us),
        Some(msg_us(m_kept))
    );
}

pub async fn inserts_lists_and_gets_keys(store: S) {
    for w in ["a", "b"] {
        store
            .create_workspace(&workspace(w, at(0, 0)), &[])
            .await
            .unwrap();
    }
    let a2 = key("a", at(2, 0));
    let b1 = key("b", at(1, 0));
    let a1 = key("a", at(1, 500_000));
    for k in [&a2, &b1, &a1] {
        store.insert_key(k).await.unwrap();
    }
    assert_eq!(
        store.list_keys(None).await.unwrap(),
        vec![key_us(b1.clone()), key_us(a1.clone()), key_us(a2.clone())]
    );
    assert_eq!(
        store.list_keys(Some(&wid("a"))).await.unwrap(),
        vec![key_us(a1.clone()), key_us(a2)]
    );
    assert!(
        store
            .list_keys(Some(&wid("none")))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.get_key(a1.id).await.unwrap(), Some(key_us(a1)));
    assert_eq!(store.get_key(Uuid::new_v4()).await.unwrap(), None);
}

pub async fn key_of_a_missing_workspace_is_refused(store: S) {
    let k = key("missing", at(0, 0));
    assert!(store.insert_key(&k).await.is_err());
    assert_eq!(store.get_key(k.id).await.unwrap(), None);
}

pub async fn updates_keys(store: S) {
    let k = key("w", at(0, 0));
    store
        .create_workspace(&workspace("w", at(0, 0)), std::slice::from_ref(&k))
        .await
        .unwrap();
    let mut updated = k.clone();
    updated.provider = ProviderKind::Mock;
    updated.api_key = ApiKey::parse("sk-rotated-000000000000").unwrap();
    updated.rate_limit = RateLimit::new(3, RatePeriod::from_seconds(86_400).unwrap()).unwrap();
    // An update may clear the token limit.
    updated.token_limit = None;
    updated.config = KeyConfig {
        model: "gpt-4.1".into(),
        ..Default::default()
    };
    updated.healthy = false;
    updated.updated_at = at(9, 1_234);
    assert!(store.update_key(&updated).await.unwrap());
    let got = key_us(store.get_key(k.id).await.unwrap().unwrap());
    assert_eq!(got, key_us(updated.clone()));
    // Creation time and owner are not changed by an update.
    assert_eq!(got.created_at, key_us(k.clone()).created_at);

    let mut ghost = updated;
    ghost.id = Uuid::new_v4();
    assert!(!store.update_key(&ghost).await.unwrap());
    assert_eq!(store.get_key(ghost.id).await.unwrap(), None);
}

pub async fn sets_key_health(store: S) {
    let k = key("w", at(0, 0));
    store
        .create_workspace(&workspace("w", at(0, 0)), std::slice::from_ref(&k))
        .await
        .unwrap();
    store.set_key_healthy(k.id, false).await.unwrap();
    let got = store.get_key(k.id).await.unwrap().unwrap();
    assert!(!got.healthy);
    // Only the flag changed.
    assert_eq!(
        got,
        key_us(ai_rate_limiter::domain::ProviderKey {
            healthy: false,
            ..k.clone()
        })
    );
    store.set_key_healthy(k.id, true).await.unwrap();
    assert!(store.get_key(k.id).await.unwrap().unwrap().healthy);
    // A missing key is not an error.
    store.set_key_healthy(Uuid::new_v4(), false).await.unwrap();
}

pub async fn deletes_keys(store: S) {
    let k1 = key("w", at(0, 0));
    let k2 = key("w", at(1, 0));
    store
        .create_workspace(&workspace("w", at(0, 0)), &[k1.clone(), k2.clone()])
        .await
        .unwrap();
    assert!(store.delete_key(k1.id).await.unwrap());
    assert!(!store.delete_key(k1.id).await.unwrap());
    assert_eq!(store.get_key(k1.id).await.unwrap(), None);
    assert_eq!(store.list_keys(None).await.unwrap(), vec![key_us(k2)]);
    // The workspace stays.
    assert!(store.get_workspace(&wid("w")).await.unwrap().is_some());
}

pub async fn secrets_round_trip_exactly(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let secrets = [
        "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".to_owned(),
        "short".to_owned(),
        r#"k3y with spaces, 'quotes' "double" \back\slash; DROP TABLE x;--"#.to_owned(),
        "ключ-🔑-密钥".to_owned(),
        "x".repeat(4096),
    ];
    for (i, secret) in secrets.iter().enumerate() {
        let mut k = key("w", at(i as i64, 0));
        k.api_key = ApiKey::parse(secret).unwrap();
        store.insert_key(&k).await.unwrap();
        let got = store.get_key(k.id).await.unwrap().unwrap();
        // The store keeps the whole secret; masking is the API's job.
        assert_eq!(got.api_key.expose(), secret.as_str());
        assert_eq!(got.api_key, k.api_key);
    }
}

pub async fn key_config_round_trips(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let full = key("w", at(0, 0));
    let mut minimal = key("w", at(1, 0));
    minimal.config = KeyConfig {
        model: "m".into(),
        ..Default::default()
    };
    let mut odd = key("w", at(2, 0));
    odd.config = KeyConfig {
        model: "modèle \"ü\" 🚀".into(),
        endpoint: Some("https://example.org/openai/deployments/x?api-version=1&y=2".into()),
        api_version: None,
        temperature: Some(0.1),
        max_tokens: Some(u32::MAX),
        timeout_s: Some(3600.0),
        ..Default::default()
    };
    for k in [&full, &minimal, &odd] {
        store.insert_key(k).await.unwrap();
        let got = store.get_key(k.id).await.unwrap().unwrap();
        assert_eq!(got.config, k.config);
    }
}

pub async fn token_limit_round_trips(store: S) {
    let limited = key("w", at(0, 0));
    let mut unlimited = key("w", at(1, 0));
    unlimited.token_limit = None;
    let mut largest = key("w", at(2, 0));
    largest.token_limit = Some(i64::MAX as u64);
    let mut smallest = key("w", at(3, 0));
    smallest.token_limit = Some(1);
    store
        .create_workspace(&workspace("w", at(0, 0)), std::slice::from_ref(&limited))
        .await
        .unwrap();
    for k in [&unlimited, &largest, &smallest] {
        store.insert_key(k).await.unwrap();
    }
    for k in [&limited, &unlimited, &largest, &smallest] {
        let got = store.get_key(k.id).await.unwrap().unwrap();
        assert_eq!(got.token_limit, k.token_limit);
    }
    let listed: Vec<Option<u64>> = store
        .list_keys(Some(&wid("w")))
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.token_limit)
        .collect();
    assert_eq!(
        listed,
        vec![Some(90_000), None, Some(i64::MAX as u64), Some(1)]
    );

    // An update sets a limit where there was none, changes one, and clears one.
    for (k, to) in [
        (&unlimited, Some(500)),
        (&limited, Some(7)),
        (&largest, None),
    ] {
        let mut updated = k.clone();
        updated.token_limit = to;
        updated.updated_at = at(9, 0);
        assert!(store.update_key(&updated).await.unwrap());
        let got = store.get_key(k.id).await.unwrap().unwrap();
        assert_eq!(got.token_limit, to);
        assert_eq!(key_us(got), key_us(updated));
    }
}

pub async fn inserts_and_gets_messages(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let full = message("w", at(1, 0));
    let bare = bare_message("w", at(2, 0));
    for m in [&full, &bare] {
        assert!(matches!(
            store.insert_message(m).await.unwrap(),
            Inserted::New
        ));
        let got = store.get_message(m.id).await.unwrap().unwrap();
        assert_eq!(msg_us(got), msg_us(m.clone()));
    }
    assert_eq!(store.get_message(Uuid::new_v4()).await.unwrap(), None);
}

pub async fn message_of_a_missing_workspace_is_refused(store: S) {
    let m = message("missing", at(0, 0));
    assert!(store.insert_message(&m).await.is_err());
    assert_eq!(store.get_message(m.id).await.unwrap(), None);
}

pub async fn insert_message_is_idempotent(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let m = message("w", at(1, 0));
    assert!(matches!(
        store.insert_message(&m).await.unwrap(),
        Inserted::New
    ));

    // Same id, different content: the first one wins and is returned.
    let mut again = bare_message("w", at(5, 0));
    again.id = m.id;
    match store.insert_message(&again).await.unwrap() {
        Inserted::Existing(existing) => assert_eq!(msg_us(*existing), msg_us(m.clone())),
        Inserted::New => panic!("a second insert with the same id must not be New"),
    }
    assert_eq!(
        store.get_message(m.id).await.unwrap().map(msg_us),
        Some(msg_us(m.clone()))
    );

    // The existing message is returned in its current state.
    store.mark_processing(m.id, at(2, 0)).await.unwrap();
    match store.insert_message(&again).await.unwrap() {
        Inserted::Existing(existing) => {
            assert_eq!(existing.status, MessageStatus::Processing);
            assert_eq!(existing.started_at, Some(at(2, 0)));
        }
        Inserted::New => panic!("expected Existing"),
    }
    assert_eq!(store.unfinished_messages().await.unwrap().len(), 1);
}

pub async fn message_id_of_another_workspace_returns_the_original(store: S) {
    for w in ["a", "b"] {
        store
            .create_workspace(&workspace(w, at(0, 0)), &[])
            .await
            .unwrap();
    }
    let m = message("a", at(1, 0));
    store.insert_message(&m).await.unwrap();
    let mut stolen = message("b", at(2, 0));
    stolen.id = m.id;
    // The store reports the existing message; the engine turns the mismatch into a conflict.
    match store.insert_message(&stolen).await.unwrap() {
        Inserted::Existing(existing) => assert_eq!(existing.workspace_id, wid("a")),
        Inserted::New => panic!("expected Existing"),
    }
    assert_eq!(
        store.unfinished_messages().await.unwrap(),
        vec![(wid("a"), m.id)]
    );
    // Deleting the other workspace leaves it alone.
    assert!(store.delete_workspace(&wid("b")).await.unwrap());
    assert!(store.get_message(m.id).await.unwrap().is_some());
}

pub async fn claiming_returns_unfinished_messages_marked_processing(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let pending = message("w", at(0, 0));
    let again = message("w", at(1, 0));
    let done = message("w", at(2, 0));
    for m in [&pending, &again, &done] {
        store.insert_message(m).await.unwrap();
    }
    assert!(store.mark_processing(again.id, at(5, 0)).await.unwrap());
    assert!(
        store
            .complete_message(done.id, &success(6, None))
            .await
            .unwrap()
    );

    let missing = Uuid::new_v4();
    let mut claimed = store
        .claim_messages(&[pending.id, again.id, done.id, missing], at(10, 0))
        .await
        .unwrap();
    claimed.sort_by_key(|m| m.created_at);
    // The final and the unknown ones are left out; the others come back in full, processing.
    assert_eq!(
        claimed.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![pending.id, again.id]
    );
    assert!(
        claimed
            .iter()
            .all(|m| m.status == MessageStatus::Processing)
    );
    assert_eq!(claimed[0].request, pending.request);
    // A first claim starts the clock; a repeated one keeps the first start.
    assert_eq!(claimed[0].started_at, Some(at(10, 0)));
    assert_eq!(claimed[1].started_at, Some(at(5, 0)));
    let stored = store.get_message(done.id).await.unwrap().unwrap();
    assert_eq!(stored.status, MessageStatus::Success);
    assert!(
        store
            .claim_messages(&[], at(11, 0))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn mark_processing_keeps_the_first_start(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let m = message("w", at(0, 0));
    store.insert_message(&m).await.unwrap();

    assert!(
        store
            .mark_processing(m.id, at(10, 111_111_000))
            .await
            .unwrap()
    );
    let got = store.get_message(m.id).await.unwrap().unwrap();
    assert_eq!(got.status, MessageStatus::Processing);
    assert_eq!(got.started_at, Some(at(10, 111_111_000)));

    // Taken again (e.g. after a restart): still processing, first start kept.
    assert!(store.mark_processing(m.id, at(20, 0)).await.unwrap());
    let got = store.get_message(m.id).await.unwrap().unwrap();
    assert_eq!(got.status, MessageStatus::Processing);
    assert_eq!(got.started_at, Some(at(10, 111_111_000)));

    // Final messages and missing ones are not touched.
    assert!(
        store
            .complete_message(m.id, &success(30, None))
            .await
            .unwrap()
    );
    assert!(!store.mark_processing(m.id, at(40, 0)).await.unwrap());
    let got = store.get_message(m.id).await.unwrap().unwrap();
    assert_eq!(got.status, MessageStatus::Success);
    assert_eq!(got.started_at, Some(at(10, 111_111_000)));
    assert!(
        !store
            .mark_processing(Uuid::new_v4(), at(40, 0))
            .await
            .unwrap()
    );
}

pub async fn completes_a_message_once(store: S) {
    let k = key("w", at(0, 0));
    store
        .create_workspace(&workspace("w", at(0, 0)), std::slice::from_ref(&k))
        .await
        .unwrap();
    let m = message("w", at(0, 0));
    store.insert_message(&m).await.unwrap();
    store.mark_processing(m.id, at(1, 0)).await.unwrap();

    let done = success(5, Some(k.id));
    assert!(store.complete_message(m.id, &done).await.unwrap());
    let got = store.get_message(m.id).await.unwrap().unwrap();
    let expected = ai_rate_limiter::domain::Message {
        status: MessageStatus::Success,
        result: done.result.clone(),
        error: None,
        attempts: 2,
        key_id: Some(k.id),
        started_at: Some(at(1, 0)),
        completed_at: Some(done.completed_at),
        ..m.clone()
    };
    assert_eq!(msg_us(got.clone()), msg_us(expected));

    // A second completion (a duplicate delivery) does not overwrite the first.
    let late = Completion {
        status: MessageStatus::Failed,
        result: None,
        error: Some("too late".into()),
        attempts: 9,
        key_id: None,
        completed_at: at(50, 0),
    };
    assert!(!store.complete_message(m.id, &late).await.unwrap());
    assert_eq!(store.get_message(m.id).await.unwrap().unwrap(), got);

    assert!(!store.complete_message(Uuid::new_v4(), &late).await.unwrap());
}

pub async fn completes_a_pending_message_as_failed(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let m = bare_message("w", at(0, 0));
    store.insert_message(&m).await.unwrap();
    // Straight from pending (e.g. it could not be queued).
    let failed = Completion {
        status: MessageStatus::Failed,
        result: None,
        error: Some("provider said: 400 Bad Request — \"model\" not found".into()),
        attempts: 0,
        key_id: None,
        completed_at: at(3, 0),
    };
    assert!(store.complete_message(m.id, &failed).await.unwrap());
    let got = store.get_message(m.id).await.unwrap().unwrap();
    assert_eq!(got.status, MessageStatus::Failed);
    assert_eq!(got.error, failed.error);
    assert_eq!(got.result, None);
    assert_eq!(got.attempts, 0);
    assert_eq!(got.key_id, None);
    assert_eq!(got.started_at, None);
    assert_eq!(got.completed_at, Some(at(3, 0)));
    assert!(store.unfinished_messages().await.unwrap().is_empty());
}

pub async fn json_results_round_trip(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let parsed = json!({
        "title": "Grüße 👋",
        "items": [1, -42, 0.1, 1.5e300, 18446744073709551615u64, true, null, "", {"nested": []}],
        "escapes": "\"quoted\"\n\t\\ </p>",
        "": {"empty key": {}},
        "zeta": 1, "alpha": 2
    });
    let result = MessageResult {
        text: parsed.to_string(),
        json: Some(parsed.clone()),
        model: "gpt-4o".into(),
        usage: Some(Usage {
            prompt_tokens: u64::from(u32::MAX) + 1,
            completion_tokens: 0,
            total_tokens: u64::from(u32::MAX) + 1,
        }),
    };
    let m = message("w", at(0, 0));
    store.insert_message(&m).await.unwrap();
    let done = Completion {
        status: MessageStatus::Success,
        result: Some(result.clone()),
        error: None,
        attempts: 1,
        key_id: Some(Uuid::new_v4()),
        completed_at: at(1, 0),
    };
    assert!(store.complete_message(m.id, &done).await.unwrap());
    let got = store.get_message(m.id).await.unwrap().unwrap();
    assert_eq!(got.result, Some(result.clone()));
    assert_eq!(got.result.unwrap().json, Some(parsed));

    // A text answer without usage, and a failed one that kept the raw text.
    let m2 = bare_message("w", at(2, 0));
    store.insert_message(&m2).await.unwrap();
    let text_only = MessageResult {
        text: "not { json".into(),
        json: None,
        model: "m".into(),
        usage: None,
    };
    let failed = Completion {
        status: MessageStatus::Failed,
        result: Some(text_only.clone()),
        error: Some("the answer is not valid JSON".into()),
        attempts: 1,
        key_id: None,
        completed_at: at(3, 0),
    };
    assert!(store.complete_message(m2.id, &failed).await.unwrap());
    let got = store.get_message(m2.id).await.unwrap().unwrap();
    assert_eq!(got.status, MessageStatus::Failed);
    assert_eq!(got.result, Some(text_only));
    assert_eq!(got.error, failed.error);
}

pub async fn timestamps_round_trip(store: S) {
    // Sub-microsecond digits are dropped by some backends: compare at microsecond precision.
    let created = at(0, 123_456_789);
    let w = workspace("w", created);
    let k = key("w", at(1, 1));
    store
        .create_workspace(&w, std::slice::from_ref(&k))
        .await
        .unwrap();
    let got_ws = store.get_workspace(&wid("w")).await.unwrap().unwrap();
    assert_eq!(ws_us(got_ws), ws_us(w));
    let got_key = key_us(store.get_key(k.id).await.unwrap().unwrap());
    assert_eq!(got_key.created_at, key_us(k.clone()).created_at);
    assert_eq!(got_key.updated_at, key_us(k).updated_at);

    let times = [
        at(0, 0),
        at(0, 1_000),
        at(-86_400 * 365 * 60, 999_999_000), // before 1970
        at(86_400 * 365 * 70, 500_000_000),  // 2094
    ];
    for (i, t) in times.into_iter().enumerate() {
        let m = bare_message("w", t);
        store.insert_message(&m).await.unwrap();
        let started = t + chrono::Duration::microseconds(i as i64 + 1);
        store.mark_processing(m.id, started).await.unwrap();
        let mut done = success(0, None);
        done.completed_at = started + chrono::Duration::milliseconds(1500);
        store.complete_message(m.id, &done).await.unwrap();
        let got = store.get_message(m.id).await.unwrap().unwrap();
        assert_eq!(got.created_at, t);
        assert_eq!(got.started_at, Some(started));
        assert_eq!(got.completed_at, Some(done.completed_at));
    }
}

pub async fn unfinished_messages_are_oldest_first_and_not_final(store: S) {
    for w in ["a", "b"] {
        store
            .create_workspace(&workspace(w, at(0, 0)), &[])
            .await
            .unwrap();
    }
    assert!(store.unfinished_messages().await.unwrap().is_empty());
    let pending_late = message("a", at(3, 0));
    let processing = message("a", at(1, 0));
    let done = message("a", at(0, 0));
    let failed = message("b", at(0, 500));
    let other_ws = message("b", at(0, 500_000_000));
    let earliest = bare_message("b", at(0, 1_000));
    for m in [
        &pending_late,
        &processing,
        &done,
        &failed,
        &other_ws,
        &earliest,
    ] {
        store.insert_message(m).await.unwrap();
    }
    store
        .mark_processing(processing.id, at(4, 0))
        .await
        .unwrap();
    store
        .complete_message(done.id, &success(5, None))
        .await
        .unwrap();
    let mut fail = success(5, None);
    fail.status = MessageStatus::Failed;
    fail.result = None;
    fail.error = Some("no".into());
    store.complete_message(failed.id, &fail).await.unwrap();

    assert_eq!(
        store.unfinished_messages().await.unwrap(),
        vec![
            (wid("b"), earliest.id),
            (wid("b"), other_ws.id),
            (wid("a"), processing.id),
            (wid("a"), pending_late.id),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Batches and listing of messages
// ---------------------------------------------------------------------------------------------

/// The message an insert reported as already stored, at microsecond precision.
fn existing(inserted: &Inserted) -> Message {
    match inserted {
        Inserted::Existing(m) => msg_us((**m).clone()),
        Inserted::New => panic!("expected Existing, got New"),
    }
}

/// The stored state of a message, at microsecond precision.
async fn stored(store: &S, id: Uuid) -> Message {
    msg_us(
        store
            .get_message(id)
            .await
            .unwrap()
            .expect("message is stored"),
    )
}

/// The stored states of messages, in order.
async fn stored_all(store: &S, msgs: &[Message]) -> Vec<Message> {
    let mut out = Vec::with_capacity(msgs.len());
    for m in msgs {
        out.push(stored(store, m.id).await);
    }
    out
}

/// One page of `ws`'s messages at microsecond precision, and the total.
async fn page(
    store: &S,
    ws: &str,
    status: Option<MessageStatus>,
    limit: u32,
    offset: u64,
) -> (Vec<Message>, u64) {
    let MessagePage { messages, total } = store
        .list_messages(&wid(ws), status, limit, offset)
        .await
        .unwrap();
    (messages.into_iter().map(msg_us).collect(), total)
}

pub async fn batch_insert_is_one_idempotent_transaction(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let first = message("w", at(1, 0));
    let orphan = message("missing", at(2, 0));
    let last = bare_message("w", at(3, 0));

    // One message of a missing workspace fails the whole batch: the others are not written.
    let batch = [first.clone(), orphan.clone(), last.clone()];
    assert!(store.insert_messages(&batch).await.is_err());
    for m in &batch {
        assert_eq!(store.get_message(m.id).await.unwrap(), None);
    }
    assert!(store.unfinished_messages().await.unwrap().is_empty());
    assert_eq!(page(&store, "w", None, 10, 0).await, (vec![], 0));
    // Also when it comes first.
    assert!(
        store
            .insert_messages(&[orphan, first.clone()])
            .await
            .is_err()
    );
    assert_eq!(store.get_message(first.id).await.unwrap(), None);

    // Without it, the batch is written in full, each message as given.
    let inserted = store
        .insert_messages(&[first.clone(), last.clone()])
        .await
        .unwrap();
    assert_eq!(inserted.len(), 2);
    assert!(inserted.iter().all(|i| matches!(i, Inserted::New)));
    for m in [&first, &last] {
        assert_eq!(stored(&store, m.id).await, msg_us(m.clone()));
    }

    // The batch published again (a retry, whatever it holds now) writes nothing and returns
    // what is stored.
    let mut retried = [bare_message("w", at(9, 0)), message("w", at(9, 0))];
    retried[0].id = first.id;
    retried[1].id = last.id;
    let again = store.insert_messages(&retried).await.unwrap();
    assert_eq!(
        again.iter().map(existing).collect::<Vec<_>>(),
        vec![msg_us(first.clone()), msg_us(last.clone())]
    );
    assert_eq!(
        store.unfinished_messages().await.unwrap(),
        vec![(wid("w"), first.id), (wid("w"), last.id)]
    );

    // An empty batch is no error.
    assert!(store.insert_messages(&[]).await.unwrap().is_empty());
}

pub async fn batch_insert_returns_existing_for_known_ids_in_order(store: S) {
    for w in ["a", "b"] {
        store
            .create_workspace(&workspace(w, at(0, 0)), &[])
            .await
            .unwrap();
    }
    let known = message("a", at(1, 0));
    let elsewhere = message("b", at(1, 500_000));
    store.insert_message(&known).await.unwrap();
    store.insert_message(&elsewhere).await.unwrap();
    store.mark_processing(known.id, at(2, 0)).await.unwrap();

    let new1 = message("a", at(3, 0));
    let new2 = bare_message("a", at(3, 500_000));
    let mut known_again = bare_message("a", at(4, 0));
    known_again.id = known.id;
    let mut stolen = bare_message("a", at(4, 0));
    stolen.id = elsewhere.id;
    // The same id twice in one batch: the first one wins.
    let mut repeated = message("a", at(5, 0));
    repeated.id = new1.id;
    repeated.request.prompt = "changed".into();

    let got = store
        .insert_messages(&[new1.clone(), known_again, new2.clone(), stolen, repeated])
        .await
        .unwrap();
    assert_eq!(got.len(), 5);
    assert!(matches!(got[0], Inserted::New));
    // A known message is returned in its current state.
    let known_now = Message {
        status: MessageStatus::Processing,
        started_at: Some(at(2, 0)),
        ..known.clone()
    };
    assert_eq!(existing(&got[1]), msg_us(known_now.clone()));
    assert!(matches!(got[2], Inserted::New));
    // One of another workspace as it is; the engine turns the mismatch into a conflict.
    assert_eq!(existing(&got[3]), msg_us(elsewhere.clone()));
    assert_eq!(existing(&got[4]), msg_us(new1.clone()));

    // Stored: the first version of every id, nothing else.
    for m in [&known_now, &elsewhere, &new1, &new2] {
        assert_eq!(stored(&store, m.id).await, msg_us(m.clone()));
    }
    assert_eq!(
        store.unfinished_messages().await.unwrap(),
        vec![
            (wid("a"), known.id),
            (wid("b"), elsewhere.id),
            (wid("a"), new1.id),
            (wid("a"), new2.id),
        ]
    );
}

pub async fn batch_completion_writes_each_once(store: S) {
    let k = key("w", at(0, 0));
    store
        .create_workspace(&workspace("w", at(0, 0)), std::slice::from_ref(&k))
        .await
        .unwrap();
    let pending = message("w", at(1, 0));
    let processing = message("w", at(2, 0));
    let finished = bare_message("w", at(3, 0));
    for m in [&pending, &processing, &finished] {
        store.insert_message(m).await.unwrap();
    }
    store
        .mark_processing(processing.id, at(4, 0))
        .await
        .unwrap();
    let first = success(5, Some(k.id));
    assert!(store.complete_message(finished.id, &first).await.unwrap());

    let ok = success(6, Some(k.id));
    let failed = Completion {
        status: MessageStatus::Failed,
        result: None,
        error: Some("rate limited for good".into()),
        attempts: 3,
        key_id: Some(k.id),
        completed_at: at(7, 0),
    };
    let late = Completion {
        status: MessageStatus::Failed,
        result: None,
        error: Some("too late".into()),
        attempts: 9,
        key_id: None,
        completed_at: at(50, 0),
    };
    let written = store
        .complete_messages(&[
            (pending.id, ok.clone()),
            (processing.id, failed.clone()),
            // Already final before the batch.
            (finished.id, late.clone()),
            (Uuid::new_v4(), late.clone()),
            // Completed earlier in the same batch.
            (pending.id, late.clone()),
        ])
        .await
        .unwrap();
    assert_eq!(written, vec![true, true, false, false, false]);

    let expected = [
        Message {
            status: MessageStatus::Success,
            result: ok.result.clone(),
            error: None,
            attempts: ok.attempts,
            key_id: Some(k.id),
            completed_at: Some(ok.completed_at),
            ..pending.clone()
        },
        Message {
            status: MessageStatus::Failed,
            result: None,
            error: failed.error.clone(),
            attempts: 3,
            key_id: Some(k.id),
            started_at: Some(at(4, 0)),
            completed_at: Some(at(7, 0)),
            ..processing.clone()
        },
        Message {
            status: MessageStatus::Success,
            result: first.result.clone(),
            error: None,
            attempts: first.attempts,
            key_id: Some(k.id),
            completed_at: Some(first.completed_at),
            ..finished.clone()
        },
    ];
    for m in &expected {
        assert_eq!(stored(&store, m.id).await, msg_us(m.clone()));
    }
    assert!(store.unfinished_messages().await.unwrap().is_empty());

    // The batch delivered again: nothing is overwritten.
    let again = store
        .complete_messages(&[(pending.id, late.clone()), (processing.id, late)])
        .await
        .unwrap();
    assert_eq!(again, vec![false, false]);
    for m in &expected {
        assert_eq!(stored(&store, m.id).await, msg_us(m.clone()));
    }
    assert!(store.complete_messages(&[]).await.unwrap().is_empty());
}

pub async fn messages_are_listed_in_document_order_and_paginated(store: S) {
    for w in ["doc", "other"] {
        store
            .create_workspace(&workspace(w, at(0, 0)), &[])
            .await
            .unwrap();
    }
    // By sequence index (negative first, absent last), then creation time (whatever the
    // sub-second digits), then id.
    let tie_a = message_at_index("doc", at(5, 0), Some(3));
    let tie_b = message_at_index("doc", at(5, 0), Some(3));
    let (tie_1, tie_2) = if tie_a.id < tie_b.id {
        (tie_a, tie_b)
    } else {
        (tie_b, tie_a)
    };
    let expected = vec![
        message_at_index("doc", at(9, 0), Some(-5)),
        message_at_index("doc", at(8, 0), Some(0)),
        message_at_index("doc", at(1, 0), Some(2)),
        message_at_index("doc", at(1, 123_456_000), Some(2)),
        message_at_index("doc", at(1, 500_000_000), Some(2)),
        tie_1,
        tie_2,
        message_at_index("doc", at(0, 0), Some(i64::MAX)),
        message_at_index("doc", at(-100, 0), None),
        message_at_index("doc", at(20, 0), None),
    ];
    let elsewhere = message_at_index("other", at(0, 0), Some(-100));
    // Stored in another order.
    for i in [3, 9, 0, 6, 2, 8, 5, 1, 7, 4] {
        store.insert_message(&expected[i]).await.unwrap();
    }
    store.insert_message(&elsewhere).await.unwrap();
    let expected: Vec<Message> = expected.into_iter().map(msg_us).collect();
    let n = expected.len() as u64;

    assert_eq!(
        page(&store, "doc", None, 100, 0).await,
        (expected.clone(), n)
    );

    // Pages of any size add up to the whole list; each counts all messages.
    for limit in [1u32, 3, 4, 10] {
        let mut all = Vec::new();
        let mut offset = 0;
        while offset < n {
            let (messages, total) = page(&store, "doc", None, limit, offset).await;
            assert_eq!(total, n);
            assert_eq!(
                messages.len() as u64,
                u64::from(limit).min(n - offset),
                "limit {limit} offset {offset}"
            );
            all.extend(messages);
            offset += u64::from(limit);
        }
        assert_eq!(all, expected, "pages of {limit}");
    }
    assert_eq!(
        page(&store, "doc", None, 3, 8).await,
        (expected[8..].to_vec(), n)
    );
    for past_the_end in [n, 1_000, u64::MAX] {
        assert_eq!(
            page(&store, "doc", None, 5, past_the_end).await,
            (vec![], n)
        );
    }

    // Only the workspace's own messages.
    assert_eq!(
        page(&store, "other", None, 100, 0).await,
        (vec![msg_us(elsewhere)], 1)
    );
    assert_eq!(page(&store, "nobody", None, 100, 0).await, (vec![], 0));
}

pub async fn listing_filters_by_status_and_counts_all(store: S) {
    use MessageStatus::{Failed, Pending, Processing, Success};
    for w in ["w", "other"] {
        store
            .create_workspace(&workspace(w, at(0, 0)), &[])
            .await
            .unwrap();
    }
    let batch = |from: i64, count: i64| -> Vec<Message> {
        (from..from + count)
            .map(|i| message_at_index("w", at(i, 0), Some(i)))
            .collect()
    };
    let pending = batch(0, 3);
    let processing = batch(10, 2);
    let succeeded = batch(20, 2);
    let failed = batch(30, 1);
    let other_pending = message_at_index("other", at(0, 0), Some(0));
    let other_done = message_at_index("other", at(1, 0), Some(1));
    for m in pending
        .iter()
        .chain(&processing)
        .chain(&succeeded)
        .chain(&failed)
        .chain([&other_pending, &other_done])
    {
        store.insert_message(m).await.unwrap();
    }
    for m in &processing {
        store.mark_processing(m.id, at(40, 0)).await.unwrap();
    }
    for m in succeeded.iter().chain([&other_done]) {
        store
            .complete_message(m.id, &success(41, None))
            .await
            .unwrap();
    }
    let mut fail = success(42, None);
    fail.status = MessageStatus::Failed;
    fail.result = None;
    fail.error = Some("no".into());
    store.complete_message(failed[0].id, &fail).await.unwrap();

    // The listed messages are the stored ones, whole.
    let pending = stored_all(&store, &pending).await;
    let processing = stored_all(&store, &processing).await;
    let succeeded = stored_all(&store, &succeeded).await;
    let failed = stored_all(&store, &failed).await;
    assert!(
        processing
            .iter()
            .all(|m| m.status == MessageStatus::Processing && m.started_at == Some(at(40, 0)))
    );
    assert!(succeeded.iter().all(|m| m.status == MessageStatus::Success));
    assert_eq!(failed[0].status, MessageStatus::Failed);

    assert_eq!(
        page(&store, "w", Some(Pending), 10, 0).await,
        (pending.clone(), 3)
    );
    assert_eq!(
        page(&store, "w", Some(Processing), 10, 0).await,
        (processing.clone(), 2)
    );
    assert_eq!(
        page(&store, "w", Some(Success), 10, 0).await,
        (succeeded.clone(), 2)
    );
    assert_eq!(
        page(&store, "w", Some(Failed), 10, 0).await,
        (failed.clone(), 1)
    );
    let everything: Vec<Message> = [&pending, &processing, &succeeded, &failed]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    assert_eq!(page(&store, "w", None, 10, 0).await, (everything, 8));

    // The total counts every match, not the page.
    assert_eq!(
        page(&store, "w", Some(Pending), 2, 0).await,
        (pending[..2].to_vec(), 3)
    );
    assert_eq!(
        page(&store, "w", Some(Pending), 2, 2).await,
        (pending[2..].to_vec(), 3)
    );
    assert_eq!(page(&store, "w", Some(Pending), 2, 3).await, (vec![], 3));
    assert_eq!(
        page(&store, "w", Some(Success), 1, 1).await,
        (succeeded[1..].to_vec(), 2)
    );
    assert_eq!(page(&store, "w", None, 3, 6).await.1, 8);

    // Per workspace.
    assert_eq!(
        page(&store, "other", Some(Success), 10, 0).await,
        (vec![stored(&store, other_done.id).await], 1)
    );
    assert_eq!(
        page(&store, "other", Some(Pending), 10, 0).await,
        (vec![msg_us(other_pending)], 1)
    );
    assert_eq!(
        page(&store, "other", Some(Failed), 10, 0).await,
        (vec![], 0)
    );
    assert_eq!(
        page(&store, "nobody", Some(Pending), 10, 0).await,
        (vec![], 0)
    );
}

// ---------------------------------------------------------------------------------------------
// Key grants
// ---------------------------------------------------------------------------------------------

/// The grants of `ws`'s keys since `since`, as read back.
async fn grants(store: &S, ws: &str, since: DateTime<Utc>) -> Vec<(Uuid, DateTime<Utc>)> {
    store.recent_grants(&wid(ws), since).await.unwrap()
}

pub async fn grants_are_recorded_and_read_back_per_workspace(store: S) {
    let k1 = key("a", at(0, 0));
    let k2 = key("a", at(0, 0));
    let k3 = key("b", at(0, 0));
    store
        .create_workspace(&workspace("a", at(0, 0)), &[k1.clone(), k2.clone()])
        .await
        .unwrap();
    store
        .create_workspace(&workspace("b", at(0, 0)), std::slice::from_ref(&k3))
        .await
        .unwrap();
    assert!(grants(&store, "a", at(-1_000, 0)).await.is_empty());
    store.record_grants(&[]).await.unwrap();

    let long_ago = at(-86_400 * 365 * 60, 999_999_999); // before 1970
    store
        .record_grants(&[
            (k1.id, at(3, 0)),
            (k3.id, at(2, 0)),
            (k2.id, at(1, 0)),
            (k1.id, at(1, 1_000)),
            (k3.id, long_ago),
        ])
        .await
        .unwrap();
    // Another batch; two requests at the same instant are two grants.
    store
        .record_grants(&[
            (k2.id, at(4, 0)),
            (k2.id, at(4, 0)),
            (k1.id, at(5, 123_456_789)),
        ])
        .await
        .unwrap();

    // Oldest first, at microsecond precision.
    assert_eq!(
        grants(&store, "a", at(-1_000, 0)).await,
        vec![
            (k2.id, at(1, 0)),
            (k1.id, at(1, 1_000)),
            (k1.id, at(3, 0)),
            (k2.id, at(4, 0)),
            (k2.id, at(4, 0)),
            (k1.id, at(5, 123_456_000)),
        ]
    );
    // Only those since `since`, which counts itself.
    assert_eq!(
        grants(&store, "a", at(3, 0)).await,
        vec![
            (k1.id, at(3, 0)),
            (k2.id, at(4, 0)),
            (k2.id, at(4, 0)),
            (k1.id, at(5, 123_456_000)),
        ]
    );
    assert_eq!(
        grants(&store, "a", at(3, 1_000)).await,
        vec![
            (k2.id, at(4, 0)),
            (k2.id, at(4, 0)),
            (k1.id, at(5, 123_456_000))
        ]
    );
    assert!(grants(&store, "a", at(6, 0)).await.is_empty());

    // Per workspace.
    assert_eq!(
        grants(&store, "b", at(-86_400 * 365 * 100, 0)).await,
        vec![(k3.id, us(long_ago)), (k3.id, at(2, 0))]
    );
    assert_eq!(grants(&store, "b", at(0, 0)).await, vec![(k3.id, at(2, 0))]);
    assert!(grants(&store, "nobody", at(-1_000, 0)).await.is_empty());

    // A batch naming an unknown key is refused as a whole.
    assert!(
        store
            .record_grants(&[(k1.id, at(7, 0)), (Uuid::new_v4(), at(7, 0))])
            .await
            .is_err()
    );
    assert!(grants(&store, "a", at(6, 0)).await.is_empty());
}

pub async fn old_grants_are_pruned_by_their_key_period(store: S) {
    let minute = key_per("w", 60, at(0, 0));
    let hour = key_per("w", 3_600, at(0, 0));
    let day = key_per("v", 86_400, at(0, 0));
    store
        .create_workspace(&workspace("w", at(0, 0)), &[minute.clone(), hour.clone()])
        .await
        .unwrap();
    store
        .create_workspace(&workspace("v", at(0, 0)), std::slice::from_ref(&day))
        .await
        .unwrap();
    assert_eq!(store.prune_grants(at(0, 0)).await.unwrap(), 0);

    let now = at(100_000, 0);
    let ago = |secs: i64, micros: i64| {
        now - chrono::Duration::seconds(secs) - chrono::Duration::microseconds(micros)
    };
    let future = now + chrono::Duration::seconds(1);
    store
        .record_grants(&[
            (minute.id, ago(61, 0)),  // gone
            (minute.id, ago(60, 1)),  // gone: a microsecond older than the period
            (minute.id, ago(60, 0)),  // kept: exactly the period ago
            (minute.id, ago(1, 0)),   // kept
            (hour.id, ago(3_601, 0)), // gone
            (hour.id, ago(61, 0)),    // kept: older than a minute, within the hour
            (day.id, ago(86_401, 0)), // gone
            (day.id, ago(3_601, 0)),  // kept
            (day.id, future),         // kept
        ])
        .await
        .unwrap();
    assert_eq!(store.prune_grants(now).await.unwrap(), 4);
    let since = at(-1_000_000, 0);
    assert_eq!(
        grants(&store, "w", since).await,
        vec![
            (hour.id, ago(61, 0)),
            (minute.id, ago(60, 0)),
            (minute.id, ago(1, 0)),
        ]
    );
    assert_eq!(
        grants(&store, "v", since).await,
        vec![(day.id, ago(3_601, 0)), (day.id, future)]
    );
    // Nothing more to prune at the same instant.
    assert_eq!(store.prune_grants(now).await.unwrap(), 0);

    // A minute later, the minute key's grants are out of its window; the others are not.
    let later = now + chrono::Duration::seconds(60);
    assert_eq!(store.prune_grants(later).await.unwrap(), 2);
    assert_eq!(
        grants(&store, "w", since).await,
        vec![(hour.id, ago(61, 0))]
    );

    // The period that counts is the key's current one.
    let mut shortened = hour.clone();
    shortened.rate_limit = RateLimit::new(10, RatePeriod::from_seconds(60).unwrap()).unwrap();
    shortened.updated_at = later;
    assert!(store.update_key(&shortened).await.unwrap());
    assert_eq!(store.prune_grants(later).await.unwrap(), 1);
    assert!(grants(&store, "w", since).await.is_empty());
    assert_eq!(grants(&store, "v", since).await.len(), 2);
}

pub async fn grants_go_with_their_key(store: S) {
    let gone = key("w", at(0, 0));
    let kept = key("w", at(0, 0));
    let other = key("v", at(0, 0));
    store
        .create_workspace(&workspace("w", at(0, 0)), &[gone.clone(), kept.clone()])
        .await
        .unwrap();
    store
        .create_workspace(&workspace("v", at(0, 0)), std::slice::from_ref(&other))
        .await
        .unwrap();
    store
        .record_grants(&[
            (gone.id, at(1, 0)),
            (kept.id, at(2, 0)),
            (gone.id, at(3, 0)),
            (other.id, at(4, 0)),
        ])
        .await
        .unwrap();

    assert!(store.delete_key(gone.id).await.unwrap());
    assert_eq!(
        grants(&store, "w", at(0, 0)).await,
        vec![(kept.id, at(2, 0))]
    );
    // A key added again under the same id starts with no grants.
    store.insert_key(&gone).await.unwrap();
    assert_eq!(
        grants(&store, "w", at(0, 0)).await,
        vec![(kept.id, at(2, 0))]
    );

    // Deleting a workspace deletes its keys' grants.
    assert!(store.delete_workspace(&wid("v")).await.unwrap());
    store
        .create_workspace(&workspace("v", at(5, 0)), std::slice::from_ref(&other))
        .await
        .unwrap();
    assert!(grants(&store, "v", at(0, 0)).await.is_empty());

    // Only the remaining key's grant is left to prune.
    assert_eq!(store.prune_grants(at(86_400, 0)).await.unwrap(), 1);
    assert!(grants(&store, "w", at(0, 0)).await.is_empty());

    // A deleted key takes no new grants.
    assert!(store.delete_key(other.id).await.unwrap());
    assert!(store.record_grants(&[(other.id, at(6, 0))]).await.is_err());
}
