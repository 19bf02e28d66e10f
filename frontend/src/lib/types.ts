// Wire shapes of the Manager API, as the server sends them (snake_case for analytics,
// camelCase for service and settings endpoints). Optional fields may be absent or null.

export interface ServiceInfo {
  service: string;
  mode?: string;
  startedAt?: number;
  configured?: boolean;
  adminReady?: boolean;
  projectInitialized?: boolean;
  setupRequired?: boolean;
  migrationStatus?: string;
  dataKeyReady?: boolean;
  hasHistoricalData?: boolean;
  connectionSource?: string;
  setupReason?: string;
  version?: string;
}

export interface SetupRequest {
  cpaBaseUrl: string;
  cpaManagementKey: string;
  requestMonitoringEnabled: boolean;
  ensureUsageStatisticsEnabled: boolean;
  collectorMode?: string;
  pollIntervalMs?: number;
}

export interface ManagerConfig {
  cpaConnection: {
    cpaBaseUrl: string;
    managementKey?: string;
    managementKeySet?: boolean;
    managementKeyNeedsReentry?: boolean;
  };
  collector: {
    enabled?: boolean;
    collectorMode?: string;
    queue?: string;
    popSide?: string;
    batchSize?: number;
    pollIntervalMs?: number;
    queryLimit?: number;
    tlsSkipVerify?: boolean;
  };
  updatedAtMs?: number;
}

export interface ManagerConfigResponse {
  config: ManagerConfig;
  source: string;
  cpaUsage?: {
    usageStatisticsEnabled: boolean;
    redisUsageQueueRetentionSeconds: number;
    retentionSourceDefault: boolean;
  };
}

export interface CollectorStatus {
  collector: string;
  upstream: string;
  mode: string;
  transport: string;
  queue: string;
  lastConsumedAt: number;
  lastInsertedAt: number;
  totalInserted: number;
  totalSkipped: number;
  totalConsumed?: number;
  deadLetters: number;
  pendingItems?: number;
  warnings?: string[];
  note?: string;
  lastError?: string;
}

export interface Gap {
  id: number;
  startMs: number;
  endMs: number | null;
  open: boolean;
  durationMs: number;
  cause: string;
  detail?: string;
}

export interface Finding {
  code: string;
  severity: 'error' | 'warning' | 'info' | string;
  observed: string;
  fix: string;
  hints?: string[];
}

export interface Diagnosis {
  ok: boolean;
  checkedAtMs?: number;
  cpa?: { url?: string; version?: string; reachable?: boolean; [key: string]: unknown };
  findings: Finding[];
}

export interface DatabaseReport {
  databaseBytes: number;
  walBytes: number;
  shmBytes: number;
  totalBytes: number;
  journalSizeLimitBytes: number;
  checkpoint: {
    mode: string;
    busy: number;
    logFrames: number;
    checkpointedFrames: number;
    executedAtMs: number;
    durationMs: number;
    error?: string;
  };
}

export interface StatusResponse {
  service: string;
  dbPath: string;
  events: number;
  deadLetters: number;
  collector: CollectorStatus;
  databaseMaintenance?: { required: boolean; reasons: string[]; command?: string };
  database?: DatabaseReport;
  gaps?: { open: boolean; recent: Gap[] };
  diagnosis?: Diagnosis;
}

export interface MaintenanceStatus {
  databaseMaintenance: { required: boolean; performanceDegraded?: boolean; reasons: string[]; command?: string };
}

// ---- shared parts of the analytics shapes ----

/** Token sums every aggregate carries (input is the normalised total, cached the legacy bucket). */
export interface TokenSums {
  input_tokens: number;
  output_tokens: number;
  cached_tokens: number;
  cache_read_tokens: number;
  cache_creation_tokens: number;
}

/** Call counts of an aggregate by outcome. */
export interface CallCounts {
  total_calls: number;
  success_calls: number;
  failure_calls: number;
  success_rate: number;
}

// ---- dashboard ----

export interface RecentFailure {
  timestamp_ms: number;
  model: string;
  api_key_hash: string;
  source?: string;
  source_hash: string;
  auth_index: string;
  account_snapshot?: string;
  auth_label_snapshot?: string;
  auth_provider_snapshot?: string;
  endpoint: string;
  duration_ms: number | null;
  fail_status_code?: number | null;
  fail_summary?: string;
  header_error_kind?: string;
  header_error_code?: string;
  header_trace_id?: string;
}

