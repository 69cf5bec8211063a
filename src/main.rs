//! The command line: parse arguments, load the config, set up logs and signals, dispatch.
//! This is the only place that uses `anyhow` and decides exit codes.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use batchdrop::cli::{self, CommandError, exit};
use batchdrop::config::{Config, LogFormat};
use batchdrop::daemon::{self, Outcome, RunOptions};
use batchdrop::telemetry::EscapedFields;

/// Exit codes: distinct for each kind of trouble, so scripts can tell them apart (2 is clap's,
/// for usage errors).
const EXIT_RUNTIME: u8 = exit::RUNTIME;
const EXIT_CONFIG: u8 = exit::CONFIG;
const EXIT_INGEST_FAILED: u8 = exit::INGEST_FAILED;

#[derive(Parser)]
#[command(
    name = "batchdrop",
    version,
    about = "Drop a file into a folder; batchdrop ingests it through the Batch Ingestion API, exactly once."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch the configured drop folders and ingest what lands in them.
    Run {
        #[arg(
            long,
            short,
            env = "BATCHDROP_CONFIG",
            default_value = "/etc/batchdrop/config.toml"
        )]
        config: PathBuf,
        /// Process the files present, wait for their batches to end, and exit
        /// (0 when all succeeded, 4 when some failed).
        #[arg(long)]
        once: bool,
    },
    /// Serve the local emulator of the platform (Batch Ingestion, Catalog, Data Access).
    Emulator {
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: SocketAddr,
        #[arg(long, default_value = "./var/platform")]
        data_dir: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file (folders writable, credentials present, limits) and print what
    /// would be watched (exit 3 when something is wrong).
    CheckConfig {
        #[arg(
            long,
            short,
            env = "BATCHDROP_CONFIG",
            default_value = "/etc/batchdrop/config.toml"
        )]
        config: PathBuf,
    },
    /// Show counts per dataset, batches in flight, recent failures; or one file's or batch's
    /// history. Works while the daemon runs.
    Status {
        #[arg(
            long,
            short,
            env = "BATCHDROP_CONFIG",
            default_value = "/etc/batchdrop/config.toml"
        )]
        config: PathBuf,
        /// Print JSON (a stable shape, documented in docs/commands.md).
        #[arg(long)]
        json: bool,
        /// Only this dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// A file (its path below the drop folder, or in the archive or failed folder) or a
        /// batch (the platform's id, or #N).
        target: Option<String>,
    },
    /// Ingest files once, in one batch, and wait for the outcome (exit 0 on success, 4 on
    /// failure). Running the same push again resumes it.
    Push {
        #[arg(
            long,
            short,
            env = "BATCHDROP_CONFIG",
            default_value = "/etc/batchdrop/config.toml"
        )]
        config: PathBuf,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        dataset: String,
        /// json, csv or parquet (default: from the files' extension).
        #[arg(long)]
        format: Option<String>,
        /// Make this a replay batch replacing a batch (its id) or the batches that ingested a
        /// file (its name); repeatable.
        #[arg(long = "replaces", value_name = "BATCH_OR_FILE")]
        replaces: Vec<String>,
        /// Exit once the platform accepted the batch (after COMPLETE), without waiting for it
        /// to be processed.
        #[arg(long)]
        no_wait: bool,
    },
    /// Requeue a failed file, or the failed files of a failed or aborted batch.
    Retry {
        #[arg(
            long,
            short,
            env = "BATCHDROP_CONFIG",
            default_value = "/etc/batchdrop/config.toml"
        )]
        config: PathBuf,
        /// A file (path below its drop folder, or in the failed folder) or a batch (id or #N).
        target: String,
    },
    /// Abort a batch in flight; its files go to the failed folder (`retry` requeues them).
    Abort {
        #[arg(
            long,
            short,
            env = "BATCHDROP_CONFIG",
            default_value = "/etc/batchdrop/config.toml"
        )]
        config: PathBuf,
        /// The platform's batch id, or #N.
        batch: String,
    },
    /// Map a file with a Data Prep mapping set (CSV, JSON or Parquet in; Parquet or JSON Lines
    /// out): prints the first mapped rows and the rejected ones (exit 0 when every row mapped,
    /// 4 when some were rejected, 3 for a mapping set or schema that cannot be used).
    Map {
        /// The file to map (.csv, .tsv, .json, .jsonl, .parquet).
        file: PathBuf,
        /// The mapping set (the platform's Data Prep JSON: {"mappings": [...]}).
        #[arg(long)]
        mapping: PathBuf,
        /// The dataset whose schema types and validates the rows (needs the daemon's
        /// pre-flight, coming; use --schema for now).
        #[arg(long)]
        dataset: Option<String>,
        /// The dataset's XDM schema as the Schema Registry exports it (xed-full JSON).
        #[arg(long)]
        schema: Option<PathBuf>,
        /// Where to write the mapped records (without it, nothing is written).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = MapFormat::Parquet)]
        format: MapFormat,
        /// How many mapped rows to print.
        #[arg(long, default_value_t = 5)]
        preview: usize,
    },
    /// Revert a successful batch: its data leaves the dataset; its files' receipts say so.
    Revert {
        #[arg(
            long,
            short,
            env = "BATCHDROP_CONFIG",
            default_value = "/etc/batchdrop/config.toml"
        )]
        config: PathBuf,
        /// The platform's batch id, or #N.
        batch: String,
    },
}

