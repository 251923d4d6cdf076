//! `microvisor-redfish`: the manager slice's Redfish service (docs/redfish.md). Started by
//! the built-in guest's `/init` on the manager; prints one `REDFISH ready ...` line with the
//! URL(s) and the credentials, then serves until killed.
//!
//! ```text
//! microvisor-redfish [--https ADDR] [--http ADDR] [--user NAME] [--password-file FILE]
//!                    [--password-sha256 HEX] [--media-host HOST]... [--shutdown-timeout SECS]
//!                    [--tls-cert PEM --tls-key PEM]
//! ```
//! `--https` defaults to `0.0.0.0:443`; `--http` (plain HTTP) is off unless given; `--https
//! off` turns HTTPS off. HTTPS uses the certificate chain and key of `--tls-cert` and
//! `--tls-key` (the plan's, put into the manager's initramfs by xtask), else a self-signed
//! certificate generated at start. Without `--password-file` or `--password-sha256` (the password's
//! SHA-256, so the password itself is written nowhere) a password is generated and shown once.
//! `--media-host` adds hosts virtual media may be fetched from (an address, `ADDRESS/PREFIX`
//! or a name; none by default: every `InsertMedia` is refused until one is given).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use microvisor_control::{Client, DevMemTransport};
use microvisor_redfish::auth::random_password;
use microvisor_redfish::fetch::{AllowList, FetchOptions, fetch_boot_media};
use microvisor_redfish::iso::Limits;
use microvisor_redfish::server::{self, Fetcher, Shared};
use microvisor_redfish::service::{Config, Service};

struct Options {
    https: Option<SocketAddr>,
    http: Option<SocketAddr>,
    user: String,
    password_file: Option<String>,
    password_sha256: Option<String>,
    media_hosts: Vec<String>,
    shutdown_timeout: Duration,
    /// PEM files: the certificate chain and its key.
    tls: Option<(String, String)>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        https: Some(SocketAddr::from(([0, 0, 0, 0], 443))),
        http: None,
        user: "admin".into(),
        password_file: None,
        password_sha256: None,
        media_hosts: Vec::new(),
        shutdown_timeout: Duration::from_secs(300),
        tls: None,
    };
    let (mut cert, mut key) = (None, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        let address = |text: String| {
            text.parse::<SocketAddr>()
                .map_err(|_| format!("{arg}: {text:?} is not ADDRESS:PORT"))
        };
        match arg.as_str() {
            "--https" => {
                let text = value()?;
                options.https = if text == "off" {
                    None
                } else {
                    Some(address(text)?)
                };
            }
            "--http" => options.http = Some(address(value()?)?),
            "--user" => options.user = value()?,
            "--password-file" => options.password_file = Some(value()?),
            "--password-sha256" => {
                let text = value()?;
                if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("--password-sha256 {text:?}: 64 hex digits"));
                }
                options.password_sha256 = Some(text);
            }
            "--media-host" => options.media_hosts.push(value()?),
            "--tls-cert" => cert = Some(value()?),
            "--tls-key" => key = Some(value()?),
            "--shutdown-timeout" => {
                let text = value()?;
                let secs: u64 = text
                    .parse()
                    .ok()
                    .filter(|s| (1..=3600).contains(s))
                    .ok_or_else(|| format!("--shutdown-timeout {text:?}: 1 to 3600 seconds"))?;
                options.shutdown_timeout = Duration::from_secs(secs);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.https.is_none() && options.http.is_none() {
        return Err("neither --https nor --http: nothing to serve".into());
    }
    options.tls = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    Ok(options)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("REDFISH failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let options = parse(args)?;
    let password = match (&options.password_file, &options.password_sha256) {
        (Some(file), _) => std::fs::read_to_string(file)
            .map_err(|e| format!("reading {file}: {e}"))?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, Some(digest)) => format!("sha256:{digest}"),
        (None, None) => random_password(16),
    };
    let transport = DevMemTransport::open().map_err(|e| e.to_string())?;
    let mut service = Service::new(
        Client::new(transport),
        Config {
            user: options.user.clone(),
            password: password.clone(),
            shutdown_timeout: options.shutdown_timeout,
            media_budget: MEDIA_BUDGET_UNTIL_ASKED,
        },
    )
    .map_err(|e| e.to_string())?;
    let allow: AllowList = options
        .media_hosts
        .join(" ")
        .parse()
        .map_err(|e| format!("--media-host: {e}"))?;
    let pool = service
        .client_mut()
        .node()
        .map(|n| n.staging.bytes)
        .unwrap_or(128 << 20);
    // Virtual media held at once, over every system, is at most the staging pool's size.
    service.set_media_budget(pool);
    let fetcher = media_fetcher(allow);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        let shared = Shared::new(service, fetcher);
        let mut urls = Vec::new();
        if let Some(address) = options.https {
            let (tls, fingerprint) = match &options.tls {
                Some((cert, key)) => {
                    let read = |path: &String| {
                        std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))
                    };
                    server::tls_from_pem(&read(cert)?, &read(key)?)
                        .map_err(|e| format!("{cert}, {key}: {e}"))?
                }
                None => {
                    server::self_signed_tls(vec!["microvisor".into(), address.ip().to_string()])?
                }
            };
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| format!("listening on {address}: {e}"))?;
            urls.push(format!("https={address} sha256={fingerprint}"));
            tokio::spawn(server::serve(shared.clone(), listener, Some(tls)));
        }
        if let Some(address) = options.http {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| format!("listening on {address}: {e}"))?;
            urls.push(format!("http={address}"));
            tokio::spawn(server::serve(shared.clone(), listener, None));
        }
        let credentials = match (&options.password_file, &options.password_sha256) {
            (Some(file), _) => format!("user={} password=(from {file})", options.user),
            (None, Some(_)) => format!("user={} password=(the plan's)", options.user),
            (None, None) => format!("user={} password={password}", options.user),
        };
        println!("REDFISH ready {} {credentials}", urls.join(" "));
        shared.tick_forever().await;
        Ok::<(), String>(())
    })
}

