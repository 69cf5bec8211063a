//! Build-time facts: rebuild when a migration changes (`sqlx::migrate!` embeds the SQL), and
//! the git commit and build date that `--version` and `batchdrop_build_info` show. Works from
//! a git checkout, a worktree, and a tarball without `.git` (commit "unknown", unless
//! `BATCHDROP_BUILD_COMMIT` is set by whoever packs it).
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=BATCHDROP_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = std::env::var("BATCHDROP_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=BATCHDROP_BUILD_COMMIT={}", commit.trim());
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    println!("cargo:rustc-env=BATCHDROP_BUILD_DATE={}", date(epoch));
}

/// HEAD's short hash, and rebuild hints for when HEAD moves. `None` outside a git checkout or
/// without git.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // Only files that exist: a missing one would make cargo run this script at every build.
    for file in [
        git(&["rev-parse", "--git-path", "HEAD"]),
        git(&["rev-parse", "--symbolic-full-name", "HEAD"])
            .and_then(|head_ref| git(&["rev-parse", "--git-path", &head_ref])),
        git(&["rev-parse", "--git-path", "packed-refs"]),
    ]
    .into_iter()
    .flatten()
    {
        if PathBuf::from(&file).exists() {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    Some(commit)
}

/// Unix seconds → `YYYY-MM-DD` (UTC), by the civil-from-days rule (no date crate at build time).
fn date(epoch: u64) -> String {
    let days = (epoch / 86400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