export interface DashboardSummary {
  generated_at_ms: number;
  window: { today_start_ms: number; now_ms: number; rolling_30m_start_ms: number };
  today: CallCounts &
    TokenSums & {
    reasoning_tokens: number;
    total_tokens: number;
    total_cost: number | null;
    average_latency_ms: number | null;
    zero_token_calls: number;
  };
  rolling_30m: { rpm: number; tpm: number; total_calls: number; total_tokens: number };
  top_models_today: { model: string; calls: number; tokens: number; cost: number | null; success_rate: number }[];
  model_cost_rank?: {
    model: string;
    calls: number;
    tokens: number;
    cost: number | null;
    success_rate: number;
    cost_share: number;
  }[];
  traffic_timeline?: {
    bucket_ms: number;
    calls: number;
    tokens: number;
    success: number;
    failure: number;
    failure_rate: number;
  }[];
  today_request_health_timeline?: {
    from_ms: number;
    to_ms: number;
    bucket_ms: number;
    success_calls: number;
    failure_calls: number;
    total_calls: number;
    success_rate: number;
    points: {
      bucket_ms: number;
      calls: number;
      success: number;
      failure: number;
      tone: 'good' | 'warn' | 'bad' | 'empty' | 'future';
      future: boolean;
    }[];
  };
  token_mix?: { key: 'input' | 'cached' | 'output' | 'reasoning'; tokens: number; share: number }[];
  channel_health?: {
    auth_index: string;
    source?: string;
    account_snapshot?: string;
    auth_label_snapshot?: string;
    auth_provider_snapshot?: string;
    calls: number;
    failures: number;
    failure_rate: number;
    success_rate: number;
    tokens: number;
    cost: number | null;
    average_latency_ms: number | null;
    tone: 'good' | 'warn' | 'bad';
  }[];
  failure_sources?: unknown[];
  recent_failures: RecentFailure[];
  /** Billing models without a price: why a cost in the answer is null. */
  unpriced_models?: string[];
}

// ---- monitoring analytics ----

export interface Filters {
  models?: string[];
  providers?: string[];
  accounts?: string[];
  credential_ids?: string[];
  auth_files?: string[];
  auth_indices?: string[];
  api_key_hashes?: string[];
  source_hashes?: string[];
  include_failed?: boolean;
  failed_only?: boolean;
  min_latency_ms?: number;
  cache_status?: string;
}

export interface Include {
  granularity?: 'hour' | 'day';
  summary?: boolean;
  summary_profile?: 'compact' | 'full';
  summary_percentiles?: boolean;
  summary_comparison?: boolean;
  timeline?: boolean;
  anomaly_points?: boolean;
  hourly_distribution?: boolean;
  heatmap?: boolean;
  model_share?: boolean;
  model_stats?: boolean;
  channel_share?: boolean;
  failure_sources?: boolean;
  account_stats?: boolean;
  credential_stats?: boolean;
  credential_timeline?: boolean;
  api_key_timeline?: boolean;
  api_key_stats?: boolean;
  filter_options?: boolean;
  filter_selectors?: boolean;
  recent_failures?: number;
  events_page?: { limit: number; before_ms: number | null; before_id: number | null };
  drilldown_preview?: { from_ms: number; to_ms: number; limit: number };
}

export interface AnalyticsRequest {
  from_ms: number;
  to_ms: number;
  now_ms?: number;
  time_zone?: string;
  search_query?: string;
  filters?: Filters;
  include: Include;
}

export interface Summary extends CallCounts, TokenSums {
  cache_hit_rate: number;
  reasoning_tokens: number;
  total_tokens: number;
  total_cost: number | null;
  average_cost_per_call?: number | null;
  average_latency_ms: number | null;
  p95_latency_ms: number | null;
  p95_ttft_ms: number | null;
  zero_token_calls: number;
}

export interface SummaryComparison {
  from_ms: number;
  to_ms: number;
  total_calls: number;
  success_calls: number;
  failure_calls: number;
  success_rate: number;
  total_tokens: number;
  total_cost: number | null;
}

export interface TimelinePoint extends TokenSums {
  bucket_ms: number;
  label: string;
  calls: number;
  tokens: number;
  success: number;
  failure: number;
  cache_hit_rate: number;
  reasoning_tokens: number;
  total_tokens: number;
  cost: number | null;
  average_latency_ms: number | null;
  p95_latency_ms: number | null;
  p95_ttft_ms: number | null;
  success_rate: number;
  failure_rate: number;
}

