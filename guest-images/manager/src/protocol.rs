//! The wire format of the control interface, version 1 (docs/control.md): register offsets,
//! the data window's layout, operation and status codes, request and response headers.

use std::fmt;

/// `ID` register value: the bytes `MVCTL` (docs/control.md, "Registers").
pub const ID: u64 = 0x4c_5443_564d;
/// The `VERSION` this client speaks.
pub const VERSION: u64 = 1;
/// The device tree `compatible` of the control node.
pub const COMPATIBLE: &str = "microvisor,control-v1";

/// Register offsets in the 4 KiB register page.
pub mod reg {
    /// `ID` (RO): [`super::ID`].
    pub const ID: usize = 0x000;
    /// `VERSION` (RO): [`super::VERSION`].
    pub const VERSION: usize = 0x008;
    /// `WINDOW_SIZE` (RO): size of the data window in bytes.
    pub const WINDOW_SIZE: usize = 0x010;
    /// `EXECUTE` (RO): reading it runs the request in the window and returns its status.
    pub const EXECUTE: usize = 0x018;
}

/// Offset of the request header in the data window.
pub const REQUEST_OFFSET: usize = 0x000;
/// Size of the request header.
pub const REQUEST_LEN: usize = 128;
/// Offset of the response header in the data window.
pub const RESPONSE_OFFSET: usize = 0x080;
/// Size of the response header.
pub const RESPONSE_LEN: usize = 32;
/// Offset of the payload area in the data window.
pub const PAYLOAD_OFFSET: usize = 0x1000;
/// The data window's size in version 1 (the `WINDOW_SIZE` register says the real one).
pub const WINDOW_SIZE: usize = 0x20_0000;
/// The payload area of a [`WINDOW_SIZE`] window.
pub const MAX_PAYLOAD: usize = WINDOW_SIZE - PAYLOAD_OFFSET;
/// Request header `magic`: the bytes `MVRQ`.
pub const REQUEST_MAGIC: u32 = 0x5152_564d;
/// Bytes of the `slice` field.
pub const SLICE_NAME_LEN: usize = 32;
/// Longest `CONSOLE_WRITE` payload.
pub const MAX_CONSOLE_WRITE: usize = 4096;
/// Longest command line of `BOOT` flag 8, in bytes.
pub const MAX_CMDLINE: usize = 2047;
/// `SHUTDOWN` timeouts, in ms.
pub const SHUTDOWN_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 1..=3_600_000;
/// `CONSOLE_READ` cursor that returns only the current end.
pub const CONSOLE_END: u64 = u64::MAX;

/// An operation (docs/control.md, "Operations").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Op {
    List = 1,
    Status = 2,
    On = 3,
    Off = 4,
    Restart = 5,
    Shutdown = 6,
    StageBegin = 7,
    StageWrite = 8,
    StageEnd = 9,
    Boot = 10,
    ConsoleRead = 11,
    ConsoleWrite = 12,
    Erase = 13,
    Node = 14,
}

impl Op {
    /// Every operation, by code.
    pub const ALL: [Op; 14] = [
        Op::List,
        Op::Status,
        Op::On,
        Op::Off,
        Op::Restart,
        Op::Shutdown,
        Op::StageBegin,
        Op::StageWrite,
        Op::StageEnd,
        Op::Boot,
        Op::ConsoleRead,
        Op::ConsoleWrite,
        Op::Erase,
        Op::Node,
    ];

    /// Whether the operation names a slice (every one but `LIST` and `NODE`).
    pub fn has_target(self) -> bool {
        !matches!(self, Op::List | Op::Node)
    }

    /// The `op` field's value.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The operation with code `code`, if any.
    pub fn from_code(code: u32) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.code() == code)
    }

    /// The name docs/control.md gives it (`STAGE_BEGIN`).
    pub fn name(self) -> &'static str {
        match self {
            Op::List => "LIST",
            Op::Status => "STATUS",
            Op::On => "ON",
            Op::Off => "OFF",
            Op::Restart => "RESTART",
            Op::Shutdown => "SHUTDOWN",
            Op::StageBegin => "STAGE_BEGIN",
            Op::StageWrite => "STAGE_WRITE",
            Op::StageEnd => "STAGE_END",
            Op::Boot => "BOOT",
            Op::ConsoleRead => "CONSOLE_READ",
            Op::ConsoleWrite => "CONSOLE_WRITE",
            Op::Erase => "ERASE",
            Op::Node => "NODE",
        }
    }
}

