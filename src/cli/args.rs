//! The command line's shape: every command, flag and its help text, declared once with clap.
//!
//! Kept in the library (not `main.rs`) so that completions, man pages and the test that every
//! flag is documented read the same definition the binary parses. This module must not run
//! anything: `main.rs` dispatches.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Where the daemon and the commands look for their config when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/batchdrop/config.toml";

#[derive(Parser, Debug)]
#[command(
    name = "batchdrop",
    version = crate::build_info::VERSION_LINE,
    propagate_version = true,
    about = "Drop a file into a folder; batchdrop ingests it through the Batch Ingestion API, exactly once.",
    after_help = "Exit codes: 0 success, 1 runtime error, 2 usage, 3 configuration, 4 ingestion failure (docs/operating.md#exit-codes)."
)]
pub struct Cli {
    /// The config file [default: /etc/batchdrop/config.toml]. For `emulator`: the emulator's
    /// own config file, and only when given on the command line.
    #[arg(
        long,
        short,
        global = true,
        env = "BATCHDROP_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Log format: text (for people) or json (one object per line, fields at the top level);
    /// overrides the config's `log_format`.
    #[arg(
        long,
        global = true,
        env = "BATCHDROP_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: Option<LogFormatArg>,
    /// More log lines: -v debug, -vv trace (RUST_LOG, when set, decides instead).
    #[arg(long, short, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Fewer log lines: -q warnings and errors, -qq errors only.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The config file to load: `--config`, `BATCHDROP_CONFIG`, or the default.
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Watch the configured drop folders and ingest what lands in them.
    Run {
        /// Process the files present, wait for their batches to end, and exit
        /// (0 when all succeeded, 4 when some failed).
        #[arg(long)]
        once: bool,
        /// Reload the config when its file changes (debounced; a bad file keeps the running
        /// config and says so), as SIGHUP does: for Kubernetes ConfigMaps.
        #[arg(long)]
        watch_config: bool,
        /// With --once: say what would be taken, in which batches, and what refused and why;
        /// move and upload nothing (as `batchdrop plan`).
        #[arg(long, requires = "once")]
        dry_run: bool,
    },
    /// Say what a run would do with the files present now: per watch, the batches it would
    /// make and the files it would refuse, and why. Moves and uploads nothing.
    Plan,
    /// Serve the local emulator of the platform (Batch Ingestion, Catalog, Data Access).
    Emulator {
        /// The address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: SocketAddr,
        /// Where the emulator keeps its datasets, batches and files.
        #[arg(long, default_value = "./var/platform")]
        data_dir: PathBuf,
    },
    /// Validate a config file (folders writable, credentials present, limits) and print what
    /// would be watched (exit 3 when something is wrong).
    CheckConfig {
        /// Also ask the platform: credentials, sandbox, every watch's dataset (exists in the
        /// sandbox, fits the watch's format) and its schema. One line per check.
        #[arg(long)]
        online: bool,
    },
    /// Show counts per dataset, batches in flight, recent failures; or one file's or batch's
    /// history. Works while the daemon runs.
    Status {
        /// Print JSON (a stable shape, documented in docs/commands.md).
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Only this dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// Refresh the view in place every INTERVAL (--watch=5s; default 2s) until
        /// interrupted.
        #[arg(
            long,
            value_name = "INTERVAL",
            num_args = 0..=1,
            require_equals = true,
            default_missing_value = "2s",
            value_parser = parse_interval
        )]
        watch: Option<std::time::Duration>,
        /// A file (its path below the drop folder, or in the archive or failed folder) or a
        /// batch (the platform's id, or #N).
        target: Option<String>,
    },
    /// Ingest files once, in one batch, and wait for the outcome (exit 0 on success, 4 on
    /// failure). Running the same push again resumes it.
    Push {
        /// The files to ingest, together in one batch.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The dataset the batch goes to.
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
        /// A file (path below its drop folder, or in the failed folder) or a batch (id or #N).
        target: String,
    },
    /// Abort a batch in flight; its files go to the failed folder (`retry` requeues them).
    Abort {
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
        /// The dataset whose schema types and validates the rows, fetched from the Schema
        /// Registry of the config's platform (or the copy the daemon keeps).
        #[arg(long)]
        dataset: Option<String>,
        /// The dataset's XDM schema as the Schema Registry exports it (xed-full JSON).
        #[arg(long)]
        schema: Option<PathBuf>,
        /// Where to write the mapped records (without it, nothing is written).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The output format of --out.
        #[arg(long, value_enum, default_value_t = MapFormat::Parquet)]
        format: MapFormat,
        /// How many mapped rows to print.
        #[arg(long, default_value_t = 5)]
        preview: usize,
    },
    /// Check files against a dataset's schema as the platform would, without uploading:
    /// file, row, field, code and message for each problem (exit 0 when every row passes, 4
    /// when some would be refused).
    Validate {
        /// The files (.json, .jsonl, .csv; Parquet is not checked locally).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The dataset whose schema (Schema Registry, xed-full) the rows are checked against.
        #[arg(long, required_unless_present = "schema")]
        dataset: Option<String>,
        /// A schema file (xed-full JSON) instead of asking the platform.
        #[arg(long, conflicts_with = "dataset")]
        schema: Option<PathBuf>,
        /// json, csv or parquet (default: each file's extension).
        #[arg(long)]
        format: Option<String>,
        /// Read JSON as one document (an array of objects, or objects one after another);
        /// a file starting with `[` is read so anyway.
        #[arg(long)]
        multiline_json: bool,
        /// Print JSON (one object per file) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Revert a successful batch: its data leaves the dataset; its files' receipts say so.
    Revert {
        /// The platform's batch id, or #N.
        batch: String,
    },
    /// Ask the daemon's /healthz (or /readyz) and exit 0 when it answers 200, 1 otherwise: a
    /// health check for images without curl.
    Healthcheck {
        /// The admin listener's URL (default: the running daemon's address, from its state
        /// dir, else the config's admin_listen). A URL without a path gets /healthz.
        #[arg(long)]
        url: Option<String>,
        /// Ask /readyz instead of /healthz: ready to take files, not merely alive.
        #[arg(long)]
        ready: bool,
        /// How long to wait for the answer.
        #[arg(long, default_value = "5s", value_parser = parse_interval)]
        timeout: std::time::Duration,
    },
    /// Print a shell completion script: `batchdrop completions bash > /etc/bash_completion.d/batchdrop`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print a command's man page (roff), or write every page into a folder with --out.
    Man {
        /// The command whose page to print (default: batchdrop's own).
        command: Option<String>,
        /// Write batchdrop.1 and one batchdrop-COMMAND.1 per command into this folder.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// The output formats of `map`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MapFormat {
    Parquet,
    Json,
}

fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    crate::units::parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            format!("\"{text}\" is not a duration: write e.g. \"500ms\", \"2s\", \"1m\"")
        })
}

