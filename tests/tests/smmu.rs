//! The SMMUv3 (issue 10, physical side): on a node with `iommu = "smmuv3"` the microvisor
//! brings the SMMU up at boot with a stream table sized for the buses it numbers and every
//! stream aborting, and confines its own NVMe controller to the memory it uses (its device
//! memory, the slices' RAM, the ITS page) through a stage-2 stream table entry. The slices'
//! disks then work exactly as without an SMMU: every transfer and MSI of the controller is
//! translated by the SMMU, and none of them faults.

use microvisor_tests::{
    Expect, Pattern, Scenario, Tamper, hv, linux_slice, plan, probe_slice, slice, with_nvme,
};

/// The boot line of QEMU virt's SMMUv3 (QEMU 10: 16-bit VMIDs and StreamIDs, 44-bit output)
/// with a stream table of `table` (entries, size, last stream).
fn boot_line(table: &str) -> String {
    format!(
        r"^smmu: SMMUv3 at 0x9050000: stage 2, 16-bit VMIDs, 16-bit StreamIDs, 44-bit output, coherent; linear stream table of {table}, every stream aborts; interrupts eventq 106 gerror 109$"
    )
}

/// An event record or a global error of the SMMU (`[hv] smmu: stream 0x10: translation fault
/// ...`; the confinement line has `(nvme ...)` after the stream).
fn smmu_trouble() -> Pattern {
    hv(r"^smmu: (stream 0x[0-9a-f]+: |global error|the event queue|[0-9]+ more event)")
}

#[test]
fn smmu_boot_line_names_its_stream_table() {
    // A probe-only node without disk or bridges: the SMMU comes up with a stream table for
    // bus 0 only (256 entries, not 2^16), nothing is confined.
    Scenario::new("smmu_boot_line")
        .inline_node(2, 512 << 20)
        .smmuv3()
        .plan(&plan(&[probe_slice(
            "a",
            "1",
            "64MiB",
            "cmdline = \"heartbeat=500\"",
        )]))
        .all_healthy()
        .expect(Expect::Line {
            pattern: hv(&boot_line(r"256 entries \(16 KiB\) for streams 0x0-0xff")),
            count: 1,
        })
        .expect(Expect::Never(hv(r"^smmu: stream 0x")))
        .expect(Expect::Never(hv(r"^smmu at ")))
        .run();
}

#[test]
fn nvme_slices_keep_their_disks_behind_the_smmu() {
    // The default node's shapes (two Linux slices and a probe on 8 cores, each with its NVMe
    // share), with the SMMU in front of the bus. Its four NICs sit behind root ports, so the
    // stream table covers buses 0-4 (2048 entries). Both Linux slices check and write their
    // disk's first, middle and last blocks; the probe runs its NVMe data test (chained PRP
    // lists, offsets, every range) and keeps its canary.
    let disk = "microvisor.disk=verify,write,end";
    Scenario::new("smmu_nvme_slices")
        .node("default")
        .smmuv3()
        .plan(&plan(&[
            with_nvme(&linux_slice("web", "3", "1GiB", disk), 3, "4GiB"),
            with_nvme(&linux_slice("db", "[5, 6, 7]", "768MiB", disk), 2, "3GiB"),
            with_nvme(
                &probe_slice(
                    "batch",
                    "2",
                    "512MiB",
                    "cmdline = \"heartbeat=2000 nvme-check=1\"",
                ),
                1,
                "512MiB",
            ),
        ]))
        .all_healthy()
        .expect(Expect::Line {
            pattern: hv(&boot_line(
                r"2048 entries \(128 KiB\) for streams 0x0-0x7ff",
            )),
            count: 1,
        })
        .expect(Expect::Line {
            pattern: hv(
                r"^smmu: stream 0x10 \(nvme 0000:00:02\.0\): the hypervisor's controller, confined to its device memory and the slices' RAM$",
            ),
            count: 1,
        })
        .expect(Expect::line(slice("batch", "^NVME PASS ")))
        .expect(Expect::Never(slice("batch", "^HEARTBEAT .*CORRUPT")))
        .expect(Expect::line(slice("web", "^DISK write last ok$")))
        .expect(Expect::line(slice("db", "^DISK write last ok$")))
        .expect(Expect::line(slice(
            "web",
            "^DISK end ok read-past=0 read-across=512 write-past=refused$",
        )))
        .expect(Expect::line(slice(
            "db",
            "^DISK end ok read-past=0 read-across=512 write-past=refused$",
        )))
        .expect(Expect::line(slice("web", "^DISK done ")))
        .expect(Expect::line(slice("db", "^DISK done ")))
        .expect(Expect::Never(slice("web", "^DISK .*FAIL")))
        .expect(Expect::Never(slice("db", "^DISK .*FAIL")))
        .expect(Expect::Never(smmu_trouble()))
        .expect(Expect::Never(hv("^slice .* stopped")))
        .run();
}

