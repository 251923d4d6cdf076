//! Probe options from the kernel command line (`/chosen/bootargs`):
//! space-separated `key=value` words; unknown words are ignored, so a
//! Linux-style command line can be shared with other guests.
//!
//! | key | value | default |
//! |---|---|---|
//! | `heartbeat` | milliseconds between `HEARTBEAT` lines, 0 = none | 1000 |
//! | `attack` | comma-separated attack names or groups ([`GROUPS`]), run in order (repeatable; at most [`MAX_ATTACKS`]) | none |
//! | `target` | hex IPA for `read-addr`, `write-addr`, `mmio` | per attack |
//! | `reset-after` | PSCI SYSTEM_RESET after heartbeat n | never |
//! | `flood` | `1`: instead of heartbeats, print `FLOOD <n>` lines without pause, forever | 0 |
//! | `off-after` | PSCI SYSTEM_OFF after heartbeat n | never |
//! | `reset-timer-pending` | `1`: `reset-after`'s SYSTEM_RESET is made with the virtual timer's interrupt fired and injected but not taken (IRQs masked) | 0 |
//! | `nvme` | `0` skips the NVMe driver entirely | 1 |
//! | `net` | `0` skips the virtio-net driver entirely | 1 |
//! | `net-ip` | dotted IPv4 the NIC claims in its ARP requests | 10.0.2.15 |
//! | `net-peer` | dotted IPv4 whose ARP reply proves the NIC works | 10.0.2.2 (slirp) |
//! | `nvme-test` | `0` skips the NVMe data test | 1 |
//! | `nvme-fill` | MiB of the namespace to write the slice pattern over | none |
//! | `nvme-verify` | MiB of the namespace to verify against the pattern | none |
//! | `nvme-check` | `1`: re-read the NVMe canary at every heartbeat | 0 |
//! | `bench` | comma-separated benchmarks (`boot`, `null-hvc`, `mmio-read`, `timer-irq`, `workload`); skips the memory test | none |
//! | `secret` | `plant`, `check` or `plant,check`: the tenant hand-over pattern (`secret`) | none |
//! | `workload-mib` | MiB the `workload` benchmark covers (rounded down to a power of two of words, capped by free RAM) | 64 |

use core::fmt;

use crate::bench::{Bench, DEFAULT_WORKLOAD_MIB, MAX_BENCHES};
use crate::secret::SecretMode;
use crate::sweep::{ABORTS, CALLS, EL0, GIC_MMIO, PCI_SWEEP, SYSREGS};
use crate::text::Text;

/// Most attacks one command line can ask for (groups count with their members).
pub const MAX_ATTACKS: usize = 256;
/// Most command-line problems kept for reporting.
pub const MAX_PROBLEMS: usize = 8;
/// Heartbeat period when the command line does not set one.
pub const DEFAULT_HEARTBEAT_MS: u64 = 1000;

