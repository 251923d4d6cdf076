//! Plan errors: every invalid plan names the slice (when there is one), the field, and the
//! problem, in one line, e.g. `slice "web-0": cores: asks for 4 cores but only 3 are left (node has 8 cores)`.

use alloc::string::String;
use core::fmt;

use alloc::vec::Vec;

use crate::devices::{
    ClassCode, DeviceClass, DeviceRequest, FunctionUse, PciAddress, PciAddressError, PciFunction,
    bridge_kind,
};
use crate::image::ImageError;
use crate::size::{HumanSize, SizeError};

/// Keys accepted in a `[[slice]]` table, in documentation order.
pub const SLICE_KEYS: [&str; 14] = [
    "name",
    "cores",
    "memory",
    "kernel",
    "initrd",
    "cmdline",
    "on-fault",
    "role",
    "staging",
    "redfish-certificate",
    "redfish-key",
    "nvme",
    "device",
    "firmware",
];
/// Keys accepted in a `[slice.nvme]` table.
pub const NVME_KEYS: [&str; 3] = ["queues", "size", "direct-queues"];
/// Keys accepted in a `[slice.firmware]` table.
pub const FIRMWARE_KEYS: [&str; 1] = ["env"];
/// Keys accepted in a `[[slice.device]]` table (exactly one of them).
pub const DEVICE_KEYS: [&str; 2] = ["pci", "class"];
/// Keys accepted at the top level of a plan.
pub const PLAN_KEYS: [&str; 1] = ["slice"];

/// Longest user-supplied text quoted in a message (longer text is cut with `...`).
const MAX_QUOTED_CHARS: usize = 40;

/// The plan field an error is about (its TOML spelling is what `Display` prints).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The plan as a whole (`[[slice]]` list, syntax, top-level keys).
    Plan,
    /// The `[[slice]]` table itself (its keys, its type).
    Slice,
    /// `name`.
    Name,
    /// `cores`.
    Cores,
    /// `memory`.
    Memory,
    /// `kernel`.
    Kernel,
    /// `initrd`.
    Initrd,
    /// `cmdline`.
    Cmdline,
    /// `on-fault`.
    OnFault,
    /// `role`.
    Role,
    /// `staging` (the manager's staging pool).
    Staging,
    /// `redfish-certificate` (the manager's Redfish service's TLS certificate chain).
    RedfishCertificate,
    /// `redfish-key` (its private key).
    RedfishKey,
    /// The `[slice.nvme]` table itself (its keys, its type).
    Nvme,
    /// `nvme.queues`.
    NvmeQueues,
    /// `nvme.size`.
    NvmeSize,
    /// `nvme.direct-queues`.
    NvmeDirectQueues,
    /// The `device` key: the slice's `[[slice.device]]` list as a whole.
    Devices,
    /// The slice's `[[slice.device]]` table number N (1-based): its type, its keys.
    DeviceEntry(usize),
    /// `pci` of the slice's `[[slice.device]]` table number N (1-based).
    DeviceEntryPci(usize),
    /// `class` of the slice's `[[slice.device]]` table number N (1-based).
    DeviceEntryClass(usize),
    /// One device request (`device 00:03.0`, `device class net`): where it goes.
    Device(DeviceRequest),
    /// The `[slice.firmware]` table itself (its keys, its type).
    Firmware,
    /// `firmware.env`: the firmware's environment variables.
    FirmwareEnv,
}

impl Field {
    /// The TOML spelling of the field, or `None` for the plan and the slice table.
    pub fn toml_name(self) -> Option<&'static str> {
        match self {
            Field::Plan | Field::Slice => None,
            Field::Name => Some("name"),
            Field::Cores => Some("cores"),
            Field::Memory => Some("memory"),
            Field::Kernel => Some("kernel"),
            Field::Initrd => Some("initrd"),
            Field::Cmdline => Some("cmdline"),
            Field::OnFault => Some("on-fault"),
            Field::Role => Some("role"),
            Field::Staging => Some("staging"),
            Field::RedfishCertificate => Some("redfish-certificate"),
            Field::RedfishKey => Some("redfish-key"),
            Field::Nvme => Some("nvme"),
            Field::NvmeQueues => Some("nvme.queues"),
            Field::NvmeSize => Some("nvme.size"),
            Field::NvmeDirectQueues => Some("nvme.direct-queues"),
            Field::Devices
            | Field::DeviceEntry(_)
            | Field::DeviceEntryPci(_)
            | Field::DeviceEntryClass(_)
            | Field::Device(_) => Some("device"),
            Field::Firmware => Some("firmware"),
            Field::FirmwareEnv => Some("firmware.env"),
        }
    }

    /// The keys allowed in the table this field stands for (used by `UnknownField`).
    fn allowed_keys(self) -> &'static [&'static str] {
        match self {
            Field::Plan => &PLAN_KEYS,
            Field::Nvme => &NVME_KEYS,
            Field::Firmware => &FIRMWARE_KEYS,
            Field::DeviceEntry(_) => &DEVICE_KEYS,
            _ => &SLICE_KEYS,
        }
    }
}

/// Prints how a message names a field: its TOML name (`nvme.size`), or for device fields
/// `device`, `device #2`, `device #2: pci`, `device 00:03.0`, `device class net`; `None` for
/// the plan and the slice table.
struct FieldLabel(Field);

impl FieldLabel {
    fn is_empty(&self) -> bool {
        matches!(self.0, Field::Plan | Field::Slice)
    }
}

impl fmt::Display for FieldLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Field::DeviceEntry(n) => write!(f, "device #{n}"),
            Field::DeviceEntryPci(n) => write!(f, "device #{n}: pci"),
            Field::DeviceEntryClass(n) => write!(f, "device #{n}: class"),
            Field::Device(request) => write!(f, "device {request}"),
            field => f.write_str(field.toml_name().unwrap_or("plan")),
        }
    }
}

