//! A minimal HTTP/1.0 client for reaching a slice's web page (or the manager's Redfish service)
//! from the host through a forwarded loopback port (`qemu::HostForward`): tests and `cargo
//! xtask run` use it, nothing else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// What one `GET` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code (200, 404, ...).
    pub status: u16,
    /// The body, lossily decoded.
    pub body: String,
}

/// `GET /` from `127.0.0.1:port`, retried until a server answers with a status line or
/// `timeout` passes. A QEMU user network accepts the host's connection before it knows whether
/// the guest listens (and then closes it), so an empty answer means "not yet".
pub fn get_until(port: u16, timeout: Duration) -> Result<Response> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match get(port, Duration::from_secs(5)) {
            Ok(response) => return Ok(response),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!(
        "http://127.0.0.1:{port}/ did not answer within {} s ({last})",
        timeout.as_secs()
    )
}

/// One `GET /` from `127.0.0.1:port`, every step bounded by `timeout`.
pub fn get(port: u16, timeout: Duration) -> Result<Response> {
    get_path(port, "/", timeout)
}

/// One `GET path` from `127.0.0.1:port`, every step bounded by `timeout`.
pub fn get_path(port: u16, path: &str, timeout: Duration) -> Result<Response> {
    let answer = request(port, "GET", path, &[], None, timeout)?;
    Ok(Response {
        status: answer.status,
        body: String::from_utf8_lossy(&answer.body).into_owned(),
    })
}

/// A whole answer: status, headers (names lower-case) and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Exchange {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request to `127.0.0.1:port` (`headers` besides `Host` and `Connection: close`; a
/// `body` gets its `Content-Length`), every step bounded by `timeout`, the answer at most
/// 1 MiB.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Exchange> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&bytes)?;
    let mut answer = Vec::new();
    // Bounded: at most 1 MiB, each read bounded by the timeout.
    stream.take(1 << 20).read_to_end(&mut answer)?;
    parse(&answer)
}

/// Splits a raw HTTP/1.x answer into status, headers and body (cut at `Content-Length`; an
/// answer shorter than it says is incomplete).
fn parse(bytes: &[u8]) -> Result<Exchange> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("no complete HTTP answer ({} bytes)", bytes.len());
    };
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let status = match (words.next(), words.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(status))) if version.starts_with("HTTP/1.") => status,
        _ => bail!("not an HTTP status line: {status_line:?}"),
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = bytes[end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    if let Some(length) = length {
        if body.len() < length {
            bail!("an answer of {} body bytes, {length} announced", body.len());
        }
        body.truncate(length);
    }
    Ok(Exchange {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_status_and_body() {
        let r = parse(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<h1>slice web</h1>\n")
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"<h1>slice web</h1>\n");
        assert!(parse(b"").is_err());
        assert!(parse(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn parses_headers_and_honours_content_length() {
        let a = parse(b"HTTP/1.1 204 No Content\r\nOData-Version: 4.0\r\n\r\n").unwrap();
        assert_eq!(a.status, 204);
        assert_eq!(a.header("odata-version"), Some("4.0"));
        let a = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!(a.body, b"{}");
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
        assert!(parse(b"garbage").is_err());
    }

    #[test]
    fn gets_a_page_and_retries_until_the_server_answers() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            // First connection closed unanswered, as slirp does before the guest listens.
            drop(listener.accept().unwrap());
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.0 200 OK\r\n\r\nslice db\n").unwrap();
        });
        let r = get_until(port, Duration::from_secs(20)).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "slice db\n"));
        server.join().unwrap();
    }
}
