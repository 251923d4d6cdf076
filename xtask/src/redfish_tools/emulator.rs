//! sushy-tools' Redfish emulator (`sushy-emulator --fake`, one fake system) on 127.0.0.1: the
//! yardstick the validators' scores are compared with ([`REFERENCE`]), and a service to prove
//! the tooling on without a node.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::process::Server;
use super::setup::Tools;
use super::validate::{Counts, Service};

/// What the emulator scores (sushy-tools 2.2.0 `--fake`, the pinned validators): the service
/// validator's and the interop validator's counts.
pub const REFERENCE: (Counts, Counts) = (
    Counts {
        pass: 555,
        warn: 16,
        fail: 34,
        not_tested: 450,
    },
    Counts {
        pass: 75,
        warn: 0,
        fail: 2,
        not_tested: 33,
    },
);

/// A running emulator, killed (with `timeout`'s process group) on drop, or by `timeout` when
/// its lifetime passes even if this process dies first.
#[derive(Debug)]
pub struct Emulator {
    _server: Server,
    /// Its loopback port.
    pub port: u16,
    /// Its output.
    pub log: PathBuf,
}

impl Emulator {
    /// Starts the emulator on a free loopback port and waits (at most 60 s) for its service
    /// root; it lives at most `lifetime`. Its temporary files (downloaded media) go to `dir`.
    pub fn start(tools: &Tools, dir: &Path, lifetime: Duration) -> Result<Self> {
        let port = free_port()?;
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let log = dir.join("sushy-emulator.log");
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=5", &format!("{}s", lifetime.as_secs().max(1))])
            .arg(tools.bin.join("sushy-emulator"))
            .args([
                "--fake",
                "--interface",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .env("TMPDIR", &tmp)
            // It fetches virtual media itself: straight from loopback, never through a proxy.
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("all_proxy")
            .env("NO_PROXY", "*")
            .env("no_proxy", "*");
        let mut server = Server::spawn(&mut cmd, &log)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = crate::http::get_path(port, "/redfish/v1/", Duration::from_secs(5))
                && r.status == 200
            {
                break;
            }
            if let Some(status) = server.exited() {
                bail!("sushy-emulator exited ({status}); log {}", log.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "sushy-emulator did not answer within 60 s; log {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(Self {
            _server: server,
            port,
            log,
        })
    }

    /// The service as the checks see it (the emulator takes any credentials).
    pub fn service(&self) -> Service {
        Service {
            url: format!("http://127.0.0.1:{}", self.port),
            user: "admin".into(),
            password: "password".into(),
        }
    }

    /// The `Id` of the first system.
    pub fn first_system(&self) -> Result<String> {
        let r = crate::http::get_path(self.port, "/redfish/v1/Systems", Duration::from_secs(10))?;
        first_member_id(&r.body).context("the emulator's Systems collection has no member")
    }
}

/// The last path segment of the first `Members[].@odata.id` of a collection.
pub fn first_member_id(collection: &str) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(collection).ok()?;
    let id = doc["Members"].get(0)?["@odata.id"].as_str()?;
    id.trim_end_matches('/')
        .rsplit('/')
        .next()
        .map(str::to_string)
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_member_of_a_collection() {
        let body = r#"{"Members@odata.count": 2, "Members": [
            {"@odata.id": "/redfish/v1/Systems/27946b59-9e44"},
            {"@odata.id": "/redfish/v1/Systems/other/"}]}"#;
        assert_eq!(first_member_id(body).as_deref(), Some("27946b59-9e44"));
        assert_eq!(first_member_id(r#"{"Members": []}"#), None);
        assert_eq!(first_member_id("not json"), None);
    }
}
