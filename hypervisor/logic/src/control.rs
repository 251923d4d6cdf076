//! The control interface's wire format and the pure parts of its state (docs/control.md,
//! version 1): register decoding, request headers read from the manager's window, the
//! staging pool's allocator, uploads in progress, boot flags and the per-slice console ring.
//! Everything the manager writes is untrusted: each function here turns bytes into a value
//! or a [`Refusal`] with the status code and the one line the manager is shown.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

/// Guest IPA of the register page.
pub const REGISTERS_IPA: u64 = 0x0a00_0000;
/// Size of the register page.
pub const REGISTERS_SIZE: u64 = 0x1000;
/// Guest IPA of the data window.
pub const WINDOW_IPA: u64 = 0x0a20_0000;
/// Size of the data window (one 2 MiB block of the staging region).
pub const WINDOW_SIZE: u64 = 0x20_0000;
/// Offset of the payload area in the window.
pub const PAYLOAD_OFFSET: u64 = 0x1000;
/// Largest request or response payload.
pub const MAX_PAYLOAD: u64 = WINDOW_SIZE - PAYLOAD_OFFSET;
/// Bytes of the request header at window offset 0.
pub const REQUEST_HEADER_SIZE: usize = 128;
/// Offset of the response header in the window.
pub const RESPONSE_OFFSET: u64 = 0x80;
/// Bytes of the response header.
pub const RESPONSE_HEADER_SIZE: usize = 32;

/// `ID` register: the bytes `MVCTL`.
pub const ID: u64 = 0x4c_5443_564d;
/// `VERSION` register.
pub const VERSION: u64 = 1;
/// Request header magic: the bytes `MVRQ`.
pub const REQUEST_MAGIC: u32 = 0x5152_564d;
/// Longest slice name a header can carry.
pub const NAME_BYTES: usize = 32;
/// Longest command line `BOOT` accepts (Linux's arm64 COMMAND_LINE_SIZE, less its NUL).
pub const MAX_CMDLINE: usize = 2047;
/// Most bytes one `CONSOLE_WRITE` carries.
pub const MAX_CONSOLE_WRITE: u64 = 4096;
/// Longest graceful shutdown timeout, in milliseconds.
pub const MAX_SHUTDOWN_MS: u64 = 3_600_000;
/// Bytes of console output kept per slice.
pub const CONSOLE_RING: usize = 64 * 1024;

/// A register of the register page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Register {
    Id,
    Version,
    WindowSize,
    /// Reading it runs the request in the window.
    Execute,
    /// Any other offset, width or alignment: reads as zero, writes ignored.
    Unknown,
}

impl Register {
    /// The register an access of `width` bytes at `offset` into the page reaches.
    pub fn decode(offset: u64, width: u8) -> Register {
        if width != 8 || !offset.is_multiple_of(8) {
            return Register::Unknown;
        }
        match offset {
            0x00 => Register::Id,
            0x08 => Register::Version,
            0x10 => Register::WindowSize,
            0x18 => Register::Execute,
            _ => Register::Unknown,
        }
    }
}

/// Status codes (docs/control.md, "Status codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Status {
    Ok = 0,
    UnknownOp = 1,
    BadRequest = 2,
    NoSuchSlice = 3,
    Busy = 4,
    WrongState = 5,
    TooLarge = 6,
    NotPermitted = 7,
    NoSpace = 8,
    BadImage = 9,
    IoError = 10,
}

/// A request that is not carried out: its status and the line the manager shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: Status,
    pub message: String,
}

impl Refusal {
    pub fn new(status: Status, message: impl fmt::Display) -> Self {
        Self {
            status,
            message: alloc::format!("{message}"),
        }
    }
}

/// Operations (docs/control.md, "Operations").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    List,
    Status,
    On,
    Off,
    Restart,
    Shutdown,
    StageBegin,
    StageWrite,
    StageEnd,
    Boot,
    ConsoleRead,
    ConsoleWrite,
    Erase,
    Node,
}

impl Op {
    pub fn from_code(code: u32) -> Option<Op> {
        Some(match code {
            1 => Op::List,
            2 => Op::Status,
            3 => Op::On,
            4 => Op::Off,
            5 => Op::Restart,
            6 => Op::Shutdown,
            7 => Op::StageBegin,
            8 => Op::StageWrite,
            9 => Op::StageEnd,
            10 => Op::Boot,
            11 => Op::ConsoleRead,
            12 => Op::ConsoleWrite,
            13 => Op::Erase,
            14 => Op::Node,
            _ => return None,
        })
    }

