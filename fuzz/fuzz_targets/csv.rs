//! The emulator's CSV reader, in several dialects, with and without a schema, on any uploaded
//! file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| batchdrop_fuzz::read(data, batchdrop_fuzz::csv));