/// One isolation attack the probe can run (see `attacks` in the binary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// 8-byte read of the first IPA after RAM.
    ReadPastRam,
    /// 8-byte write to the first IPA after RAM.
    WritePastRam,
    /// 8-byte read at `target`.
    ReadAddr,
    /// 8-byte write at `target`.
    WriteAddr,
    /// 4-byte read of MMIO the slice does not own (`target`, default PL031).
    Mmio,
    /// PSCI CPU_ON and AFFINITY_INFO for affinities outside the slice.
    CpuOnOutside,
    /// HVC with an unassigned function id.
    HvcUnknown,
    /// `smc #0` PSCI SYSTEM_OFF aimed at firmware.
    SmcSystemOff,
    /// Read of an IMPLEMENTATION DEFINED system register.
    UndefSysreg,
    /// ICC_SGI1R_EL1 writes aimed at PEs outside the slice.
    SgiOutside,
    /// An SGI to another vCPU of the slice (functional check).
    SgiSelfTest,
    /// Enabling, pending, prioritizing SPIs the slice does not own, and
    /// routing its own SPI outside.
    SpiForeign,
    /// GICR_TYPER of the redistributor frame after the slice's last one.
    GicrForeign,
    /// GICR_TYPER of the slice's own frames (functional check).
    GicrOwn,
    /// NVMe reads and writes whose PRPs point outside the slice's RAM.
    NvmePrpOutside,
    /// A PRP list rewritten right after the doorbell.
    NvmePrpToctou,
    /// A PRP list flipped by another vCPU while the doorbell is rung.
    NvmePrpFlip,
    /// NVMe reads and writes past the namespace's end.
    NvmeLbaOutside,
    /// NVMe I/O to namespaces the slice does not own.
    NvmeNsid,
    /// Every admin opcode the microvisor refuses.
    NvmeAdminRefused,
    /// SGL data pointers, fused commands and a metadata pointer.
    NvmeSglFused,
    /// Bogus doorbell values and doorbells of queues not created.
    NvmeDoorbell,
    /// I/O queues created outside RAM, non-contiguous, with bad IDs/sizes.
    NvmeQueueOutside,
    /// Controller reset with commands in flight.
    NvmeResetInflight,
    /// Writes into its own I/O CQ (read-only under direct queues).
    NvmeCqWrite,
    /// virtio-net descriptors whose buffers lie outside the slice's RAM.
    NetDescOutside,
    /// The NIC's MSI-X entries aimed at other doorbells.
    NetMsixForeign,
    /// Writes to the NIC's Pending Bit Array.
    NetPbaWrite,
    /// The NIC's BAR moved over the slice's RAM and over another function's BAR.
    NetBarMove,
    /// Bus mastering cleared while frames are in flight.
    NetBusMaster,
    /// The NIC's extended configuration space read and written.
    NetHiddenCaps,
    /// The TX vector masked while a frame is sent: its Pending Bit set, the interrupt held
    /// until the unmask.
    NetMsixPending,
    /// A long transmit/receive loop, then PSCI SYSTEM_RESET mid-transfer.
    NetResetDma,
    /// Bogus commands on the slice's ITS: unknown and GICv4 command numbers, out-of-range
    /// LPIs, events, collections and redistributors.
    ItsBogusCommands,
    /// ITS and LPI tables (command queue, device table, ITTs, PROPBASER/PENDBASER) outside
    /// the slice's RAM.
    ItsTablesOutside,
    /// MAPD/MAPTI/INT of DeviceIDs the slice does not own.
    ItsForeignDevice,
    /// GITS_CWRITER past the queue, a full lap behind GITS_CREADR, misaligned; CREADR written.
    ItsQueueWrap,
    /// Thousands of re-MAPDs of its own function, with the largest ITT sizes.
    ItsMapdStorm,
    /// The ITS turned off (GITS_CTLR.Enabled = 0) with the NIC's events mapped: nothing may
    /// be delivered until it is on again.
    ItsDisabled,
    /// Another vCPU's LPIs enabled from the boot CPU (its redistributor's tables and
    /// EnableLPIs written remotely), the NIC's TX event moved to that vCPU's collection.
    ItsRemoteLpis,
    /// Another vCPU turned off (PSCI CPU_OFF), then its LPIs enabled from the boot CPU with
    /// a property table of disabled LPIs: what must not outlive the run (`its-remote-lpis`
    /// in the next run judges it).
    ItsRemoteOff,
    /// A control-interface request (docs/control.md) from a slice that is not the manager:
    /// a request header written to the data window, then a read of `EXECUTE`.
    ControlCall,
    /// The EL1 physical timer is the slice's own: CVAL reads back, the timer fires (ISTATUS).
    CntpOwn,
    /// Another vCPU rewrites the trapping instruction (IMPLEMENTATION DEFINED MRS/MSR) while
    /// this one executes it.
    RaceInsnFlip,
    /// Another vCPU flips the trapping instruction between a load past RAM and an
    /// IMPLEMENTATION DEFINED MRS while this one executes it.
    RaceInsnKind,
    /// Two vCPUs take external aborts past RAM at the same time.
    RaceAborts,
    /// Two vCPUs write the distributor's registers of SPIs the slice does not own at once.
    RaceGicd,
    /// One vCPU broadcasts SGIs while the other traps on system registers.
    RaceSgiStorm,
    /// One vCPU writes the NVMe doorbells of queues that do not exist while the other reads
    /// and checks data on its I/O queue 1.
    RaceNvmeDoorbell,
    /// A system register access of the sweep (`crate::sweep::SYSREGS[case]`).
    Sysreg {
        /// Index in `SYSREGS`.
        case: u8,
        /// MSR (else MRS).
        write: bool,
    },
    /// An access that must take an external abort (`crate::sweep::ABORTS[i]`).
    Abort(u8),
    /// An SMCCC call that must be refused (`crate::sweep::CALLS[i]`).
    Call(u8),
    /// An access or instruction from EL0 (`crate::sweep::EL0[i]`).
    El0(u8),
    /// A GIC register the slice must not be able to use (`crate::sweep::GIC_MMIO[i]`).
    GicMmio(u8),
    /// A configuration access to a PCI function the slice does not own
    /// (`crate::sweep::PCI_SWEEP[i]`).
    Pci(u8),
    /// Both EL1 timers, virtual and physical, deliver their interrupt (functional check).
    Timers,
}

/// Names on the command line that stand for several attacks.
pub const GROUPS: [(&str, &str); 8] = [
    (
        "sysregs",
        "every system register attack (sysreg-*), read and write",
    ),
    ("aborts", "every external-abort attack (abort-*)"),
    ("calls", "every swept SMCCC call (call-*)"),
    ("races", "the timing attacks (race-*) and cntp-own"),
    ("el0", "every attack from EL0 (el0-*)"),
    (
        "gic-mmio",
        "reserved and forbidden GIC registers (gicd-*, gicr-*)",
    ),
    ("sweeps", "sysregs, aborts, calls, el0, gic-mmio and races"),
    (
        "pci",
        "PCI functions the slice does not own (pci-*; needs a PCI host bridge)",
    ),
];

