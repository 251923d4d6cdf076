//! Fetches against throwaway servers on 127.0.0.1 (plain and TLS) that answer by path.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A server on 127.0.0.1 with the connections it accepted counted.
struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// The request line's path of a request head.
async fn read_path<S: AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    Some(text.split(' ').nth(1)?.to_string())
}

/// Answers a request for `path` on `stream`.
async fn answer<S: AsyncWrite + Unpin>(stream: &mut S, path: &str, port: u16) {
    let write = |text: String| text.into_bytes();
    let response = match path {
        "/ok" => write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: application/octet-stream\r\n\r\nhello".into()),
        "/chunked" => write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".into()),
        "/to-ok" => write("HTTP/1.1 302 Found\r\nLocation: ok\r\nContent-Length: 0\r\n\r\n".into()),
        "/dir/to-absolute" => write(format!(
            "HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:{port}/ok\r\nContent-Length: 0\r\n\r\n"
        )),
        "/loop" => write("HTTP/1.1 307 Temporary Redirect\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n".into()),
        "/away" => write("HTTP/1.1 302 Found\r\nLocation: http://192.0.2.7/image.iso\r\nContent-Length: 0\r\n\r\n".into()),
        "/ftp" => write("HTTP/1.1 302 Found\r\nLocation: ftp://127.0.0.1/x\r\nContent-Length: 0\r\n\r\n".into()),
        "/no-location" => write("HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n".into()),
        "/big-declared" => write("HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n".into()),
        "/short" => write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this".into()),
        "/kernel" => {
            let mut kernel = vec![0u8; 4096];
            kernel[0x38..0x3c].copy_from_slice(b"ARM\x64");
            let mut response =
                b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n".to_vec();
            response.extend_from_slice(&kernel);
            response
        }
        "/garbage" => write("SSH-2.0-OpenSSH\r\n\r\n".into()),
        "/big-chunked" => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            let chunk = format!("400\r\n{}\r\n", "x".repeat(0x400));
            for _ in 0..10_000 {
                if stream.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
            return;
        }
        "/silent" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        "/slow-body" => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                .await;
            for _ in 0..1000 {
                if stream.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return;
        }
        _ => write("HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found".into()),
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.flush().await;
}

async fn server(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => {
                        if let Some(path) = read_path(&mut stream).await {
                            answer(&mut stream, &path, port).await;
                        }
                    }
                    Some(config) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(config);
                        let Ok(mut stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        if let Some(path) = read_path(&mut stream).await {
                            answer(&mut stream, &path, port).await;
                            let _ = stream.shutdown().await;
                        }
                    }
                }
            });
        }
    });
    Server {
        port,
        connections,
        _task: AbortOnDrop(task),
    }
}

fn options() -> FetchOptions {
    let mut options = FetchOptions::new("127.0.0.1".parse().unwrap());
    options.max_bytes = 64 << 10;
    options.header_timeout = Duration::from_millis(500);
    options.total_timeout = Duration::from_secs(5);
    options
}

#[tokio::test]
async fn success_with_content_length_and_chunked() {
    let server = server(None).await;
    let fetched = fetch(&server.url("/ok"), &options()).await.unwrap();
    assert_eq!(fetched.bytes, b"hello");
    assert_eq!(fetched.url, server.url("/ok"));
    assert_eq!(
        fetched.content_type.as_deref(),
        Some("application/octet-stream")
    );
    let fetched = fetch(&server.url("/chunked"), &options()).await.unwrap();
    assert_eq!(fetched.bytes, b"abcde");
}

#[tokio::test]
async fn not_found_names_the_url_and_status() {
    let server = server(None).await;
    let err = fetch(&server.url("/missing.iso"), &options())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        FetchError::Status {
            url: server.url("/missing.iso"),
            status: 404
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: the server answered 404 Not Found",
            server.url("/missing.iso")
        )
    );
}

#[tokio::test]
async fn redirects_are_followed_relative_and_absolute() {
    let server = server(None).await;
    let fetched = fetch(&server.url("/to-ok"), &options()).await.unwrap();
    assert_eq!(
        (fetched.bytes.as_slice(), fetched.url),
        (&b"hello"[..], server.url("/ok"))
    );
    let fetched = fetch(&server.url("/dir/to-absolute"), &options())
        .await
        .unwrap();
    assert_eq!(fetched.bytes, b"hello");
}