/// The whole command line as clap sees it (for completions, man pages and tests).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument of every command, with the command's path, e.g. `batchdrop push --dataset`.
    fn arguments(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in cmd.get_arguments() {
            out.push((format!("{path} {}", arg.get_id()), arg.clone()));
        }
        for sub in cmd.get_subcommands() {
            arguments(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn the_command_line_is_consistent_and_every_flag_is_documented() {
        let cmd = command();
        cmd.clone().debug_assert();
        let mut args = Vec::new();
        arguments(&cmd, "batchdrop", &mut args);
        let undocumented: Vec<&String> = args
            .iter()
            .filter(|(_, arg)| arg.get_help().is_none())
            .map(|(name, _)| name)
            .collect();
        assert!(undocumented.is_empty(), "no help text: {undocumented:?}");
        for sub in cmd.get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no about", sub.get_name());
        }
        assert!(
            args.len() > 30,
            "the walk found the arguments: {}",
            args.len()
        );
    }

    #[test]
    fn config_is_global_and_declared_once() {
        let cli = Cli::try_parse_from(["batchdrop", "--config", "x.toml", "status"]).unwrap();
        assert_eq!(cli.config_path(), PathBuf::from("x.toml"));
        let cli = Cli::try_parse_from(["batchdrop", "status", "-c", "y.toml", "-vv"]).unwrap();
        assert_eq!(cli.config_path(), PathBuf::from("y.toml"));
        assert_eq!(cli.verbose, 2);
        let cli = Cli::try_parse_from(["batchdrop", "--log-format", "json", "run"]).unwrap();
        assert_eq!(cli.log_format, Some(LogFormatArg::Json));
        assert!(Cli::try_parse_from(["batchdrop", "-v", "-q", "run"]).is_err());
        let cli = Cli::try_parse_from(["batchdrop", "status", "--watch"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status { watch: Some(d), .. } if d == std::time::Duration::from_secs(2)
        ));
    }
}