/// What is wrong. One variant per kind of invalid input; each has a unit test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The plan has no `[[slice]]`.
    NoSlices,
    /// More slices than the hypervisor supports.
    TooManySlices {
        /// Slices in the plan.
        count: usize,
        /// Largest number accepted.
        max: usize,
    },
    /// The text is not valid TOML.
    Syntax {
        /// 1-based line of the error (0 when the parser gave no position).
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A key that the table (plan, slice or nvme, given by the error's field) does not have.
    UnknownField(String),
    /// A required key is absent.
    MissingField,
    /// The value has the wrong TOML type.
    WrongType {
        /// What the field takes.
        expected: &'static str,
        /// The TOML type found.
        found: &'static str,
    },
    /// An integer outside the range the field accepts.
    OutOfRange {
        /// The value given.
        value: i64,
        /// Smallest accepted.
        min: i64,
        /// Largest accepted.
        max: i64,
    },
    /// A slice name outside `[a-z0-9-]{1,32}`.
    BadName(String),
    /// The slice name is already used by an earlier slice.
    DuplicateName {
        /// 1-based position of the slice that has the name first.
        first: usize,
    },
    /// A core count of 0 or an empty core list.
    ZeroCores,
    /// More cores than one slice can have (its virtual GIC's redistributor window).
    TooManyVcpus {
        /// Cores the slice asks for.
        asked: usize,
        /// Largest number accepted.
        max: usize,
    },
    /// A physical core listed twice, in one slice or in two.
    CoreListedTwice {
        /// The core index.
        core: u32,
        /// The slice that lists it first (name, or `#N`).
        first_slice: String,
    },
    /// `memory` is 0.
    ZeroMemory,
    /// A size that cannot be parsed.
    BadSize {
        /// The text (or negative integer) given.
        text: String,
        /// Why it was rejected.
        reason: SizeError,
    },
    /// A memory or NVMe size that is not a multiple of 4 KiB.
    NotPageMultiple {
        /// The size given, in bytes.
        value: u64,
    },
    /// More memory than a slice's IPA space can hold.
    MemoryTooLarge {
        /// Largest memory size accepted.
        max: u64,
    },
    /// `on-fault` is neither `"stop"` nor `"restart"`.
    UnknownOnFault(String),
    /// `role` is neither `"tenant"` nor `"manager"`.
    UnknownRole(String),
    /// A second slice with `role = "manager"`.
    SecondManager {
        /// The slice that is the manager first (name, or `#N`).
        first_slice: String,
    },
    /// The manager's kernel is not Linux (its tools are Linux programs).
    ManagerNotLinux,
    /// `cmdline` on a slice that boots firmware.
    FirmwareHasNoCmdline,
    /// `initrd` on a slice that boots firmware.
    FirmwareHasNoInitrd,
    /// `[slice.firmware]` on a slice that does not boot firmware.
    NotFirmware,
    /// A firmware environment variable whose name is not 1..=64 of `[A-Za-z0-9_.-]`.
    BadEnvName(String),
    /// A firmware environment variable whose value holds a character that is not printable
    /// ASCII (NUL, newline, ...).
    BadEnvValue(String),
    /// The firmware environment does not fit its page.
    EnvTooLarge {
        /// Bytes it needs (`name=value` and a NUL per variable, a final NUL).
        bytes: usize,
        /// Bytes the page holds for it.
        max: usize,
    },
    /// `staging` on a slice that is not the manager.
    StagingWithoutManager,
    /// `redfish-certificate` or `redfish-key` on a slice that is not the manager.
    RedfishWithoutManager,
    /// One of `redfish-certificate` and `redfish-key` without the other.
    RedfishHalfGiven,
    /// A `staging` size outside what the control interface accepts, or not a 2 MiB multiple.
    BadStaging {
        /// The size given.
        value: u64,
    },
    /// An empty image path.
    EmptyPath,
    /// `initrd` names a built-in kernel (`"linux"`, `"probe"`).
    NotAnInitrd(String),
    /// The command line contains a NUL character (it must fit a device tree string).
    CmdlineHasNul,
    /// The image file does not exist (raised by xtask).
    MissingImage(String),
    /// The kernel image is not a usable arm64 Image.
    BadImage(ImageError),
    /// The kernel (field `kernel`) or the initrd (field `initrd`) does not fit in the slice's RAM.
    ImageTooLarge {
        /// Bytes the image needs.
        needed: u64,
        /// Bytes left for it.
        available: u64,
        /// Smallest slice `memory` that holds kernel, initrd and device tree (2 MiB multiple).
        min_memory: u64,
    },
    /// `nvme.queues` is 0.
    ZeroQueues,
    /// `nvme.queues` is above [`crate::model::MAX_NVME_QUEUES`].
    QueuesAboveLimit { max: u32 },
    /// `nvme.size` is 0.
    ZeroNvmeSize,
    /// An explicit core index that the node does not have.
    NoSuchCore {
        /// The core index asked for.
        core: u32,
        /// Cores on the node (valid indexes are below this).
        cores_on_node: u32,
    },
    /// Fewer free cores are left than the slice asks for.
    TooManyCores {
        /// Cores the slice asks for.
        asked: u32,
        /// Cores still free when this slice is placed.
        left: u32,
        /// Cores on the node.
        cores_on_node: u32,
    },
    /// No free 2 MiB-aligned block of RAM is large enough for the slice.
    NotEnoughMemory {
        /// Bytes asked for.
        asked: u64,
        /// Largest 2 MiB-aligned free block left when this slice is placed.
        largest_free: u64,
        /// RAM on the node.
        ram_on_node: u64,
    },
    /// The node's NVMe namespace has less room left than the slice's `nvme.size`.
    NotEnoughDisk {
        /// Bytes asked for.
        asked: u64,
        /// Bytes still free on the namespace when this slice is placed.
        left: u64,
        /// Capacity of the namespace.
        disk: u64,
    },
    /// The NVMe controller grants fewer I/O queue pairs than the slices ask for in total.
    TooManyQueues {
        /// Queue pairs the slice asks for.
        asked: u32,
        /// Queue pairs still free when this slice is placed.
        left: u32,
        /// Queue pairs the controller grants.
        controller: u32,
    },
    /// The slice asks for NVMe but the node has no usable NVMe controller.
    NoNvme(String),
    /// A `[[slice.device]]` `pci` value that is not a PCI address.
    BadPciAddress {
        /// The text given.
        text: String,
        /// Why it was rejected.
        reason: PciAddressError,
    },
    /// A `[[slice.device]]` `class` that is not one of [`DeviceClass::ALL`].
    UnknownDeviceClass(String),
    /// A `[[slice.device]]` with neither `pci` nor `class`.
    DeviceWithoutPciOrClass,
    /// A `[[slice.device]]` with both `pci` and `class`.
    DeviceWithPciAndClass,
    /// `nvme.direct-queues` on a slice with `[[slice.device]]` functions.
    DirectQueuesWithDevices,
    /// More `[[slice.device]]` tables than one slice can have.
    TooManyDevices {
        /// Tables the slice has.
        asked: usize,
        /// Largest number accepted.
        max: usize,
    },
    /// A PCI address asked for twice, in one slice or in two.
    DeviceListedTwice {
        /// The slice that asks for it first (name, or `#N`).
        first_slice: String,
    },
    /// The node has no SMMUv3: a function's DMA could reach any memory.
    NoSmmu,
    /// A `pci` address the node has no function at.
    NoSuchFunction {
        /// The functions still free for slices when this request is served, by address.
        free: Vec<PciFunction>,
    },
    /// A `pci` address that is a bridge (base class 06): it forwards other functions' traffic.
    Bridge {
        /// Its 24-bit class code.
        class: u32,
    },
    /// A `pci` address that is the NVMe controller the hypervisor divides among slices.
    HypervisorNvme {
        /// The first slice with a `[slice.nvme]` share of it.
        sharer: String,
    },
    /// The function shares an isolation group (functions that may reach each other peer to
    /// peer, bypassing the SMMU) with a function given to someone else.
    SharedIsolationGroup {
        /// The other function of the group.
        other: PciAddress,
        /// Who has it.
        used: FunctionUse,
    },
    /// No function of the class is free when this class request is served.
    NoFreeFunction {
        /// The class asked for.
        class: DeviceClass,
        /// Every function of the class on the node and who has it, by address.
        uses: Vec<(PciAddress, FunctionUse)>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoSlices => f.write_str("no [[slice]] defined"),
            Problem::TooManySlices { count, max } => {
                write!(f, "{count} slices defined, at most {max} are supported")
            }
            Problem::Syntax { line, message } => write!(f, "line {line}: {message}"),
            Problem::UnknownField(key) => write!(f, "unknown field {}", Quoted(key)),
            Problem::MissingField => f.write_str("missing (this field is required)"),
            Problem::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            Problem::OutOfRange { value, min, max } => {
                write!(f, "{value} is out of range (must be {min} to {max})")
            }
            Problem::BadName(name) => write!(
                f,
                "{} is not a valid name (use 1 to 32 characters from a-z, 0-9 and -)",
                Quoted(name)
            ),
            Problem::DuplicateName { first } => write!(f, "already used by slice #{first}"),
            Problem::ZeroCores => {
                f.write_str("needs at least 1 core (a count or a non-empty list)")
            }
            Problem::TooManyVcpus { asked, max } => {
                write!(
                    f,
                    "asks for {asked} cores but a slice can have at most {max}"
                )
            }
            Problem::CoreListedTwice { core, first_slice } => {
                write!(
                    f,
                    "core {core} is already given to slice {}",
                    SliceRef(first_slice)
                )
            }
            Problem::ZeroMemory => f.write_str("must be more than 0 bytes"),
            Problem::BadSize { text, reason } => write!(f, "{}: {reason}", Quoted(text)),
            Problem::NotPageMultiple { value } => write_not_page_multiple(f, *value),
            Problem::MemoryTooLarge { max } => {
                write!(f, "more than the {} a slice can address", HumanSize(*max))
            }
            Problem::UnknownOnFault(policy) => write!(
                f,
                "{} is not a policy (expected \"exception\", \"stop\" or \"restart\")",
                Quoted(policy)
            ),
            Problem::UnknownRole(role) => write!(
                f,
                "{} is not a role (expected \"tenant\" or \"manager\")",
                Quoted(role)
            ),
            Problem::SecondManager { first_slice } => write!(
                f,
                "slice \"{first_slice}\" is the manager already (a node has at most one)"
            ),
            Problem::ManagerNotLinux => f.write_str(
                "the manager must run Linux (kernel = \"linux\" or a Linux Image), not the probe or firmware",
            ),
            Problem::FirmwareHasNoCmdline => f.write_str(
                "a slice booting firmware (kernel = \"firmware\") has no command line: the OS it boots takes its own from the disk or the network",
            ),
            Problem::FirmwareHasNoInitrd => f.write_str(
                "a slice booting firmware (kernel = \"firmware\") has no initrd: the OS it boots loads its own",
            ),
            Problem::NotFirmware => f.write_str(
                "only a slice booting firmware (kernel = \"firmware\") has a firmware environment",
            ),
            Problem::BadEnvName(name) => write!(
                f,
                "{} is not a variable name (1 to 64 of A-Z a-z 0-9 _ . -)",
                Quoted(name)
            ),
            Problem::BadEnvValue(name) => write!(
                f,
                "the value of {} holds a character that is not printable ASCII",
                Quoted(name)
            ),
            Problem::EnvTooLarge { bytes, max } => write!(
                f,
                "the environment needs {bytes} bytes; at most {max} fit"
            ),
            Problem::StagingWithoutManager => {
                f.write_str("only the manager (role = \"manager\") has a staging pool")
            }
            Problem::RedfishWithoutManager => {
                f.write_str("only the manager (role = \"manager\") runs the Redfish service")
            }
            Problem::RedfishHalfGiven => {
                f.write_str("give both redfish-certificate and redfish-key, or neither")
            }
            Problem::BadStaging { value } => write!(
                f,
                "{} is not a staging pool size (a multiple of 2 MiB from {} to {})",
                HumanSize(*value),
                HumanSize(crate::model::MIN_STAGING),
                HumanSize(crate::model::MAX_STAGING)
            ),
            Problem::EmptyPath => f.write_str("empty path"),
            Problem::NotAnInitrd(name) => write!(
                f,
                "{} is a built-in kernel, not an initrd (give a file path or leave initrd out)",
                Quoted(name)
            ),
            Problem::CmdlineHasNul => f.write_str("contains a NUL character"),
            Problem::MissingImage(path) => write!(f, "file {path:?} not found"),
            Problem::BadImage(error) => write!(f, "not an arm64 Image: {error}"),
            Problem::ImageTooLarge {
                needed,
                available,
                min_memory,
            } => write!(
                f,
                "needs {} but only {} fit (give the slice at least {} of memory)",
                HumanSize(*needed),
                HumanSize(*available),
                HumanSize(*min_memory)
            ),
            Problem::ZeroQueues => f.write_str("needs at least 1 queue"),
            Problem::QueuesAboveLimit { max } => {
                write!(f, "more than the {max} queues a slice's controller can have")
            }
            Problem::ZeroNvmeSize => f.write_str("must be more than 0 bytes"),
            Problem::NoSuchCore {
                core,
                cores_on_node,
            } => {
                write!(f, "core {core} does not exist (node has ")?;
                match cores_on_node {
                    0 => f.write_str("no cores)"),
                    1 => f.write_str("1 core: 0)"),
                    n => write!(f, "{n} cores: 0-{})", n - 1),
                }
            }
            Problem::TooManyCores {
                asked,
                left,
                cores_on_node,
            } => write!(
                f,
                "asks for {asked} cores but {} (node has {cores_on_node} cores)",
                Left(u64::from(*left))
            ),
            Problem::NotEnoughMemory {
                asked,
                largest_free,
                ram_on_node,
            } => write!(
                f,
                "asks for {} but the largest free block is {} (node has {} of RAM)",
                HumanSize(*asked),
                HumanSize(*largest_free),
                HumanSize(*ram_on_node)
            ),
            Problem::NotEnoughDisk { asked, left, disk } => write!(
                f,
                "asks for {} but only {} of the {} NVMe namespace is left",
                HumanSize(*asked),
                HumanSize(*left),
                HumanSize(*disk)
            ),
            Problem::TooManyQueues {
                asked,
                left,
                controller,
            } => write!(
                f,
                "asks for {asked} queue pairs but {} (the NVMe controller grants {controller})",
                Left(u64::from(*left))
            ),
            Problem::NoNvme(why) => write!(f, "the node has no usable NVMe controller ({why})"),
            Problem::BadPciAddress { text, reason } => {
                write!(f, "{} is not a PCI address ({reason})", Quoted(text))
            }
            Problem::UnknownDeviceClass(class) => {
                write!(f, "{} is not a device class (expected ", Quoted(class))?;
                for (i, known) in DeviceClass::ALL.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    write!(f, "\"{}\"", known.name())?;
                }
                f.write_str(")")
            }
            Problem::DeviceWithoutPciOrClass => f.write_str(
                "needs pci = \"BB:DD.F\" (one function) or class = \"net\" or \"nvme\" \
                 (the next free one of that class)",
            ),
            Problem::DeviceWithPciAndClass => f.write_str(
                "has both pci and class (give one: pci names a function, class takes the next \
                 free one of that class)",
            ),
            Problem::DirectQueuesWithDevices => f.write_str(
                "cannot be true on a slice with [[slice.device]] functions (their DMA could write the queues' completions)",
            ),
            Problem::TooManyDevices { asked, max } => write!(
                f,
                "{asked} [[slice.device]] tables, but a slice can have at most {max}"
            ),
            Problem::DeviceListedTwice { first_slice } => {
                write!(f, "already given to slice {}", SliceRef(first_slice))
            }
            Problem::NoSmmu => f.write_str("the node has no SMMUv3, its DMA could not be confined"),
            Problem::NoSuchFunction { free } => {
                f.write_str("the node has no such function (")?;
                if free.is_empty() {
                    f.write_str("and none left that a slice could have)")
                } else {
                    f.write_str("free: ")?;
                    write_list(f, free, |f, function| write!(f, "{function}"))?;
                    f.write_str(")")
                }
            }
            Problem::Bridge { class } => write!(
                f,
                "is {} (class {}), not a function a slice can own",
                bridge_kind(*class).unwrap_or("a bridge"),
                ClassCode(*class)
            ),
            Problem::HypervisorNvme { sharer } => write!(
                f,
                "is the NVMe controller the hypervisor divides into [slice.nvme] shares \
                 (slice {} has one); name another function, or remove every [slice.nvme] to \
                 give it whole",
                SliceRef(sharer)
            ),
            Problem::SharedIsolationGroup { other, used } => {
                write!(
                    f,
                    "can reach {other} peer to peer without passing the SMMU (no ACS between \
                     them: one isolation group), and {other} "
                )?;
                match used {
                    FunctionUse::Slice(slice) => {
                        write!(f, "is given to slice {}", SliceRef(slice))?
                    }
                    FunctionUse::Hypervisor => {
                        f.write_str("is the hypervisor's NVMe controller")?
                    }
                }
                f.write_str("; give every function of a group to one slice")
            }
            Problem::NoFreeFunction { class, uses } => {
                if uses.is_empty() {
                    return write!(
                        f,
                        "the node has no {} function (class {})",
                        class.name(),
                        class.codes()
                    );
                }
                write!(f, "no free {} function left (", class.name())?;
                write_list(f, uses, |f, (address, used)| match used {
                    FunctionUse::Slice(slice) => {
                        write!(f, "{address} is given to slice {}", SliceRef(slice))
                    }
                    FunctionUse::Hypervisor => {
                        write!(
                            f,
                            "{address} is kept by the hypervisor for [slice.nvme] shares"
                        )
                    }
                })?;
                f.write_str(")")
            }
        }
    }
}

