//! Tables of the Go Manager Server's database, as its current release creates them,
//! for tests that adopt a Go database.

/// `model_prices`, its context and service tiers, and `api_key_aliases`.
pub const PRICE_AND_ALIAS_TABLES: [&str; 4] = [
    "CREATE TABLE model_prices (model text primary key, prompt_per_1m real not null, completion_per_1m real not null, \
     cache_per_1m real not null, cache_read_per_1m real not null default 0, cache_creation_per_1m real not null default 0, \
     prompt_configured integer not null default 0, completion_configured integer not null default 0, \
     cache_read_configured integer not null default 0, cache_creation_configured integer not null default 0, \
     source text, source_model_id text, raw_json text, updated_at_ms integer not null, synced_at_ms integer)",
    "CREATE TABLE model_price_context_tiers (model text not null, threshold_tokens integer not null, \
     prompt_per_1m real not null default 0, completion_per_1m real not null default 0, cache_per_1m real not null default 0, \
     cache_read_per_1m real not null default 0, cache_creation_per_1m real not null default 0, \
     prompt_configured integer not null default 0, completion_configured integer not null default 0, \
     cache_configured integer not null default 0, cache_read_configured integer not null default 0, \
     cache_creation_configured integer not null default 0, primary key (model, threshold_tokens))",
    "CREATE TABLE model_price_service_tiers (model text not null, mode text not null, service_tier text not null, \
     prompt_per_1m real not null default 0, completion_per_1m real not null default 0, cache_per_1m real not null default 0, \
     cache_read_per_1m real not null default 0, cache_creation_per_1m real not null default 0, \
     prompt_configured integer not null default 0, completion_configured integer not null default 0, \
     cache_configured integer not null default 0, cache_read_configured integer not null default 0, \
     cache_creation_configured integer not null default 0, primary key (model, mode, service_tier))",
    "CREATE TABLE api_key_aliases (api_key_hash text primary key, alias text not null, updated_at_ms integer not null)",
];

/// Prices with both kinds of tiers, one synced and one manual.
pub const PRICE_ROWS: [&str; 4] = [
    "INSERT INTO model_prices VALUES ('gpt-5.5', 5, 40, 0.5, 0.5, 0, 1, 1, 1, 0, 'models.dev', 'openai/gpt-5.5', '{}', 10, 11)",
    "INSERT INTO model_prices VALUES ('house', 1, 2, 0, 0, 0, 1, 1, 0, 0, 'manual', NULL, NULL, 12, NULL)",
    "INSERT INTO model_price_context_tiers (model, threshold_tokens, prompt_per_1m, prompt_configured) VALUES ('gpt-5.5', 272000, 10, 1)",
    "INSERT INTO model_price_service_tiers (model, mode, service_tier, prompt_per_1m, prompt_configured) VALUES ('gpt-5.5', 'fast', 'priority', 12.5, 1)",
];
