//! `probe`: the bare-metal guest of the microvisor. It boots like a Linux
//! kernel (arm64 `Image`, EL1, MMU off, DTB in x0) in a slice or natively on
//! QEMU `virt`, brings up every CPU its device tree lists, tests all of its
//! RAM from all CPUs, prints one `SLICE-REPORT {json}` line and `PROBE PASS` /
//! `PROBE FAIL <reasons>`, runs the isolation attacks named on its command
//! line, then prints `HEARTBEAT <n> ok` lines. See `README.md` for the line
//! formats and the options.
//!
//! The pure logic lives in the `microvisor_probe` library (host-tested); the
//! hardware side is in [`bare`], built only for `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod bare;

/// The probe only makes sense as a bare-metal guest; a host build is a stub so
/// that workspace-wide host builds succeed.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("probe is a bare-metal guest: build it with --target aarch64-unknown-none");
    std::process::exit(2);
}
