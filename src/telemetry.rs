//! What the daemon tells operators about itself: the Prometheus metrics (names live here, so
//! the list is in one place), the health state behind `/healthz` and `/readyz` (with the
//! watches still recording a start-up backlog, which the batcher leaves alone: [`BacklogScan`]),
//! and how fields are written in text logs ([`EscapedFields`]).
//!
//! Stages record through the small functions below; they never format metrics output or serve
//! HTTP (that is `admin`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const FILES_DISCOVERED: &str = "batchdrop_files_discovered_total";
pub const FILES_INGESTED: &str = "batchdrop_files_ingested_total";
pub const FILES_FAILED: &str = "batchdrop_files_failed_total";
pub const FILES_DUPLICATE: &str = "batchdrop_files_duplicate_total";
pub const BYTES_UPLOADED: &str = "batchdrop_bytes_uploaded_total";
pub const BATCHES: &str = "batchdrop_batches_total";
pub const RETRIES: &str = "batchdrop_retries_total";
pub const QUEUE_DEPTH: &str = "batchdrop_queue_files";
pub const OLDEST_PENDING: &str = "batchdrop_oldest_pending_seconds";
pub const UPLOAD_SECONDS: &str = "batchdrop_upload_seconds_total";
pub const RESCANS: &str = "batchdrop_watcher_rescans_total";
pub const OVERFLOWS: &str = "batchdrop_watcher_overflows_total";
pub const INTAKE_PAUSED: &str = "batchdrop_intake_paused";
pub const PLATFORM_UP: &str = "batchdrop_platform_reachable";
pub const BUILD_INFO: &str = "batchdrop_build_info";
pub const INSTANCE_INFO: &str = "batchdrop_instance_info";
pub const RECORDS_INGESTED: &str = "batchdrop_records_ingested_total";
pub const RECORDS_FAILED: &str = "batchdrop_records_failed_total";
pub const FILE_LATENCY: &str = "batchdrop_file_latency_seconds";
pub const UPLOAD_DURATION: &str = "batchdrop_upload_duration_seconds";
pub const PROCESSING_DURATION: &str = "batchdrop_batch_processing_seconds";
pub const BATCHES_STUCK: &str = "batchdrop_batches_stuck";

/// Every metric with its kind and the `# HELP` text Prometheus shows for it.
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        FILES_DISCOVERED,
        Kind::Counter,
        "Files found ready in a drop folder and recorded, by dataset and watch.",
    ),
    (
        FILES_INGESTED,
        Kind::Counter,
        "Files whose batch succeeded, by dataset and watch.",
    ),
    (
        FILES_FAILED,
        Kind::Counter,
        "Files that ended failed (receipt in the failed folder), by dataset and watch.",
    ),
    (
        FILES_DUPLICATE,
        Kind::Counter,
        "Files not ingested because the same content already was, by dataset and watch.",
    ),
    (
        BYTES_UPLOADED,
        Kind::Counter,
        "Bytes the platform acknowledged, by dataset and watch.",
    ),
    (
        BATCHES,
        Kind::Counter,
        "Batches that ended, by outcome (success, failed, abandoned...) and watch.",
    ),
    (
        RETRIES,
        Kind::Counter,
        "Platform calls retried after a transient failure, by cause and watch.",
    ),
    (
        QUEUE_DEPTH,
        Kind::Gauge,
        "Files in the state database, by dataset and state.",
    ),
    (
        BATCHES_STUCK,
        Kind::Gauge,
        "Batches stalled on the platform or processing past max_processing_age, waiting for `batchdrop abort` (or give_up_after).",
    ),
    (
        OLDEST_PENDING,
        Kind::Gauge,
        "Age in seconds of the oldest file found but not finished (0 when none).",
    ),
    (
        UPLOAD_SECONDS,
        Kind::Counter,
        "Seconds spent uploading files, by dataset and watch.",
    ),
    (RESCANS, Kind::Counter, "Full scans of drop folders."),
    (
        OVERFLOWS,
        Kind::Counter,
        "inotify event queue overflows (each causes a rescan).",
    ),
    (
        INTAKE_PAUSED,
        Kind::Gauge,
        "1 while intake is paused at a [limits] cap, else 0.",
    ),
    (
        PLATFORM_UP,
        Kind::Gauge,
        "1 when the last call to the platform succeeded, 0 when it failed.",
    ),
    (
        BUILD_INFO,
        Kind::Gauge,
        "Always 1; its labels name the version and git commit running.",
    ),
    (
        INSTANCE_INFO,
        Kind::Gauge,
        "Fleet mode: always 1; its labels name this instance in the fleet (id) and its host.",
    ),
    (
        RECORDS_INGESTED,
        Kind::Counter,
        "Records the platform ingested from successful batches, by dataset and watch.",
    ),
    (
        RECORDS_FAILED,
        Kind::Counter,
        "Records the platform refused in its batches (failed, or left out of a partial ingestion), by dataset and watch.",
    ),
    (
        FILE_LATENCY,
        Kind::Histogram(&[
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
            86400.0,
        ]),
        "Seconds from a file being found ready to its batch's success, by dataset and watch.",
    ),
    (
        UPLOAD_DURATION,
        Kind::Histogram(&[
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
        ]),
        "Seconds to upload one file, by dataset and watch.",
    ),
    (
        PROCESSING_DURATION,
        Kind::Histogram(&[
            0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
        ]),
        "Seconds the platform took to process a completed batch, by outcome.",
    ),
];

