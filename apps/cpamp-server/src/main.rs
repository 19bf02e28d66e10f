//! `cpamp-server`: the Manager Server for CPA.
//!
//! With no subcommand it runs the server. Subcommands are offline tools that take
//! the same process lock, so they refuse to run beside a live server.

use cpamp_server::{
    allocator, config, demo, doctor, lock, prices, reset, startup, telemetry, transfer,
};

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cpamp-server",
    version,
    about = "Manager Server for CPA: keeps every usage event CPA publishes and serves the panel",
    long_about = "Manager Server for CPA (CLIProxyAPI): collects every usage event CPA publishes, keeps it in \
                  SQLite and serves the web panel at http://<host>:18317/management.html.\n\n\
                  Without a subcommand it runs the server. Settings come from the environment and an optional \
                  config file (docs/configuration.md; `cpamp-server config example`). The offline tools take the \
                  database's process lock, so they refuse to run beside a live server. Also installed as \
                  `cpa-manager-plus`, the earlier server's name, whose commands and flags (`-db-path`) work unchanged."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default when no subcommand is given).
    ///
    /// Opens (or creates) the database in the data directory, prints the CPAMP Admin Key
    /// once on the very first start, listens on HTTP_ADDR (default 0.0.0.0:18317) and
    /// collects from CPA once a connection is saved in setup or given by CPA_UPSTREAM_URL
    /// and CPA_MANAGEMENT_KEY. SIGTERM or Ctrl-C stops it after storing what it holds.
    Serve,
    /// Run the server against a built-in fake CPA that emits made-up usage events.
    ///
    /// The panel fills with data without a CPA. The demo keeps its own database in
    /// <data dir>/demo (or --data-dir), apart from real data, ignores CPA_UPSTREAM_URL and
    /// the CPA Management Key, and prints the URL and its admin key on every start.
    Demo {
        /// Keep the demo database here instead of <data dir>/demo.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<std::path::PathBuf>,
    },
    /// Print configuration helpers.
    ///
    /// `config example` prints a config file with every key at its default; save it as
    /// config.json beside the binary or point CPA_MANAGER_CONFIG at it.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Replace the CPAMP Admin Key offline; the server must be stopped.
    ///
    /// Without a key option a new key is generated and printed once. A given key is never
    /// echoed. Only the admin credential changes: the CPA connection, data.key and usage data
    /// stay as they are. Also available as `reset-admin-password`.
    #[command(alias = "reset-admin-password")]
    ResetAdminKey {
        /// Use this admin key (never echoed).
        #[arg(long, conflicts_with = "admin_key_file", value_name = "KEY")]
        admin_key: Option<String>,
        /// Read the admin key from this file (trimmed).
        #[arg(long, value_name = "FILE")]
        admin_key_file: Option<std::path::PathBuf>,
        /// The SQLite database (default: from the configuration).
        #[arg(long, value_name = "PATH")]
        db_path: Option<std::path::PathBuf>,
    },
    /// Diagnose "monitoring has no data" from this host's network position.
    ///
    /// Checks every known cause: the CPA URL as seen from here, the CPA Management Key,
    /// CPA's version and usage publishing, the collector mode, queue retention, gaps and
    /// the data directory. With the server running (and the admin key given) it prints the
    /// live server's diagnosis; otherwise it checks what it can offline. Exit code 0: no
    /// errors; 1: error findings; 2: the doctor could not run.
    Doctor {
        /// The CPAMP Admin Key (default: CPA_MANAGER_ADMIN_KEY).
        #[arg(
            long,
            env = "CPA_MANAGER_ADMIN_KEY",
            hide_env_values = true,
            value_name = "KEY"
        )]
        admin_key: Option<String>,
        /// The running server (default: from HTTP_ADDR, on 127.0.0.1).
        #[arg(long, value_name = "URL")]
        server_url: Option<String>,
        /// Print the diagnosis as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build pending derived data offline; the server must be stopped.
    ///
    /// Kept for the earlier server's maintenance scripts. cpamp builds every derived table
    /// and index while it stores events, so nothing is ever pending: the command checks the
    /// database and the lock and reports that.
    CleanupDerived {
        /// The SQLite database (default: from the configuration).
        #[arg(long, value_name = "PATH")]
        db_path: Option<std::path::PathBuf>,
    },
    /// Model prices offline (the server must be stopped).
    Prices {
        #[command(subcommand)]
        command: PricesCommand,
    },
    /// Export usage events (NDJSON, oldest first; or CSV) to a file or standard output.
    ///
    /// With the server stopped it reads the database directly; while the server runs
    /// (it holds the database lock) it downloads from the server's API with the admin
    /// key. Either way the export is one consistent snapshot. Import it with
    /// `cpamp-server import FILE`.
    Export {
        /// Write here instead of standard output.
        #[arg(long, short)]
        out: Option<std::path::PathBuf>,
        /// Only events at or after this time (Unix ms).
        #[arg(long)]
        from_ms: Option<i64>,
        /// Only events before this time (Unix ms).
        #[arg(long)]
        to_ms: Option<i64>,
        /// Only this analytics model (repeatable).
        #[arg(long = "model")]
        models: Vec<String>,
        /// Only this client API key, as its SHA-256 hex (repeatable).
        #[arg(long = "api-key-hash")]
        api_key_hashes: Vec<String>,
        /// Only the newest N events.
        #[arg(long)]
        limit: Option<u64>,
        /// jsonl (default) or csv.
        #[arg(long, default_value = "jsonl")]
        format: String,
        #[command(flatten)]
        online: OnlineArgs,
        /// The SQLite database when the server is stopped (default: from the configuration).
        #[arg(long)]
        db_path: Option<std::path::PathBuf>,
    },
    /// Import usage events from a file: cpamp's or the Go server's export (JSONL/NDJSON),
    /// a JSON array, CPA records or a legacy usage snapshot. Events already stored are
    /// skipped, so importing the same file twice adds nothing.
    ///
    /// With the server stopped it writes to the database directly; while the server runs
    /// it uploads the file through the server's resumable import sessions with the admin
    /// key.
    Import {
        /// The file to import.
        file: std::path::PathBuf,
        #[command(flatten)]
        online: OnlineArgs,
        /// The SQLite database when the server is stopped (default: from the configuration).
        #[arg(long)]
        db_path: Option<std::path::PathBuf>,
    },
    /// Write a backup directory: a consistent copy of the database, data.key and a
    /// manifest with checksums. Safe while the server runs and collects.
    ///
    /// With the server stopped it copies the database directly; while the server runs it
    /// asks the server (admin key) to write the backup and downloads it into DIR.
    Backup {
        /// The backup directory to create (must not exist, or be empty).
        #[arg(long)]
        out: std::path::PathBuf,
        #[command(flatten)]
        online: OnlineArgs,
        /// The SQLite database when the server is stopped (default: from the configuration).
        #[arg(long)]
        db_path: Option<std::path::PathBuf>,
    },
    /// Restore a backup directory written by `backup` (the server must be stopped). The
    /// current database files (and a different data.key) are kept beside it as
    /// `*.before-restore-<time>`.
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: std::path::PathBuf,
        /// The SQLite database to restore into (default: from the configuration).
        #[arg(long)]
        db_path: Option<std::path::PathBuf>,
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

