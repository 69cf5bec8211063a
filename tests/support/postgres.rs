//! A throwaway PostgreSQL 15 cluster for the fleet tests: `initdb` into a temp dir (as the
//! `postgres` user when the tests run as root, since initdb refuses root), listening on a Unix
//! socket in that dir only (no port to collide with a neighbour), password authentication
//! (scram) so that the password file path of `[state]` is exercised, and `pg_ctl stop -m
//! immediate` on drop. Needs nothing set up beforehand: the same in CI from a fresh clone.
//!
//! The library's store tests include this file too (`src/store/testing.rs`), to run on one
//! cluster shared by their test binary, which never drops it: [`Postgres::stop_with_this_process`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use batchdrop::config::{PasswordSource, PostgresState};

const BIN: &str = "/usr/lib/postgresql/15/bin";
const PASSWORD: &str = "fleet-test-pw";

pub struct Postgres {
    dir: tempfile::TempDir,
    as_postgres_user: bool,
}

impl Postgres {
    pub fn start() -> Postgres {
        assert!(
            Path::new(BIN).join("initdb").exists(),
            "the fleet tests need PostgreSQL 15 in {BIN} (Debian: apt-get install postgresql-15)"
        );
        let dir = tempfile::tempdir().unwrap();
        let as_postgres_user = {
            use std::os::unix::fs::MetadataExt;
            dir.path().metadata().unwrap().uid() == 0
        };
        if as_postgres_user {
            let uid = user_id("postgres");
            std::os::unix::fs::chown(dir.path(), Some(uid), None).unwrap();
        }
        let cluster = Postgres {
            dir,
            as_postgres_user,
        };
        let pwfile = cluster.dir.path().join("initdb.pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if as_postgres_user {
            std::os::unix::fs::chown(&pwfile, Some(user_id("postgres")), None).unwrap();
        }
        std::fs::write(cluster.password_file(), format!("{PASSWORD}\n")).unwrap();
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data().display().to_string(),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        cluster.start_server();
        cluster
    }

    /// The database as fleet mode's config names it (the password in a file).
    pub fn state(&self, lease: Duration) -> PostgresState {
        PostgresState {
            url: self.url(),
            password: Some(PasswordSource::File(self.password_file())),
            lease,
        }
    }

    /// The same, for `database` of the cluster (which the caller created).
    pub fn database_state(&self, database: &str, lease: Duration) -> PostgresState {
        PostgresState {
            url: self.database_url(database),
            ..self.state(lease)
        }
    }

    /// Instance `i` of a fleet on this cluster, as a config file beside `shared` (a config of a
    /// single daemon): the same drop folders and platform, the database in `state` with the
    /// password in its file, and a state dir (admin address) of its own, `state-{i}`.
    pub fn instance_config(&self, shared: &Path, i: usize, lease: Duration) -> PathBuf {
        let text = std::fs::read_to_string(shared).unwrap().replace(
            "state_dir = \"state\"",
            &format!("state_dir = \"state-{i}\""),
        );
        let state = format!(
            "state = {{ url = \"{}\", password_file = \"{}\", lease = \"{}ms\" }}\n",
            self.url(),
            self.password_file().display(),
            lease.as_millis()
        );
        let path = shared.with_file_name(format!("config-{i}.toml"));
        std::fs::write(&path, format!("{state}{text}")).unwrap();
        path
    }

    /// The URL, without its password.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of `database` of the cluster, without its password.
    pub fn database_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost/{database}?host={}",
            self.dir.path().display()
        )
    }

    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("client.pw")
    }

    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// Stops the server at once, as a crash would.
    pub fn stop_server(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "stop",
            ],
        );
    }

    pub fn start_server(&self) {
        let socket_dir = self.dir.path().display().to_string();
        let options = format!("-k {socket_dir} -c listen_addresses='' -c fsync=off");
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// For a cluster that is never dropped (a `static` shared by the tests of one binary): a
    /// watchdog that stops the cluster and deletes its directory when this process ends, however
    /// it ends. It waits for the end of its stdin, whose other end only the returned `Child`
    /// holds (Rust opens pipes close-on-exec, so no other child inherits it): keep it as long
    /// as the cluster.
    pub fn stop_with_this_process(&self) -> Child {
        let pg_ctl = Path::new(BIN).join("pg_ctl");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"cat > /dev/null; dir="$1"; shift; "$@"; rm -rf "$dir""#)
            .arg("watchdog")
            .arg(self.dir.path());
        if self.as_postgres_user {
            cmd.args(["runuser", "-u", "postgres", "--"]);
        }
        cmd.arg(pg_ctl)
            .args([
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "stop",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the cluster's watchdog")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let bin = Path::new(BIN).join(tool);
        let mut cmd = if self.as_postgres_user {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(bin);
            cmd
        } else {
            Command::new(bin)
        };
        let out = cmd.args(args).output().expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let pid_file = self.data().join("postmaster.pid");
        if pid_file.exists() {
            let bin = Path::new(BIN).join("pg_ctl");
            let data = self.data().display().to_string();
            let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
            let _ = if self.as_postgres_user {
                Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(bin)
                    .args(args)
                    .output()
            } else {
                Command::new(bin).args(args).output()
            };
        }
    }
}

/// The uid of `name`, from /etc/passwd.
fn user_id(name: &str) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(name))
                .then(|| fields.nth(1).and_then(|uid| uid.parse().ok()))
                .flatten()
        })
        .unwrap_or_else(|| panic!("no user {name} to run initdb as (it refuses root)"))
}
