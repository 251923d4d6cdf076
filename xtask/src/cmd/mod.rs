//! One module per `cargo xtask` subcommand: its arguments (clap derive, `///` as help text)
//! and its `run`.

pub mod bench;
pub mod build;
pub mod fuzz;
pub mod image;
pub mod linux;
pub mod plan;
pub mod qemu;
pub mod redfish_check;
pub mod run;
pub mod setup;
pub mod soak;
pub mod test;
