//! Hostile and malformed requests, as header bytes in the window, against the fake
//! hypervisor: each gets its documented status and one line, never a fault, and touches no
//! slice it did not name.

use microvisor_control::fake::{FakeHypervisor, fake_kernel};
use microvisor_control::protocol::{REQUEST_LEN, REQUEST_MAGIC, RequestHeader, encode_slice_name};
use microvisor_control::{Op, Status};

fn header(op: u32, slice: &str, a0: u64, a1: u64, length: u64) -> RequestHeader {
    RequestHeader {
        magic: REQUEST_MAGIC,
        op,
        a0,
        a1,
        a2: 0,
        length,
        slice: encode_slice_name(slice).unwrap(),
    }
}

/// Runs `header` with `payload`: (status, message).
fn run(fake: &mut FakeHypervisor, header: &RequestHeader, payload: &[u8]) -> (Status, String) {
    let outcome = fake.execute_raw(&header.encode(), payload);
    let (response, body) = outcome.response.expect("the window is answered");
    assert_eq!(
        response.status, outcome.execute,
        "EXECUTE and the header agree"
    );
    assert_eq!(response.length as usize, body.len());
    (
        Status::from_code(outcome.execute),
        String::from_utf8(body).unwrap(),
    )
}

fn status(fake: &mut FakeHypervisor, header: &RequestHeader, payload: &[u8]) -> Status {
    let (status, message) = run(fake, header, payload);
    if status != Status::Ok {
        assert!(
            !message.is_empty() && !message.contains('\n'),
            "{message:?}"
        );
    }
    status
}

#[test]
fn bad_magic_and_lengths_are_bad_requests() {
    let mut fake = FakeHypervisor::default_node().with_capacity(4096);
    let mut h = header(Op::List.code(), "", 0, 0, 0);
    h.magic = 0x1234;
    assert_eq!(status(&mut fake, &h, &[]), Status::BadRequest);
    let h = header(Op::Status.code(), "web", 0, 0, 4097);
    assert_eq!(status(&mut fake, &h, &[]), Status::BadRequest);
    let h = header(Op::Status.code(), "web", 0, 0, u64::MAX);
    assert_eq!(status(&mut fake, &h, &[]), Status::BadRequest);
}

#[test]
fn unknown_operations_are_unknown() {
    let mut fake = FakeHypervisor::default_node();
    for op in [0, 15, 0x100, u32::MAX] {
        assert_eq!(
            status(&mut fake, &header(op, "web", 0, 0, 0), &[]),
            Status::UnknownOp
        );
    }
}

#[test]
fn slice_fields_that_are_not_names() {
    let mut fake = FakeHypervisor::default_node();
    let mut h = header(Op::Status.code(), "web", 0, 0, 0);
    h.slice[5] = b'x';
    assert_eq!(
        status(&mut fake, &h, &[]),
        Status::BadRequest,
        "bytes after the padding"
    );
    h.slice = [0xff; 32];
    assert_eq!(status(&mut fake, &h, &[]), Status::BadRequest, "not UTF-8");
    let h = header(Op::Status.code(), "", 0, 0, 0);
    assert_eq!(status(&mut fake, &h, &[]), Status::NoSuchSlice, "empty");
    let h = header(Op::On.code(), &"w".repeat(32), 0, 0, 0);
    assert_eq!(
        status(&mut fake, &h, &[]),
        Status::NoSuchSlice,
        "32 bytes, unknown"
    );
    let h = header(Op::Status.code(), "WEB", 0, 0, 0);
    assert_eq!(
        status(&mut fake, &h, &[]),
        Status::NoSuchSlice,
        "names are exact"
    );
}

#[test]
fn staging_writes_out_of_order_or_past_the_end() {
    let mut fake = FakeHypervisor::default_node().with_capacity(4096);
    let write = |offset: u64, len: u64| header(Op::StageWrite.code(), "web", 0, offset, len);
    assert_eq!(
        status(&mut fake, &write(0, 10), &[1; 10]),
        Status::BadRequest,
        "no STAGE_BEGIN"
    );
    let begin = header(Op::StageBegin.code(), "web", 0, 100, 0);
    assert_eq!(status(&mut fake, &begin, &[]), Status::Ok);
    assert_eq!(
        status(&mut fake, &write(10, 10), &[1; 10]),
        Status::BadRequest,
        "a hole"
    );
    assert_eq!(
        status(&mut fake, &write(0, 101), &[1; 101]),
        Status::BadRequest,
        "past the end"
    );
    assert_eq!(
        status(&mut fake, &write(0, 64), &fake_kernel(64)),
        Status::Ok
    );
    assert_eq!(
        status(&mut fake, &write(0, 10), &[1; 10]),
        Status::BadRequest,
        "again at 0"
    );
    assert_eq!(
        status(&mut fake, &write(u64::MAX, 1), &[1]),
        Status::BadRequest
    );
    let end = header(Op::StageEnd.code(), "web", 0, 0, 0);
    assert_eq!(
        status(&mut fake, &end, &[]),
        Status::BadRequest,
        "incomplete"
    );
    assert_eq!(status(&mut fake, &write(64, 36), &[0; 36]), Status::Ok);
    assert_eq!(status(&mut fake, &end, &[]), Status::Ok);
    assert_eq!(
        status(&mut fake, &end, &[]),
        Status::BadRequest,
        "ended twice"
    );
    for kind in [2, u64::MAX] {
        let h = header(Op::StageBegin.code(), "web", kind, 10, 0);
        assert_eq!(
            status(&mut fake, &h, &[]),
            Status::BadRequest,
            "kind {kind}"
        );
    }
    let h = header(Op::StageBegin.code(), "web", 1, 0, 0);
    assert_eq!(status(&mut fake, &h, &[]), Status::BadRequest, "size 0");
    let h = header(Op::StageBegin.code(), "web", 1, u64::MAX, 0);
    assert_eq!(
        status(&mut fake, &h, &[]),
        Status::TooLarge,
        "size u64::MAX"
    );
}

