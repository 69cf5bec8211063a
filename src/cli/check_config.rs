//! `batchdrop check-config --config FILE`: validates a config beyond what parsing checks (the
//! limits are checked by `Config::load`): the folders exist and are writable (or can be
//! created), the state dir is on a local disk, the credentials are present, no drop folder
//! lies inside another; then prints what will be watched. Exit 0 when all is well, 3 otherwise.
//!
//! This module must not change anything but create and remove a probe file in each folder,
//! and must not reach the platform.

use std::path::{Path, PathBuf};

use super::CommandError;
use crate::config::{Config, Credentials, Endpoint, PasswordSource, SecretSource, StateBackend};

pub fn run(config: &Config) -> Result<u8, CommandError> {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    check_dir("state_dir", &config.state_dir, &mut problems, &mut notes);
    if let Some(fs) =
        existing_ancestor(&config.state_dir).and_then(|p| crate::store::network_fs(&p))
    {
        problems.push(format!(
            "state_dir {} is on a network filesystem ({fs}), where SQLite's locking is unreliable: put it on a local disk",
            config.state_dir.display()
        ));
    }
    if let StateBackend::Postgres(pg) = &config.state {
        match &pg.password {
            Some(PasswordSource::File(path)) => check_secret_file(
                "[state] password_file",
                "the database password",
                path,
                &mut problems,
            ),
            Some(PasswordSource::Env(var))
                if std::env::var_os(var).is_none_or(|v| v.is_empty()) =>
            {
                problems.push(format!(
                    "[state] password_env names {var}, which is not set (or empty) in this environment: set it where the daemon runs, or use password_file"
                ));
            }
            Some(PasswordSource::Env(_)) | None => {}
        }
    }
    match &config.platform.endpoint {
        Endpoint::Embedded { data_dir } => {
            check_dir("[platform] data_dir", data_dir, &mut problems, &mut notes);
        }
        Endpoint::Url { credentials, .. } => {
            match credentials {
                Credentials::TokenFile(path) => check_secret_file(
                    "[platform] access_token_file",
                    "the bearer token",
                    path,
                    &mut problems,
                ),
                Credentials::OAuth(auth) => match &auth.secret {
                    SecretSource::File(path) => check_secret_file(
                        "[platform.auth] client_secret_file",
                        "the client secret",
                        path,
                        &mut problems,
                    ),
                    SecretSource::Env(var) => {
                        if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                            problems.push(format!(
                                "[platform.auth] client_secret_env names {var}, which is not set (or empty) in this environment: set it where the daemon runs (systemd: Environment= or EnvironmentFile=), or use client_secret_file"
                            ));
                        }
                    }
                    // Already held to the config file's mode by `Config::load`.
                    SecretSource::Inline(_) => {}
                },
            }
            for (key, v) in [
                ("org_id", &config.platform.org_id),
                ("sandbox", &config.platform.sandbox),
                ("api_key", &config.platform.api_key),
            ] {
                if v.trim().is_empty() {
                    problems.push(format!(
                        "[platform] {key} is empty: set it to your credential's value"
                    ));
                }
            }
        }
    }
    for w in &config.watches {
        check_dir(
            &format!("[[watch]] {} path", w.name),
            &w.path,
            &mut problems,
            &mut notes,
        );
        check_dir(
            &format!("[[watch]] {} archive_dir", w.name),
            &w.archive_dir,
            &mut problems,
            &mut notes,
        );
        check_dir(
            &format!("[[watch]] {} failed_dir", w.name),
            &w.failed_dir,
            &mut problems,
            &mut notes,
        );
        for other in &config.watches {
            if other.name != w.name && w.path.starts_with(&other.path) {
                problems.push(format!(
                    "[[watch]] {} is inside [[watch]] {}, whose watcher would take its files too: use folders side by side",
                    w.name, other.name
                ));
            }
        }
    }

    println!("config {}", config.path.display());
    println!("state_dir: {}", config.state_dir.display());
    if let StateBackend::Postgres(pg) = &config.state {
        println!(
            "state: fleet mode, PostgreSQL {} (lease {} s; not reached by this check)",
            pg.url,
            pg.lease.as_secs_f64()
        );
    }
    match &config.platform.endpoint {
        Endpoint::Embedded { data_dir } => {
            println!(
                "platform: embedded emulator (data in {})",
                data_dir.display()
            )
        }
        Endpoint::Url { url, credentials } => println!(
            "platform: {url} (org {}, sandbox {}, {})",
            config.platform.org_id,
            config.platform.sandbox,
            match credentials {
                Credentials::TokenFile(path) => format!("token from {}", path.display()),
                Credentials::OAuth(auth) => format!(
                    "OAuth client {} through {}, secret from {}",
                    auth.client_id,
                    auth.ims_url,
                    match &auth.secret {
                        SecretSource::File(path) => format!("file {}", path.display()),
                        SecretSource::Env(var) => format!("environment variable {var}"),
                        SecretSource::Inline(_) => "the config file".to_owned(),
                    }
                ),
            }
        ),
    }
    for w in &config.watches {
        println!(
            "watch {} -> dataset {} (format {}, mode {:?}, settle {:?}, max_files {}, max_bytes {}, max_wait {:?}, after success: {:?} to {}, failed folder {}, sidecar_timeout {:?})",
            w.path.display(),
            w.dataset,
            w.format.map(|f| f.as_str()).unwrap_or("by extension"),
            w.mode,
            w.settle,
            w.max_files,
            w.max_bytes,
            w.max_wait,
            w.after_success,
            w.archive_dir.display(),
            w.failed_dir.display(),
            w.sidecar_timeout,
        );
        if !w.patterns.is_empty() {
            println!("  files taken: {}", w.patterns);
        }
        if w.sandbox != config.platform.sandbox {
            println!("  sandbox: {} (its own, not [platform] sandbox)", w.sandbox);
        }
    }
    for n in &notes {
        println!("note: {n}");
    }
    if problems.is_empty() {
        println!("config {} is valid", config.path.display());
        return Ok(0);
    }
    Err(CommandError::ConfigProblems(format!(
        "config {} has {} problem(s):\n  {}",
        config.path.display(),
        problems.len(),
        problems.join("\n  ")
    )))
}

