//! The transport: HTTP/1.1 (hyper) over TCP, with TLS (rustls) where asked, in front of the
//! [`Service`]. It bounds what a client can hold: connections at once, time to send headers,
//! a body's size and the time to send it, a TLS handshake's time; the service runs on a
//! blocking thread behind one lock (the control interface serves one request at a time
//! anyway), so no client waits on another's fetch of virtual media.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use microvisor_control::Transport;

use crate::http::{Method, Request, Response};
use crate::service::{BootImage, FetchJob, MAX_BODY, Outcome, Service};

/// Connections served at once; more wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 32;
/// Connections one client address may hold at once (more are closed at once), so that one
/// host cannot take every slot for a connection's whole lifetime, e.g. with a cheap request
/// to the service root every few seconds (found in review).
pub const MAX_PER_CLIENT: usize = 4;
/// Time a client has to send a request's headers (slow-loris bound).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a body once its headers are in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(20);
/// Time a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection lives, whatever it does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(600);
/// Headers a request may have.
pub const MAX_HEADERS: usize = 64;

/// Fetches a virtual media image and works out what it boots.
/// Fetches a virtual media image: its URL and the most bytes it may bring.
pub type Fetcher = Arc<
    dyn Fn(String, u64) -> Pin<Box<dyn Future<Output = Result<BootImage, String>> + Send>>
        + Send
        + Sync,
>;

/// The service shared by every connection, with its clock.
pub struct Shared<T> {
    service: Mutex<Service<T>>,
    started: Instant,
    fetcher: Fetcher,
}

impl<T: Transport + Send + 'static> Shared<T> {
    pub fn new(service: Service<T>, fetcher: Fetcher) -> Arc<Shared<T>> {
        Arc::new(Shared {
            service: Mutex::new(service),
            started: Instant::now(),
            fetcher,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `f` on the service on a blocking thread.
    async fn with_service<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Service<T>, u64) -> R + Send + 'static,
    ) -> Option<R> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            let now = shared.now_ms();
            // A panic while holding the lock would be a bug; the state is still usable.
            let mut service = shared.service.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut service, now)
        })
        .await
        .ok()
    }

    /// Calls [`Service::tick`] every 250 ms, forever.
    pub async fn tick_forever(self: Arc<Self>) {
        let mut interval = tokio::time::interval(Duration::from_millis(250));
        loop {
            interval.tick().await;
            self.with_service(|s, now| s.tick(now)).await;
        }
    }

    async fn answer(self: &Arc<Self>, request: Request) -> Response {
        let outcome = self
            .with_service(move |s, now| s.handle(&request, now))
            .await;
        match outcome {
            Some(Outcome::Respond(response)) => response,
            Some(Outcome::Fetch(job)) => {
                let result = (self.fetcher)(job.url.clone(), job.max_bytes).await;
                let job: FetchJob = job;
                self.with_service(move |s, _| s.media_fetched(&job, result))
                    .await
                    .unwrap_or_else(internal_error)
            }
            None => internal_error(),
        }
    }
}

fn internal_error() -> Response {
    Response::error(500, "InternalError", "the service failed on this request")
}

/// Connections held per client address.
#[derive(Default)]
struct Clients(Mutex<HashMap<IpAddr, usize>>);

/// One connection of `ip`, counted until dropped.
struct ClientConnection {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Clients {
    /// Counts a connection of `ip`, unless it already holds [`MAX_PER_CLIENT`].
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<ClientConnection> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(ip).or_default();
        if *n >= MAX_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(ClientConnection {
            clients: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        let mut held = self.clients.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// Serves `listener` forever, over TLS when `tls` is given.
pub async fn serve<T: Transport + Send + 'static>(
    shared: Arc<Shared<T>>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let clients = Arc::new(Clients::default());
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("redfish: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over its share: closed at once, the slot free again.
        let Some(client) = clients.enter(peer.ip()) else {
            continue;
        };
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _client = client;
            let served = async {
                match tls {
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                        if let Ok(Ok(stream)) = handshake.await {
                            connection(shared, stream, peer).await;
                        }
                    }
                    None => connection(shared, stream, peer).await,
                }
            };
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, served).await;
        });
    }
}

async fn connection<T, S>(shared: Arc<Shared<T>>, stream: S, peer: SocketAddr)
where
    T: Transport + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(exchange(shared, request, peer).await) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// One request: read within bounds, answered by the service.
