//! Slices on the network (issue 10): whole virtio-net functions given to slices
//! (`[[slice.device]]`) behind the SMMUv3. On the default node (docs/node-profiles.md) NIC i is
//! at `(i+1):00.0` with MAC `52:54:00:6d:76:0i`; NICs 0 and 2 are ports of the slice-to-slice
//! hub, NICs 1 and 3 each have a restricted user network whose port 80 the host reaches
//! through a loopback port chosen at launch ([`Scenario::host_get`]).
//!
//! - Linux slices get their addresses (static by MAC on the slice network, DHCP on the host
//!   one), fetch each other's page in both directions (`microvisor.net=` steps of `/init`,
//!   `NET GET` lines), the host fetches each slice's page through its forwarded port; one slice
//!   reboots while the other keeps fetching from it, and comes back with its NIC.
//! - A probe owning a NIC runs the `net-*` attacks next to a victim probe with RAM and NVMe
//!   canaries: every attack is concluded and contained, the victim intact, the DMA aimed
//!   outside the slice leaves an SMMU fault record.
//! - Natively (no microvisor), the same Linux guest with a host NIC: checks the harness's host
//!   fetch and the `/init` network steps on the real busybox, independent of the hypervisor.
//!
//! A Linux boot takes 10-20 s under the microvisor with TCG, so one scenario checks several
//! things on one node; slices are small (1 vCPU, 256 MiB for Linux, 64 MiB for probes).

use std::time::Duration;

use microvisor_tests::host_get::{HOST_GET_TIMEOUT, HostGet, PortGet};
use microvisor_tests::runner::{Run, run};
use microvisor_tests::{
    Expect, Pattern, Scenario, any_slice, hv, linux_slice, lit, plan, probe_canary, probe_slice,
    slice, with_device, with_nvme,
};
use xtask::node::{Network, Nic};

/// The `[hv]` line saying a function was given to a slice, `{slice}`, `{bdf}` (`01:00.0`) and
/// `{mac}` (the MAC address the hypervisor read from the virtio-net function) filled in. The
/// one place to change when the hypervisor's wording is settled.
const ASSIGNED: &str = r"^assigned: slice {slice} (0000:)?{bdf} .*, mac {mac}$";
/// The `[hv]` line an SMMU event record of a slice's device gives (issue 10: `[hv] smmu: slice
/// <name> device <bdf>: ...`), `{slice}` and `{bdf}` filled in.
const SMMU_FAULT: &str = r"^smmu: slice {slice} device (0000:)?{bdf}\b";

/// [`ASSIGNED`] for `slice` and the default node's NIC `index` (at `(index+1):00.0`).
fn assigned(name: &str, index: usize) -> Pattern {
    hv(&ASSIGNED
        .replace("{slice}", &lit(name))
        .replace("{bdf}", &lit(&format!("{:02x}:00.0", index + 1)))
        .replace("{mac}", &lit(&mac(index))))
}

/// [`SMMU_FAULT`] for `slice` and `bdf`, a translation fault at `iova`.
fn smmu_fault_at(name: &str, bdf: &str, iova: u64) -> Pattern {
    hv(&format!(
        "{}: translation fault at IOVA {iova:#x} ",
        SMMU_FAULT
            .replace("{slice}", &lit(name))
            .replace("{bdf}", &lit(bdf))
    ))
}

/// MAC of the default node's NIC `index`.
fn mac(index: usize) -> String {
    xtask::node::Node::nic_mac(index).to_string()
}

/// The page httpd serves in slice `name` (`microvisor.httpd=1`).
fn page(name: &str) -> String {
    format!("<h1>slice {name}</h1>")
}

/// A `SLICE-REPORT` of `name` listing an interface with MAC `mac` and an IPv4 address matching
/// `ipv4` (a regex).
fn report_has_nic(name: &str, mac: &str, ipv4: &str) -> Pattern {
    slice(
        name,
        &format!(
            r#"^SLICE-REPORT .*\{{"name":"[^"]+","mac":"{}","ipv4":"{ipv4}"\}}"#,
            lit(mac)
        ),
    )
}

/// Start of a line `/init` prints from the background while the shell may sit at its prompt:
/// the first such line after the prompt shares its console line with it and the terminal
/// query busybox's shell sends (`/ # \x1b[6nNET GET ...`, seen natively).
const AFTER_PROMPT: &str = "(^|# .*)";

/// db's `PROBE ACTION reboot` (printed from the background, like the NET lines).
fn reboot_line() -> Pattern {
    slice("db", &format!("{AFTER_PROMPT}PROBE ACTION reboot$"))
}

