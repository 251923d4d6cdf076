//! One `ComputerSystem` per slice (ComputerSystem schema; `SystemType` is
//! `PhysicallyPartitioned`: a slice is a partition of the node with its own cores, RAM and
//! disk), and below it: one `Processor` (all its cores), its NVMe share as `SimpleStorage`
//! and as `Storage` with one `Drive` and one `Volume`, an `EthernetInterface` per assigned
//! NIC, and one CD `VirtualMedia` slot.

use serde::Serialize;

use microvisor_control::{SliceState, SliceStatus};

use super::{Action, Collection, Link, Status, link, odata_type, uuid_from};

/// Where systems live.
pub const SYSTEMS: &str = "/redfish/v1/Systems";
/// Ids below a system.
pub const PROCESSOR: &str = "CPU";
pub const STORAGE: &str = "NVMe";
pub const DRIVE: &str = "Share";
pub const CONTROLLER: &str = "0";
pub const VOLUME: &str = "Share";
pub const CD: &str = "CD";

/// `ResetType` values `ComputerSystem.Reset` takes.
pub const RESET_TYPES: &[&str] = &[
    "On",
    "ForceOff",
    "GracefulShutdown",
    "GracefulRestart",
    "ForceRestart",
    "PowerCycle",
];

/// `BootSourceOverrideTarget`: what the next start boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootTarget {
    /// No override: the slice's own boot source.
    None,
    /// The slice's own disk: its flashed boot source (for a firmware slice, the OS on its
    /// NVMe share).
    Hdd,
    /// The image in the virtual CD.
    Cd,
    /// The network: the slice's firmware with its network boot targets first (DHCP, then
    /// TFTP: a boot script, PXELINUX or an EFI binary), falling back to its disk. Only for a
    /// slice that boots firmware and has a NIC.
    Pxe,
}

impl BootTarget {
    /// Every target.
    pub const ALL: &'static [&'static str] = &["None", "Pxe", "Hdd", "Cd"];
    /// The targets of a slice that cannot boot from the network.
    pub const LOCAL: &'static [&'static str] = &["None", "Hdd", "Cd"];

    /// The targets `slice` can boot.
    pub fn allowable(slice: &SliceStatus) -> &'static [&'static str] {
        if slice.network_boot && !slice.nics.is_empty() {
            Self::ALL
        } else {
            Self::LOCAL
        }
    }

    pub fn parse(name: &str) -> Option<BootTarget> {
        match name {
            "None" => Some(BootTarget::None),
            "Pxe" => Some(BootTarget::Pxe),
            "Hdd" => Some(BootTarget::Hdd),
            "Cd" => Some(BootTarget::Cd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BootTarget::None => "None",
            BootTarget::Pxe => "Pxe",
            BootTarget::Hdd => "Hdd",
            BootTarget::Cd => "Cd",
        }
    }
}

/// `BootSourceOverrideEnabled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEnabled {
    Disabled,
    Once,
    Continuous,
}

impl BootEnabled {
    pub const ALL: &'static [&'static str] = &["Disabled", "Once", "Continuous"];

    pub fn parse(name: &str) -> Option<BootEnabled> {
        match name {
            "Disabled" => Some(BootEnabled::Disabled),
            "Once" => Some(BootEnabled::Once),
            "Continuous" => Some(BootEnabled::Continuous),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BootEnabled::Disabled => "Disabled",
            BootEnabled::Once => "Once",
            BootEnabled::Continuous => "Continuous",
        }
    }
}

/// `BootSourceOverrideMode` values: a slice's firmware is UEFI (U-Boot's EFI loader), a
/// bundled kernel has no mode, so UEFI is the only one.
pub const BOOT_MODES: &[&str] = &["UEFI"];

/// A system's boot override, as the service keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootOverride {
    pub target: BootTarget,
    pub enabled: BootEnabled,
}

impl Default for BootOverride {
    fn default() -> Self {
        BootOverride {
            target: BootTarget::None,
            enabled: BootEnabled::Disabled,
        }
    }
}

