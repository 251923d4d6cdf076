//! The Redfish service of the manager slice (issue 15, docs/redfish.md): the host drives the
//! node's slices through it, over the loopback port QEMU forwards to the manager's NIC, the
//! way fleet tools (Ironic, MAAS, Metal3) would, and checks what the node console shows.
//!
//! - Every slice but the manager is a system with its cores, memory, disk and NICs; the
//!   service asks for credentials (Basic or a session) for everything but the root, and says
//!   nothing more to a wrong password than to none.
//! - `ComputerSystem.Reset` powers a probe off, on, restarts and power-cycles it, gracefully
//!   restarts a Linux slice (its power key, then a start); `Drive.SecureErase` wipes a share.
//! - Bad input (wrong ETags, unknown properties, malformed and oversized bodies, a client
//!   that never finishes its headers) gets a Redfish error, and the service and every slice
//!   it did not target go on.
//! - Fleet tools: DMTF's validators and Ironic's client library (`sushy`) against the service.
//! - An Ironic-style deploy: a deploy ramdisk from the virtual CD writes a whole-disk image
//!   onto a firmware slice's share, and after the eject its U-Boot boots the deployed OS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use microvisor_tests::host_get::HostSession;
use microvisor_tests::redfish::{Auth, Client, credentials, validate};
use microvisor_tests::{
    Expect, Scenario, firmware_slice, hv, linux_slice, plan, probe_slice, slice, with_device,
    with_nvme,
};

/// The admin password the plan gives (by its SHA-256) in [`manager`].
const PASSWORD: &str = "hand-over-2026";

