//! The machinery behind `cargo xtask`, also used by the QEMU integration tests (`tests/`):
//! set-up checks, building, ELF to flat images, the built-in Linux guest, the bundle image, node
//! profiles, QEMU command lines, the benchmarks and the Redfish conformance tools. `cmd` holds one module per subcommand.

pub mod bench;
pub mod build;
pub mod cmd;
pub mod console;
pub mod disk_image;
pub mod flat;
pub mod fuzz;
pub mod guest;
pub mod http;
pub mod image;
pub mod initramfs;
pub mod iso;
pub mod linux;
pub mod netboot;
pub mod network;
pub mod node;
pub mod progress;
pub mod qemu;
pub mod redfish_tools;
pub mod setup;
pub mod uboot_env;
pub mod workspace;

/// A plan error as an `anyhow` error: its one-line `Display` (slice, field, problem).
pub fn plan_error(error: microvisor_plan::PlanError) -> anyhow::Error {
    anyhow::anyhow!("{error}")
}
