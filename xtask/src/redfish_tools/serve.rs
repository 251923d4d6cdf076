//! A one-file HTTP server on 127.0.0.1, for virtual media: a Redfish service's `InsertMedia`
//! fetches the image from it. Stopped on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result};

/// Per-connection read and write limit.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest request head read.
const HEAD_LIMIT: usize = 16 << 10;

/// Serves one body at `/<name>` (GET and HEAD; 404 for any other path, 405 for any other
/// method), one connection at a time, until dropped.
#[derive(Debug)]
pub struct FileServer {
    port: u16,
    name: String,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    /// Starts serving `body` as `/<name>` on a free loopback port.
    pub fn start(name: &str, body: Vec<u8>) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let path = format!("/{name}");
        let thread = {
            let (stop, served) = (stop.clone(), served.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream
                        && answer(stream, &path, &body).unwrap_or(false)
                    {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        Ok(Self {
            port,
            name: name.to_string(),
            stop,
            served,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT/<name>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, self.name)
    }

    /// How many GETs of the file were answered in full.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one request; true when it was a GET of the file sent in full.
fn answer(mut stream: TcpStream, path: &str, body: &[u8]) -> std::io::Result<bool> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HEAD_LIMIT {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, content): (&str, &[u8]) = match (method, target == path) {
        ("GET" | "HEAD", true) => ("200 OK", body),
        ("GET" | "HEAD", false) => ("404 Not Found", b"not found\n"),
        _ => ("405 Method Not Allowed", b"GET or HEAD only\n"),
    };
    let header = format!(
        "HTTP/1.0 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    );
    stream.write_all(header.as_bytes())?;
    if method != "HEAD" {
        stream.write_all(content)?;
    }
    stream.flush()?;
    Ok(method == "GET" && status.starts_with("200"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(port: u16, text: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(text.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_the_file_and_nothing_else() {
        let server = FileServer::start("boot.iso", b"ISO".to_vec()).unwrap();
        let port: u16 = server
            .url()
            .split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(server.url(), format!("http://127.0.0.1:{port}/boot.iso"));
        let ok = request(port, "GET /boot.iso HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            ok.starts_with("HTTP/1.0 200 OK\r\n") && ok.ends_with("\r\n\r\nISO"),
            "{ok}"
        );
        assert!(ok.contains("Content-Length: 3\r\n"), "{ok}");
        let head = request(port, "HEAD /boot.iso HTTP/1.1\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.0 200 OK") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(request(port, "GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.0 404"));
        assert!(request(port, "POST /boot.iso HTTP/1.1\r\n\r\n").starts_with("HTTP/1.0 405"));
        assert_eq!(server.served(), 1);
        drop(server);
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "stopped on drop"
        );
    }
}
