//! The client library against the fake hypervisor: every operation of docs/control.md, the
//! refusals it documents, and answers no hypervisor should give.

use std::time::Duration;

use microvisor_control::fake::{
    BOOT_LINE, CONSOLE_RING, FakeHypervisor, FakeSliceSpec, fake_kernel,
};
use microvisor_control::protocol::{CONSOLE_END, MAX_CMDLINE};
use microvisor_control::{
    BootSpec, Client, Error, ImageKind, InitrdChoice, Op, Pacing, Request, Response, SliceState,
    Status, Transport,
};
use sha2::{Digest, Sha256};

fn fast() -> Pacing {
    Pacing {
        poll: Duration::from_millis(1),
        console_retry: Duration::from_millis(1),
        console_stalls: 10,
    }
}

fn client() -> Client<FakeHypervisor> {
    Client::new(FakeHypervisor::default_node()).with_pacing(fast())
}

fn refused(result: Result<impl std::fmt::Debug, Error>) -> (Status, String) {
    match result {
        Err(Error::Refused {
            status, message, ..
        }) => (status, message),
        other => panic!("not a refusal: {other:?}"),
    }
}

fn last_boot_line(c: &Client<FakeHypervisor>, slice: &str) -> String {
    let console = String::from_utf8(c.transport().console(slice)).unwrap();
    console
        .lines()
        .rev()
        .find(|l| l.starts_with(BOOT_LINE))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn list_has_every_slice_in_plan_order() {
    let mut c = client();
    let slices = c.list().unwrap();
    let names: Vec<&str> = slices.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ctl", "web", "db", "probe"]);
    assert_eq!(slices[0].role.as_str(), "manager");
    assert!(slices.iter().all(|s| s.state == SliceState::On));
}

#[test]
fn status_of_each_slice_and_of_the_manager_itself() {
    let mut c = client();
    let web = c.status("web").unwrap();
    assert_eq!(web.cores, [1, 2]);
    assert_eq!(web.nvme.as_ref().unwrap().queues, 3);
    assert_eq!(web.starts, 1);
    assert!(web.uptime_ms > 0);
    assert_eq!(c.status("ctl").unwrap().name, "ctl");
    assert_eq!(refused(c.status("nosuch")).0, Status::NoSuchSlice);
}

#[test]
fn power_operations_follow_the_states() {
    let mut c = client();
    assert_eq!(
        refused(c.on("web")),
        (Status::WrongState, "slice \"web\": already on".into())
    );
    c.off("web").unwrap();
    let status = c.status("web").unwrap();
    assert_eq!(status.state, SliceState::Off);
    assert_eq!(status.uptime_ms, 0);
    assert_eq!(
        status.last_stop.as_deref(),
        Some("forced off by the manager")
    );
    assert_eq!(refused(c.off("web")).0, Status::WrongState);
    c.on("web").unwrap();
    c.restart("web").unwrap();
    assert_eq!(c.status("web").unwrap().starts, 3);
    c.off("web").unwrap();
    c.restart("web").unwrap();
    assert_eq!(
        c.status("web").unwrap().state,
        SliceState::On,
        "restart starts an off slice"
    );
}

#[test]
fn the_manager_may_only_read_itself() {
    let mut c = client();
    let not_permitted: Vec<Result<(), Error>> = vec![
        c.on("ctl"),
        c.off("ctl"),
        c.restart("ctl"),
        c.shutdown("ctl", Duration::from_secs(1)),
        c.stage("ctl", ImageKind::Kernel, &fake_kernel(100))
            .map(drop),
        c.boot_default("ctl"),
        c.erase("ctl"),
        c.console_write_some("ctl", b"x").map(drop),
    ];
    for result in not_permitted {
        assert_eq!(refused(result).0, Status::NotPermitted);
    }
    c.status("ctl").unwrap();
    c.console_read("ctl", 0).unwrap();
}

#[test]
fn graceful_shutdown_powers_off_or_is_forced_at_the_deadline() {
    let mut c = client();
    c.shutdown("web", Duration::from_secs(5)).unwrap();
    assert_eq!(c.status("web").unwrap().state, SliceState::ShuttingDown);
    assert_eq!(
        refused(c.shutdown("web", Duration::from_secs(5))).0,
        Status::Busy
    );
    let off = c
        .wait_for_state("web", SliceState::Off, Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        off.last_stop.as_deref(),
        Some("powered off (PSCI SYSTEM_OFF)")
    );

    c.shutdown("probe", Duration::from_millis(200)).unwrap();
    let off = c
        .wait_for_state("probe", SliceState::Off, Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        off.last_stop.as_deref(),
        Some("forced off: shutdown timeout")
    );
    assert_eq!(
        refused(c.shutdown("probe", Duration::from_secs(1))).0,
        Status::WrongState
    );
}

#[test]
fn shutdown_timeouts_outside_the_range_are_not_sent() {
    let mut c = client();
    for timeout in [
        Duration::ZERO,
        Duration::from_micros(500),
        Duration::from_secs(3601),
    ] {
        assert!(matches!(
            c.shutdown("web", timeout),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(c.transport().log().is_empty());
}

#[test]
fn waits_are_bounded() {
    let mut c = client();
    c.shutdown("probe", Duration::from_secs(3600)).unwrap();
    let err = c
        .wait_for_state("probe", SliceState::Off, Duration::from_millis(30))
        .unwrap_err();
    assert!(matches!(&err, Error::Timeout(_)), "{err:?}");
    assert!(err.to_string().contains("shutting-down"), "{err}");
}

#[test]
fn staging_goes_in_chunks_of_the_payload_area_and_reports_the_hash() {
    let mut c = Client::new(FakeHypervisor::default_node().with_capacity(4096)).with_pacing(fast());
    let mut kernel = fake_kernel(10_000);
    for (i, b) in kernel.iter_mut().enumerate().skip(64) {
        *b = i as u8;
    }
    let staged = c.stage("web", ImageKind::Kernel, &kernel).unwrap();
    assert_eq!(staged.kind, "kernel");
    assert_eq!(staged.bytes, 10_000);
    let expected: String = Sha256::digest(&kernel)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(staged.sha256, expected);
    let ops: Vec<u32> = c.transport().log().iter().map(|(op, _, _)| *op).collect();
    assert_eq!(
        ops,
        [
            Op::StageBegin,
            Op::StageWrite,
            Op::StageWrite,
            Op::StageWrite,
            Op::StageEnd
        ]
        .map(Op::code)
    );
}

#[test]
fn a_staged_kernel_initrd_and_cmdline_boot_and_default_brings_the_flashed_back() {
    let mut c = client();
    c.stage("web", ImageKind::Kernel, &fake_kernel(5000))
        .unwrap();
    c.stage("web", ImageKind::Initrd, &[1; 3000]).unwrap();
    let spec = BootSpec {
        staged_kernel: true,
        initrd: InitrdChoice::Staged,
        cmdline: Some("console=ttyAMA0 new".into()),
    };
    c.boot("web", &spec).unwrap();
    c.restart("web").unwrap();
    assert_eq!(
        last_boot_line(&c, "web"),
        format!("{BOOT_LINE} kernel=staged initrd=staged cmdline=console=ttyAMA0 new")
    );
    let boot = c.status("web").unwrap().boot.unwrap();
    assert_eq!(boot.source, "staged");
    assert_eq!(boot.kernel_bytes, 5000);
    assert_eq!(boot.initrd_bytes, Some(3000));

    c.boot_default("web").unwrap();
    c.restart("web").unwrap();
    assert_eq!(
        last_boot_line(&c, "web"),
        format!("{BOOT_LINE} kernel=linux initrd=linux-initramfs cmdline=console=ttyAMA0")
    );
    assert_eq!(c.transport().pool_used(), 0);
    assert_eq!(c.status("web").unwrap().boot.unwrap().source, "flashed");
}

#[test]
fn boot_refusals() {
    let mut c = client();
    // A staged image that was never staged.
    let spec = BootSpec {
        staged_kernel: true,
        ..BootSpec::default()
    };
    assert_eq!(refused(c.boot("web", &spec)).0, Status::BadRequest);
    // Kernel + initrd + DT beyond the slice's memory (1 MiB, a 200 kB flashed kernel).
    let mut small = Client::new(FakeHypervisor::new(vec![
        FakeSliceSpec::manager("ctl"),
        FakeSliceSpec::probe("small").memory(1 << 20),
    ]));
    small
        .stage("small", ImageKind::Initrd, &[0; 900_000])
        .unwrap();
    let spec = BootSpec {
        initrd: InitrdChoice::Staged,
        ..BootSpec::default()
    };
    assert_eq!(refused(small.boot("small", &spec)).0, Status::TooLarge);
    // Command lines the client refuses before sending.
    let before = c.transport().log().len();
    let long = BootSpec {
        cmdline: Some("x".repeat(MAX_CMDLINE + 1)),
        ..BootSpec::default()
    };
    assert!(matches!(
        c.boot("web", &long),
        Err(Error::InvalidArgument(_))
    ));
    let nul = BootSpec {
        cmdline: Some("a\0b".into()),
        ..BootSpec::default()
    };
    assert!(matches!(
        c.boot("web", &nul),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(c.transport().log().len(), before);
    // The longest command line is fine.
    let longest = BootSpec {
        cmdline: Some("x".repeat(MAX_CMDLINE)),
        ..BootSpec::default()
    };
    c.boot("web", &longest).unwrap();
}

#[test]
fn staging_refusals() {
    let mut c = client();
    assert!(matches!(
        c.stage("web", ImageKind::Kernel, &[]),
        Err(Error::InvalidArgument(_))
    ));
    // Larger than the slice's memory.
    let (status, message) = refused(c.stage("probe", ImageKind::Initrd, &vec![0; (64 << 20) + 1]));
    assert_eq!(status, Status::TooLarge);
    assert!(message.starts_with("slice \"probe\": "), "{message}");
    // Not an arm64 Image.
    assert_eq!(
        refused(c.stage("web", ImageKind::Kernel, &[0; 4096])).0,
        Status::BadImage
    );
    // The pool is full.
    let mut small = FakeHypervisor::default_node();
    small.pool_bytes = 8192;
    let mut c = Client::new(small).with_pacing(fast());
    c.stage("web", ImageKind::Initrd, &[0; 6000]).unwrap();
    assert_eq!(
        refused(c.stage("db", ImageKind::Initrd, &[0; 6000])).0,
        Status::NoSpace
    );
    // BOOT 0 frees the staged images of web.
    c.boot_default("web").unwrap();
    c.stage("db", ImageKind::Initrd, &[0; 6000]).unwrap();
}

#[test]
fn a_staged_image_that_changed_is_not_started() {
    let mut c = client();
    c.stage("web", ImageKind::Kernel, &fake_kernel(4096))
        .unwrap();
    c.boot(
        "web",
        &BootSpec {
            staged_kernel: true,
            ..BootSpec::default()
        },
    )
    .unwrap();
    c.transport_mut().corrupt_staged("web", ImageKind::Kernel);
    assert_eq!(refused(c.restart("web")).0, Status::BadImage);
}

#[test]
fn console_cursors_follow_the_ring() {
    let mut c = client();
    let start = c.console_end("web").unwrap();
    c.transport_mut().guest_output("web", b"hello\n");
    let chunk = c.console_read("web", start).unwrap();
    assert_eq!((chunk.first, chunk.next), (start, start + 6));
    assert_eq!(chunk.bytes, b"hello\n");
    let again = c.console_read("web", chunk.next).unwrap();
    assert!(again.bytes.is_empty());
    assert_eq!(again.first, chunk.next);
    // Overwritten bytes: the read starts at the oldest kept, r0 > a0.
    c.transport_mut()
        .guest_output("web", &vec![b'x'; CONSOLE_RING + 100]);
    let lost = c.console_read("web", start).unwrap();
    assert!(lost.first > start);
    assert_eq!(lost.bytes.len(), CONSOLE_RING);
    // The end cursor returns nothing.
    let end = c.console_read("web", CONSOLE_END).unwrap();
    assert!(end.bytes.is_empty());
    assert_eq!(end.next, lost.next);
}

#[test]
fn console_history_and_tail_span_reads_smaller_than_the_ring() {
    let mut c = Client::new(FakeHypervisor::default_node().with_capacity(1000)).with_pacing(fast());
    let text: String = (0..2000).map(|i| format!("{i}\n")).collect();
    c.transport_mut().guest_output("db", text.as_bytes());
    let history = c.console_history("db").unwrap();
    assert!(history.ends_with(b"1998\n1999\n"));
    assert_eq!(
        history.len(),
        CONSOLE_RING.min(c.transport().console("db").len())
    );
    assert_eq!(c.console_tail("db", 2).unwrap(), b"1998\n1999\n");
}

#[test]
fn console_input_is_delivered_whole_and_in_order() {
    let mut c = client();
    let input: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    c.console_write("web", &input).unwrap();
    assert_eq!(c.transport().input("web"), input.as_slice());
    assert_eq!(
        refused(c.console_write("nosuch", b"x")).0,
        Status::NoSuchSlice
    );
    c.off("web").unwrap();
    assert_eq!(refused(c.console_write("web", b"x")).0, Status::WrongState);
}

#[test]
fn a_uart_that_takes_nothing_ends_the_write() {
    let mut c = Client::new(FakeHypervisor::new(vec![
        FakeSliceSpec::manager("ctl"),
        FakeSliceSpec::tenant("stuck").uart_fifo(0),
    ]))
    .with_pacing(fast());
    let err = c.console_write("stuck", b"hello").unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert_eq!(c.transport().log().len(), 10, "bounded by console_stalls");
}

#[test]
fn erase_runs_on_and_reports() {
    let mut c = client();
    assert_eq!(refused(c.erase("db")).0, Status::WrongState, "on");
    c.off("db").unwrap();
    c.erase("db").unwrap();
    assert_eq!(c.status("db").unwrap().state, SliceState::Erasing);
    for busy in [
        c.on("db"),
        c.restart("db"),
        c.erase("db"),
        c.boot_default("db"),
    ] {
        assert_eq!(refused(busy).0, Status::Busy);
    }
    let done = c.wait_erased("db", Duration::from_secs(5)).unwrap();
    assert_eq!(done.state, SliceState::Off);
    assert_eq!(done.last_erase.unwrap()["result"], "ok");
    c.off("probe").unwrap();
    assert_eq!(
        refused(c.erase("probe")).0,
        Status::WrongState,
        "no NVMe share"
    );
}

#[test]
fn another_request_running_is_busy() {
    let mut c = client();
    c.transport_mut().busy = true;
    let (status, message) = refused(c.list());
    assert_eq!(status, Status::Busy);
    assert!(message.contains("another request"), "{message}");
    c.transport_mut().busy = false;
    c.list().unwrap();
}

#[test]
fn names_the_header_cannot_hold_are_not_sent() {
    let mut c = client();
    for name in ["", "a\0b", &"x".repeat(33)] {
        assert!(
            matches!(c.status(name), Err(Error::InvalidArgument(_))),
            "{name:?}"
        );
    }
    assert!(c.transport().log().is_empty());
    let full = "y".repeat(32);
    assert_eq!(refused(c.status(&full)).0, Status::NoSuchSlice);
    assert!(matches!(
        c.call(&Request {
            op: 99,
            slice: "web",
            a0: 0,
            a1: 0,
            a2: 0,
            payload: &[]
        }),
        Err(Error::InvalidArgument(_))
    ));
}

/// A transport that answers every request with the same response.
struct Canned(Response, usize);

impl Transport for Canned {
    fn payload_capacity(&self) -> usize {
        self.1
    }

    fn execute(&mut self, _: &Request<'_>) -> Result<Response, Error> {
        Ok(self.0.clone())
    }
}

fn canned(status: u64, r0: u64, r1: u64, payload: &[u8]) -> Client<Canned> {
    Client::new(Canned(
        Response {
            status,
            r0,
            r1,
            payload: payload.to_vec(),
        },
        4096,
    ))
    .with_pacing(fast())
}

fn protocol_error<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    match result {
        Err(Error::Protocol(what)) => what,
        other => panic!("not a protocol error: {other:?}"),
    }
}

#[test]
fn malformed_answers_are_protocol_errors_not_panics() {
    protocol_error(canned(0, 0, 0, b"not json").list());
    protocol_error(canned(0, 0, 0, b"{\"name\":\"web\"}").status("web"));
    protocol_error(canned(0, 0, 0, b"[{\"name\":1}]").list());
    let other = br#"{"name":"db","role":"tenant","state":"on"}"#;
    let what = protocol_error(canned(0, 0, 0, other).status("web"));
    assert!(what.contains("answered for \"db\""), "{what}");
    // Console cursors that do not match the bytes.
    protocol_error(canned(0, 10, 5, b"").console_read("web", 0));
    protocol_error(canned(0, 0, 10, b"abc").console_read("web", 0));
    protocol_error(canned(0, 2, 5, b"abc").console_read("web", 4));
    // More taken than sent.
    protocol_error(canned(0, 5, 0, b"").console_write_some("web", b"ab"));
    // STAGE_END that does not describe what was sent.
    let end = br#"{"kind":"kernel","bytes":3,"sha256":"00"}"#;
    protocol_error(canned(0, 0, 0, end).stage("web", ImageKind::Kernel, b"abcd"));
    let end = br#"{"kind":"initrd","bytes":4,"sha256":"00"}"#;
    protocol_error(canned(0, 0, 0, end).stage("web", ImageKind::Kernel, b"abcd"));
    let end = format!(
        r#"{{"kind":"kernel","bytes":4,"sha256":"{}"}}"#,
        "g".repeat(64)
    );
    protocol_error(canned(0, 0, 0, end.as_bytes()).stage("web", ImageKind::Kernel, b"abcd"));
    // A payload beyond the window.
    let mut c = canned(0, 0, 0, &[b'['; 5000]);
    protocol_error(c.list());
}

#[test]
fn refusals_carry_one_clean_line_and_unknown_statuses() {
    let mut c = canned(5, 0, 0, b"slice \"web\": already on\nmore\x07");
    assert_eq!(
        refused(c.on("web")),
        (Status::WrongState, "slice \"web\": already on".into())
    );
    let mut c = canned(42, 0, 0, b"");
    let err = c.on("web").unwrap_err();
    assert_eq!(err.status(), Some(Status::Other(42)));
    assert_eq!(err.to_string(), "ON: refused (STATUS_42)");
}

#[test]
fn node_describes_the_hypervisor() {
    let mut client = Client::new(FakeHypervisor::default_node());
    let node = client.node().unwrap();
    assert_eq!(node.version, "fake");
    assert!(node.heap_used_bytes <= node.heap_bytes);
    assert!(node.staging.bytes > 0);
}

#[test]
fn a_firmware_slice_boots_from_the_network_first_until_told_otherwise() {
    let mut c = Client::new(FakeHypervisor::new(vec![
        FakeSliceSpec::manager("ctl"),
        FakeSliceSpec::firmware("metal"),
        FakeSliceSpec::tenant("web"),
    ]))
    .with_pacing(fast());
    let metal = c.status("metal").unwrap();
    assert!(metal.network_boot);
    assert_eq!(metal.boot.unwrap().source, "flashed");
    c.boot_network("metal").unwrap();
    assert_eq!(c.status("metal").unwrap().boot.unwrap().source, "network");
    c.restart("metal").unwrap();
    assert!(last_boot_line(&c, "metal").contains("kernel=u-boot network-first"));
    // Every start until the default comes back.
    c.restart("metal").unwrap();
    assert!(last_boot_line(&c, "metal").contains("network-first"));
    c.boot_default("metal").unwrap();
    c.restart("metal").unwrap();
    assert!(!last_boot_line(&c, "metal").contains("network-first"));
    // A slice that does not boot firmware has no network boot.
    assert!(!c.status("web").unwrap().network_boot);
    let (status, message) = refused(c.boot_network("web"));
    assert_eq!(status, Status::BadRequest);
    assert!(message.contains("firmware"), "{message}");
    assert_eq!(c.status("web").unwrap().boot.unwrap().source, "flashed");
}
