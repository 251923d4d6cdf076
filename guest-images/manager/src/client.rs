//! [`Client`]: the operations of docs/control.md as typed calls over any [`Transport`], with
//! every answer checked and every wait bounded.

use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, message_line};
use crate::protocol::{
    self, CONSOLE_END, ImageKind, MAX_CMDLINE, MAX_CONSOLE_WRITE, Op, SHUTDOWN_TIMEOUT_MS, Status,
    boot_flags,
};
use crate::status::{NodeStatus, SliceState, SliceStatus, StagedImage};
use crate::transport::{Request, Response, Transport};

/// The initrd of a boot source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InitrdChoice {
    /// The plan's initrd (if it has one).
    #[default]
    Flashed,
    /// The initrd staged last (`stage(.., ImageKind::Initrd, ..)`).
    Staged,
    /// No initrd.
    None,
}

/// A boot source for `BOOT` (docs/control.md, "Boot sources").
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BootSpec {
    /// The kernel staged last, else the flashed kernel.
    pub staged_kernel: bool,
    pub initrd: InitrdChoice,
    /// The whole command line, replacing the flashed one; `None` keeps the flashed one.
    pub cmdline: Option<String>,
}

impl BootSpec {
    /// Its `BOOT` flags (0, the flashed default, when it changes nothing).
    pub fn flags(&self) -> u64 {
        let mut flags = 0;
        if self.staged_kernel {
            flags |= boot_flags::STAGED_KERNEL;
        }
        match self.initrd {
            InitrdChoice::Flashed => {}
            InitrdChoice::Staged => flags |= boot_flags::STAGED_INITRD,
            InitrdChoice::None => flags |= boot_flags::NO_INITRD,
        }
        if self.cmdline.is_some() {
            flags |= boot_flags::CMDLINE;
        }
        flags
    }
}

/// Bytes of a slice's console (`CONSOLE_READ`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConsoleChunk {
    /// Cursor of the first byte returned (above the cursor asked for when bytes were lost).
    pub first: u64,
    /// Cursor after the last byte returned: where the next read starts.
    pub next: u64,
    pub bytes: Vec<u8>,
}

/// How long the client waits between polls and how often it tries again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// Between two `STATUS` polls of a wait.
    pub poll: Duration,
    /// Between two tries of a `CONSOLE_WRITE` the UART took nothing of.
    pub console_retry: Duration,
    /// Tries in a row the UART may take nothing before `console_write` gives up.
    pub console_stalls: u32,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            poll: Duration::from_millis(100),
            console_retry: Duration::from_millis(10),
            console_stalls: 500,
        }
    }
}

/// A client of the control interface over the transport `T`.
#[derive(Debug)]
pub struct Client<T> {
    transport: T,
    pacing: Pacing,
}

impl<T: Transport> Client<T> {
    pub fn new(transport: T) -> Self {
        Client {
            transport,
            pacing: Pacing::default(),
        }
    }