async fn exchange<T: Transport + Send + 'static>(
    shared: Arc<Shared<T>>,
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
) -> hyper::Response<Full<Bytes>> {
    let response = match read(request).await {
        Ok(request) => shared.answer(request.from(peer.ip())).await,
        Err(refusal) => refusal,
    };
    to_hyper(response)
}

/// The request with its body, or the answer that refuses it (too many headers, a body too
/// large or too slow).
async fn read(request: hyper::Request<Incoming>) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    if parts.headers.len() > MAX_HEADERS {
        return Err(Response::error(
            431,
            "GeneralError",
            "too many header fields",
        ));
    }
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect())
        .await
        .map_err(|_| Response::error(408, "GeneralError", "the body took too long"))?
        .map_err(|_| too_large())?;
    Ok(Request {
        method: Method::parse(parts.method.as_str()),
        path: parts.uri.path().to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: collected.to_bytes().to_vec(),
        peer: None,
    })
}

fn too_large() -> Response {
    Response::error(
        413,
        "GeneralError",
        &format!("a body is at most {MAX_BODY} bytes"),
    )
}

fn to_hyper(response: Response) -> hyper::Response<Full<Bytes>> {
    let mut builder = hyper::Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(Full::new(Bytes::from(response.body)))
        .unwrap_or_else(|_| {
            let mut fallback = hyper::Response::new(Full::new(Bytes::new()));
            *fallback.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            fallback
        })
}

/// A TLS configuration with a self-signed certificate for `names` (host names or IP
/// addresses), generated now; returns it and the certificate's SHA-256 fingerprint.
pub fn self_signed_tls(names: Vec<String>) -> Result<(TlsAcceptor, String), String> {
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("generating a certificate: {e}"))?;
    let der = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    acceptor(vec![der], key)
}

/// A TLS configuration from PEM: a certificate chain (the server's certificate first) and
/// its private key (PKCS#8, PKCS#1 or SEC1); returns it and the certificate's SHA-256
/// fingerprint. A key that does not match the certificate is refused.
pub fn tls_from_pem(chain: &[u8], key: &[u8]) -> Result<(TlsAcceptor, String), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate: {e:?}"))?;
    if chain.is_empty() {
        return Err("no certificate in the certificate file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("the key: {e:?}"))?;
    acceptor(chain, key)
}

fn acceptor(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<(TlsAcceptor, String), String> {
    use sha2::{Digest, Sha256};
    let fingerprint = Sha256::digest(&chain[0])
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("TLS certificate: {e}"))?;
    Ok((TlsAcceptor::from(Arc::new(config)), fingerprint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_address_holds_at_most_its_share_of_connections() {
        let clients = Arc::new(Clients::default());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let held: Vec<ClientConnection> = (0..MAX_PER_CLIENT)
            .map(|_| clients.enter(a).unwrap())
            .collect();
        assert!(clients.enter(a).is_none(), "over its share");
        let other = clients.enter(b).expect("another address is not affected");
        drop(held);
        assert!(
            clients.enter(a).is_some(),
            "its connections closed: room again"
        );
        drop(other);
        assert!(
            clients.0.lock().unwrap().is_empty(),
            "nothing kept for closed ones"
        );
    }

    #[test]
    fn a_pem_certificate_and_its_key_make_the_tls_configuration() {
        use sha2::{Digest, Sha256};
        let one = rcgen::generate_simple_self_signed(vec!["node-1".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["node-2".into()]).unwrap();
        let cert = one.cert.pem();
        let key = one.key_pair.serialize_pem();
        let (_, fingerprint) = tls_from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let expected: Vec<String> = Sha256::digest(one.cert.der())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(fingerprint, expected.join(":"));
        // A chain: the server's certificate first.
        let chain = format!("{cert}{}", other.cert.pem());
        assert_eq!(
            tls_from_pem(chain.as_bytes(), key.as_bytes()).unwrap().1,
            fingerprint
        );
        let wrong_key = other.key_pair.serialize_pem();
        assert!(tls_from_pem(cert.as_bytes(), wrong_key.as_bytes()).is_err());
        assert!(tls_from_pem(b"", key.as_bytes()).is_err());
        assert!(tls_from_pem(cert.as_bytes(), b"-----BEGIN PRIVATE KEY-----\nAAAA\n").is_err());
        assert!(tls_from_pem(key.as_bytes(), key.as_bytes()).is_err());
    }
}
