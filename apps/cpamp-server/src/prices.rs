//! `cpamp-server prices import FILE`: load model prices offline, without internet.
//!
//! FILE is either a price book (`{"prices": {...}}`, as `GET /v0/management/model-prices`
//! answers; its entries replace the stored ones of the same models, everything else
//! stays) or a download of a sync source (models.dev `catalog.json`, LiteLLM's
//! `model_prices_and_context_window.json`, OpenRouter's `/api/v1/models`), which is
//! matched exactly as an online sync would: unique strong matches only, pinned prices
//! kept. The format is detected from the content unless `--format` says it. Takes the
//! process lock, so the server must be stopped.

use std::path::PathBuf;

use anyhow::{Context, bail};
use cpamp_domain::prices::matching::Catalog;
use cpamp_domain::prices::sources::parse;
use cpamp_domain::prices::sync::{SourceOutcome, plan};
use cpamp_domain::prices::{PriceStore, source};
use cpamp_storage::{Options, SqliteStore};

use crate::{config, lock, startup};

/// What FILE holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `{"prices": {model: price}}`.
    Book,
    #[value(name = "models.dev")]
    ModelsDev,
    Litellm,
    Openrouter,
}

impl Format {
    fn source(self) -> Option<&'static str> {
        match self {
            Format::Book => None,
            Format::ModelsDev => Some(source::MODELS_DEV),
            Format::Litellm => Some(source::LITELLM),
            Format::Openrouter => Some(source::OPENROUTER),
        }
    }

    /// Guesses the format from the document's shape.
    fn detect(root: &serde_json::Value) -> anyhow::Result<Format> {
        let Some(object) = root.as_object() else {
            bail!("the file is not a JSON object; pass --format to say what it holds");
        };
        if object
            .get("prices")
            .is_some_and(serde_json::Value::is_object)
        {
            return Ok(Format::Book);
        }
        if object.get("data").is_some_and(serde_json::Value::is_array) {
            return Ok(Format::Openrouter);
        }
        if object.contains_key("providers")
            || object.values().any(|value| {
                value
                    .get("models")
                    .is_some_and(serde_json::Value::is_object)
            })
        {
            return Ok(Format::ModelsDev);
        }
        if object.values().any(|value| {
            value.get("input_cost_per_token").is_some()
                || value.get("output_cost_per_token").is_some()
        }) {
            return Ok(Format::Litellm);
        }
        bail!(
            "cannot tell the price format of this file; pass --format book|models.dev|litellm|openrouter"
        )
    }
}

/// Imports `file` into the database at `db_path` (default: from the configuration).
pub fn import(
    file: PathBuf,
    format: Option<Format>,
    db_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    let body = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
    let root: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("{} is not valid JSON", file.display()))?;
    let format = match format {
        Some(format) => format,
        None => Format::detect(&root)?,
    };
    let db_path = match db_path {
        Some(path) => path,
        None => config::load(&config::Sources::from_process(false))?.db_path,
    };
    let lock = lock::acquire(&db_path)
        .context("acquire the database lock; stop Manager Server and retry")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start runtime")?;
    let now = startup::now_ms();
    let summary = runtime.block_on(async {
        let store = SqliteStore::open(Options::new(&lock.db_path))
            .await
            .context("open sqlite")?;
        let result = match format.source() {
            None => import_book(&store, &body, now).await,
            Some(name) => import_source(&store, name, &body, now).await,
        };
        store.close().await;
        result
    })?;
    drop(lock);
    println!("{summary}");
    Ok(())
}

async fn import_book(store: &SqliteStore, body: &[u8], now: i64) -> anyhow::Result<String> {
    let book = cpamp_api::routes::prices::parse_book(body, now)
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let count = book.len();
    let mut prices = store
        .prices()
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    for (model, price) in book {
        prices.insert(model, price);
    }
    store
        .replace_prices(prices.into_iter().collect())
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok(format!("Imported {count} prices from the price book."))
}

async fn import_source(
    store: &SqliteStore,
    name: &str,
    body: &[u8],
    now: i64,
) -> anyhow::Result<String> {
    let parsed = parse(name, body, now).map_err(|error| anyhow::anyhow!("{error}"))?;
    let outcome = SourceOutcome {
        source: name.to_string(),
        models: parsed.entries.len(),
        skipped: parsed.skipped,
        error: None,
    };
    let skipped = parsed.skipped;
    let catalog = Catalog::new(parsed.entries, parsed.canonical);
    let stored = store
        .prices()
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let plan = plan(&catalog, &[], &[outcome], &stored, now);
    let upserted = plan.upsert.len();
    let kept = store
        .upsert_prices(plan.upsert)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let mut pinned = plan.pinned;
    pinned.extend(kept.iter().cloned());
    let mut summary = format!(
        "Imported {} prices from a {name} file ({} entries without a usable price or match were skipped).",
        upserted - kept.len(),
        skipped + plan.invalid
    );
    if !pinned.is_empty() {
        summary.push_str(&format!(
            "\nKept {} pinned prices unchanged: {}",
            pinned.len(),
            pinned.join(", ")
        ));
    }
    Ok(summary)
}