    /// The same client with other waits between polls and tries.
    pub fn with_pacing(mut self, pacing: Pacing) -> Self {
        self.pacing = pacing;
        self
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Runs `request`; a status other than `OK` is [`Error::Refused`] with the
    /// hypervisor's line.
    pub fn call(&mut self, request: &Request<'_>) -> Result<Response, Error> {
        let Some(op) = Op::from_code(request.op) else {
            return Err(Error::InvalidArgument(format!(
                "operation {} is not in version 1",
                request.op
            )));
        };
        if op.has_target() {
            protocol::check_slice_name(request.slice)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        }
        let capacity = self.transport.payload_capacity();
        if request.payload.len() > capacity {
            return Err(Error::InvalidArgument(format!(
                "a payload of {} bytes (the window holds {capacity})",
                request.payload.len()
            )));
        }
        let response = self.transport.execute(request)?;
        if response.payload.len() > capacity {
            return Err(Error::Protocol(format!(
                "a response payload of {} bytes (the window holds {capacity})",
                response.payload.len()
            )));
        }
        match Status::from_code(response.status) {
            Status::Ok => Ok(response),
            status => Err(Error::Refused {
                op,
                status,
                message: message_line(&response.payload),
            }),
        }
    }

    /// `LIST`: every slice's status, in plan order.
    pub fn list(&mut self) -> Result<Vec<SliceStatus>, Error> {
        let response = self.call(&Request::new(Op::List, ""))?;
        parse_json(&response.payload, "LIST")
    }

    /// `NODE`: the hypervisor's version, footprint, heap use and staging pool.
    pub fn node(&mut self) -> Result<NodeStatus, Error> {
        let response = self.call(&Request::new(Op::Node, ""))?;
        parse_json(&response.payload, "NODE")
    }

    /// `STATUS` of `slice`.
    pub fn status(&mut self, slice: &str) -> Result<SliceStatus, Error> {
        let response = self.call(&Request::new(Op::Status, slice))?;
        let status: SliceStatus = parse_json(&response.payload, "STATUS")?;
        if status.name != slice {
            return Err(Error::Protocol(format!(
                "STATUS of \"{slice}\" answered for \"{}\"",
                status.name
            )));
        }
        Ok(status)
    }

    /// `ON`: starts `slice` from its boot source.
    pub fn on(&mut self, slice: &str) -> Result<(), Error> {
        self.call(&Request::new(Op::On, slice)).map(drop)
    }

    /// `OFF`: forces `slice` off at once.
    pub fn off(&mut self, slice: &str) -> Result<(), Error> {
        self.call(&Request::new(Op::Off, slice)).map(drop)
    }

    /// `RESTART`: forced restart (an off slice is started).
    pub fn restart(&mut self, slice: &str) -> Result<(), Error> {
        self.call(&Request::new(Op::Restart, slice)).map(drop)
    }

    /// `SHUTDOWN`: presses `slice`'s power key; the hypervisor forces it off when it is not
    /// off after `timeout` (1 ms ..= 1 h).
    pub fn shutdown(&mut self, slice: &str, timeout: Duration) -> Result<(), Error> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        if !SHUTDOWN_TIMEOUT_MS.contains(&ms) {
            return Err(Error::InvalidArgument(format!(
                "a shutdown timeout of {ms} ms (1 ms to 1 h)"
            )));
        }
        self.call(&Request::new(Op::Shutdown, slice).a0(ms))
            .map(drop)
    }