impl Attack {
    /// Every attack, in documentation order.
    pub const ALL: [Attack; 50] = [
        Attack::ReadPastRam,
        Attack::WritePastRam,
        Attack::ReadAddr,
        Attack::WriteAddr,
        Attack::Mmio,
        Attack::CpuOnOutside,
        Attack::HvcUnknown,
        Attack::SmcSystemOff,
        Attack::UndefSysreg,
        Attack::SgiOutside,
        Attack::SgiSelfTest,
        Attack::SpiForeign,
        Attack::GicrForeign,
        Attack::GicrOwn,
        Attack::NvmePrpOutside,
        Attack::NvmePrpToctou,
        Attack::NvmePrpFlip,
        Attack::NvmeLbaOutside,
        Attack::NvmeNsid,
        Attack::NvmeAdminRefused,
        Attack::NvmeSglFused,
        Attack::NvmeDoorbell,
        Attack::NvmeQueueOutside,
        Attack::NvmeResetInflight,
        Attack::NvmeCqWrite,
        Attack::NetDescOutside,
        Attack::NetMsixForeign,
        Attack::NetPbaWrite,
        Attack::NetBarMove,
        Attack::NetBusMaster,
        Attack::NetHiddenCaps,
        Attack::NetMsixPending,
        Attack::NetResetDma,
        Attack::ItsBogusCommands,
        Attack::ItsTablesOutside,
        Attack::ItsForeignDevice,
        Attack::ItsQueueWrap,
        Attack::ItsMapdStorm,
        Attack::ItsDisabled,
        Attack::ItsRemoteLpis,
        Attack::ItsRemoteOff,
        Attack::ControlCall,
        Attack::CntpOwn,
        Attack::RaceInsnFlip,
        Attack::RaceInsnKind,
        Attack::RaceAborts,
        Attack::RaceGicd,
        Attack::RaceSgiStorm,
        Attack::RaceNvmeDoorbell,
        Attack::Timers,
    ];

    /// Every attack: the named ones, then the sweeps' ([`crate::sweep`]).
    pub fn every() -> impl Iterator<Item = Attack> {
        Attack::ALL
            .into_iter()
            .chain(Attack::sysregs())
            .chain((0..ABORTS.len()).map(|i| Attack::Abort(i as u8)))
            .chain((0..CALLS.len()).map(|i| Attack::Call(i as u8)))
            .chain((0..EL0.len()).map(|i| Attack::El0(i as u8)))
            .chain((0..GIC_MMIO.len()).map(|i| Attack::GicMmio(i as u8)))
            .chain((0..PCI_SWEEP.len()).map(|i| Attack::Pci(i as u8)))
    }

    fn sysregs() -> impl Iterator<Item = Attack> {
        (0..SYSREGS.len()).flat_map(|i| {
            [false, true].map(|write| Attack::Sysreg {
                case: i as u8,
                write,
            })
        })
    }

    /// The attacks a group name stands for (see [`GROUPS`]).
    pub fn group(name: &[u8]) -> Option<impl Iterator<Item = Attack>> {
        let races = || {
            [
                Attack::CntpOwn,
                Attack::RaceInsnFlip,
                Attack::RaceInsnKind,
                Attack::RaceAborts,
                Attack::RaceGicd,
                Attack::RaceSgiStorm,
            ]
            .into_iter()
        };
        let (sysregs, aborts, calls, el0, gic, race, pci) = match name {
            b"sysregs" => (true, false, false, false, false, false, false),
            b"aborts" => (false, true, false, false, false, false, false),
            b"calls" => (false, false, true, false, false, false, false),
            b"el0" => (false, false, false, true, false, false, false),
            b"gic-mmio" => (false, false, false, false, true, false, false),
            b"races" => (false, false, false, false, false, true, false),
            b"sweeps" => (true, true, true, true, true, true, false),
            b"pci" => (false, false, false, false, false, false, true),
            _ => return None,
        };
        Some(
            Attack::every()
                .filter(move |a| match a {
                    Attack::Sysreg { .. } => sysregs,
                    Attack::Abort(_) => aborts,
                    Attack::Call(_) => calls,
                    Attack::El0(_) => el0,
                    Attack::GicMmio(_) => gic,
                    Attack::Pci(_) => pci,
                    _ => false,
                })
                .chain(races().filter(move |_| race)),
        )
    }

    /// Whether the attack is a functional check of the slice's own hardware rather than an
    /// attack (its `contained` means the check passed); not counted in `ATTACKS`.
    pub fn is_check(self) -> bool {
        matches!(self, Attack::SgiSelfTest | Attack::GicrOwn | Attack::Timers)
    }

