//! `cargo xtask plan`: validate a plan and show where each slice would go on a node.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use microvisor_plan::{BuiltIn, Cores, HumanSize, ImageSource, OnFault, Plan, format_cores, place};

use crate::node::{HYPERVISOR_RESERVE, Node, RAM_BASE};
use crate::workspace::Workspace;

/// Validate a plan and print where each slice would be placed on a node.
#[derive(clap::Args)]
pub struct Args {
    /// Plan file (TOML).
    #[arg(long)]
    pub plan: PathBuf,
    /// Node profile: a name in qemu/ or a path to a profile file.
    #[arg(long, default_value = "default")]
    pub node: String,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let ws = Workspace::locate()?;
    let node = Node::load(&ws, &args.node)?;
    let text = std::fs::read_to_string(&args.plan)
        .with_context(|| format!("plan {}: cannot read it", args.plan.display()))?;
    let plan = Plan::from_toml(&text).map_err(|e| anyhow!("plan {}: {e}", args.plan.display()))?;
    print!(
        "{}",
        report(&plan, &node).map_err(|e| anyhow!("plan {}: {e}", args.plan.display()))?
    );
    Ok(ExitCode::SUCCESS)
}

/// The placement table of `plan` on `node`, or the plan error that stops it.
pub fn report(plan: &Plan, node: &Node) -> Result<String, microvisor_plan::PlanError> {
    let placement = place(plan, &node.hardware())?;
    let mut out = format!(
        "node {}: {} cores, {} RAM at {RAM_BASE:#x}\n",
        node.name,
        node.cores,
        HumanSize(node.memory)
    );
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
            },
        ]);
        used += at.ram.size;
        cores_used += at.cores.len() as u32;
    }
    out.push_str(&table(&rows));
    let usable = node.memory - HYPERVISOR_RESERVE;
    out.push_str(&format!(
        "uses {cores_used} of {} cores and {} of {} usable RAM\n",
        node.cores,
        HumanSize(used),
        HumanSize(usable)
    ));
    Ok(out)
}

/// Rows as columns padded to their widest cell, two spaces apart.
fn table(rows: &[[String; 5]]) -> String {
    let mut widths = [0usize; 5];
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
            table.contains("web    0-2           0x100000000-0x140000000 (1 GiB)   probe   stop"),
            "{table}"
        );
        assert!(
            table.contains("db     5-7 (listed)  0xd0000000-0x100000000 (768 MiB)  probe   stop"),
            "{table}"
        );
        assert!(table.contains("uses 6 of 8 cores"), "{table}");
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
