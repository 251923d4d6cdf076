//! Virtual media URLs fetched into memory (docs/redfish.md, "Virtual media"): HTTP/1.1 over
//! TCP, or over TLS for `https`, with every step bounded. The URL's host must be in the
//! caller's [`AllowList`] before anything is resolved or connected, and so must every
//! redirect's; at most [`FetchOptions::max_redirects`] redirects are followed; a body larger
//! than [`FetchOptions::max_bytes`] is refused from its `Content-Length` or as soon as the
//! bytes received pass the limit; connecting, the response head and the whole fetch each have
//! a timeout.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use crate::iso::{BootMedia, Limits, MediaError, boot_media};

/// The hosts a virtual media URL may name: IP networks (a literal address in the URL must be
/// in one) and host names (compared without case and trailing dot; a listed name is trusted
/// with whatever it resolves to, and an unlisted one is refused without being resolved).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    networks: Vec<(IpAddr, u8)>,
    names: Vec<String>,
}

impl AllowList {
    /// Nothing allowed.
    pub fn new() -> Self {
        AllowList::default()
    }

    /// Loopback and link-local addresses: 127.0.0.0/8, 169.254.0.0/16, ::1 and fe80::/10.
    pub fn loopback_and_link_local() -> Self {
        "127.0.0.0/8 169.254.0.0/16 ::1 fe80::/10"
            .parse()
            .expect("the built-in list parses")
    }

    /// Allows the addresses of `network`/`prefix` (the host bits are ignored); `None` when
    /// the prefix is longer than the address.
    pub fn allow_network(&mut self, network: IpAddr, prefix: u8) -> Option<&mut Self> {
        let bits = if network.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return None;
        }
        self.networks.push((network.to_canonical(), prefix));
        Some(self)
    }

    /// Allows the host name `name`.
    pub fn allow_name(&mut self, name: &str) -> &mut Self {
        self.names.push(normalize_name(name));
        self
    }

    /// Whether a literal address in a URL is allowed.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks
            .iter()
            .any(|&(network, prefix)| in_network(ip, network, prefix))
    }

    /// Whether a host name in a URL is allowed.
    pub fn allows_name(&self, name: &str) -> bool {
        let name = normalize_name(name);
        self.names.contains(&name)
    }

    /// Whether the URL host `host` (an address or a name, IPv6 in brackets or not) is allowed.
    pub fn allows_host(&self, host: &str) -> bool {
        match parse_host(host) {
            Host::Ip(ip) => self.allows_ip(ip),
            Host::Name(name) => self.allows_name(&name),
        }
    }
}

impl FromStr for AllowList {
    type Err = String;

    /// Entries separated by commas or white space: `ADDRESS`, `ADDRESS/PREFIX` or a host name.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut list = AllowList::new();
        for entry in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            let (address, prefix) = match entry.split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (entry, None),
            };
            match address.trim_matches(['[', ']']).parse::<IpAddr>() {
                Ok(ip) => {
                    let bits = if ip.is_ipv4() { 32 } else { 128 };
                    let prefix = match prefix {
                        Some(p) => p
                            .parse::<u8>()
                            .map_err(|_| format!("{entry}: the prefix is not a number"))?,
                        None => bits,
                    };
                    list.allow_network(ip, prefix)
                        .ok_or_else(|| format!("{entry}: a prefix longer than {bits} bits"))?;
                }
                Err(_) if prefix.is_none() && is_host_name(entry) => {
                    list.allow_name(entry);
                }
                Err(_) => {
                    return Err(format!(
                        "{entry}: neither an address, an address/prefix nor a host name"
                    ));
                }
            }
        }
        Ok(list)
    }
}

fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(network)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(network)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

enum Host {
    Ip(IpAddr),
    Name(String),
}

fn parse_host(host: &str) -> Host {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(host.to_string()),
    }
}

/// How `https` servers' certificates are checked.
#[derive(Clone, Debug)]
pub enum TlsVerification {
    /// Not at all (the handshake's signatures still are): what BMCs commonly do, since the
    /// media servers of deployment tools (Ironic's conductor, MAAS) often have self-signed
    /// certificates, and the allow-list already limits where the service connects to.
    AcceptAny,
    /// Against these trust anchors, with the URL's host name or address.
    Roots(Arc<RootCertStore>),
}

