//! The `state` key: where the queue lives. Absent, it is SQLite in `state_dir` (one daemon per
//! state dir, as always); a `postgres://` URL (or a `[state]` table with the password in a file
//! or an environment variable) selects fleet mode's shared PostgreSQL database (issue #22), and
//! with it the rules a fleet needs: a shared platform, polled watches.
//!
//! This module must not connect to the database nor read the password (the store does, when it
//! connects), so that a config can be checked anywhere and a password never sits in a `Config`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Endpoint, Watch, WatchMode, parse_duration};

/// Where the queue lives.
#[derive(Debug, Clone, PartialEq)]
pub enum StateBackend {
    /// SQLite in `state_dir` (the default).
    Sqlite,
    /// A PostgreSQL database shared by every instance of a fleet.
    Postgres(PostgresState),
}

/// Fleet mode's database: a URL that holds no password, and where the password is read from.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresState {
    /// `postgres://user@host:port/db?options`, never with a password in it (refused), so that it
    /// can be logged and shown by `status`.
    pub url: String,
    pub password: Option<PasswordSource>,
    /// How long an instance holds a batch or a watch's scan without renewing it; a lost
    /// instance's work is taken over after this.
    pub lease: Duration,
}

/// Where the database password is read from, at each connection (a rotated file is picked up).
/// Its `Debug` names the source, never the password.
#[derive(Debug, Clone, PartialEq)]
pub enum PasswordSource {
    File(PathBuf),
    Env(String),
}

/// The lease when `[state]` does not set one: long enough that a busy machine renews it in time
/// (heartbeats come every third of it), short enough that a lost instance's batches resume soon.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Below this, a heartbeat delayed by a loaded machine would lose leases that are not lost.
const MIN_LEASE: Duration = Duration::from_secs(2);

/// Reads the `state` value as written (`None` when absent). `resolve` makes a password file's
/// path absolute; errors are the message of a `ConfigError::Invalid`.
pub(super) fn parse(
    value: Option<&toml::Value>,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<StateBackend, String> {
    let table = match value {
        None => return Ok(StateBackend::Sqlite),
        Some(toml::Value::String(url)) => {
            return Ok(StateBackend::Postgres(PostgresState {
                url: checked_url(url)?,
                password: None,
                lease: DEFAULT_LEASE,
            }));
        }
        Some(toml::Value::Table(table)) => table,
        Some(_) => {
            return Err(
                "`state` must be a postgres:// URL, or a [state] table with `url` and optionally `password_file` or `password_env` and `lease`; leave it out to keep the state in SQLite under state_dir".into(),
            );
        }
    };
    let text = |key: &str| -> Result<Option<&str>, String> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("[state] {key} must be a string")),
        }
    };
    if let Some(unknown) = table
        .keys()
        .find(|k| !["url", "password_file", "password_env", "lease"].contains(&k.as_str()))
    {
        return Err(format!(
            "[state] has an unknown key `{unknown}`: the keys are url, password_file, password_env and lease"
        ));
    }
    let url = text("url")?
        .ok_or("[state] needs `url`, e.g. url = \"postgres://batchdrop@db.internal/batchdrop\"")?;
    let password = match (text("password_file")?, text("password_env")?) {
        (Some(file), None) => Some(PasswordSource::File(resolve(Path::new(file)))),
        (None, Some(var)) => Some(PasswordSource::Env(var.to_owned())),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err("[state] has both password_file and password_env: keep one".into());
        }
    };
    let lease = match text("lease")? {
        None => DEFAULT_LEASE,
        Some(s) => parse_duration(s)
            .filter(|d| *d >= MIN_LEASE)
            .ok_or_else(|| {
                format!(
                    "[state] lease = \"{s}\" is not a duration of at least 2s: write e.g. \"10s\""
                )
            })?,
    };
    Ok(StateBackend::Postgres(PostgresState {
        url: checked_url(url)?,
        password,
        lease,
    }))
}

