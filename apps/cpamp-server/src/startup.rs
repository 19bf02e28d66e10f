//! Startup and wiring: the one place that picks concrete types.
//!
//! [`Application::build`] takes the process lock, opens SQLite, bootstraps the
//! admin credential, binds the HTTP listener (so port 0 works and readiness needs
//! no sleep) and builds the actix server. [`Application::run_until_stopped`] serves
//! until the shutdown future resolves, then stops gracefully.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};

use actix_web::{App, HttpServer, web};
use anyhow::Context;
use cpamp_api::AppState;
use cpamp_api::auth::{CredentialBootstrap, ensure_admin_credential};
use cpamp_api::routes::PanelPath;
use cpamp_storage::{Options, SqliteStore};

use crate::config::Settings;
use crate::lock::{self, ProcessLock};

/// A built, bound, not yet running server.
pub struct Application {
    local_addr: SocketAddr,
    server: actix_web::dev::Server,
    store: SqliteStore,
    lock: ProcessLock,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let lock =
            lock::acquire(&settings.db_path).context("acquire manager database process lock")?;
        let store = SqliteStore::open(Options::new(&lock.db_path))
            .await
            .context("open sqlite")?;
        crate::adoption::spawn(store.clone());

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

        let state = web::Data::new(AppState {
            store: store.clone(),
            started_at_ms: now_ms(),
            db_path: lock.db_path.display().to_string(),
            query_limit: settings.query_limit.min(50_000),
        });
        let authenticator = web::Data::new(authenticator);
        let panel_path = web::Data::new(PanelPath(settings.panel_path.clone()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(authenticator.clone())
                .app_data(panel_path.clone())
                .configure(cpamp_api::configure::<SqliteStore>)
        })
        .listen(listener)
        .context("http listen")?
        .disable_signals()
        .shutdown_timeout(10)
        .run();
        tracing::info!(addr = %local_addr, db_path = %lock.db_path.display(), "cpa-manager-plus listening on {local_addr}");
        Ok(Application {
            local_addr,
            server,
            store,
            lock,
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
            lock,
            ..
        } = self;
        let handle = server.handle();
        let mut server_task = tokio::spawn(server);
        let result = tokio::select! {
            result = &mut server_task => {
                tracing::error!("http server stopped unexpectedly");
                result.context("http server task").and_then(|inner| inner.context("http server"))
            }
            () = shutdown => {
                tracing::info!("shutting down");
                handle.stop(true).await;
                let _ = server_task.await;
                Ok(())
            }
        };
        store.close().await;
        drop(lock);
        tracing::info!("stopped");
        result
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