    /// Whether the operation names a target slice.
    pub fn has_target(self) -> bool {
        !matches!(self, Op::List | Op::Node)
    }

    /// Whether the manager may name itself as the target.
    pub fn allowed_on_manager(self) -> bool {
        matches!(self, Op::Status | Op::ConsoleRead | Op::ConsoleWrite)
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::List => "list",
            Op::Status => "status",
            Op::On => "power on",
            Op::Off => "force off",
            Op::Restart => "force restart",
            Op::Shutdown => "shut down",
            Op::StageBegin | Op::StageWrite | Op::StageEnd => "stage images for",
            Op::Boot => "set the boot source of",
            Op::ConsoleRead => "read the console of",
            Op::ConsoleWrite => "write to the console of",
            Op::Erase => "erase",
            Op::Node => "describe the node",
        }
    }
}

/// A request header as read from the window, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    pub a0: u64,
    pub a1: u64,
    pub a2: u64,
    /// Bytes of payload at [`PAYLOAD_OFFSET`] (at most [`MAX_PAYLOAD`]).
    pub length: u64,
    /// The target's name, for operations that have one (not yet checked against the plan).
    pub slice: Option<String>,
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

impl Request {
    /// Decodes the 128-byte request header.
    pub fn parse(header: &[u8; REQUEST_HEADER_SIZE]) -> Result<Request, Refusal> {
        let magic = le_u32(header, 0x00);
        if magic != REQUEST_MAGIC {
            return Err(Refusal::new(
                Status::BadRequest,
                format_args!("request header: magic {magic:#x} is not MVRQ ({REQUEST_MAGIC:#x})"),
            ));
        }
        let code = le_u32(header, 0x04);
        let op = Op::from_code(code).ok_or_else(|| {
            Refusal::new(Status::UnknownOp, format_args!("unknown operation {code}"))
        })?;
        let length = le_u64(header, 0x20);
        if length > MAX_PAYLOAD {
            return Err(Refusal::new(
                Status::BadRequest,
                format_args!("request payload of {length} bytes (at most {MAX_PAYLOAD})"),
            ));
        }
        let slice = if op.has_target() {
            Some(parse_name(&header[0x28..0x28 + NAME_BYTES])?)
        } else {
            None
        };
        Ok(Request {
            op,
            a0: le_u64(header, 0x08),
            a1: le_u64(header, 0x10),
            a2: le_u64(header, 0x18),
            length,
            slice,
        })
    }
}

/// The NUL-padded name field: printable ASCII up to the first NUL, nothing but NULs after.
fn parse_name(field: &[u8]) -> Result<String, Refusal> {
    let len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let (name, rest) = field.split_at(len);
    let bad = |why: &str| Refusal::new(Status::BadRequest, format_args!("slice name: {why}"));
    if name.is_empty() {
        return Err(bad("missing"));
    }
    if rest.iter().any(|&b| b != 0) {
        return Err(bad("bytes after its NUL"));
    }
    if !name.iter().all(|b| b.is_ascii_graphic()) {
        return Err(bad("not printable ASCII"));
    }
    Ok(name.iter().map(|&b| char::from(b)).collect())
}

/// Encodes a response header: status, r0, r1, payload length.
pub fn response_header(
    status: Status,
    r0: u64,
    r1: u64,
    length: u64,
) -> [u8; RESPONSE_HEADER_SIZE] {
    let mut out = [0; RESPONSE_HEADER_SIZE];
    for (i, value) in [status as u64, r0, r1, length].into_iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&value.to_le_bytes());
    }
    out
}

/// The kind of image a staging operation is about (`a0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    Kernel,
    Initrd,
}

impl ImageKind {
    pub fn from_arg(a0: u64) -> Result<ImageKind, Refusal> {
        match a0 {
            0 => Ok(ImageKind::Kernel),
            1 => Ok(ImageKind::Initrd),
            _ => Err(Refusal::new(
                Status::BadRequest,
                format_args!("image kind {a0} (0 kernel, 1 initrd)"),
            )),
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            ImageKind::Kernel => "kernel",
            ImageKind::Initrd => "initrd",
        }
    }
}

/// Granule of the staging pool's allocations.
pub const POOL_GRANULE: u64 = 4096;

