//! [`FakeHypervisor`]: an in-memory model of the hypervisor side of docs/control.md, for the
//! host tests of clients (feature `fake`). It reads requests from header bytes as the
//! hypervisor does ([`FakeHypervisor::execute_raw`]) and answers with the documented status
//! codes and one-line messages; time is simulated (every request advances it by
//! [`FakeHypervisor::tick_ms`]) so shutdown deadlines, erases and UART draining happen in a
//! few requests.

use std::collections::VecDeque;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::protocol::{
    CONSOLE_END, ImageKind, MAX_CMDLINE, MAX_CONSOLE_WRITE, MAX_PAYLOAD, Op, REQUEST_LEN,
    REQUEST_MAGIC, RequestHeader, ResponseHeader, SHUTDOWN_TIMEOUT_MS, Status, boot_flags,
};
use crate::transport::{Request, Response, Transport};

/// Bytes of console output kept per slice (docs/control.md, "Console").
pub const CONSOLE_RING: usize = 64 * 1024;
/// What a started slice prints first in the fake: `FAKE-BOOT kernel=.. initrd=.. cmdline=..`.
pub const BOOT_LINE: &str = "FAKE-BOOT";
/// Bytes the fake reserves for the device tree when it checks that images fit.
const DT_RESERVE: u64 = 64 * 1024;

/// A flashed image: its label, size and hash as the status shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlashedImage {
    pub label: String,
    pub bytes: u64,
}

/// A slice of the fake node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeSliceSpec {
    pub name: String,
    pub manager: bool,
    pub cores: Vec<u32>,
    pub memory_bytes: u64,
    /// `(bytes, queues)` of its NVMe share.
    pub nvme: Option<(u64, u32)>,
    /// `(host, slot, id, mac)` of its NICs.
    pub nics: Vec<(String, String, String, Option<String>)>,
    /// On when the node starts.
    pub on: bool,
    pub kernel: FlashedImage,
    pub initrd: Option<FlashedImage>,
    pub cmdline: String,
    /// Powers off when its power key is pressed (after `FakeHypervisor::shutdown_reaction_ms`).
    pub honours_power_key: bool,
    /// Bytes its UART's receive FIFO takes per tick (0: it takes nothing).
    pub uart_fifo: usize,
    /// Its flashed kernel is firmware that can boot from the network first.
    pub network_boot: bool,
}

impl FakeSliceSpec {
    /// A Linux tenant with 512 MiB on core 1, on.
    pub fn tenant(name: &str) -> Self {
        FakeSliceSpec {
            name: name.into(),
            manager: false,
            cores: vec![1],
            memory_bytes: 512 << 20,
            nvme: None,
            nics: Vec::new(),
            on: true,
            kernel: FlashedImage {
                label: "linux".into(),
                bytes: 27_303_872,
            },
            initrd: Some(FlashedImage {
                label: "linux-initramfs".into(),
                bytes: 1_321_399,
            }),
            cmdline: "console=ttyAMA0".into(),
            honours_power_key: true,
            uart_fifo: 32,
            network_boot: false,
        }
    }

    /// A slice that boots firmware (U-Boot) that can boot from the network (give it a NIC).
    pub fn firmware(name: &str) -> Self {
        FakeSliceSpec {
            kernel: FlashedImage {
                label: "u-boot".into(),
                bytes: 971_304,
            },
            initrd: None,
            cmdline: String::new(),
            network_boot: true,
            ..Self::tenant(name)
        }
    }

    /// The manager (a Linux slice on core 0).
    pub fn manager(name: &str) -> Self {
        FakeSliceSpec {
            manager: true,
            cores: vec![0],
            ..Self::tenant(name)
        }
    }

    /// A bare-metal probe slice (no initrd, ignores the power key).
    pub fn probe(name: &str) -> Self {
        FakeSliceSpec {
            memory_bytes: 64 << 20,
            kernel: FlashedImage {
                label: "probe".into(),
                bytes: 200_000,
            },
            initrd: None,
            cmdline: String::new(),
            honours_power_key: false,
            ..Self::tenant(name)
        }
    }

