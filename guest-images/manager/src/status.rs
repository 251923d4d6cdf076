//! The JSON objects of the control interface (docs/control.md, "Status object" and
//! `STAGE_END`): typed, unknown fields kept in `extra` (and otherwise ignored), `Option`
//! where the doc says `null`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A slice's `state`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SliceState {
    On,
    Off,
    /// The power key was pressed, the deadline runs.
    ShuttingDown,
    Stopping,
    Erasing,
    /// A state this client does not know.
    #[serde(untagged)]
    Other(String),
}

impl SliceState {
    /// The JSON name (`shutting-down`).
    pub fn as_str(&self) -> &str {
        match self {
            SliceState::On => "on",
            SliceState::Off => "off",
            SliceState::ShuttingDown => "shutting-down",
            SliceState::Stopping => "stopping",
            SliceState::Erasing => "erasing",
            SliceState::Other(name) => name,
        }
    }
}

impl fmt::Display for SliceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A slice's `role`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Manager,
    Tenant,
    /// A role this client does not know.
    #[serde(untagged)]
    Other(String),
}

impl Role {
    /// The JSON name.
    pub fn as_str(&self) -> &str {
        match self {
            Role::Manager => "manager",
            Role::Tenant => "tenant",
            Role::Other(name) => name,
        }
    }
}

/// The slice's NVMe share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeShare {
    pub bytes: u64,
    pub queues: u32,
}

/// One assigned NIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// Host PCI address (`01:00.0`).
    pub host: String,
    /// Address in the slice (`00:01.0`).
    pub slot: String,
    /// `vendor:device`.
    pub id: String,
    /// `null` when the hypervisor cannot read it.
    #[serde(default)]
    pub mac: Option<String>,
}

/// Where the slice's next start boots from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSource {
    /// `flashed`, `network` (the flashed firmware, network boot first) or `staged`.
    pub source: String,
    pub kernel: String,
    #[serde(default)]
    pub kernel_bytes: u64,
    #[serde(default)]
    pub kernel_sha256: Option<String>,
    #[serde(default)]
    pub initrd: Option<String>,
    #[serde(default)]
    pub initrd_bytes: Option<u64>,
    #[serde(default)]
    pub initrd_sha256: Option<String>,
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Fields this client does not know.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The node as `NODE` describes it: the hypervisor's version and memory, the staging pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub version: String,
    pub slices: u64,
    pub footprint_bytes: u64,
    pub heap_bytes: u64,
    pub heap_used_bytes: u64,
    pub staging: StagingPool,
}

/// The manager's staging pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagingPool {
    pub bytes: u64,
    pub used_bytes: u64,
}

/// The last RAM scrub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scrub {
    pub bytes: u64,
    pub ms: u64,
}

