//! [`DevMemTransport`]: the real transport. Finds the control node in the device tree, maps
//! its registers and data window from `/dev/mem`, and runs each request under an exclusive
//! `flock` so that processes never share the window (docs/control.md, "Where it is",
//! "Registers", "The data window").

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use crate::dt::{self, ControlNode};
use crate::error::Error;
use crate::protocol::{
    ID, PAYLOAD_OFFSET, REQUEST_LEN, REQUEST_OFFSET, RESPONSE_LEN, RESPONSE_OFFSET, ResponseHeader,
    VERSION, reg,
};
use crate::sys::{FileLock, Mapping};
use crate::transport::{Request, Response, Transport, response_from};

/// Where the device tree is.
pub const DEVICE_TREE: &str = "/proc/device-tree";
/// The lock file that serialises requests of all processes.
pub const LOCK_FILE: &str = "/run/microvisor-control.lock";
/// Longest wait for another process's request to end.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// Written to the response header's `status` before `EXECUTE`: still there afterwards means
/// the hypervisor left the window alone (`BUSY`, another request running).
const UNTOUCHED: u64 = u64::MAX;
/// Page size the ranges must be aligned to.
const PAGE: u64 = 4096;

/// Paths the transport uses (the defaults, or others for tests and unusual systems).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub device_tree: PathBuf,
    pub mem: PathBuf,
    pub lock: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            device_tree: DEVICE_TREE.into(),
            mem: "/dev/mem".into(),
            lock: LOCK_FILE.into(),
        }
    }
}

/// The control interface mapped from `/dev/mem`.
#[derive(Debug)]
pub struct DevMemTransport {
    node: ControlNode,
    registers: Mapping,
    window: Mapping,
    capacity: usize,
    lock: File,
}

impl DevMemTransport {
    /// Opens the control interface at the default paths.
    pub fn open() -> Result<DevMemTransport, Error> {
        Self::open_at(&Paths::default())
    }

    /// Opens the control interface: [`Error::NoControlInterface`] when the device tree has no
    /// control node, [`Error::Interface`] when it cannot be mapped or does not speak version 1.
    pub fn open_at(paths: &Paths) -> Result<DevMemTransport, Error> {
        let node = dt::find_control_node(&paths.device_tree)?.ok_or(Error::NoControlInterface)?;
        for (what, range, least) in [
            ("registers", node.registers, (reg::EXECUTE + 8) as u64),
            ("window", node.window, (PAYLOAD_OFFSET + 8) as u64),
        ] {
            if range.base % PAGE != 0 || range.size < least {
                return Err(Error::Interface(format!(
                    "{what} at {:#x} size {:#x} in {}: not page-aligned or too small",
                    range.base,
                    range.size,
                    node.path.display()
                )));
            }
        }
        let mem = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_SYNC)
            .open(&paths.mem)
            .map_err(|e| Error::Interface(format!("opening {}: {e}", paths.mem.display())))?;
        let map = |what: &str, range: dt::Range| {
            let len = usize::try_from(range.size.div_ceil(PAGE) * PAGE)
                .map_err(|_| Error::Interface(format!("{what} too large")))?;
            Mapping::map(&mem, range.base, len).map_err(|e| {
                Error::Interface(format!(
                    "mapping the {what} at {:#x} from {}: {e}",
                    range.base,
                    paths.mem.display()
                ))
            })
        };
        let registers = map("registers", node.registers)?;
        let window = map("window", node.window)?;
        let read = |offset| {
            registers
                .read_u64(offset)
                .ok_or_else(|| Error::Interface(format!("register {offset:#x} outside the page")))
        };
        let id = read(reg::ID)?;
        if id != ID {
            return Err(Error::Interface(format!(
                "ID register reads {id:#x}, not {ID:#x} (MVCTL)"
            )));
        }
        let version = read(reg::VERSION)?;
        if version != VERSION {
            return Err(Error::Interface(format!(
                "version {version}; this client speaks version {VERSION}"
            )));
        }
        let window_size = read(reg::WINDOW_SIZE)?;
        let usable = usize::try_from(window_size)
            .unwrap_or(usize::MAX)
            .min(window.len());
        if usable < PAYLOAD_OFFSET + 8 {
            return Err(Error::Interface(format!(
                "WINDOW_SIZE {window_size:#x} leaves no payload area"
            )));
        }
        let capacity = (usable - PAYLOAD_OFFSET) & !7;
        let lock = open_lock(&paths.lock)?;
        Ok(DevMemTransport {
            node,
            registers,
            window,
            capacity,
            lock,
        })
    }

    /// The node found in the device tree.
    pub fn node(&self) -> &ControlNode {
        &self.node
    }

    fn put(&self, offset: usize, bytes: &[u8]) -> Result<(), Error> {
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            if !self
                .window
                .write_u64(offset + i * 8, u64::from_le_bytes(word))
            {
                return Err(Error::Interface(format!(
                    "window write at {:#x} outside the mapping",
                    offset + i * 8
                )));
            }
        }
        Ok(())
    }

    fn get(&self, offset: usize, len: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(len.div_ceil(8) * 8);
        for i in 0..len.div_ceil(8) {
            let word = self.window.read_u64(offset + i * 8).ok_or_else(|| {
                Error::Interface(format!(
                    "window read at {:#x} outside the mapping",
                    offset + i * 8
                ))
            })?;
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.truncate(len);
        Ok(out)
    }
}

