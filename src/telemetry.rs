//! What the daemon tells operators about itself: the Prometheus metrics (names live here, so
//! the list is in one place), the health state behind `/healthz` and `/readyz`, and how fields
//! are written in text logs ([`EscapedFields`]).
//!
//! Stages record through the small functions below; they never format metrics output or serve
//! HTTP (that is `admin`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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

/// The process-wide Prometheus recorder (the `metrics` facade allows one per process; several
/// in-process daemons in tests share it).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours just stays unused.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
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