/// The virtual CD of a system.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaSlot {
    /// The URL inserted (kept while fetching, after a failure until ejected, and while
    /// inserted).
    pub image: Option<String>,
    /// Whether an image is in (fetched and understood).
    pub inserted: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ComputerSystem {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    #[serde(rename = "@odata.etag")]
    pub etag: String,
    pub id: String,
    pub name: String,
    pub description: String,
    pub system_type: &'static str,
    #[serde(rename = "UUID")]
    pub uuid: String,
    pub manufacturer: &'static str,
    pub model: &'static str,
    pub power_state: &'static str,
    pub status: Status,
    pub processor_summary: ProcessorSummary,
    pub memory_summary: MemorySummary,
    pub boot: Boot,
    pub processors: Link,
    pub simple_storage: Link,
    pub storage: Link,
    pub ethernet_interfaces: Link,
    pub virtual_media: Link,
    pub links: SystemLinks,
    pub actions: SystemActions,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessorSummary {
    pub count: u32,
    pub core_count: u32,
    pub logical_processor_count: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemorySummary {
    pub total_system_memory_gi_b: f64,
}

#[derive(Serialize)]
pub struct Boot {
    #[serde(rename = "@Redfish.WriteableProperties")]
    pub writeable: &'static [&'static str],
    #[serde(rename = "BootSourceOverrideTarget")]
    pub target: &'static str,
    #[serde(rename = "BootSourceOverrideTarget@Redfish.AllowableValues")]
    pub target_allowable: &'static [&'static str],
    #[serde(rename = "BootSourceOverrideEnabled")]
    pub enabled: &'static str,
    #[serde(rename = "BootSourceOverrideEnabled@Redfish.AllowableValues")]
    pub enabled_allowable: &'static [&'static str],
    #[serde(rename = "BootSourceOverrideMode")]
    pub mode: &'static str,
    #[serde(rename = "BootSourceOverrideMode@Redfish.AllowableValues")]
    pub mode_allowable: &'static [&'static str],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SystemLinks {
    pub managed_by: Vec<Link>,
    pub chassis: Vec<Link>,
}

#[derive(Serialize)]
pub struct SystemActions {
    #[serde(rename = "#ComputerSystem.Reset")]
    pub reset: Action,
}

/// `PowerState` of a slice in `state`.
pub fn power_state(state: &SliceState) -> &'static str {
    match state {
        SliceState::On => "On",
        SliceState::ShuttingDown | SliceState::Stopping => "PoweringOff",
        SliceState::Off | SliceState::Erasing => "Off",
        SliceState::Other(_) => "Off",
    }
}

/// The ETag of a system's writable part (its boot override): a PATCH must name the one it
/// read, whatever else (power, uptime) changed since.
pub fn system_etag(boot: &BootOverride) -> String {
    format!("W/\"{}-{}\"", boot.target.name(), boot.enabled.name())
}

pub fn system_id(slice: &str) -> String {
    format!("{SYSTEMS}/{slice}")
}

