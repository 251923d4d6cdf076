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

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use microvisor_tests::host_get::HostSession;
use microvisor_tests::redfish::{Auth, Client, credentials, validate};
use microvisor_tests::{
    Expect, Scenario, hv, linux_slice, plan, probe_slice, slice, with_device, with_nvme,
};

/// The admin password the plan gives (by its SHA-256) in [`manager`].
const PASSWORD: &str = "hand-over-2026";

/// The manager with the service's plain HTTP on (port 80) next to HTTPS, on the default
/// node's host NIC 02:00.0, the admin password given by its SHA-256.
fn manager() -> String {
    use sha2::{Digest, Sha256};
    let digest: String = Sha256::digest(PASSWORD.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cmdline = format!("microvisor.redfish=http microvisor.redfish-password-sha256={digest}");
    let text = format!(
        "{}\nrole = \"manager\"\nstaging = \"64MiB\"\n\n",
        linux_slice("manager", "1", "256MiB", &cmdline).trim_end()
    );
    with_device(&text, "pci = \"02:00.0\"")
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

/// An ISO 9660 image as a provisioning system would serve: Debian's kernel and the built-in
/// initramfs, and a GRUB configuration whose entry boots them with [`CD_MARK`] on the
/// command line; written with the harness's ISO writer into `dir/boot.iso`, with a file that
/// is no ISO next to it.
fn media_dir() -> std::path::PathBuf {
    let ws = &microvisor_tests::images::built().ws;
    let dir = ws.target_dir.join("test-images").join("redfish-media");
    std::fs::create_dir_all(&dir).unwrap();
    let guest = xtask::linux::guest(ws, true).unwrap();
    let grub = format!(
        "set default=0\nset timeout=1\n\
         menuentry \"Debian from the virtual CD\" {{\n\
         \x20   linux /boot/vmlinuz {} {CD_MARK}\n\
         \x20   initrd /boot/initrd.img\n}}\n",
        xtask::linux::DEFAULT_CMDLINE
    );
    let mut iso = xtask::iso::IsoBuilder::new("MICROVISOR_CD");
    iso.file("boot/vmlinuz", guest.kernel.clone())
        .unwrap()
        .file("boot/initrd.img", guest.initramfs.clone())
        .unwrap()
        .file("boot/grub/grub.cfg", grub.into_bytes())
        .unwrap();
    iso.write(&dir.join("boot.iso")).unwrap();
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
                microvisor_tests::firmware_slice("metal", "1", "384MiB")
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