    /// The command-line and console name.
    pub fn name(self) -> &'static str {
        match self {
            Attack::ReadPastRam => "read-past-ram",
            Attack::WritePastRam => "write-past-ram",
            Attack::ReadAddr => "read-addr",
            Attack::WriteAddr => "write-addr",
            Attack::Mmio => "mmio",
            Attack::CpuOnOutside => "cpu-on-outside",
            Attack::HvcUnknown => "hvc-unknown",
            Attack::SmcSystemOff => "smc-system-off",
            Attack::UndefSysreg => "undef-sysreg",
            Attack::SgiOutside => "sgi-outside",
            Attack::SgiSelfTest => "sgi-self-test",
            Attack::SpiForeign => "spi-foreign",
            Attack::GicrForeign => "gicr-foreign",
            Attack::GicrOwn => "gicr-own",
            Attack::NvmePrpOutside => "nvme-prp-outside",
            Attack::NvmePrpToctou => "nvme-prp-toctou",
            Attack::NvmePrpFlip => "nvme-prp-flip",
            Attack::NvmeLbaOutside => "nvme-lba-outside",
            Attack::NvmeNsid => "nvme-nsid",
            Attack::NvmeAdminRefused => "nvme-admin-refused",
            Attack::NvmeSglFused => "nvme-sgl-fused",
            Attack::NvmeDoorbell => "nvme-doorbell",
            Attack::NvmeQueueOutside => "nvme-queue-outside",
            Attack::NvmeResetInflight => "nvme-reset-inflight",
            Attack::NvmeCqWrite => "nvme-cq-write",
            Attack::NetDescOutside => "net-desc-outside",
            Attack::NetMsixForeign => "net-msix-foreign",
            Attack::NetPbaWrite => "net-pba-write",
            Attack::NetBarMove => "net-bar-move",
            Attack::NetBusMaster => "net-bus-master",
            Attack::NetHiddenCaps => "net-hidden-caps",
            Attack::NetMsixPending => "net-msix-pending",
            Attack::NetResetDma => "net-reset-dma",
            Attack::ItsBogusCommands => "its-bogus-commands",
            Attack::ItsTablesOutside => "its-tables-outside",
            Attack::ItsForeignDevice => "its-foreign-device",
            Attack::ItsQueueWrap => "its-queue-wrap",
            Attack::ItsMapdStorm => "its-mapd-storm",
            Attack::ItsDisabled => "its-disabled",
            Attack::ItsRemoteLpis => "its-remote-lpis",
            Attack::ItsRemoteOff => "its-remote-off",
            Attack::ControlCall => "control-call",
            Attack::CntpOwn => "cntp-own",
            Attack::RaceInsnFlip => "race-insn-flip",
            Attack::RaceInsnKind => "race-insn-kind",
            Attack::RaceAborts => "race-aborts",
            Attack::RaceGicd => "race-gicd",
            Attack::RaceSgiStorm => "race-sgi-storm",
            Attack::RaceNvmeDoorbell => "race-nvme-doorbell",
            Attack::Sysreg { case, write } => SYSREGS
                .get(usize::from(case))
                .map_or("sysreg-?", |c| c.name(write)),
            Attack::Abort(i) => ABORTS.get(usize::from(i)).map_or("abort-?", |c| c.name),
            Attack::Call(i) => CALLS.get(usize::from(i)).map_or("call-?", |c| c.name),
            Attack::El0(i) => EL0.get(usize::from(i)).map_or("el0-?", |c| c.name),
            Attack::GicMmio(i) => GIC_MMIO.get(usize::from(i)).map_or("gic-?", |c| c.name),
            Attack::Pci(i) => PCI_SWEEP.get(usize::from(i)).map_or("pci-?", |c| c.name),
            Attack::Timers => "timers",
        }
    }

    /// Whether the attack needs the NVMe controller.
    pub fn is_nvme(self) -> bool {
        self.name().starts_with("nvme-")
    }

    /// Whether the attack needs the virtio-net function.
    pub fn is_net(self) -> bool {
        self.name().starts_with("net-")
    }

    /// The attack with this name.
    pub fn from_name(name: &[u8]) -> Option<Attack> {
        Attack::every().find(|a| a.name().as_bytes() == name)
    }
}

/// Something on the command line the probe could not use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A numeric option whose value is not a number.
    BadNumber {
        /// The option.
        key: &'static str,
        /// Its value as given (truncated).
        value: Text<32>,
    },
    /// An `attack=` name the probe does not know.
    UnknownAttack(Text<32>),
    /// More than [`MAX_ATTACKS`] attacks; the rest are dropped.
    TooManyAttacks,
    /// A `bench=` name the probe does not know.
    UnknownBench(Text<32>),
    /// A `secret=` word other than `plant` and `check`.
    UnknownSecret(Text<32>),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::BadNumber { key, value } => {
                write!(
                    f,
                    "bad-number {key}={}",
                    crate::json::Escaped(value.as_bytes())
                )
            }
            Problem::UnknownAttack(name) => {
                write!(
                    f,
                    "unknown-attack {}",
                    crate::json::Escaped(name.as_bytes())
                )
            }
            Problem::TooManyAttacks => write!(f, "too-many-attacks max={MAX_ATTACKS}"),
            Problem::UnknownBench(name) => {
                write!(f, "unknown-bench {}", crate::json::Escaped(name.as_bytes()))
            }
            Problem::UnknownSecret(name) => {
                write!(
                    f,
                    "unknown-secret {}",
                    crate::json::Escaped(name.as_bytes())
                )
            }
        }
    }
}