    pub fn cores(mut self, cores: &[u32]) -> Self {
        self.cores = cores.to_vec();
        self
    }

    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory_bytes = bytes;
        self
    }

    pub fn nvme(mut self, bytes: u64, queues: u32) -> Self {
        self.nvme = Some((bytes, queues));
        self
    }

    pub fn nic(mut self, host: &str, slot: &str, mac: Option<&str>) -> Self {
        self.nics.push((
            host.into(),
            slot.into(),
            "1af4:1041".into(),
            mac.map(Into::into),
        ));
        self
    }

    pub fn off(mut self) -> Self {
        self.on = false;
        self
    }

    pub fn ignores_power_key(mut self) -> Self {
        self.honours_power_key = false;
        self
    }

    pub fn uart_fifo(mut self, bytes: usize) -> Self {
        self.uart_fifo = bytes;
        self
    }
}

/// A staged image the fake holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    bytes: Vec<u8>,
    sha256: String,
    /// Set by [`FakeHypervisor::corrupt_staged`]: the bytes no longer match the hash.
    changed: bool,
}

/// An image being staged.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    size: u64,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    On,
    Off,
    ShuttingDown {
        deadline_ms: u64,
        powers_off_at_ms: Option<u64>,
    },
    Erasing {
        done_at_ms: u64,
    },
}

/// One slice's state in the fake.
#[derive(Clone, Debug)]
struct FakeSlice {
    spec: FakeSliceSpec,
    state: State,
    starts: u64,
    started_at_ms: u64,
    last_stop: Option<String>,
    scrub: Option<(u64, u64)>,
    last_erase: Option<Value>,
    /// Pending and staged images by kind (0 kernel, 1 initrd).
    pending: [Option<Pending>; 2],
    staged: [Option<Held>; 2],
    boot_flags: u64,
    boot_cmdline: Option<String>,
    console: VecDeque<u8>,
    console_total: u64,
    /// Bytes in the UART's receive FIFO (drained every tick).
    uart_held: usize,
    /// Everything the slice received on its UART.
    input: Vec<u8>,
    exits: u64,
}

impl FakeSlice {
    fn new(spec: FakeSliceSpec) -> Self {
        let mut slice = FakeSlice {
            state: State::Off,
            starts: 0,
            started_at_ms: 0,
            last_stop: None,
            scrub: None,
            last_erase: None,
            pending: [None, None],
            staged: [None, None],
            boot_flags: 0,
            boot_cmdline: None,
            console: VecDeque::new(),
            console_total: 0,
            uart_held: 0,
            input: Vec::new(),
            exits: 0,
            spec,
        };
        if slice.spec.on {
            slice.start(0);
        }
        slice
    }

    fn is_on(&self) -> bool {
        matches!(self.state, State::On | State::ShuttingDown { .. })
    }