    /// Stages `bytes` as `slice`'s pending `kind` image (`STAGE_BEGIN`, `STAGE_WRITE` in
    /// chunks of the payload area, `STAGE_END`); returns what the hypervisor holds, its
    /// size checked against `bytes`.
    pub fn stage(
        &mut self,
        slice: &str,
        kind: ImageKind,
        bytes: &[u8],
    ) -> Result<StagedImage, Error> {
        if bytes.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "an empty {} image",
                kind.name()
            )));
        }
        let size = bytes.len() as u64;
        self.call(&Request::new(Op::StageBegin, slice).a0(kind.code()).a1(size))?;
        let chunk = self.transport.payload_capacity().max(1);
        let mut offset = 0u64;
        for part in bytes.chunks(chunk) {
            self.call(
                &Request::new(Op::StageWrite, slice)
                    .a0(kind.code())
                    .a1(offset)
                    .payload(part),
            )?;
            offset += part.len() as u64;
        }
        let response = self.call(&Request::new(Op::StageEnd, slice).a0(kind.code()))?;
        let staged: StagedImage = parse_json(&response.payload, "STAGE_END")?;
        if staged.kind != kind.name() || staged.bytes != size {
            return Err(Error::Protocol(format!(
                "STAGE_END reports a {} of {} bytes, {} bytes of {} were sent",
                staged.kind,
                staged.bytes,
                size,
                kind.name()
            )));
        }
        if staged.sha256.len() != 64 || !staged.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Protocol(format!(
                "STAGE_END's sha256 {:?} is not 64 hex digits",
                staged.sha256
            )));
        }
        Ok(staged)
    }

    /// `BOOT`: `spec` is `slice`'s boot source from its next start on (a `spec` that changes
    /// nothing is the flashed default, as [`Client::boot_default`]).
    pub fn boot(&mut self, slice: &str, spec: &BootSpec) -> Result<(), Error> {
        let payload = match &spec.cmdline {
            Some(cmdline) => {
                if cmdline.len() > MAX_CMDLINE {
                    return Err(Error::InvalidArgument(format!(
                        "a command line of {} bytes (at most {MAX_CMDLINE})",
                        cmdline.len()
                    )));
                }
                if cmdline.contains('\0') {
                    return Err(Error::InvalidArgument(
                        "a command line with a NUL byte".into(),
                    ));
                }
                cmdline.as_bytes()
            }
            None => &[],
        };
        self.call(
            &Request::new(Op::Boot, slice)
                .a0(spec.flags())
                .payload(payload),
        )
        .map(drop)
    }

    /// `BOOT` with the network flag: the flashed firmware boots from the network first from
    /// the next start on (refused unless the slice's status says `network_boot`).
    pub fn boot_network(&mut self, slice: &str) -> Result<(), Error> {
        self.call(&Request::new(Op::Boot, slice).a0(boot_flags::NETWORK))
            .map(drop)
    }

    /// `BOOT` with flags 0: back to the flashed default; the staged images are freed.
    pub fn boot_default(&mut self, slice: &str) -> Result<(), Error> {
        self.boot(slice, &BootSpec::default())
    }

    /// `CONSOLE_READ` from `cursor` ([`protocol::CONSOLE_END`]: nothing, only the end).
    pub fn console_read(&mut self, slice: &str, cursor: u64) -> Result<ConsoleChunk, Error> {
        let response = self.call(&Request::new(Op::ConsoleRead, slice).a0(cursor))?;
        let (first, next) = (response.r0, response.r1);
        if first > next || next - first != response.payload.len() as u64 {
            return Err(Error::Protocol(format!(
                "CONSOLE_READ returned {} bytes for cursors {first}..{next}",
                response.payload.len()
            )));
        }
        if cursor != CONSOLE_END && first < cursor && !response.payload.is_empty() {
            return Err(Error::Protocol(format!(
                "CONSOLE_READ from {cursor} returned bytes from {first}"
            )));
        }
        Ok(ConsoleChunk {
            first,
            next,
            bytes: response.payload,
        })
    }

    /// The cursor after `slice`'s last console byte (to follow only new output).
    pub fn console_end(&mut self, slice: &str) -> Result<u64, Error> {
        Ok(self.console_read(slice, CONSOLE_END)?.next)
    }

    /// Everything `slice`'s console ring holds, up to the end when called.
    pub fn console_history(&mut self, slice: &str) -> Result<Vec<u8>, Error> {
        let end = self.console_end(slice)?;
        let mut cursor = 0;
        let mut out = Vec::new();
        // The ring is far smaller than the window; bounded anyway.
        for _ in 0..64 {
            if cursor >= end {
                break;
            }
            let chunk = self.console_read(slice, cursor)?;
            if chunk.bytes.is_empty() {
                break;
            }
            let keep = (end.min(chunk.next) - chunk.first) as usize;
            out.extend_from_slice(&chunk.bytes[..keep]);
            cursor = chunk.next;
        }
        Ok(out)
    }

    /// The last `lines` lines of `slice`'s console (a partial last line counts as one).
    pub fn console_tail(&mut self, slice: &str, lines: usize) -> Result<Vec<u8>, Error> {
        Ok(last_lines(&self.console_history(slice)?, lines).to_vec())
    }

    /// `CONSOLE_WRITE` of as much of `bytes` as the UART takes now (at most 4096); returns
    /// how many it took.
    pub fn console_write_some(&mut self, slice: &str, bytes: &[u8]) -> Result<usize, Error> {
        let part = &bytes[..bytes.len().min(MAX_CONSOLE_WRITE)];
        let response = self.call(&Request::new(Op::ConsoleWrite, slice).payload(part))?;
        if response.r0 > part.len() as u64 {
            return Err(Error::Protocol(format!(
                "CONSOLE_WRITE of {} bytes says {} were taken",
                part.len(),
                response.r0
            )));
        }
        Ok(response.r0 as usize)
    }

    /// Sends all of `bytes` to `slice`'s UART, trying again with what it did not take; gives
    /// up when it takes nothing [`Pacing::console_stalls`] times in a row.
    pub fn console_write(&mut self, slice: &str, bytes: &[u8]) -> Result<(), Error> {
        let mut rest = bytes;
        let mut stalls = 0;
        while !rest.is_empty() {
            let took = self.console_write_some(slice, rest)?;
            if took == 0 {
                stalls += 1;
                if stalls >= self.pacing.console_stalls {
                    return Err(Error::Timeout(format!(
                        "slice \"{slice}\"'s UART took none of {} bytes in {stalls} tries",
                        rest.len()
                    )));
                }
                thread::sleep(self.pacing.console_retry);
            } else {
                stalls = 0;
                rest = &rest[took..];
            }
        }
        Ok(())
    }

    /// `ERASE`: starts wiping `slice`'s NVMe share (it runs on; see [`Client::wait_erased`]).
    pub fn erase(&mut self, slice: &str) -> Result<(), Error> {
        self.call(&Request::new(Op::Erase, slice)).map(drop)
    }

    /// Polls `slice`'s status until `done` holds, at most `timeout`; returns that status.
    pub fn wait_until(
        &mut self,
        slice: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&SliceStatus) -> bool,
    ) -> Result<SliceStatus, Error> {
        let start = Instant::now();
        loop {
            let status = self.status(slice)?;
            if done(&status) {
                return Ok(status);
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout(format!(
                    "slice \"{slice}\" is {} after {} s, not {what}",
                    status.state,
                    timeout.as_secs_f64()
                )));
            }
            thread::sleep(
                self.pacing
                    .poll
                    .min(timeout.saturating_sub(start.elapsed())),
            );
        }
    }

    /// Waits until `slice` is in `state`.
    pub fn wait_for_state(
        &mut self,
        slice: &str,
        state: SliceState,
        timeout: Duration,
    ) -> Result<SliceStatus, Error> {
        let what = state.to_string();
        self.wait_until(slice, timeout, &what, |s| s.state == state)
    }

    /// Waits until `slice` is no longer erasing; returns its status (`last_erase` has the
    /// report).
    pub fn wait_erased(&mut self, slice: &str, timeout: Duration) -> Result<SliceStatus, Error> {
        self.wait_until(slice, timeout, "done erasing", |s| {
            s.state != SliceState::Erasing
        })
    }
}