pub fn system(
    slice: &SliceStatus,
    boot: &BootOverride,
    node_uuid: &str,
    manager: &str,
    chassis: &str,
) -> ComputerSystem {
    let id = system_id(&slice.name);
    let cores = slice.cores.len() as u32;
    ComputerSystem {
        odata_id: id.clone(),
        odata_type: odata_type("ComputerSystem"),
        etag: system_etag(boot),
        id: slice.name.clone(),
        name: slice.name.clone(),
        description: format!(
            "Slice {} of the node: {} dedicated core(s), {} MiB of RAM{}",
            slice.name,
            cores,
            slice.memory_bytes >> 20,
            slice
                .nvme
                .as_ref()
                .map(|n| format!(", a {} MiB NVMe share", n.bytes >> 20))
                .unwrap_or_default()
        ),
        system_type: "PhysicallyPartitioned",
        uuid: uuid_from(&format!("{node_uuid}/system/{}", slice.name)),
        manufacturer: "microvisor",
        model: "slice",
        power_state: power_state(&slice.state),
        status: Status::ENABLED,
        processor_summary: ProcessorSummary {
            count: 1,
            core_count: cores,
            logical_processor_count: cores,
        },
        memory_summary: MemorySummary {
            total_system_memory_gi_b: slice.memory_bytes as f64 / (1u64 << 30) as f64,
        },
        boot: Boot {
            writeable: &[
                "BootSourceOverrideTarget",
                "BootSourceOverrideEnabled",
                "BootSourceOverrideMode",
            ],
            target: boot.target.name(),
            target_allowable: BootTarget::allowable(slice),
            enabled: boot.enabled.name(),
            enabled_allowable: BootEnabled::ALL,
            mode: BOOT_MODES[0],
            mode_allowable: BOOT_MODES,
        },
        processors: link(format!("{id}/Processors")),
        simple_storage: link(format!("{id}/SimpleStorage")),
        storage: link(format!("{id}/Storage")),
        ethernet_interfaces: link(format!("{id}/EthernetInterfaces")),
        virtual_media: link(format!("{id}/VirtualMedia")),
        links: SystemLinks {
            managed_by: vec![link(manager)],
            chassis: vec![link(chassis)],
        },
        actions: SystemActions {
            reset: Action::new(format!("{id}/Actions/ComputerSystem.Reset"))
                .allow("ResetType", RESET_TYPES),
        },
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Processor {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: &'static str,
    pub name: &'static str,
    pub processor_type: &'static str,
    pub processor_architecture: &'static str,
    pub instruction_set: &'static str,
    pub total_cores: u32,
    pub total_enabled_cores: u32,
    pub total_threads: u32,
    pub status: Status,
}

pub fn processors(slice: &SliceStatus) -> Collection {
    Collection::new(
        "ProcessorCollection",
        &format!("{}/Processors", system_id(&slice.name)),
        "Processors",
        &[PROCESSOR.to_string()],
    )
}

pub fn processor(slice: &SliceStatus) -> Processor {
    let cores = slice.cores.len() as u32;
    Processor {
        odata_id: format!("{}/Processors/{PROCESSOR}", system_id(&slice.name)),
        odata_type: odata_type("Processor"),
        id: PROCESSOR,
        name: "Dedicated Arm cores",
        processor_type: "CPU",
        processor_architecture: "ARM",
        instruction_set: "ARM-A64",
        total_cores: cores,
        total_enabled_cores: cores,
        total_threads: cores,
        status: Status::ENABLED,
    }
}

pub fn simple_storages(slice: &SliceStatus) -> Collection {
    let members: Vec<String> = slice.nvme.iter().map(|_| STORAGE.to_string()).collect();
    Collection::new(
        "SimpleStorageCollection",
        &format!("{}/SimpleStorage", system_id(&slice.name)),
        "Simple storage",
        &members,
    )
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SimpleStorage {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub devices: Vec<SimpleDevice>,
    pub status: Status,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SimpleDevice {
    pub name: &'static str,
    pub manufacturer: &'static str,
    pub model: &'static str,
    pub capacity_bytes: u64,
    pub status: Status,
}

pub fn simple_storage(slice: &SliceStatus, bytes: u64) -> SimpleStorage {
    SimpleStorage {
        odata_id: format!("{}/SimpleStorage/{STORAGE}", system_id(&slice.name)),
        odata_type: odata_type("SimpleStorage"),
        id: STORAGE,
        name: "NVMe share",
        description: "The slice's share of the node's NVMe disk: a namespace of its own",
        devices: vec![SimpleDevice {
            name: "nvme0n1",
            manufacturer: "microvisor",
            model: "NVMe share",
            capacity_bytes: bytes,
            status: Status::ENABLED,
        }],
        status: Status::ENABLED,
    }
}

pub fn storages(slice: &SliceStatus) -> Collection {
    let members: Vec<String> = slice.nvme.iter().map(|_| STORAGE.to_string()).collect();
    Collection::new(
        "StorageCollection",
        &format!("{}/Storage", system_id(&slice.name)),
        "Storage",
        &members,
    )
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Storage {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: &'static str,
    pub name: &'static str,
    pub drives: Vec<Link>,
    #[serde(rename = "Drives@odata.count")]
    pub drives_count: usize,
    pub volumes: Link,
    pub controllers: Link,
    pub status: Status,
}

pub fn storage(slice: &SliceStatus) -> Storage {
    let id = format!("{}/Storage/{STORAGE}", system_id(&slice.name));
    Storage {
        odata_type: odata_type("Storage"),
        id: STORAGE,
        name: "NVMe share",
        drives: vec![link(format!("{id}/Drives/{DRIVE}"))],
        drives_count: 1,
        volumes: link(format!("{id}/Volumes")),
        controllers: link(format!("{id}/Controllers")),
        status: Status::ENABLED,
        odata_id: id,
    }
}

pub fn storage_controllers(slice: &SliceStatus) -> Collection {
    Collection::new(
        "StorageControllerCollection",
        &format!("{}/Storage/{STORAGE}/Controllers", system_id(&slice.name)),
        "Storage controllers",
        &[CONTROLLER.to_string()],
    )
}

/// The NVMe controller the slice sees: its own, with the queue pairs its share has.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StorageController {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: &'static str,
    pub name: &'static str,
    pub description: String,
    pub supported_controller_protocols: &'static [&'static str],
    pub supported_device_protocols: &'static [&'static str],
    pub status: Status,
}

pub fn storage_controller(slice: &SliceStatus, queues: u32) -> StorageController {
    StorageController {
        odata_id: format!(
            "{}/Storage/{STORAGE}/Controllers/{CONTROLLER}",
            system_id(&slice.name)
        ),
        odata_type: odata_type("StorageController"),
        id: CONTROLLER,
        name: "NVMe controller",
        description: format!("The slice's NVMe controller: {queues} dedicated I/O queue pair(s)"),
        supported_controller_protocols: &["PCIe"],
        supported_device_protocols: &["NVMe"],
        status: Status::ENABLED,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Drive {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: &'static str,
    pub name: &'static str,
    pub capacity_bytes: u64,
    pub protocol: &'static str,
    pub media_type: &'static str,
    pub status: Status,
    pub actions: DriveActions,
}

#[derive(Serialize)]
pub struct DriveActions {
    #[serde(rename = "#Drive.SecureErase")]
    pub secure_erase: Action,
}

/// The share as a drive; `State` is `Updating` while an erase runs.
pub fn drive(slice: &SliceStatus, bytes: u64) -> Drive {
    let id = format!(
        "{}/Storage/{STORAGE}/Drives/{DRIVE}",
        system_id(&slice.name)
    );
    let erasing = slice.state == SliceState::Erasing;
    Drive {
        odata_type: odata_type("Drive"),
        id: DRIVE,
        name: "NVMe share",
        capacity_bytes: bytes,
        protocol: "NVMe",
        media_type: "SSD",
        status: Status {
            state: if erasing { "Updating" } else { "Enabled" },
            health: "OK",
        },
        actions: DriveActions {
            secure_erase: Action::new(format!("{id}/Actions/Drive.SecureErase")),
        },
        odata_id: id,
    }
}

/// The volumes: the share's one namespace; none can be made or removed (`Immediate` is the
/// only apply time the collection names, as the Settings schema asks of one).
#[derive(Serialize)]
pub struct Volumes {
    #[serde(flatten)]
    pub collection: Collection,
    #[serde(rename = "@Redfish.OperationApplyTimeSupport")]
    pub apply_time: ApplyTimeSupport,
}

#[derive(Serialize)]
pub struct ApplyTimeSupport {
    #[serde(rename = "@odata.type")]
    pub odata_type: &'static str,
    #[serde(rename = "SupportedValues")]
    pub supported: &'static [&'static str],
}

pub fn volumes(slice: &SliceStatus) -> Volumes {
    Volumes {
        collection: Collection::new(
            "VolumeCollection",
            &format!("{}/Storage/{STORAGE}/Volumes", system_id(&slice.name)),
            "Volumes",
            &[VOLUME.to_string()],
        ),
        apply_time: ApplyTimeSupport {
            odata_type: "#Settings.v1_3_5.OperationApplyTimeSupport",
            supported: &["Immediate"],
        },
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: &'static str,
    pub name: &'static str,
    pub capacity_bytes: u64,
    #[serde(rename = "RAIDType")]
    pub raid_type: &'static str,
    pub status: Status,
}

pub fn volume(slice: &SliceStatus, bytes: u64) -> Volume {
    Volume {
        odata_id: format!(
            "{}/Storage/{STORAGE}/Volumes/{VOLUME}",
            system_id(&slice.name)
        ),
        odata_type: odata_type("Volume"),
        id: VOLUME,
        name: "NVMe share",
        capacity_bytes: bytes,
        raid_type: "None",
        status: Status::ENABLED,
    }
}

/// Id of NIC `index` of a slice.
pub fn nic_id(index: usize) -> String {
    format!("NIC{index}")
}

pub fn ethernet_interfaces(slice: &SliceStatus) -> Collection {
    let members: Vec<String> = (0..slice.nics.len()).map(nic_id).collect();
    Collection::new(
        "EthernetInterfaceCollection",
        &format!("{}/EthernetInterfaces", system_id(&slice.name)),
        "Ethernet interfaces",
        &members,
    )
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EthernetInterface {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(rename = "MACAddress", skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(
        rename = "PermanentMACAddress",
        skip_serializing_if = "Option::is_none"
    )]
    pub permanent_mac: Option<String>,
    pub interface_enabled: bool,
    pub link_status: &'static str,
    pub status: Status,
}

/// NIC `index` of `slice`, or `None`.
pub fn ethernet_interface(slice: &SliceStatus, index: usize) -> Option<EthernetInterface> {
    let nic = slice.nics.get(index)?;
    let id = nic_id(index);
    Some(EthernetInterface {
        odata_id: format!("{}/EthernetInterfaces/{id}", system_id(&slice.name)),
        odata_type: odata_type("EthernetInterface"),
        name: format!("PCI function {}", nic.slot),
        description: format!(
            "Node NIC {} ({}) assigned to the slice at {}",
            nic.host, nic.id, nic.slot
        ),
        id,
        mac: nic.mac.clone(),
        permanent_mac: nic.mac.clone(),
        interface_enabled: true,
        link_status: if slice.state == SliceState::On {
            "LinkUp"
        } else {
            "NoLink"
        },
        status: Status::ENABLED,
    })
}

pub fn virtual_medias(slice: &SliceStatus) -> Collection {
    Collection::new(
        "VirtualMediaCollection",
        &format!("{}/VirtualMedia", system_id(&slice.name)),
        "Virtual media",
        &[CD.to_string()],
    )
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VirtualMedia {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: &'static str,
    pub name: &'static str,
    pub media_types: &'static [&'static str],
    pub image: Option<String>,
    pub image_name: Option<String>,
    pub inserted: bool,
    pub write_protected: bool,
    pub connected_via: &'static str,
    pub transfer_method: &'static str,
    pub actions: MediaActions,
}

#[derive(Serialize)]
pub struct MediaActions {
    #[serde(rename = "#VirtualMedia.InsertMedia")]
    pub insert: Action,
    #[serde(rename = "#VirtualMedia.EjectMedia")]
    pub eject: Action,
}

pub fn virtual_media(slice: &SliceStatus, slot: &MediaSlot) -> VirtualMedia {
    let id = format!("{}/VirtualMedia/{CD}", system_id(&slice.name));
    VirtualMedia {
        odata_type: odata_type("VirtualMedia"),
        id: CD,
        name: "Virtual CD",
        media_types: &["CD", "DVD"],
        image_name: slot
            .image
            .as_deref()
            .map(|url| url.rsplit('/').next().unwrap_or(url).to_string()),
        image: slot.image.clone(),
        inserted: slot.inserted,
        write_protected: true,
        connected_via: if slot.image.is_some() {
            "URI"
        } else {
            "NotConnected"
        },
        transfer_method: "Upload",
        actions: MediaActions {
            insert: Action::new(format!("{id}/Actions/VirtualMedia.InsertMedia"))
                .allow("TransferMethod", &["Upload"])
                .allow("TransferProtocolType", &["HTTP", "HTTPS"]),
            eject: Action::new(format!("{id}/Actions/VirtualMedia.EjectMedia")),
        },
        odata_id: id,
    }
}