/// The output formats of `map`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum MapFormat {
    Parquet,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Emulator { .. }) {
        keep_freed_memory();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = runtime.block_on(dispatch(cli.command));
    // Everything that matters is committed by now: a blocking task that cannot finish (a read
    // stuck on a dead network mount) must not keep the process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err((code, e)) => {
            eprintln!("batchdrop: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// The emulator receives large uploads into hyper's buffers of a few hundred KiB. glibc's
/// defaults hand such buffers back to the kernel as soon as a few are free, so each new one
/// was page-faulted and zeroed again (perf: page faults, `clear_page`, `munmap`). Keeping up
/// to 8 MiB free per heap lets them be reused; buffers above 4 MiB still get their own
/// mapping, returned at once. Measured on a 2 GiB upload: emulator CPU -20%. Only for the
/// emulator: the daemon recycles its own buffers, and its memory is what must stay flat.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists
    // (the runtime is built after it).
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

async fn dispatch(command: Command) -> Result<u8, (u8, anyhow::Error)> {
    match command {
        Command::Run { config, once } => {
            let config = Config::load(&config).map_err(|e| (EXIT_CONFIG, e.into()))?;
            init_logs(config.log_format);
            let shutdown = CancellationToken::new();
            let reload = Arc::new(Notify::new());
            spawn_signal_handler(shutdown.clone(), reload.clone())
                .map_err(|e| (EXIT_RUNTIME, e))?;
            let opts = RunOptions {
                once,
                reload: Some(reload),
            };
            match daemon::run(config, opts, shutdown).await {
                Ok(Outcome::Done) => Ok(0),
                Ok(Outcome::Interrupted) => {
                    eprintln!(
                        "batchdrop: stopped by a signal before all files were finished; run again to finish them"
                    );
                    Ok(EXIT_RUNTIME)
                }
                Ok(Outcome::Failures(n)) => {
                    eprintln!(
                        "batchdrop: {n} file(s) failed; see their receipts in the failed folder"
                    );
                    Ok(EXIT_INGEST_FAILED)
                }
                Err(e) => Err((EXIT_RUNTIME, e.into())),
            }
        }
        Command::Emulator {
            listen,
            data_dir,
            config,
        } => {
            init_logs(LogFormat::Text);
            let cfg = match config {
                Some(p) => batchdrop_emulator::EmulatorConfig::from_file(&p)
                    .map_err(|e| (EXIT_CONFIG, e.into()))?,
                None => Default::default(),
            };
            batchdrop_emulator::serve_until_signal(listen, &data_dir, cfg)
                .await
                .map_err(|e| (EXIT_RUNTIME, e.into()))?;
            Ok(0)
        }
        Command::CheckConfig { config } => {
            let config = load(&config)?;
            outcome(cli::check_config::run(&config))
        }
        Command::Status {
            config,
            json,
            dataset,
            target,
        } => {
            let config = load(&config)?;
            outcome(cli::status::run(&config, json, dataset.as_deref(), target.as_deref()).await)
        }
        Command::Push {
            config,
            files,
            dataset,
            format,
            replaces,
            no_wait,
        } => {
            let config = load(&config)?;
            init_command_logs();
            let args = cli::push::PushArgs {
                files,
                dataset,
                format,
                replaces,
                no_wait,
            };
            outcome(cli::push::run(&config, args).await)
        }
        Command::Retry { config, target } => {
            let config = load(&config)?;
            outcome(cli::retry::run(&config, &target).await)
        }
        Command::Abort { config, batch } => {
            let config = load(&config)?;
            init_command_logs();
            outcome(cli::abort::run(&config, &batch).await)
        }
        Command::Map {
            file,
            mapping,
            dataset,
            schema,
            out,
            format,
            preview,
        } => {
            let args = cli::map::MapArgs {
                file,
                mapping,
                dataset,
                schema,
                out,
                format: match format {
                    MapFormat::Parquet => batchdrop_mapping::OutputFormat::Parquet,
                    MapFormat::Json => batchdrop_mapping::OutputFormat::JsonLines,
                },
                preview,
            };
            outcome(cli::map::run(&args))
        }
        Command::Revert { config, batch } => {
            let config = load(&config)?;
            init_command_logs();
            outcome(cli::revert::run(&config, &batch).await)
        }
    }
}

fn load(path: &std::path::Path) -> Result<Config, (u8, anyhow::Error)> {
    Config::load(path).map_err(|e| (EXIT_CONFIG, e.into()))
}

/// A command's result as `dispatch` wants it: the exit code, or the code and the error.
fn outcome(r: Result<u8, CommandError>) -> Result<u8, (u8, anyhow::Error)> {
    r.map_err(|e| (e.exit_code(), e.into()))
}

/// The commands that reach the platform log only warnings (RUST_LOG overrides), so their own
/// output stays readable.
fn init_command_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .fmt_fields(EscapedFields)
        .init();
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.fmt_fields(EscapedFields).init(),
    }
}

/// First SIGTERM/SIGINT: graceful shutdown. Second: exit at once (the state stays consistent:
/// every step is recorded before and after it happens). SIGHUP: reload the config.
fn spawn_signal_handler(shutdown: CancellationToken, reload: Arc<Notify>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    tokio::spawn(async move {
        let mut seen = 0;
        while let Some(sig) = signals.next().await {
            if sig == SIGHUP {
                tracing::info!("SIGHUP: reloading the config");
                reload.notify_one();
                continue;
            }
            seen += 1;
            if seen == 1 {
                tracing::info!(
                    signal = sig,
                    "shutting down gracefully; send it again to exit at once"
                );
                shutdown.cancel();
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}
