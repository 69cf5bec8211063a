//! `batchdrop healthcheck`: one GET of the daemon's `/healthz` (or `/readyz`), exit 0 on a 200
//! and 1 otherwise, for container images that have no curl or shell (Docker `HEALTHCHECK`,
//! Kubernetes `exec` probes).
//!
//! It finds the admin listener from `--url`, or from the config (its `admin_listen`, or the
//! address the running daemon wrote into its state dir when that is port 0). It only asks
//! (through `api::probe`, the process's one HTTP client): it never opens the state database and
//! never talks to the platform.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{CommandError, exit};
use crate::config::Config;

pub struct HealthcheckArgs {
    pub url: Option<String>,
    pub ready: bool,
    pub timeout: Duration,
    pub config: PathBuf,
}

/// Exit 0 when the endpoint answered 200, 1 when it answered otherwise or not at all (the
/// reason on stderr), 3 when the config needed to find it is bad or turns the listener off.
pub async fn run(args: &HealthcheckArgs) -> Result<u8, CommandError> {
    let path = if args.ready { "/readyz" } else { "/healthz" };
    let url = match &args.url {
        Some(url) => with_path(url, path)?,
        None => format!("http://{}{path}", admin_address(&args.config)?),
    };
    match crate::api::probe(&url, args.timeout).await {
        Ok(answer) if answer.status == 200 => {
            println!("{url}: 200 OK");
            Ok(0)
        }
        Ok(answer) => {
            eprintln!(
                "batchdrop: {url} answered {}: {}",
                answer.status,
                crate::telemetry::escape_controls(answer.body.trim())
            );
            Ok(exit::RUNTIME)
        }
        Err(e) => {
            eprintln!(
                "batchdrop: {url} did not answer: {e}; is the daemon running, with its admin listener there?"
            );
            Ok(exit::RUNTIME)
        }
    }
}

/// `url`, with `path` added when it has none.
fn with_path(url: &str, path: &str) -> Result<String, CommandError> {
    let url_path = crate::api::url_path(url).map_err(|e| {
        CommandError::Usage(format!(
            "--url {url:?} is not an http(s) URL ({e}): write e.g. http://127.0.0.1:9187"
        ))
    })?;
    Ok(if url_path == "/" {
        format!("{}{path}", url.trim_end_matches('/'))
    } else {
        url.to_owned()
    })
}

/// Where the daemon of the config at `path` serves `/healthz`.
fn admin_address(path: &std::path::Path) -> Result<SocketAddr, CommandError> {
    let config = Config::load(path)?;
    let Some(listen) = config.admin_listen else {
        return Err(CommandError::ConfigProblems(format!(
            "admin_listen is \"off\" in {}: there is no /healthz to ask; turn it on, or give --url",
            config.path.display()
        )));
    };
    if listen.port() != 0 {
        let ip = match listen.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
            ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        return Ok(SocketAddr::new(ip, listen.port()));
    }
    let file = config.state_dir.join("admin-addr");
    std::fs::read_to_string(&file)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| {
            CommandError::Platform(format!(
                "admin_listen picks a free port and the daemon's address cannot be read from {}: is the daemon running? Or give --url",
                file.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gets_the_path_it_lacks() {
        assert_eq!(
            with_path("http://127.0.0.1:9187", "/healthz").unwrap(),
            "http://127.0.0.1:9187/healthz"
        );
        assert_eq!(
            with_path("http://127.0.0.1:9187/", "/readyz").unwrap(),
            "http://127.0.0.1:9187/readyz"
        );
        assert_eq!(
            with_path("http://h:1/custom", "/healthz").unwrap(),
            "http://h:1/custom"
        );
        assert!(matches!(
            with_path("127.0.0.1:9187", "/healthz"),
            Err(CommandError::Usage(_))
        ));
    }
}