    fn output(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.console.len() == CONSOLE_RING {
                self.console.pop_front();
            }
            self.console.push_back(b);
        }
        self.console_total += bytes.len() as u64;
    }

    fn kernel_label(&self) -> String {
        match &self.staged[0] {
            Some(_) if self.boot_flags & boot_flags::STAGED_KERNEL != 0 => "staged".into(),
            _ => self.spec.kernel.label.clone(),
        }
    }

    fn initrd_label(&self) -> Option<String> {
        if self.boot_flags & boot_flags::NO_INITRD != 0 {
            None
        } else if self.boot_flags & boot_flags::STAGED_INITRD != 0 {
            Some("staged".into())
        } else {
            self.spec.initrd.as_ref().map(|i| i.label.clone())
        }
    }

    fn cmdline(&self) -> String {
        self.boot_cmdline
            .clone()
            .unwrap_or_else(|| self.spec.cmdline.clone())
    }

    /// The staged images the boot source uses, changed ones first.
    fn uses_changed_image(&self) -> bool {
        let uses = [
            self.boot_flags & boot_flags::STAGED_KERNEL != 0,
            self.boot_flags & boot_flags::STAGED_INITRD != 0,
        ];
        uses.iter()
            .zip(&self.staged)
            .any(|(used, held)| *used && held.as_ref().is_some_and(|h| h.changed))
    }

    fn start(&mut self, now_ms: u64) {
        self.state = State::On;
        self.starts += 1;
        self.started_at_ms = now_ms;
        self.scrub = Some((self.spec.memory_bytes, self.spec.memory_bytes >> 22));
        self.exits = 0;
        let network = if self.boot_flags == boot_flags::NETWORK {
            " network-first"
        } else {
            ""
        };
        let line = format!(
            "{BOOT_LINE} kernel={}{network} initrd={} cmdline={}\n",
            self.kernel_label(),
            self.initrd_label().unwrap_or_else(|| "none".into()),
            self.cmdline()
        );
        self.output(line.as_bytes());
    }

    fn stop(&mut self, reason: &str) {
        self.state = State::Off;
        self.last_stop = Some(reason.into());
        self.uart_held = 0;
    }

    fn status_json(&self, now_ms: u64) -> Value {
        let state = match self.state {
            State::On => "on",
            State::Off => "off",
            State::ShuttingDown { .. } => "shutting-down",
            State::Erasing { .. } => "erasing",
        };
        let staged_kernel = self
            .staged
            .first()
            .and_then(|h| h.as_ref())
            .filter(|_| self.boot_flags & boot_flags::STAGED_KERNEL != 0);
        let (kernel_bytes, kernel_sha) = match staged_kernel {
            Some(held) => (held.bytes.len() as u64, Value::from(held.sha256.clone())),
            None => (self.spec.kernel.bytes, Value::from("0".repeat(64))),
        };
        let initrd = self.initrd_label();
        let (initrd_bytes, initrd_sha) = if initrd.is_none() {
            (Value::Null, Value::Null)
        } else if self.boot_flags & boot_flags::STAGED_INITRD != 0 {
            let held = self.staged[1].as_ref();
            (
                held.map_or(Value::Null, |h| Value::from(h.bytes.len())),
                held.map_or(Value::Null, |h| Value::from(h.sha256.clone())),
            )
        } else {
            (
                self.spec
                    .initrd
                    .as_ref()
                    .map_or(Value::Null, |i| Value::from(i.bytes)),
                Value::from("1".repeat(64)),
            )
        };
        json!({
            "name": self.spec.name,
            "role": if self.spec.manager { "manager" } else { "tenant" },
            "state": state,
            "cores": self.spec.cores,
            "memory_bytes": self.spec.memory_bytes,
            "nvme": self.spec.nvme.map(|(bytes, queues)| json!({"bytes": bytes, "queues": queues})),
            "nics": self.spec.nics.iter().map(|(host, slot, id, mac)| {
                json!({"host": host, "slot": slot, "id": id, "mac": mac})
            }).collect::<Vec<_>>(),
            "network_boot": self.spec.network_boot,
            "uptime_ms": if self.is_on() { now_ms - self.started_at_ms } else { 0 },
            "starts": self.starts,
            "boot": {
                "source": match self.boot_flags {
                    0 => "flashed",
                    boot_flags::NETWORK => "network",
                    _ => "staged",
                },
                "kernel": self.kernel_label(),
                "kernel_bytes": kernel_bytes,
                "kernel_sha256": kernel_sha,
                "initrd": initrd,
                "initrd_bytes": initrd_bytes,
                "initrd_sha256": initrd_sha,
                "cmdline": self.cmdline(),
            },
            "last_stop": self.last_stop,
            "scrub": self.scrub.map(|(bytes, ms)| json!({"bytes": bytes, "ms": ms})),
            "last_erase": self.last_erase,
            "exits": {"total": self.exits, "mmio": self.exits / 2},
        })
    }
}

/// What the hypervisor did with one read of `EXECUTE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawOutcome {
    /// The value `EXECUTE` returned.
    pub execute: u64,
    /// The response header and payload written to the window; `None` when the window was
    /// not touched (another request was running).
    pub response: Option<(ResponseHeader, Vec<u8>)>,
}

/// A status and its message (a refusal) or an answer.
type Answer = Result<(u64, u64, Vec<u8>), (Status, String)>;