export interface AnomalyPoint {
  bucket_ms: number;
  bucket_end_ms: number;
  label: string;
  severity: 'high' | 'medium' | 'low';
  metric_keys: string[];
  calls: number;
  total_tokens: number;
  cost: number | null;
  failure_rate: number;
}

export interface ModelStat extends TokenSums {
  model: string;
  calls: number;
  success_calls: number;
  failure_calls: number;
  success_rate: number;
  cache_hit_rate: number;
  total_tokens: number;
  cost: number | null;
  last_seen_ms?: number;
}

export interface IdentityFields {
  account_snapshot?: string;
  auth_label_snapshot?: string;
  auth_provider_snapshot?: string;
  auth_file_snapshot?: string;
  auth_project_id_snapshot?: string;
  auth_index?: string;
  source?: string;
  source_hash?: string;
}

export interface GroupStat extends IdentityFields, TokenSums {
  id: string;
  api_key_hash?: string;
  auth_indices?: string[];
  sources?: string[];
  source_hashes?: string[];
  calls: number;
  success_calls: number;
  failure_calls: number;
  success_rate: number;
  total_tokens: number;
  cost: number | null;
  average_latency_ms: number | null;
  last_seen_ms: number;
  models?: ModelStat[];
  contexts?: KeyContext[];
}

export interface KeyContext extends IdentityFields {
  id: string;
  calls: number;
  success_calls: number;
  failure_calls: number;
  success_rate: number;
  failure_rate: number;
  total_tokens: number;
  cost: number | null;
  average_latency_ms: number | null;
  last_seen_ms: number;
}

export interface ChannelShare extends IdentityFields {
  auth_index: string;
  calls: number;
  success: number;
  failure: number;
  tokens: number;
  cost: number | null;
  average_latency_ms: number | null;
}

export interface KeyTimelinePoint {
  api_key_hash?: string;
  id?: string;
  label?: string;
  bucket_ms: number;
  bucket_label: string;
  calls: number;
  tokens: number;
  success: number;
  failure: number;
  cost: number | null;
  average_latency_ms: number | null;
  success_rate: number;
  failure_rate: number;
}

export interface HeatmapCell {
  weekday: number;
  hour: number;
  calls: number;
  success: number;
  failure: number;
  tokens: number;
  cost: number | null;
  failure_rate: number;
  model_contributors?: Contributor[];
  api_key_contributors?: Contributor[];
  provider_contributors?: Contributor[];
}

export interface Contributor {
  key: string;
  label?: string;
  calls: number;
  tokens: number;
  cost: number | null;
  failure_rate: number;
  share: number;
}

export interface UsageEvent extends IdentityFields {
  request_id?: string;
  event_hash: string;
  timestamp_ms: number;
  model: string;
  analytics_model?: string;
  requested_model?: string;
  resolved_model?: string;
  endpoint: string;
  method: string;
  path: string;
  client_ip?: string;
  x_forwarded_for?: string;
  user_agent?: string;
  api_key_hash: string;
  reasoning_effort?: string;
  service_tier?: string;
  executor_type?: string;
  input_tokens: number;
  output_tokens: number;
  cached_tokens: number;
  cache_read_tokens: number;
  cache_creation_tokens: number;
  reasoning_tokens: number;
  total_tokens: number;
  latency_ms: number | null;
  ttft_ms: number | null;
  failed: boolean;
  fail_status_code?: number | null;
  fail_summary?: string;
  response_metadata?: Record<string, unknown>;
  header_quota_recover_at_ms?: number | null;
  header_quota_used_percent?: number | null;
  header_quota_plan_type?: string;
  header_error_kind?: string;
  header_error_code?: string;
  header_trace_id?: string;
}

export interface EventsPage {
  items: UsageEvent[];
  next_before_ms: number;
  next_before_id: number;
  has_more: boolean;
  total_count: number;
}

export interface FilterSelectors {
  models?: string[];
  api_key_hashes?: string[];
  providers?: string[];
  auth_files?: string[];
  accounts?: string[];
  account_stats?: GroupStat[];
  model_stats?: ModelStat[];
  api_key_stats?: GroupStat[];
  channel_share?: ChannelShare[];
}

