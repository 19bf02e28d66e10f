//! Prices and API key aliases on a real database file: round trips with tiers and
//! flags, whole-book replacement, sync upserts that leave pinned prices alone, the
//! price book analytics reads, alias upserts, duplicates and deletes, and no raw API
//! key anywhere in the files.

use std::collections::HashMap;

use cpamp_domain::analytics::Metrics;
use cpamp_domain::analytics::cost::{Band, context_band};
use cpamp_domain::analytics::query::AnalyticsStore;
use cpamp_domain::prices::aliases::{AliasError, AliasItem, AliasPut, hash_api_key};
use cpamp_domain::prices::{ContextTier, ModelPrice, PriceStore, Rate, Rates, ServiceTierRule};
use cpamp_storage::{Options, SqliteStore};

fn price(prompt: f64, completion: f64, source: &str) -> ModelPrice {
    ModelPrice {
        rates: Rates {
            prompt: Rate::set(prompt),
            completion: Rate::set(completion),
            ..Rates::default()
        },
        source: source.to_string(),
        updated_at_ms: 7,
        ..ModelPrice::default()
    }
}

#[tokio::test]
async fn prices_round_trip_and_sync_leaves_pinned_prices_alone() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("usage.sqlite");
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    assert!(store.prices().await.expect("empty").is_empty());

    let tiered = ModelPrice {
        rates: Rates {
            prompt: Rate::set(1.25),
            completion: Rate::set(10.0),
            cache: Rate {
                value: 0.125,
                flag: false,
            },
            cache_read: Rate::set(0.0),
            cache_creation: Rate::default(),
        },
        context_tiers: vec![ContextTier {
            threshold_tokens: 200_000,
            rates: Rates {
                prompt: Rate::set(2.5),
                cache: Rate::set(0.0),
                ..Rates::default()
            },
        }],
        service_tiers: vec![ServiceTierRule {
            mode: "fast".into(),
            service_tier: "priority".into(),
            rates: Rates {
                completion: Rate::set(20.0),
                ..Rates::default()
            },
        }],
        source: "models.dev".into(),
        source_model_id: "openai/gpt-5".into(),
        raw_json: "{\"cost\":{}}".into(),
        pinned: false,
        updated_at_ms: 5,
        synced_at_ms: Some(6),
    };
    let mut manual = price(3.0, 4.0, "manual");
    manual.pinned = true;
    store
        .replace_prices(vec![
            ("gpt-5".into(), tiered.clone()),
            ("my-alias".into(), manual.clone()),
        ])
        .await
        .expect("replace");
    let stored = store.prices().await.expect("prices");
    assert_eq!(
        stored["gpt-5"], tiered,
        "every rate, flag and tier survives"
    );
    assert_eq!(stored["my-alias"], manual);

    // The analytics price book sees the saved prices at once.
    let book = store.price_book().await.expect("book");
    let sums = Metrics {
        calls: 1,
        input: 1_000_000,
        ..Metrics::default()
    };
    let band = Band {
        model: "my-alias",
        billing_model: "my-alias",
        service_tier: "",
        context_band: context_band(sums.input),
    };
    assert_eq!(book.band_cost(band, &sums), Some(3.0));

    // A sync upsert replaces an unpinned price (tiers included) and adds new ones,
    // but never touches a pinned price.
    let (updated, added, attempt) = (
        price(1.5, 12.0, "litellm"),
        price(0.5, 1.0, "litellm"),
        price(9.0, 9.0, "litellm"),
    );
    let kept = store
        .upsert_prices(vec![
            ("gpt-5".into(), updated.clone()),
            ("gpt-5-mini".into(), added.clone()),
            ("my-alias".into(), attempt),
        ])
        .await
        .expect("upsert");
    assert_eq!(kept, vec!["my-alias".to_string()]);
    let stored = store.prices().await.expect("prices");
    assert_eq!(stored["gpt-5"], updated);
    assert!(stored["gpt-5"].context_tiers.is_empty());
    assert_eq!(stored["gpt-5-mini"], added);
    assert_eq!(stored["my-alias"], manual);
    let book = store.price_book().await.expect("book");
    assert_eq!(book.band_cost(band, &sums), Some(3.0));
    let gpt5 = Band {
        model: "gpt-5",
        billing_model: "gpt-5",
        ..band
    };
    assert_eq!(book.band_cost(gpt5, &sums), Some(1.5));

    // Replacing with nothing empties the table, tiers included.
    store.replace_prices(Vec::new()).await.expect("clear");
    assert!(store.prices().await.expect("prices").is_empty());
    assert_eq!(
        store
            .price_book()
            .await
            .expect("book")
            .band_cost(gpt5, &sums),
        None
    );
    store.close().await;
}

#[tokio::test]
async fn aliases_upsert_refuse_duplicates_delete_and_never_store_raw_keys() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("usage.sqlite");
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    let raw_keys = [
        "sk-live-ci-0123456789abcdef",
        "sk-live-deploy-fedcba9876543210",
    ];
    let hashes: Vec<String> = raw_keys.iter().map(|key| hash_api_key(key)).collect();
    let put = |items: Vec<(&str, &str)>| AliasPut {
        items: items
            .into_iter()
            .map(|(hash, alias)| AliasItem {
                api_key_hash: hash.to_string(),
                alias: alias.to_string(),
                updated_at_ms: None,
            })
            .collect(),
        ..AliasPut::default()
    };

    store
        .put_api_key_aliases(
            put(vec![(&hashes[0], "CI bot"), (&hashes[1], "deploy")]),
            100,
        )
        .await
        .expect("store")
        .expect("saved");
    let listed = store.api_key_aliases().await.expect("list");
    let listed: HashMap<_, _> = listed
        .iter()
        .map(|alias| {
            (
                alias.api_key_hash.clone(),
                (alias.alias.clone(), alias.updated_at_ms),
            )
        })
        .collect();
    assert_eq!(listed[&hashes[0]], ("CI bot".to_string(), 100));

    // Upsert renames in place.
    store
        .put_api_key_aliases(put(vec![(&hashes[0].to_uppercase(), "CI runner")]), 200)
        .await
        .expect("store")
        .expect("renamed");
    // A case-insensitive duplicate is refused and nothing changes.
    let refused = store
        .put_api_key_aliases(put(vec![(&hashes[1], "ci RUNNER")]), 300)
        .await
        .expect("store");
    assert_eq!(refused, Err(AliasError::Duplicate("ci RUNNER".into())));
    let listed = store.api_key_aliases().await.expect("list");
    assert_eq!(
        listed
            .iter()
            .map(|alias| alias.alias.as_str())
            .collect::<Vec<_>>(),
        vec!["CI runner", "deploy"]
    );

    store
        .delete_api_key_alias(&hashes[1])
        .await
        .expect("delete");
    store
        .delete_api_key_alias(&hashes[1])
        .await
        .expect("delete again");
    assert_eq!(store.api_key_aliases().await.expect("list").len(), 1);
    store.close().await;

    for entry in std::fs::read_dir(directory.path()).expect("dir") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        for raw in raw_keys {
            assert!(
                !bytes
                    .windows(raw.len())
                    .any(|window| window == raw.as_bytes()),
                "raw key found in a database file"
            );
        }
    }
}
