//! `cargo xtask`: the one entry point to build, image, boot and test the microvisor.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::cmd;

/// Build, image, boot and test the microvisor.
#[derive(Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Bench(cmd::bench::Args),
    Setup(cmd::setup::Args),
    Build(cmd::build::Args),
    Fuzz(cmd::fuzz::Args),
    Image(cmd::image::Args),
    Linux(cmd::linux::Args),
    Plan(cmd::plan::Args),
    Qemu(cmd::qemu::Args),
    RedfishCheck(cmd::redfish_check::Args),
    Run(cmd::run::Args),
    Soak(cmd::soak::Args),
    Test(cmd::test::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => cmd::bench::run(args),
        Command::Setup(args) => cmd::setup::run(args),
        Command::Build(args) => cmd::build::run(args),
        Command::Fuzz(args) => cmd::fuzz::run(args),
        Command::Image(args) => cmd::image::run(args),
        Command::Linux(args) => cmd::linux::run(args),
        Command::Plan(args) => cmd::plan::run(args),
        Command::Qemu(args) => cmd::qemu::run(args),
        Command::RedfishCheck(args) => cmd::redfish_check::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Soak(args) => cmd::soak::run(args),
        Command::Test(args) => cmd::test::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One line: the error and its context chain (`{:#}`), e.g. a plan error naming
            // the slice and the field.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