/// Most items a message lists (then `and N more`).
const MAX_LISTED: usize = 8;

/// Writes `items` comma-separated with `write_item`, at most [`MAX_LISTED`] of them.
fn write_list<T>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
    write_item: impl Fn(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    for (i, item) in items.iter().take(MAX_LISTED).enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_item(f, item)?;
    }
    if items.len() > MAX_LISTED {
        write!(f, " and {} more", items.len() - MAX_LISTED)?;
    }
    Ok(())
}

/// "only N are left", in good English for 0 and 1 too.
struct Left(u64);

impl fmt::Display for Left {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("none are left"),
            1 => f.write_str("only 1 is left"),
            n => write!(f, "only {n} are left"),
        }
    }
}

fn write_not_page_multiple(f: &mut fmt::Formatter<'_>, value: u64) -> fmt::Result {
    let down = value - value % 4096;
    write!(f, "{value} bytes is not a multiple of 4 KiB (use ")?;
    if down > 0 {
        write!(f, "{down} or ")?;
    }
    match down.checked_add(4096) {
        Some(up) => write!(f, "{up})"),
        None => f.write_str("a smaller size)"),
    }
}

/// One invalid-plan error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError {
    /// Name of the slice concerned (or its 1-based position `#3` when it has no valid name yet).
    pub slice: Option<String>,
    /// The field concerned.
    pub field: Field,
    /// What is wrong with it.
    pub problem: Problem,
}