/// What kind of metric a name is (for its `# HELP` line, and a histogram's buckets).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram(&'static [f64]),
}

/// The process-wide Prometheus recorder (the `metrics` facade allows one per process; several
/// in-process daemons in tests share it).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for &(name, kind, _) in METRICS {
            if let Kind::Histogram(buckets) = kind {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                    .expect("every histogram of METRICS has buckets");
            }
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours just stays unused.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        metrics::gauge!(
            BUILD_INFO,
            "version" => crate::build_info::VERSION,
            "commit" => crate::build_info::COMMIT
        )
        .set(1.0);
        handle
    })
}

/// Gives every metric its help text (the recorder prints it as `# HELP`).
fn describe() {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram(_) => metrics::describe_histogram!(name, help),
        }
    }
}

/// A file's batch succeeded: how long since it was found.
pub fn file_succeeded(file: &crate::store::FileRow) {
    let waited = (crate::store::now_ms() - file.discovered_at).max(0) as f64 / 1000.0;
    metrics::histogram!(FILE_LATENCY, "dataset" => file.dataset.clone(), "watch" => file.watch.clone())
        .record(waited);
}

/// The platform ended a completed batch (`verdict`, with its counts): how long it processed it
/// (since the batch was last updated, when it was completed) and the records in and refused.
pub fn batch_ended(
    batch: &crate::store::BatchRow,
    verdict: crate::store::Verdict,
    counts: &crate::api::BatchMetrics,
) {
    let processing = (crate::store::now_ms() - batch.updated_at).max(0) as f64 / 1000.0;
    metrics::histogram!(PROCESSING_DURATION, "outcome" => verdict.state().as_str(), "watch" => batch.watch.clone())
        .record(processing);
    if verdict == crate::store::Verdict::Success {
        metrics::counter!(RECORDS_INGESTED, "dataset" => batch.dataset.clone(), "watch" => batch.watch.clone())
            .increment(counts.output_record_count.unwrap_or(0));
    }
    metrics::counter!(RECORDS_FAILED, "dataset" => batch.dataset.clone(), "watch" => batch.watch.clone())
        .increment(counts.failed_record_count.unwrap_or(0));
}

/// Liveness and readiness facts, updated by the stages and read by `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    /// Every watcher finished its first scan and runs.
    pub watchers_up: AtomicBool,
    /// Last time (unix ms) a call to the platform succeeded, and failed for a transient reason.
    pub platform_ok_at: AtomicI64,
    pub platform_err_at: AtomicI64,
    /// Intake paused because `max_queued_files` was reached.
    pub intake_paused: AtomicBool,
    /// Sealing paused because `max_inflight_bytes` was reached.
    pub batching_paused: AtomicBool,
    /// Watches whose first scan is running (see [`BacklogScan`]).
    backlog_scans: Mutex<HashSet<String>>,
}