impl TlsVerification {
    /// Trust anchors from PEM text (`-----BEGIN CERTIFICATE-----` blocks).
    pub fn roots_from_pem(pem: &[u8]) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|e| format!("a PEM certificate: {e}"))?;
            roots
                .add(certificate)
                .map_err(|e| format!("a trust anchor: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no certificate in the PEM text".into());
        }
        Ok(TlsVerification::Roots(Arc::new(roots)))
    }
}

/// The limits and policy of a fetch.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub allow: AllowList,
    /// The largest body accepted.
    pub max_bytes: usize,
    /// Redirects followed (301, 302, 303, 307, 308), each target checked like the URL.
    pub max_redirects: usize,
    /// To resolve a name and open the TCP connection (and the TLS handshake).
    pub connect_timeout: Duration,
    /// From the request sent to the response head received.
    pub header_timeout: Duration,
    /// For the whole fetch, redirects and body included.
    pub total_timeout: Duration,
    pub tls: TlsVerification,
}

impl FetchOptions {
    /// At most 1 GiB, 5 redirects, 10 s to connect, 30 s to the response head, 10 minutes
    /// in all, certificates not checked.
    pub fn new(allow: AllowList) -> Self {
        FetchOptions {
            allow,
            max_bytes: 1 << 30,
            max_redirects: 5,
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(600),
            tls: TlsVerification::AcceptAny,
        }
    }
}

/// What a fetch got.
#[derive(Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The URL the body came from (after redirects).
    pub url: String,
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched")
            .field("url", &self.url)
            .field("bytes", &self.bytes.len())
            .field("content_type", &self.content_type)
            .finish()
    }
}

/// Why a fetch failed; each names the URL it was at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// Not a URL, or one with parts not supported (user information).
    BadUrl { url: String, why: String },
    /// A scheme other than `http` and `https`.
    Scheme { url: String },
    /// The host is not in the allow-list (nothing was resolved or connected).
    NotAllowed { url: String, host: String },
    /// The name did not resolve.
    Resolve { url: String, why: String },
    /// No TCP connection.
    Connect { url: String, why: String },
    /// The TLS handshake failed (a certificate not trusted, ...).
    Tls { url: String, why: String },
    /// A step took longer than its timeout.
    Timeout {
        url: String,
        step: &'static str,
        after: Duration,
    },
    /// A status other than success or a redirect.
    Status { url: String, status: u16 },
    /// More redirects than allowed.
    TooManyRedirects { url: String, max: usize },
    /// A redirect without a usable `Location`.
    BadRedirect { url: String, why: String },
    /// A body larger than the limit (`declared` when `Content-Length` said so up front).
    TooLarge {
        url: String,
        max: usize,
        declared: Option<u64>,
    },
    /// The HTTP exchange broke (a malformed response, a connection closed early, ...).
    Http { url: String, why: String },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::BadUrl { url, why } => write!(f, "{url:?} is not a usable URL: {why}"),
            FetchError::Scheme { url } => {
                write!(f, "{url}: only http and https URLs are fetched")
            }
            FetchError::NotAllowed { url, host } => write!(
                f,
                "{url}: the host {host} is not in the allowed virtual media hosts"
            ),
            FetchError::Resolve { url, why } => {
                write!(f, "{url}: the host does not resolve ({why})")
            }
            FetchError::Connect { url, why } => write!(f, "{url}: cannot connect ({why})"),
            FetchError::Tls { url, why } => write!(f, "{url}: TLS failed ({why})"),
            FetchError::Timeout { url, step, after } => {
                write!(f, "{url}: {step} took more than {} s", after.as_secs_f64())
            }
            FetchError::Status { url, status } => {
                let reason = StatusCode::from_u16(*status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                write!(f, "{url}: the server answered {status} {reason}")
            }
            FetchError::TooManyRedirects { url, max } => {
                write!(f, "{url}: more than {max} redirects")
            }
            FetchError::BadRedirect { url, why } => write!(f, "{url}: a bad redirect ({why})"),
            FetchError::TooLarge {
                url,
                max,
                declared: Some(declared),
            } => write!(f, "{url}: {declared} bytes, more than the {max} allowed"),
            FetchError::TooLarge { url, max, .. } => {
                write!(f, "{url}: more than the {max} bytes allowed")
            }
            FetchError::Http { url, why } => write!(f, "{url}: {why}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// A checked URL.
#[derive(Clone, Debug)]
struct Target {
    url: String,
    https: bool,
    /// The authority as sent in `Host` (no user information).
    authority: String,
    host: String,
    port: u16,
    path: String,
}

/// The scheme of `url` (RFC 3986 §3.1), if it has one.
fn scheme_of(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    (scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
    .then_some(scheme)
}

/// Parses `url` and checks its scheme and host; nothing is resolved or connected.
fn check(url: &str, allow: &AllowList) -> Result<Target, FetchError> {
    let bad = |why: &str| FetchError::BadUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    let scheme = scheme_of(url).ok_or_else(|| bad("no scheme (http:// or https://)"))?;
    let https = if scheme.eq_ignore_ascii_case("http") {
        false
    } else if scheme.eq_ignore_ascii_case("https") {
        true
    } else {
        return Err(FetchError::Scheme {
            url: url.to_string(),
        });
    };
    // The fragment is the client's, never sent.
    let without_fragment = url.split('#').next().unwrap_or("");
    let uri: Uri = without_fragment.parse().map_err(|e| bad(&format!("{e}")))?;
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user information in URLs is not supported"));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if !allow.allows_host(host) {
        return Err(FetchError::NotAllowed {
            url: url.to_string(),
            host: host.to_string(),
        });
    }
    Ok(Target {
        url: url.to_string(),
        https,
        authority: authority.as_str().to_string(),
        host: host.to_string(),
        port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
        path: uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string()),
    })
}

/// The URL a `Location` names, relative to `from`.
fn redirect_target(from: &Target, location: &str) -> String {
    let scheme = if from.https { "https" } else { "http" };
    if scheme_of(location).is_some() {
        location.to_string()
    } else if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{}{location}", from.authority)
    } else {
        let path = from.path.split('?').next().unwrap_or("/");
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        format!("{scheme}://{}{dir}/{location}", from.authority)
    }
}

