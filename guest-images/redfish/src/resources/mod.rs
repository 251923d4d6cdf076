//! The Redfish resources this service shows, as types named and shaped after their DMTF
//! schemas (the CSDL of each `@odata.type` below decides property names and types), one
//! file per resource family as the service tree has them:
//!
//! - [`root`]: the service root, `$metadata` and the OData service document.
//! - [`systems`]: `ComputerSystem` per slice and what hangs below it (processors, storage,
//!   NICs, virtual media).
//! - [`node`]: the one `Manager` and the one `Chassis` (the node).
//! - [`accounts`]: `SessionService`, sessions, `AccountService`, the account, its role.

use serde::Serialize;

pub mod accounts;
pub mod node;
pub mod root;
pub mod systems;

/// The schema version of every resource type the service shows (namespace, version):
/// `@odata.type` is `#<namespace>.<version>.<namespace>`, and `$metadata` references each.
pub const SCHEMAS: &[(&str, &str)] = &[
    ("ServiceRoot", "v1_15_0"),
    ("ComputerSystemCollection", ""),
    ("ComputerSystem", "v1_20_0"),
    ("ProcessorCollection", ""),
    ("Processor", "v1_18_0"),
    ("SimpleStorageCollection", ""),
    ("SimpleStorage", "v1_3_2"),
    ("StorageCollection", ""),
    ("Storage", "v1_15_0"),
    ("StorageControllerCollection", ""),
    ("StorageController", "v1_7_0"),
    ("Drive", "v1_17_0"),
    ("VolumeCollection", ""),
    ("Volume", "v1_9_0"),
    ("EthernetInterfaceCollection", ""),
    ("EthernetInterface", "v1_10_0"),
    ("VirtualMediaCollection", ""),
    ("VirtualMedia", "v1_6_0"),
    ("ManagerCollection", ""),
    ("Manager", "v1_19_0"),
    ("ChassisCollection", ""),
    ("Chassis", "v1_23_0"),
    ("SessionService", "v1_1_9"),
    ("SessionCollection", ""),
    ("Session", "v1_7_0"),
    ("AccountService", "v1_13_0"),
    ("ManagerAccountCollection", ""),
    ("ManagerAccount", "v1_11_0"),
    ("RoleCollection", ""),
    ("Role", "v1_3_2"),
];

/// The version [`SCHEMAS`] gives `namespace` ("" for a collection or one not listed).
pub fn version(namespace: &str) -> &'static str {
    SCHEMAS
        .iter()
        .find(|(n, _)| *n == namespace)
        .map(|(_, v)| *v)
        .unwrap_or_default()
}

/// `#<namespace>.<version>.<namespace>` (or `#<namespace>.<namespace>` for a collection).
pub fn odata_type(namespace: &str) -> String {
    let version = version(namespace);
    if version.is_empty() {
        format!("#{namespace}.{namespace}")
    } else {
        format!("#{namespace}.{version}.{namespace}")
    }
}

/// A reference to another resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Link {
    #[serde(rename = "@odata.id")]
    pub id: String,
}

pub fn link(id: impl Into<String>) -> Link {
    Link { id: id.into() }
}

/// `Resource.Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Status {
    pub state: &'static str,
    pub health: &'static str,
}

impl Status {
    pub const ENABLED: Status = Status {
        state: "Enabled",
        health: "OK",
    };
}

/// A resource collection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Collection {
    #[serde(rename = "@odata.id")]
    pub id: String,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Members")]
    pub members: Vec<Link>,
    #[serde(rename = "Members@odata.count")]
    pub count: usize,
}

impl Collection {
    /// The collection `namespace` at `id`, its members at `<id>/<member>`.
    pub fn new(namespace: &str, id: &str, name: &str, members: &[String]) -> Collection {
        Collection {
            id: id.to_string(),
            odata_type: odata_type(namespace),
            name: name.to_string(),
            members: members.iter().map(|m| link(format!("{id}/{m}"))).collect(),
            count: members.len(),
        }
    }
}

/// An action: where to POST it, and the allowable values of its parameter, when it has one
/// with a fixed set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Action {
    pub target: String,
    #[serde(flatten)]
    pub allowable: std::collections::BTreeMap<String, Vec<&'static str>>,
}

impl Action {
    pub fn new(target: String) -> Action {
        Action {
            target,
            allowable: Default::default(),
        }
    }

    /// The same action with `@Redfish.AllowableValues` for `parameter`.
    pub fn allow(mut self, parameter: &str, values: &[&'static str]) -> Action {
        self.allowable.insert(
            format!("{parameter}@Redfish.AllowableValues"),
            values.to_vec(),
        );
        self
    }
}

/// A UUID (RFC 4122 version 5 layout: name-based, SHA-based) derived from `name`: the same
/// node and slice always get the same one.
pub fn uuid_from(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&hash[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odata_types_carry_their_version() {
        assert_eq!(
            odata_type("ComputerSystem"),
            "#ComputerSystem.v1_20_0.ComputerSystem"
        );
        assert_eq!(
            odata_type("ComputerSystemCollection"),
            "#ComputerSystemCollection.ComputerSystemCollection"
        );
    }

    #[test]
    fn uuids_are_stable_and_well_formed() {
        let a = uuid_from("node/web");
        assert_eq!(a, uuid_from("node/web"));
        assert_ne!(a, uuid_from("node/db"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "5");
    }

    #[test]
    fn actions_list_allowable_values() {
        let a = Action::new("/x".into()).allow("ResetType", &["On", "ForceOff"]);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["target"], "/x");
        assert_eq!(json["ResetType@Redfish.AllowableValues"][1], "ForceOff");
    }
}
