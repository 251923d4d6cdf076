//! How each slice of a plan is reached on a node: which of the node's NICs it gets
//! (`[[slice.device]]`, placed by `microvisor_plan::place_devices`), the static slice-network
//! address its command line gives (`microvisor.ip=`), and the loopback URL that reaches its
//! port 80 through a `network = "host"` NIC. `cargo xtask run` prints it before booting.

use std::fmt;

use anyhow::{Result, anyhow};
use microvisor_plan::{PciAddress, Plan, place_devices};

use crate::node::{Mac, Network, Node};
use crate::qemu::HostForward;

/// The NICs of one slice and how to reach it through them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceNetwork {
    pub slice: String,
    /// The slice's NICs, in its `[[slice.device]]` order.
    pub nics: Vec<SliceNic>,
    /// Every `microvisor.ip=` of its command line, as written (`<name-or-MAC>:<addr>/<prefix>`).
    pub static_addresses: Vec<String>,
}

/// One NIC of a slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceNic {
    pub address: PciAddress,
    pub mac: Mac,
    pub network: Network,
    /// Its static address (`a.b.c.d/n`), when a `microvisor.ip=` names its MAC.
    pub ipv4: Option<String>,
    /// `http://127.0.0.1:<port>/` for a host NIC whose port is known.
    pub url: Option<String>,
}

/// The `microvisor.ip=` values of a kernel command line, in order.
pub fn static_addresses(cmdline: &str) -> Vec<String> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("microvisor.ip="))
        .map(String::from)
        .collect()
}

/// The address (`a.b.c.d/n`) the last `microvisor.ip=<MAC>:<addr>` of `specs` gives `mac`.
fn address_for(specs: &[String], mac: Mac) -> Option<String> {
    let mac = mac.to_string();
    specs
        .iter()
        .filter_map(|spec| spec.rsplit_once(':'))
        .filter(|(who, _)| who.eq_ignore_ascii_case(&mac))
        .map(|(_, address)| address.to_string())
        .next_back()
}

/// Per slice with at least one of the node's NICs: its NICs, addresses and URLs. `forwards`
/// are the ports of this boot (empty before launch: no URLs then).
pub fn slice_networks(
    plan: &Plan,
    node: &Node,
    forwards: &[HostForward],
) -> Result<Vec<SliceNetwork>> {
    let placed = place_devices(plan, &node.pci_functions()).map_err(|e| anyhow!("{e}"))?;
    let mut out = Vec::new();
    for (slice, given) in plan.slices.iter().zip(placed) {
        let specs = static_addresses(&slice.cmdline);
        let nics: Vec<SliceNic> = given
            .iter()
            .filter_map(|&address| {
                let (index, nic) = node.nic_at(address)?;
                let mac = Node::nic_mac(index);
                Some(SliceNic {
                    address,
                    mac,
                    network: nic.network,
                    ipv4: address_for(&specs, mac),
                    url: forwards
                        .iter()
                        .find(|f| f.nic == index)
                        .map(HostForward::url),
                })
            })
            .collect();
        if !nics.is_empty() {
            out.push(SliceNetwork {
                slice: slice.name.clone(),
                nics,
                static_addresses: specs,
            });
        }
    }
    Ok(out)
}

/// Where the manager's Redfish service is reached from the host in this boot: the HTTPS
/// port forwarded to the manager's host NIC (`None` without a manager or one without a host
/// NIC).
pub fn redfish_url(plan: &Plan, node: &Node, forwards: &[HostForward]) -> Result<Option<String>> {
    let Some(manager) = plan.manager() else {
        return Ok(None);
    };
    let placed = place_devices(plan, &node.pci_functions()).map_err(|e| anyhow!("{e}"))?;
    Ok(placed.get(manager).and_then(|given| {
        forwards
            .iter()
            .find(|f| given.contains(&f.address))
            .map(|f| format!("{}redfish/v1/", f.https_url()))
    }))
}

impl fmt::Display for SliceNetwork {
    /// `slice web: slices 10.10.0.1/24 [01:00.0 52:54:00:6d:76:00]; host DHCP
    /// http://127.0.0.1:40211/ [02:00.0 52:54:00:6d:76:01]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slice {}:", self.slice)?;
        for (i, nic) in self.nics.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            let by_name: Vec<&str> = self
                .static_addresses
                .iter()
                .filter(|spec| spec.split(':').count() == 2)
                .map(String::as_str)
                .collect();
            let how = match (&nic.ipv4, nic.network) {
                (Some(ip), _) => ip.clone(),
                (None, Network::Host) => "DHCP".to_string(),
                (None, Network::Slices) if !by_name.is_empty() => {
                    format!("microvisor.ip={} (by interface name)", by_name.join(","))
                }
                (None, Network::Slices) => {
                    "no address (no microvisor.ip= names its MAC)".to_string()
                }
            };
            write!(f, "{sep}{} {how}", nic.network.name())?;
            if let Some(url) = &nic.url {
                write!(f, " {url}")?;
            }
            write!(f, " [{} {}]", nic.address, nic.mac)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Nic;

    fn node() -> Node {
        let mut node = Node::inline("n", 4, 2 << 30);
        node.iommu = Some(crate::node::Iommu::Smmuv3);
        for network in [
            Network::Slices,
            Network::Host,
            Network::Slices,
            Network::Host,
        ] {
            node.nics.push(Nic::on(network));
        }
        node
    }