/// `[<name>] NET GET <ip> ok slice <peer>`.
fn got(name: &str, ip: &str, peer: &str) -> Pattern {
    slice(
        name,
        &format!("{AFTER_PROMPT}NET GET {} ok slice {}$", lit(ip), lit(peer)),
    )
}

/// Addresses on the slice network (static, by MAC).
const WEB_IP: &str = "10.10.0.1";
const DB_IP: &str = "10.10.0.2";
/// What a host NIC's DHCP lease gives (QEMU user network).
const HOST_NIC_IP: &str = r"10\.0\.2\.[0-9]+/24";
/// db reboots this many seconds after its `/init` options ran: time for the first fetches.
const REBOOT_AFTER_S: u32 = 30;
/// GETs web's watch makes of db, one a second (plus up to 5 s per failed one): longer than the
/// scenario ever runs, which ends once everything was seen.
const WATCH_GETS: u32 = 300;
/// Successful GETs web must make of db before db reboots, and again after it is back.
const GETS_AROUND_REBOOT: usize = 3;

#[test]
fn linux_slices_on_the_network() {
    // web and db, one vCPU and 256 MiB each, on the default node: each gets a NIC on the slice
    // hub (01:00.0, 03:00.0; static 10.10.0.1/2 by MAC) and one on its own host network
    // (02:00.0, 04:00.0; DHCP), and serves its name on port 80. db fetches web's page once
    // (waiting for web to boot), web fetches db's once and then every second ("watch"). The
    // host fetches each page through the forwarded port. Then db reboots (`reboot -f` from its
    // /init, REBOOT_AFTER_S after boot; again at every boot, the scenario ends before the
    // second): it must come back with both addresses and its page, for web and for the host.
    //
    // Rule for web's watch: a `NET GET 10.10.0.2 failed` is allowed only from the hypervisor's
    // `slice db restarted` up to web's next successful GET of db (db is down and booting
    // meanwhile, and a GET begun just before it came back may still time out); anywhere else
    // it fails the run. (Not from db's `PROBE ACTION reboot`: a GET may still succeed between
    // that line and the restart, which would close the window too early.) db's single fetch of web waits up to 60 s for web and must not fail.
    let web = linux_slice(
        "web",
        "1",
        "256MiB",
        &format!(
            "microvisor.ip={}:{WEB_IP}/24 microvisor.httpd=1 \
             microvisor.net=wget:{DB_IP},watch:{DB_IP}:{WATCH_GETS}",
            mac(0)
        ),
    );
    let db = linux_slice(
        "db",
        "1",
        "256MiB",
        &format!(
            "microvisor.ip={}:{DB_IP}/24 microvisor.httpd=1 microvisor.net=wget:{WEB_IP} \
             microvisor.action=reboot-after:{REBOOT_AFTER_S}",
            mac(2)
        ),
    );
    let web = with_device(&with_device(&web, "pci = \"01:00.0\""), "pci = \"02:00.0\"");
    let db = with_device(&with_device(&db, "pci = \"03:00.0\""), "pci = \"04:00.0\"");
    let httpd = |name: &str| slice(name, "^HTTPD 80 started$");
    let db_get_failed = slice(
        "web",
        &format!("{AFTER_PROMPT}NET GET {} failed$", lit(DB_IP)),
    );

    let mut s = Scenario::new("net_linux_slices")
        .node("default")
        .plan(&plan(&[web, db]))
        .timeout(Duration::from_secs(480))
        .all_healthy()
        // The hypervisor says which function went where.
        .expect(Expect::line(assigned("web", 0)))
        .expect(Expect::line(assigned("web", 1)))
        .expect(Expect::line(assigned("db", 2)))
        .expect(Expect::line(assigned("db", 3)))
        // Both interfaces up with IPv4 in every report (db reports twice: before and after its
        // reboot). all_healthy() already wants PROBE PASS, which /init refuses to a NIC without
        // IPv4 or a network function without an interface.
        .expect(Expect::line(report_has_nic(
            "web",
            &mac(0),
            &lit(&format!("{WEB_IP}/24")),
        )))
        .expect(Expect::line(report_has_nic("web", &mac(1), HOST_NIC_IP)))
        .expect(Expect::Line {
            pattern: report_has_nic("db", &mac(2), &lit(&format!("{DB_IP}/24"))),
            count: 2,
        })
        .expect(Expect::Line {
            pattern: report_has_nic("db", &mac(3), HOST_NIC_IP),
            count: 2,
        })
        // Slice to slice, both directions: each gets the other's page.
        .expect(Expect::line(got("db", WEB_IP, "web")))
        // The host reaches each slice's page through its host NIC; db's again after its reboot.
        .host_get("web", httpd("web"), 1, &page("web"))
        .host_get("db", httpd("db"), 1, &page("db"))
        .host_get("db", httpd("db"), 2, &page("db"));

    // web keeps fetching db's page before, through and after db's reboot.
    let mut around = vec![got("web", DB_IP, "db"); GETS_AROUND_REBOOT];
    around.extend([
        reboot_line(),
        hv("^slice db restarted"),
        report_has_nic("db", &mac(2), &lit(&format!("{DB_IP}/24"))),
        httpd("db"),
    ]);
    around.extend(vec![got("web", DB_IP, "db"); GETS_AROUND_REBOOT]);
    s = s
        .expect(Expect::Sequence(around))
        .expect(Expect::OnlyBetween {
            pattern: db_get_failed,
            from: hv("^slice db restarted"),
            until: got("web", DB_IP, "db"),
        })
        .expect(Expect::Never(slice(
            "db",
            &format!("{AFTER_PROMPT}NET GET {} failed$", lit(WEB_IP)),
        )))
        .expect(Expect::Never(any_slice(&format!(
            "{AFTER_PROMPT}NET FAIL "
        ))))
        .expect(Expect::Never(any_slice("^PROBE WARN ")))
        .expect(Expect::Never(hv("^slice web (stopped|restarted)")))
        .expect(Expect::Never(hv("^slice db stopped")))
        .expect(Expect::Never(hv(
            "^smmu: (slice |stream 0x[0-9a-f]+: |global error|.*records)",
        )));
    s.run();
}