/// A slice's status object (`STATUS`, one element of `LIST`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceStatus {
    pub name: String,
    pub role: Role,
    pub state: SliceState,
    #[serde(default)]
    pub cores: Vec<u32>,
    #[serde(default)]
    pub memory_bytes: u64,
    #[serde(default)]
    pub nvme: Option<NvmeShare>,
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// Its flashed firmware can boot from the network first ([`crate::Client::boot_network`]).
    #[serde(default)]
    pub network_boot: bool,
    /// 0 when off.
    #[serde(default)]
    pub uptime_ms: u64,
    #[serde(default)]
    pub starts: u64,
    #[serde(default)]
    pub boot: Option<BootSource>,
    #[serde(default)]
    pub last_stop: Option<String>,
    #[serde(default)]
    pub scrub: Option<Scrub>,
    /// The last erase's report (its shape is the hypervisor's; `null` before the first).
    #[serde(default)]
    pub last_erase: Option<serde_json::Value>,
    /// Exit counters by cause, for the current or last run.
    #[serde(default)]
    pub exits: BTreeMap<String, u64>,
    /// Fields this client does not know (version 1 may add fields).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// `STAGE_END`'s answer: what the hypervisor holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedImage {
    /// `kernel` or `initrd`.
    pub kind: String,
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the bytes the hypervisor holds.
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of docs/control.md, "Status object".
    const DOC_EXAMPLE: &str = r#"{"name":"web","role":"tenant","state":"on","cores":[0,1],"memory_bytes":1073741824,
 "nvme":{"bytes":4294967296,"queues":3},
 "nics":[{"host":"01:00.0","slot":"00:01.0","id":"1af4:1041","mac":"52:54:00:6d:76:00"}],
 "uptime_ms":5230,"starts":1,
 "boot":{"source":"flashed","kernel":"linux","kernel_bytes":27303872,
         "kernel_sha256":"...","initrd":"initramfs.cpio.gz","initrd_bytes":1321399,
         "initrd_sha256":"...","cmdline":"console=ttyAMA0 ..."},
 "last_stop":"powered off (PSCI SYSTEM_OFF)",
 "scrub":{"bytes":1073741824,"ms":212},
 "last_erase":null,
 "exits":{"total":1234,"hypercall":10,"mmio":800}}"#;

    #[test]
    fn the_documented_example_parses() {
        let status: SliceStatus = serde_json::from_str(DOC_EXAMPLE).unwrap();
        assert_eq!(status.name, "web");
        assert_eq!(status.role, Role::Tenant);
        assert_eq!(status.state, SliceState::On);
        assert_eq!(status.cores, [0, 1]);
        assert_eq!(
            status.nvme,
            Some(NvmeShare {
                bytes: 4 << 30,
                queues: 3
            })
        );
        assert_eq!(status.nics[0].mac.as_deref(), Some("52:54:00:6d:76:00"));
        let boot = status.boot.as_ref().unwrap();
        assert_eq!(boot.kernel_bytes, 27_303_872);
        assert_eq!(boot.initrd.as_deref(), Some("initramfs.cpio.gz"));
        assert_eq!(
            status.scrub,
            Some(Scrub {
                bytes: 1 << 30,
                ms: 212
            })
        );
        assert_eq!(status.last_erase, None);
        assert_eq!(status.exits["mmio"], 800);
        assert!(status.extra.is_empty());
    }

    #[test]
    fn nulls_unknown_fields_and_unknown_states_are_accepted() {
        let text = r#"{"name":"p","role":"observer","state":"hibernating","cores":[2],
            "memory_bytes":1,"nvme":null,"nics":[{"host":"a","slot":"b","id":"c","mac":null}],
            "uptime_ms":0,"starts":0,"boot":{"source":"staged","kernel":"staged",
            "kernel_bytes":5,"initrd":null,"cmdline":null,"new":1},"last_stop":null,
            "scrub":null,"last_erase":{"bytes":5,"ms":1},"exits":{},"future":[1,2]}"#;
        let status: SliceStatus = serde_json::from_str(text).unwrap();
        assert_eq!(status.role, Role::Other("observer".into()));
        assert_eq!(status.state, SliceState::Other("hibernating".into()));
        assert_eq!(status.state.to_string(), "hibernating");
        assert_eq!(status.nvme, None);
        assert_eq!(status.nics[0].mac, None);
        assert_eq!(status.last_stop, None);
        assert_eq!(status.extra["future"], serde_json::json!([1, 2]));
        assert_eq!(status.boot.unwrap().extra["new"], serde_json::json!(1));
        // Kept fields go out again, so `--json` loses nothing.
        let again: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&status.extra).unwrap()).unwrap();
        assert_eq!(again["future"], serde_json::json!([1, 2]));
    }

    #[test]
    fn states_serialize_with_their_json_names() {
        for (state, name) in [
            (SliceState::ShuttingDown, "\"shutting-down\""),
            (SliceState::Erasing, "\"erasing\""),
            (SliceState::Other("x".into()), "\"x\""),
        ] {
            assert_eq!(serde_json::to_string(&state).unwrap(), name);
            assert_eq!(serde_json::from_str::<SliceState>(name).unwrap(), state);
        }
    }

    #[test]
    fn a_status_without_name_or_state_is_refused() {
        assert!(serde_json::from_str::<SliceStatus>(r#"{"role":"tenant","state":"on"}"#).is_err());
        assert!(serde_json::from_str::<SliceStatus>(r#"{"name":"a","role":"tenant"}"#).is_err());
        assert!(
            serde_json::from_str::<SliceStatus>(r#"{"name":7,"role":"x","state":"on"}"#).is_err()
        );
    }
}
