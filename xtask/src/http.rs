//! A minimal HTTP/1.0 client for reaching a slice's web page from the host through a forwarded
//! loopback port (`qemu::HostForward`): tests and `cargo xtask run` use it, nothing else.

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
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut bytes = Vec::new();
    // Bounded: at most 1 MiB, each read bounded by the timeout.
    stream.take(1 << 20).read_to_end(&mut bytes)?;
    parse(&bytes)
}

/// Splits a raw HTTP/1.x answer into status and body.
fn parse(bytes: &[u8]) -> Result<Response> {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no complete HTTP answer ({} bytes)", bytes.len());
    };
    let status_line = head.lines().next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let status = match (words.next(), words.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(status))) if version.starts_with("HTTP/1.") => status,
        _ => bail!("not an HTTP status line: {status_line:?}"),
    };
    Ok(Response {
        status,
        body: body.to_string(),
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
        assert_eq!(r.body, "<h1>slice web</h1>\n");
        assert!(parse(b"").is_err());
        assert!(parse(b"SSH-2.0\r\n\r\n").is_err());
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