/// First-fit allocator of byte ranges in the staging pool (offsets from the pool's start).
#[derive(Clone, Debug)]
pub struct PoolAllocator {
    size: u64,
    /// Allocated `(offset, length)`, sorted by offset, lengths in whole granules.
    used: Vec<(u64, u64)>,
}

impl PoolAllocator {
    pub fn new(size: u64) -> Self {
        Self {
            size: size / POOL_GRANULE * POOL_GRANULE,
            used: Vec::new(),
        }
    }

    /// Reserves `len` bytes (rounded up to the granule); None if no gap is large enough.
    pub fn allocate(&mut self, len: u64) -> Option<u64> {
        let len = len.max(1).checked_next_multiple_of(POOL_GRANULE)?;
        let mut start = 0;
        let mut at = self.used.len();
        for (i, &(offset, used)) in self.used.iter().enumerate() {
            if offset - start >= len {
                at = i;
                break;
            }
            start = offset + used;
        }
        if at == self.used.len() && self.size.checked_sub(start)? < len {
            return None;
        }
        self.used.insert(at, (start, len));
        Some(start)
    }

    /// Releases the allocation at `offset` (nothing if there is none).
    pub fn free(&mut self, offset: u64) {
        self.used.retain(|&(o, _)| o != offset);
    }

    /// Bytes allocated.
    pub fn used(&self) -> u64 {
        self.used.iter().map(|&(_, l)| l).sum()
    }

    /// Largest allocation that would succeed now.
    pub fn largest_free(&self) -> u64 {
        let mut start = 0;
        let mut best = 0;
        for &(offset, len) in &self.used {
            best = best.max(offset - start);
            start = offset + len;
        }
        best.max(self.size - start)
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

/// An image being uploaded: `STAGE_WRITE`s must come in order and stay inside its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upload {
    /// Offset of its allocation in the pool.
    pub offset: u64,
    pub size: u64,
    pub written: u64,
}

impl Upload {
    /// Checks a write of `len` bytes at `at`; returns the pool offset to copy to.
    pub fn write(&mut self, at: u64, len: u64) -> Result<u64, Refusal> {
        if at != self.written {
            return Err(Refusal::new(
                Status::BadRequest,
                format_args!(
                    "staging write at offset {at}: the next byte expected is {}",
                    self.written
                ),
            ));
        }
        let end = at.checked_add(len).filter(|&end| end <= self.size);
        let Some(end) = end else {
            return Err(Refusal::new(
                Status::BadRequest,
                format_args!(
                    "staging write of {len} bytes at offset {at} passes the image's end ({} bytes)",
                    self.size
                ),
            ));
        };
        self.written = end;
        Ok(self.offset + at)
    }

    pub fn complete(&self) -> bool {
        self.written == self.size
    }
}

/// Where an image of a boot source comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageChoice {
    Flashed,
    Staged,
    None,
}

/// A `BOOT` request's flags, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootFlags {
    /// False: back to the flashed default (every other field is then the flashed one).
    pub custom: bool,
    pub kernel: ImageChoice,
    pub initrd: ImageChoice,
    /// The payload is the whole command line.
    pub cmdline: bool,
    /// The flashed firmware, booting from the network first (alone: no other flag).
    pub network: bool,
}

pub const BOOT_KERNEL_STAGED: u64 = 1;
pub const BOOT_INITRD_STAGED: u64 = 2;
pub const BOOT_NO_INITRD: u64 = 4;
pub const BOOT_CMDLINE: u64 = 8;
pub const BOOT_NETWORK: u64 = 16;

impl BootFlags {
    pub fn parse(a0: u64) -> Result<BootFlags, Refusal> {
        let known =
            BOOT_KERNEL_STAGED | BOOT_INITRD_STAGED | BOOT_NO_INITRD | BOOT_CMDLINE | BOOT_NETWORK;
        let bad = |why: &str| {
            Refusal::new(
                Status::BadRequest,
                format_args!("boot flags {a0:#x}: {why}"),
            )
        };
        if a0 & !known != 0 {
            return Err(bad("unknown flag"));
        }
        if a0 & BOOT_INITRD_STAGED != 0 && a0 & BOOT_NO_INITRD != 0 {
            return Err(bad("a staged initrd and no initrd at once"));
        }
        if a0 & BOOT_NETWORK != 0 && a0 != BOOT_NETWORK {
            return Err(bad("the network boot takes no other flag"));
        }
        let choice = |staged: bool| {
            if staged {
                ImageChoice::Staged
            } else {
                ImageChoice::Flashed
            }
        };
        Ok(BootFlags {
            custom: a0 != 0,
            kernel: choice(a0 & BOOT_KERNEL_STAGED != 0),
            initrd: if a0 & BOOT_NO_INITRD != 0 {
                ImageChoice::None
            } else {
                choice(a0 & BOOT_INITRD_STAGED != 0)
            },
            cmdline: a0 & BOOT_CMDLINE != 0,
            network: a0 == BOOT_NETWORK,
        })
    }
}