#[tokio::test]
async fn a_redirect_loop_stops_at_the_limit() {
    let server = server(None).await;
    let err = fetch(&server.url("/loop"), &options()).await.unwrap_err();
    assert_eq!(
        err,
        FetchError::TooManyRedirects {
            url: server.url("/loop"),
            max: 5
        }
    );
    assert_eq!(server.connections(), 6);
}

#[tokio::test]
async fn a_redirect_to_a_host_not_allowed_is_not_followed() {
    let server = server(None).await;
    let err = fetch(&server.url("/away"), &options()).await.unwrap_err();
    assert_eq!(
        err,
        FetchError::NotAllowed {
            url: "http://192.0.2.7/image.iso".into(),
            host: "192.0.2.7".into()
        }
    );
    assert_eq!(server.connections(), 1);
    let err = fetch(&server.url("/ftp"), &options()).await.unwrap_err();
    assert!(matches!(err, FetchError::Scheme { .. }), "{err:?}");
    let err = fetch(&server.url("/no-location"), &options())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::BadRedirect { .. }), "{err:?}");
}

#[tokio::test]
async fn hosts_not_allowed_are_refused_before_connecting() {
    let server = server(None).await;
    let mut options = options();
    options.allow = "10.0.0.0/8 media.example".parse().unwrap();
    for url in [
        server.url("/ok"),
        format!("http://localhost:{}/ok", server.port),
        format!("http://[::ffff:127.0.0.1]:{}/ok", server.port),
        "http://[::1]/ok".into(),
    ] {
        let err = fetch(&url, &options).await.unwrap_err();
        assert!(
            matches!(err, FetchError::NotAllowed { .. }),
            "{url}: {err:?}"
        );
        assert!(err.to_string().contains("not in the allowed"), "{err}");
    }
    assert_eq!(server.connections(), 0);
    for (url, scheme) in [
        ("ftp://127.0.0.1/x", true),
        ("file:///etc/passwd", true),
        ("/relative", false),
        ("http://u:p@127.0.0.1/x", false),
        ("not a url", false),
    ] {
        let err = fetch(url, &options).await.unwrap_err();
        if scheme {
            assert!(matches!(err, FetchError::Scheme { .. }), "{url}: {err:?}");
        } else {
            assert!(matches!(err, FetchError::BadUrl { .. }), "{url}: {err:?}");
        }
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let server = server(None).await;
    let err = fetch(&server.url("/big-declared"), &options())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        FetchError::TooLarge {
            url: server.url("/big-declared"),
            max: 64 << 10,
            declared: Some(1_000_000_000)
        }
    );
    let err = fetch(&server.url("/big-chunked"), &options())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        FetchError::TooLarge {
            url: server.url("/big-chunked"),
            max: 64 << 10,
            declared: None
        }
    );
}

#[tokio::test]
async fn slow_servers_time_out() {
    let server = server(None).await;
    let started = std::time::Instant::now();
    let err = fetch(&server.url("/silent"), &options()).await.unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Timeout {
                step: "waiting for the response head",
                ..
            }
        ),
        "{err:?}"
    );
    let mut options = options();
    options.total_timeout = Duration::from_secs(1);
    let err = fetch(&server.url("/slow-body"), &options)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Timeout {
                step: "the whole fetch",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn broken_answers_and_refused_connections() {
    let server = server(None).await;
    let err = fetch(&server.url("/short"), &options()).await.unwrap_err();
    assert!(matches!(err, FetchError::Http { .. }), "{err:?}");
    let err = fetch(&server.url("/garbage"), &options())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Http { .. }), "{err:?}");
    // A port nobody listens on (bound, then closed).
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = fetch(&format!("http://127.0.0.1:{port}/"), &options())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Connect { .. }), "{err:?}");
}

