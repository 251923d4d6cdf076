//! Integration test harness: boots QEMU scenarios and checks what the hypervisor and the guests
//! print on the node console.
//!
//! - [`console`]: console lines (`[hv]`, `[<slice>]`, bare) and the probe's `SLICE-REPORT`.
//! - [`expect`]: expectations as data, checked line by line.
//! - [`attack_lines`]: every attack a probe is asked for is attempted and concluded, never
//!   `unverified` (checked in every scenario).
//! - [`input`]: bytes typed on the node console when given lines appear (`Ctrl-A` focus, exit
//!   counters, shell commands).
//! - [`host_get`]: pages the host fetches from a slice through its forwarded host NIC port,
//!   and host scripts run against those ports.
//! - [`redfish`]: a small Redfish client for host scripts.
//! - [`runner`]: one QEMU process under a hard timeout, killed on drop, log always written.
//! - [`images`]: build once per test binary, per-scenario images and logs under `target/`.
//! - [`scenario`]: a node, a plan, a boot path and expectations; `run()` does the rest.
//! - [`disk`]: what the Linux guest's disk steps left in a node's disk file.
//! - [`build_errors`]: `cargo xtask image`, `plan` and `run` on plans that must be refused.
//! - [`firmware_dt`]: device trees handed over with `-dtb` (QEMU's own, recompiled, broken).
//! - [`layering`]: the kernel crate's modules import each other as a tree (host test).

pub mod attack_lines;
pub mod build_errors;
pub mod console;
pub mod disk;
pub mod expect;
pub mod firmware_dt;
pub mod host_get;
pub mod images;
pub mod input;
pub mod layering;
pub mod plans;
pub mod redfish;
pub mod runner;
pub mod scenario;

pub use expect::{Expect, Pattern, any, any_slice, hv, lit, slice};
pub use firmware_dt::FirmwareTree;
pub use host_get::{HOST_GET_TIMEOUT, HostGet};
pub use input::{
    DiskWrite, EXIT_COUNTERS, Input, POWER_KEY, Step, echo_of, focus, focused, run_step,
    shell_line, shell_pieces, shell_ready, shell_script, shell_steps,
};
pub use plans::{
    firmware_slice, linux_slice, plan, probe_canary, probe_slice, with_device, with_direct_queues,
    with_nvme,
};
pub use scenario::{
    BootPath, NATIVE_SLICE, NodeSpec, QEMU_NVME_QUEUES, Scenario, Tamper, linux_reserved_allowance,
};
