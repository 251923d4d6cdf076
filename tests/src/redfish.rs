//! A small Redfish client for host scripts (`Scenario::host_script`): `xtask::http` requests
//! to the loopback port forwarded to the manager's port 80 (the service's plain HTTP, which
//! tests turn on with `microvisor.redfish=http`), one connection per request, every step
//! bounded.

use std::time::Duration;

/// Bound of one request (connect, send, read).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How requests authenticate.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Basic(String, String),
    Token(String),
}

/// One answer.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    /// Header names lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The Redfish error's first MessageId, or "".
    pub fn message_id(&self) -> String {
        self.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// `Ok(self)` when the status is `want`, else an error quoting the answer.
    pub fn expect(self, want: u16, what: &str) -> Result<Answer, String> {
        if self.status == want {
            Ok(self)
        } else {
            Err(format!(
                "{what}: status {} (wanted {want}), body {}",
                self.status,
                String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ))
        }
    }
}

/// A client of the service at `127.0.0.1:port`.
#[derive(Clone, Debug)]
pub struct Client {
    pub port: u16,
    pub auth: Auth,
}

impl Client {
    pub fn new(port: u16, auth: Auth) -> Client {
        Client { port, auth }
    }

    pub fn get(&self, path: &str) -> Result<Answer, String> {
        self.request("GET", path, &[], None)
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> Result<Answer, String> {
        self.request("POST", path, &[], Some(body.to_string().as_bytes()))
    }

    pub fn patch(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> Result<Answer, String> {
        self.request("PATCH", path, headers, Some(body.to_string().as_bytes()))
    }

    pub fn delete(&self, path: &str) -> Result<Answer, String> {
        self.request("DELETE", path, &[], None)
    }

    /// One request; `Err` when no complete answer came.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Answer, String> {
        let authorization = match &self.auth {
            Auth::None => None,
            Auth::Basic(user, password) => Some((
                "Authorization",
                format!("Basic {}", base64(format!("{user}:{password}").as_bytes())),
            )),
            Auth::Token(token) => Some(("X-Auth-Token", token.clone())),
        };
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some((name, value)) = &authorization {
            all.push((name, value));
        }
        if body.is_some() {
            all.push(("Content-Type", "application/json"));
        }
        let answer = xtask::http::request(self.port, method, path, &all, body, REQUEST_TIMEOUT)
            .map_err(|e| format!("{method} {path}: {e:#}"))?;
        Ok(Answer {
            status: answer.status,
            headers: answer.headers,
            body: answer.body,
        })
    }
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The interop validator's failures (Ironic's profile) other than the two kinds the service
/// knows it has (docs/redfish.md, "Conformance"): `Pxe` not among the boot override targets
/// of a system that cannot boot from the network, no volume creation on a share. A test fails
/// on any of these.
pub fn unexpected_interop_failures(failures: &[String]) -> Vec<String> {
    failures
        .iter()
        .filter(|f| {
            let no_pxe = f.contains("The value 'Pxe' is not supported");
            let no_new_volumes =
                f.contains("/Volumes") && f.contains("'POST' not found in the Allow header");
            !(no_pxe || no_new_volumes)
        })
        .cloned()
        .collect()
}

/// Both DMTF validators over the service behind `https_port` (HTTPS, Basic auth), logs under
/// `target/test-logs/<name>/`: `Ok` with a summary when the service validator found no
/// failure and the interop validator none but the known ones.
pub fn validate(name: &str, https_port: u16, user: &str, password: &str) -> Result<String, String> {
    use xtask::redfish_tools::{self, Service};
    let ws = &crate::images::built().ws;
    let tools = redfish_tools::ensure(ws).map_err(|e| format!("{e:#}"))?;
    let service = Service {
        url: format!("https://127.0.0.1:{https_port}"),
        user: user.to_string(),
        password: password.to_string(),
    };
    let logs = ws.target_dir.join("test-logs").join(name);
    let schema = redfish_tools::service_validator(&tools, &service, &logs.join("service"))
        .map_err(|e| format!("{e:#}"))?;
    if schema.counts.fail != 0 || schema.counts.pass < 300 {
        return Err(format!("service validator: {}", schema.render(30)));
    }
    let ironic = redfish_tools::interop_validator(&tools, &service, &logs.join("interop"))
        .map_err(|e| format!("{e:#}"))?;
    let unexpected = unexpected_interop_failures(&ironic.failures);
    if !unexpected.is_empty() || ironic.counts.pass < 50 {
        return Err(format!("interop validator: {}", ironic.render(30)));
    }
    Ok(format!(
        "service validator {} pass, 0 fail; interop validator {} pass, {} known failures",
        schema.counts.pass,
        ironic.counts.pass,
        ironic.failures.len()
    ))
}

/// The user and password of a `REDFISH ready ... user=U password=P` console line.
pub fn credentials(line: &str) -> Option<(String, String)> {
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(String::from)
    };
    Some((field("user=")?, field("password=")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_standard() {
        assert_eq!(
            base64(b"admin:correct-horse"),
            "YWRtaW46Y29ycmVjdC1ob3JzZQ=="
        );
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn credentials_come_from_the_ready_line() {
        let line = "[manager] / # REDFISH ready https=0.0.0.0:443 sha256=AB:CD http=0.0.0.0:80 user=admin password=zhNtycrKbChmJ3Qp";
        assert_eq!(
            credentials(line),
            Some(("admin".into(), "zhNtycrKbChmJ3Qp".into()))
        );
        assert_eq!(credentials("REDFISH failed: x"), None);
    }
}
