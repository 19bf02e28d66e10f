-- Model prices (USD per 1M tokens) with their context tiers and service-tier rules,
-- and API key aliases. Column names follow the Go server's tables so an adopted
-- database copies over column for column.
--
-- A `*_configured` flag separates an explicit 0 from a missing rate. `pinned`
-- prices are never changed by a sync. Costs are never stored: every answer prices
-- token sums with these rows at read time.

CREATE TABLE model_prices (
    model TEXT PRIMARY KEY,
    prompt_per_1m REAL NOT NULL,
    completion_per_1m REAL NOT NULL,
    cache_per_1m REAL NOT NULL,
    cache_read_per_1m REAL NOT NULL DEFAULT 0,
    cache_creation_per_1m REAL NOT NULL DEFAULT 0,
    prompt_configured INTEGER NOT NULL DEFAULT 0,
    completion_configured INTEGER NOT NULL DEFAULT 0,
    cache_read_configured INTEGER NOT NULL DEFAULT 0,
    cache_creation_configured INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL DEFAULT '',
    source_model_id TEXT NOT NULL DEFAULT '',
    raw_json TEXT NOT NULL DEFAULT '',
    pinned INTEGER NOT NULL DEFAULT 0,
    updated_at_ms INTEGER NOT NULL,
    synced_at_ms INTEGER
);

CREATE TABLE model_price_context_tiers (
    model TEXT NOT NULL REFERENCES model_prices (model) ON DELETE CASCADE,
    threshold_tokens INTEGER NOT NULL,
    prompt_per_1m REAL NOT NULL DEFAULT 0,
    completion_per_1m REAL NOT NULL DEFAULT 0,
    cache_per_1m REAL NOT NULL DEFAULT 0,
    cache_read_per_1m REAL NOT NULL DEFAULT 0,
    cache_creation_per_1m REAL NOT NULL DEFAULT 0,
    prompt_configured INTEGER NOT NULL DEFAULT 0,
    completion_configured INTEGER NOT NULL DEFAULT 0,
    cache_configured INTEGER NOT NULL DEFAULT 0,
    cache_read_configured INTEGER NOT NULL DEFAULT 0,
    cache_creation_configured INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, threshold_tokens)
);

CREATE TABLE model_price_service_tiers (
    model TEXT NOT NULL REFERENCES model_prices (model) ON DELETE CASCADE,
    mode TEXT NOT NULL,
    service_tier TEXT NOT NULL,
    prompt_per_1m REAL NOT NULL DEFAULT 0,
    completion_per_1m REAL NOT NULL DEFAULT 0,
    cache_per_1m REAL NOT NULL DEFAULT 0,
    cache_read_per_1m REAL NOT NULL DEFAULT 0,
    cache_creation_per_1m REAL NOT NULL DEFAULT 0,
    prompt_configured INTEGER NOT NULL DEFAULT 0,
    completion_configured INTEGER NOT NULL DEFAULT 0,
    cache_configured INTEGER NOT NULL DEFAULT 0,
    cache_read_configured INTEGER NOT NULL DEFAULT 0,
    cache_creation_configured INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, mode, service_tier)
);

-- `api_key_hash` is the lowercase hex SHA-256 of the trimmed client API key; the raw
-- key is never stored. `alias_key` (trimmed, lowercased alias) makes aliases unique
-- case-insensitively.
CREATE TABLE api_key_aliases (
    api_key_hash TEXT PRIMARY KEY,
    alias TEXT NOT NULL,
    alias_key TEXT NOT NULL UNIQUE,
    updated_at_ms INTEGER NOT NULL
);
