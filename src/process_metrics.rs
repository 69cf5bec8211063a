//! The standard Prometheus process metrics (`process_resident_memory_bytes`,
//! `process_cpu_seconds_total`, `process_open_fds`, ...), read from `/proc/self` at each
//! scrape and written as Prometheus text after batchdrop's own.
//!
//! Rendered here rather than through the `metrics` facade: its counters only add whole
//! numbers, and CPU seconds are neither whole nor added to by us. This module reads `/proc`
//! only; a value it cannot read is left out, never guessed.

/// Every process metric: name, type and help text.
pub const PROCESS_METRICS: &[(&str, &str, &str)] = &[
    (
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent, in seconds.",
    ),
    (
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size, in bytes.",
    ),
    (
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size, in bytes.",
    ),
    ("process_open_fds", "gauge", "Open file descriptors."),
    (
        "process_max_fds",
        "gauge",
        "The limit on open file descriptors.",
    ),
    (
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
    ),
    ("process_threads", "gauge", "Threads of the process."),
];

/// The process metrics as Prometheus text (empty where `/proc` is not there).
pub fn render() -> String {
    let mut out = String::new();
    for (name, kind, help) in PROCESS_METRICS {
        if let Some(value) = value(name) {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        }
    }
    out
}

fn value(name: &str) -> Option<f64> {
    let stat = Stat::read()?;
    Some(match name {
        "process_cpu_seconds_total" => (stat.utime + stat.stime) as f64 / ticks_per_second()?,
        "process_resident_memory_bytes" => (stat.rss_pages * page_size()?) as f64,
        "process_virtual_memory_bytes" => stat.vsize as f64,
        "process_open_fds" => std::fs::read_dir("/proc/self/fd").ok()?.count() as f64,
        "process_max_fds" => max_fds()? as f64,
        "process_start_time_seconds" => {
            boot_time()? as f64 + stat.start_ticks as f64 / ticks_per_second()?
        }
        "process_threads" => stat.threads as f64,
        _ => return None,
    })
}

/// The fields of `/proc/self/stat` used here (see proc(5)).
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

impl Stat {
    fn read() -> Option<Stat> {
        Stat::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    fn parse(text: &str) -> Option<Stat> {
        // The command name (field 2) is in parentheses and may hold spaces: count from after it.
        let rest = &text[text.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        // `rest` starts at field 3 (state): field N is fields[N - 3].
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            threads: field(20)?,
            start_ticks: field(22)?,
            vsize: field(23)?,
            rss_pages: field(24)?,
        })
    }
}

fn ticks_per_second() -> Option<f64> {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then_some(ticks as f64)
}

fn page_size() -> Option<u64> {
    // SAFETY: as above.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0)
}

fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some(limit.rlim_cur)
}

/// When the machine booted (Unix seconds), from `btime` in `/proc/stat`.
fn boot_time() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_past_a_command_name_with_spaces() {
        let text = "4242 (tokio worker) x) S 1 4242 4242 0 -1 4194560 1 0 0 0 150 25 0 0 20 0 7 0 123456 987654 321 18446744073709551615";
        let stat = Stat::parse(text).unwrap();
        assert_eq!((stat.utime, stat.stime), (150, 25));
        assert_eq!(stat.threads, 7);
        assert_eq!(stat.start_ticks, 123456);
        assert_eq!(stat.vsize, 987654);
        assert_eq!(stat.rss_pages, 321);
        assert!(Stat::parse("garbage").is_none());
    }

    #[test]
    fn this_process_is_measured() {
        let text = render();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in {text}"))
                .parse()
                .unwrap()
        };
        assert!(
            value("process_resident_memory_bytes") > 1_000_000.0,
            "{text}"
        );
        assert!(value("process_open_fds") >= 3.0, "{text}");
        assert!(
            value("process_max_fds") >= value("process_open_fds"),
            "{text}"
        );
        let started = value("process_start_time_seconds");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            started <= now + 1.0 && started > now - 86400.0,
            "{started} vs {now}"
        );
        assert!(value("process_threads") >= 1.0);
        assert!(text.contains("# HELP process_cpu_seconds_total "), "{text}");
    }
}
