//! Pages the host fetches from a slice while a scenario runs: once a given console line has
//! appeared, `GET /` from `127.0.0.1:<port>`, the loopback port QEMU forwards to port 80 of the
//! slice's host NIC (`xtask::qemu::HostForward`), retried until the page contains the expected
//! text or a bound passes. Each fetch is an expectation like the console ones: pending until it
//! succeeded, a violation (failing the run at once) when it did not within its bound.
//!
//! The runner owns a [`Fetcher`]; the fetches run on their own threads so console lines keep
//! being read meanwhile, and report back with [`Fetcher::finish`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::console::Line;
use crate::expect::Pattern;

/// How long a fetch retries by default: a TCG guest under load may take a while to answer.
pub const HOST_GET_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound of one try (connect, send, read).
const TRY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between tries.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Characters of a wrong body quoted in a failure message.
const BODY_QUOTE: usize = 120;

/// A page the host fetches from a slice (what a scenario asks for).
#[derive(Clone, Debug)]
pub struct HostGet {
    /// The slice whose host NIC (a `network = "host"` function it was given) is fetched from.
    pub slice: String,
    /// The fetch starts after the `nth` line matching this (1 = the first).
    pub after: Pattern,
    pub nth: usize,
    /// The page's body must contain this text.
    pub contains: String,
    /// The fetch retries for this long.
    pub timeout: Duration,
    /// Instead of fetching `/`: this program of requests runs (on its own thread) and its
    /// result is the fetch's.
    pub script: Option<HostScript>,
}

/// A program the host runs against a slice's forwarded ports once its trigger line appears
/// (e.g. a Redfish client): `Ok` with a summary for the log, or why it failed.
#[derive(Clone)]
pub struct HostScript(pub Arc<ScriptFn>);

/// The function of a [`HostScript`].
pub type ScriptFn = dyn Fn(&HostSession) -> Result<String, String> + Send + Sync;

impl fmt::Debug for HostScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HostScript")
    }
}

/// What a [`HostScript`] gets: the ports, its trigger line and the console as it grows.
#[derive(Clone, Debug)]
pub struct HostSession {
    /// Loopback ports forwarded to the NIC's ports 80 and 443.
    pub port: u16,
    pub https_port: u16,
    /// The console line that started the script.
    pub trigger: String,
    pub console: ConsoleTap,
}

/// Every console line of the run so far, shared with host scripts.
#[derive(Clone, Debug, Default)]
pub struct ConsoleTap(Arc<Mutex<Vec<String>>>);

impl ConsoleTap {
    pub fn push(&self, line: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.to_string());
    }

    /// Lines so far.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first line at index `from` or later containing `text`, waiting up to `timeout`;
    /// its index and text.
    pub fn wait_for(
        &self,
        from: usize,
        text: &str,
        timeout: Duration,
    ) -> Result<(usize, String), String> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((i, line)) = lines
                    .iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, l)| l.contains(text))
                {
                    return Ok((i, line.clone()));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no console line containing {text:?} after line {from} within {} s",
                    timeout.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How many lines at index `from` or later contain `text`.
    pub fn count(&self, from: usize, text: &str) -> usize {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().skip(from).filter(|l| l.contains(text)).count()
    }
}

/// A [`HostGet`] with the port and NIC it goes through in this boot.
#[derive(Clone, Debug)]
pub struct PortGet {
    pub get: HostGet,
    /// Loopback ports forwarded to the NIC's ports 80 and 443.
    pub port: u16,
    pub https_port: u16,
    /// The NIC's address on the node (`02:00.0`), for messages.
    pub nic: String,
}

impl fmt::Display for PortGet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.get;
        write!(
            f,
            "host GET http://127.0.0.1:{}/ (slice {}'s host NIC {}) ",
            self.port, g.slice, self.nic
        )?;
        if g.nth == 1 {
            write!(f, "after {}", g.after)?;
        } else {
            write!(f, "after line {} of {}", g.nth, g.after)?;
        }
        match &g.script {
            Some(_) => write!(f, " running a host script"),
            None => write!(f, " with a page containing {:?}", g.contains),
        }
    }
}