/// The attacks the NIC owner runs, net-desc-outside last: its DMA outside the slice may stop
/// the slice (its on-fault policy), which ends the list. net-reset-dma runs in its own slice
/// (it restarts that slice).
const NET_ATTACKS: [&str; 7] = [
    "net-msix-foreign",
    "net-msix-pending",
    "net-pba-write",
    "net-bar-move",
    "net-bus-master",
    "net-hidden-caps",
    "net-desc-outside",
];
/// Heartbeats the victim must print after each attack that can disturb it.
const BEATS: usize = 3;

/// The attack plan; `target` (the victim's physical RAM) is where the DMA and MSI-X attacks
/// aim outside the attacker's RAM. With `nic_nvme` the NIC's owner has an NVMe share too, so
/// that `net-bar-move` moves the NIC's BAR over the emulated NVMe function's BAR0 (without
/// it, over the NIC's own BAR1).
fn attack_plan(target: u64, nic_nvme: bool) -> String {
    let nic = with_device(
        &probe_slice(
            "nic",
            "1",
            "64MiB",
            &format!(
                "cmdline = \"attack={} target={target:#x} heartbeat=500\"",
                NET_ATTACKS.join(",")
            ),
        ),
        "pci = \"02:00.0\"",
    );
    let nic = if nic_nvme {
        with_nvme(&nic, 1, "16MiB")
    } else {
        nic
    };
    plan(&[
        // First: it gets the top of RAM, far from the attackers' IPA window.
        with_nvme(
            &probe_slice(
                "victim",
                "1",
                "64MiB",
                "cmdline = \"heartbeat=500 nvme-check=1\"",
            ),
            1,
            "16MiB",
        ),
        nic,
        with_device(
            &probe_slice(
                "resetter",
                "1",
                "64MiB",
                "cmdline = \"attack=net-reset-dma heartbeat=500\"",
            ),
            "pci = \"04:00.0\"",
        ),
    ])
}

#[test]
fn net_attacks_are_contained() {
    // "nic" owns the host NIC 02:00.0 (its ARP peer is the user network's gateway, so NET PASS
    // proves the NIC works before the attacks) and runs every net-* attack but the reset one,
    // with target= the victim's physical RAM (1 MiB into it): descriptors, rings and buffers
    // there and past its own RAM, MSI-X entries aimed at the physical ITS, foreign SPIs, the
    // victim's RAM and its own RAM, PBA writes, BAR moves, bus mastering flipped under load,
    // hidden capabilities. "resetter" owns 04:00.0 and resets itself with DMA in flight
    // (net-reset-dma); its NIC must work after the restart. The victim beats with its RAM
    // canary and its NVMe canary (nvme-check=1) throughout.
    //
    // The hypervisor's own physical address (0x4020_0000 on the -kernel path) cannot be aimed
    // at: for the device it is an IOVA inside the attacker's own RAM window (as in attacks.rs),
    // so every address outside the slice that the probe uses is the end of its RAM or target.
    //
    // Every attack must be concluded (Expect::Attacks, added by run()) and none NOT-CONTAINED;
    // net-desc-outside must leave an SMMU fault record naming nic and 02:00.0, and the record
    // must end the slice's run (on-fault = stop).
    net_attacks_on(false, || Scenario::new("net_attacks").node("default"));
}

