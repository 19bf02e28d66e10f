//! Startup and wiring: the one place that picks concrete types.
//!
//! [`Application::build`] takes the process lock, loads or creates the data key, opens
//! SQLite, bootstraps the admin credential, binds the HTTP listener (so port 0 works and
//! readiness needs no sleep), builds the actix server and starts the collector for the
//! connection in effect. [`Application::run_until_stopped`] serves until the shutdown
//! future resolves, then stops the collector (committing what it holds) and the server.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use cpamp_api::AppState;
use cpamp_api::auth::{AuthBackend, CredentialBootstrap, LoginLimiter, ensure_admin_credential};
use cpamp_api::automation::Automation;
use cpamp_api::automation::ingest::IngestSink;
use cpamp_api::gaps::{GapTracker, GapView};
use cpamp_api::middleware::{CorsOrigins, cors, count_requests, security_headers};
use cpamp_api::monitor::{HostFacts, Monitor};
use cpamp_api::routes::PanelPath;
use cpamp_api::state::{DataKeyOrigin, EnvConnection, StartupConfig};
use cpamp_api::transfer::Transfer;
use cpamp_api::transfer::backup::DataKeySource;
use cpamp_api::transfer::sessions::{ImportSessions, SessionConfig};
use cpamp_collector::{Collector, Inbox, Mode, PopSide, StatusHandle};
use cpamp_storage::{Options, SqliteStore};

use crate::config::Settings;
use crate::lock::{self, ProcessLock};

/// A built, bound, not yet running server.
pub struct Application {
    local_addr: SocketAddr,
    server: actix_web::dev::Server,
    store: SqliteStore,
    collector: Collector<IngestSink<SqliteStore>>,
    lock: ProcessLock,
    gap_tracker: GapTracker,
    maintenance: tokio::task::JoinHandle<()>,
    session_cleanup: tokio::task::JoinHandle<()>,
    priorities: tokio::task::JoinHandle<()>,
    analytics: AnalyticsRuntime,
}

/// The runtime analytics computations run on. Dropped without waiting for its tasks
/// (dropping a runtime inside another one would panic).
struct AnalyticsRuntime(Option<tokio::runtime::Runtime>);

