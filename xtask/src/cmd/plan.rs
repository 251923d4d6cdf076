//! `cargo xtask plan`: validate a plan and show where each slice would go on a node.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use microvisor_plan::{
    BuiltIn, Cores, DeviceRequest, HumanSize, ImageSource, NodePci, OnFault, Plan, format_cores,
    place, place_devices,
};

use crate::node::{HYPERVISOR_RESERVE, Node, RAM_BASE};
use crate::workspace::Workspace;

/// Validate a plan and print where each slice would be placed on a node.
#[derive(clap::Args)]
pub struct Args {
    /// Plan file (TOML; default: the node's default plan).
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Node profile: a name in qemu/ or a path to a profile file.
    #[arg(long, default_value = "default")]
    pub node: String,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let ws = Workspace::locate()?;
    let node = Node::load(&ws, &args.node)?;
    let path = match args.plan {
        Some(plan) => plan,
        None => node.default_plan()?.to_path_buf(),
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("plan {}: cannot read it", path.display()))?;
    let plan = Plan::from_toml(&text).map_err(|e| anyhow!("plan {}: {e}", path.display()))?;
    print!(
        "{}",
        report(&plan, &node).map_err(|e| anyhow!("plan {}: {e}", path.display()))?
    );
    Ok(ExitCode::SUCCESS)
}

/// The placement table of `plan` on `node`, or the plan error that stops it.
pub fn report(plan: &Plan, node: &Node) -> Result<String, microvisor_plan::PlanError> {
    let placement = place(plan, &node.hardware())?;
    let pci = node.pci_functions();
    let devices = place_devices(plan, &pci)?;
    let mut out = format!(
        "node {}: {} cores, {} RAM at {RAM_BASE:#x}\n",
        node.name,
        node.cores,
        HumanSize(node.memory)
    );
    out.push_str(&pci_line(&pci));
    out.push_str(&format!(
        "assuming the hypervisor keeps the first {} of RAM (its real footprint is printed at boot)\n",
        HumanSize(HYPERVISOR_RESERVE)
    ));
    let mut rows = vec![[
        "slice".to_string(),
        "cores".to_string(),
        "ram".to_string(),
        "kernel".to_string(),
        "on-fault".to_string(),
    ]];
    let mut used = 0;
    let mut cores_used = 0;
    for (slice, at) in plan.slices.iter().zip(&placement.slices) {
        let listed = match slice.cores {
            Cores::Count(_) => "",
            Cores::List(_) => " (listed)",
        };
        rows.push([
            slice.name.clone(),
            format!("{}{listed}", format_cores(&at.cores)),
            format!(
                "{:#x}-{:#x} ({})",
                at.ram.base,
                at.ram.end(),
                HumanSize(at.ram.size)
            ),
            kernel_name(&slice.kernel),
            match slice.on_fault {
                OnFault::Stop => "stop".into(),
                OnFault::Restart => "restart".into(),
                OnFault::Exception => "exception".into(),
            },
        ]);
        used += at.ram.size;
        cores_used += at.cores.len() as u32;
    }
    out.push_str(&table(&rows));
    out.push_str(&device_table(plan, node, &pci, &devices));
    // Only reached when place_devices succeeded, so this cannot fail on the devices.
    if let Ok(networks) = crate::network::slice_networks(plan, node, &[]) {
        for slice in networks {
            out.push_str(&format!("{slice}\n"));
        }
    }
    if let (Some(staging), Some(manager)) = (placement.staging, plan.manager()) {
        out.push_str(&format!(
            "slice {}: staging pool {:#x}-{:#x} ({}): the control window and staged images\n",
            plan.slices[manager].name,
            staging.base,
            staging.end(),
            HumanSize(staging.size)
        ));
        used += staging.size;
    }
    let usable = node.memory - HYPERVISOR_RESERVE;
    out.push_str(&format!(
        "uses {cores_used} of {} cores and {} of {} usable RAM\n",
        node.cores,
        HumanSize(used),
        HumanSize(usable)
    ));
    Ok(out)
}

/// One line naming the node's PCI functions and whether an SMMUv3 guards them.
fn pci_line(pci: &NodePci) -> String {
    let functions: Vec<String> = pci
        .functions
        .iter()
        .map(|f| {
            if pci.hypervisor_nvme == Some(f.address) {
                format!("{f} (the hypervisor's NVMe controller)")
            } else {
                f.to_string()
            }
        })
        .collect();
    let smmu = if pci.smmu {
        "behind an SMMUv3"
    } else {
        "no SMMUv3, so none can be given to a slice"
    };
    format!("pci: {}; {smmu}\n", functions.join(", "))
}

/// A line per device per slice: what the slice asks for and the function it gets (nothing
/// when no slice asks for a device).
fn device_table(
    plan: &Plan,
    node: &Node,
    pci: &NodePci,
    devices: &[Vec<microvisor_plan::PciAddress>],
) -> String {
    let mut rows = vec![[
        "slice".to_string(),
        "device".to_string(),
        "gets".to_string(),
    ]];
    for (slice, given) in plan.slices.iter().zip(devices) {
        for (request, address) in slice.devices.iter().zip(given) {
            let asked = match request {
                DeviceRequest::Pci(address) => format!("pci = \"{address}\""),
                DeviceRequest::Class(class) => format!("class = \"{}\"", class.name()),
            };
            let mut gets = pci
                .functions
                .iter()
                .find(|f| f.address == *address)
                .map_or_else(|| address.to_string(), ToString::to_string);
            if let Some((index, nic)) = node.nic_at(*address) {
                gets.push_str(&format!(
                    " ({} network, MAC {})",
                    nic.network.name(),
                    Node::nic_mac(index)
                ));
            }
            rows.push([slice.name.clone(), asked, gets]);
        }
    }
    if rows.len() == 1 {
        return String::new();
    }
    table(&rows)
}

