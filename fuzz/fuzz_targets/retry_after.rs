//! The API client's `Retry-After` parser (the one header of a platform response it parses).
#![no_main]

use std::time::{Duration, SystemTime};

use batchdrop::api::{MAX_RETRY_AFTER, parse_retry_after};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A fixed "now" (2026-01-01), so that a crash replays the same.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    if let Some(wait) = parse_retry_after(text, now) {
        assert!(wait <= MAX_RETRY_AFTER, "{text:?} waits {wait:?}");
    }
});
