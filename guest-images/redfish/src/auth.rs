//! Who may talk to the service: the one administrator account (Basic authentication) and
//! the sessions it opens (`X-Auth-Token`, Redfish Specification DSP0266 §13.3 "Session
//! management"). Tokens are 128 random bits; sessions end when deleted or after
//! [`SESSION_TIMEOUT_S`] unused. A client that gets the password wrong
//! [`FAILURES_ALLOWED`] times within [`FAILURE_WINDOW_MS`] is refused for [`LOCKOUT_MS`]
//! whatever it sends ([`Throttle`]): the lockout is per client address, so guessing from one
//! host does not lock the account for everyone else.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// Seconds a session may stay unused before it ends (`SessionService.SessionTimeout`).
pub const SESSION_TIMEOUT_S: u64 = 1800;
/// Sessions open at once; logging in beyond it ends the least recently used one.
pub const MAX_SESSIONS: usize = 64;
/// Shortest and longest password the account takes (`AccountService`).
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 64;

/// Wrong passwords a client may send within [`FAILURE_WINDOW_MS`] before it is locked out.
pub const FAILURES_ALLOWED: u32 = 10;
pub const FAILURE_WINDOW_MS: u64 = 60_000;
/// How long a locked-out client is refused.
pub const LOCKOUT_MS: u64 = 60_000;
/// Clients whose failures are remembered at once (the oldest is forgotten beyond).
pub const MAX_TRACKED: usize = 4096;

/// Wrong passwords by client address (`None`: requests whose peer is unknown, one client).
#[derive(Debug, Default)]
pub struct Throttle {
    clients: HashMap<Option<IpAddr>, Failures>,
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    /// When the first failure of the current window was.
    since_ms: u64,
    /// Refused until then (0: not locked).
    locked_until_ms: u64,
}

impl Throttle {
    /// Whether `peer` may try a password now.
    pub fn allowed(&self, peer: Option<IpAddr>, now_ms: u64) -> bool {
        self.clients
            .get(&peer)
            .is_none_or(|f| now_ms >= f.locked_until_ms)
    }

    /// `peer` got it wrong; true when that locked it out (now).
    pub fn failed(&mut self, peer: Option<IpAddr>, now_ms: u64) -> bool {
        if self.clients.len() >= MAX_TRACKED && !self.clients.contains_key(&peer) {
            self.clients.retain(|_, f| {
                now_ms < f.locked_until_ms || now_ms - f.since_ms < FAILURE_WINDOW_MS
            });
            if self.clients.len() >= MAX_TRACKED
                && let Some(oldest) = self
                    .clients
                    .iter()
                    .min_by_key(|(_, f)| f.since_ms)
                    .map(|(peer, _)| *peer)
            {
                self.clients.remove(&oldest);
            }
        }
        let failures = self.clients.entry(peer).or_insert(Failures {
            count: 0,
            since_ms: now_ms,
            locked_until_ms: 0,
        });
        if now_ms.saturating_sub(failures.since_ms) >= FAILURE_WINDOW_MS {
            *failures = Failures {
                count: 0,
                since_ms: now_ms,
                locked_until_ms: 0,
            };
        }
        failures.count += 1;
        if failures.count >= FAILURES_ALLOWED {
            failures.locked_until_ms = now_ms + LOCKOUT_MS;
            failures.count = 0;
            failures.since_ms = now_ms + LOCKOUT_MS;
            return true;
        }
        false
    }

    /// `peer` got it right: its failures are forgotten.
    pub fn succeeded(&mut self, peer: Option<IpAddr>) {
        self.clients.remove(&peer);
    }
}

/// One open session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Its resource id (`/redfish/v1/SessionService/Sessions/<id>`).
    pub id: String,
    pub token: String,
    pub user: String,
    /// When it was last used, in ms of the service's clock.
    pub last_used_ms: u64,
}

/// How the account's password is known.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Secret {
    Plain(String),
    /// Its SHA-256 (what a plan may give, so the password itself is written nowhere).
    Sha256([u8; 32]),
}

/// The account and the open sessions.
#[derive(Debug)]
pub struct Auth {
    user: String,
    password: Secret,
    sessions: BTreeMap<String, Session>,
    next_id: u64,
    throttle: Throttle,
}

/// Who a request is from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Basic credentials of the account.
    Basic(String),
    /// A session's token; its id.
    Session(String),
}

