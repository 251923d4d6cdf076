//! A scenario is data: a node, a plan, a boot path, the lines expected on the console and what
//! is typed on it when given lines appear, under a hard timeout. [`Scenario::run`] builds its
//! image, boots QEMU, types the input and checks the lines.
//!
//! ```no_run
//! use microvisor_tests::{Scenario, Expect, hv};
//! Scenario::new("two_slices")
//!     .inline_node(4, 1 << 30)
//!     .plan(r#"
//! [[slice]]
//! name = "a"
//! cores = 2
//! memory = "128MiB"
//! kernel = "probe"
//! [[slice]]
//! name = "b"
//! cores = [3]
//! memory = "64MiB"
//! kernel = "probe"
//! "#)
//!     .all_healthy()
//!     .expect(Expect::line(hv("^footprint: ")))
//!     .run();
//! ```

use std::time::Duration;

use std::path::{Path, PathBuf};

use microvisor_plan::{
    BuiltIn, DiskShare, HumanSize, ImageSource, Placement, Plan, RamRange, format_cores, place,
    place_disk,
};
use xtask::node::{Disk, Iommu, Nic, Node, RAM_BASE};
use xtask::qemu::{Boot, Console, Firmware};

use crate::attack_lines::requested_attacks;
use crate::expect::{Expect, Pattern, any_slice, hv, lit};
use crate::firmware_dt::{self, FirmwareTree};
use crate::host_get::{HOST_GET_TIMEOUT, HostGet, PortGet};
use crate::images::{built, corrupt_bundled_image, mark_test};
use crate::input::Input;
use crate::runner::{Outcome, Run, run};
use microvisor_plan::image::{
    DATA_EXECUTION_TEST, NVME_CONFINEMENT_TEST, STACK_OVERFLOW_TEST, UNOWNED_DMA_TEST,
};

/// The machine QEMU emulates.
#[derive(Clone, Debug)]
pub enum NodeSpec {
    /// A profile in `qemu/` (`default`, `small`).
    Profile(String),
    /// Cores, RAM bytes, NVMe disk sizes and NICs given here.
    Inline {
        cores: u32,
        memory: u64,
        disks: Vec<u64>,
        nics: Vec<Nic>,
    },
}

/// How the image is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootPath {
    /// QEMU `-kernel`: the hypervisor runs at 0x4020_0000.
    Kernel,
    /// Debian's U-Boot, `booti` moving the image to 0x4020_0000.
    UBoot,
    /// Debian's U-Boot with the header's "anywhere" flag: runs in place at 0x4040_0000.
    UBootAnywhere,
    /// The probe alone, without the microvisor and without EL2 (its lines have no prefix and
    /// are attributed to slice `native`). Used to check the harness and the probe.
    Native,
}

/// A change made to the built image before booting it.
#[derive(Clone, Copy, Debug)]
pub enum Tamper {
    /// Flip one byte inside bundle image `index` (its SHA-256 no longer matches).
    CorruptImage { index: usize },
    /// Mark the image header (`microvisor_plan::image::STACK_OVERFLOW_TEST`) so that the boot
    /// core overflows its hypervisor stack on purpose once the slices run. Lifts the rule
    /// against `[hv] FATAL` lines: the scenario expects one.
    StackOverflow,
    /// Mark the image header (`microvisor_plan::image::NVME_CONFINEMENT_TEST`) so that the
    /// boot aims the NVMe controller's DMA once at a RAM page outside its SMMU confinement.
    NvmeConfinement,
    /// Mark the image header (`microvisor_plan::image::DATA_EXECUTION_TEST`) so that the boot
    /// core calls into a heap page once the slices run. Lifts the rule against `[hv] FATAL`
    /// lines: the scenario expects one.
    DataExecution,
    /// Mark the image header (`microvisor_plan::image::UNOWNED_DMA_TEST`) so that the boot
    /// brings up the second NVMe controller on the root bus, which nobody owns.
    UnownedDma,
}

/// Name of the slice a natively booted probe reports.
pub const NATIVE_SLICE: &str = "native";
/// Default hard timeout of a scenario.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// A run with no console line for this long has hung.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(120);
/// I/O queue pairs QEMU's `-device nvme` grants (its `max_ioqpairs` default), which the
/// microvisor shares out among the slices.
pub const QEMU_NVME_QUEUES: u16 = 64;
/// Block size of QEMU's NVMe namespace (its default LBA format).
pub const QEMU_NVME_BLOCK_SHIFT: u8 = 9;

