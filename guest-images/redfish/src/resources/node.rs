//! The node itself: one `Manager` (the microvisor with this service, `ManagerType` `BMC`:
//! what fleet tools expect to talk to) that manages every slice's system, and one `Chassis`
//! that holds them.

use serde::Serialize;

use super::{Link, Status, link, odata_type, systems::system_id, uuid_from};

pub const MANAGERS: &str = "/redfish/v1/Managers";
pub const CHASSIS: &str = "/redfish/v1/Chassis";
/// Id of the one manager and the one chassis.
pub const NODE: &str = "node";

pub fn manager_id() -> String {
    format!("{MANAGERS}/{NODE}")
}

pub fn chassis_id() -> String {
    format!("{CHASSIS}/{NODE}")
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Manager {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub manager_type: &'static str,
    pub firmware_version: String,
    pub model: &'static str,
    #[serde(rename = "UUID")]
    pub uuid: String,
    pub power_state: &'static str,
    pub status: Status,
    pub links: ManagerLinks,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManagerLinks {
    pub manager_for_servers: Vec<Link>,
    pub manager_for_chassis: Vec<Link>,
}

/// The manager; `version` is the microvisor's, `systems` the slices it shows.
pub fn manager(version: &str, node_uuid: &str, systems: &[String]) -> Manager {
    Manager {
        odata_id: manager_id(),
        odata_type: odata_type("Manager"),
        id: NODE,
        name: "microvisor",
        description: "The node's microvisor: it partitions the node into slices and manages them",
        manager_type: "BMC",
        firmware_version: version.to_string(),
        model: "microvisor",
        uuid: uuid_from(&format!("{node_uuid}/manager")),
        power_state: "On",
        status: Status::ENABLED,
        links: ManagerLinks {
            manager_for_servers: systems.iter().map(|s| link(system_id(s))).collect(),
            manager_for_chassis: vec![link(chassis_id())],
        },
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Chassis {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: &'static str,
    pub name: &'static str,
    pub chassis_type: &'static str,
    pub power_state: &'static str,
    pub status: Status,
    pub links: ChassisLinks,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChassisLinks {
    pub computer_systems: Vec<Link>,
    pub managed_by: Vec<Link>,
}

pub fn chassis(systems: &[String]) -> Chassis {
    Chassis {
        odata_id: chassis_id(),
        odata_type: odata_type("Chassis"),
        id: NODE,
        name: "The node",
        chassis_type: "RackMount",
        power_state: "On",
        status: Status::ENABLED,
        links: ChassisLinks {
            computer_systems: systems.iter().map(|s| link(system_id(s))).collect(),
            managed_by: vec![link(manager_id())],
        },
    }
}