export interface AnalyticsResponse {
  generated_at_ms: number;
  /** Billing models without a price: why a cost in the answer is null. */
  unpriced_models?: string[];
  granularity: 'hour' | 'day';
  summary?: Summary;
  summary_comparison?: SummaryComparison;
  timeline?: TimelinePoint[];
  hourly_distribution?: { hour: number; calls: number; tokens: number }[];
  heatmap?: HeatmapCell[];
  anomaly_points?: AnomalyPoint[];
  model_share?: { model: string; calls: number; tokens: number; cost: number | null }[];
  model_stats?: ModelStat[];
  channel_share?: ChannelShare[];
  account_stats?: GroupStat[];
  credential_stats?: GroupStat[];
  credential_timeline?: KeyTimelinePoint[];
  api_key_timeline?: KeyTimelinePoint[];
  api_key_stats?: GroupStat[];
  filter_options?: FilterSelectors;
  recent_failures?: RecentFailure[];
  events?: EventsPage;
  drilldown_preview?: EventsPage;
}

// ---- prices and aliases ----

export interface RateSet {
  prompt: number;
  completion: number;
  cache: number;
  cacheRead?: number;
  cacheCreation?: number;
  promptConfigured?: boolean;
  completionConfigured?: boolean;
  cacheReadConfigured?: boolean;
  cacheCreationConfigured?: boolean;
}

export interface ModelPrice extends RateSet {
  source?: string;
  sourceModelId?: string;
  rawJson?: unknown;
  contextTiers?: (RateSet & { thresholdTokens: number })[];
  serviceTiers?: (RateSet & { mode: string; serviceTier: string })[];
  updatedAtMs?: number;
  syncedAtMs?: number;
  pinned?: boolean;
}

export type PriceBook = Record<string, ModelPrice>;

export interface PriceUsageSummary {
  sampled_events: number;
  total_events: number;
  truncated: boolean;
  models: { model: string; calls: number; requested_calls?: number; resolved_calls?: number }[];
}

export interface SyncResult {
  source: string;
  sources: string[];
  imported: number;
  skipped: number;
  matched?: PriceBook;
  candidates?: { model: string; candidates: { sourceModelId: string; score: number; reason: string; price: ModelPrice }[] }[];
  unmatched?: string[];
  preserved?: string[];
  /** Pinned prices a match would have replaced (left alone). */
  pinned?: string[];
  proxyUsed?: boolean;
  sourceResults?: { source: string; models: number; skipped: number; error?: string }[];
  prices: PriceBook;
}

export interface ApiKeyAlias {
  apiKeyHash: string;
  alias: string;
  updatedAtMs: number;
}

// ---- import ----

export interface ImportResult {
  format: string;
  added: number;
  skipped: number;
  total: number;
  failed: number;
  unsupported: number;
  warnings: string[] | null;
  /** The first unreadable records with their place in the file. */
  errors?: { line?: number; element?: number; endpoint?: string; model?: string; detail?: number; error: string }[];
}

export interface BackupManifest {
  format: string;
  version: number;
  name: string;
  created_at_ms: number;
  cpamp_version?: string;
  schema_version?: number;
  events: number;
  data_key: 'included' | 'external' | 'none';
  files: { name: string; bytes: number; sha256: string }[];
  path?: string;
}

/** The cost of one request, step by step (`model-prices/explain`). */
export interface CostExplanation {
  event_hash: string;
  timestamp_ms: number;
  model: string;
  requested_model: string;
  resolved_model: string;
  analytics_model: string;
  billing_model: string;
  service_tier: string;
  cache_input_mode: string;
  tokens: { input: number; output: number; reasoning: number; cached: number; cache_read: number; cache_creation: number; prompt: number };
  context_band: { floor_tokens: number; ceiling_tokens: number | null };
  cost: number | null;
  priced: boolean;
  unpriced_reason?: string;
  price?: {
    key: string;
    matched_by: string;
    behaviour_model: string;
    rule: string;
    context_threshold_tokens?: number;
    service_tier_rule?: { mode: string; serviceTier: string };
    tier_multiplier: number;
    approximate: boolean;
    rates: { prompt: number; completion: number; cache: number; cache_read: number; cache_creation: number };
    lines: { class: string; tokens: number; rate: number; multiplier: number; cost: number }[];
  };
  reasoning: string;
}

export interface ImportSession {
  id: string;
  filename: string;
  status: 'uploading' | 'ready' | 'processing' | 'completed' | 'failed' | 'cancelled';
  size_bytes: number;
  received_bytes: number;
  chunk_size_bytes: number;
  created_at_ms: number;
  updated_at_ms: number;
  expires_at_ms: number;
  retryable: boolean;
  error?: string;
  result?: ImportResult;
}