/// Checks a command line from a `BOOT` payload.
pub fn parse_cmdline(bytes: &[u8]) -> Result<String, Refusal> {
    if bytes.len() > MAX_CMDLINE {
        return Err(Refusal::new(
            Status::TooLarge,
            format_args!(
                "command line of {} bytes (at most {MAX_CMDLINE})",
                bytes.len()
            ),
        ));
    }
    let text = core::str::from_utf8(bytes)
        .map_err(|_| Refusal::new(Status::BadRequest, "command line: not UTF-8"))?;
    if text.contains('\0') {
        return Err(Refusal::new(
            Status::BadRequest,
            "command line: contains NUL",
        ));
    }
    Ok(text.into())
}

/// The last [`CONSOLE_RING`] bytes a slice printed, addressed by cursors that count bytes
/// since the node booted.
#[derive(Clone, Debug)]
pub struct ConsoleRing {
    bytes: Vec<u8>,
    /// Cursor after the last byte pushed.
    end: u64,
    /// No byte before this cursor is returned any more ([`ConsoleRing::forget`]).
    forgotten: u64,
}

impl Default for ConsoleRing {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleRing {
    /// A ring with all its memory taken now: it never allocates again, so the heap the
    /// hypervisor uses does not grow as slices print.
    pub fn new() -> Self {
        Self {
            bytes: Vec::with_capacity(CONSOLE_RING),
            end: 0,
            forgotten: 0,
        }
    }

    /// Everything pushed so far reads as lost (the slice was erased for a new tenant, who
    /// must not be shown the last one's output; found in review). Cursors keep counting.
    pub fn forget(&mut self) {
        self.forgotten = self.end;
    }

    pub fn push(&mut self, byte: u8) {
        let at = (self.end % CONSOLE_RING as u64) as usize;
        if self.bytes.len() < CONSOLE_RING {
            self.bytes.push(byte);
        } else {
            self.bytes[at] = byte;
        }
        self.end += 1;
    }

    /// Cursor after the last byte.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Cursor of the oldest byte kept.
    pub fn start(&self) -> u64 {
        (self.end - self.bytes.len() as u64).max(self.forgotten)
    }

    /// Up to `max` bytes from `cursor` (or from the oldest byte kept, if `cursor` is older):
    /// the cursor of the first byte returned, and the bytes. A cursor past the end returns
    /// nothing at the end.
    pub fn read(&self, cursor: u64, max: usize) -> (u64, Vec<u8>) {
        let first = cursor.clamp(self.start(), self.end);
        let count = ((self.end - first) as usize).min(max);
        let out = (0..count as u64)
            .map(|i| self.bytes[((first + i) % CONSOLE_RING as u64) as usize])
            .collect();
        (first, out)
    }
}

/// Writes `text` as a JSON string (quoted, escaped).
pub fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Lowercase hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn header(op: u32, name: &[u8], length: u64) -> [u8; REQUEST_HEADER_SIZE] {
        let mut h = [0u8; REQUEST_HEADER_SIZE];
        h[0..4].copy_from_slice(&REQUEST_MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&op.to_le_bytes());
        h[8..16].copy_from_slice(&7u64.to_le_bytes());
        h[0x20..0x28].copy_from_slice(&length.to_le_bytes());
        h[0x28..0x28 + name.len()].copy_from_slice(name);
        h
    }

    #[test]
    fn registers() {
        assert_eq!(Register::decode(0, 8), Register::Id);
        assert_eq!(Register::decode(0x18, 8), Register::Execute);
        assert_eq!(Register::decode(0x18, 4), Register::Unknown);
        assert_eq!(Register::decode(0x1c, 8), Register::Unknown);
        assert_eq!(Register::decode(0x20, 8), Register::Unknown);
        assert_eq!(Register::decode(0xff8, 8), Register::Unknown);
        assert_eq!(&ID.to_le_bytes()[..5], b"MVCTL");
        assert_eq!(&REQUEST_MAGIC.to_le_bytes(), b"MVRQ");
    }