/// The fake node: its slices and the staging pool.
#[derive(Clone, Debug)]
pub struct FakeHypervisor {
    slices: Vec<FakeSlice>,
    now_ms: u64,
    /// Simulated milliseconds each request takes.
    pub tick_ms: u64,
    /// Bytes of the payload area.
    pub capacity: usize,
    /// Bytes of the staging pool.
    pub pool_bytes: u64,
    /// Simulated milliseconds between a power key press and the guest's power-off.
    pub shutdown_reaction_ms: u64,
    /// Simulated milliseconds an erase takes.
    pub erase_ms: u64,
    /// While set, every request finds another one running (`BUSY`, window untouched).
    pub busy: bool,
    /// Every request read, as (op code, slice field as read, status).
    log: Vec<(u32, String, Status)>,
}

impl FakeHypervisor {
    /// A node with `slices`, a 2 MiB window and a 128 MiB staging pool.
    pub fn new(slices: Vec<FakeSliceSpec>) -> Self {
        FakeHypervisor {
            slices: slices.into_iter().map(FakeSlice::new).collect(),
            now_ms: 0,
            tick_ms: 10,
            capacity: MAX_PAYLOAD,
            pool_bytes: 128 << 20,
            shutdown_reaction_ms: 300,
            erase_ms: 500,
            busy: false,
            log: Vec::new(),
        }
    }

    /// The default node's shape: `ctl` (the manager), `web` and `db` (Linux, NVMe, a NIC),
    /// `probe` (bare metal).
    pub fn default_node() -> Self {
        FakeHypervisor::new(vec![
            FakeSliceSpec::manager("ctl"),
            FakeSliceSpec::tenant("web")
                .cores(&[1, 2])
                .nvme(4 << 30, 3)
                .nic("01:00.0", "00:01.0", Some("52:54:00:6d:76:00")),
            FakeSliceSpec::tenant("db")
                .cores(&[3])
                .nvme(2 << 30, 2)
                .nic("02:00.0", "00:01.0", None),
            FakeSliceSpec::probe("probe").cores(&[4]),
        ])
    }