impl PlanError {
    /// An error about the plan as a whole.
    pub fn plan(problem: Problem) -> PlanError {
        PlanError {
            slice: None,
            field: Field::Plan,
            problem,
        }
    }

    /// An error about one field of one slice (`slice`: its name, or `#N`).
    pub fn slice(slice: impl Into<String>, field: Field, problem: Problem) -> PlanError {
        PlanError {
            slice: Some(slice.into()),
            field,
            problem,
        }
    }

    /// The same error, attributed to `slice` (for errors from code that does not know the slice,
    /// such as [`GuestLayout::new`](crate::GuestLayout::new)).
    pub fn with_slice(self, slice: impl Into<String>) -> PlanError {
        PlanError {
            slice: Some(slice.into()),
            ..self
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.slice {
            Some(slice) => write!(f, "slice {}: ", SliceRef(slice))?,
            None => f.write_str("plan: ")?,
        }
        match &self.problem {
            Problem::UnknownField(key) => {
                match self.field {
                    Field::Nvme => f.write_str("nvme.")?,
                    Field::Firmware => f.write_str("firmware.")?,
                    Field::DeviceEntry(_) => write!(f, "{}: ", FieldLabel(self.field))?,
                    _ => {}
                }
                write!(f, "{}: unknown field (expected ", Escaped(key))?;
                write_key_list(f, self.field.allowed_keys())?;
                f.write_str(")")
            }
            Problem::CoreListedTwice { core, first_slice }
                if self.slice.as_ref() == Some(first_slice) =>
            {
                write!(f, "{}: core {core} is listed twice", FieldLabel(self.field))
            }
            Problem::DeviceListedTwice { first_slice }
                if self.slice.as_ref() == Some(first_slice) =>
            {
                write!(f, "{}: listed twice", FieldLabel(self.field))
            }
            problem => {
                let label = FieldLabel(self.field);
                if label.is_empty() {
                    write!(f, "{problem}")
                } else {
                    write!(f, "{label}: {problem}")
                }
            }
        }
    }
}

fn write_key_list(f: &mut fmt::Formatter<'_>, keys: &[&str]) -> fmt::Result {
    if keys.len() > 1 {
        f.write_str("one of ")?;
    }
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        f.write_str(key)?;
    }
    Ok(())
}