impl Health {
    pub fn platform_result(&self, ok: bool) {
        let now = crate::store::now_ms();
        if ok {
            self.platform_ok_at.store(now, Ordering::SeqCst);
        } else {
            self.platform_err_at.store(now, Ordering::SeqCst);
        }
        metrics::gauge!(PLATFORM_UP).set(if ok { 1.0 } else { 0.0 });
    }

    pub fn paused(&self) -> bool {
        self.intake_paused.load(Ordering::SeqCst) || self.batching_paused.load(Ordering::SeqCst)
    }

    /// Whether the first scan of `watch` is running: the batcher seals none of its files
    /// meanwhile (see [`BacklogScan`]).
    pub fn scanning_backlog(&self, watch: &str) -> bool {
        self.backlog_scans.lock().unwrap().contains(watch)
    }

    /// Whether the platform answered last time it was asked.
    pub fn platform_reachable(&self) -> bool {
        self.platform_ok_at.load(Ordering::SeqCst) > self.platform_err_at.load(Ordering::SeqCst)
    }
}

/// The text log format's field formatter: tracing-subscriber's own, with every control
/// character escaped (`\n` as `\\n`, others as `\\u{..}`). Producers name the files, and a name
/// holding a newline must not start a log line of its own. JSON logs are escaped by JSON.
pub struct EscapedFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut plain = String::new();
        tracing_subscriber::fmt::format::DefaultFields::new().format_fields(
            tracing_subscriber::fmt::format::Writer::new(&mut plain),
            fields,
        )?;
        writer.write_str(&escape_controls(&plain))
    }
}

/// `text` with control characters (and the Unicode line and paragraph separators) escaped.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let special = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !text.contains(special) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if special(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.into()
}

/// A watch's first scan, while it runs: files present at start-up (a backlog, possibly of
/// millions) are all recorded before any of them is sealed. The state database has one
/// connection; sealing, hashing, uploading and archiving the first files found would share it
/// with the scan and slow it down, for no gain: a backlog's uploads take far longer than
/// its scan. A scan stopped early (the queue at its cap, files
/// still being written) ends this too, so the queue always drains. Dropping it (the scan
/// ended, failed or was cancelled) wakes the batcher.
pub struct BacklogScan {
    health: Arc<Health>,
    watch: String,
    wake_batcher: Arc<tokio::sync::Notify>,
}

impl BacklogScan {
    pub fn start(
        health: &Arc<Health>,
        watch: &str,
        wake_batcher: &Arc<tokio::sync::Notify>,
    ) -> BacklogScan {
        health
            .backlog_scans
            .lock()
            .unwrap()
            .insert(watch.to_owned());
        BacklogScan {
            health: health.clone(),
            watch: watch.to_owned(),
            wake_batcher: wake_batcher.clone(),
        }
    }
}

impl Drop for BacklogScan {
    fn drop(&mut self) {
        self.health
            .backlog_scans
            .lock()
            .unwrap()
            .remove(&self.watch);
        self.wake_batcher.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("a.json"), "a.json");
        assert_eq!(
            escape_controls("a\nFAKE\r\t\u{1b}[31m\u{7f}\u{85}\u{2028}é"),
            "a\\nFAKE\\r\\t\\u{1b}[31m\\u{7f}\\u{85}\\u{2028}é"
        );
    }

    #[test]
    fn a_text_log_line_stays_one_line_whatever_its_fields_hold() {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .fmt_fields(EscapedFields)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let name = "a\nFAKE LOG LINE.json";
            let span = tracing::info_span!("watch", folder = %"in\nFAKE span");
            let _entered = span.enter();
            tracing::info!(file = %name, "ready: {name}");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("file=a\\nFAKE LOG LINE.json"), "{text}");
        assert!(text.contains("ready: a\\nFAKE"), "{text}");
        assert!(text.contains("folder=in\\nFAKE span"), "{text}");
    }
}
