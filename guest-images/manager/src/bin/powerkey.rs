//! `powerkey`: powers the slice off when the hypervisor presses its power key (GPIO line 3 of
//! the PL061 at 0x09030000, docs/control.md "Power key"), for kernels without `gpio-keys`.
//! Started in the background by the built-in Linux guest's `/init`.
//!
//! Finds the `/dev/gpiochipN` whose label or name mentions `9030000` or `pl061`, requests line
//! 3 as an input with rising-edge detection (GPIO character device uAPI v2), blocks reading
//! line events, and at the first rising edge runs `poweroff` (again every 5 s while it is
//! still running, since `/init` may not have handed over to busybox init yet; after 30 s
//! `poweroff -f`). Exits 0 without a word when there is no such chip or line, or when the
//! line is taken (a kernel with `gpio-keys` handles the key itself); 1 with one line on
//! stderr on any other failure.

use std::fs::File;
use std::io::Read;
use std::process::{Command, ExitCode};

use microvisor_control::gpio::{
    EVENT_RISING_EDGE, LINE_EVENT_LEN, LINE_FLAG_EDGE_RISING, LINE_FLAG_INPUT, LineEvent,
    LineRequest,
};
use microvisor_control::sys;

/// The power key's line on the PL061.
const POWER_KEY_LINE: u32 = 3;
/// Tries of `poweroff` before `poweroff -f`, and the wait after each.
const POWEROFF_TRIES: u32 = 6;
const POWEROFF_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
/// What runs `poweroff`, tried in order (busybox installs its applet links at boot).
const POWEROFF: [(&str, &[&str]); 3] = [
    ("/sbin/poweroff", &[]),
    ("/bin/poweroff", &[]),
    ("/bin/busybox", &["poweroff"]),
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("powerkey: {e}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<(), String> {
    let Some((path, chip)) = find_chip() else {
        return Ok(());
    };
    let mut request = LineRequest::single(
        POWER_KEY_LINE,
        LINE_FLAG_INPUT | LINE_FLAG_EDGE_RISING,
        "powerkey",
    );
    let mut line = match sys::gpio_get_line(&chip, &mut request) {
        Ok(line) => line,
        // Taken (gpio-keys has it) or not there: nothing to do.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EINVAL)) => return Ok(()),
        Err(e) => return Err(format!("requesting line {POWER_KEY_LINE} of {path}: {e}")),
    };
    loop {
        let mut bytes = [0u8; LINE_EVENT_LEN];
        match line.read_exact(&mut bytes) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading events of {path}: {e}")),
        }
        if LineEvent::parse(&bytes).id == EVENT_RISING_EDGE {
            break;
        }
    }
    println!("powerkey: power key pressed, powering off");
    // `poweroff` asks PID 1; while `/init` is still the shell script (before it execs busybox
    // init) the request is lost, so ask again, and in the end force it.
    for _ in 0..POWEROFF_TRIES {
        poweroff(&[])?;
        std::thread::sleep(POWEROFF_RETRY);
    }
    poweroff(&["-f"])?;
    std::thread::sleep(POWEROFF_RETRY);
    Err("still running after poweroff -f".into())
}

/// Runs busybox `poweroff` with `args`, waits for it.
fn poweroff(args: &[&str]) -> Result<(), String> {
    let mut last = String::new();
    for (program, first) in POWEROFF {
        match Command::new(program).args(first).args(args).status() {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{program}: {e}"),
        }
    }
    Err(format!("cannot run poweroff ({last})"))
}

/// The PL061's chip device, if the kernel has one.
fn find_chip() -> Option<(String, File)> {
    let mut names: Vec<String> = std::fs::read_dir("/dev")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("gpiochip"))
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let path = format!("/dev/{name}");
        let chip = File::open(&path).ok()?;
        let info = sys::gpio_chip_info(&chip).ok()?;
        (info.is_power_key_chip() && info.lines > POWER_KEY_LINE).then_some((path, chip))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_power_key_is_line_3_rising() {
        let r = LineRequest::single(
            POWER_KEY_LINE,
            LINE_FLAG_INPUT | LINE_FLAG_EDGE_RISING,
            "powerkey",
        );
        assert_eq!(r.offsets[0], 3);
        assert_eq!(r.config.flags & LINE_FLAG_EDGE_RISING, 1 << 4);
    }
}