/// One boot of one node with one plan, and what its console must show.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Unique name: its image, plan and log files are named after it.
    pub name: String,
    pub node: NodeSpec,
    /// Plan TOML; `None` boots the node profile's default plan.
    pub plan: Option<String>,
    pub boot: BootPath,
    pub expects: Vec<Expect>,
    pub timeout: Duration,
    pub tamper: Option<Tamper>,
    /// Kernel command line for [`BootPath::Native`] (`-append`).
    pub cmdline: Option<String>,
    /// Typed on the node console, in order, as their lines appear.
    pub input: Vec<Input>,
    /// Pages the host fetches from slices through their host NICs' forwarded ports.
    pub host_gets: Vec<HostGet>,
    /// Whose disk files the node gets (`<disk_name>-nvme<i>.raw`); the scenario's own name
    /// unless [`same_disk_as`](Self::same_disk_as) says otherwise.
    pub disk_name: Option<String>,
    /// Keep what the disk files hold; otherwise they start empty (all zeros) at every run.
    pub keep_disk: bool,
    /// Whether slices are expected to start (false after [`refused_at_boot`](Self::refused_at_boot)):
    /// only then must each probe attempt the attacks it was asked for.
    pub slices_start: bool,
    /// Probe slices whose attacks the scenario's own expectations check instead of
    /// [`Expect::Attacks`] (see [`Scenario::reimaged`]).
    pub reimaged: Vec<String>,
    /// A device tree handed over with `-dtb` instead of QEMU's own.
    pub firmware_tree: Option<FirmwareTree>,
    /// Arguments appended to QEMU's command line (see [`Scenario::qemu_args`]).
    pub qemu_args: Vec<String>,
    /// An IOMMU in front of the node's PCIe bus, whatever the node profile says.
    pub iommu: Option<Iommu>,
    /// The GIC version (`gic-version=`), whatever the node profile says.
    pub gic_version: Option<u32>,
}

/// What Linux may keep of a slice's RAM for itself, so MemTotal (`mem_total_kib`) is at least
/// the slice's memory minus this, in bytes. MemTotal is the RAM the page allocator manages:
/// the DT memory minus what the kernel reserves for good at boot. That is its own image
/// (Debian's 6.1 cloud kernel declares `image_size` 27983872 bytes, 26.7 MiB, in its header),
/// the `struct page` array (64 bytes per 4 KiB page: 1/64 of RAM) and a few MiB of early
/// allocations (device tree copy, page tables, per-CPU areas, log buffer); its init sections
/// and the initramfs are freed back. Measured under the microvisor (6.1.0-56): 27.2 MiB of
/// 256 MiB, 32.2 MiB of 512 MiB, 42.1 MiB of 1 GiB missing. Allowed: 64 MiB + RAM/64,
/// room for a larger kernel (e.g. a backports 6.12) while a slice that lost a real part of its
/// RAM (a memory node cut short, a wrong size) still fails for any slice of 256 MiB or more.
pub fn linux_reserved_allowance(memory_bytes: u64) -> u64 {
    (64 << 20) + memory_bytes / 64
}

impl Scenario {
    /// A scenario on a 4-core 1 GiB node booted with `-kernel`, forbidding `[hv] FATAL`,
    /// `panicked`, `PROBE FAIL` and `NOT-CONTAINED` lines.
    pub fn new(name: &str) -> Scenario {
        Scenario {
            name: name.to_string(),
            node: NodeSpec::Inline {
                cores: 4,
                memory: 1 << 30,
                disks: Vec::new(),
                nics: Vec::new(),
            },
            plan: None,
            boot: BootPath::Kernel,
            expects: Expect::always_forbidden(),
            timeout: DEFAULT_TIMEOUT,
            tamper: None,
            cmdline: None,
            input: Vec::new(),
            host_gets: Vec::new(),
            disk_name: None,
            keep_disk: false,
            slices_start: true,
            reimaged: Vec::new(),
            firmware_tree: None,
            qemu_args: Vec::new(),
            iommu: None,
            gic_version: None,
        }
    }

    /// Boots on the node profile `qemu/<profile>.toml`.
    pub fn node(mut self, profile: &str) -> Scenario {
        self.node = NodeSpec::Profile(profile.to_string());
        self
    }

    /// Boots on a node with `cores` cores and `memory` bytes of RAM (and no disk or NIC).
    pub fn inline_node(mut self, cores: u32, memory: u64) -> Scenario {
        self.node = NodeSpec::Inline {
            cores,
            memory,
            disks: Vec::new(),
            nics: Vec::new(),
        };
        self
    }

    /// Puts QEMU virt's SMMUv3 in front of the node's PCIe bus (`iommu = "smmuv3"`).
    pub fn smmuv3(mut self) -> Scenario {
        self.iommu = Some(Iommu::Smmuv3);
        self
    }

    /// Boots on a GICv4 node (`gic-version=4`: GICv4.0, whose slices get a virtual ITS).
    pub fn gic_v4(mut self) -> Scenario {
        self.gic_version = Some(4);
        self
    }