    #[test]
    fn parses_a_request() {
        let r = Request::parse(&header(2, b"web", 0)).unwrap();
        assert_eq!(r.op, Op::Status);
        assert_eq!(r.a0, 7);
        assert_eq!(r.slice.as_deref(), Some("web"));
        let list = Request::parse(&header(1, b"", 0)).unwrap();
        assert_eq!((list.op, list.slice), (Op::List, None));
        let full = Request::parse(&header(2, &[b'a'; 32], 0)).unwrap();
        assert_eq!(full.slice.unwrap().len(), 32);
    }

    #[test]
    fn refuses_malformed_headers() {
        let mut bad_magic = header(2, b"web", 0);
        bad_magic[0] = 0;
        assert_eq!(
            Request::parse(&bad_magic).unwrap_err().status,
            Status::BadRequest
        );
        assert_eq!(
            Request::parse(&header(0, b"web", 0)).unwrap_err().status,
            Status::UnknownOp
        );
        assert_eq!(
            Request::parse(&header(99, b"web", 0)).unwrap_err().status,
            Status::UnknownOp
        );
        let long = Request::parse(&header(12, b"web", MAX_PAYLOAD + 1)).unwrap_err();
        assert_eq!(long.status, Status::BadRequest);
        assert!(Request::parse(&header(12, b"web", MAX_PAYLOAD)).is_ok());
        for name in [&b""[..], b"we\0b", b"w b", b"\xffx"] {
            let e = Request::parse(&header(2, name, 0)).unwrap_err();
            assert_eq!(e.status, Status::BadRequest, "{name:?}");
        }
    }

    #[test]
    fn response_header_layout() {
        let h = response_header(Status::Busy, 1, 2, 3);
        assert_eq!(le_u64(&h, 0), 4);
        assert_eq!(le_u64(&h, 8), 1);
        assert_eq!(le_u64(&h, 16), 2);
        assert_eq!(le_u64(&h, 24), 3);
    }

    #[test]
    fn pool_first_fit() {
        let mut pool = PoolAllocator::new(10 * POOL_GRANULE + 5);
        assert_eq!(pool.size(), 10 * POOL_GRANULE);
        let a = pool.allocate(3 * POOL_GRANULE).unwrap();
        let b = pool.allocate(1).unwrap();
        let c = pool.allocate(4 * POOL_GRANULE).unwrap();
        assert_eq!((a, b, c), (0, 3 * POOL_GRANULE, 4 * POOL_GRANULE));
        assert_eq!(pool.largest_free(), 2 * POOL_GRANULE);
        assert_eq!(pool.allocate(3 * POOL_GRANULE), None);
        pool.free(a);
        assert_eq!(pool.largest_free(), 3 * POOL_GRANULE);
        assert_eq!(pool.allocate(3 * POOL_GRANULE), Some(0));
        assert_eq!(pool.allocate(u64::MAX), None);
        assert_eq!(pool.used(), 8 * POOL_GRANULE);
        pool.free(12345);
        assert_eq!(pool.used(), 8 * POOL_GRANULE);
    }

