//! The `.replay` sidecar parser, on any text a producer can drop.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sidecar) = batchdrop::replay::parse("a.json.replay", "a.json", text) {
        // Empty means "the earlier ingestion of a.json", only for an empty sidecar.
        assert!(sidecar.replaces.is_empty() == text.trim().is_empty());
        assert!(
            sidecar
                .replaces
                .iter()
                .all(|r| !r.is_empty() && r.trim() == r)
        );
        assert!(sidecar.reason.is_none_or(|r| !r.is_empty()));
    }
});