/// Fetches `url` into memory under `options`.
pub async fn fetch(url: &str, options: &FetchOptions) -> Result<Fetched, FetchError> {
    let deadline = Instant::now() + options.total_timeout;
    let mut target = check(url, &options.allow)?;
    let mut redirects = 0;
    loop {
        let step = timeout_at(deadline, fetch_once(&target, options, deadline)).await;
        let outcome = step.unwrap_or_else(|_| {
            Err(FetchError::Timeout {
                url: target.url.clone(),
                step: "the whole fetch",
                after: options.total_timeout,
            })
        })?;
        match outcome {
            Once::Body(fetched) => return Ok(fetched),
            Once::Redirect(location) => {
                if redirects == options.max_redirects {
                    return Err(FetchError::TooManyRedirects {
                        url: target.url,
                        max: options.max_redirects,
                    });
                }
                redirects += 1;
                target = check(&redirect_target(&target, &location), &options.allow)?;
            }
        }
    }
}

enum Once {
    Body(Fetched),
    Redirect(String),
}

/// Aborts the connection's task when the fetch is done or dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// TCP connections to the target's addresses, in turn, within the connect timeout.
async fn connect(target: &Target) -> Result<TcpStream, FetchError> {
    let addresses: Vec<SocketAddr> = match parse_host(&target.host) {
        Host::Ip(ip) => vec![SocketAddr::new(ip, target.port)],
        Host::Name(name) => tokio::net::lookup_host((name.as_str(), target.port))
            .await
            .map_err(|e| FetchError::Resolve {
                url: target.url.clone(),
                why: e.to_string(),
            })?
            .collect(),
    };
    let mut last = String::from("no address");
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("{address}: {e}"),
        }
    }
    Err(FetchError::Connect {
        url: target.url.clone(),
        why: last,
    })
}

/// One request and its answer (a body or a redirect).
async fn fetch_once(
    target: &Target,
    options: &FetchOptions,
    deadline: Instant,
) -> Result<Once, FetchError> {
    let url = &target.url;
    let timed_out = |step: &'static str, after: Duration| FetchError::Timeout {
        url: url.clone(),
        step,
        after,
    };
    let stream = timeout(options.connect_timeout, connect(target))
        .await
        .map_err(|_| timed_out("connecting", options.connect_timeout))??;
    if target.https {
        let tls = timeout(
            options.connect_timeout,
            tls_handshake(target, options, stream),
        )
        .await
        .map_err(|_| timed_out("the TLS handshake", options.connect_timeout))??;
        exchange(target, options, tls, deadline).await
    } else {
        exchange(target, options, stream, deadline).await
    }
}