    #[test]
    fn pool_allocations_never_overlap() {
        let mut pool = PoolAllocator::new(64 * POOL_GRANULE);
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut seed = 0x1234_5678_u64;
        for _ in 0..2000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if seed.is_multiple_of(3) && !live.is_empty() {
                let (offset, _) = live.remove((seed >> 8) as usize % live.len());
                pool.free(offset);
            } else {
                let len = (seed >> 16) % (9 * POOL_GRANULE);
                if let Some(offset) = pool.allocate(len) {
                    let len = len.max(1).next_multiple_of(POOL_GRANULE);
                    assert!(offset + len <= pool.size());
                    for &(o, l) in &live {
                        assert!(offset + len <= o || o + l <= offset);
                    }
                    live.push((offset, len));
                }
            }
        }
    }

    #[test]
    fn uploads_are_sequential_and_bounded() {
        let mut up = Upload {
            offset: 0x1000,
            size: 100,
            written: 0,
        };
        assert_eq!(up.write(0, 60), Ok(0x1000));
        assert_eq!(up.write(0, 10).unwrap_err().status, Status::BadRequest);
        assert_eq!(up.write(70, 10).unwrap_err().status, Status::BadRequest);
        assert_eq!(up.write(60, 41).unwrap_err().status, Status::BadRequest);
        assert_eq!(
            up.write(60, u64::MAX).unwrap_err().status,
            Status::BadRequest
        );
        assert!(!up.complete());
        assert_eq!(up.write(60, 40), Ok(0x1000 + 60));
        assert!(up.complete());
        assert_eq!(up.write(100, 1).unwrap_err().status, Status::BadRequest);
    }

    #[test]
    fn boot_flags() {
        let default = BootFlags::parse(0).unwrap();
        assert!(!default.custom);
        let f = BootFlags::parse(BOOT_KERNEL_STAGED | BOOT_NO_INITRD | BOOT_CMDLINE).unwrap();
        assert_eq!(
            (f.custom, f.kernel, f.initrd, f.cmdline),
            (true, ImageChoice::Staged, ImageChoice::None, true)
        );
        let f = BootFlags::parse(BOOT_CMDLINE).unwrap();
        assert_eq!(
            (f.kernel, f.initrd),
            (ImageChoice::Flashed, ImageChoice::Flashed)
        );
        assert!(BootFlags::parse(BOOT_INITRD_STAGED | BOOT_NO_INITRD).is_err());
        let network = BootFlags::parse(BOOT_NETWORK).unwrap();
        assert!(network.network && network.custom && !network.cmdline);
        assert!(BootFlags::parse(BOOT_NETWORK | BOOT_CMDLINE).is_err());
        assert!(BootFlags::parse(BOOT_NETWORK | BOOT_KERNEL_STAGED).is_err());
        assert!(!BootFlags::parse(BOOT_CMDLINE).unwrap().network);
        assert!(BootFlags::parse(32).is_err());
        assert!(BootFlags::parse(u64::MAX).is_err());
    }

    #[test]
    fn cmdlines() {
        assert_eq!(
            parse_cmdline(b"console=ttyAMA0").unwrap(),
            "console=ttyAMA0"
        );
        assert_eq!(
            parse_cmdline(&[b'a'; 2048]).unwrap_err().status,
            Status::TooLarge
        );
        assert!(parse_cmdline(&[b'a'; 2047]).is_ok());
        assert_eq!(
            parse_cmdline(b"a\0b").unwrap_err().status,
            Status::BadRequest
        );
        assert_eq!(
            parse_cmdline(b"\xff").unwrap_err().status,
            Status::BadRequest
        );
    }

    #[test]
    fn a_forgotten_console_ring_returns_only_what_came_after() {
        let mut ring = ConsoleRing::new();
        for b in b"tenant A's secret" {
            ring.push(*b);
        }
        ring.forget();
        assert_eq!(ring.read(0, 100), (17, vec![]), "nothing before the erase");
        for b in b"B" {
            ring.push(*b);
        }
        assert_eq!(ring.read(0, 100), (17, b"B".to_vec()));
        // Once the ring has wrapped past the erase, the ordinary rule applies.
        for i in 0..CONSOLE_RING as u64 {
            ring.push(i as u8);
        }
        assert_eq!(ring.start(), ring.end() - CONSOLE_RING as u64);
    }

    #[test]
    fn console_ring_keeps_the_last_bytes() {
        let mut ring = ConsoleRing::new();
        assert_eq!(ring.read(0, 10), (0, vec![]));
        for b in b"hello" {
            ring.push(*b);
        }
        assert_eq!(ring.read(0, 100), (0, b"hello".to_vec()));
        assert_eq!(ring.read(2, 2), (2, b"ll".to_vec()));
        assert_eq!(ring.read(u64::MAX, 10), (5, vec![]));
        for i in 0..CONSOLE_RING as u64 {
            ring.push((i % 251) as u8);
        }
        assert_eq!(ring.end(), 5 + CONSOLE_RING as u64);
        assert_eq!(ring.start(), 5);
        let (first, bytes) = ring.read(0, 3);
        assert_eq!((first, bytes), (5, vec![0, 1, 2]));
        let (first, bytes) = ring.read(ring.end() - 2, 10);
        assert_eq!(first, ring.end() - 2);
        assert_eq!(
            bytes,
            vec![
                ((CONSOLE_RING as u64 - 2) % 251) as u8,
                ((CONSOLE_RING as u64 - 1) % 251) as u8
            ]
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }
}