/// The probe's options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Milliseconds between heartbeats; 0 disables them.
    pub heartbeat_ms: u64,
    attacks: [Attack; MAX_ATTACKS],
    attack_count: usize,
    /// `target=` address for the address and MMIO attacks.
    pub target: Option<u64>,
    /// SYSTEM_RESET after this heartbeat.
    pub reset_after: Option<u64>,
    /// `flood=1`: print `FLOOD <n>` lines without pause instead of heartbeats.
    pub flood: bool,
    /// SYSTEM_OFF after this heartbeat.
    pub off_after: Option<u64>,
    /// CPU_OFF of the heartbeat's CPU after this heartbeat (with one vCPU: every vCPU off).
    pub cpu_off_after: Option<u64>,
    /// `reset-timer-pending=1`: leave a virtual timer interrupt in flight at the reset.
    pub reset_timer_pending: bool,
    /// Whether to look for an NVMe controller at all (`nvme=0`: no).
    pub nvme: bool,
    /// Whether to look for a virtio-net function at all (`net=0`: no).
    pub net: bool,
    /// `net-ip=a.b.c.d`: the address the NIC claims in its ARP requests.
    pub net_ip: [u8; 4],
    /// `net-peer=a.b.c.d`: the address whose ARP reply proves the NIC works.
    pub net_peer: [u8; 4],
    /// Whether to run the NVMe data test (`nvme-test=0`: no).
    pub nvme_test: bool,
    /// `nvme-fill=<MiB>`: write the slice pattern over the first MiB.
    pub nvme_fill_mib: Option<u64>,
    /// `nvme-verify=<MiB>`: verify the slice pattern over the first MiB.
    pub nvme_verify_mib: Option<u64>,
    /// `nvme-check=1`: re-read the NVMe canary at every heartbeat.
    pub nvme_check: bool,
    benches: [Bench; MAX_BENCHES],
    bench_count: usize,
    /// `workload-mib=`: size of the workload benchmark.
    pub workload_mib: u64,
    /// `secret=plant|check|plant,check`: the tenant hand-over pattern (`crate::secret`).
    pub secret: SecretMode,
    problems: [Option<Problem>; MAX_PROBLEMS],
    problem_count: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            attacks: [Attack::ReadPastRam; MAX_ATTACKS],
            attack_count: 0,
            target: None,
            reset_after: None,
            flood: false,
            off_after: None,
            cpu_off_after: None,
            reset_timer_pending: false,
            nvme: true,
            net: true,
            net_ip: crate::virtio::PROBE_IP.0,
            net_peer: crate::virtio::SLIRP_GATEWAY.0,
            nvme_test: true,
            nvme_fill_mib: None,
            nvme_verify_mib: None,
            nvme_check: false,
            benches: [Bench::Boot; MAX_BENCHES],
            bench_count: 0,
            workload_mib: DEFAULT_WORKLOAD_MIB,
            secret: SecretMode::default(),
            problems: [None; MAX_PROBLEMS],
            problem_count: 0,
        }
    }
}