async fn tls_handshake(
    target: &Target,
    options: &FetchOptions,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, FetchError> {
    let tls_error = |why: String| FetchError::Tls {
        url: target.url.clone(),
        why,
    };
    let config = client_config(&options.tls).map_err(tls_error)?;
    let name = match parse_host(&target.host) {
        Host::Ip(ip) => ServerName::IpAddress(ip.into()),
        Host::Name(name) => {
            ServerName::try_from(name).map_err(|e| tls_error(format!("the host name: {e}")))?
        }
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| tls_error(e.to_string()))
}

fn client_config(tls: &TlsVerification) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = match tls {
        TlsVerification::Roots(roots) => builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
        TlsVerification::AcceptAny => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// [`TlsVerification::AcceptAny`]: any certificate, handshake signatures checked.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Sends the `GET` over `io` and reads the answer.
async fn exchange<S>(
    target: &Target,
    options: &FetchOptions,
    io: S,
    deadline: Instant,
) -> Result<Once, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let url = &target.url;
    let http_error = |why: String| FetchError::Http {
        url: url.clone(),
        why,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| http_error(format!("HTTP handshake: {e}")))?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let request = Request::get(target.path.as_str())
        .header(header::HOST, target.authority.as_str())
        .header(header::USER_AGENT, "microvisor-redfish")
        .header(header::ACCEPT, "*/*")
        .body(Empty::<Bytes>::new())
        .map_err(|e| http_error(format!("the request: {e}")))?;
    let response = timeout(options.header_timeout, sender.send_request(request))
        .await
        .map_err(|_| FetchError::Timeout {
            url: url.clone(),
            step: "waiting for the response head",
            after: options.header_timeout,
        })?
        .map_err(|e| http_error(format!("no response: {e}")))?;

    let status = response.status();
    if status.is_redirection() && matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
        let location = response
            .headers()
            .get(header::LOCATION)
            .ok_or_else(|| FetchError::BadRedirect {
                url: url.clone(),
                why: format!("{status} without a Location"),
            })?
            .to_str()
            .map_err(|_| FetchError::BadRedirect {
                url: url.clone(),
                why: "a Location that is not text".into(),
            })?;
        return Ok(Once::Redirect(location.to_string()));
    }
    if !status.is_success() || matches!(status.as_u16(), 204 | 206) {
        return Err(FetchError::Status {
            url: url.clone(),
            status: status.as_u16(),
        });
    }
    let too_large = |declared| FetchError::TooLarge {
        url: url.clone(),
        max: options.max_bytes,
        declared,
    };
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(declared) = declared
        && declared > u64::try_from(options.max_bytes).unwrap_or(u64::MAX)
    {
        return Err(too_large(Some(declared)));
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // A declared length is only a hint for the first allocation.
    let hint = declared.map_or(0, |d| usize::try_from(d).unwrap_or(0).min(16 << 20));
    let mut bytes = Vec::with_capacity(hint);
    let mut body = response.into_body();
    loop {
        let frame = timeout_at(deadline, body.frame())
            .await
            .map_err(|_| FetchError::Timeout {
                url: url.clone(),
                step: "the whole fetch",
                after: options.total_timeout,
            })?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| http_error(format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if data.len() > options.max_bytes - bytes.len() {
                return Err(too_large(declared));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(Once::Body(Fetched {
        url: url.clone(),
        bytes,
        content_type,
    }))
}

/// Why a virtual media URL does not give something to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaFetchError {
    /// The image could not be fetched.
    Fetch(FetchError),
    /// The image (from this URL, after redirects) is not bootable.
    Image { url: String, error: MediaError },
}

impl fmt::Display for MediaFetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaFetchError::Fetch(e) => e.fmt(f),
            MediaFetchError::Image { url, error } => write!(f, "{url}: {error}"),
        }
    }
}

impl std::error::Error for MediaFetchError {}

/// `InsertMedia`'s work: fetches `url` under `options`, then reads what it boots under
/// `limits` ([`crate::iso::boot_media`], on a blocking thread: decompressing a kernel takes a
/// while).
pub async fn fetch_boot_media(
    url: &str,
    options: &FetchOptions,
    limits: &Limits,
) -> Result<BootMedia, MediaFetchError> {
    let fetched = fetch(url, options).await.map_err(MediaFetchError::Fetch)?;
    let limits = *limits;
    let Fetched { url, bytes, .. } = fetched;
    let parsed = tokio::task::spawn_blocking(move || boot_media(&bytes, &limits)).await;
    match parsed {
        Ok(Ok(media)) => Ok(media),
        Ok(Err(error)) => Err(MediaFetchError::Image { url, error }),
        Err(join) => Err(MediaFetchError::Image {
            url,
            error: MediaError::Malformed(format!("reading the image stopped: {join}")),
        }),
    }
}

#[cfg(test)]
mod tests;
