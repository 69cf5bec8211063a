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

use batchdrop::config::{Config, LogFormat};
use batchdrop::daemon::{self, Outcome, RunOptions};

/// Exit codes: distinct for each kind of trouble, so scripts can tell them apart.
const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 3;
const EXIT_INGEST_FAILED: u8 = 4;

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
    /// Validate a config file and print what would be watched.
    CheckConfig {
        #[arg(
            long,
            short,
            env = "BATCHDROP_CONFIG",
            default_value = "/etc/batchdrop/config.toml"
        )]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err((code, e)) => {
            eprintln!("batchdrop: {e:#}");
            ExitCode::from(code)
        }
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
                Some(p) => batchdrop::emulator::EmulatorConfig::from_file(&p)
                    .map_err(|e| (EXIT_CONFIG, e.into()))?,
                None => Default::default(),
            };
            batchdrop::emulator::serve_until_signal(listen, &data_dir, cfg)
                .await
                .map_err(|e| (EXIT_RUNTIME, e.into()))?;
            Ok(0)
        }
        Command::CheckConfig { config } => {
            let config = Config::load(&config).map_err(|e| (EXIT_CONFIG, e.into()))?;
            println!("config {} is valid", config.path.display());
            println!("state_dir: {}", config.state_dir.display());
            println!("platform: {:?}", config.platform.endpoint);
            for w in &config.watches {
                println!(
                    "watch {} -> dataset {} (format {}, settle {:?}, max_files {}, max_wait {:?}, after success: {:?}, failed folder {})",
                    w.path.display(),
                    w.dataset,
                    w.format.map(|f| f.as_str()).unwrap_or("by extension"),
                    w.settle,
                    w.max_files,
                    w.max_wait,
                    w.after_success,
                    w.failed_dir.display()
                );
            }
            Ok(0)
        }
    }
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
        LogFormat::Text => builder.init(),
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