impl Options {
    /// Options from a command line; later words override earlier ones,
    /// except `attack=` lists, which accumulate.
    pub fn parse(cmdline: &[u8]) -> Options {
        let mut options = Options::default();
        for word in cmdline
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
        {
            let Some(eq) = word.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (key, value) = (&word[..eq], &word[eq + 1..]);
            match key {
                b"heartbeat" => {
                    if let Some(ms) = options.number("heartbeat", value, parse_decimal) {
                        options.heartbeat_ms = ms;
                    }
                }
                b"reset-after" => {
                    options.reset_after = options.number("reset-after", value, parse_decimal);
                }
                b"flood" => {
                    if let Some(n) = options.number("flood", value, parse_decimal) {
                        options.flood = n != 0;
                    }
                }
                b"off-after" => {
                    options.off_after = options.number("off-after", value, parse_decimal);
                }
                b"cpu-off-after" => {
                    options.cpu_off_after = options.number("cpu-off-after", value, parse_decimal);
                }
                b"reset-timer-pending" => {
                    if let Some(n) = options.number("reset-timer-pending", value, parse_decimal) {
                        options.reset_timer_pending = n != 0;
                    }
                }
                b"target" => options.target = options.number("target", value, parse_hex),
                b"nvme" => {
                    if let Some(n) = options.number("nvme", value, parse_decimal) {
                        options.nvme = n != 0;
                    }
                }
                b"net" => {
                    if let Some(n) = options.number("net", value, parse_decimal) {
                        options.net = n != 0;
                    }
                }
                b"net-ip" => {
                    if let Some(ip) = options.address("net-ip", value) {
                        options.net_ip = ip;
                    }
                }
                b"net-peer" => {
                    if let Some(ip) = options.address("net-peer", value) {
                        options.net_peer = ip;
                    }
                }
                b"nvme-test" => {
                    if let Some(n) = options.number("nvme-test", value, parse_decimal) {
                        options.nvme_test = n != 0;
                    }
                }
                b"nvme-check" => {
                    if let Some(n) = options.number("nvme-check", value, parse_decimal) {
                        options.nvme_check = n != 0;
                    }
                }
                b"nvme-fill" => {
                    options.nvme_fill_mib = options.number("nvme-fill", value, parse_decimal);
                }
                b"nvme-verify" => {
                    options.nvme_verify_mib = options.number("nvme-verify", value, parse_decimal);
                }
                b"workload-mib" => {
                    if let Some(n) = options.number("workload-mib", value, parse_decimal) {
                        options.workload_mib = n;
                    }
                }
                b"secret" => {
                    let (mode, unknown) = SecretMode::parse(value);
                    options.secret = mode;
                    if let Some(word) = unknown {
                        options.problem(Problem::UnknownSecret(Text::from_bytes(word)));
                    }
                }
                b"bench" => {
                    for name in value.split(|&b| b == b',').filter(|n| !n.is_empty()) {
                        match Bench::from_name(name) {
                            Some(bench) => options.push_bench(bench),
                            None => options.problem(Problem::UnknownBench(Text::from_bytes(name))),
                        }
                    }
                }
                b"attack" => {
                    for name in value.split(|&b| b == b',').filter(|n| !n.is_empty()) {
                        if let Some(group) = Attack::group(name) {
                            group.for_each(|attack| options.push_attack(attack));
                            continue;
                        }
                        match Attack::from_name(name) {
                            Some(attack) => options.push_attack(attack),
                            None => options.problem(Problem::UnknownAttack(Text::from_bytes(name))),
                        }
                    }
                }
                _ => {}
            }
        }
        options
    }

    /// The attacks to run, in order.
    pub fn attacks(&self) -> &[Attack] {
        &self.attacks[..self.attack_count]
    }

    /// The benchmarks to run, in command-line order (duplicates dropped).
    pub fn benches(&self) -> &[Bench] {
        &self.benches[..self.bench_count]
    }

    /// What could not be used, in command-line order.
    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.problems[..self.problem_count].iter().flatten()
    }

    fn number(
        &mut self,
        key: &'static str,
        value: &[u8],
        parse: fn(&[u8]) -> Option<u64>,
    ) -> Option<u64> {
        let n = parse(value);
        if n.is_none() {
            self.problem(Problem::BadNumber {
                key,
                value: Text::from_bytes(value),
            });
        }
        n
    }

    /// A dotted-quad IPv4 address; a malformed one is a `bad-number` problem.
    fn address(&mut self, key: &'static str, value: &[u8]) -> Option<[u8; 4]> {
        let ip = parse_ipv4(value);
        if ip.is_none() {
            self.problem(Problem::BadNumber {
                key,
                value: Text::from_bytes(value),
            });
        }
        ip
    }

    fn push_bench(&mut self, bench: Bench) {
        if !self.benches().contains(&bench) && self.bench_count < MAX_BENCHES {
            self.benches[self.bench_count] = bench;
            self.bench_count += 1;
        }
    }

    fn push_attack(&mut self, attack: Attack) {
        if self.attack_count < MAX_ATTACKS {
            self.attacks[self.attack_count] = attack;
            self.attack_count += 1;
        } else if !self.problems().any(|p| *p == Problem::TooManyAttacks) {
            self.problem(Problem::TooManyAttacks);
        }
    }

    fn problem(&mut self, problem: Problem) {
        if self.problem_count < MAX_PROBLEMS {
            self.problems[self.problem_count] = Some(problem);
            self.problem_count += 1;
        }
    }
}

