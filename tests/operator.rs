//! What operators expect of a daemon (issue #21), with the real binary: environment variables
//! in the config, per-watch include/exclude patterns, global flags, log formats, shell
//! completions, man pages, `--version`, `healthcheck`, metric help and build info.

use crate::support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

mod metrics;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd` to its end (at most `secs`), killing it if it takes longer.
fn run_for(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("batchdrop did not exit within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_files_are_never_touched_and_get_no_receipt() {
    let env = Env::new().await;
    let config = env.write_config(
        "",
        "include = [\"*.json\", \"orders/**\"]\nexclude = [\"**/draft-*\", \"*.keep.json\"]",
    );
    let drop = env.drop_dir();
    let taken = ["a.json", "sub/b.json", "orders/2026/c.csv"];
    let left = [
        "notes.csv",
        "draft-a.json",
        "sub/draft-b.json",
        "x.keep.json",
        "orders/draft-z.csv",
    ];
    for (i, name) in taken.into_iter().enumerate() {
        let body = if name.ends_with(".csv") {
            "id,name\n1,a\n".to_owned()
        } else {
            jsonl(i * 10, 2)
        };
        write_atomic(&drop.join(name), body.as_bytes());
    }
    // Content that the platform would refuse: were one taken, it would fail with a receipt.
    for name in left {
        write_atomic(&drop.join(name), b"{not data");
    }
    let before: Vec<_> = left
        .iter()
        .map(|name| {
            let meta = std::fs::metadata(drop.join(name)).unwrap();
            (meta.ino(), meta.mtime_nsec(), meta.mode())
        })
        .collect();
    let out = run_for(
        batchdrop()
            .args(["run", "--once", "--config"])
            .arg(&config)
            .env("RUST_LOG", "batchdrop=info"),
        120,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let receipts = receipts(&drop);
    let mut named: Vec<String> = receipts
        .iter()
        .map(|r| r["file"].as_str().unwrap_or_default().to_owned())
        .collect();
    named.sort();
    assert_eq!(receipts.len(), taken.len(), "{receipts:#?}");
    for r in &receipts {
        assert_eq!(r["status"], "success", "{r}");
    }
    for (name, before) in left.iter().zip(before) {
        let path = drop.join(name);
        let meta =
            std::fs::metadata(&path).unwrap_or_else(|e| panic!("{name} was moved or deleted: {e}"));
        assert_eq!(
            (meta.ino(), meta.mtime_nsec(), meta.mode()),
            before,
            "{name} was changed"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"{not data");
        assert!(
            !named.iter().any(|n| n.ends_with(name)),
            "{name} has a receipt: {named:?}"
        );
    }
    let stderr = text(&out.stderr);
    for name in left {
        assert!(!stderr.contains(name), "{name} is in the log:\n{stderr}");
    }
}

#[test]
fn a_missing_environment_variable_is_a_config_error_naming_it_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "state_dir = \"state\"\n\n[[watch]]\npath = \"${DROP_ROOT:-drop}/in\"\ndataset = \"${BATCHDROP_TEST_DATASET}\"\ninclude = [\"*.json\"]\nexclude = [\"tmp/**\"]\n",
    )
    .unwrap();
    let out = run_for(
        batchdrop()
            .args(["check-config", "--config"])
            .arg(&config)
            .env_remove("BATCHDROP_TEST_DATASET"),
        60,
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("BATCHDROP_TEST_DATASET") && stderr.contains("line 5"),
        "{stderr}"
    );
    // Set, it is the dataset; the default fills the folder.
    std::fs::create_dir_all(dir.path().join("drop/in")).unwrap();
    let out = run_for(
        batchdrop()
            .args(["check-config", "--config"])
            .arg(&config)
            .env("BATCHDROP_TEST_DATASET", "ds-from-env"),
        60,
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("ds-from-env"),
        "{stdout}{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("files taken: include *.json; exclude tmp/**"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&dir.path().join("drop/in").display().to_string()),
        "{stdout}"
    );
}

/// Writes a config with an embedded platform and one watch below `dir`.
fn embedded_config(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("drop")).unwrap();
    ConfigFile::empty()
        .set("state_dir", "state")
        .set("admin_listen", "127.0.0.1:0")
        .watch("drop", "demo", |watch| watch)
        .write_to(&dir.join("config.toml"))
}

#[test]
fn config_is_a_global_flag_before_or_after_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded_config(dir.path());
    for args in [
        vec!["--config", config.to_str().unwrap(), "status"],
        vec!["status", "-c", config.to_str().unwrap()],
    ] {
        let out = run_for(batchdrop().args(&args), 60);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(&dir.path().join("state").display().to_string()),
            "{args:?}: {}",
            text(&out.stdout)
        );
    }
    // From the environment too; and a wrong one is a config error.
    let out = run_for(
        batchdrop()
            .arg("check-config")
            .env("BATCHDROP_CONFIG", &config),
        60,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run_for(
        batchdrop().args(["--config", "/nonexistent/batchdrop.toml", "check-config"]),
        60,
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("/nonexistent/batchdrop.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_batch_dataset_and_file_at_the_top_level() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    write_atomic(&env.drop_dir().join("a.json"), jsonl(0, 3).as_bytes());
    let out = run_for(
        batchdrop()
            .args(["run", "--once", "--config"])
            .arg(&config)
            .env("BATCHDROP_LOG_FORMAT", "json")
            .env_remove("RUST_LOG"),
        120,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stderr)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(
            line["level"].is_string() && line["message"].is_string(),
            "{line}"
        );
        assert!(line.get("fields").is_none(), "fields are flattened: {line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["batch"].is_string() && l["dataset"] == DATASET),
        "no line with batch and dataset at the top level: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l["file"] == "a.json"),
        "no line with file at the top level: {lines:#?}"
    );

    // -q: warnings and errors only; the flag wins over the environment.
    write_atomic(&env.drop_dir().join("b.json"), jsonl(10, 3).as_bytes());
    let out = run_for(
        batchdrop()
            .args(["run", "--once", "-q", "--log-format", "text", "--config"])
            .arg(&config)
            .env("BATCHDROP_LOG_FORMAT", "json")
            .env_remove("RUST_LOG"),
        120,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("INFO") && !stderr.contains('{'),
        "{stderr}"
    );
    assert_eq!(wait_receipts(&env.archive(), 2, 30).await.len(), 2);
}

#[test]
fn completions_are_generated_and_bash_loads_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_for(batchdrop().args(["completions", "bash"]), 60);
    assert!(out.status.success());
    let script = dir.path().join("batchdrop.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // Loaded by bash, registered for batchdrop, and it completes a command and a flag.
    let check = format!(
        "source {}; complete -p batchdrop; COMP_WORDS=(batchdrop heal); COMP_CWORD=1; _batchdrop batchdrop heal batchdrop; echo \"words: ${{COMPREPLY[*]}}\"; COMP_WORDS=(batchdrop run --wat); COMP_CWORD=2; _batchdrop batchdrop --wat run; echo \"flags: ${{COMPREPLY[*]}}\"",
        script.display()
    );
    let out = run_for(Command::new("bash").args(["--norc", "-c", &check]), 60);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("-F _batchdrop batchdrop"), "{stdout}");
    assert!(stdout.contains("words: healthcheck"), "{stdout}");
    assert!(stdout.contains("flags: --watch-config"), "{stdout}");
    for (shell, marker) in [
        ("zsh", "#compdef batchdrop"),
        ("fish", "complete -c batchdrop"),
    ] {
        let out = run_for(batchdrop().args(["completions", shell]), 60);
        assert!(out.status.success());
        let script = text(&out.stdout);
        assert!(
            script.contains(marker) && script.contains("healthcheck"),
            "{shell}"
        );
    }
    let out = run_for(batchdrop().args(["completions", "tcsh"]), 60);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_are_rendered_for_every_command() {
    let out = run_for(batchdrop().args(["man", "run"]), 60);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(page.contains(".TH batchdrop-run 1"), "{page}");
    assert!(
        page.contains("\\-\\-once") && page.contains("\\-\\-watch\\-config"),
        "{page}"
    );
    assert!(page.contains(env!("CARGO_PKG_VERSION")), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let out = run_for(batchdrop().args(["man", "--out"]).arg(dir.path()), 60);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for page in [
        "batchdrop.1",
        "batchdrop-run.1",
        "batchdrop-healthcheck.1",
        "batchdrop-status.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_default();
        assert!(
            text.starts_with(".ie") && text.contains(".SH NAME"),
            "{page}: {text}"
        );
    }
    let out = run_for(batchdrop().args(["man", "nosuchcommand"]), 60);
    assert_eq!(out.status.code(), Some(2));
    // Where groff is installed, the page renders without a warning.
    if Command::new("groff").arg("--version").output().is_ok() {
        let out = run_for(
            Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-z"])
                .arg(dir.path().join("batchdrop-run.1")),
            60,
        );
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let out = run_for(batchdrop().arg("--version"), 60);
    let line = text(&out.stdout);
    assert!(out.status.success());
    assert!(
        line.starts_with(&format!("batchdrop {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    let date = line
        .split(", built ")
        .nth(1)
        .and_then(|rest| rest.get(..10))
        .and_then(|date| chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok());
    assert!(date.is_some(), "no build date: {line}");
    // In a git checkout, the commit is HEAD's (rebuilt when HEAD moves).
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Some(head) = head.ok().filter(|h| h.status.success()) {
        let head = text(&head.stdout);
        assert!(line.contains(head.trim()), "{line} vs HEAD {head}");
    }
}

/// A server on 127.0.0.1 answering every request with `status`; its address.
async fn answering(status: &'static str) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let body = "not ready: testing\n";
            let _ = conn
                .write_all(
                    format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded_config(dir.path());
    let healthcheck = |args: &[&str]| {
        let mut cmd = batchdrop();
        cmd.arg("healthcheck")
            .args(args)
            .arg("--config")
            .arg(&config);
        let out = run_for(&mut cmd, 60);
        (out.status.code(), text(&out.stderr))
    };
    // Nobody listens on a port just freed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, stderr) = healthcheck(&["--url", &format!("http://{closed}")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("did not answer"), "{stderr}");
    let unready = answering("503 Service Unavailable").await;
    let (code, stderr) = healthcheck(&["--ready", "--url", &format!("http://{unready}")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("503") && stderr.contains("not ready: testing"),
        "{stderr}"
    );
    let ok = answering("200 OK").await;
    assert_eq!(healthcheck(&["--url", &format!("http://{ok}/")]).0, Some(0));
    assert_eq!(healthcheck(&["--url", "not a url"]).0, Some(2));
    // Before the daemon ran, its address is unknown.
    assert_eq!(healthcheck(&[]).0, Some(1));

    // The daemon itself, found through the config (admin_listen on port 0: its state dir).
    let daemon = spawn_daemon(&config, &[], &[]);
    let answered = eventually(60, "healthcheck --ready passes", || {
        let result = healthcheck(&["--ready"]);
        async move { (result.0 == Some(0)).then_some(result) }
    })
    .await;
    assert_eq!(answered.0, Some(0));
    assert_eq!(healthcheck(&[]).0, Some(0));
    stop_daemon(daemon);

    std::fs::write(&config, "[[watch]]\npath = 1\n").unwrap();
    assert_eq!(healthcheck(&[]).0, Some(3));
}

/// Notifications received on a systemd-style notify socket, in order.
struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        NotifySocket { socket, path }
    }

    /// The next notification containing `needle` (others are skipped), within 60 s.
    fn wait_for(&self, needle: &str) -> String {
        let mut buf = [0u8; 512];
        loop {
            let n = self
                .socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {needle} within 60 s: {e}"));
            let message = text(&buf[..n]);
            if message.contains(needle) {
                return message;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_on_change_and_a_bad_file_keeps_the_old_config() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    let notify = NotifySocket::bind(env.dir.path());
    let log = env.dir.path().join("daemon.log");
    let daemon = batchdrop()
        .args(["run", "--watch-config", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("RUST_LOG", "batchdrop=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    notify.wait_for("READY=1");
    let good = std::fs::read_to_string(&config).unwrap();

    // A bad file, written as editors do (a new file renamed over the old one): rejected, and
    // the running config stays in force. systemd hears RELOADING=1 (with the clock), READY=1.
    write_atomic(&config, b"this is = = not toml");
    let reloading = notify.wait_for("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    notify.wait_for("READY=1");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("the config file changed") && logged.contains("config reload rejected"),
        "{logged}"
    );
    write_atomic(&env.drop_dir().join("first.json"), jsonl(0, 5).as_bytes());
    wait_receipts(&env.archive(), 1, 60).await;

    // A good one, written in place: the watch moves to drop2.
    let other = env.dir.path().join("drop2");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(&config, good.replace("path = \"drop\"", "path = \"drop2\"")).unwrap();
    notify.wait_for("RELOADING=1");
    notify.wait_for("READY=1");
    write_atomic(&other.join("new.json"), jsonl(100, 5).as_bytes());
    let got = wait_receipts(&other.join("_archive"), 1, 60).await;
    assert_eq!(got[0]["status"], "success");
    stop_daemon(daemon);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        logged.matches("the config file changed").count(),
        2,
        "one reload per change, none for reads or the log beside it:\n{logged}"
    );
}

/// A pseudo-terminal: (master, slave).
fn pty() -> (std::fs::File, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors, which we then own.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and nothing else owns them.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_redraws_in_place_on_a_terminal() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    let daemon = spawn_daemon(&config, &[], &[]);
    let (master, slave) = pty();
    let mut watch = batchdrop()
        .args(["status", "--watch=200ms", "--config"])
        .arg(&config)
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let screen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let screen = screen.clone();
        let mut master = master;
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            // Ends with EIO once the last writer (the child) is gone.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let shown = || text(&screen.lock().unwrap());
    eventually(60, "two frames", || {
        let frames = shown().matches("\x1b[H\x1b[J").count();
        async move { (frames >= 2).then_some(()) }
    })
    .await;
    write_atomic(&env.drop_dir().join("live.json"), jsonl(0, 4).as_bytes());
    // Only a frame that another one follows is known whole: the last may still be arriving.
    let done_frame = eventually(60, "a whole frame showing the file done", || {
        let screen = shown();
        let mut frames: Vec<&str> = screen.split("\x1b[H\x1b[J").collect();
        frames.pop();
        let done = frames
            .into_iter()
            .rev()
            .find(|frame| frame.contains(DATASET) && frame.contains("1 done"))
            .map(str::to_owned);
        async move { done }
    })
    .await;
    assert!(done_frame.contains("throughput:"), "{done_frame}");
    assert!(done_frame.contains("daemon running"), "{done_frame}");
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(watch.id() as i32, libc::SIGINT) };
    let status = watch.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", shown());
    stop_daemon(daemon);
    drop(reader);
}

#[test]
fn the_emulator_logs_json_and_takes_its_config_only_from_the_command_line() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    // BATCHDROP_CONFIG names the daemon's config: the emulator must not read it as its own.
    let mut emulator = batchdrop()
        .args([
            "--log-format",
            "json",
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("platform"))
        .env("BATCHDROP_CONFIG", "/nonexistent/daemon.toml")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(emulator.stderr.take().unwrap()).lines();
    let first = lines.next().expect("a log line").unwrap();
    let _ = emulator.kill();
    emulator.wait().unwrap();
    let line: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert_eq!(line["message"], "emulator started", "{line}");
    assert!(
        line["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{line}"
    );
    // Given on the command line, --config is the emulator's file (here: one that is not there).
    let out = run_for(
        batchdrop()
            .args([
                "emulator",
                "--listen",
                "127.0.0.1:0",
                "--config",
                "/nonexistent/emu.toml",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("platform")),
        60,
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("/nonexistent/emu.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_control_characters_reach_the_terminal_escaped() {
    // A producer chose this name: a newline that would fake a line of output, a terminal
    // title escape and a clear-screen. The text output shows it escaped; JSON keeps it.
    let env = Env::new().await;
    let config = env.write_config("", "");
    let name = "evil\n\u{1b}]0;owned\u{7}\u{1b}[2J.json";
    let escaped = r"evil\n\u{1b}]0;owned\u{7}\u{1b}[2J.json";
    write_atomic(&env.drop_dir().join(name), jsonl(0, 1).as_bytes());
    let only_newlines = |out: &str| !out.chars().any(|c| c.is_control() && c != '\n');

    let out = run_for(
        batchdrop()
            .args(["run", "--once", "--dry-run", "--config"])
            .arg(&config),
        120,
    );
    let plan = text(&out.stdout);
    assert!(only_newlines(&plan), "{plan:?}");
    assert!(plan.contains(&format!("refused {escaped}: ")), "{plan}");

    run_for(
        batchdrop().args(["run", "--once", "--config"]).arg(&config),
        120,
    );
    assert!(
        env.failed().join(name).exists(),
        "the file went to the failed folder"
    );

    let out = run_for(batchdrop().args(["status", "--config"]).arg(&config), 60);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = text(&out.stdout);
    assert!(only_newlines(&status), "{status:?}");
    let line = status
        .lines()
        .find(|l| l.contains("evil"))
        .unwrap_or_else(|| panic!("no failure line: {status}"));
    assert!(line.contains(escaped), "{line}");

    let out = run_for(
        batchdrop()
            .args(["status", "--config"])
            .arg(&config)
            .arg(name),
        60,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let history = text(&out.stdout);
    assert!(only_newlines(&history), "{history:?}");
    assert!(
        history.starts_with(&format!("file {escaped}: 1 record(s)")),
        "{history}"
    );

    let out = run_for(
        batchdrop()
            .args(["status", "--json", "--config"])
            .arg(&config),
        60,
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["recent_failures"][0]["file"], name, "{json:#}");

    // `validate` names the file and quotes the data's values: both escaped.
    let schema = env.dir.path().join("schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"id": {"type": "integer"}}}"#,
    )
    .unwrap();
    let bad = env.dir.path().join(name);
    std::fs::write(&bad, "{\"id\": \"x\\u001b]0;owned\\u0007\"}\n").unwrap();
    let out = run_for(
        batchdrop()
            .args(["validate", "--schema"])
            .arg(&schema)
            .arg(&bad),
        60,
    );
    let verdict = text(&out.stdout);
    assert!(only_newlines(&verdict), "{verdict:?}");
    assert!(
        verdict.contains(&format!("{escaped}: row 1 field /id INGEST-1542-400")),
        "{verdict}"
    );

    // `retry` names the file it moves back.
    let out = run_for(
        batchdrop()
            .args(["retry", "--config"])
            .arg(&config)
            .arg(name),
        60,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let requeued = text(&out.stdout);
    assert!(only_newlines(&requeued), "{requeued:?}");
    assert!(
        requeued.starts_with(&format!("requeued {escaped} → ")),
        "{requeued}"
    );
}

#[test]
fn validate_reads_a_pipe_once_from_its_start() {
    // `batchdrop validate <(zcat rows.json.gz)`: the rows come through a pipe, which cannot
    // be read twice. The first row is the bad one, so losing the pipe's first bytes would
    // hide it.
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"id": {"type": "integer"}}}"#,
    )
    .unwrap();
    let mut rows = String::from("{\"id\": \"bad-first\"}\n");
    for id in 1..=300 {
        rows += &format!("{{\"id\": {id}, \"pad\": \"{}\"}}\n", "x".repeat(24));
    }
    let mut child = batchdrop()
        .args(["validate", "--format", "json", "--schema"])
        .arg(&schema)
        .arg("/dev/stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(rows.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let verdict = text(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{verdict}{}", text(&out.stderr));
    assert!(
        verdict.contains("/dev/stdin: 1 of 301 records would be refused"),
        "{verdict}"
    );
    assert!(
        verdict.contains("/dev/stdin: row 1 field /id INGEST-1542-400"),
        "{verdict}"
    );
}