impl Auth {
    pub fn new(user: &str, password: &str) -> Auth {
        Auth::with_secret(user, Secret::Plain(password.to_string()))
    }

    /// The account `user` whose password has this SHA-256 (64 hex digits); `None` if
    /// `sha256` is not that.
    pub fn with_password_sha256(user: &str, sha256: &str) -> Option<Auth> {
        let text = sha256.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Auth::with_secret(user, Secret::Sha256(digest)))
    }

    fn with_secret(user: &str, password: Secret) -> Auth {
        Auth {
            user: user.to_string(),
            password,
            sessions: BTreeMap::new(),
            next_id: 1,
            throttle: Throttle::default(),
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether `user`/`password` are the account's (compared in time independent of where
    /// they differ).
    pub fn check(&self, user: &str, password: &str) -> bool {
        // Both compared, always: no early return that tells which one was wrong.
        let user_ok = same(user.as_bytes(), self.user.as_bytes());
        let password_ok = match &self.password {
            Secret::Plain(known) => same(password.as_bytes(), known.as_bytes()),
            Secret::Sha256(digest) => {
                use sha2::{Digest, Sha256};
                same(&Sha256::digest(password.as_bytes()), digest)
            }
        };
        user_ok & password_ok
    }

    /// [`Auth::check`] for a request from `peer`, throttled: refused while `peer` is locked
    /// out, and a wrong password counts against it.
    fn check_from(
        &mut self,
        peer: Option<IpAddr>,
        user: &str,
        password: &str,
        now_ms: u64,
    ) -> bool {
        if !self.throttle.allowed(peer, now_ms) {
            return false;
        }
        if self.check(user, password) {
            self.throttle.succeeded(peer);
            return true;
        }
        if self.throttle.failed(peer, now_ms) {
            let from = peer.map_or_else(|| "an unknown address".to_string(), |p| p.to_string());
            eprintln!(
                "redfish: {FAILURES_ALLOWED} wrong passwords from {from}: refused for {} s",
                LOCKOUT_MS / 1000
            );
        }
        false
    }

    /// The caller of a request from `peer` with these `Authorization` and `X-Auth-Token`
    /// header values, or `None` (401). A token in use is refreshed.
    pub fn caller(
        &mut self,
        peer: Option<IpAddr>,
        authorization: Option<&str>,
        token: Option<&str>,
        now_ms: u64,
    ) -> Option<Caller> {
        self.expire(now_ms);
        if let Some(token) = token {
            let session = self
                .sessions
                .values_mut()
                .find(|s| same(s.token.as_bytes(), token.as_bytes()))?;
            session.last_used_ms = now_ms;
            return Some(Caller::Session(session.id.clone()));
        }
        let (user, password) = basic_credentials(authorization?)?;
        self.check_from(peer, &user, &password, now_ms)
            .then_some(Caller::Basic(user))
    }

    /// Opens a session for `user`/`password` from `peer`; `None` if they are wrong (or `peer`
    /// is locked out).
    pub fn login(
        &mut self,
        peer: Option<IpAddr>,
        user: &str,
        password: &str,
        now_ms: u64,
    ) -> Option<Session> {
        if !self.check_from(peer, user, password, now_ms) {
            return None;
        }
        self.expire(now_ms);
        if self.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .sessions
                .values()
                .min_by_key(|s| s.last_used_ms)
                .map(|s| s.id.clone())
        {
            self.sessions.remove(&oldest);
        }
        let id = self.next_id.to_string();
        self.next_id += 1;
        let session = Session {
            id: id.clone(),
            token: random_hex(16),
            user: user.to_string(),
            last_used_ms: now_ms,
        };
        self.sessions.insert(id, session.clone());
        Some(session)
    }

    /// Ends session `id`; whether it was open.
    pub fn logout(&mut self, id: &str) -> bool {
        self.sessions.remove(id).is_some()
    }

    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// Open session ids, oldest first.
    pub fn session_ids(&self) -> Vec<String> {
        let mut sessions: Vec<&Session> = self.sessions.values().collect();
        sessions.sort_by_key(|s| s.id.parse::<u64>().unwrap_or(u64::MAX));
        sessions.iter().map(|s| s.id.clone()).collect()
    }

    /// A new password for the account (every session stays open: they were opened by
    /// whoever knew the old one, which is the administrator).
    pub fn set_password(&mut self, password: &str) -> Result<(), String> {
        let chars = password.chars().count();
        if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&chars) {
            return Err(format!(
                "a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters, not {chars}"
            ));
        }
        if password.chars().any(char::is_control) {
            return Err("a password has no control characters".into());
        }
        self.password = Secret::Plain(password.to_string());
        Ok(())
    }

    fn expire(&mut self, now_ms: u64) {
        self.sessions
            .retain(|_, s| now_ms.saturating_sub(s.last_used_ms) < SESSION_TIMEOUT_S * 1000);
    }
}