/// A status code (docs/control.md, "Status codes"); codes this version does not know are
/// kept as [`Status::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Done.
    Ok,
    /// No such operation.
    UnknownOp,
    /// Malformed header or arguments.
    BadRequest,
    /// The name is not a slice of this node.
    NoSuchSlice,
    /// Another request is running, or the slice is erasing / stopping.
    Busy,
    /// Not in this state.
    WrongState,
    /// Does not fit the target slice's memory, or the command line is too long.
    TooLarge,
    /// The manager as target of power, boot, staging or erase.
    NotPermitted,
    /// The staging pool is full.
    NoSpace,
    /// A staged kernel is not an arm64 Image, or a staged image changed.
    BadImage,
    /// The NVMe controller failed a command.
    IoError,
    /// A code version 1 does not define.
    Other(u64),
}

impl Status {
    /// Every defined status, by code.
    pub const ALL: [Status; 11] = [
        Status::Ok,
        Status::UnknownOp,
        Status::BadRequest,
        Status::NoSuchSlice,
        Status::Busy,
        Status::WrongState,
        Status::TooLarge,
        Status::NotPermitted,
        Status::NoSpace,
        Status::BadImage,
        Status::IoError,
    ];

    /// The status with code `code`.
    pub fn from_code(code: u64) -> Status {
        match code {
            0 => Status::Ok,
            1 => Status::UnknownOp,
            2 => Status::BadRequest,
            3 => Status::NoSuchSlice,
            4 => Status::Busy,
            5 => Status::WrongState,
            6 => Status::TooLarge,
            7 => Status::NotPermitted,
            8 => Status::NoSpace,
            9 => Status::BadImage,
            10 => Status::IoError,
            other => Status::Other(other),
        }
    }

    /// Its code.
    pub fn code(self) -> u64 {
        match self {
            Status::Ok => 0,
            Status::UnknownOp => 1,
            Status::BadRequest => 2,
            Status::NoSuchSlice => 3,
            Status::Busy => 4,
            Status::WrongState => 5,
            Status::TooLarge => 6,
            Status::NotPermitted => 7,
            Status::NoSpace => 8,
            Status::BadImage => 9,
            Status::IoError => 10,
            Status::Other(code) => code,
        }
    }

