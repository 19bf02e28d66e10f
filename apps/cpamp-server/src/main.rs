//! `cpamp-server`: the Manager Server for CPA.
//!
//! With no subcommand it runs the server. Subcommands are offline tools that take
//! the same process lock, so they refuse to run beside a live server.

use cpamp_server::{config, demo, doctor, lock, prices, reset, startup, telemetry};

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cpamp-server",
    version,
    about = "Manager Server for CPA: keeps every usage event and serves the panel"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Run the server against a built-in fake CPA that emits made-up usage events, so the
    /// panel shows data without a CPA. Data goes to ./data/demo unless USAGE_DATA_DIR or
    /// USAGE_DB_PATH is set; CPA_UPSTREAM_URL and the CPA Management Key are ignored.
    Demo,
    /// Print configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Replace the admin key offline (the server must be stopped). Without a key
    /// option a new key is generated and printed once.
    #[command(alias = "reset-admin-password")]
    ResetAdminKey {
        /// Use this admin key (never echoed).
        #[arg(long, conflicts_with = "admin_key_file")]
        admin_key: Option<String>,
        /// Read the admin key from this file (trimmed).
        #[arg(long)]
        admin_key_file: Option<std::path::PathBuf>,
        /// The SQLite database (default: from the configuration).
        #[arg(long)]
        db_path: Option<std::path::PathBuf>,
    },
    /// Build pending derived data offline. cpamp never defers any, so this only
    /// checks the database and reports that nothing is pending.
    /// Diagnose "monitoring has no data": checks every known cause from this host's
    /// network position. With the server running (and the admin key given) it reports the
    /// live server's diagnosis; otherwise it checks what it can offline.
    Doctor {
        /// The CPAMP Admin Key (default: CPA_MANAGER_ADMIN_KEY).
        #[arg(long, env = "CPA_MANAGER_ADMIN_KEY", hide_env_values = true)]
        admin_key: Option<String>,
        /// The running server (default: from HTTP_ADDR, on 127.0.0.1).
        #[arg(long)]
        server_url: Option<String>,
        /// Print the diagnosis as JSON.
        #[arg(long)]
        json: bool,
    },
    CleanupDerived {
        /// The SQLite database (default: from the configuration).
        #[arg(long)]
        db_path: Option<std::path::PathBuf>,
    },
    /// Model prices offline (the server must be stopped).
    Prices {
        #[command(subcommand)]
        command: PricesCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PricesCommand {
    /// Import prices from FILE: a price book ({"prices": {...}}, as GET
    /// /v0/management/model-prices answers) or a downloaded models.dev, LiteLLM or
    /// OpenRouter price list, matched as a sync would (pinned prices are kept).
    Import {
        /// The JSON file.
        file: std::path::PathBuf,
        /// What the file holds (default: detected from its content).
        #[arg(long, value_enum)]
        format: Option<prices::Format>,
        /// The SQLite database (default: from the configuration).
        #[arg(long)]
        db_path: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the documented example configuration file.
    Example,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
        Command::Demo => demo(),
        Command::Config {
            command: ConfigCommand::Example,
        } => {
            print!("{}", config::EXAMPLE);
            ExitCode::SUCCESS
        }
        Command::CleanupDerived { db_path } => cleanup_derived(db_path),
        Command::Prices {
            command:
                PricesCommand::Import {
                    file,
                    format,
                    db_path,
                },
        } => match prices::import(file, format, db_path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("import prices: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::ResetAdminKey {
            admin_key,
            admin_key_file,
            db_path,
        } => match reset::run(admin_key, admin_key_file, db_path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("reset admin key: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Doctor {
            admin_key,
            server_url,
            json,
        } => doctor::run(admin_key, server_url, json),
    }
}

fn serve() -> ExitCode {
    run_server(
        "cpamp-server",
        config::Sources::from_process(true),
        |settings| async move {
            // Install the signal handlers before announcing readiness.
            let shutdown = startup::shutdown_signal();
            let application = startup::Application::build(settings).await?;
            application.run_until_stopped(shutdown).await
        },
    )
}

fn demo() -> ExitCode {
    let mut sources = config::Sources::from_process(false);
    demo::use_demo_data_dir(&mut sources);
    run_server("cpamp-server demo", sources, |settings| async move {
        // Install the signal handlers before announcing readiness.
        let shutdown = startup::shutdown_signal();
        demo::run(settings, shutdown).await
    })
}

/// Loads settings, installs tracing, and runs `body` on a multi-threaded runtime;
/// any error is reported on stderr (before tracing exists) or in the log.
fn run_server<Body, Run>(label: &str, sources: config::Sources, body: Body) -> ExitCode
where
    Body: FnOnce(config::Settings) -> Run,
    Run: std::future::Future<Output = anyhow::Result<()>>,
{
    let settings = match config::load(&sources) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{label}: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("start runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn cleanup_derived(db_path: Option<std::path::PathBuf>) -> ExitCode {
    let db_path = match db_path {
        Some(path) => path,
        None => match config::load(&config::Sources::from_process(false)) {
            Ok(settings) => settings.db_path,
            Err(error) => {
                eprintln!("cleanup derived data: {error:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    if !db_path.is_file() {
        eprintln!(
            "cleanup derived data: SQLite database not found at {}; pass --db-path",
            db_path.display()
        );
        return ExitCode::FAILURE;
    }
    match lock::acquire(&db_path) {
        Ok(_lock) => {
            println!("No pending derived cleanup jobs.");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "cleanup derived data: acquire offline cleanup lock; stop Manager Server and retry: {error:#}"
            );
            ExitCode::FAILURE
        }
    }
}