#[test]
fn boot_flags_and_payloads_are_checked() {
    let mut fake = FakeHypervisor::default_node();
    let boot = |flags: u64, len: u64| header(Op::Boot.code(), "web", flags, 0, len);
    assert_eq!(
        status(&mut fake, &boot(16, 0), &[]),
        Status::BadRequest,
        "unknown flag"
    );
    assert_eq!(
        status(&mut fake, &boot(2 | 4, 0), &[]),
        Status::BadRequest,
        "2 and 4"
    );
    assert_eq!(
        status(&mut fake, &boot(4, 3), b"abc"),
        Status::BadRequest,
        "payload, no flag 8"
    );
    assert_eq!(
        status(&mut fake, &boot(8, 3), b"a\0c"),
        Status::BadRequest,
        "NUL"
    );
    assert_eq!(
        status(&mut fake, &boot(8, 2), &[0xc3, 0x28]),
        Status::BadRequest,
        "not UTF-8"
    );
    assert_eq!(
        status(&mut fake, &boot(8, 2048), &[b'x'; 2048]),
        Status::TooLarge
    );
    assert_eq!(status(&mut fake, &boot(8 | 4, 5), b"quiet"), Status::Ok);
    assert_eq!(status(&mut fake, &boot(0, 0), &[]), Status::Ok);
}

#[test]
fn shutdown_timeouts_and_console_lengths_are_checked() {
    let mut fake = FakeHypervisor::default_node().with_capacity(8192);
    for ms in [0, 3_600_001, u64::MAX] {
        let h = header(Op::Shutdown.code(), "web", ms, 0, 0);
        assert_eq!(status(&mut fake, &h, &[]), Status::BadRequest, "{ms} ms");
    }
    let h = header(Op::ConsoleWrite.code(), "web", 0, 0, 4097);
    assert_eq!(status(&mut fake, &h, &[b'x'; 4097]), Status::BadRequest);
    assert!(fake.input("web").is_empty());
    // A cursor past the end returns nothing at the end.
    let h = header(Op::ConsoleRead.code(), "web", u64::MAX - 1, 0, 0);
    let outcome = fake.execute_raw(&h.encode(), &[]);
    let (response, body) = outcome.response.unwrap();
    assert_eq!(response.status, 0);
    assert!(body.is_empty());
    assert_eq!(response.r0, response.r1);
}

#[test]
fn a_request_while_another_runs_leaves_the_window_alone() {
    let mut fake = FakeHypervisor::default_node();
    fake.busy = true;
    let outcome = fake.execute_raw(&header(Op::Off.code(), "web", 0, 0, 0).encode(), &[]);
    assert_eq!(outcome.execute, Status::Busy.code());
    assert_eq!(outcome.response, None);
    fake.busy = false;
    assert_eq!(fake.state("web"), "on", "nothing ran");
}

#[test]
fn an_on_off_storm_touches_only_the_slice_named() {
    let mut fake = FakeHypervisor::default_node();
    let before_db = fake.console("db");
    for i in 0..200 {
        let op = if i % 2 == 0 { Op::Off } else { Op::On };
        assert_eq!(
            status(&mut fake, &header(op.code(), "web", 0, 0, 0), &[]),
            Status::Ok
        );
        // Garbage in between.
        let mut garbage = [0u8; REQUEST_LEN];
        for (j, b) in garbage.iter_mut().enumerate() {
            *b = (i * 31 + j * 7) as u8;
        }
        let outcome = fake.execute_raw(&garbage, &[0xaa; 64]);
        assert_ne!(outcome.execute, 0);
    }
    assert_eq!(fake.starts("web"), 101);
    assert_eq!(fake.starts("db"), 1);
    assert_eq!(fake.console("db"), before_db);
    assert_eq!(fake.state("db"), "on");
}
