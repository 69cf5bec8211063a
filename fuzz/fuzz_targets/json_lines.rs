//! The emulator's JSON Lines reader, with and without a schema, on any uploaded file.
#![no_main]

use batchdrop_emulator::fuzzing::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| batchdrop_fuzz::read(data, |_| Format::JsonLines));