/// The URL if it is a PostgreSQL URL without a password in it. The error never repeats the URL:
/// it may hold the password.
fn checked_url(url: &str) -> Result<String, String> {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return Err(
            "`state` is not a postgres:// URL: write e.g. \"postgres://batchdrop@db.internal/batchdrop\", or leave `state` out to keep the state in SQLite under state_dir".into(),
        );
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let inline = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    if inline || query.split('&').any(|kv| kv.starts_with("password=")) {
        return Err(
            "the `state` URL holds a password, which would end up in logs and in `status`: remove it from the URL and write it in a file named by [state] password_file (or an environment variable named by password_env)".into(),
        );
    }
    Ok(url.to_owned())
}

/// What fleet mode asks of the rest of the config: every instance must talk to the same
/// platform (an embedded emulator is each instance's own) and see other machines' files (no
/// inotify across machines on a shared filesystem).
pub(super) fn check_fleet(
    state: &StateBackend,
    endpoint: &Endpoint,
    watches: &[Watch],
) -> Result<(), String> {
    if !matches!(state, StateBackend::Postgres(_)) {
        return Ok(());
    }
    if matches!(endpoint, Endpoint::Embedded { .. }) {
        return Err(
            "fleet mode (`state` is a PostgreSQL database) needs a platform every instance shares: set [platform] endpoint to its URL (the embedded platform is each instance's own)".into(),
        );
    }
    if let Some(watch) = watches.iter().find(|w| w.mode != WatchMode::Poll) {
        return Err(format!(
            "[[watch]] {}: fleet mode (`state` is a PostgreSQL database) needs mode = \"poll\": inotify does not see files written by other machines on a shared filesystem (see docs/fleet.md)",
            watch.name
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> toml::Value {
        toml::from_str::<toml::Table>(text).unwrap()["state"].clone()
    }

    fn resolve(p: &Path) -> PathBuf {
        Path::new("/etc/batchdrop").join(p)
    }

    #[test]
    fn no_state_key_keeps_sqlite() {
        assert_eq!(parse(None, &resolve), Ok(StateBackend::Sqlite));
    }

    #[test]
    fn a_url_or_a_table_selects_postgres() {
        let url = value("state = \"postgres://batchdrop@db/bd\"");
        let StateBackend::Postgres(pg) = parse(Some(&url), &resolve).unwrap() else {
            panic!("not postgres")
        };
        assert_eq!(pg.url, "postgres://batchdrop@db/bd");
        assert_eq!(pg.password, None);
        assert_eq!(pg.lease, DEFAULT_LEASE);

        let table = value(
            "[state]\nurl = \"postgresql://batchdrop@db/bd\"\npassword_file = \"pg.pw\"\nlease = \"30s\"\n",
        );
        let StateBackend::Postgres(pg) = parse(Some(&table), &resolve).unwrap() else {
            panic!("not postgres")
        };
        assert_eq!(
            pg.password,
            Some(PasswordSource::File("/etc/batchdrop/pg.pw".into()))
        );
        assert_eq!(pg.lease, Duration::from_secs(30));
    }

    #[test]
    fn a_password_in_the_url_is_refused_without_repeating_it() {
        for url in [
            "postgres://batchdrop:s3cr3t@db/bd",
            "postgres://db/bd?user=batchdrop&password=s3cr3t",
        ] {
            let err = parse(Some(&toml::Value::String(url.into())), &resolve).unwrap_err();
            assert!(err.contains("password_file"), "{err}");
            assert!(!err.contains("s3cr3t"), "{err}");
        }
    }

    #[test]
    fn bad_state_values_say_what_to_write() {
        for (text, expected) in [
            ("state = \"mysql://db/bd\"", "not a postgres:// URL"),
            ("state = 3", "must be a postgres:// URL"),
            ("[state]\npassword_env = \"PW\"", "needs `url`"),
            (
                "[state]\nurl = \"postgres://db\"\nuser = \"x\"",
                "unknown key `user`",
            ),
            (
                "[state]\nurl = \"postgres://db\"\npassword_env = \"A\"\npassword_file = \"b\"",
                "keep one",
            ),
            (
                "[state]\nurl = \"postgres://db\"\nlease = \"1s\"",
                "at least 2s",
            ),
        ] {
            let err = parse(Some(&value(text)), &resolve).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