/// Rows as columns padded to their widest cell, two spaces apart.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn kernel_name(source: &ImageSource) -> String {
    match source {
        ImageSource::BuiltIn(BuiltIn::Probe) => "probe".into(),
        ImageSource::BuiltIn(BuiltIn::Linux) => "linux".into(),
        ImageSource::BuiltIn(BuiltIn::Firmware) => "firmware".into(),
        ImageSource::Path(p) => p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
[[slice]]
name = "web"
cores = 3
memory = "1GiB"
kernel = "probe"
[[slice]]
name = "db"
cores = [5, 6, 7]
memory = "768MiB"
kernel = "probe"
"#;

    #[test]
    fn prints_cores_and_ram_top_down() {
        let node = Node::inline("n", 8, 4 << 30);
        let table = report(&Plan::from_toml(PLAN).unwrap(), &node).unwrap();
        assert!(table.contains("first 64 MiB"), "{table}");
        assert!(
            table.contains(
                "web    0-2           0x100000000-0x140000000 (1 GiB)   probe   exception"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "db     5-7 (listed)  0xd0000000-0x100000000 (768 MiB)  probe   exception"
            ),
            "{table}"
        );
        assert!(table.contains("uses 6 of 8 cores"), "{table}");
    }

    #[test]
    fn names_the_pci_functions_and_the_smmu() {
        let mut node = Node::inline("n", 8, 4 << 30);
        let table = report(&Plan::from_toml(PLAN).unwrap(), &node).unwrap();
        assert!(
            table.contains(
                "pci: 00:00.0 host bridge 1b36:0008; no SMMUv3, so none can be given to a slice\n"
            ),
            "{table}"
        );
        assert!(
            !table.contains("gets"),
            "no device table without devices: {table}"
        );
        node.disks.push(crate::node::Disk { size: 1 << 30 });
        node.iommu = Some(crate::node::Iommu::Smmuv3);
        let table = report(&Plan::from_toml(PLAN).unwrap(), &node).unwrap();
        assert!(
            table.contains(
                "pci: 00:00.0 host bridge 1b36:0008, 00:02.0 nvme 1b36:0010 (the hypervisor's \
                 NVMe controller); behind an SMMUv3\n"
            ),
            "{table}"
        );
    }

    #[test]
    fn prints_a_line_per_device() {
        let mut node = Node::inline("n", 8, 4 << 30);
        node.iommu = Some(crate::node::Iommu::Smmuv3);
        for _ in 0..3 {
            node.disks.push(crate::node::Disk { size: 1 << 30 });
        }
        let plan = format!(
            "{PLAN}[slice.nvme]\nqueues = 1\nsize = \"64MiB\"\n\
             [[slice.device]]\nclass = \"nvme\"\n[[slice.device]]\npci = \"00:03.0\"\n"
        );
        let table = report(&Plan::from_toml(&plan).unwrap(), &node).unwrap();
        assert!(
            table.contains(
                "slice  device           gets\n\
                 db     class = \"nvme\"   00:04.0 nvme 1b36:0010\n\
                 db     pci = \"00:03.0\"  00:03.0 nvme 1b36:0010\n"
            ),
            "{table}"
        );
    }

    #[test]
    fn nics_show_their_network_and_each_slice_how_it_is_reached() {
        use crate::node::{Network, Nic};
        let mut node = Node::inline("n", 8, 4 << 30);
        node.iommu = Some(crate::node::Iommu::Smmuv3);
        for network in [Network::Slices, Network::Host] {
            node.nics.push(Nic::on(network));
        }
        let plan = format!(
            "{PLAN}cmdline = \"microvisor.ip=52:54:00:6d:76:00:10.10.0.2/24\"\n\
             [[slice.device]]\nclass = \"net\"\n[[slice.device]]\nclass = \"net\"\n"
        );
        let table = report(&Plan::from_toml(&plan).unwrap(), &node).unwrap();
        assert!(
            table.contains(
                "pci: 00:00.0 host bridge 1b36:0008, 00:10.0 PCI-to-PCI bridge 1b36:000c, \
                 01:00.0 net 1af4:1041, 00:11.0 PCI-to-PCI bridge 1b36:000c, 02:00.0 net 1af4:1041; \
                 behind an SMMUv3\n"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "db     class = \"net\"  01:00.0 net 1af4:1041 (slices network, MAC 52:54:00:6d:76:00)\n\
                 db     class = \"net\"  02:00.0 net 1af4:1041 (host network, MAC 52:54:00:6d:76:01)\n"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "slice db: slices 10.10.0.2/24 [01:00.0 52:54:00:6d:76:00]; host DHCP \
                 [02:00.0 52:54:00:6d:76:01]\n"
            ),
            "{table}"
        );
    }

    #[test]
    fn a_device_the_node_cannot_give_is_refused_with_the_hypervisors_words() {
        let node = Node::inline("n", 8, 4 << 30);
        let plan = format!("{PLAN}[[slice.device]]\nclass = \"net\"\n");
        let err = report(&Plan::from_toml(&plan).unwrap(), &node)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "slice \"db\": device class net: the node has no SMMUv3, its DMA could not be confined"
        );
    }

    #[test]
    fn a_plan_that_does_not_fit_names_the_slice() {
        let node = Node::inline("n", 4, 1 << 30);
        let err = report(&Plan::from_toml(PLAN).unwrap(), &node)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("slice \"db\"") && err.contains("core 5 does not exist"),
            "{err}"
        );
    }
}