#[test]
fn net_attacks_are_contained_on_a_gicv4_node() {
    // The same attacks where the NICs' MSIs are the slices' vLPIs (GICv4.0 direct injection,
    // docs/decisions/0004-gicv4-virtual-its.md): the probe drives its virtual ITS, the
    // physical MSI-X entries carry the EventIDs its vITS mapped, and the resetter's restart
    // discards its physical translations; its NIC's interrupts must come back after it. The
    // NIC's owner has an NVMe share here: net-bar-move puts the NIC's BAR over its BAR0,
    // which must stay the NVMe's (the NIC's BAR not mapped there).
    net_attacks_on(true, || {
        let mut s = Scenario::new("net_attacks_gicv4")
            .inline_node(4, 1 << 30)
            .gic_v4()
            .smmuv3()
            .disk(256 << 20);
        for _ in 0..4 {
            s = s.nic(Nic::on(Network::Host));
        }
        s
    });
}

#[test]
fn a_node_whose_nvme_controller_is_missing_still_gives_slices_their_nics() {
    // The plan gives "disk" an NVMe share on a node without a controller: the hypervisor says
    // so and boots "disk" without one, and "nic" still gets its function with MSIs through
    // the ITS (found in review: the failed bring-up took the ITS with it, and the node
    // refused to boot with "devices: no GIC ITS for their MSIs").
    Scenario::new("nvme_missing_nic_works")
        .inline_node(4, 1 << 30)
        .smmuv3()
        .nic(Nic::on(Network::Host))
        .plan(&plan(&[
            with_nvme(
                &probe_slice("disk", "1", "64MiB", "cmdline = \"heartbeat=500\""),
                1,
                "16MiB",
            ),
            with_device(
                &probe_slice("nic", "1", "64MiB", "cmdline = \"heartbeat=500\""),
                "pci = \"01:00.0\"",
            ),
        ]))
        .timeout(Duration::from_secs(120))
        .expect(Expect::line(hv(
            "^nvme: no NVMe controller on the PCIe host bridge; slices get no NVMe$",
        )))
        .expect(Expect::line(assigned("nic", 0)))
        .expect(Expect::line(slice("nic", "^NET PASS ")))
        .expect(Expect::line(slice(
            "disk",
            r#"^SLICE-REPORT .*"nvme":null,"#,
        )))
        .expect(Expect::line(slice("disk", "^HEARTBEAT 3 ok")))
        .expect(Expect::line(slice("nic", "^HEARTBEAT 3 ok")))
        .run();
}

