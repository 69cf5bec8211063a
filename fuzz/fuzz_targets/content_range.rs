//! The emulator's `Content-Range` parser and file-path check, on any header text.
#![no_main]

use batchdrop_emulator::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Header values reach the parsers only as text (the emulator refuses others first).
    if let Ok(text) = std::str::from_utf8(data) {
        fuzzing::content_range(text);
        fuzzing::file_path(text);
    }
});