/// Prints a slice reference: `"web-0"` for a name, `#3` for a position.
struct SliceRef<'a>(&'a str);

impl fmt::Display for SliceRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.starts_with('#') {
            f.write_str(self.0)
        } else {
            write!(f, "{}", Quoted(self.0))
        }
    }
}

/// Prints user text in double quotes, escaped, cut after `MAX_QUOTED_CHARS` characters.
pub(crate) struct Quoted<'a>(pub(crate) &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", Escaped(self.0))
    }
}

/// Prints user text escaped (no control characters reach the console), cut after
/// `MAX_QUOTED_CHARS` characters.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars().take(MAX_QUOTED_CHARS) {
            write!(f, "{}", c.escape_debug())?;
        }
        if self.0.chars().nth(MAX_QUOTED_CHARS).is_some() {
            f.write_str("...")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn in_slice(field: Field, problem: Problem) -> String {
        PlanError::slice("web-0", field, problem).to_string()
    }

    #[test]
    fn plan_level_errors_start_with_plan() {
        assert_eq!(
            PlanError::plan(Problem::NoSlices).to_string(),
            "plan: no [[slice]] defined"
        );
    }

    #[test]
    fn too_many_slices() {
        let error = PlanError::plan(Problem::TooManySlices {
            count: 2000,
            max: 1024,
        });
        assert_eq!(
            error.to_string(),
            "plan: 2000 slices defined, at most 1024 are supported"
        );
    }

    #[test]
    fn syntax() {
        let error = PlanError::plan(Problem::Syntax {
            line: 3,
            message: "expected `=`".into(),
        });
        assert_eq!(error.to_string(), "plan: line 3: expected `=`");
    }

    #[test]
    fn unknown_field_lists_the_keys_of_its_table() {
        assert_eq!(
            in_slice(Field::Slice, Problem::UnknownField("memroy".into())),
            "slice \"web-0\": memroy: unknown field (expected one of name, cores, memory, kernel, \
             initrd, cmdline, on-fault, role, staging, redfish-certificate, redfish-key, nvme, device, firmware)"
        );
        assert_eq!(
            in_slice(Field::Nvme, Problem::UnknownField("qeues".into())),
            "slice \"web-0\": nvme.qeues: unknown field (expected one of queues, size, direct-queues)"
        );
        assert_eq!(
            PlanError::plan(Problem::UnknownField("slices".into())).to_string(),
            "plan: slices: unknown field (expected slice)"
        );
    }

    #[test]
    fn missing_field() {
        assert_eq!(
            in_slice(Field::NvmeQueues, Problem::MissingField),
            "slice \"web-0\": nvme.queues: missing (this field is required)"
        );
    }

    #[test]
    fn wrong_type() {
        let problem = Problem::WrongType {
            expected: "a string",
            found: "integer",
        };
        assert_eq!(
            in_slice(Field::OnFault, problem),
            "slice \"web-0\": on-fault: expected a string, found integer"
        );
    }

    #[test]
    fn out_of_range() {
        let problem = Problem::OutOfRange {
            value: -1,
            min: 1,
            max: 10,
        };
        assert_eq!(
            in_slice(Field::Cores, problem),
            "slice \"web-0\": cores: -1 is out of range (must be 1 to 10)"
        );
    }

    #[test]
    fn bad_name_uses_the_position_and_escapes() {
        let error = PlanError::slice("#2", Field::Name, Problem::BadName("Web\n0".into()));
        assert_eq!(
            error.to_string(),
            "slice #2: name: \"Web\\n0\" is not a valid name (use 1 to 32 characters from a-z, 0-9 and -)"
        );
    }

    #[test]
    fn long_user_text_is_cut() {
        let name = "x".repeat(100);
        let text = PlanError::slice("#1", Field::Name, Problem::BadName(name)).to_string();
        assert!(
            text.contains(&alloc::format!("\"{}...\"", "x".repeat(40))),
            "{text}"
        );
    }

    #[test]
    fn duplicate_name() {
        assert_eq!(
            in_slice(Field::Name, Problem::DuplicateName { first: 1 }),
            "slice \"web-0\": name: already used by slice #1"
        );
    }

    #[test]
    fn zero_cores() {
        assert!(
            in_slice(Field::Cores, Problem::ZeroCores)
                .starts_with("slice \"web-0\": cores: needs at least 1 core")
        );
    }

    #[test]
    fn too_many_vcpus() {
        assert_eq!(
            in_slice(
                Field::Cores,
                Problem::TooManyVcpus {
                    asked: 200,
                    max: 123
                }
            ),
            "slice \"web-0\": cores: asks for 200 cores but a slice can have at most 123"
        );
    }

    #[test]
    fn core_listed_twice_across_and_within_slices() {
        let across = Problem::CoreListedTwice {
            core: 3,
            first_slice: "db-0".into(),
        };
        assert_eq!(
            in_slice(Field::Cores, across),
            "slice \"web-0\": cores: core 3 is already given to slice \"db-0\""
        );
        let within = Problem::CoreListedTwice {
            core: 3,
            first_slice: "web-0".into(),
        };
        assert_eq!(
            in_slice(Field::Cores, within),
            "slice \"web-0\": cores: core 3 is listed twice"
        );
    }

    #[test]
    fn zero_memory() {
        assert_eq!(
            in_slice(Field::Memory, Problem::ZeroMemory),
            "slice \"web-0\": memory: must be more than 0 bytes"
        );
    }

    #[test]
    fn bad_size() {
        let problem = Problem::BadSize {
            text: "1.5G".into(),
            reason: SizeError::Fractional,
        };
        assert!(
            in_slice(Field::Memory, problem)
                .starts_with("slice \"web-0\": memory: \"1.5G\": fractions")
        );
    }

    #[test]
    fn not_page_multiple_suggests_neighbours() {
        let problem = Problem::NotPageMultiple { value: 5000 };
        assert_eq!(
            in_slice(Field::NvmeSize, problem),
            "slice \"web-0\": nvme.size: 5000 bytes is not a multiple of 4 KiB (use 4096 or 8192)"
        );
        let small = Problem::NotPageMultiple { value: 100 };
        assert!(in_slice(Field::Memory, small).ends_with("(use 4096)"));
        let huge = Problem::NotPageMultiple { value: u64::MAX };
        assert!(in_slice(Field::Memory, huge).ends_with("or a smaller size)"));
    }

    #[test]
    fn memory_too_large() {
        let problem = Problem::MemoryTooLarge { max: 255 << 30 };
        assert_eq!(
            in_slice(Field::Memory, problem),
            "slice \"web-0\": memory: more than the 255 GiB a slice can address"
        );
    }

    #[test]
    fn unknown_on_fault() {
        assert_eq!(
            in_slice(Field::OnFault, Problem::UnknownOnFault("reboot".into())),
            "slice \"web-0\": on-fault: \"reboot\" is not a policy (expected \"exception\", \"stop\" or \"restart\")"
        );
    }

    #[test]
    fn empty_path() {
        assert_eq!(
            in_slice(Field::Kernel, Problem::EmptyPath),
            "slice \"web-0\": kernel: empty path"
        );
    }

    #[test]
    fn not_an_initrd() {
        assert!(
            in_slice(Field::Initrd, Problem::NotAnInitrd("linux".into()))
                .starts_with("slice \"web-0\": initrd: \"linux\" is a built-in kernel")
        );
    }

    #[test]
    fn cmdline_has_nul() {
        assert_eq!(
            in_slice(Field::Cmdline, Problem::CmdlineHasNul),
            "slice \"web-0\": cmdline: contains a NUL character"
        );
    }

    #[test]
    fn missing_image() {
        assert_eq!(
            in_slice(Field::Kernel, Problem::MissingImage("out/Image".into())),
            "slice \"web-0\": kernel: file \"out/Image\" not found"
        );
    }

    #[test]
    fn bad_image() {
        let problem = Problem::BadImage(ImageError::BigEndian);
        assert!(
            in_slice(Field::Kernel, problem)
                .starts_with("slice \"web-0\": kernel: not an arm64 Image: big-endian")
        );
    }

    #[test]
    fn image_too_large_says_what_memory_fits() {
        let problem = Problem::ImageTooLarge {
            needed: 40 << 20,
            available: 30 << 20,
            min_memory: 44 << 20,
        };
        assert_eq!(
            in_slice(Field::Initrd, problem),
            "slice \"web-0\": initrd: needs 40 MiB but only 30 MiB fit (give the slice at least 44 MiB of memory)"
        );
    }

    #[test]
    fn zero_queues() {
        assert_eq!(
            in_slice(Field::NvmeQueues, Problem::ZeroQueues),
            "slice \"web-0\": nvme.queues: needs at least 1 queue"
        );
    }

    #[test]
    fn too_many_queues() {
        assert_eq!(
            in_slice(Field::NvmeQueues, Problem::QueuesAboveLimit { max: 127 }),
            "slice \"web-0\": nvme.queues: more than the 127 queues a slice's controller can have"
        );
    }

    #[test]
    fn zero_nvme_size() {
        assert_eq!(
            in_slice(Field::NvmeSize, Problem::ZeroNvmeSize),
            "slice \"web-0\": nvme.size: must be more than 0 bytes"
        );
    }

    #[test]
    fn no_such_core() {
        let problem = |cores_on_node| Problem::NoSuchCore {
            core: 9,
            cores_on_node,
        };
        assert_eq!(
            in_slice(Field::Cores, problem(8)),
            "slice \"web-0\": cores: core 9 does not exist (node has 8 cores: 0-7)"
        );
        assert!(in_slice(Field::Cores, problem(1)).ends_with("(node has 1 core: 0)"));
        assert!(in_slice(Field::Cores, problem(0)).ends_with("(node has no cores)"));
    }

    #[test]
    fn too_many_cores() {
        let problem = Problem::TooManyCores {
            asked: 4,
            left: 3,
            cores_on_node: 8,
        };
        assert_eq!(
            in_slice(Field::Cores, problem),
            "slice \"web-0\": cores: asks for 4 cores but only 3 are left (node has 8 cores)"
        );
    }

    #[test]
    fn not_enough_memory() {
        let problem = Problem::NotEnoughMemory {
            asked: 2 << 30,
            largest_free: 3 << 29,
            ram_on_node: 4 << 30,
        };
        assert_eq!(
            in_slice(Field::Memory, problem),
            "slice \"web-0\": memory: asks for 2 GiB but the largest free block is 1536 MiB (node has 4 GiB of RAM)"
        );
    }

    #[test]
    fn nvme_fit_problems() {
        assert_eq!(
            in_slice(
                Field::NvmeSize,
                Problem::NoNvme("no NVMe controller on the PCIe host bridge".into())
            ),
            "slice \"web-0\": nvme.size: the node has no usable NVMe controller (no NVMe controller on the PCIe host bridge)"
        );
        assert_eq!(
            in_slice(
                Field::NvmeQueues,
                Problem::TooManyQueues {
                    asked: 4,
                    left: 2,
                    controller: 64
                }
            ),
            "slice \"web-0\": nvme.queues: asks for 4 queue pairs but only 2 are left (the NVMe controller grants 64)"
        );
    }

    fn address(text: &str) -> PciAddress {
        PciAddress::parse(text).unwrap()
    }

    fn device(text: &str) -> Field {
        Field::Device(DeviceRequest::Pci(address(text)))
    }

    #[test]
    fn device_fields_are_named_by_position_or_request() {
        let wrong = Problem::WrongType {
            expected: "[[slice.device]] tables",
            found: "table",
        };
        assert_eq!(
            in_slice(Field::Devices, wrong),
            "slice \"web-0\": device: expected [[slice.device]] tables, found table"
        );
        assert_eq!(
            in_slice(Field::DeviceEntry(2), Problem::UnknownField("addr".into())),
            "slice \"web-0\": device #2: addr: unknown field (expected one of pci, class)"
        );
        assert_eq!(
            in_slice(Field::DeviceEntryClass(1), Problem::MissingField),
            "slice \"web-0\": device #1: class: missing (this field is required)"
        );
        assert_eq!(
            in_slice(
                Field::Device(DeviceRequest::Class(DeviceClass::Nvme)),
                Problem::NoSmmu
            ),
            "slice \"web-0\": device class nvme: the node has no SMMUv3, its DMA could not be confined"
        );
    }

    #[test]
    fn bad_pci_address() {
        let problem = Problem::BadPciAddress {
            text: "00:20.0".into(),
            reason: PciAddressError::DeviceTooLarge(0x20),
        };
        assert_eq!(
            in_slice(Field::DeviceEntryPci(1), problem),
            "slice \"web-0\": device #1: pci: \"00:20.0\" is not a PCI address (device 20 is above 1f)"
        );
    }

    #[test]
    fn unknown_device_class() {
        assert_eq!(
            in_slice(
                Field::DeviceEntryClass(3),
                Problem::UnknownDeviceClass("gpu".into())
            ),
            "slice \"web-0\": device #3: class: \"gpu\" is not a device class (expected \"net\" or \"nvme\")"
        );
    }

    #[test]
    fn device_without_pci_or_class() {
        assert_eq!(
            in_slice(Field::DeviceEntry(1), Problem::DeviceWithoutPciOrClass),
            "slice \"web-0\": device #1: needs pci = \"BB:DD.F\" (one function) or class = \"net\" \
             or \"nvme\" (the next free one of that class)"
        );
    }

    #[test]
    fn device_with_pci_and_class() {
        assert_eq!(
            in_slice(Field::DeviceEntry(2), Problem::DeviceWithPciAndClass),
            "slice \"web-0\": device #2: has both pci and class (give one: pci names a function, \
             class takes the next free one of that class)"
        );
    }

    #[test]
    fn too_many_devices() {
        assert_eq!(
            in_slice(
                Field::Devices,
                Problem::TooManyDevices { asked: 17, max: 16 }
            ),
            "slice \"web-0\": device: 17 [[slice.device]] tables, but a slice can have at most 16"
        );
    }

    #[test]
    fn device_listed_twice_across_and_within_slices() {
        let across = Problem::DeviceListedTwice {
            first_slice: "db-0".into(),
        };
        assert_eq!(
            in_slice(device("00:03.0"), across),
            "slice \"web-0\": device 00:03.0: already given to slice \"db-0\""
        );
        let within = Problem::DeviceListedTwice {
            first_slice: "web-0".into(),
        };
        assert_eq!(
            in_slice(device("00:03.0"), within),
            "slice \"web-0\": device 00:03.0: listed twice"
        );
    }

    #[test]
    fn no_smmu() {
        assert_eq!(
            in_slice(device("00:03.0"), Problem::NoSmmu),
            "slice \"web-0\": device 00:03.0: the node has no SMMUv3, its DMA could not be confined"
        );
    }

    #[test]
    fn no_such_function_lists_at_most_eight_free_ones() {
        let free = (1..=10)
            .map(|device| PciFunction {
                address: PciAddress::new(0, device, 0).unwrap(),
                class: 0x02_00_00,
                vendor: 0x1af4,
                device: 0x1041,
            })
            .collect();
        let text = in_slice(device("00:1f.0"), Problem::NoSuchFunction { free });
        assert!(
            text.starts_with(
                "slice \"web-0\": device 00:1f.0: the node has no such function (free: \
                 00:01.0 net 1af4:1041, 00:02.0 net 1af4:1041, "
            ),
            "{text}"
        );
        assert!(
            text.ends_with("00:08.0 net 1af4:1041 and 2 more)"),
            "{text}"
        );
        assert_eq!(
            in_slice(
                device("00:1f.0"),
                Problem::NoSuchFunction { free: Vec::new() }
            ),
            "slice \"web-0\": device 00:1f.0: the node has no such function (and none left that \
             a slice could have)"
        );
    }

    #[test]
    fn bridge() {
        assert_eq!(
            in_slice(device("00:00.0"), Problem::Bridge { class: 0x06_00_00 }),
            "slice \"web-0\": device 00:00.0: is a host bridge (class 06 00 00), not a function a \
             slice can own"
        );
        assert!(
            in_slice(device("00:01.0"), Problem::Bridge { class: 0x06_04_01 })
                .contains("is a PCI-to-PCI bridge (class 06 04 01)")
        );
        assert!(
            in_slice(device("00:01.0"), Problem::Bridge { class: 0x06_80_00 })
                .contains("is a bridge (class 06 80 00)")
        );
    }

    #[test]
    fn hypervisor_nvme() {
        assert_eq!(
            in_slice(
                device("00:02.0"),
                Problem::HypervisorNvme {
                    sharer: "db".into()
                }
            ),
            "slice \"web-0\": device 00:02.0: is the NVMe controller the hypervisor divides into \
             [slice.nvme] shares (slice \"db\" has one); name another function, or remove every \
             [slice.nvme] to give it whole"
        );
    }

    #[test]
    fn no_free_function() {
        let field = Field::Device(DeviceRequest::Class(DeviceClass::Nvme));
        let uses = vec![
            (address("00:02.0"), FunctionUse::Hypervisor),
            (address("00:06.0"), FunctionUse::Slice("db".into())),
        ];
        let problem = Problem::NoFreeFunction {
            class: DeviceClass::Nvme,
            uses,
        };
        assert_eq!(
            in_slice(field, problem),
            "slice \"web-0\": device class nvme: no free nvme function left (00:02.0 is kept by \
             the hypervisor for [slice.nvme] shares, 00:06.0 is given to slice \"db\")"
        );
        let none = Problem::NoFreeFunction {
            class: DeviceClass::Net,
            uses: Vec::new(),
        };
        assert_eq!(
            in_slice(Field::Device(DeviceRequest::Class(DeviceClass::Net)), none),
            "slice \"web-0\": device class net: the node has no net function (class 02 xx xx)"
        );
    }

    #[test]
    fn with_slice_attributes_an_error() {
        let error = PlanError {
            slice: None,
            field: Field::Kernel,
            problem: Problem::EmptyPath,
        };
        assert_eq!(error.clone().to_string(), "plan: kernel: empty path");
        assert_eq!(
            error.with_slice("a").to_string(),
            "slice \"a\": kernel: empty path"
        );
    }

    #[test]
    fn counts_left_read_as_english() {
        assert_eq!(alloc::format!("{}", Left(0)), "none are left");
        assert_eq!(alloc::format!("{}", Left(1)), "only 1 is left");
        assert_eq!(alloc::format!("{}", Left(3)), "only 3 are left");
    }
}