    /// The name docs/control.md gives it (`WRONG_STATE`), `STATUS_<code>` for others.
    pub fn name(self) -> String {
        let name = match self {
            Status::Ok => "OK",
            Status::UnknownOp => "UNKNOWN_OP",
            Status::BadRequest => "BAD_REQUEST",
            Status::NoSuchSlice => "NO_SUCH_SLICE",
            Status::Busy => "BUSY",
            Status::WrongState => "WRONG_STATE",
            Status::TooLarge => "TOO_LARGE",
            Status::NotPermitted => "NOT_PERMITTED",
            Status::NoSpace => "NO_SPACE",
            Status::BadImage => "BAD_IMAGE",
            Status::IoError => "IO_ERROR",
            Status::Other(code) => return format!("STATUS_{code}"),
        };
        name.to_string()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Kind of a staged image (`STAGE_*` `a0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageKind {
    Kernel = 0,
    Initrd = 1,
}

impl ImageKind {
    /// The `a0` value.
    pub fn code(self) -> u64 {
        self as u64
    }

    /// The kind with `a0` value `code`, if any.
    pub fn from_code(code: u64) -> Option<ImageKind> {
        match code {
            0 => Some(ImageKind::Kernel),
            1 => Some(ImageKind::Initrd),
            _ => None,
        }
    }

    /// `kernel` or `initrd`, as `STAGE_END`'s JSON names it.
    pub fn name(self) -> &'static str {
        match self {
            ImageKind::Kernel => "kernel",
            ImageKind::Initrd => "initrd",
        }
    }
}

/// `BOOT` flags (`a0`; 0 = the flashed default).
pub mod boot_flags {
    /// The staged kernel (else the flashed kernel).
    pub const STAGED_KERNEL: u64 = 1;
    /// The staged initrd.
    pub const STAGED_INITRD: u64 = 2;
    /// No initrd (excludes [`STAGED_INITRD`]).
    pub const NO_INITRD: u64 = 4;
    /// The payload is the whole command line.
    pub const CMDLINE: u64 = 8;
    /// The flashed firmware, booting from the network first (alone, on a slice whose status
    /// says `network_boot`).
    pub const NETWORK: u64 = 16;
    /// Every defined flag.
    pub const ALL: u64 = STAGED_KERNEL | STAGED_INITRD | NO_INITRD | CMDLINE | NETWORK;
}

/// Why a slice name cannot go into a request header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// More than [`SLICE_NAME_LEN`] bytes.
    TooLong(usize),
    /// It holds a NUL byte.
    Nul,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "empty slice name"),
            NameError::TooLong(n) => {
                write!(f, "slice name of {n} bytes (at most {SLICE_NAME_LEN})")
            }
            NameError::Nul => write!(f, "slice name with a NUL byte"),
        }
    }
}

/// The `slice` field for `name`: its bytes, NUL-padded to 32 (not NUL-terminated when 32
/// long). An empty name is all NULs (operations without a target).
pub fn encode_slice_name(name: &str) -> Result<[u8; SLICE_NAME_LEN], NameError> {
    let bytes = name.as_bytes();
    if bytes.len() > SLICE_NAME_LEN {
        return Err(NameError::TooLong(bytes.len()));
    }
    if bytes.contains(&0) {
        return Err(NameError::Nul);
    }
    let mut field = [0; SLICE_NAME_LEN];
    field[..bytes.len()].copy_from_slice(bytes);
    Ok(field)
}

/// Checks `name` names a slice: not empty, at most 32 bytes, no NUL.
pub fn check_slice_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    encode_slice_name(name).map(|_| ())
}

/// The request header (docs/control.md, "The data window"), as it is in the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub magic: u32,
    pub op: u32,
    pub a0: u64,
    pub a1: u64,
    pub a2: u64,
    /// Bytes of request payload at [`PAYLOAD_OFFSET`].
    pub length: u64,
    /// The target's name, NUL-padded.
    pub slice: [u8; SLICE_NAME_LEN],
}

impl RequestHeader {
    /// Its 128 bytes, little-endian, reserved bytes zero.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut out = [0; REQUEST_LEN];
        out[0x00..0x04].copy_from_slice(&self.magic.to_le_bytes());
        out[0x04..0x08].copy_from_slice(&self.op.to_le_bytes());
        out[0x08..0x10].copy_from_slice(&self.a0.to_le_bytes());
        out[0x10..0x18].copy_from_slice(&self.a1.to_le_bytes());
        out[0x18..0x20].copy_from_slice(&self.a2.to_le_bytes());
        out[0x20..0x28].copy_from_slice(&self.length.to_le_bytes());
        out[0x28..0x48].copy_from_slice(&self.slice);
        out
    }

    /// The fields of 128 header bytes, unchecked (the reserved bytes are ignored).
    pub fn decode(bytes: &[u8; REQUEST_LEN]) -> RequestHeader {
        let mut slice = [0; SLICE_NAME_LEN];
        slice.copy_from_slice(&bytes[0x28..0x48]);
        RequestHeader {
            magic: u32_at(bytes, 0x00),
            op: u32_at(bytes, 0x04),
            a0: u64_at(bytes, 0x08),
            a1: u64_at(bytes, 0x10),
            a2: u64_at(bytes, 0x18),
            length: u64_at(bytes, 0x20),
            slice,
        }
    }

    /// The `slice` field as a name: the bytes before the padding. `None` when it is not a
    /// name: not UTF-8, or a non-NUL byte after a NUL.
    pub fn slice_name(&self) -> Option<&str> {
        let end = self
            .slice
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(SLICE_NAME_LEN);
        if self.slice[end..].iter().any(|&b| b != 0) {
            return None;
        }
        std::str::from_utf8(&self.slice[..end]).ok()
    }
}

/// The response header, as it is in the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ResponseHeader {
    /// The status code (also what `EXECUTE` returned).
    pub status: u64,
    pub r0: u64,
    pub r1: u64,
    /// Bytes of response payload at [`PAYLOAD_OFFSET`].
    pub length: u64,
}

impl ResponseHeader {
    /// Its 32 bytes, little-endian.
    pub fn encode(&self) -> [u8; RESPONSE_LEN] {
        let mut out = [0; RESPONSE_LEN];
        out[0x00..0x08].copy_from_slice(&self.status.to_le_bytes());
        out[0x08..0x10].copy_from_slice(&self.r0.to_le_bytes());
        out[0x10..0x18].copy_from_slice(&self.r1.to_le_bytes());
        out[0x18..0x20].copy_from_slice(&self.length.to_le_bytes());
        out
    }

    /// The fields of 32 header bytes.
    pub fn decode(bytes: &[u8; RESPONSE_LEN]) -> ResponseHeader {
        ResponseHeader {
            status: u64_at(bytes, 0x00),
            r0: u64_at(bytes, 0x08),
            r1: u64_at(bytes, 0x10),
            length: u64_at(bytes, 0x18),
        }
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constants_spell_what_the_doc_says() {
        assert_eq!(&ID.to_le_bytes()[..5], b"MVCTL");
        assert_eq!(&REQUEST_MAGIC.to_le_bytes(), b"MVRQ");
        assert_eq!(MAX_PAYLOAD, 0x1f_f000);
        const { assert!(RESPONSE_OFFSET >= REQUEST_OFFSET + REQUEST_LEN) };
        const { assert!(PAYLOAD_OFFSET >= RESPONSE_OFFSET + RESPONSE_LEN) };
    }

    #[test]
    fn request_header_fields_sit_at_the_documented_offsets() {
        let header = RequestHeader {
            magic: REQUEST_MAGIC,
            op: Op::Shutdown.code(),
            a0: 0x0102_0304_0506_0708,
            a1: 0x1112_1314_1516_1718,
            a2: 0x2122_2324_2526_2728,
            length: 0x3132,
            slice: encode_slice_name("web").unwrap(),
        };
        let bytes = header.encode();
        assert_eq!(&bytes[0..4], b"MVRQ");
        assert_eq!(&bytes[4..8], &[6, 0, 0, 0]);
        assert_eq!(bytes[0x08], 0x08);
        assert_eq!(bytes[0x0f], 0x01);
        assert_eq!(bytes[0x10], 0x18);
        assert_eq!(bytes[0x18], 0x28);
        assert_eq!(&bytes[0x20..0x28], &[0x32, 0x31, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[0x28..0x2b], b"web");
        assert!(bytes[0x2b..].iter().all(|&b| b == 0));
        assert_eq!(RequestHeader::decode(&bytes), header);
        assert_eq!(header.slice_name(), Some("web"));
    }

    #[test]
    fn response_header_round_trips() {
        let header = ResponseHeader {
            status: 5,
            r0: 7,
            r1: u64::MAX,
            length: 12,
        };
        let bytes = header.encode();
        assert_eq!(bytes[0], 5);
        assert_eq!(bytes[8], 7);
        assert_eq!(&bytes[0x10..0x18], &[0xff; 8]);
        assert_eq!(bytes[0x18], 12);
        assert_eq!(ResponseHeader::decode(&bytes), header);
    }

    #[test]
    fn slice_names_are_nul_padded_and_bounded() {
        let full = "a".repeat(32);
        let field = encode_slice_name(&full).unwrap();
        assert_eq!(field, [b'a'; 32], "32 bytes: not NUL-terminated");
        assert_eq!(
            encode_slice_name(&"a".repeat(33)),
            Err(NameError::TooLong(33))
        );
        assert_eq!(encode_slice_name("a\0b"), Err(NameError::Nul));
        assert_eq!(encode_slice_name(""), Ok([0; 32]));
        assert_eq!(check_slice_name(""), Err(NameError::Empty));
        assert_eq!(check_slice_name("db"), Ok(()));
    }

    #[test]
    fn a_slice_field_with_bytes_after_the_padding_is_no_name() {
        let mut header = RequestHeader::decode(&[0; REQUEST_LEN]);
        header.slice[..3].copy_from_slice(b"web");
        header.slice[10] = b'x';
        assert_eq!(header.slice_name(), None);
        header.slice[10] = 0;
        header.slice[1] = 0xff;
        assert_eq!(header.slice_name(), None, "not UTF-8");
        header.slice = [b'z'; 32];
        assert_eq!(header.slice_name(), Some("z".repeat(32).as_str()));
    }

    #[test]
    fn codes_round_trip() {
        for op in Op::ALL {
            assert_eq!(Op::from_code(op.code()), Some(op));
        }
        assert_eq!(Op::from_code(0), None);
        assert_eq!(Op::from_code(15), None);
        for (code, status) in Status::ALL.into_iter().enumerate() {
            assert_eq!(status.code(), code as u64);
            assert_eq!(Status::from_code(code as u64), status);
        }
        assert_eq!(Status::from_code(99), Status::Other(99));
        assert_eq!(Status::Other(99).name(), "STATUS_99");
        assert_eq!(Status::WrongState.to_string(), "WRONG_STATE");
        assert_eq!(ImageKind::from_code(1), Some(ImageKind::Initrd));
        assert_eq!(ImageKind::from_code(2), None);
    }
}