    const PLAN: &str = r#"
[[slice]]
name = "web"
cores = 1
memory = "256MiB"
kernel = "linux"
cmdline = "microvisor.ip=52:54:00:6D:76:00:10.10.0.1/24 microvisor.httpd=1"
[[slice.device]]
class = "net"
[[slice.device]]
class = "net"
[[slice]]
name = "probe"
cores = 1
memory = "64MiB"
kernel = "probe"
[[slice]]
name = "db"
cores = 1
memory = "256MiB"
kernel = "linux"
cmdline = "microvisor.ip=eth0:10.10.0.2/24"
[[slice.device]]
pci = "03:00.0"
"#;

    #[test]
    fn the_redfish_url_is_the_managers_forwarded_https_port() {
        let node = node();
        let forward = |nic: usize, port: u16| HostForward {
            nic,
            address: Node::nic_address(nic).unwrap(),
            mac: Node::nic_mac(nic),
            port,
            https_port: port + 1,
        };
        let forwards = [forward(1, 40211), forward(3, 40213)];
        let without = Plan::from_toml(PLAN).unwrap();
        assert_eq!(redfish_url(&without, &node, &forwards).unwrap(), None);
        let with = Plan::from_toml(&format!(
            "{PLAN}[[slice]]\nname = \"m\"\nrole = \"manager\"\ncores = 1\nmemory = \"256MiB\"\n\
             kernel = \"linux\"\n[[slice.device]]\npci = \"04:00.0\"\n"
        ))
        .unwrap();
        assert_eq!(
            redfish_url(&with, &node, &forwards).unwrap().as_deref(),
            Some("https://127.0.0.1:40214/redfish/v1/")
        );
    }

    #[test]
    fn each_slice_with_nics_gets_its_address_and_url() {
        let plan = Plan::from_toml(PLAN).unwrap();
        let node = node();
        let forwards = [HostForward {
            nic: 1,
            address: Node::nic_address(1).unwrap(),
            mac: Node::nic_mac(1),
            port: 40211,
            https_port: 40212,
        }];
        let nets = slice_networks(&plan, &node, &forwards).unwrap();
        assert_eq!(nets.len(), 2, "the probe has no NIC: {nets:?}");
        assert_eq!(
            nets[0].to_string(),
            "slice web: slices 10.10.0.1/24 [01:00.0 52:54:00:6d:76:00]; \
             host DHCP http://127.0.0.1:40211/ [02:00.0 52:54:00:6d:76:01]"
        );
        assert_eq!(
            nets[1].to_string(),
            "slice db: slices microvisor.ip=eth0:10.10.0.2/24 (by interface name) \
             [03:00.0 52:54:00:6d:76:02]"
        );
        assert_eq!(nets[1].static_addresses, ["eth0:10.10.0.2/24"]);
        let before = slice_networks(&plan, &node, &[]).unwrap();
        assert_eq!(before[0].nics[1].url, None);
    }

    #[test]
    fn the_default_plan_puts_every_tenant_linux_slice_on_both_networks() {
        let dir = crate::workspace::source_root().join("qemu");
        let node = Node::from_toml(
            "default",
            &std::fs::read_to_string(dir.join("default.toml")).unwrap(),
            &dir,
        )
        .unwrap();
        let plan =
            Plan::from_toml(&std::fs::read_to_string(node.plan.clone().unwrap()).unwrap()).unwrap();
        let nets = slice_networks(&plan, &node, &[]).unwrap();
        let linux: Vec<&str> = plan
            .slices
            .iter()
            .filter(|s| {
                s.kernel == microvisor_plan::ImageSource::BuiltIn(microvisor_plan::BuiltIn::Linux)
                    && !s.role.is_manager()
            })
            .map(|s| s.name.as_str())
            .collect();
        let (managers, tenants): (Vec<_>, Vec<_>) = nets.iter().partition(|n| {
            plan.slices
                .iter()
                .any(|s| s.name == n.slice && s.role.is_manager())
        });
        let with_nics: Vec<&str> = tenants.iter().map(|n| n.slice.as_str()).collect();
        assert_eq!(with_nics, linux);
        // The manager is on the host network only.
        assert_eq!(managers.len(), 1);
        let networks: Vec<Network> = managers[0].nics.iter().map(|n| n.network).collect();
        assert_eq!(networks, [Network::Host]);
        let nets = tenants;
        let mut addresses = Vec::new();
        for net in &nets {
            let networks: Vec<Network> = net.nics.iter().map(|n| n.network).collect();
            assert_eq!(networks, [Network::Slices, Network::Host], "{net}");
            let ip = net.nics[0].ipv4.clone().unwrap_or_else(|| panic!("{net}"));
            assert!(ip.starts_with("10.10.0.") && ip.ends_with("/24"), "{net}");
            addresses.push(ip);
            let cmdline = &plan
                .slices
                .iter()
                .find(|s| s.name == net.slice)
                .unwrap()
                .cmdline;
            assert!(cmdline.contains("microvisor.httpd=1"), "{cmdline}");
        }
        addresses.sort();
        addresses.dedup();
        assert_eq!(addresses.len(), nets.len(), "distinct addresses");
    }

    #[test]
    fn a_plan_the_node_cannot_serve_is_an_error() {
        let plan = Plan::from_toml(PLAN).unwrap();
        let mut node = node();
        node.nics.truncate(1);
        assert!(slice_networks(&plan, &node, &[]).is_err());
    }
}