#[test]
fn the_hypervisors_nvme_controller_cannot_write_outside_its_confinement() {
    // A test-marked image aims the controller once at a RAM page nobody has (an Identify
    // written there, at boot, after the stream was confined): the SMMU must refuse the write
    // and report it, the page keep the pattern written before, and the controller go on
    // serving the slice. "No fault" in the other scenarios could also mean a stream in
    // bypass or a stage 2 over all RAM; this one would then print "page CHANGED" (found in
    // review of the tests).
    Scenario::new("smmu_nvme_confinement")
        .inline_node(2, 1 << 30)
        .smmuv3()
        .disk(256 << 20)
        .tamper(Tamper::NvmeConfinement)
        .plan(&plan(&[with_nvme(
            &probe_slice("p", "1", "64MiB", "cmdline = \"heartbeat=500 nvme-check=1\""),
            1,
            "16MiB",
        )]))
        .all_healthy()
        .expect(Expect::Sequence(vec![
            hv(r"^smmu: stream 0x10 \(nvme 0000:00:02\.0\): the hypervisor's controller, confined "),
            hv(r"^test image: nvme identify into 0x[0-9a-f]+ \(outside its confinement\): .*, page unchanged$"),
            hv(r"^smmu: stream 0x10: translation fault at IOVA 0x[0-9a-f]+ \(write\)$"),
        ]))
        .expect(Expect::line(slice("p", "^NVME PASS ")))
        .expect(Expect::Never(hv("page CHANGED")))
        .run();
}

#[test]
fn a_function_nobody_owns_cannot_reach_memory() {
    // Every stream the hypervisor does not attach aborts. A test-marked image brings up the
    // node's second NVMe controller (00:03.0, nobody's) at boot the way the hypervisor
    // brings up its own: it cannot even fetch its admin queue, so the bring-up fails (QEMU's
    // controller reports a fatal status when its queue cannot be read), while the
    // hypervisor's controller serves the slice. With that stream in bypass the controller
    // came up ("its DMA reached memory"). Before, only `logic::smmu` unit tests showed that
    // unowned streams abort (found in review of the tests).
    Scenario::new("smmu_unowned_dma")
        .inline_node(2, 1 << 30)
        .smmuv3()
        .disk(256 << 20)
        .disk(64 << 20)
        .tamper(Tamper::UnownedDma)
        .plan(&plan(&[with_nvme(
            &probe_slice(
                "p",
                "1",
                "64MiB",
                "cmdline = \"heartbeat=500 nvme-check=1\"",
            ),
            1,
            "16MiB",
        )]))
        .all_healthy()
        .expect(Expect::line(hv(
            r"^test image: unowned nvme 0000:00:03\.0 did not come up: ",
        )))
        .expect(Expect::line(slice("p", "^NVME PASS ")))
        .expect(Expect::Never(hv("its DMA reached memory")))
        .run();
}