fn tls_server_config() -> (Arc<rustls::ServerConfig>, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = certified.cert.pem();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(certified.key_pair.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    (Arc::new(config), pem)
}

#[tokio::test]
async fn https_with_and_without_certificate_checks() {
    let (config, pem) = tls_server_config();
    let tls = server(Some(config)).await;
    let url = format!("https://127.0.0.1:{}/ok", tls.port);
    // Not checked (the default).
    assert_eq!(fetch(&url, &options()).await.unwrap().bytes, b"hello");
    // Checked against the server's own certificate.
    let mut checked = options();
    checked.tls = TlsVerification::roots_from_pem(pem.as_bytes()).unwrap();
    assert_eq!(fetch(&url, &checked).await.unwrap().bytes, b"hello");
    // Checked against another certificate.
    let (_, other) = tls_server_config();
    checked.tls = TlsVerification::roots_from_pem(other.as_bytes()).unwrap();
    let err = fetch(&url, &checked).await.unwrap_err();
    assert!(matches!(err, FetchError::Tls { .. }), "{err:?}");
    // A plain HTTP server spoken to over TLS waits for a request head: the handshake's
    // timeout ends it.
    let plain = server(None).await;
    let mut options = options();
    options.connect_timeout = Duration::from_millis(300);
    let err = fetch(&format!("https://127.0.0.1:{}/ok", plain.port), &options)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Timeout {
                step: "the TLS handshake",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(TlsVerification::roots_from_pem(b"nothing").is_err());
}

#[test]
fn allow_lists_parse_and_match() {
    let list: AllowList = "127.0.0.0/8, ::1 fe80::/10 Media.Example. 192.168.7.1"
        .parse()
        .unwrap();
    for (host, allowed) in [
        ("127.0.0.1", true),
        ("127.255.0.9", true),
        ("128.0.0.1", false),
        ("[::1]", true),
        ("::2", false),
        ("[fe80::1234]", true),
        ("[::ffff:127.0.0.1]", true),
        ("media.example", true),
        ("MEDIA.example.", true),
        ("other.example", false),
        ("192.168.7.1", true),
        ("192.168.7.2", false),
    ] {
        assert_eq!(list.allows_host(host), allowed, "{host}");
    }
    for bad in ["10.0.0.0/33", "::/129", "1.2.3.4/x", "a b/c", "bad_name!"] {
        assert!(bad.parse::<AllowList>().is_err(), "{bad}");
    }
    assert!(!AllowList::new().allows_host("127.0.0.1"));
    let default = AllowList::loopback_and_link_local();
    assert!(default.allows_host("169.254.3.4") && !default.allows_host("10.0.2.2"));
    assert!(
        AllowList::new()
            .allow_network("10.0.0.0".parse().unwrap(), 0)
            .is_some()
    );
}

#[test]
fn redirect_targets_resolve_like_a_browser() {
    let from = check(
        "http://127.0.0.1:8080/a/b/c.iso?x=1",
        &"127.0.0.1".parse().unwrap(),
    )
    .unwrap();
    for (location, expected) in [
        ("d.iso", "http://127.0.0.1:8080/a/b/d.iso"),
        ("/d.iso", "http://127.0.0.1:8080/d.iso"),
        ("//host/d.iso", "http://host/d.iso"),
        ("https://h/d", "https://h/d"),
        ("HTTP://h/d", "HTTP://h/d"),
    ] {
        assert_eq!(redirect_target(&from, location), expected, "{location}");
    }
}

#[tokio::test]
async fn boot_media_from_a_url() {
    let server = server(None).await;
    let limits = Limits::default();
    let media = fetch_boot_media(&server.url("/kernel"), &options(), &limits)
        .await
        .unwrap();
    assert_eq!((media.kernel.len(), media.initrd), (4096, None));
    let err = fetch_boot_media(&server.url("/ok"), &options(), &limits)
        .await
        .unwrap_err();
    assert!(matches!(err, MediaFetchError::Image { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not an ISO 9660 image nor an arm64 kernel Image (5 bytes, shorter than an \
             arm64 Image header)",
            server.url("/ok")
        )
    );
    let err = fetch_boot_media(&server.url("/nothing"), &options(), &limits)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MediaFetchError::Fetch(FetchError::Status { status: 404, .. })
        ),
        "{err:?}"
    );
}
