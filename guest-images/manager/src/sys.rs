//! Every system call and raw memory access of the crate, each behind a safe function: the
//! `/dev/mem` mapping and its volatile 8-byte accesses, `flock`, the terminal's raw mode,
//! `poll`, and the GPIO character device's ioctls. The only module that allows `unsafe`.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::gpio::{self, ChipInfo, LineRequest};

/// A `MAP_SHARED` mapping of a physical range through `/dev/mem`, accessed only with
/// naturally aligned 8-byte volatile loads and stores (Linux maps it as Device memory).
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `file` (`/dev/mem`) at `offset` (page-aligned), read-write.
    pub fn map(file: &File, offset: u64, len: usize) -> io::Result<Mapping> {
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        // SAFETY: (1) a fresh mapping: the kernel picks the address (null hint), so no Rust
        // object is aliased; (2) `file` is an open descriptor for the call's duration; (3) the
        // result is checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Mapping { base, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether an 8-byte access at `offset` is naturally aligned and inside the mapping.
    fn fits(&self, offset: usize) -> bool {
        offset % 8 == 0 && offset.checked_add(8).is_some_and(|end| end <= self.len)
    }

    /// The 64-bit word at `offset`, `None` when unaligned or outside.
    pub fn read_u64(&self, offset: usize) -> Option<u64> {
        if !self.fits(offset) {
            return None;
        }
        // SAFETY: (1) `offset + 8 <= len`, so the word is inside the live mapping made by
        // `map` (unmapped only on drop); (2) the mapping is page-aligned and `offset` a
        // multiple of 8, so the pointer is aligned for u64; (3) the access is volatile, a
        // single 8-byte load as Device memory requires; (4) any bit pattern is a valid u64.
        Some(unsafe { self.base.as_ptr().add(offset).cast::<u64>().read_volatile() })
    }

    /// Stores `value` at `offset`; `false` when unaligned or outside (nothing written).
    pub fn write_u64(&self, offset: usize, value: u64) -> bool {
        if !self.fits(offset) {
            return false;
        }
        // SAFETY: as in `read_u64`: inside the live mapping, aligned, one volatile 8-byte
        // store; the mapping is device memory no Rust reference points into.
        unsafe {
            self.base
                .as_ptr()
                .add(offset)
                .cast::<u64>()
                .write_volatile(value)
        };
        true
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what `mmap` returned and are unmapped once; no
        // reference into the mapping outlives `self` (accesses copy values out).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// An exclusive `flock` on a file, released on drop.
#[derive(Debug)]
pub struct FileLock<'a> {
    file: &'a File,
}

impl<'a> FileLock<'a> {
    /// Takes the lock, trying again every 5 ms for at most `timeout`.
    pub fn exclusive(file: &'a File, timeout: Duration) -> io::Result<FileLock<'a>> {
        let start = Instant::now();
        loop {
            // SAFETY: `flock` on an open descriptor; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(FileLock { file });
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK)
                && err.kind() != io::ErrorKind::Interrupted
            {
                return Err(err);
            }
            if start.elapsed() >= timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("held by another process for {} s", timeout.as_secs()),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // SAFETY: `flock` on an open descriptor; no memory is passed.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// A terminal in raw mode, its settings restored on drop.
#[derive(Debug)]
pub struct RawTerminal {
    fd: RawFd,
    saved: libc::termios,
}

impl RawTerminal {
    /// Puts terminal `fd` in raw mode (no echo, no line editing, no signals from keys);
    /// `None` when `fd` is not a terminal.
    pub fn enter(fd: RawFd) -> io::Result<Option<RawTerminal>> {
        // SAFETY: `isatty` takes a descriptor and no memory.
        if unsafe { libc::isatty(fd) } != 1 {
            return Ok(None);
        }
        // SAFETY: termios is plain data; all-zero is a valid value that tcgetattr overwrites.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid, writable termios for the call.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios; cfmakeraw only edits its fields.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `raw` is a valid termios read by the call.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some(RawTerminal { fd, saved }))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: `saved` is the valid termios tcgetattr filled; `fd` is still the terminal.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

/// Whether `fd` has input (or end of file) within `timeout`.
pub fn readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid, writable pollfd, count 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(err);
    }
    Ok(rc > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
}

/// `GPIO_GET_CHIPINFO_IOCTL` on a `/dev/gpiochipN`.
pub fn gpio_chip_info(chip: &File) -> io::Result<ChipInfo> {
    let mut info = ChipInfo::default();
    // SAFETY: the request's size and direction are those of `ChipInfo` (struct gpiochip_info,
    // checked by gpio's tests); `info` is valid and writable for the call.
    let rc = unsafe {
        libc::ioctl(
            chip.as_raw_fd(),
            gpio::GPIO_GET_CHIPINFO_IOCTL as _,
            &mut info as *mut ChipInfo,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}

/// `GPIO_V2_GET_LINE_IOCTL`: requests the lines of `request`; returns the line descriptor
/// the events are read from.
pub fn gpio_get_line(chip: &File, request: &mut LineRequest) -> io::Result<File> {
    // SAFETY: the request's size and direction are those of `LineRequest` (struct
    // gpio_v2_line_request, checked by gpio's tests); it is valid and writable for the call.
    let rc = unsafe {
        libc::ioctl(
            chip.as_raw_fd(),
            gpio::GPIO_V2_GET_LINE_IOCTL as _,
            request as *mut LineRequest,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if request.fd < 0 {
        return Err(io::Error::other("the kernel returned no line descriptor"));
    }
    // SAFETY: on success the kernel stored a new descriptor in `fd` that nothing else owns.
    Ok(unsafe { File::from_raw_fd(request.fd) })
}

/// One `read(2)` of descriptor `fd` (unbuffered, so `poll` and the reads agree).
pub fn read_fd(fd: RawFd, buffer: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buffer` is valid and writable for `buffer.len()` bytes for the call.
    let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
