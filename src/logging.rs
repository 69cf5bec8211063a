//! Setting up the process's logs: format (text or JSON), verbosity (`-v`/`-q`, or `RUST_LOG`),
//! stderr only. JSON lines carry each event's fields at the top level (`batch`, `dataset`,
//! `file`...), where collectors index them without unwrapping a nested object.
//!
//! This module owns the subscriber's configuration only; how a text field is escaped is
//! `telemetry::EscapedFields`, and which format applies (flag, environment, config) is decided
//! by `main.rs`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::telemetry::EscapedFields;

/// `-v` and `-q` as counted on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verbosity {
    pub verbose: u8,
    pub quiet: u8,
}

const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// The filter directives for `verbosity` over a command's `default` level (`"info"` for the
/// daemon): `-v` raises batchdrop's own logs (libraries stay at the default), `-q` lowers
/// everything.
pub fn directives(default: &str, verbosity: Verbosity) -> String {
    let base = LEVELS.iter().position(|l| *l == default).unwrap_or(2);
    if verbosity.verbose > 0 {
        let level = LEVELS[(base + usize::from(verbosity.verbose)).min(LEVELS.len() - 1)];
        format!("{default},batchdrop={level},batchdrop_mapping={level}")
    } else {
        LEVELS[base.saturating_sub(usize::from(verbosity.quiet))].to_owned()
    }
}

/// Installs the process's subscriber: `RUST_LOG` when set, else [`directives`].
pub fn init(format: LogFormat, verbosity: Verbosity, default: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(directives(default, verbosity)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .fmt_fields(EscapedFields)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_raises_our_logs_and_quiet_lowers_all() {
        let v = |verbose, quiet| Verbosity { verbose, quiet };
        assert_eq!(directives("info", v(0, 0)), "info");
        assert_eq!(
            directives("info", v(1, 0)),
            "info,batchdrop=debug,batchdrop_mapping=debug"
        );
        assert_eq!(
            directives("info", v(5, 0)),
            "info,batchdrop=trace,batchdrop_mapping=trace"
        );
        assert_eq!(directives("info", v(0, 1)), "warn");
        assert_eq!(directives("info", v(0, 9)), "error");
        assert_eq!(
            directives("warn", v(1, 0)),
            "warn,batchdrop=info,batchdrop_mapping=info"
        );
    }
}