impl Drop for AnalyticsRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let lock =
            lock::acquire(&settings.db_path).context("acquire manager database process lock")?;
        let data_key = crate::data_key::load(&settings, now_ms())?;
        let store = SqliteStore::open(Options::new(&lock.db_path))
            .await
            .context("open sqlite")?;
        crate::adoption::spawn(store.clone());
        let maintenance = store.spawn_wal_maintenance();

        let seed = settings.admin_key.expose();
        let (authenticator, bootstrap) = ensure_admin_credential(&store, Some(seed), now_ms())
            .await
            .context("bootstrap manager server")?;
        match bootstrap {
            CredentialBootstrap::Generated(key) => {
                // The only time the admin key is ever printed: it exists nowhere else.
                tracing::info!("CPA Manager Plus admin key generated: {key}");
                tracing::info!(
                    "Log in to /management.html with this CPAMP Admin Key. It is shown only once; if it is lost, stop the server and run `cpamp-server reset-admin-key`."
                );
            }
            CredentialBootstrap::Seeded => {
                tracing::info!(
                    "CPA Manager Plus admin credential initialized from CPA_MANAGER_ADMIN_KEY"
                );
            }
            CredentialBootstrap::Existing => {
                tracing::info!("CPA Manager Plus admin credential initialized");
            }
        }

        let listener = TcpListener::bind(settings.http_addr)
            .with_context(|| format!("http listen on {}", settings.http_addr))?;
        let local_addr = listener.local_addr().context("http listen")?;

        let startup = startup_config(&settings);
        let automation = Automation::default();
        // Every batch taken from CPA is synced to the inbox beside the database before
        // anything else happens to it; what a killed process left there is stored first.
        let inbox_path = inbox_path(&lock.db_path);
        let (inbox, recovery) = Inbox::open(&inbox_path)
            .context("open the collector inbox (delete it only if it holds nothing you need)")?;
        if recovery.discarded_bytes > 0 {
            tracing::warn!(
                bytes = recovery.discarded_bytes,
                path = %inbox_path.display(),
                "cut a torn record off the end of the collector inbox (a write interrupted by a crash)"
            );
        }
        if recovery.recovered_items > 0 {
            tracing::warn!(
                items = recovery.recovered_items,
                "kept the events of a response from CPA that the previous process was still reading when it stopped"
            );
        }
        let interrupted_read_at_ms = recovery.interrupted_read_at_ms;
        let collector = Collector::with_inbox(
            IngestSink::new(store.clone(), automation.clone()),
            StatusHandle::new(startup.collector_mode.as_str(), &startup.queue),
            settings.hold,
            inbox,
            recovery,
        );
        automation
            .enricher
            .follow_refreshes(collector.status().refresh_notifications());
        let state = web::Data::new(AppState {
            store: store.clone(),
            started_at_ms: now_ms(),
            db_path: lock.db_path.display().to_string(),
            query_limit: settings.query_limit.min(50_000),
            startup,
            data_key,
            collector: collector.clone(),
            automation,
            config_lock: tokio::sync::Mutex::new(()),
            login_limiter: LoginLimiter::default().trusting(settings.trusted_proxies.clone()),
            gaps: GapView::default(),
        });
        let backend: web::Data<dyn AuthBackend> =
            web::Data::from(state.clone().into_inner() as std::sync::Arc<dyn AuthBackend>);
        let authenticator = web::Data::new(authenticator);
        let panel_path = web::Data::new(PanelPath(settings.panel_path.clone()));
        let monitor = web::Data::new(Monitor::new(
            host_facts(&settings, &lock.db_path),
            settings.metrics_token.clone(),
        ));
        let cors_origins = web::Data::new(CorsOrigins(settings.cors_origins.clone()));
        let transfer = web::Data::new(transfer_state(&settings, &lock.db_path, &state));
        let session_cleanup = spawn_session_cleanup(transfer.clone());
        // Analytics threads yield the CPU to the HTTP workers (`priority.rs`).
        let priorities = crate::priority::keep_background_threads_low();
        let price_sync = web::Data::new(cpamp_api::price_sync::PriceSync::new(
            settings.price_sources.clone(),
        ));
        let connections =
            cpamp_api::limits::ConnectionTracker::new(cpamp_api::limits::ConnectionLimits {
                per_address: settings.http.max_connections_per_address,
                requests_per_connection: settings.http.max_requests_per_connection,
                body_read_timeout: settings.http.body_read_timeout,
            });
        let counted = std::sync::Arc::clone(&connections);
        // One analytics computation per core, at most two: the read pool keeps the
        // rest of its connections for everything else.
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        // Computations run on a runtime of their own, one thread per two cores: decoding
        // rollups never occupies an HTTP worker (so `/status` and `/health` answer at
        // once) and never takes every core from the collector.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads((cores / 2).max(1))
            .thread_name(crate::priority::ANALYTICS_THREAD)
            .enable_all()
            .build()
            .context("start the analytics runtime")?;
        let reads = web::Data::new(
            cpamp_api::reads::Reads::new(cores.clamp(1, 2)).computing_on(runtime.handle().clone()),
        );
        let analytics = AnalyticsRuntime(Some(runtime));
        // Complete answers are written at most one per HTTP worker at once, and a crowded
        // worker turns analytics reads away, so probes never queue behind panels
        // (`lane.rs`).
        let lane = web::Data::new(cpamp_api::lane::Lane::new(cores * 2));
        let connections = web::Data::from(connections);
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(backend.clone())
                .app_data(authenticator.clone())
                .app_data(panel_path.clone())
                .app_data(monitor.clone())
                .app_data(price_sync.clone())
                .app_data(cors_origins.clone())
                .app_data(transfer.clone())
                .app_data(connections.clone())
                .app_data(reads.clone())
                .app_data(lane.clone())
                .wrap(from_fn(cors))
                .wrap(from_fn(count_requests))
                .wrap(from_fn(cpamp_api::reads::invalidate_after_writes))
                .wrap(from_fn(cpamp_api::limits::enforce))
                .wrap(from_fn(security_headers))
                .wrap(from_fn(cpamp_api::slices::slice_large_bodies))
                .wrap(from_fn(cpamp_api::lane::deliver_in_turn))
                .configure(cpamp_api::configure::<SqliteStore>)
        })
        .on_connect(move |connection, data| counted.on_connect(connection, data))
        // Two HTTP workers per core: a connection stays on the worker that accepted it,
        // so fewer connections share each worker's queue and a `/status` or `/health`
        // request waits behind fewer panel requests.
        .workers(cores * 2)
        // Large answers reach the connection in slices (`slices.rs`), so each
        // connection's write buffer stays near this size between requests.
        .h1_write_buffer_size(cpamp_api::slices::WRITE_BUFFER_BYTES)
        .client_request_timeout(settings.http.read_header_timeout)
        .keep_alive(settings.http.keep_alive)
        .listen(listener)
        .context("http listen")?
        .disable_signals()
        .shutdown_timeout(10)
        .run();
        tracing::info!(addr = %local_addr, db_path = %lock.db_path.display(), "cpa-manager-plus listening on {local_addr}");
        // The gap tracker looks for downtime since the last heartbeat before the
        // collector starts receiving again.
        let gap_tracker = GapTracker::start(
            store.clone(),
            collector.status().clone(),
            now_ms,
            interrupted_read_at_ms,
            state.gaps.clone(),
        )
        .await;
        // What the previous process left in the inbox is stored even if no collector
        // run starts (no connection configured yet).
        collector.resume().await;
        // Automation workers start before the collector, so no collected failure
        // misses them (and due quota cooldowns are restored at once).
        Automation::start(state.clone()).await;
        // The collector runs with the connection in effect: env-managed, else the saved
        // manager config, else the legacy setup row (server-core §3.6, §4.1).
        if let Err(error) = cpamp_api::connection::apply_collector(&state).await {
            tracing::error!(%error, "start usage collector");
        }
        Ok(Application {
            local_addr,
            server,
            store,
            collector,
            lock,
            gap_tracker,
            maintenance,
            session_cleanup,
            priorities,
            analytics,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves (or the server fails), then stops taking
    /// requests, finishes the ones in flight, and closes the database.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Application {
            server,
            store,
            collector,
            lock,
            gap_tracker,
            maintenance,
            session_cleanup,
            priorities,
            analytics,
            ..
        } = self;
        let mut gap_tracker = Some(gap_tracker);
        let handle = server.handle();
        let mut server_task = tokio::spawn(server);
        let result = tokio::select! {
            result = &mut server_task => {
                tracing::error!("http server stopped unexpectedly");
                result.context("http server task").and_then(|inner| inner.context("http server"))
            }
            () = shutdown => {
                tracing::info!("shutting down");
                // The collector stops taking events at once and commits what it holds
                // while the HTTP server finishes the requests in flight.
                let http = async {
                    handle.stop(true).await;
                    let _ = server_task.await;
                };
                // The gap tracker writes its final heartbeat (the next start measures
                // downtime from here) while the collector stops taking events.
                let tracker = async {
                    if let Some(tracker) = gap_tracker.take() {
                        tracker.shutdown().await;
                    }
                };
                tokio::join!(tracker, collector.shutdown(), http);
                Ok(())
            }
        };
        // After an unexpected HTTP stop the collector is still running; a second
        // shutdown is a no-op.
        if let Some(tracker) = gap_tracker.take() {
            tracker.shutdown().await;
        }
        collector.shutdown().await;
        maintenance.abort();
        session_cleanup.abort();
        priorities.abort();
        drop(analytics);
        store.close().await;
        drop(lock);
        tracing::info!("stopped");
        result
    }
}