/// How a command reaches the running server when it holds the database lock.
#[derive(Debug, clap::Args)]
struct OnlineArgs {
    /// The CPAMP Admin Key, used only when the server is running (default: CPA_MANAGER_ADMIN_KEY).
    #[arg(long, env = "CPA_MANAGER_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// The running server (default: from HTTP_ADDR, on 127.0.0.1).
    #[arg(long)]
    server_url: Option<String>,
}

impl From<OnlineArgs> for transfer::Online {
    fn from(args: OnlineArgs) -> transfer::Online {
        transfer::Online {
            admin_key: args.admin_key,
            server_url: args.server_url,
        }
    }
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the documented example configuration file.
    Example,
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(go_style_flags(std::env::args_os().collect()));
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            allocator::tune();
            serve()
        }
        Command::Demo { data_dir } => {
            allocator::tune();
            demo(data_dir)
        }
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
        Command::Export {
            out,
            from_ms,
            to_ms,
            models,
            api_key_hashes,
            limit,
            format,
            online,
            db_path,
        } => {
            let Some(format) = cpamp_domain::transfer::export::ExportFormat::parse(&format) else {
                eprintln!("export: --format must be jsonl or csv; got {format:?}");
                return ExitCode::FAILURE;
            };
            let options = transfer::ExportOptions {
                out,
                selection: cpamp_domain::ports::EventSelection {
                    from_ms,
                    to_ms,
                    models,
                    api_key_hashes,
                    newest: limit,
                    ..Default::default()
                },
                format: Some(format),
            };
            finish("export", transfer::export(options, online.into(), db_path))
        }
        Command::Import {
            file,
            online,
            db_path,
        } => finish("import", transfer::import(file, online.into(), db_path)),
        Command::Backup {
            out,
            online,
            db_path,
        } => finish("backup", transfer::backup(out, online.into(), db_path)),
        Command::Restore { from, db_path } => finish("restore", transfer::restore(from, db_path)),
    }
}

fn finish(label: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{label}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The earlier server parsed flags with Go's `flag` package, which also accepts one dash
/// (`-db-path x`, `-admin-key-file=f`). Rewrites such an argument to `--` when it names a
/// long option of the subcommand, so its scripts keep working.
fn go_style_flags(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let command = Cli::command();
    let Some(subcommand) = args
        .get(1)
        .and_then(|arg| arg.to_str())
        .and_then(|name| command.find_subcommand(name))
    else {
        return args;
    };
    let mut longs: Vec<String> = subcommand
        .get_arguments()
        .filter_map(|argument| argument.get_long().map(str::to_string))
        .collect();
    longs.push("help".to_string());
    for arg in args.iter_mut().skip(2) {
        let Some(text) = arg.to_str() else { continue };
        let Some(rest) = text.strip_prefix('-').filter(|rest| !rest.starts_with('-')) else {
            continue;
        };
        let name = rest.split('=').next().unwrap_or(rest);
        if longs.iter().any(|long| long == name) {
            *arg = format!("--{rest}").into();
        }
    }
    args
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

fn demo(data_dir: Option<std::path::PathBuf>) -> ExitCode {
    run_server(
        "cpamp-server demo",
        config::Sources::from_process(false),
        |mut settings| async move {
            demo::use_demo_data_dir(&mut settings, data_dir)?;
            // Install the signal handlers before announcing readiness.
            let shutdown = startup::shutdown_signal();
            demo::run(settings, shutdown).await
        },
    )
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
    for warning in &settings.warnings {
        tracing::warn!("configuration: {warning}");
    }
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
            Ok(settings) => {
                print_warnings(&settings);
                settings.db_path
            }
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

/// Configuration warnings of an offline tool, on stderr (it installs no log subscriber).
pub(crate) fn print_warnings(settings: &config::Settings) {
    for warning in &settings.warnings {
        eprintln!("warning: configuration: {warning}");
    }
}