/// Virtual media: images fetched from the hosts of `allow` only, each at most the bytes the
/// service's media budget left it, understood by `microvisor_redfish::iso::boot_media`.
fn media_fetcher(allow: AllowList) -> Fetcher {
    let allow = Arc::new(allow);
    Arc::new(move |url: String, max_bytes: u64| {
        let max_bytes = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let mut options = FetchOptions::new((*allow).clone());
        options.max_bytes = max_bytes;
        let limits = Limits {
            max_kernel: max_bytes,
            max_initrd: max_bytes,
            ..Limits::default()
        };
        Box::pin(async move {
            fetch_boot_media(&url, &options, &limits)
                .await
                .map_err(|e| e.to_string())
        })
    })
}

/// The media budget before the node's staging pool size is known (`Service::set_media_budget`).
const MEDIA_BUDGET_UNTIL_ASKED: u64 = 128 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_parse() {
        let o = parse(&args("")).unwrap();
        assert_eq!(o.https, Some("0.0.0.0:443".parse().unwrap()));
        assert_eq!(o.http, None);
        let o = parse(&args(
            "--https off --http 0.0.0.0:80 --media-host 10.0.2.100",
        ))
        .unwrap();
        assert_eq!(o.https, None);
        assert_eq!(o.http, Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!(o.media_hosts, ["10.0.2.100"]);
        assert!(parse(&args("--https off")).is_err());
        assert!(parse(&args("--http")).is_err());
        assert!(parse(&args("--http 80")).is_err());
        assert!(parse(&args("--shutdown-timeout 0")).is_err());
        assert!(parse(&args("--bogus")).is_err());
        assert!(parse(&args("--password-sha256 abc")).is_err());
        let o = parse(&args(&format!("--password-sha256 {}", "a".repeat(64)))).unwrap();
        assert_eq!(o.password_sha256, Some("a".repeat(64)));
        let o = parse(&args("--tls-cert c.pem --tls-key k.pem")).unwrap();
        assert_eq!(o.tls, Some(("c.pem".into(), "k.pem".into())));
        assert!(parse(&args("--tls-cert c.pem")).is_err());
        assert!(parse(&args("--tls-key k.pem")).is_err());
    }
}
