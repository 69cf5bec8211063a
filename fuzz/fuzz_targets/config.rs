//! The config file parser, from text (no file is read: the path does not exist).
#![no_main]

use std::path::Path;

use batchdrop::config::{Config, MAX_DURATION, PLATFORM_MAX_BYTES, PLATFORM_MAX_FILES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text, Path::new("/nonexistent-fuzz/config.toml")) else {
        return;
    };
    // What the rest of the daemon relies on once a config parsed.
    assert!(!config.watches.is_empty());
    assert!(config.shutdown_grace <= MAX_DURATION && config.probe_interval <= MAX_DURATION);
    for watch in &config.watches {
        assert!((1..=PLATFORM_MAX_FILES).contains(&watch.max_files));
        assert!((1..=PLATFORM_MAX_BYTES).contains(&watch.max_bytes));
        assert!(watch.path.is_absolute());
        for d in [
            watch.settle,
            watch.max_wait,
            watch.rescan_interval,
            watch.sidecar_timeout,
        ] {
            assert!(d <= MAX_DURATION);
        }
    }
    assert!(config.limits.max_queued_files <= i64::MAX as u64);
    assert!(config.limits.max_inflight_bytes <= i64::MAX as u64);
});