/// The manager with the service's plain HTTP on (port 80) next to HTTPS, on the default
/// node's host NIC 02:00.0, the admin password given by its SHA-256, the HTTPS certificate
/// and key given by the plan (`redfish-certificate`, `redfish-key`: [`plan_certificate`]).
fn manager() -> String {
    use sha2::{Digest, Sha256};
    let digest: String = Sha256::digest(PASSWORD.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cmdline = format!("microvisor.redfish=http microvisor.redfish-password-sha256={digest}");
    let (cert, key, _) = plan_certificate();
    let text = format!(
        "{}\nrole = \"manager\"\nstaging = \"64MiB\"\nredfish-certificate = \"{}\"\n\
         redfish-key = \"{}\"\n\n",
        linux_slice("manager", "1", "256MiB", &cmdline).trim_end(),
        cert.display(),
        key.display()
    );
    with_device(&text, "pci = \"02:00.0\"")
}

/// A certificate and key for the service, written once per test run under
/// `target/test-images/redfish-tls/`: their paths, and the certificate's SHA-256 fingerprint
/// as the service prints it (`AB:CD:...`).
fn plan_certificate() -> (std::path::PathBuf, std::path::PathBuf, String) {
    static MADE: std::sync::OnceLock<(std::path::PathBuf, std::path::PathBuf, String)> =
        std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let ws = &microvisor_tests::images::built().ws;
        let dir = ws.target_dir.join("test-images").join("redfish-tls");
        std::fs::create_dir_all(&dir).unwrap();
        let made =
            rcgen::generate_simple_self_signed(vec!["node-7.rack-3.example".into()]).unwrap();
        let (cert, key) = (dir.join("node.crt"), dir.join("node.key"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
        (cert, key, fingerprint_of(made.cert.der()))
    })
    .clone()
}

/// A certificate's SHA-256 as the service prints it: `AB:CD:...`.
fn fingerprint_of(der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let bytes: Vec<String> = Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    bytes.join(":")
}

/// The DER of the certificate the server on `port` presents (Python's `ssl`, no checks).
fn served_certificate(port: u16) -> Result<Vec<u8>, String> {
    let script = format!(
        "import ssl, sys\npem = ssl.get_server_certificate(('127.0.0.1', {port}), timeout=30)\n\
         sys.stdout.buffer.write(ssl.PEM_cert_to_DER_cert(pem))\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "fetching the served certificate: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

const WAIT: Duration = Duration::from_secs(120);

/// `GET path` until `done` holds for its JSON, at most `timeout`.
fn poll(
    client: &Client,
    path: &str,
    timeout: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let body = client.get(path)?.expect(200, path)?.json();
        if done(&body) {
            return Ok(body);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{path} did not get there within {timeout:?}: {body}"
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn check(condition: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(what()) }
}

/// What Ironic-like automation does, step by step; every step checks its answer and what the
/// console shows.
fn drive_the_node(session: &HostSession) -> Result<String, String> {
    check(session.trigger.contains("password=(the plan's)"), || {
        format!(
            "the plan's password is not what the service says: {}",
            session.trigger
        )
    })?;
    // HTTPS presents the plan's certificate.
    let (_, _, fingerprint) = plan_certificate();
    check(
        session.trigger.contains(&format!("sha256={fingerprint}")),
        || {
            format!(
                "the plan's certificate is not the one announced: {}",
                session.trigger
            )
        },
    )?;
    let served = {
        use sha2::{Digest, Sha256};
        let der = served_certificate(session.https_port)?;
        let hex: Vec<String> = Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        hex.join(":")
    };
    check(served == fingerprint, || {
        format!("HTTPS presents {served}, not the plan's {fingerprint}")
    })?;
    let (user, password) = ("admin".to_string(), PASSWORD.to_string());
    let open = Client::new(session.port, Auth::None);
    let admin = Client::new(session.port, Auth::Basic(user.clone(), password.clone()));
    let console = &session.console;
    let reset = |system: &str, kind: &str| {
        admin
            .post(
                &format!("/redfish/v1/Systems/{system}/Actions/ComputerSystem.Reset"),
                &json!({ "ResetType": kind }),
            )?
            .expect(204, &format!("Reset {kind} of {system}"))
    };

    // Who may ask what.
    open.get("/redfish/v1/")?.expect(200, "the service root")?;
    let none = open
        .get("/redfish/v1/Systems")?
        .expect(401, "Systems without credentials")?;
    let wrong = Client::new(session.port, Auth::Basic(user.clone(), "not-it".into()))
        .get("/redfish/v1/Systems")?
        .expect(401, "Systems with a wrong password")?;
    check(none.body == wrong.body, || {
        "a wrong password is answered differently from none".into()
    })?;
    check(none.header("www-authenticate").is_some(), || {
        "401 without WWW-Authenticate".into()
    })?;

    // What the node has: every slice but the manager, as the plan gives it.
    let systems = admin
        .get("/redfish/v1/Systems")?
        .expect(200, "Systems")?
        .json();
    let mut members: Vec<&str> = systems["Members"]
        .as_array()
        .ok_or("Systems has no Members")?
        .iter()
        .filter_map(|m| m["@odata.id"].as_str())
        .collect();
    members.sort_unstable();
    check(
        members
            == [
                "/redfish/v1/Systems/beat",
                "/redfish/v1/Systems/lin",
                "/redfish/v1/Systems/p1",
            ],
        || format!("Systems lists {members:?}"),
    )?;
    admin
        .get("/redfish/v1/Systems/manager")?
        .expect(404, "the manager as a system")?;
    let p1 = admin
        .get("/redfish/v1/Systems/p1")?
        .expect(200, "p1")?
        .json();
    check(
        p1["ProcessorSummary"]["CoreCount"] == 2
            && p1["MemorySummary"]["TotalSystemMemoryGiB"] == 0.0625
            && p1["PowerState"] == "On",
        || format!("p1 shows {p1}"),
    )?;
    let disk = admin
        .get("/redfish/v1/Systems/p1/SimpleStorage/NVMe")?
        .expect(200, "p1's disk")?
        .json();
    check(disk["Devices"][0]["CapacityBytes"] == 16u64 << 20, || {
        format!("p1's disk shows {disk}")
    })?;
    let cpu = admin
        .get("/redfish/v1/Systems/lin/Processors/CPU")?
        .expect(200, "lin's processor")?
        .json();
    check(
        cpu["InstructionSet"] == "ARM-A64" && cpu["TotalThreads"] == 1,
        || format!("lin's processor shows {cpu}"),
    )?;
    let manager = admin
        .get("/redfish/v1/Managers/node")?
        .expect(200, "the manager")?
        .json();
    check(
        manager["FirmwareVersion"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        || format!("the manager shows {manager}"),
    )?;

    // A session instead of Basic, then logged out.
    let login = open
        .post(
            "/redfish/v1/SessionService/Sessions",
            &json!({"UserName": user, "Password": password}),
        )?
        .expect(201, "logging in")?;
    let token = login
        .header("x-auth-token")
        .ok_or("no X-Auth-Token")?
        .to_string();
    let location = login.header("location").ok_or("no Location")?.to_string();
    let with_token = Client::new(session.port, Auth::Token(token));
    with_token
        .get("/redfish/v1/Systems/p1")?
        .expect(200, "with the token")?;
    with_token.delete(&location)?.expect(204, "logging out")?;
    with_token
        .get("/redfish/v1/Systems/p1")?
        .expect(401, "with the token after logging out")?;

    // Power: a probe off, its share erased, on, restarted, power-cycled.
    let beats_before = console.count(0, "[beat] HEARTBEAT");
    let mark = console.len();
    reset("p1", "ForceOff")?;
    console.wait_for(
        mark,
        "[hv] slice p1 stopped: forced off by the manager",
        WAIT,
    )?;
    poll(&admin, "/redfish/v1/Systems/p1", WAIT, |s| {
        s["PowerState"] == "Off"
    })?;
    admin
        .post(
            "/redfish/v1/Systems/p1/Storage/NVMe/Drives/Share/Actions/Drive.SecureErase",
            &json!({}),
        )?
        .expect(204, "SecureErase of p1's drive")?;
    poll(
        &admin,
        "/redfish/v1/Systems/p1/Storage/NVMe/Drives/Share",
        WAIT,
        |d| d["Status"]["State"] == "Enabled",
    )?;
    let mark = console.len();
    reset("p1", "On")?;
    console.wait_for(mark, "[p1] PROBE PASS", WAIT)?;
    let mark = console.len();
    reset("p1", "ForceRestart")?;
    console.wait_for(
        mark,
        "[hv] slice p1 restarted: forced restart by the manager",
        WAIT,
    )?;
    console.wait_for(mark, "[p1] PROBE PASS", WAIT)?;
    let mark = console.len();
    reset("p1", "PowerCycle")?;
    console.wait_for(
        mark,
        "[hv] slice p1 stopped: forced off by the manager",
        WAIT,
    )?;
    console.wait_for(mark, "[p1] PROBE PASS", WAIT)?;
    // A share is erased only while its slice is off.
    let busy = admin.post(
        "/redfish/v1/Systems/p1/Storage/NVMe/Drives/Share/Actions/Drive.SecureErase",
        &json!({}),
    )?;
    check(busy.status == 409, || {
        format!("SecureErase of a running slice answered {}", busy.status)
    })?;

    // A Linux slice restarted gracefully: its power key, it powers off, the service starts it.
    let mark = console.len();
    reset("lin", "GracefulRestart")?;
    console.wait_for(
        mark,
        "[hv] slice lin stopped: powered off (PSCI SYSTEM_OFF)",
        Duration::from_secs(180),
    )?;
    console.wait_for(mark, "[lin] SLICE-REPORT", Duration::from_secs(180))?;

    // Bad input: each refused with its Redfish error, nothing changes.
    let etag = admin
        .get("/redfish/v1/Systems/lin")?
        .header("etag")
        .ok_or("lin has no ETag")?
        .to_string();
    let boot = json!({"Boot": {"BootSourceOverrideTarget": "Hdd",
        "BootSourceOverrideEnabled": "Once"}});
    let stale = admin.patch(
        "/redfish/v1/Systems/lin",
        &[("If-Match", "W/\"stale\"")],
        &boot,
    )?;
    check(stale.status == 412, || {
        format!("a stale ETag: {}", stale.status)
    })?;
    admin
        .patch("/redfish/v1/Systems/lin", &[("If-Match", &etag)], &boot)?
        .expect(200, "PATCH with the current ETag")?;
    let unknown = admin.patch(
        "/redfish/v1/Systems/lin",
        &[],
        &json!({"Boot": {"BootSourceOverrideTarget": "Hdd", "Turbo": true}}),
    )?;
    check(
        unknown.status == 400 && unknown.message_id().ends_with(".PropertyUnknown"),
        || {
            format!(
                "an unknown property: {} {}",
                unknown.status,
                unknown.message_id()
            )
        },
    )?;
    let malformed = admin.request(
        "PATCH",
        "/redfish/v1/Systems/lin",
        &[("Content-Type", "application/json")],
        Some(b"{\"Boot\": "),
    )?;
    check(
        malformed.status == 400 && malformed.message_id().ends_with(".MalformedJSON"),
        || {
            format!(
                "malformed JSON: {} {}",
                malformed.status,
                malformed.message_id()
            )
        },
    )?;
    let big = vec![b' '; 2 << 20];
    let oversized = admin.request("PATCH", "/redfish/v1/Systems/lin", &[], Some(&big));
    check(oversized.as_ref().map_or(true, |a| a.status == 413), || {
        format!("a 2 MiB body: {:?}", oversized.as_ref().map(|a| a.status))
    })?;
    // A client that never finishes its headers holds one connection, for a bounded time,
    // and nobody else waits for it.
    let mut slow =
        TcpStream::connect(("127.0.0.1", session.port)).map_err(|e| format!("slow client: {e}"))?;
    slow.write_all(b"GET /redfish/v1/ HTTP/1.1\r\nHost: x\r\n")
        .map_err(|e| format!("slow client: {e}"))?;
    let started = Instant::now();
    admin
        .get("/redfish/v1/Systems/p1")?
        .expect(200, "while a client dawdles")?;
    slow.set_read_timeout(Some(Duration::from_secs(40)))
        .map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let held = started.elapsed();
    check(held < Duration::from_secs(35), || {
        format!("a client with unfinished headers was held {held:?}")
    })?;

    // Guessing passwords: after 10 wrong ones the host (all of it is 10.0.2.2 behind QEMU's
    // user network) is refused for a minute, the right password included; last, since
    // nothing from the host gets through after it.
    let guesser = Client::new(session.port, Auth::Basic(user.clone(), "guess".into()));
    let mark = console.len();
    for n in 0..10 {
        guesser
            .get("/redfish/v1/Systems")?
            .expect(401, &format!("guess {n}"))?;
    }
    console.wait_for(
        mark,
        "[manager] redfish: 10 wrong passwords from 10.0.2.2: refused for 60 s",
        WAIT,
    )?;
    let locked = admin.get("/redfish/v1/Systems")?;
    check(locked.status == 401 && locked.body == none.body, || {
        format!("the right password while locked out: {}", locked.status)
    })?;

    // The bystander never noticed.
    let beats_after = console.count(0, "[beat] HEARTBEAT");
    check(beats_after > beats_before + 3, || {
        format!("beat's heartbeats went from {beats_before} to {beats_after}")
    })?;
    Ok(format!(
        "drove p1 and lin through Redfish; beat kept beating ({beats_before} -> {beats_after})"
    ))
}

#[test]
fn redfish_drives_every_slice_of_the_node() {
    let node = plan(&[
        manager(),
        linux_slice("lin", "1", "256MiB", ""),
        with_nvme(
            &probe_slice("p1", "2", "64MiB", "cmdline = \"heartbeat=1000\""),
            1,
            "16MiB",
        ),
        probe_slice("beat", "1", "64MiB", "cmdline = \"heartbeat=500\""),
    ]);
    Scenario::new("redfish_drives_every_slice")
        .node("default")
        .plan(&node)
        .timeout(Duration::from_secs(600))
        .healthy(&["manager", "beat"])
        .expect(Expect::line(slice(
            "manager",
            "REDFISH ready https=0.0.0.0:443 ",
        )))
        .expect(Expect::Never(slice("manager", "REDFISH failed")))
        .host_script(
            "manager",
            slice("manager", "REDFISH ready "),
            1,
            drive_the_node,
        )
        .run()
        .assert_passed("redfish_drives_every_slice");
}

/// What a Cd boot must show: the ISO's entry names this word on its command line.
const CD_MARK: &str = "booted-from-virtual-cd";

/// Writes an ISO 9660 image (volume `label`) to `path` holding Debian's kernel, the built-in
/// initramfs and a GRUB configuration whose one entry boots them with the Linux guest's
/// default command line and `extra`.
fn write_boot_iso(path: &std::path::Path, label: &str, extra: &str) {
    let guest = xtask::linux::guest(&microvisor_tests::images::built().ws, true).unwrap();
    let grub = format!(
        "set default=0\nset timeout=1\n\
         menuentry \"{label}\" {{\n\
         \x20   linux /boot/vmlinuz {} {extra}\n\
         \x20   initrd /boot/initrd.img\n}}\n",
        xtask::linux::DEFAULT_CMDLINE
    );
    let mut iso = xtask::iso::IsoBuilder::new(label);
    iso.file("boot/vmlinuz", guest.kernel.clone())
        .unwrap()
        .file("boot/initrd.img", guest.initramfs.clone())
        .unwrap()
        .file("boot/grub/grub.cfg", grub.into_bytes())
        .unwrap();
    iso.write(path).unwrap();
}

/// An ISO 9660 image as a provisioning system would serve: Debian's kernel and the built-in
/// initramfs, and a GRUB configuration whose entry boots them with [`CD_MARK`] on the
/// command line; written with the harness's ISO writer into `dir/boot.iso`, with a file that
/// is no ISO next to it.
fn media_dir() -> std::path::PathBuf {
    let ws = &microvisor_tests::images::built().ws;
    let dir = ws.target_dir.join("test-images").join("redfish-media");
    std::fs::create_dir_all(&dir).unwrap();
    write_boot_iso(&dir.join("boot.iso"), "MICROVISOR_CD", CD_MARK);
    std::fs::write(dir.join("garbage.iso"), vec![0x5a; 1 << 20]).unwrap();
    dir
}

/// Fleet tools against the service: DMTF's validators over the whole tree, bad virtual media,
/// then Ironic's own client library driving `web` through inspection, a one-time boot from a
/// virtual CD (its kernel on the console) and back to its own boot.
fn fleet_tools(session: &HostSession) -> Result<String, String> {
    use xtask::redfish_tools::{self, Scenario as Sushy, Service, Step};
    let ws = &microvisor_tests::images::built().ws;
    let (user, password) = credentials(&session.trigger)
        .ok_or_else(|| format!("no credentials in {:?}", session.trigger))?;
    let console = &session.console;
    let tools = redfish_tools::ensure(ws).map_err(|e| format!("{e:#}"))?;
    let service = Service {
        url: format!("https://127.0.0.1:{}", session.https_port),
        user: user.clone(),
        password: password.clone(),
    };
    let logs = ws.target_dir.join("test-logs").join("redfish-fleet");

    // The validators: no failure but what slices cannot do.
    let validated = validate("redfish-fleet", session.https_port, &user, &password)?;

    // Virtual media that cannot be used: refused with the reason, the slot stays empty.
    let admin = Client::new(session.port, Auth::Basic(user, password));
    let insert = "/redfish/v1/Systems/web/VirtualMedia/CD/Actions/VirtualMedia.InsertMedia";
    for (url, why) in [
        ("http://10.0.2.100/missing.iso", "404"),
        ("http://10.0.2.100/redirect-loop", "redirect"),
        ("http://10.0.2.100/huge", "more than"),
        ("http://10.0.2.100/garbage.iso", "ISO"),
        ("http://192.0.2.1/boot.iso", "allow"),
    ] {
        let answer = admin.post(insert, &json!({ "Image": url }))?;
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        check(
            answer.status == 400 && message.to_lowercase().contains(&why.to_lowercase()),
            || format!("InsertMedia {url}: {} {message:?}", answer.status),
        )?;
    }
    let cd = admin
        .get("/redfish/v1/Systems/web/VirtualMedia/CD")?
        .expect(200, "web's CD")?
        .json();
    check(cd["Inserted"] == false && cd["Image"].is_null(), || {
        format!("after refused media the CD shows {cd}")
    })?;

    // Ironic's conductor, through sushy: inspect, boot the CD once, eject, back to its own.
    let media = "http://10.0.2.100/boot.iso";
    let first = Sushy::new("web").media(media).steps(&[
        Step::AuthSession,
        Step::AuthBasic,
        Step::Inventory,
        Step::PowerOff,
        Step::BootCd,
        Step::InsertMedia,
        Step::PowerOn,
    ]);
    let mark = console.len();
    let run = redfish_tools::sushy_scenario(&tools, &service, &first, &logs.join("sushy-1"))
        .map_err(|e| format!("{e:#}"))?;
    check(run.passed, || format!("sushy: {}", run.render()))?;
    let inventory = run.step(Step::Inventory).ok_or("no inventory step")?;
    check(
        inventory.field("arch") == Some("aarch64")
            && inventory.field("cpus") == Some("2")
            && inventory.field("memory_gib") == Some("1"),
        || format!("inventory: {}", inventory.line()),
    )?;
    let (_, report) = console.wait_for(mark, "[web] SLICE-REPORT", Duration::from_secs(240))?;
    check(report.contains(CD_MARK), || {
        format!("web did not boot the CD's kernel: {report}")
    })?;
    let second = Sushy::new("web")
        .media(media)
        .steps(&[Step::EjectMedia, Step::PowerCycle]);
    let mark = console.len();
    let run = redfish_tools::sushy_scenario(&tools, &service, &second, &logs.join("sushy-2"))
        .map_err(|e| format!("{e:#}"))?;
    check(run.passed, || format!("sushy: {}", run.render()))?;
    let (_, report) = console.wait_for(mark, "[web] SLICE-REPORT", Duration::from_secs(240))?;
    check(!report.contains(CD_MARK), || {
        format!("after the eject web still boots the CD: {report}")
    })?;
    Ok(format!("{validated}; sushy drove web"))
}

#[test]
fn redfish_serves_ironic_and_the_validators() {
    use xtask::node::{Network, Nic};
    // The tools are installed before the node boots (the first time from PyPI).
    let ws = &microvisor_tests::images::built().ws;
    xtask::redfish_tools::ensure(ws).expect("the Redfish tools");
    let manager = format!(
        "{}\nrole = \"manager\"\nstaging = \"96MiB\"\n\n",
        linux_slice(
            "manager",
            "1",
            "256MiB",
            "microvisor.redfish=http microvisor.redfish-media=10.0.2.100"
        )
        .trim_end()
    );
    let node = plan(&[
        with_device(&manager, "class = \"net\""),
        with_nvme(&linux_slice("web", "2", "1GiB", ""), 1, "4GiB"),
        probe_slice("beat", "1", "64MiB", "cmdline = \"heartbeat=500\""),
    ]);
    Scenario::new("redfish_fleet_tools")
        .inline_node(5, 5 << 29)
        .disk(5 << 30)
        .smmuv3()
        .nic(Nic {
            network: Network::Host,
            tftp: None,
            http: Some(media_dir()),
        })
        .plan(&node)
        .timeout(Duration::from_secs(900))
        .healthy(&["manager", "beat"])
        .expect(Expect::Never(slice("manager", "REDFISH failed")))
        .host_script(
            "manager",
            slice("manager", "REDFISH ready "),
            1,
            fleet_tools,
        )
        .run()
        .assert_passed("redfish_fleet_tools");
}

/// The deployed system's command line names this word: the OS U-Boot boots at the end is the
/// one written through Redfish.
const DEPLOYED_MARK: &str = "deployed-through-redfish";

/// What a deployment serves at http://10.0.2.100/ (both host NICs): `deploy.iso`, the deploy
/// ramdisk (Debian's kernel and the built-in initramfs, a GRUB entry whose command line asks
/// `/init` for `install:http://10.0.2.100/disk.img`), and `disk.img`, a whole-disk image of
/// Debian installed for UEFI (GPT, EFI system partition with GRUB, ext4 root), just big enough
/// for its partitions ([`xtask::disk_image::image_size`]), the same builder the firmware
/// scenarios write shares with.
struct DeployMedia {
    dir: std::path::PathBuf,
    /// `disk.img`'s size and md5.
    bytes: u64,
    md5: String,
}

fn deploy_media() -> DeployMedia {
    use xtask::disk_image::{Installation, Loader};
    let ws = &microvisor_tests::images::built().ws;
    let dir = ws.target_dir.join("test-images").join("redfish-deploy");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let guest = xtask::linux::guest(ws, true).unwrap();
    let install = Installation {
        extra: DEPLOYED_MARK,
        ..Installation::new(Loader::Efi)
    };
    let image = dir.join("disk.img");
    let bytes = xtask::disk_image::image_size(&guest, install).unwrap();
    xtask::disk_image::write_installed_image(
        &guest,
        install,
        &image,
        bytes,
        &ws.target_dir
            .join("test-images")
            .join("redfish-deploy-work"),
    )
    .unwrap();
    write_boot_iso(
        &dir.join("deploy.iso"),
        "DEPLOY",
        "microvisor.disk=install:http://10.0.2.100/disk.img",
    );
    DeployMedia {
        md5: md5_of(&std::fs::read(&image).unwrap()),
        dir,
        bytes,
    }
}

/// md5 of `bytes` in hex, by the host's `md5sum` (what the guest's busybox prints).
fn md5_of(bytes: &[u8]) -> String {
    use std::process::{Command, Stdio};
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("md5sum");
    let mut stdin = child.stdin.take().expect("piped");
    let bytes = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let out = child.wait_with_output().expect("md5sum");
    writer.join().expect("writer").expect("md5sum's input");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Where `metal`'s share lies in the node's disk file.
#[derive(Clone, Debug)]
struct Share {
    disk: std::path::PathBuf,
    offset: u64,
    bytes: u64,
}

impl Share {
    /// Bytes `[at, at + len)` of the share, as the node's disk file holds them.
    fn read(&self, at: u64, len: u64) -> Result<Vec<u8>, String> {
        use std::io::{Seek, SeekFrom};
        let mut file = std::fs::File::open(&self.disk).map_err(|e| e.to_string())?;
        file.seek(SeekFrom::Start(self.offset + at))
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0; len as usize];
        file.read_exact(&mut buf).map_err(|e| e.to_string())?;
        Ok(buf)
    }

    /// Whether the share holds the image (`bytes` long, `md5`) from byte 0 and zeros after.
    fn holds(&self, bytes: u64, md5: &str) -> Result<bool, String> {
        if md5_of(&self.read(0, bytes)?) != md5 {
            return Ok(false);
        }
        let mut at = bytes;
        while at < self.bytes {
            let len = (self.bytes - at).min(16 << 20);
            if self.read(at, len)?.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += len;
        }
        Ok(true)
    }
}

/// Ironic's deploy of a whole-disk image onto `metal`, a slice that boots firmware, through
/// the Redfish service: the deploy ramdisk from a virtual CD writes the image, the CD is
/// ejected, and U-Boot boots the installed OS from the disk.
fn deploy_like_ironic(
    session: &HostSession,
    media: &DeployMedia,
    share: &Share,
) -> Result<String, String> {
    let started = Instant::now();
    let (user, password) = credentials(&session.trigger)
        .ok_or_else(|| format!("no credentials in {:?}", session.trigger))?;
    let admin = Client::new(session.port, Auth::Basic(user, password));
    let console = &session.console;
    let first = console.len();
    let system = "/redfish/v1/Systems/metal";
    let reset = |kind: &str| {
        admin
            .post(
                &format!("{system}/Actions/ComputerSystem.Reset"),
                &json!({ "ResetType": kind }),
            )?
            .expect(204, &format!("Reset {kind} of metal"))
    };
    let power_off = || -> Result<(), String> {
        reset("ForceOff")?;
        poll(&admin, system, WAIT, |s| s["PowerState"] == "Off")?;
        Ok(())
    };
    let boot_once = |target: &str| {
        admin
            .patch(
                system,
                &[],
                &json!({"Boot": {"BootSourceOverrideTarget": target,
                    "BootSourceOverrideEnabled": "Once"}}),
            )?
            .expect(200, &format!("boot {target} once"))
    };
    // The deploy ramdisk's one DISK install line after console line `mark`.
    let install_line = |mark: usize| -> Result<String, String> {
        let (_, line) =
            console.wait_for(mark, "[metal] DISK install ", Duration::from_secs(240))?;
        Ok(line)
    };
    let mut phases = Vec::new();
    let mut phase = |what: &str, since: &mut Instant| {
        phases.push(format!("{what} {:.1}s", since.elapsed().as_secs_f64()));
        *since = Instant::now();
    };
    let mut since = Instant::now();

    // Inspection, as Ironic does it: the system, its disk; off before anything else.
    let metal = admin.get(system)?.expect(200, "metal")?.json();
    check(metal["ProcessorSummary"]["CoreCount"] == 1, || {
        format!("metal shows {metal}")
    })?;
    let disk = admin
        .get(&format!("{system}/SimpleStorage/NVMe"))?
        .expect(200, "metal's disk")?
        .json();
    check(disk["Devices"][0]["CapacityBytes"] == share.bytes, || {
        format!("metal's disk shows {disk}")
    })?;
    if metal["PowerState"] == "On" {
        power_off()?;
    }
    // Blank as `cargo xtask run` sees it: no partition table.
    check(share.read(0, 34 * 512)?.iter().all(|&b| b == 0), || {
        "metal's share is not blank before the deploy".into()
    })?;

    // The deploy: the ramdisk from the virtual CD, once.
    admin
        .post(
            &format!("{system}/VirtualMedia/CD/Actions/VirtualMedia.InsertMedia"),
            &json!({"Image": "http://10.0.2.100/deploy.iso"}),
        )?
        .expect(204, "InsertMedia deploy.iso")?;
    boot_once("Cd")?;
    phase("inserted", &mut since);
    let mark = console.len();
    reset("On")?;
    let line = install_line(mark)?;
    let want = format!(
        "[metal] DISK install ok bytes={} md5={}",
        media.bytes, media.md5
    );
    check(line == want, || {
        format!("the ramdisk said {line:?}, not {want:?}")
    })?;
    phase("installed", &mut since);
    power_off()?;
    check(share.holds(media.bytes, &media.md5)?, || {
        "the node's disk file does not hold the image on metal's share".into()
    })?;

    // Bad input: the image is gone from the server. The ramdisk says so and the disk keeps
    // what it holds.
    let gone = media.dir.join("disk.img.gone");
    std::fs::rename(media.dir.join("disk.img"), &gone).map_err(|e| e.to_string())?;
    boot_once("Cd")?;
    let mark = console.len();
    reset("On")?;
    let line = install_line(mark);
    std::fs::rename(&gone, media.dir.join("disk.img")).map_err(|e| e.to_string())?;
    let line = line?;
    check(
        line.starts_with("[metal] DISK install FAIL download ") && line.contains("404"),
        || format!("without the image the ramdisk said {line:?}"),
    )?;
    power_off()?;
    check(share.holds(media.bytes, &media.md5)?, || {
        "a failed install changed metal's share".into()
    })?;
    phase("refused", &mut since);

    // The CD out, the disk as boot device: U-Boot boots what was installed.
    admin
        .post(
            &format!("{system}/VirtualMedia/CD/Actions/VirtualMedia.EjectMedia"),
            &json!({}),
        )?
        .expect(204, "EjectMedia")?;
    let cd = admin
        .get(&format!("{system}/VirtualMedia/CD"))?
        .expect(200, "metal's CD")?
        .json();
    check(cd["Inserted"] == false, || {
        format!("after the eject the CD shows {cd}")
    })?;
    boot_once("Hdd")?;
    let mark = console.len();
    reset("On")?;
    console.wait_for(mark, "[metal] U-Boot 20", Duration::from_secs(60))?;
    let (_, report) = console.wait_for(mark, "[metal] SLICE-REPORT", Duration::from_secs(180))?;
    check(
        report.contains(r#""root":"nvme0n1p2""#) && report.contains(DEPLOYED_MARK),
        || format!("metal did not boot the deployed OS from its disk: {report}"),
    )?;
    phase("booted", &mut since);
    // The neighbour beat all along (every 500 ms): at least one beat a second.
    let beats = console.count(first, "[beat] HEARTBEAT");
    let seconds = started.elapsed().as_secs();
    check(beats as u64 >= seconds, || {
        format!("beat beat {beats} times in {seconds} s")
    })?;
    Ok(format!(
        "deployed {} bytes onto metal in {:.1} s ({}); beat kept beating ({beats})",
        media.bytes,
        started.elapsed().as_secs_f64(),
        phases.join(", ")
    ))
}

#[test]
fn redfish_deploys_an_os_onto_a_firmware_slice_like_ironic() {
    use xtask::node::{Network, Nic};
    let media = deploy_media();
    let manager = format!(
        "{}\nrole = \"manager\"\nstaging = \"64MiB\"\n\n",
        linux_slice(
            "manager",
            "1",
            "256MiB",
            "microvisor.redfish=http microvisor.redfish-media=10.0.2.100"
        )
        .trim_end()
    );
    let metal = format!(
        "{}[slice.firmware.env]\nbootdelay = \"0\"\n\n",
        with_device(
            &with_nvme(&firmware_slice("metal", "1", "384MiB"), 1, "512MiB"),
            "class = \"net\""
        )
    );
    let node = plan(&[
        with_device(&manager, "class = \"net\""),
        metal,
        probe_slice("beat", "1", "64MiB", "cmdline = \"heartbeat=500\""),
    ]);
    let served = || Nic {
        network: Network::Host,
        tftp: None,
        http: Some(media.dir.clone()),
    };
    let mut s = Scenario::new("redfish_deploy")
        .inline_node(3, 3 << 29)
        .disk(1 << 30)
        .smmuv3()
        .nic(served())
        .nic(served())
        .plan(&node);
    s.fresh_disk();
    let at = s.disk_shares()[1].expect("metal has a share");
    let share = Share {
        disk: s.disk_file(0),
        offset: at.first_block << 9,
        bytes: at.blocks << 9,
    };
    let started = Instant::now();
    s.timeout(Duration::from_secs(420))
        .healthy(&["manager", "beat"])
        .expect(Expect::Report {
            slice: "metal".into(),
            cpus: 1,
            memory_bytes: 384 << 20,
        })
        .expect(Expect::Never(slice("manager", "REDFISH failed")))
        .expect(Expect::Never(hv(
            "^slice (manager|beat) (stopped|restarted)",
        )))
        .host_script(
            "manager",
            slice("manager", "REDFISH ready "),
            1,
            move |session| deploy_like_ironic(session, &media, &share),
        )
        .run()
        .assert_passed("redfish_deploy");
    eprintln!(
        "redfish_deploy: whole scenario {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// On the command line of the kernel a firmware slice boots from the network.
const NET_MARK: &str = "booted-from-the-network";

/// Ironic's PXE boot of a firmware slice through the service: `metal` comes up from the OS
/// installed on its disk; `Pxe` once and a restart make its firmware try the network first
/// (DHCP, the TFTP server's boot script, PXELINUX: the kernel and initramfs over TFTP); the
/// restart after that boots its disk again. Systems without a network boot do not offer `Pxe`.
fn pxe_once(session: &HostSession) -> Result<String, String> {
    let (user, password) = credentials(&session.trigger)
        .ok_or_else(|| format!("no credentials in {:?}", session.trigger))?;
    let admin = Client::new(session.port, Auth::Basic(user, password));
    let console = &session.console;
    let (_, report) = console.wait_for(0, "[metal] SLICE-REPORT", WAIT)?;
    check(report.contains(r#""root":"nvme0n1p1""#), || {
        format!("metal did not boot its disk first: {report}")
    })?;
    let targets = |name: &str| -> Result<serde_json::Value, String> {
        let system = admin.get(&format!("/redfish/v1/Systems/{name}"))?;
        Ok(system.expect(200, name)?.json()["Boot"]
            ["BootSourceOverrideTarget@Redfish.AllowableValues"]
            .clone())
    };
    check(
        targets("metal")? == json!(["None", "Pxe", "Hdd", "Cd"]),
        || "metal does not offer Pxe".into(),
    )?;
    check(targets("beat")? == json!(["None", "Hdd", "Cd"]), || {
        "beat (no firmware, no NIC) offers Pxe".into()
    })?;
    let refused = admin.patch(
        "/redfish/v1/Systems/beat",
        &[],
        &json!({"Boot": {"BootSourceOverrideTarget": "Pxe"}}),
    )?;
    check(refused.status == 400, || {
        format!("Pxe on beat: {}", refused.status)
    })?;

    let reset = "/redfish/v1/Systems/metal/Actions/ComputerSystem.Reset";
    admin
        .patch(
            "/redfish/v1/Systems/metal",
            &[],
            &json!({"Boot": {"BootSourceOverrideTarget": "Pxe",
                "BootSourceOverrideEnabled": "Once"}}),
        )?
        .expect(200, "Pxe once")?;
    let mark = console.len();
    admin
        .post(reset, &json!({"ResetType": "ForceRestart"}))?
        .expect(204, "restart into the network boot")?;
    let (at, _) = console.wait_for(mark, "[metal] microvisor netboot: PXE from 10.0.2.2", WAIT)?;
    let (_, report) = console.wait_for(at, "[metal] SLICE-REPORT", WAIT)?;
    check(
        report.contains(NET_MARK) && !report.contains(r#""root""#),
        || format!("metal did not boot the network's kernel: {report}"),
    )?;
    // The override was used up, and the slice is back on its own boot order.
    poll(&admin, "/redfish/v1/Systems/metal", WAIT, |s| {
        s["Boot"]["BootSourceOverrideTarget"] == "None"
    })?;
    let mark = console.len();
    admin
        .post(reset, &json!({"ResetType": "ForceRestart"}))?
        .expect(204, "restart into its disk")?;
    let (_, report) = console.wait_for(mark, "[metal] SLICE-REPORT", WAIT)?;
    check(
        report.contains(r#""root":"nvme0n1p1""#) && !report.contains(NET_MARK),
        || format!("after the network boot metal did not boot its disk: {report}"),
    )?;
    Ok("metal booted its disk, the network once, its disk again".into())
}

#[test]
fn redfish_boots_a_firmware_slice_from_the_network_once() {
    use xtask::disk_image::{Installation, Loader};
    use xtask::node::{Network, Nic, Node};
    let ws = &microvisor_tests::images::built().ws;
    let tftp = ws.target_dir.join("test-images").join("redfish-pxe-tftp");
    let guest = xtask::linux::guest(ws, true).unwrap();
    xtask::netboot::write_tftp_root(&guest, NET_MARK, &tftp).unwrap();
    let manager = format!(
        "{}\nrole = \"manager\"\nstaging = \"64MiB\"\n\n",
        linux_slice("manager", "1", "256MiB", "microvisor.redfish=http").trim_end()
    );
    let metal = with_device(
        &with_nvme(
            &format!(
                "{}[slice.firmware.env]\nbootdelay = \"0\"\n\n",
                firmware_slice("metal", "1", "384MiB")
            ),
            1,
            "512MiB",
        ),
        "class = \"net\"",
    );
    let mut s = Scenario::new("redfish_pxe")
        .inline_node(4, 1 << 30)
        .disk(1 << 30)
        .smmuv3()
        .nic(Nic {
            network: Network::Host,
            tftp: None,
            http: None,
        })
        .nic(Nic {
            network: Network::Host,
            tftp: Some(tftp),
            http: None,
        })
        .plan(&plan(&[
            with_device(&manager, "class = \"net\""),
            metal,
            probe_slice("beat", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]));
    s.fresh_disk();
    s.install(1, Installation::new(Loader::Extlinux));
    let mac = Node::nic_mac(1).to_string();
    s.timeout(Duration::from_secs(400))
        .healthy(&["manager", "beat"])
        .expect(Expect::Never(slice("manager", "REDFISH failed")))
        .expect(Expect::Never(hv(
            "^slice (beat|manager) (stopped|restarted)",
        )))
        .expect(Expect::Line {
            pattern: hv(&format!(
                "^assigned: slice metal (0000:)?02:00.0 .*, mac {}$",
                microvisor_tests::lit(&mac)
            )),
            count: 1,
        })
        .host_script("manager", slice("manager", "REDFISH ready "), 1, pxe_once)
        .run()
        .assert_passed("redfish_pxe");
}