    /// The same node with a payload area of `capacity` bytes.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Simulated time since the node started.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Lets `ms` of simulated time pass.
    pub fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        let now = self.now_ms;
        for slice in &mut self.slices {
            slice.uart_held = 0;
            if slice.is_on() {
                slice.exits += 3;
            }
            match slice.state {
                State::ShuttingDown {
                    powers_off_at_ms: Some(at),
                    ..
                } if at <= now => slice.stop("powered off (PSCI SYSTEM_OFF)"),
                State::ShuttingDown { deadline_ms, .. } if deadline_ms <= now => {
                    slice.stop("forced off: shutdown timeout")
                }
                State::Erasing { done_at_ms } if done_at_ms <= now => {
                    slice.state = State::Off;
                    let bytes = slice.spec.nvme.map_or(0, |(b, _)| b);
                    slice.last_erase = Some(
                        json!({"result": "ok", "bytes": bytes, "wipe": "write-zeroes", "commands": 3, "ms": 500}),
                    );
                }
                _ => {}
            }
        }
    }

    fn slice_mut(&mut self, name: &str) -> Option<&mut FakeSlice> {
        self.slices.iter_mut().find(|s| s.spec.name == name)
    }

    fn slice(&self, name: &str) -> &FakeSlice {
        self.slices
            .iter()
            .find(|s| s.spec.name == name)
            .unwrap_or_else(|| panic!("the fake node has no slice {name:?}"))
    }

    /// Guest output: `bytes` appended to `slice`'s console ring.
    pub fn guest_output(&mut self, slice: &str, bytes: &[u8]) {
        if let Some(s) = self.slice_mut(slice) {
            s.output(bytes);
        }
    }

    /// Everything `slice` received on its UART.
    pub fn input(&self, slice: &str) -> &[u8] {
        &self.slice(slice).input
    }

    /// `slice`'s whole console ring.
    pub fn console(&self, slice: &str) -> Vec<u8> {
        self.slice(slice).console.iter().copied().collect()
    }

    /// `slice`'s state as the status names it.
    pub fn state(&self, slice: &str) -> String {
        self.slice(slice).status_json(self.now_ms)["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// How often `slice` was started.
    pub fn starts(&self, slice: &str) -> u64 {
        self.slice(slice).starts
    }

    /// Bytes of the staging pool in use (pending and staged images).
    pub fn pool_used(&self) -> u64 {
        self.slices
            .iter()
            .map(|s| {
                s.pending.iter().flatten().map(|p| p.size).sum::<u64>()
                    + s.staged
                        .iter()
                        .flatten()
                        .map(|h| h.bytes.len() as u64)
                        .sum::<u64>()
            })
            .sum()
    }

    /// Changes a byte of `slice`'s staged `kind` image behind the hash (the next start from
    /// it is refused with `BAD_IMAGE`).
    pub fn corrupt_staged(&mut self, slice: &str, kind: ImageKind) {
        if let Some(held) = self
            .slice_mut(slice)
            .and_then(|s| s.staged[kind.code() as usize].as_mut())
        {
            held.changed = true;
            if let Some(b) = held.bytes.first_mut() {
                *b ^= 0xff;
            }
        }
    }

    /// Every request read so far: (op code, slice name as read, status).
    pub fn log(&self) -> &[(u32, String, Status)] {
        &self.log
    }

    /// One read of `EXECUTE` with `header` in the window and `payload` at the payload area
    /// (bytes beyond it read as zero), as the hypervisor handles it.
    pub fn execute_raw(&mut self, header: &[u8; REQUEST_LEN], payload: &[u8]) -> RawOutcome {
        if self.busy {
            return RawOutcome {
                execute: Status::Busy.code(),
                response: None,
            };
        }
        self.advance(self.tick_ms);
        let request = RequestHeader::decode(header);
        let name = request.slice_name().map_or_else(
            || String::from_utf8_lossy(&request.slice).into_owned(),
            Into::into,
        );
        let answer = self.answer(&request, payload);
        let (status, r0, r1, body) = match answer {
            Ok((r0, r1, body)) => (Status::Ok, r0, r1, body),
            Err((status, message)) => (status, 0, 0, message.into_bytes()),
        };
        self.log.push((request.op, name, status));
        let header = ResponseHeader {
            status: status.code(),
            r0,
            r1,
            length: body.len() as u64,
        };
        RawOutcome {
            execute: status.code(),
            response: Some((header, body)),
        }
    }

    fn answer(&mut self, request: &RequestHeader, payload_area: &[u8]) -> Answer {
        if request.magic != REQUEST_MAGIC {
            return refuse(
                Status::BadRequest,
                format!("bad request magic {:#x}", request.magic),
            );
        }
        let capacity = self.capacity as u64;
        if request.length > capacity {
            return refuse(
                Status::BadRequest,
                format!(
                    "request length {} beyond the payload area ({capacity} bytes)",
                    request.length
                ),
            );
        }
        // The payload as the hypervisor copies it: `length` bytes, zeros past what was put.
        let mut payload = payload_area[..payload_area.len().min(request.length as usize)].to_vec();
        payload.resize(request.length as usize, 0);
        let Some(op) = Op::from_code(request.op) else {
            return refuse(
                Status::UnknownOp,
                format!("unknown operation {}", request.op),
            );
        };
        if op == Op::Node {
            let node = serde_json::json!({
                "version": "fake",
                "slices": self.slices.len(),
                "footprint_bytes": 2 << 20,
                "heap_bytes": 1 << 20,
                "heap_used_bytes": 1 << 19,
                "staging": {"bytes": self.pool_bytes, "used_bytes": self.pool_used()},
            });
            return Ok((0, 0, to_json(&node)));
        }
        if op == Op::List {
            let now = self.now_ms;
            let all: Vec<Value> = self.slices.iter().map(|s| s.status_json(now)).collect();
            return Ok((0, 0, to_json(&Value::from(all))));
        }
        let Some(name) = request.slice_name().map(str::to_string) else {
            return refuse(
                Status::BadRequest,
                "the slice field is not a NUL-padded UTF-8 name".into(),
            );
        };
        let pool_free = self.pool_bytes.saturating_sub(self.pool_used());
        let now = self.now_ms;
        let capacity = self.capacity;
        let reaction = self.shutdown_reaction_ms;
        let erase_ms = self.erase_ms;
        let Some(slice) = self.slice_mut(&name) else {
            return refuse(Status::NoSuchSlice, format!("no slice \"{name}\""));
        };
        let fail = |status: Status, what: &str| refuse(status, format!("slice \"{name}\": {what}"));
        let reads = matches!(op, Op::Status | Op::ConsoleRead);
        if slice.spec.manager && !reads {
            return fail(Status::NotPermitted, "is the manager");
        }
        if matches!(slice.state, State::Erasing { .. }) && !reads {
            return fail(Status::Busy, "is erasing");
        }
        match op {
            Op::List | Op::Node => unreachable!("answered above"),
            Op::Status => Ok((0, 0, to_json(&slice.status_json(now)))),
            Op::On => {
                if slice.is_on() {
                    return fail(Status::WrongState, "already on");
                }
                start_checked(slice, now)
                    .map_err(|why| (Status::BadImage, format!("slice \"{name}\": {why}")))?;
                Ok((0, 0, Vec::new()))
            }
            Op::Off => {
                if !slice.is_on() {
                    return fail(Status::WrongState, "already off");
                }
                slice.stop("forced off by the manager");
                Ok((0, 0, Vec::new()))
            }
            Op::Restart => {
                if slice.is_on() {
                    slice.stop("forced restart by the manager");
                }
                start_checked(slice, now)
                    .map_err(|why| (Status::BadImage, format!("slice \"{name}\": {why}")))?;
                Ok((0, 0, Vec::new()))
            }
            Op::Shutdown => {
                if !SHUTDOWN_TIMEOUT_MS.contains(&request.a0) {
                    return fail(
                        Status::BadRequest,
                        &format!("shutdown timeout {} ms not in 1..=3600000", request.a0),
                    );
                }
                match slice.state {
                    State::Off => return fail(Status::WrongState, "is off"),
                    State::ShuttingDown { .. } => {
                        return fail(Status::Busy, "already shutting down");
                    }
                    _ => {}
                }
                slice.state = State::ShuttingDown {
                    deadline_ms: now + request.a0,
                    powers_off_at_ms: slice.spec.honours_power_key.then_some(now + reaction),
                };
                Ok((0, 0, Vec::new()))
            }
            Op::StageBegin => {
                let Some(kind) = ImageKind::from_code(request.a0) else {
                    return fail(Status::BadRequest, &format!("image kind {}", request.a0));
                };
                let size = request.a1;
                if size == 0 {
                    return fail(Status::BadRequest, "an image of 0 bytes");
                }
                if size > slice.spec.memory_bytes {
                    return fail(
                        Status::TooLarge,
                        &format!(
                            "a {} of {size} bytes does not fit its {} bytes of memory",
                            kind.name(),
                            slice.spec.memory_bytes
                        ),
                    );
                }
                let index = kind.code() as usize;
                let replaced = slice.pending[index].as_ref().map_or(0, |p| p.size);
                if size > pool_free + replaced {
                    return fail(
                        Status::NoSpace,
                        &format!("the staging pool has {} bytes free", pool_free + replaced),
                    );
                }
                slice.pending[index] = Some(Pending {
                    size,
                    bytes: Vec::new(),
                });
                Ok((0, 0, Vec::new()))
            }
            Op::StageWrite => {
                let Some(kind) = ImageKind::from_code(request.a0) else {
                    return fail(Status::BadRequest, &format!("image kind {}", request.a0));
                };
                let Some(pending) = slice.pending[kind.code() as usize].as_mut() else {
                    return fail(Status::BadRequest, &format!("no pending {}", kind.name()));
                };
                let written = pending.bytes.len() as u64;
                if request.a1 != written {
                    return fail(
                        Status::BadRequest,
                        &format!(
                            "write at offset {}, {written} bytes written so far",
                            request.a1
                        ),
                    );
                }
                if payload.len() as u64 > pending.size - written {
                    return fail(
                        Status::BadRequest,
                        &format!(
                            "{} bytes at offset {written} pass the end of {} bytes",
                            payload.len(),
                            pending.size
                        ),
                    );
                }
                pending.bytes.extend_from_slice(&payload);
                Ok((0, 0, Vec::new()))
            }
            Op::StageEnd => {
                let Some(kind) = ImageKind::from_code(request.a0) else {
                    return fail(Status::BadRequest, &format!("image kind {}", request.a0));
                };
                let index = kind.code() as usize;
                let Some(pending) = slice.pending[index].as_ref() else {
                    return fail(Status::BadRequest, &format!("no pending {}", kind.name()));
                };
                if (pending.bytes.len() as u64) < pending.size {
                    return fail(
                        Status::BadRequest,
                        &format!(
                            "the {} has {} of {} bytes",
                            kind.name(),
                            pending.bytes.len(),
                            pending.size
                        ),
                    );
                }
                if kind == ImageKind::Kernel && !is_arm64_image(&pending.bytes) {
                    return fail(Status::BadImage, "the staged kernel is not an arm64 Image");
                }
                let Some(pending) = slice.pending[index].take() else {
                    return fail(Status::BadRequest, "no pending image");
                };
                let sha256 = hex(&Sha256::digest(&pending.bytes));
                let report = json!({"kind": kind.name(), "bytes": pending.size, "sha256": sha256});
                slice.staged[index] = Some(Held {
                    bytes: pending.bytes,
                    sha256,
                    changed: false,
                });
                Ok((0, 0, to_json(&report)))
            }
            Op::Boot => boot(slice, request.a0, &payload)
                .map_err(|(status, what)| (status, format!("slice \"{name}\": {what}"))),
            Op::ConsoleRead => {
                let total = slice.console_total;
                if request.a0 == CONSOLE_END {
                    return Ok((total, total, Vec::new()));
                }
                let oldest = total - slice.console.len() as u64;
                let first = request.a0.clamp(oldest, total);
                let n = ((total - first) as usize).min(capacity);
                let skip = (first - oldest) as usize;
                let bytes: Vec<u8> = slice.console.iter().skip(skip).take(n).copied().collect();
                Ok((first, first + n as u64, bytes))
            }
            Op::ConsoleWrite => {
                if payload.len() > MAX_CONSOLE_WRITE {
                    return fail(
                        Status::BadRequest,
                        &format!(
                            "{} bytes of input (at most {MAX_CONSOLE_WRITE})",
                            payload.len()
                        ),
                    );
                }
                if !slice.is_on() {
                    return fail(Status::WrongState, "is off");
                }
                let free = slice.spec.uart_fifo.saturating_sub(slice.uart_held);
                let took = payload.len().min(free);
                slice.uart_held += took;
                slice.input.extend_from_slice(&payload[..took]);
                Ok((took as u64, 0, Vec::new()))
            }
            Op::Erase => {
                if slice.is_on() {
                    return fail(Status::WrongState, "is on");
                }
                if slice.spec.nvme.is_none() {
                    return fail(Status::WrongState, "has no NVMe share");
                }
                slice.state = State::Erasing {
                    done_at_ms: now + erase_ms,
                };
                Ok((0, 0, Vec::new()))
            }
        }
    }
}

/// Starts `slice` unless a staged image it boots from changed.
fn start_checked(slice: &mut FakeSlice, now: u64) -> Result<(), String> {
    if slice.uses_changed_image() {
        return Err("a staged image changed since STAGE_END".into());
    }
    slice.start(now);
    Ok(())
}

/// `BOOT` with flags `flags` and `payload` on `slice`.
fn boot(
    slice: &mut FakeSlice,
    flags: u64,
    payload: &[u8],
) -> Result<(u64, u64, Vec<u8>), (Status, String)> {
    let bad = |what: &str| Err((Status::BadRequest, what.to_string()));
    if flags & !boot_flags::ALL != 0 {
        return bad(&format!("unknown boot flags {flags:#x}"));
    }
    if flags & boot_flags::STAGED_INITRD != 0 && flags & boot_flags::NO_INITRD != 0 {
        return bad("boot flags 2 and 4 exclude each other");
    }
    if flags & boot_flags::CMDLINE == 0 && !payload.is_empty() {
        return bad("a payload without boot flag 8");
    }
    if flags & boot_flags::NETWORK != 0 {
        if flags != boot_flags::NETWORK {
            return bad("the network boot takes no other flag");
        }
        if !slice.spec.network_boot {
            return bad("its flashed kernel is no firmware that boots from the network");
        }
        slice.boot_flags = flags;
        slice.boot_cmdline = None;
        slice.staged = [None, None];
        slice.pending = [None, None];
        return Ok((0, 0, Vec::new()));
    }
    if flags == 0 {
        slice.boot_flags = 0;
        slice.boot_cmdline = None;
        slice.staged = [None, None];
        slice.pending = [None, None];
        return Ok((0, 0, Vec::new()));
    }
    if flags & boot_flags::STAGED_KERNEL != 0 && slice.staged[0].is_none() {
        return bad("no staged kernel");
    }
    if flags & boot_flags::STAGED_INITRD != 0 && slice.staged[1].is_none() {
        return bad("no staged initrd");
    }
    let cmdline = if flags & boot_flags::CMDLINE != 0 {
        if payload.len() > MAX_CMDLINE {
            return Err((
                Status::TooLarge,
                format!(
                    "a command line of {} bytes (at most {MAX_CMDLINE})",
                    payload.len()
                ),
            ));
        }
        match std::str::from_utf8(payload) {
            Ok(text) if !text.contains('\0') => Some(text.to_string()),
            _ => return bad("the command line is not UTF-8 without NUL"),
        }
    } else {
        None
    };
    let kernel = if flags & boot_flags::STAGED_KERNEL != 0 {
        slice.staged[0].as_ref().map_or(0, |h| h.bytes.len() as u64)
    } else {
        slice.spec.kernel.bytes
    };
    let initrd = if flags & boot_flags::NO_INITRD != 0 {
        0
    } else if flags & boot_flags::STAGED_INITRD != 0 {
        slice.staged[1].as_ref().map_or(0, |h| h.bytes.len() as u64)
    } else {
        slice.spec.initrd.as_ref().map_or(0, |i| i.bytes)
    };
    if kernel + initrd + DT_RESERVE > slice.spec.memory_bytes {
        return Err((
            Status::TooLarge,
            format!(
                "kernel, initrd and device tree need {} bytes, it has {}",
                kernel + initrd + DT_RESERVE,
                slice.spec.memory_bytes
            ),
        ));
    }
    slice.boot_flags = flags;
    slice.boot_cmdline = cmdline;
    Ok((0, 0, Vec::new()))
}

/// Whether `bytes` start with an arm64 Image header (magic `ARM\x64` at offset 56).
fn is_arm64_image(bytes: &[u8]) -> bool {
    bytes.len() >= 64 && bytes[56..60] == *b"ARM\x64"
}

/// An arm64 Image header of `len` bytes (at least 64), the rest zero: a kernel the fake
/// accepts.
pub fn fake_kernel(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len.max(64)];
    bytes[56..60].copy_from_slice(b"ARM\x64");
    bytes
}

fn refuse(status: Status, message: String) -> Answer {
    Err((status, message))
}

fn to_json(value: &Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Transport for FakeHypervisor {
    fn payload_capacity(&self) -> usize {
        self.capacity
    }

    /// Encodes the request into header bytes, runs [`FakeHypervisor::execute_raw`] and reads
    /// the answer back as the `/dev/mem` transport does.
    fn execute(&mut self, request: &Request<'_>) -> Result<Response, Error> {
        let header = request.header(self.capacity)?;
        let outcome = self.execute_raw(&header.encode(), request.payload);
        crate::transport::response_from(outcome.execute, outcome.response, self.capacity)
    }
}