/// The JSON payload of `op`, or a protocol error that says why not.
fn parse_json<V: serde::de::DeserializeOwned>(payload: &[u8], op: &str) -> Result<V, Error> {
    serde_json::from_slice(payload).map_err(|e| Error::Protocol(format!("{op}: {e}")))
}

/// The last `lines` lines of `text` (a partial last line counts as one).
pub fn last_lines(text: &[u8], lines: usize) -> &[u8] {
    if lines == 0 {
        return &text[text.len()..];
    }
    // Skip a final newline, then find the `lines`-th newline from the end.
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (at, &b) in body.iter().enumerate().rev() {
        if b == b'\n' {
            seen += 1;
            if seen == lines {
                return &text[at + 1..];
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_specs_map_to_the_documented_flags() {
        assert_eq!(BootSpec::default().flags(), 0);
        let spec = BootSpec {
            staged_kernel: true,
            initrd: InitrdChoice::Staged,
            cmdline: Some("quiet".into()),
        };
        assert_eq!(spec.flags(), 1 | 2 | 8);
        let spec = BootSpec {
            staged_kernel: false,
            initrd: InitrdChoice::None,
            cmdline: None,
        };
        assert_eq!(spec.flags(), 4);
    }

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\nc\n", 5), b"a\nb\nc\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
        assert_eq!(last_lines(b"", 3), b"");
        assert_eq!(last_lines(b"\n\n", 1), b"\n");
    }
}
