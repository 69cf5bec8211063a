//! The command line: parse arguments, load the config, set up logs and signals, dispatch.
//! This is the only place that uses `anyhow` and decides exit codes.

use std::process::ExitCode;
use std::sync::Arc;

use clap::FromArgMatches;
use clap::parser::ValueSource;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use batchdrop::cli::args::{Cli, Command, LogFormatArg, MapFormat};
use batchdrop::cli::{self, CommandError, exit};
use batchdrop::config::{Config, LogFormat};
use batchdrop::daemon::{self, Outcome, RunOptions};
use batchdrop::logging::{self, Verbosity};

/// Exit codes: distinct for each kind of trouble, so scripts can tell them apart (2 is clap's,
/// for usage errors).
const EXIT_RUNTIME: u8 = exit::RUNTIME;
const EXIT_CONFIG: u8 = exit::CONFIG;
const EXIT_INGEST_FAILED: u8 = exit::INGEST_FAILED;

fn main() -> ExitCode {
    let matches = cli::args::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The emulator's --config is its own file: never the daemon's from BATCHDROP_CONFIG.
    let emulator_config = matches
        .subcommand_matches("emulator")
        .filter(|m| m.value_source("config") == Some(ValueSource::CommandLine))
        .and(cli.config.clone());
    if matches!(cli.command, Command::Emulator { .. }) {
        keep_freed_memory();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = runtime.block_on(dispatch(cli, emulator_config));
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

async fn dispatch(
    cli: Cli,
    emulator_config: Option<std::path::PathBuf>,
) -> Result<u8, (u8, anyhow::Error)> {
    let config_path = cli.config_path();
    let verbosity = Verbosity {
        verbose: cli.verbose,
        quiet: cli.quiet,
    };
    let log_format = cli.log_format.map(|f| match f {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    });
    // The commands that reach the platform log only warnings by default, so that their own
    // output stays readable.
    let command_logs = || logging::init(log_format.unwrap_or(LogFormat::Text), verbosity, "warn");
    match cli.command {
        Command::Plan
        | Command::Run {
            once: true,
            dry_run: true,
            ..
        } => {
            let config = load(&config_path)?;
            command_logs();
            outcome(cli::plan::run(&config).await)
        }
        Command::Run {
            once,
            watch_config,
            dry_run: _,
        } => {
            let config = load(&config_path)?;
            logging::init(log_format.unwrap_or(config.log_format), verbosity, "info");
            let shutdown = CancellationToken::new();
            let reload = Arc::new(Notify::new());
            spawn_signal_handler(shutdown.clone(), reload.clone())
                .map_err(|e| (EXIT_RUNTIME, e))?;
            if watch_config {
                batchdrop::config_watch::spawn(&config.path, reload.clone(), shutdown.clone())
                    .map_err(|e| (EXIT_RUNTIME, e.into()))?;
            }
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
        Command::Emulator { listen, data_dir } => {
            logging::init(log_format.unwrap_or(LogFormat::Text), verbosity, "info");
            let cfg = match emulator_config {
                Some(p) => batchdrop_emulator::EmulatorConfig::from_file(&p)
                    .map_err(|e| (EXIT_CONFIG, e.into()))?,
                None => Default::default(),
            };
            batchdrop_emulator::serve_until_signal(listen, &data_dir, cfg)
                .await
                .map_err(|e| (EXIT_RUNTIME, e.into()))?;
            Ok(0)
        }
        Command::CheckConfig { online } => {
            let config = load(&config_path)?;
            if online {
                command_logs();
                outcome(cli::check_online::run(&config).await)
            } else {
                outcome(cli::check_config::run(&config))
            }
        }
        Command::Status {
            json,
            dataset,
            watch,
            target,
        } => {
            let config = load(&config_path)?;
            match watch {
                Some(interval) => outcome(
                    cli::status_watch::run(
                        &config,
                        dataset.as_deref(),
                        target.as_deref(),
                        interval,
                    )
                    .await,
                ),
                None => outcome(
                    cli::status::run(&config, json, dataset.as_deref(), target.as_deref()).await,
                ),
            }
        }
        Command::Push {
            files,
            dataset,
            format,
            replaces,
            no_wait,
        } => {
            let config = load(&config_path)?;
            command_logs();
            let args = cli::push::PushArgs {
                files,
                dataset,
                format,
                replaces,
                no_wait,
            };
            outcome(cli::push::run(&config, args).await)
        }
        Command::Retry { target } => {
            let config = load(&config_path)?;
            outcome(cli::retry::run(&config, &target).await)
        }
        Command::Abort { batch } => {
            let config = load(&config_path)?;
            command_logs();
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
            match (&args.dataset, &args.schema) {
                (Some(_), None) => {
                    let config = load(&config_path)?;
                    command_logs();
                    outcome(cli::map::run(Some(&config), &args).await)
                }
                _ => outcome(cli::map::run(None, &args).await),
            }
        }
        Command::Validate {
            files,
            dataset,
            schema,
            format,
            multiline_json,
            json,
        } => {
            let args = cli::validate::ValidateArgs {
                files,
                dataset,
                schema,
                format,
                multiline_json,
                json,
            };
            match args.schema {
                Some(_) => outcome(cli::validate::run(None, &args).await),
                None => {
                    let config = load(&config_path)?;
                    command_logs();
                    outcome(cli::validate::run(Some(&config), &args).await)
                }
            }
        }
        Command::Revert { batch } => {
            let config = load(&config_path)?;
            command_logs();
            outcome(cli::revert::run(&config, &batch).await)
        }
        Command::Healthcheck {
            url,
            ready,
            timeout,
        } => {
            let args = cli::healthcheck::HealthcheckArgs {
                url,
                ready,
                timeout,
                config: config_path,
            };
            outcome(cli::healthcheck::run(&args).await)
        }
        Command::Completions { shell } => {
            cli::completions::write(shell, &mut std::io::stdout().lock());
            Ok(0)
        }
        Command::Man { command, out } => outcome(cli::man::run(command.as_deref(), out.as_deref())),
    }
}

fn load(path: &std::path::Path) -> Result<Config, (u8, anyhow::Error)> {
    Config::load(path).map_err(|e| (EXIT_CONFIG, e.into()))
}

/// A command's result as `dispatch` wants it: the exit code, or the code and the error.
fn outcome(r: Result<u8, CommandError>) -> Result<u8, (u8, anyhow::Error)> {
    r.map_err(|e| (e.exit_code(), e.into()))
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
