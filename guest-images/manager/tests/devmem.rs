//! The `/dev/mem` transport on a regular file standing in for physical memory (a shared
//! mapping of a file behaves alike): the device tree walk, the ID/VERSION checks, and the
//! request as it lands in the window. Nothing answers `EXECUTE` here, so it reads what the
//! file holds.

use std::fs;
use std::path::{Path, PathBuf};

use microvisor_control::devmem::{DevMemTransport, Paths};
use microvisor_control::protocol::{ID, REQUEST_MAGIC, RequestHeader, encode_slice_name};
use microvisor_control::{Client, Error, Op, Request, Status, Transport};

const REGISTERS: u64 = 0x0000;
const WINDOW: u64 = 0x2000;
const WINDOW_SIZE: u64 = 0x3000;

struct Setup {
    dir: PathBuf,
    paths: Paths,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn cells(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn put_u64(file: &Path, at: u64, value: u64) {
    let mut bytes = fs::read(file).unwrap();
    bytes[at as usize..at as usize + 8].copy_from_slice(&value.to_le_bytes());
    fs::write(file, bytes).unwrap();
}

fn u64_at(bytes: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(bytes[at as usize..at as usize + 8].try_into().unwrap())
}

/// A device tree with the control node at `window_base`, and a "memory" file with the
/// registers: ID, VERSION 1, WINDOW_SIZE, EXECUTE = `execute`.
fn setup(name: &str, window_base: u64, execute: u64) -> Setup {
    let dir = std::env::temp_dir().join(format!("microvisor-devmem-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let node = dir.join("dt/control@0");
    fs::create_dir_all(&node).unwrap();
    fs::write(dir.join("dt/#address-cells"), cells(&[2])).unwrap();
    fs::write(dir.join("dt/#size-cells"), cells(&[2])).unwrap();
    fs::write(node.join("compatible"), b"microvisor,control-v1\0").unwrap();
    fs::write(
        node.join("reg"),
        cells(&[
            0,
            REGISTERS as u32,
            0,
            0x1000,
            0,
            window_base as u32,
            0,
            WINDOW_SIZE as u32,
        ]),
    )
    .unwrap();
    let mem = dir.join("mem");
    fs::write(&mem, vec![0u8; (WINDOW + WINDOW_SIZE) as usize]).unwrap();
    put_u64(&mem, REGISTERS, ID);
    put_u64(&mem, REGISTERS + 8, 1);
    put_u64(&mem, REGISTERS + 0x10, WINDOW_SIZE);
    put_u64(&mem, REGISTERS + 0x18, execute);
    let paths = Paths {
        device_tree: dir.join("dt"),
        mem,
        lock: dir.join("run/lock"),
    };
    Setup { dir, paths }
}

#[test]
fn the_request_lands_in_the_window_with_aligned_words() {
    let s = setup("request", WINDOW, Status::Busy.code());
    let mut transport = DevMemTransport::open_at(&s.paths).unwrap();
    assert_eq!(
        transport.payload_capacity(),
        (WINDOW_SIZE - 0x1000) as usize
    );
    assert_eq!(transport.node().window.base, WINDOW);
    let request = Request::new(Op::ConsoleWrite, "web").payload(b"hello world");
    let response = transport.execute(&request).unwrap();
    // BUSY without a response: the window is untouched by the "hypervisor".
    assert_eq!(response.status, Status::Busy.code());
    let memory = fs::read(&s.paths.mem).unwrap();
    let expected = RequestHeader {
        magic: REQUEST_MAGIC,
        op: Op::ConsoleWrite.code(),
        a0: 0,
        a1: 0,
        a2: 0,
        length: 11,
        slice: encode_slice_name("web").unwrap(),
    }
    .encode();
    assert_eq!(&memory[WINDOW as usize..WINDOW as usize + 128], &expected);
    let payload = (WINDOW + 0x1000) as usize;
    assert_eq!(&memory[payload..payload + 16], b"hello world\0\0\0\0\0");
    assert_eq!(
        u64_at(&memory, WINDOW + 0x80),
        u64::MAX,
        "the untouched marker"
    );
    assert!(s.paths.lock.exists(), "the lock file is made");

    let mut client = Client::new(transport);
    let err = client.list().unwrap_err();
    assert_eq!(err.status(), Some(Status::Busy));
}

#[test]
fn the_transport_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<DevMemTransport>();
    send::<Client<DevMemTransport>>();
}

#[test]
fn an_ok_without_a_response_is_a_protocol_error() {
    let s = setup("noresponse", WINDOW, 0);
    let mut client = Client::new(DevMemTransport::open_at(&s.paths).unwrap());
    assert!(matches!(client.list(), Err(Error::Protocol(_))));
}

#[test]
fn payloads_beyond_the_window_are_refused_before_anything_is_written() {
    let s = setup("large", WINDOW, 0);
    let mut transport = DevMemTransport::open_at(&s.paths).unwrap();
    let big = vec![1u8; 0x2001];
    let request = Request::new(Op::StageWrite, "web").payload(&big);
    assert!(matches!(
        transport.execute(&request),
        Err(Error::InvalidArgument(_))
    ));
    let memory = fs::read(&s.paths.mem).unwrap();
    assert!(memory[WINDOW as usize..].iter().all(|&b| b == 0));
}

#[test]
fn a_wrong_id_or_version_is_not_used() {
    let s = setup("id", WINDOW, 0);
    put_u64(&s.paths.mem, REGISTERS, 0x1234);
    let err = DevMemTransport::open_at(&s.paths).unwrap_err();
    assert!(
        err.to_string().contains("ID register reads 0x1234"),
        "{err}"
    );
    put_u64(&s.paths.mem, REGISTERS, ID);
    put_u64(&s.paths.mem, REGISTERS + 8, 2);
    let err = DevMemTransport::open_at(&s.paths).unwrap_err();
    assert!(err.to_string().contains("version 2"), "{err}");
    put_u64(&s.paths.mem, REGISTERS + 8, 1);
    put_u64(&s.paths.mem, REGISTERS + 0x10, 0x800);
    let err = DevMemTransport::open_at(&s.paths).unwrap_err();
    assert!(err.to_string().contains("no payload area"), "{err}");
}

#[test]
fn unaligned_ranges_and_missing_memory_are_interface_errors() {
    let s = setup("unaligned", WINDOW + 8, 0);
    let err = DevMemTransport::open_at(&s.paths).unwrap_err();
    assert!(matches!(err, Error::Interface(_)), "{err:?}");
    let s = setup("nomem", WINDOW, 0);
    fs::remove_file(&s.paths.mem).unwrap();
    let err = DevMemTransport::open_at(&s.paths).unwrap_err();
    assert!(
        err.to_string().starts_with("control interface: opening "),
        "{err}"
    );
}