/// Import sessions in `<data dir>/usage-imports` (the database's directory when
/// only `USAGE_DB_PATH` is set) and backups in `<data dir>/backups`.
fn transfer_state(
    settings: &Settings,
    db_path: &std::path::Path,
    state: &AppState<SqliteStore>,
) -> Transfer {
    let data_dir = if settings.env_set.contains(&"USAGE_DB_PATH")
        && !settings.env_set.contains(&"USAGE_DATA_DIR")
        && settings.config_path.is_none()
    {
        db_path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| settings.data_dir.clone())
    } else {
        settings.data_dir.clone()
    };
    let limits = settings.import_sessions;
    let config = SessionConfig {
        dir: data_dir.join("usage-imports"),
        chunk_bytes: limits.chunk_bytes,
        disk_quota_bytes: limits.disk_quota_bytes,
        max_sessions: limits.max_sessions,
        ttl: std::time::Duration::from_secs(limits.ttl_minutes.saturating_mul(60)),
    };
    let data_key = match state.data_key.origin {
        DataKeyOrigin::Env => DataKeySource::External,
        DataKeyOrigin::File | DataKeyOrigin::Created => {
            DataKeySource::File(settings.data_key_path.clone())
        }
    };
    Transfer {
        sessions: ImportSessions::open(config, now_ms()),
        backups_dir: data_dir.join("backups"),
        data_key,
        backup_lock: tokio::sync::Mutex::new(()),
    }
}