/// Runs the net-* attacks on the node `node` makes (with NICs at 02:00.0 and 04:00.0, an NVMe
/// disk and an SMMUv3).
fn net_attacks_on(nic_nvme: bool, node: impl Fn() -> Scenario) {
    let victim = node().plan(&attack_plan(0, nic_nvme)).slice_ram("victim");
    let target = probe_canary(victim.base);
    assert!(
        target >= 0x4000_0000 + (64 << 20),
        "the victim's RAM must lie outside the attackers' IPA window"
    );
    let mut s = node()
        .plan(&attack_plan(target, nic_nvme))
        .timeout(Duration::from_secs(300))
        .all_healthy()
        .expect(Expect::line(assigned("nic", 1)))
        .expect(Expect::line(assigned("resetter", 3)))
        .expect(Expect::line(slice("nic", "^NET PASS ")))
        .expect(Expect::Sequence(vec![
            slice("resetter", "^NET PASS "),
            slice("resetter", "^ATTACK net-reset-dma attempting "),
            slice("resetter", "^NET RESET-DMA sent="),
            hv("^slice resetter restarted"),
            slice("resetter", "^NET PASS "),
        ]))
        .expect(Expect::HeartbeatsAfter {
            after: hv("^slice resetter restarted"),
            slices: vec!["victim".into()],
            count: BEATS,
        });
    for attack in &NET_ATTACKS[..NET_ATTACKS.len() - 1] {
        let contained = if *attack == "net-hidden-caps" {
            // Nothing of the extended space shows, before or after the writes.
            "contained .*ext-nonzero=0 .*ext-nonzero-after=0"
        } else {
            "contained "
        };
        s = s.expect(Expect::Sequence(vec![
            slice("nic", &format!("^ATTACK {} attempting ", lit(attack))),
            slice("nic", &format!("^ATTACK {} {contained}", lit(attack))),
        ]));
    }
    // QEMU's NIC completes the transfers its SMMU refused (reads as zeros, writes dropped), so
    // the probe cannot tell; the SMMU's record and the fault policy ending the run can. The
    // probe waits for that end before it would call a completion a breach.
    // Its first transfer goes to the victim's RAM (the probe tries `target=` first), so the
    // fault that ends the run is at that address: a stage 2 that mapped the victim would let
    // it through and fault only at the NIC slice's own RAM end.
    let desc = slice("nic", "^ATTACK net-desc-outside attempting ");
    s.expect(Expect::Sequence(vec![
        desc.clone(),
        smmu_fault_at("nic", "02:00.0", target),
        hv(r"^slice nic stopped: device 0000:02:00\.0: SMMU: translation fault "),
    ]))
    // The victim: beating with both canaries intact after the last attack began, never a
    // corrupt beat, never a device fault of its own.
    .expect(Expect::HeartbeatsAfter {
        after: desc,
        slices: vec!["victim".into()],
        count: BEATS,
    })
    .expect(Expect::Line {
        pattern: slice("victim", "^HEARTBEAT [0-9]+ ok nvme-ok$"),
        count: BEATS,
    })
    .expect(Expect::Never(slice("victim", "CORRUPT|ERROR")))
    .expect(Expect::Never(hv("^slice victim (stopped|restarted)")))
    .expect(Expect::Never(hv("^smmu: slice victim ")))
    .run();
}

/// The built-in Linux guest booted natively (no microvisor) with one host NIC, as a slice of the
/// default node gets it: the harness's host fetch through the forwarded port
/// ([`Run::host_gets`]) and the `/init` network steps on the real busybox (`wget`, `timeout`,
/// `sed`). The guest fetches its own page through its address (`wget:` and `watch:` steps).
/// Independent of the hypervisor: this is what the scenarios above rely on.
#[test]
fn native_linux_serves_the_host_and_runs_the_network_steps() {
    let built = microvisor_tests::images::built();
    let guest = xtask::linux::guest(&built.ws, true).unwrap_or_else(|e| panic!("{e:#}"));
    let nics = [Nic::on(Network::Host)];
    let append = "microvisor.httpd=1 microvisor.net=wget:10.0.2.15,watch:10.0.2.15:2,at:1,\
                  watch:10.0.2.99:1";
    let launch = xtask::linux::native_qemu_launch(&guest, 1, 256, append, &nics, true)
        .expect("QEMU command");
    let forward = launch.forwards[0];
    let native = microvisor_tests::NATIVE_SLICE;
    let mut command = launch.command;
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let own = |n: usize| Expect::Line {
        pattern: slice(
            native,
            &format!("{AFTER_PROMPT}NET GET 10\\.0\\.2\\.15 ok slice native$"),
        ),
        count: n,
    };
    let mut expects = Expect::always_forbidden();
    expects.extend([
        Expect::probe_pass(native),
        own(3),
        Expect::line(slice(native, &format!("{AFTER_PROMPT}NET at 1$"))),
        Expect::line(slice(
            native,
            &format!("{AFTER_PROMPT}NET GET 10\\.0\\.2\\.99 failed$"),
        )),
        Expect::line(slice(
            native,
            "NET done wget:10\\.0\\.2\\.15,watch:10\\.0\\.2\\.15:2,at:1,watch:10\\.0\\.2\\.99:1$",
        )),
    ]);
    let out = run(Run {
        name: "net_native_linux".into(),
        command,
        expects,
        input: Vec::new(),
        host_gets: vec![PortGet {
            get: HostGet {
                slice: native.into(),
                after: slice(native, "^HTTPD 80 started$"),
                nth: 1,
                contains: page(native),
                timeout: HOST_GET_TIMEOUT,
                script: None,
            },
            port: forward.port,
            https_port: forward.https_port,
            nic: forward.address.to_string(),
        }],
        timeout: Duration::from_secs(180),
        silence: Duration::from_secs(120),
        bare_lines_are: Some(native.into()),
        log: built.log_path("net_native_linux"),
    });
    out.assert_passed("net_native_linux");
}
