//! The service root (`/redfish/v1/`), the OData service document (`/redfish/v1/odata`) and
//! the CSDL metadata document (`/redfish/v1/$metadata`) that names the schema of every
//! resource type shown.

use serde::Serialize;

use super::{Link, SCHEMAS, link};

pub const ROOT: &str = "/redfish/v1/";
/// Redfish protocol version the service follows.
pub const REDFISH_VERSION: &str = "1.15.0";

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRoot {
    #[serde(rename = "@odata.id")]
    pub odata_id: &'static str,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: &'static str,
    pub name: &'static str,
    pub redfish_version: &'static str,
    #[serde(rename = "UUID")]
    pub uuid: String,
    pub product: &'static str,
    pub vendor: &'static str,
    pub protocol_features_supported: ProtocolFeatures,
    pub systems: Link,
    pub managers: Link,
    pub chassis: Link,
    pub session_service: Link,
    pub account_service: Link,
    pub links: RootLinks,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RootLinks {
    pub sessions: Link,
}

/// Query parameters: none are supported (`$expand`, `$select`, `$filter`, `only`, excerpts).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProtocolFeatures {
    pub expand_query: ExpandQuery,
    pub filter_query: bool,
    pub select_query: bool,
    pub only_member_query: bool,
    pub excerpt_query: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExpandQuery {
    pub expand_all: bool,
    pub levels: bool,
    pub links: bool,
    pub no_links: bool,
}

pub fn service_root(node_uuid: &str) -> ServiceRoot {
    ServiceRoot {
        odata_id: ROOT,
        odata_type: super::odata_type("ServiceRoot"),
        id: "RootService",
        name: "microvisor Redfish service",
        redfish_version: REDFISH_VERSION,
        uuid: node_uuid.to_string(),
        product: "microvisor",
        vendor: "microvisor",
        protocol_features_supported: ProtocolFeatures {
            expand_query: ExpandQuery {
                expand_all: false,
                levels: false,
                links: false,
                no_links: false,
            },
            filter_query: false,
            select_query: false,
            only_member_query: false,
            excerpt_query: false,
        },
        systems: link("/redfish/v1/Systems"),
        managers: link("/redfish/v1/Managers"),
        chassis: link("/redfish/v1/Chassis"),
        session_service: link("/redfish/v1/SessionService"),
        account_service: link("/redfish/v1/AccountService"),
        links: RootLinks {
            sessions: link("/redfish/v1/SessionService/Sessions"),
        },
    }
}

/// The service document: the top-level resources.
#[derive(Serialize)]
pub struct ServiceDocument {
    #[serde(rename = "@odata.context")]
    pub context: &'static str,
    pub value: Vec<ServiceEntry>,
}

#[derive(Serialize)]
pub struct ServiceEntry {
    pub name: &'static str,
    pub kind: &'static str,
    pub url: &'static str,
}

pub fn service_document() -> ServiceDocument {
    let entry = |name, url| ServiceEntry {
        name,
        kind: "Singleton",
        url,
    };
    ServiceDocument {
        context: "/redfish/v1/$metadata",
        value: vec![
            entry("Service", "/redfish/v1/"),
            entry("Systems", "/redfish/v1/Systems"),
            entry("Managers", "/redfish/v1/Managers"),
            entry("Chassis", "/redfish/v1/Chassis"),
            entry("SessionService", "/redfish/v1/SessionService"),
            entry("AccountService", "/redfish/v1/AccountService"),
            entry("Sessions", "/redfish/v1/SessionService/Sessions"),
        ],
    }
}

/// `$metadata`: a reference to every schema used (the unversioned namespace and the version
/// shown), and the service's entity container.
pub fn metadata() -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <edmx:Edmx xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\" Version=\"4.0\">\n",
    );
    let mut references: Vec<(&str, &str)> = SCHEMAS.to_vec();
    references.extend([
        ("Resource", "v1_0_0"),
        ("Message", "v1_1_1"),
        ("Settings", "v1_3_5"),
    ]);
    for (namespace, version) in references {
        xml.push_str(&format!(
            "  <edmx:Reference Uri=\"http://redfish.dmtf.org/schemas/v1/{namespace}_v1.xml\">\n\
             \x20   <edmx:Include Namespace=\"{namespace}\"/>\n"
        ));
        if !version.is_empty() {
            xml.push_str(&format!(
                "    <edmx:Include Namespace=\"{namespace}.{version}\"/>\n"
            ));
        }
        xml.push_str("  </edmx:Reference>\n");
    }
    let root_version = super::version("ServiceRoot");
    xml.push_str(&format!(
        "  <edmx:DataServices>\n\
         \x20   <Schema xmlns=\"http://docs.oasis-open.org/odata/ns/edm\" Namespace=\"Service\">\n\
         \x20     <EntityContainer Name=\"Service\" Extends=\"ServiceRoot.{root_version}.ServiceContainer\"/>\n\
         \x20   </Schema>\n\
         \x20 </edmx:DataServices>\n\
         </edmx:Edmx>\n"
    ));
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_references_every_schema() {
        let xml = metadata();
        assert!(xml.contains("<edmx:Include Namespace=\"ComputerSystem.v1_20_0\"/>"));
        assert!(xml.contains("ComputerSystemCollection_v1.xml"));
        assert!(xml.contains("Extends=\"ServiceRoot.v1_15_0.ServiceContainer\""));
        assert_eq!(xml.matches("<edmx:Reference").count(), SCHEMAS.len() + 3);
    }
}
