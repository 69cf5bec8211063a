//! What this binary is: its version, the git commit it was built from and the build date, as
//! `build.rs` found them. Owns only these constants; `--version` and the
//! `batchdrop_build_info` metric read them.

/// The crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit's short hash, `BATCHDROP_BUILD_COMMIT` when set at build time, or "unknown" when
/// built outside a git checkout (a release tarball).
pub const COMMIT: &str = env!("BATCHDROP_BUILD_COMMIT");
/// The build's UTC date (`SOURCE_DATE_EPOCH` when set, for reproducible builds).
pub const BUILD_DATE: &str = env!("BATCHDROP_BUILD_DATE");
/// `--version`'s text: `0.1.0 (commit 1a2b3c4d5e6f, built 2026-12-05)`.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BATCHDROP_BUILD_COMMIT"),
    ", built ",
    env!("BATCHDROP_BUILD_DATE"),
    ")"
);