/// Progress of one fetch.
#[derive(Clone, Debug)]
enum State {
    /// Trigger lines seen so far.
    Waiting(usize),
    /// Started after console line `line`.
    Running {
        line: usize,
    },
    Passed {
        line: usize,
        summary: String,
    },
    Failed(String),
}

/// The fetches of one run: which to start after a line, which are pending, which failed.
#[derive(Clone, Debug)]
pub struct Fetcher {
    gets: Vec<(PortGet, State)>,
    lines: usize,
}

impl Fetcher {
    pub fn new(gets: Vec<PortGet>) -> Fetcher {
        Fetcher {
            gets: gets.into_iter().map(|g| (g, State::Waiting(0))).collect(),
            lines: 0,
        }
    }

    /// Feeds one console line; returns the fetches to start now (index and what to fetch).
    /// Each starts once.
    pub fn observe(&mut self, line: &Line, raw: &str) -> Vec<(usize, PortGet)> {
        self.lines += 1;
        let mut start = Vec::new();
        for (index, (get, state)) in self.gets.iter_mut().enumerate() {
            if let State::Waiting(seen) = state
                && get.get.after.matches(line, raw)
            {
                *seen += 1;
                if *seen >= get.get.nth {
                    *state = State::Running { line: self.lines };
                    start.push((index, get.clone()));
                }
            }
        }
        start
    }

    /// Records what fetch `index` got: `Ok` with a summary of the page, or why not.
    pub fn finish(&mut self, index: usize, result: Result<String, String>) {
        let Some((get, state)) = self.gets.get_mut(index) else {
            return;
        };
        let line = match state {
            State::Running { line } => *line,
            _ => return,
        };
        *state = match result {
            Ok(summary) => State::Passed { line, summary },
            Err(why) => State::Failed(format!("{get}, started after line {line}: {why}")),
        };
    }

    /// The first failed fetch, described.
    pub fn violation(&self) -> Option<&str> {
        self.gets.iter().find_map(|(_, s)| match s {
            State::Failed(why) => Some(why.as_str()),
            _ => None,
        })
    }

    /// The fetches not done yet, described (running ones say so).
    pub fn pending(&self) -> Vec<String> {
        self.gets
            .iter()
            .filter_map(|(g, s)| match s {
                State::Waiting(_) => Some(g.to_string()),
                State::Running { line } => Some(format!("{g} (running since line {line})")),
                _ => None,
            })
            .collect()
    }

    pub fn satisfied(&self) -> bool {
        self.gets
            .iter()
            .all(|(_, s)| matches!(s, State::Passed { .. }))
    }

    /// One line per fetch for the log: what it got.
    pub fn report(&self) -> Vec<String> {
        self.gets
            .iter()
            .map(|(g, s)| match s {
                State::Waiting(_) => format!("{g}: never started"),
                State::Running { line } => format!("{g}: started after line {line}, unfinished"),
                State::Passed { line, summary } => {
                    format!("{g}: ok after line {line}: {summary}")
                }
                State::Failed(why) => format!("FAILED: {why}"),
            })
            .collect()
    }
}

/// Does what `get` asks, on the calling thread: its script, or [`fetch`].
pub fn perform(get: &PortGet, trigger: &str, console: &ConsoleTap) -> Result<String, String> {
    match &get.get.script {
        Some(script) => (script.0)(&HostSession {
            port: get.port,
            https_port: get.https_port,
            trigger: trigger.to_string(),
            console: console.clone(),
        }),
        None => fetch(get.port, &get.get.contains, get.get.timeout),
    }
}

/// `GET /` from `127.0.0.1:port` until an answer's status is 200 and its body contains
/// `contains`, for at most `timeout` (each try bounded). `Ok` gives the status and the start of
/// the body; `Err` the last answer or error.
pub fn fetch(port: u16, contains: &str, timeout: Duration) -> Result<String, String> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut tries = 0;
    let mut last = String::from("no try");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tries += 1;
        match xtask::http::get(port, left.min(TRY_TIMEOUT)) {
            Ok(r) if r.status == 200 && r.body.contains(contains) => {
                return Ok(format!(
                    "status 200 after {tries} tries in {:.1} s, body {:?}",
                    started.elapsed().as_secs_f64(),
                    quote(&r.body)
                ));
            }
            Ok(r) => last = format!("last answer: status {} body {:?}", r.status, quote(&r.body)),
            Err(e) => last = format!("last error: {e:#}"),
        }
        std::thread::sleep(RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now())));
    }
    Err(format!(
        "no page containing {contains:?} within {} s ({tries} tries); {last}",
        timeout.as_secs()
    ))
}