/// Opens (creating it and `/run` if need be) the lock file.
fn open_lock(path: &Path) -> Result<File, Error> {
    if let Some(dir) = path.parent() {
        let _ = fs::create_dir_all(dir);
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::Interface(format!("opening {}: {e}", path.display())))
}

impl Transport for DevMemTransport {
    fn payload_capacity(&self) -> usize {
        self.capacity
    }

    fn execute(&mut self, request: &Request<'_>) -> Result<Response, Error> {
        let header = request.header(self.capacity)?;
        let _lock = FileLock::exclusive(&self.lock, LOCK_TIMEOUT)
            .map_err(|e| Error::Interface(format!("locking {LOCK_FILE}: {e}")))?;
        let bytes: [u8; REQUEST_LEN] = header.encode();
        self.put(REQUEST_OFFSET, &bytes)?;
        self.put(PAYLOAD_OFFSET, request.payload)?;
        self.put(RESPONSE_OFFSET, &UNTOUCHED.to_le_bytes())?;
        // The window's stores before the read that runs the request.
        fence(Ordering::SeqCst);
        let execute = self
            .registers
            .read_u64(reg::EXECUTE)
            .ok_or_else(|| Error::Interface("EXECUTE outside the register page".into()))?;
        fence(Ordering::SeqCst);
        let raw = self.get(RESPONSE_OFFSET, RESPONSE_LEN)?;
        let mut header_bytes = [0; RESPONSE_LEN];
        header_bytes.copy_from_slice(&raw);
        let response = ResponseHeader::decode(&header_bytes);
        if response.status == UNTOUCHED {
            return response_from(execute, None, self.capacity);
        }
        if response.length > self.capacity as u64 {
            return Err(Error::Protocol(format!(
                "a response length of {} bytes (the window holds {})",
                response.length, self.capacity
            )));
        }
        let payload = self.get(PAYLOAD_OFFSET, response.length as usize)?;
        response_from(execute, Some((response, payload)), self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_without_the_node_says_it_is_not_the_manager() {
        let paths = Paths {
            device_tree: std::env::temp_dir().join("microvisor-control-no-such-tree"),
            mem: "/nonexistent/mem".into(),
            lock: std::env::temp_dir().join("microvisor-control-test.lock"),
        };
        let err = DevMemTransport::open_at(&paths).unwrap_err();
        assert_eq!(err, Error::NoControlInterface);
        assert_eq!(
            err.to_string(),
            "this slice has no control interface (not the manager)"
        );
    }
}