/// A file holding a credential must be readable and not empty; its content is never shown.
fn check_secret_file(key: &str, what: &str, path: &Path, problems: &mut Vec<String>) {
    match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => problems.push(format!(
            "{key} {} is empty: write {what} into it",
            path.display()
        )),
        Ok(_) => {}
        Err(e) => problems.push(format!(
            "{key} {} cannot be read ({e}): create it with {what}, readable by the daemon's user",
            path.display()
        )),
    }
}

/// A folder must be a writable directory, or creatable (its nearest existing ancestor is a
/// writable directory).
fn check_dir(what: &str, dir: &Path, problems: &mut Vec<String>, notes: &mut Vec<String>) {
    if dir.exists() {
        if !dir.is_dir() {
            problems.push(format!(
                "{what} {} exists but is not a folder: remove it or point the config elsewhere",
                dir.display()
            ));
        } else if let Err(e) = probe(dir) {
            problems.push(format!(
                "{what} {} is not writable ({e}): give the daemon's user write access",
                dir.display()
            ));
        }
        return;
    }
    match existing_ancestor(dir) {
        Some(a) if a.is_dir() => match probe(&a) {
            Ok(()) => notes.push(format!(
                "{what} {} does not exist yet; it will be created",
                dir.display()
            )),
            Err(e) => problems.push(format!(
                "{what} {} does not exist and cannot be created: {} is not writable ({e})",
                dir.display(),
                a.display()
            )),
        },
        Some(a) => problems.push(format!(
            "{what} {} cannot be created: {} is not a folder",
            dir.display(),
            a.display()
        )),
        None => problems.push(format!("{what} {} cannot be created", dir.display())),
    }
}

fn existing_ancestor(p: &Path) -> Option<PathBuf> {
    p.ancestors().find(|a| a.exists()).map(Path::to_path_buf)
}

/// Creates and removes a file in `dir`: the only honest test of writability (root passes any
/// permission check, a read-only mount fails it).
fn probe(dir: &Path) -> std::io::Result<()> {
    let p = dir.join(format!(".batchdrop-check-{}", std::process::id()));
    std::fs::write(&p, b"")?;
    std::fs::remove_file(&p)
}