/// `a.b.c.d`, each part a decimal 0..=255.
fn parse_ipv4(value: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = value.split(|&b| b == b'.');
    for byte in &mut out {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        *byte = u8::try_from(part.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'))).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A decimal number (`_` separators allowed).
pub fn parse_decimal(s: &[u8]) -> Option<u64> {
    parse_radix(s, 10)
}

/// A hexadecimal number with or without `0x` (`_` separators allowed).
pub fn parse_hex(s: &[u8]) -> Option<u64> {
    let digits = s
        .strip_prefix(b"0x")
        .or_else(|| s.strip_prefix(b"0X"))
        .unwrap_or(s);
    parse_radix(digits, 16)
}

fn parse_radix(s: &[u8], radix: u32) -> Option<u64> {
    let mut value: u64 = 0;
    let mut digits = 0;
    for &b in s {
        if b == b'_' {
            continue;
        }
        let d = (b as char).to_digit(radix)?;
        value = value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(d))?;
        digits += 1;
    }
    (digits > 0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_command_line_gives_defaults() {
        let o = Options::parse(b"");
        assert_eq!(o.heartbeat_ms, 1000);
        assert!(o.attacks().is_empty());
        assert_eq!((o.target, o.reset_after, o.off_after), (None, None, None));
        assert_eq!(o.problems().count(), 0);
    }

    #[test]
    fn all_options_are_read_and_foreign_words_ignored() {
        let o = Options::parse(
            b"console=ttyAMA0 heartbeat=250 attack=mmio,read-addr target=0x0901_0000 \
              reset-after=3 off-after=7 reset-timer-pending=1 flood=1 quiet cpu-off-after=2",
        );
        assert!(o.reset_timer_pending);
        assert!(o.flood);
        assert_eq!(o.heartbeat_ms, 250);
        assert_eq!(o.attacks(), &[Attack::Mmio, Attack::ReadAddr]);
        assert_eq!(o.target, Some(0x0901_0000));
        assert_eq!(o.reset_after, Some(3));
        assert_eq!(o.off_after, Some(7));
        assert_eq!(o.cpu_off_after, Some(2));
        assert_eq!(o.problems().count(), 0);
    }

    #[test]
    fn heartbeat_zero_disables() {
        assert_eq!(Options::parse(b"heartbeat=0").heartbeat_ms, 0);
    }

    #[test]
    fn later_words_override_and_attacks_accumulate() {
        let o = Options::parse(b"heartbeat=5 attack=hvc-unknown heartbeat=6 attack=undef-sysreg");
        assert_eq!(o.heartbeat_ms, 6);
        assert_eq!(o.attacks(), &[Attack::HvcUnknown, Attack::UndefSysreg]);
    }

    #[test]
    fn every_attack_name_round_trips() {
        for a in Attack::every() {
            assert_eq!(Attack::from_name(a.name().as_bytes()), Some(a));
        }
        assert!(Attack::every().count() >= 100 + 33);
    }

    #[test]
    fn groups_expand_in_place() {
        let o = Options::parse(b"attack=mmio,sysregs,hvc-unknown");
        let names: Vec<_> = o.attacks().iter().map(|a| a.name()).collect();
        assert_eq!(names.len(), 2 + 2 * crate::sweep::SYSREGS.len());
        assert_eq!(names[0], "mmio");
        assert_eq!(names[1], "sysreg-impdef-s3-0-c15-c0-0-read");
        assert_eq!(names[2], "sysreg-impdef-s3-0-c15-c0-0-write");
        assert_eq!(names[names.len() - 1], "hvc-unknown");
        let all = Options::parse(b"attack=sweeps");
        assert_eq!(all.problems().count(), 0);
        let count = all.attacks().len();
        assert!((100..=MAX_ATTACKS).contains(&count), "{count}");
        assert_eq!(all.attacks()[count - 1], Attack::RaceSgiStorm);
        let each: usize = ["sysregs", "aborts", "calls", "el0", "gic-mmio", "races"]
            .iter()
            .map(|g| Attack::group(g.as_bytes()).unwrap().count())
            .sum();
        assert_eq!(each, count);
        assert!(Attack::group(b"mmio").is_none());
        assert!(
            GROUPS
                .iter()
                .all(|(g, _)| Attack::group(g.as_bytes()).is_some())
        );
        assert!(Attack::GicrOwn.is_check() && !Attack::Mmio.is_check());
    }

    #[test]
    fn interrupt_attacks_are_named() {
        let o = Options::parse(
            b"attack=sgi-outside,sgi-self-test,spi-foreign attack=gicr-foreign,gicr-own",
        );
        assert_eq!(
            o.attacks(),
            &[
                Attack::SgiOutside,
                Attack::SgiSelfTest,
                Attack::SpiForeign,
                Attack::GicrForeign,
                Attack::GicrOwn
            ]
        );
        assert_eq!(o.problems().count(), 0);
    }

    #[test]
    fn net_options() {
        let o = Options::parse(b"");
        assert!(o.net);
        assert_eq!((o.net_ip, o.net_peer), ([10, 0, 2, 15], [10, 0, 2, 2]));
        let o = Options::parse(b"net=0 net-ip=192.168.7.21 net-peer=192.168.7.1");
        assert!(!o.net);
        assert_eq!(
            (o.net_ip, o.net_peer),
            ([192, 168, 7, 21], [192, 168, 7, 1])
        );
        let o = Options::parse(b"net-ip=10.0.2 net-peer=1.2.3.256 net-ip=1..2.3");
        assert_eq!((o.net_ip, o.net_peer), ([10, 0, 2, 15], [10, 0, 2, 2]));
        assert_eq!(o.problems().count(), 3);
        assert_eq!(parse_ipv4(b"1.2.3.4.5"), None);
        assert_eq!(parse_ipv4(b"0.0.0.0"), Some([0; 4]));
        assert!(Attack::NetBarMove.is_net() && !Attack::NvmeNsid.is_net());
        assert_eq!(
            Attack::from_name(b"net-reset-dma"),
            Some(Attack::NetResetDma)
        );
    }

    #[test]
    fn nvme_options() {
        let o = Options::parse(b"");
        assert!(o.nvme && o.nvme_test && !o.nvme_check);
        assert_eq!((o.nvme_fill_mib, o.nvme_verify_mib), (None, None));
        let o = Options::parse(
            b"nvme-test=0 nvme-fill=16 nvme-verify=8 nvme-check=1 \
              attack=nvme-prp-outside,nvme-prp-toctou,nvme-lba-outside,nvme-nsid \
              attack=nvme-admin-refused,nvme-sgl-fused,nvme-doorbell,nvme-queue-outside \
              attack=nvme-reset-inflight,nvme-prp-flip,mmio",
        );
        assert!(o.nvme && !o.nvme_test && o.nvme_check);
        assert_eq!((o.nvme_fill_mib, o.nvme_verify_mib), (Some(16), Some(8)));
        assert_eq!(o.attacks().len(), 11);
        assert!(o.attacks()[..10].iter().all(|a| a.is_nvme()));
        assert!(!Attack::Mmio.is_nvme());
        assert_eq!(o.problems().count(), 0);
        assert!(!Options::parse(b"nvme=0").nvme);
        assert_eq!(Options::parse(b"nvme-fill=lots").problems().count(), 1);
    }

    #[test]
    fn target_accepts_bare_hex() {
        assert_eq!(Options::parse(b"target=4fff0000").target, Some(0x4fff_0000));
    }

    #[test]
    fn bad_number_is_a_problem_and_keeps_default() {
        let o = Options::parse(b"heartbeat=fast");
        assert_eq!(o.heartbeat_ms, 1000);
        let p: Vec<_> = o.problems().collect();
        assert_eq!(
            p,
            [&Problem::BadNumber {
                key: "heartbeat",
                value: Text::from_bytes(b"fast")
            }]
        );
        assert_eq!(format!("{}", p[0]), "bad-number heartbeat=\"fast\"");
    }

    #[test]
    fn overflowing_number_is_a_problem() {
        let o = Options::parse(b"target=0x1_0000_0000_0000_0000");
        assert_eq!(o.target, None);
        assert_eq!(o.problems().count(), 1);
    }

    #[test]
    fn unknown_attack_is_a_problem_and_others_still_run() {
        let o = Options::parse(b"attack=mmio,rowhammer,hvc-unknown");
        assert_eq!(o.attacks(), &[Attack::Mmio, Attack::HvcUnknown]);
        let p: Vec<_> = o.problems().collect();
        assert_eq!(p, [&Problem::UnknownAttack(Text::from_bytes(b"rowhammer"))]);
        assert_eq!(format!("{}", p[0]), "unknown-attack \"rowhammer\"");
    }

    #[test]
    fn too_many_attacks_is_reported_once() {
        let line = "attack=".to_string() + &["mmio"; MAX_ATTACKS + 3].join(",");
        let o = Options::parse(line.as_bytes());
        assert_eq!(o.attacks().len(), MAX_ATTACKS);
        assert_eq!(o.problems().collect::<Vec<_>>(), [&Problem::TooManyAttacks]);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_decimal(b"1_000"), Some(1000));
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"_"), None);
        assert_eq!(parse_hex(b"0XfF"), Some(255));
        assert_eq!(parse_hex(b"0x"), None);
        assert_eq!(parse_hex(b"0xg"), None);
    }

    #[test]
    fn secret_modes() {
        assert!(!Options::parse(b"").secret.any());
        let o = Options::parse(b"secret=plant heartbeat=500");
        assert!(o.secret.plant && !o.secret.check);
        let o = Options::parse(b"secret=plant,check");
        assert!(o.secret.plant && o.secret.check);
        let o = Options::parse(b"secret=check,leak");
        assert!(o.secret.check && !o.secret.plant);
        let p: Vec<_> = o.problems().collect();
        assert_eq!(p, [&Problem::UnknownSecret(Text::from_bytes(b"leak"))]);
        assert_eq!(format!("{}", p[0]), "unknown-secret \"leak\"");
    }

    #[test]
    fn bench_list_and_workload_size() {
        let o = Options::parse(b"bench=null-hvc,workload bench=null-hvc,boot,fast workload-mib=16");
        assert_eq!(
            o.benches(),
            &[
                crate::bench::Bench::NullHvc,
                crate::bench::Bench::Workload,
                crate::bench::Bench::Boot
            ]
        );
        assert_eq!(o.workload_mib, 16);
        assert_eq!(
            o.problems().next(),
            Some(&Problem::UnknownBench(Text::from_bytes(b"fast")))
        );
        assert!(Options::parse(b"").benches().is_empty());
    }
}
