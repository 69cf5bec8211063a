//! `batchdrop status --watch`: the overview of `status`, refreshed every interval until
//! interrupted, with the throughput since the previous refresh. On a terminal each refresh
//! redraws the screen in place; otherwise refreshes follow each other, separated by a line.
//!
//! It reads what `status` reads and renders with it (one source of truth); it must not change
//! the state or talk to the platform.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::status::{Overview, overview, render_overview};
use super::{CommandError, open_state};
use crate::config::Config;
use crate::store::FileState;

/// Home the cursor and clear the screen below it: the next frame replaces the last.
const REDRAW: &str = "\x1b[H\x1b[J";

pub async fn run(
    config: &Config,
    dataset: Option<&str>,
    target: Option<&str>,
    interval: Duration,
) -> Result<u8, CommandError> {
    if let Some(target) = target {
        return Err(CommandError::Usage(format!(
            "status --watch shows the overview only: run `batchdrop status {target}` without --watch for its history"
        )));
    }
    let terminal = std::io::stdout().is_terminal();
    let mut state = None;
    let mut previous: Option<(Instant, i64)> = None;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        // The daemon may create its state after the first look.
        if state.is_none() {
            state = open_state(config).await?;
        }
        let view = overview(state.as_ref(), config, dataset).await?;
        let finished = finished_files(&view);
        let now = Instant::now();
        let rate = previous.map(|(at, before)| {
            (finished - before) as f64 / now.duration_since(at).as_secs_f64().max(0.001)
        });
        previous = Some((now, finished));
        let frame = format!(
            "batchdrop status, every {}; {} (Ctrl-C to stop)\nthroughput: {}\n{}\n",
            humantime::format_duration(interval),
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
            rate.map_or("measured from the next refresh".to_owned(), |r| format!(
                "{r:.1} files/s finished"
            )),
            render_overview(&view)
        );
        let mut out = std::io::stdout().lock();
        let written = if terminal {
            write!(out, "{REDRAW}{frame}")
        } else {
            writeln!(out, "{frame}---")
        };
        written
            .and_then(|()| out.flush())
            .map_err(|e| CommandError::Io(format!("cannot write the status: {e}")))?;
        drop(out);
        tokio::select! {
            _ = &mut interrupted => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    if let Some(store) = state {
        store.close().await;
    }
    Ok(0)
}

/// Files that reached an end state, over all datasets shown.
fn finished_files(view: &Overview) -> i64 {
    view.datasets
        .iter()
        .flat_map(|d| {
            [FileState::Done, FileState::Failed, FileState::Duplicate]
                .into_iter()
                .map(|s| d.files.get(s.as_str()).copied().unwrap_or(0))
        })
        .sum()
}
