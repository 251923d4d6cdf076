//! `microvisorctl`: powers, restarts, re-images, erases and watches the node's slices from the
//! manager slice, through the control interface (docs/control.md). `microvisorctl --help`
//! lists the commands and the exit codes.

mod args;
mod commands;

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::Duration;

use microvisor_control::{Client, DevMemTransport, sys};

use args::Command;
use commands::{Failure, Input};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("microvisorctl: {}", failure.line());
            ExitCode::from(failure.exit_code())
        }
    }
}

fn run(args: &[String]) -> Result<(), Failure> {
    let invocation = args::parse(args).map_err(Failure::Usage)?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if invocation.command == Command::Help {
        out.write_all(args::USAGE.as_bytes())?;
        return Ok(());
    }
    let mut client = Client::new(DevMemTransport::open()?);
    if let Command::Console { slice, tail: None } = &invocation.command {
        return console(&mut client, slice, &mut out);
    }
    let read_file = |path: &std::path::Path| std::fs::read(path);
    commands::run(
        &mut client,
        &invocation.command,
        invocation.json,
        &read_file,
        &mut out,
    )
}

/// The interactive console on this terminal: raw mode while it runs, restored after.
fn console(
    client: &mut Client<DevMemTransport>,
    slice: &str,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    // Fail before touching the terminal when the slice is not there.
    client.status(slice)?;
    let stdin = io::stdin();
    let fd = stdin.as_raw_fd();
    eprint!("[console of {slice}: Ctrl-] leaves]\r\n");
    let raw = sys::RawTerminal::enter(fd)?;
    let mut input = |timeout: Duration| -> io::Result<Input> {
        if !sys::readable(fd, timeout)? {
            return Ok(Input::Idle);
        }
        let mut buffer = [0u8; 1024];
        let n = sys::read_fd(fd, &mut buffer)?;
        Ok(if n == 0 {
            Input::End
        } else {
            Input::Bytes(buffer[..n].to_vec())
        })
    };
    let result = commands::interactive(client, slice, &mut input, out);
    drop(raw);
    eprint!("\r\n[left the console of {slice}]\r\n");
    result
}