/// The first [`BODY_QUOTE`] characters of `body`.
fn quote(body: &str) -> String {
    let mut s: String = body.chars().take(BODY_QUOTE).collect();
    if body.chars().count() > BODY_QUOTE {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expect::slice;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// Serves `answers` in order, one connection each, on a free loopback port.
    fn server(answers: Vec<&'static str>) -> u16 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for answer in answers {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = s.write_all(answer.as_bytes());
            }
        });
        port
    }

    fn get(after: &str, nth: usize) -> PortGet {
        PortGet {
            get: HostGet {
                slice: "web".into(),
                after: slice("web", after),
                nth,
                contains: "<h1>slice web</h1>".into(),
                script: None,
                timeout: Duration::from_secs(5),
            },
            port: 4242,
            https_port: 4243,
            nic: "02:00.0".into(),
        }
    }

    #[test]
    fn fetch_retries_until_the_page_names_the_slice() {
        let port = server(vec![
            "",
            "HTTP/1.0 404 Not Found\r\n\r\nnope",
            "HTTP/1.0 200 OK\r\n\r\n<h1>slice web</h1>\n",
        ]);
        let ok = fetch(port, "<h1>slice web</h1>", Duration::from_secs(20)).unwrap();
        assert!(ok.contains("after 3 tries"), "{ok}");
    }

    #[test]
    fn fetch_names_the_last_answer_when_it_gives_up() {
        let port = server(vec!["HTTP/1.0 200 OK\r\n\r\n<h1>slice db</h1>\n"; 50]);
        let why = fetch(port, "<h1>slice web</h1>", Duration::from_millis(1200)).unwrap_err();
        assert!(
            why.contains("no page containing \"<h1>slice web</h1>\" within 1 s")
                && why.contains("last answer: status 200 body \"<h1>slice db</h1>\\n\""),
            "{why}"
        );
        // Nobody listening: the error says so.
        let closed = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let why = fetch(port, "x", Duration::from_millis(600)).unwrap_err();
        assert!(why.contains("last error:"), "{why}");
    }

    #[test]
    fn fetches_start_after_their_nth_line_and_are_pending_until_done() {
        let mut f = Fetcher::new(vec![get("^HTTPD 80 started$", 2)]);
        let httpd = Line::parse("[web] HTTPD 80 started");
        assert!(
            f.observe(&Line::parse("[db] HTTPD 80 started"), "")
                .is_empty()
        );
        assert!(
            f.observe(&httpd, "").is_empty(),
            "the first is not the second"
        );
        assert!(f.pending()[0].contains("after line 2 of [web] /^HTTPD 80 started$/"));
        let start = f.observe(&httpd, "");
        assert_eq!(start.len(), 1);
        assert_eq!((start[0].0, start[0].1.port), (0, 4242));
        assert!(f.observe(&httpd, "").is_empty(), "started once");
        assert!(f.pending()[0].ends_with("(running since line 3)"));
        assert!(!f.satisfied() && f.violation().is_none());
        f.finish(0, Ok("status 200".into()));
        assert!(f.satisfied() && f.pending().is_empty());
        assert!(f.report()[0].contains(": ok after line 3: status 200"));
    }

    #[test]
    fn a_failed_fetch_is_a_violation_naming_the_slice_nic_and_port() {
        let mut f = Fetcher::new(vec![get("^HTTPD", 1)]);
        f.observe(&Line::parse("[web] HTTPD 80 started"), "");
        f.finish(0, Err("no page containing ...".into()));
        let why = f.violation().unwrap();
        assert!(
            why.starts_with("host GET http://127.0.0.1:4242/ (slice web's host NIC 02:00.0) after")
                && why.contains("started after line 1: no page containing"),
            "{why}"
        );
        assert!(!f.satisfied());
    }
}