    /// Attaches one more NVMe disk of `size` bytes to an inline node.
    pub fn disk(mut self, size: u64) -> Scenario {
        match &mut self.node {
            NodeSpec::Inline { disks, .. } => disks.push(size),
            NodeSpec::Profile(p) => panic!("scenario {}: profile {p} has its own disks", self.name),
        }
        self
    }

    /// Attaches one more NIC to an inline node (NIC *i* at `(i+1):00.0`, behind its own root
    /// port, docs/node-profiles.md); give it to a slice with `[[slice.device]]` and put the
    /// SMMUv3 in front of the bus ([`Scenario::smmuv3`]).
    pub fn nic(mut self, nic: Nic) -> Scenario {
        match &mut self.node {
            NodeSpec::Inline { nics, .. } => nics.push(nic),
            NodeSpec::Profile(p) => panic!("scenario {}: profile {p} has its own NICs", self.name),
        }
        self
    }

    /// Boots on the disk files scenario `name` used, as that run left them: a node restarted
    /// on the same disks. The nodes must have the same disk sizes.
    pub fn same_disk_as(mut self, name: &str) -> Scenario {
        self.disk_name = Some(name.to_string());
        self.keep_disk = true;
        self
    }

    /// Starts the node's first disk file all zeros now and keeps it as then written for the
    /// run (instead of making it empty when the run starts).
    pub fn fresh_disk(&mut self) {
        let disk = self.disk_file(0);
        let size = self.load_node().disks[0].size;
        std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&disk)
            .unwrap();
        file.set_len(size).unwrap();
        self.keep_disk = true;
    }

    /// Slice `index`'s share of the node's first disk: its byte offset and size.
    fn share_bytes(&self, index: usize) -> (u64, u64) {
        let share = self.disk_shares()[index]
            .unwrap_or_else(|| panic!("scenario {}: slice {index} has no disk share", self.name));
        (
            share.first_block << QEMU_NVME_BLOCK_SHIFT,
            share.blocks << QEMU_NVME_BLOCK_SHIFT,
        )
    }

    /// Writes the installed system `install` describes into `file` at `offset`, as a disk of
    /// `bytes` bytes (`tag` names the scratch directory).
    fn write_installation(
        &self,
        install: xtask::disk_image::Installation<'_>,
        file: &Path,
        (offset, bytes): (u64, u64),
        tag: &str,
    ) {
        let guest = xtask::linux::guest(&built().ws, true).unwrap();
        let work = built().image_path(&format!("{}-{tag}", self.name), "work");
        xtask::disk_image::write_installed_disk(&guest, install, file, offset, bytes, &work)
            .unwrap_or_else(|e| panic!("scenario {}: writing {tag}: {e:#}", self.name));
    }

    /// Writes the installed system `install` describes into slice `index`'s share of the
    /// node's first disk file (made by [`Self::fresh_disk`] first).
    pub fn install(&mut self, index: usize, install: xtask::disk_image::Installation<'_>) {
        let share = self.share_bytes(index);
        self.write_installation(install, &self.disk_file(0), share, "install");
    }

    /// An image of slice `index`'s share holding the installed system `install` describes,
    /// written now to a file of its own (`target/test-images/<scenario>-<tag>.share`), and the
    /// [`DiskWrite`](crate::DiskWrite) that copies it over the share while the node runs
    /// ([`crate::Input::writing`]).
    pub fn share_image(
        &self,
        index: usize,
        tag: &str,
        install: xtask::disk_image::Installation<'_>,
    ) -> crate::DiskWrite {
        let (offset, bytes) = self.share_bytes(index);
        let image = built().image_path(&format!("{}-{tag}", self.name), "share");
        let guest = xtask::linux::guest(&built().ws, true).unwrap();
        let work = built().image_path(&format!("{}-{tag}", self.name), "work");
        xtask::disk_image::write_installed_image(&guest, install, &image, bytes, &work)
            .unwrap_or_else(|e| panic!("scenario {}: writing {tag}: {e:#}", self.name));
        crate::DiskWrite {
            image,
            disk: self.disk_file(0),
            offset,
        }
    }

    /// What `cargo xtask run` does to the node's disk: on a fresh disk, Debian installed on
    /// the share of every slice that boots firmware
    /// ([`xtask::disk_image::install_on_blank_shares`]).
    pub fn install_for_firmware_slices(mut self) -> Scenario {
        self.fresh_disk();
        let guest = xtask::linux::guest(&built().ws, true).unwrap();
        let size = self.load_node().disks[0].size;
        xtask::disk_image::install_on_blank_shares(
            &guest,
            &self.parsed_plan(),
            &self.disk_file(0),
            size,
            &built().image_path(&format!("{}-install", self.name), "work"),
        )
        .unwrap_or_else(|e| panic!("scenario {}: installing: {e:#}", self.name));
        self
    }

    /// Disk file `index` of the node (`target/test-images/<disk name>-nvme<index>.raw`).
    pub fn disk_file(&self, index: usize) -> PathBuf {
        let name = self.disk_name.as_deref().unwrap_or(&self.name);
        xtask::qemu::disk_file(&built().image_path(name, "disk"), index)
    }

    /// Each slice's share of the node's first NVMe disk, in plan order, as the microvisor
    /// computes it at boot from QEMU's controller (512-byte blocks, [`QEMU_NVME_QUEUES`]).
    pub fn disk_shares(&self) -> Vec<Option<DiskShare>> {
        let node = self.load_node();
        let disk = node
            .disks
            .first()
            .unwrap_or_else(|| panic!("scenario {}: the node has no disk", self.name));
        place_disk(
            &self.parsed_plan(),
            disk.size >> QEMU_NVME_BLOCK_SHIFT,
            QEMU_NVME_BLOCK_SHIFT,
            QEMU_NVME_QUEUES,
        )
        .unwrap_or_else(|e| panic!("scenario {}: plan does not fit the disk: {e}", self.name))
    }

    /// The plan to boot (TOML text).
    pub fn plan(mut self, toml: &str) -> Scenario {
        self.plan = Some(toml.to_string());
        self
    }

    pub fn boot(mut self, boot: BootPath) -> Scenario {
        self.boot = boot;
        self
    }

    pub fn expect(mut self, expect: Expect) -> Scenario {
        self.expects.push(expect);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Scenario {
        self.timeout = timeout;
        self
    }

    pub fn tamper(mut self, tamper: Tamper) -> Scenario {
        if let Tamper::StackOverflow | Tamper::DataExecution = tamper {
            self.expects
                .retain(|e| !matches!(e, Expect::Never(p) if p.regex.as_str() == r"\[hv\] FATAL"));
        }
        self.tamper = Some(tamper);
        self
    }

    /// Types `input` on the node console when its line appears (after the inputs added before).
    pub fn input(mut self, input: Input) -> Scenario {
        self.input.push(input);
        self
    }

    /// Once the `nth` line matching `after` has appeared (1 = the first), the host fetches `/`
    /// from `127.0.0.1:<port>`, the loopback port QEMU forwards in this boot to port 80 of the
    /// `network = "host"` NIC that slice `slice` is given (`[[slice.device]]`; natively: the
    /// node's first host NIC), retrying for up to [`HOST_GET_TIMEOUT`] until the answer is 200
    /// and its body contains `contains`. Until then the fetch is pending like an expectation; if
    /// it gives up, the run fails with the URL, the slice, the NIC and the last answer.
    pub fn host_get(mut self, slice: &str, after: Pattern, nth: usize, contains: &str) -> Scenario {
        assert!(
            nth >= 1,
            "scenario {}: host_get nth counts from 1",
            self.name
        );
        self.host_gets.push(HostGet {
            slice: slice.to_string(),
            after,
            nth,
            contains: contains.to_string(),
            timeout: HOST_GET_TIMEOUT,
            script: None,
        });
        self
    }

    /// Once the `nth` line matching `after` has appeared, the host runs `script` against the
    /// loopback ports forwarded to slice `slice`'s host NIC (as [`Scenario::host_get`]
    /// finds them), on its own thread; the run passes only if it returns `Ok` (its summary goes
    /// to the log) and fails at once with its reason otherwise. The script bounds its own waits.
    pub fn host_script(
        mut self,
        slice: &str,
        after: Pattern,
        nth: usize,
        script: impl Fn(&crate::host_get::HostSession) -> Result<String, String> + Send + Sync + 'static,
    ) -> Scenario {
        assert!(nth >= 1, "scenario {}: nth counts from 1", self.name);
        self.host_gets.push(HostGet {
            slice: slice.to_string(),
            after,
            nth,
            contains: String::new(),
            timeout: HOST_GET_TIMEOUT,
            script: Some(crate::host_get::HostScript(std::sync::Arc::new(script))),
        });
        self
    }

    /// Each [`HostGet`] with the port of its slice's host NIC among `forwards` (the ports of one
    /// launch). Panics when a slice has no host NIC: the scenario is wrong.
    pub fn resolve_host_gets(&self, forwards: &[xtask::qemu::HostForward]) -> Vec<PortGet> {
        if self.host_gets.is_empty() {
            return Vec::new();
        }
        let given: Vec<(String, Vec<microvisor_plan::PciAddress>)> = match self.boot {
            BootPath::Native => vec![(
                NATIVE_SLICE.to_string(),
                forwards.iter().map(|f| f.address).collect(),
            )],
            _ => {
                let plan = self.parsed_plan();
                let placed =
                    microvisor_plan::place_devices(&plan, &self.load_node().pci_functions())
                        .unwrap_or_else(|e| {
                            panic!("scenario {}: devices cannot be placed: {e}", self.name)
                        });
                plan.slices
                    .into_iter()
                    .map(|s| s.name)
                    .zip(placed)
                    .collect()
            }
        };
        ports_for(&self.host_gets, &given, forwards)
            .unwrap_or_else(|why| panic!("scenario {}: {why}", self.name))
    }

    /// Hands the image `tree` with `-dtb` (written to `target/test-images/<name>.dtb`), as a
    /// loader or firmware does, instead of letting QEMU pass its own.
    pub fn firmware_tree(mut self, tree: FirmwareTree) -> Scenario {
        self.firmware_tree = Some(tree);
        self
    }

    /// Command line of a natively booted probe.
    pub fn cmdline(mut self, cmdline: &str) -> Scenario {
        self.cmdline = Some(cmdline.to_string());
        self
    }

    /// Appends `args` to QEMU's command line: devices a test adds by hand (e.g. root ports
    /// with NICs behind them) that node profiles do not describe.
    pub fn qemu_args(mut self, args: &[&str]) -> Scenario {
        self.qemu_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// The node as QEMU will emulate it.
    pub fn load_node(&self) -> Node {
        let mut node = self.profile_node();
        if self.iommu.is_some() {
            node.iommu = self.iommu;
        }
        if let Some(version) = self.gic_version {
            node.gic_version = version;
        }
        node
    }

    fn profile_node(&self) -> Node {
        match &self.node {
            NodeSpec::Profile(name) => Node::load(&built().ws, name)
                .unwrap_or_else(|e| panic!("scenario {}: {e:#}", self.name)),
            NodeSpec::Inline {
                cores,
                memory,
                disks,
                nics,
            } => {
                let mut node = Node::inline(&self.name, *cores, *memory);
                node.disks = disks.iter().map(|&size| Disk { size }).collect();
                node.nics = nics.clone();
                node
            }
        }
    }

    /// The plan as text: the scenario's own, or the node's default plan.
    pub fn plan_text(&self) -> String {
        match &self.plan {
            Some(text) => text.clone(),
            None => {
                let node = self.load_node();
                let path = node
                    .default_plan()
                    .unwrap_or_else(|e| panic!("scenario {}: {e:#}", self.name));
                std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            }
        }
    }

    /// The parsed plan (panics if it is invalid: use build-error tests for those).
    pub fn parsed_plan(&self) -> Plan {
        Plan::from_toml(&self.plan_text())
            .unwrap_or_else(|e| panic!("scenario {}: invalid plan: {e}", self.name))
    }

    /// Where the microvisor places each slice: deterministic (top-down from the end of RAM in
    /// plan order), so the physical addresses do not depend on its own footprint.
    pub fn placement(&self) -> Placement {
        let node = self.load_node();
        place(&self.parsed_plan(), &node.hardware())
            .unwrap_or_else(|e| panic!("scenario {}: plan does not fit: {e}", self.name))
    }

    /// Physical RAM of slice `name`.
    pub fn slice_ram(&self, name: &str) -> RamRange {
        let plan = self.parsed_plan();
        let index = plan
            .slices
            .iter()
            .position(|s| s.name == name)
            .unwrap_or_else(|| panic!("scenario {}: no slice {name}", self.name));
        self.placement().slices[index].ram
    }

    /// Expect each named slice to boot as planned: its partition line (physical cores, RAM size,
    /// on the `-kernel` path the RAM range that placement computes, and a built-in guest's
    /// kernel label), `[hv] slice <s> started`, a SLICE-REPORT with exactly its vCPUs (affinity
    /// i for vCPU i) and RAM, and `PROBE PASS`; for the built-in Linux guest also a MemTotal
    /// consistent with its RAM (every report: see [`linux_reserved_allowance`]). Set node and
    /// plan first.
    pub fn healthy(mut self, names: &[&str]) -> Scenario {
        if self.boot == BootPath::Native {
            let node = self.load_node();
            for name in names {
                self.expects.push(Expect::Report {
                    slice: name.to_string(),
                    cpus: u64::from(node.cores),
                    memory_bytes: node.memory,
                });
                self.expects.push(Expect::probe_pass(name));
            }
            return self;
        }
        let plan = self.parsed_plan();
        let placement = self.placement();
        for name in names {
            let (s, at) = plan
                .slices
                .iter()
                .zip(&placement.slices)
                .find(|(s, _)| s.name == *name)
                .unwrap_or_else(|| panic!("scenario {}: no slice {name}", self.name));
            // On the -kernel path nothing but the microvisor sits in high RAM, so slices land
            // exactly where `place` puts them; U-Boot keeps its own copy of the device tree
            // (and itself) at the top of RAM, which the microvisor leaves alone.
            let ram = if self.boot == BootPath::Kernel {
                format!("(?i:0x0*{:x}-0x0*{:x})", at.ram.base, at.ram.end())
            } else {
                "0x[0-9a-fA-F]+-0x[0-9a-fA-F]+".to_string()
            };
            let kernel = match &s.kernel {
                ImageSource::BuiltIn(BuiltIn::Linux) => "linux$",
                ImageSource::BuiltIn(BuiltIn::Probe) => "probe$",
                ImageSource::BuiltIn(BuiltIn::Firmware) => "u-boot$",
                ImageSource::Path(_) => "",
            };
            self.expects.push(Expect::line(hv(&format!(
                "^partition: slice {} cores {} ram {ram} \\({}\\) kernel {kernel}",
                lit(name),
                lit(&format_cores(&at.cores)),
                lit(&HumanSize(s.memory).to_string()),
            ))));
            self.expects.push(Expect::line(hv(&format!(
                "^slice {} started \\(RAM scrubbed: \\d+ MiB in \\d+ ms\\)$",
                lit(name)
            ))));
            self.expects.push(Expect::Report {
                slice: name.to_string(),
                cpus: at.cores.len() as u64,
                memory_bytes: s.memory,
            });
            self.expects.push(Expect::probe_pass(name));
            if let Some(nvme) = &s.nvme {
                let share = self.disk_shares()[plan
                    .slices
                    .iter()
                    .position(|x| x.name == *name)
                    .expect("found above")]
                .expect("a slice with [slice.nvme] has a share");
                let last_block = share.first_block + share.blocks - 1;
                let last_queue = share.first_queue + share.queues - 1;
                self.expects.push(Expect::line(hv(&format!(
                    "^partition: slice {} nvme blocks {}-{last_block} \\({}\\) hardware queues {}-{last_queue}{}$",
                    lit(name),
                    share.first_block,
                    lit(&HumanSize(nvme.size).to_string()),
                    share.first_queue,
                    if nvme.direct { " \\(direct\\)" } else { "" },
                ))));
                self.expects.push(Expect::Nvme {
                    slice: name.to_string(),
                    bytes: nvme.size,
                    queues: u64::from(nvme.queues).min(at.cores.len() as u64),
                });
            }
            if s.kernel == ImageSource::BuiltIn(BuiltIn::Linux) {
                self.expects.push(Expect::MemTotal {
                    slice: name.to_string(),
                    min_kib: s.memory.saturating_sub(linux_reserved_allowance(s.memory)) >> 10,
                    max_kib: s.memory >> 10,
                });
            }
        }
        self
    }

    /// [`healthy`](Self::healthy) for every slice of the plan.
    pub fn all_healthy(self) -> Scenario {
        if self.boot == BootPath::Native {
            return self.healthy(&[NATIVE_SLICE]);
        }
        let plan = self.parsed_plan();
        let names: Vec<String> = plan.slices.iter().map(|s| s.name.clone()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.healthy(&names)
    }

    /// Expect the boot to be refused: one `[hv] error:` line matching `why` (e.g. naming the
    /// slice and the field), then `[hv] halted: no slice was started`, not a single line from
    /// any slice, and QEMU exiting by itself.
    pub fn refused_at_boot(mut self, why: &str) -> Scenario {
        self.slices_start = false;
        self.expect(Expect::Sequence(vec![
            hv(&format!("^error: .*{why}")),
            hv("^halted: no slice was started$"),
        ]))
        .expect(Expect::Never(any_slice("")))
        .expect(Expect::Never(hv("^slice .* started$")))
        .expect(Expect::QemuExits)
    }

    /// Expect the boot to stop where nothing can power the node off (no readable `/psci`): one
    /// `[hv] error:` line matching `why`, the line saying the boot core stops, `[hv] halted: no
    /// slice was started`, and not a single line from any slice. QEMU keeps running (the boot
    /// core waits in WFI); the harness stops it once the lines are there.
    pub fn halted_at_boot(self, why: &str) -> Scenario {
        self.expect(Expect::Sequence(vec![
            hv(&format!("^error: .*{why}")),
            hv("^no PSCI conduit known to power off with: the boot core stops here$"),
            hv("^halted: no slice was started$"),
        ]))
        .expect(Expect::Never(any_slice("")))
        .expect(Expect::Never(hv("^slice .* started$")))
    }

    /// After `[hv] slice <stopped> stopped: ...`, each of `others` prints `count` more heartbeats.
    pub fn others_keep_running(self, stopped: &str, others: &[&str], count: usize) -> Scenario {
        self.expect(Expect::HeartbeatsAfter {
            after: hv(&format!("^slice {} stopped: ", lit(stopped))),
            slices: others.iter().map(|s| s.to_string()).collect(),
            count,
        })
    }

    /// Builds the image, boots it, checks the console; panics with the reason and the path of
    /// the serial log unless every expectation held.
    pub fn run(self) -> Outcome {
        let name = self.name.clone();
        let outcome = self.run_unchecked();
        outcome.assert_passed(&name);
        outcome
    }

    /// One [`Expect::Attacks`] per probe that is asked for attacks (a probe slice's `cmdline`,
    /// or the native probe's): each one must be attempted and concluded, none `unverified`.
    /// [`run`](Self::run) adds them to every scenario whose slices start.
    pub fn attack_expectations(&self) -> Vec<Expect> {
        let probes: Vec<(String, String)> = match self.boot {
            BootPath::Native => vec![(
                NATIVE_SLICE.to_string(),
                self.cmdline.clone().unwrap_or_default(),
            )],
            _ => self
                .parsed_plan()
                .slices
                .into_iter()
                .filter(|s| s.kernel == ImageSource::BuiltIn(BuiltIn::Probe))
                .map(|s| (s.name, s.cmdline))
                .collect(),
        };
        probes
            .into_iter()
            .map(|(slice, cmdline)| (slice, requested_attacks(&cmdline)))
            .filter(|(_, attacks)| !attacks.is_empty())
            .map(|(slice, attacks)| Expect::Attacks { slice, attacks })
            .collect()
    }

    /// Slice `name` is booted again with another command line during the run (by the
    /// manager): [`Expect::Attacks`] holds every run to the plan's attack list, so the
    /// scenario's own expectations check that slice's attack lines instead (and no attack
    /// line may say NOT-CONTAINED, as in every scenario).
    pub fn reimaged(mut self, name: &str) -> Scenario {
        self.reimaged.push(name.to_string());
        self
    }

    /// Like [`run`](Self::run) but returns the outcome whatever it is.
    pub fn run_unchecked(mut self) -> Outcome {
        if self.slices_start {
            let attacks = self.attack_expectations().into_iter().filter(
                |e| !matches!(e, Expect::Attacks { slice, .. } if self.reimaged.contains(slice)),
            );
            self.expects.extend(attacks.collect::<Vec<_>>());
        }
        let built = built();
        let node = self.load_node();
        let image = match self.boot {
            BootPath::Native => built.native_probe_image(&self.name),
            boot => {
                let anywhere = boot == BootPath::UBootAnywhere;
                match (&self.plan, node.plan.as_deref()) {
                    (None, Some(default)) => built.image_from_plan(&self.name, default, anywhere),
                    _ => built.image_from_plan_text(&self.name, &self.plan_text(), anywhere),
                }
            }
        };
        match self.tamper {
            Some(Tamper::CorruptImage { index }) => {
                corrupt_bundled_image(&image, index);
            }
            Some(Tamper::StackOverflow) => mark_test(&image, STACK_OVERFLOW_TEST),
            Some(Tamper::NvmeConfinement) => mark_test(&image, NVME_CONFINEMENT_TEST),
            Some(Tamper::DataExecution) => mark_test(&image, DATA_EXECUTION_TEST),
            Some(Tamper::UnownedDma) => mark_test(&image, UNOWNED_DMA_TEST),
            None => {}
        }
        if !self.keep_disk {
            for index in 0..node.disks.len() {
                let file = self.disk_file(index);
                if let Err(e) = std::fs::remove_file(&file)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    panic!("scenario {}: removing {}: {e}", self.name, file.display());
                }
            }
        }
        let mut boot = Boot {
            node: &node,
            image: &image,
            firmware: match self.boot {
                BootPath::UBoot | BootPath::UBootAnywhere => Firmware::UBoot,
                BootPath::Kernel | BootPath::Native => Firmware::Direct,
            },
            virtualization: self.boot != BootPath::Native,
            console: Console::Captured,
            disk_prefix: built.image_path(self.disk_name.as_deref().unwrap_or(&self.name), "disk"),
            kernel_cmdline: self.cmdline.clone(),
            dtb: None,
        };
        let dtb = self
            .firmware_tree
            .map(|tree| firmware_dt::prepare(tree, &boot, &built.image_path(&self.name, "dtb")));
        boot.dtb = dtb.as_deref();
        let mut launch = boot
            .launch()
            .unwrap_or_else(|e| panic!("scenario {}: {e:#}", self.name));
        launch.command.args(&self.qemu_args);
        let host_gets = self.resolve_host_gets(&launch.forwards);
        run(Run {
            name: self.name.clone(),
            command: launch.command,
            expects: self.expects,
            input: self.input,
            host_gets,
            timeout: self.timeout,
            silence: SILENCE_LIMIT,
            bare_lines_are: (self.boot == BootPath::Native).then(|| NATIVE_SLICE.to_string()),
            log: built.log_path(&self.name),
        })
    }
}

/// Each fetch of `gets` with the port of the forward (`forwards`, one launch's) whose NIC is
/// among the functions its slice was given (`given`: slice name, its functions); `Err` names
/// a slice without a forwarded NIC.
pub fn ports_for(
    gets: &[HostGet],
    given: &[(String, Vec<microvisor_plan::PciAddress>)],
    forwards: &[xtask::qemu::HostForward],
) -> Result<Vec<PortGet>, String> {
    gets.iter()
        .map(|get| {
            let forward = given
                .iter()
                .find(|(name, _)| *name == get.slice)
                .and_then(|(_, addresses)| forwards.iter().find(|f| addresses.contains(&f.address)))
                .ok_or_else(|| {
                    format!(
                        "slice {} has no host NIC to fetch from (forwarded: {forwards:?})",
                        get.slice
                    )
                })?;
            Ok(PortGet {
                get: get.clone(),
                port: forward.port,
                https_port: forward.https_port,
                nic: forward.address.to_string(),
            })
        })
        .collect()
}

/// The lowest IPA of a slice's RAM (QEMU `virt` RAM base).
pub const GUEST_RAM_BASE: u64 = RAM_BASE;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plans::{linux_slice, plan, probe_slice};

    fn attacks_of(expects: &[Expect]) -> Vec<(String, Vec<String>)> {
        expects
            .iter()
            .filter_map(|e| match e {
                Expect::Attacks { slice, attacks } => Some((slice.clone(), attacks.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_probe_asked_for_attacks_must_attempt_them() {
        let s = Scenario::new("x").plan(&plan(&[
            probe_slice(
                "gic",
                "2",
                "64MiB",
                "cmdline = \"attack=gicr-own,sgi-self-test heartbeat=500 attack=spi-foreign\"",
            ),
            probe_slice("quiet", "1", "64MiB", "cmdline = \"heartbeat=500\""),
            linux_slice("lin", "1", "256MiB", "attack=mmio"),
        ]));
        assert_eq!(
            attacks_of(&s.attack_expectations()),
            [(
                "gic".to_string(),
                vec![
                    "gicr-own".to_string(),
                    "sgi-self-test".to_string(),
                    "spi-foreign".to_string()
                ]
            )]
        );
        assert!(s.slices_start);
        let refused = s.refused_at_boot("no");
        assert!(!refused.slices_start, "no slice starts, no attack runs");
    }

    #[test]
    fn host_gets_go_through_the_forward_of_a_nic_the_slice_was_given() {
        use crate::expect::slice;
        use microvisor_plan::PciAddress;
        use xtask::node::Node;
        use xtask::qemu::HostForward;
        let at = |t: &str| PciAddress::parse(t).unwrap();
        let forward = |nic: usize, port: u16| HostForward {
            nic,
            address: Node::nic_address(nic).unwrap(),
            mac: Node::nic_mac(nic),
            port,
            https_port: port + 1000,
        };
        let forwards = [forward(1, 4001), forward(3, 4003)];
        let given = vec![
            ("web".to_string(), vec![at("01:00.0"), at("02:00.0")]),
            ("db".to_string(), vec![at("03:00.0"), at("04:00.0")]),
            ("batch".to_string(), vec![at("01:00.0")]),
        ];
        let get = |name: &str| HostGet {
            slice: name.into(),
            after: slice(name, "^HTTPD"),
            nth: 1,
            contains: String::new(),
            timeout: HOST_GET_TIMEOUT,
            script: None,
        };
        let ports = ports_for(&[get("db"), get("web")], &given, &forwards).unwrap();
        let got: Vec<(u16, &str)> = ports.iter().map(|p| (p.port, p.nic.as_str())).collect();
        assert_eq!(got, [(4003, "04:00.0"), (4001, "02:00.0")]);
        let why = ports_for(&[get("batch")], &given, &forwards).unwrap_err();
        assert!(
            why.starts_with("slice batch has no host NIC to fetch from"),
            "{why}"
        );
        assert!(ports_for(&[get("nobody")], &given, &forwards).is_err());
    }

    #[test]
    fn the_native_probe_is_checked_too() {
        let s = Scenario::new("x")
            .boot(BootPath::Native)
            .cmdline("heartbeat=100 attack=hvc-unknown");
        assert_eq!(
            attacks_of(&s.attack_expectations()),
            [(NATIVE_SLICE.to_string(), vec!["hvc-unknown".to_string()])]
        );
        let quiet = Scenario::new("x").boot(BootPath::Native);
        assert!(quiet.attack_expectations().is_empty());
    }
}