/// The user and password of a `Basic` `Authorization` value.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Standard base64 (RFC 4648 §4), padding optional; `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() > 1024 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Equal bytes, compared without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (x, y) in a.iter().zip(b.iter().cycle()) {
        diff |= x ^ y;
    }
    diff == 0
}

/// `bytes` random bytes from the kernel, as lower-case hex.
pub fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    // getrandom only fails where the OS has no random source at all; a predictable token
    // would be worse than stopping the service.
    getrandom::fill(&mut raw).expect("the kernel's random source");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// A password of `chars` characters people can type (letters and digits, no look-alikes).
pub fn random_password(chars: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut raw = vec![0u8; chars];
    getrandom::fill(&mut raw).expect("the kernel's random source");
    raw.iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let raw = format!("{user}:{password}").into_bytes();
        let mut out = String::new();
        for chunk in raw.chunks(3) {
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
        format!("Basic {out}")
    }

    #[test]
    fn basic_credentials_are_checked() {
        let mut auth = Auth::new("admin", "s3cret-pass");
        assert_eq!(
            auth.caller(None, Some(&basic("admin", "s3cret-pass")), None, 0),
            Some(Caller::Basic("admin".into()))
        );
        assert_eq!(
            auth.caller(None, Some(&basic("admin", "wrong")), None, 0),
            None
        );
        assert_eq!(
            auth.caller(None, Some(&basic("root", "s3cret-pass")), None, 0),
            None
        );
        assert_eq!(auth.caller(None, Some("Basic !!!"), None, 0), None);
        assert_eq!(auth.caller(None, Some("Bearer abc"), None, 0), None);
        assert_eq!(auth.caller(None, None, None, 0), None);
        // A password may hold colons: only the first one separates.
        let mut auth = Auth::new("admin", "a:b:c:d:e");
        assert!(
            auth.caller(None, Some(&basic("admin", "a:b:c:d:e")), None, 0)
                .is_some()
        );
    }

    #[test]
    fn sessions_open_end_and_expire() {
        let mut auth = Auth::new("admin", "s3cret-pass");
        assert!(auth.login(None, "admin", "nope", 0).is_none());
        let s = auth.login(None, "admin", "s3cret-pass", 0).unwrap();
        assert_eq!(s.token.len(), 32);
        assert_eq!(
            auth.caller(None, None, Some(&s.token), 1000),
            Some(Caller::Session(s.id.clone()))
        );
        // A token wins over Basic: a bad token is refused even with good Basic credentials.
        assert_eq!(
            auth.caller(
                None,
                Some(&basic("admin", "s3cret-pass")),
                Some("bad"),
                1000
            ),
            None
        );
        // Used at 1 s: still open 1799 s later, gone at 1800 s.
        assert!(auth.caller(None, None, Some(&s.token), 1_800_999).is_some());
        assert!(auth.caller(None, None, Some(&s.token), 3_601_000).is_none());
        let t = auth.login(None, "admin", "s3cret-pass", 0).unwrap();
        assert_ne!(t.id, s.id);
        assert!(auth.logout(&t.id));
        assert!(!auth.logout(&t.id));
        assert!(auth.caller(None, None, Some(&t.token), 0).is_none());
    }

    #[test]
    fn wrong_passwords_lock_out_their_client_only_for_a_while() {
        let a: Option<IpAddr> = Some("10.0.2.2".parse().unwrap());
        let b: Option<IpAddr> = Some("10.0.2.3".parse().unwrap());
        let mut auth = Auth::new("admin", "s3cret-pass");
        let right = basic("admin", "s3cret-pass");
        let wrong = basic("admin", "guess");
        // A success forgets earlier failures.
        for _ in 0..FAILURES_ALLOWED - 1 {
            assert_eq!(auth.caller(a, Some(&wrong), None, 0), None);
        }
        assert!(auth.caller(a, Some(&right), None, 0).is_some());
        for _ in 0..FAILURES_ALLOWED - 1 {
            assert_eq!(auth.caller(a, Some(&wrong), None, 10), None);
        }
        // Failures spread beyond the window do not add up.
        assert_eq!(
            auth.caller(a, Some(&wrong), None, 10 + FAILURE_WINDOW_MS),
            None
        );
        assert!(
            auth.caller(a, Some(&right), None, 20 + FAILURE_WINDOW_MS)
                .is_some()
        );
        // The 10th within the window locks `a` out: the right password too, a session login
        // too; `b` and requests without credentials are not concerned.
        let t = 100_000;
        for _ in 0..FAILURES_ALLOWED {
            assert_eq!(auth.caller(a, Some(&wrong), None, t), None);
        }
        assert_eq!(auth.caller(a, Some(&right), None, t + 1), None);
        assert_eq!(auth.login(a, "admin", "s3cret-pass", t + 1), None);
        assert!(auth.caller(b, Some(&right), None, t + 1).is_some());
        let session = auth.login(b, "admin", "s3cret-pass", t + 1).unwrap();
        // A session opened before stays usable from anywhere (its token is the credential).
        assert!(auth.caller(a, None, Some(&session.token), t + 2).is_some());
        // Until the lockout ends.
        assert_eq!(auth.caller(a, Some(&right), None, t + LOCKOUT_MS - 1), None);
        assert!(auth.caller(a, Some(&right), None, t + LOCKOUT_MS).is_some());
    }

    #[test]
    fn the_throttle_remembers_a_bounded_number_of_clients() {
        let mut throttle = Throttle::default();
        for n in 0..(MAX_TRACKED as u32 + 100) {
            let peer = Some(IpAddr::from(n.to_be_bytes()));
            throttle.failed(peer, u64::from(n));
            assert!(throttle.clients.len() <= MAX_TRACKED);
        }
        // A client locked out is kept while it is.
        let locked = Some("192.0.2.1".parse().unwrap());
        for _ in 0..FAILURES_ALLOWED {
            throttle.failed(locked, 10_000);
        }
        for n in 0..(MAX_TRACKED as u32) {
            throttle.failed(Some(IpAddr::from((n + 1_000_000).to_be_bytes())), 10_001);
        }
        assert!(!throttle.allowed(locked, 10_002));
    }

    #[test]
    fn a_login_storm_keeps_at_most_the_limit() {
        let mut auth = Auth::new("admin", "s3cret-pass");
        let first = auth.login(None, "admin", "s3cret-pass", 0).unwrap();
        for i in 1..200 {
            auth.login(None, "admin", "s3cret-pass", i).unwrap();
        }
        assert_eq!(auth.session_ids().len(), MAX_SESSIONS);
        assert!(auth.session(&first.id).is_none(), "the oldest went first");
    }

    #[test]
    fn a_password_may_be_known_by_its_sha256_only() {
        use sha2::{Digest, Sha256};
        let real: String = Sha256::digest(b"s3cret-pass")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut auth = Auth::with_password_sha256("admin", &real).unwrap();
        assert!(auth.check("admin", "s3cret-pass"));
        assert!(!auth.check("admin", "s3cret-pasS"));
        assert!(auth.login(None, "admin", "s3cret-pass", 0).is_some());
        assert!(Auth::with_password_sha256("admin", "xyz").is_none());
        assert!(Auth::with_password_sha256("admin", &"g".repeat(64)).is_none());
        auth.set_password("changed-it").unwrap();
        assert!(auth.check("admin", "changed-it"));
    }

    #[test]
    fn passwords_are_bounded() {
        let mut auth = Auth::new("admin", "s3cret-pass");
        assert!(auth.set_password("short").is_err());
        assert!(auth.set_password(&"x".repeat(65)).is_err());
        assert!(auth.set_password("with\nnewline").is_err());
        auth.set_password("another-one").unwrap();
        assert!(auth.check("admin", "another-one"));
        assert!(!auth.check("admin", "s3cret-pass"));
    }

    #[test]
    fn generated_secrets_look_right() {
        let p = random_password(16);
        assert_eq!(p.len(), 16);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(random_hex(16), random_hex(16));
    }
}