/// Removes expired import sessions every min(TTL/4, 15 min).
fn spawn_session_cleanup(transfer: web::Data<Transfer>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = transfer.sessions.config().cleanup_interval();
        loop {
            tokio::time::sleep(interval).await;
            transfer.sessions.cleanup(now_ms());
        }
    })
}

/// Connection and collector values from env and config file.
fn startup_config(settings: &Settings) -> StartupConfig {
    let env_connection = settings.env_managed_connection().then(|| EnvConnection {
        base_url: settings.cpa_upstream_url.clone(),
        management_key: settings.cpa_management_key.clone(),
    });
    StartupConfig {
        env_connection,
        collector_mode: Mode::parse(settings.collector_mode.as_str()),
        queue: settings.queue.clone(),
        pop_side: PopSide::parse(&settings.pop_side),
        batch_size: settings.batch_size,
        poll_interval_ms: u64::try_from(settings.poll_interval.as_millis()).unwrap_or(500),
        query_limit: settings.query_limit,
        tls_skip_verify: settings.tls_skip_verify,
        shutdown_grace: settings.shutdown_grace,
        automation: settings.automation,
    }
}

/// Where the data lives and whether it looks mounted, for the doctor.
pub fn host_facts(settings: &Settings, db_path: &std::path::Path) -> HostFacts {
    let mut candidates: Vec<std::path::PathBuf> = vec!["/data/usage.sqlite".into()];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(std::path::Path::to_path_buf))
    {
        candidates.push(dir.join("data").join("usage.sqlite"));
    }
    if let Ok(dir) = std::env::current_dir() {
        candidates.push(dir.join("data").join("usage.sqlite"));
    }
    if let Some(dir) = settings
        .config_path
        .as_ref()
        .and_then(|path| path.parent().map(std::path::Path::to_path_buf))
    {
        candidates.push(dir.join("data").join("usage.sqlite"));
    }
    let own = std::fs::canonicalize(db_path).unwrap_or_else(|_| db_path.to_path_buf());
    let mut volume_hints = Vec::new();
    for candidate in candidates {
        let Ok(canonical) = std::fs::canonicalize(&candidate) else {
            continue;
        };
        if canonical == own || volume_hints.iter().any(|(path, _)| path == &canonical) {
            continue;
        }
        if let Ok(meta) = std::fs::metadata(&canonical)
            && meta.is_file()
        {
            volume_hints.push((canonical, meta.len()));
        }
    }
    HostFacts {
        data_dir: settings.data_dir.clone(),
        in_container: cpamp_api::monitor::detect_container(),
        data_dir_is_mount: cpamp_api::monitor::is_mount_point(&settings.data_dir),
        volume_hints,
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A future that resolves on SIGTERM or SIGINT. The handlers are installed when
/// this is called, so call it before announcing readiness: a signal that arrives
/// early is then a clean shutdown, not the default "terminate at once".
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let terminate = {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::terminate()).ok()
    };
    let interrupt = tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    async move {
        #[cfg(unix)]
        if let Some(mut terminate) = terminate {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt => {}
            }
            return;
        }
        let _ = interrupt.await;
    }
}

/// The collector inbox beside the database: `<database>.inbox`.
pub fn inbox_path(db_path: &std::path::Path) -> std::path::PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(".inbox");
    std::path::PathBuf::from(name)
}
