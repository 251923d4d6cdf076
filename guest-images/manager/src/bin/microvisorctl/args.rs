//! The command line of `microvisorctl`, parsed by hand (the binary stays small).

use std::path::PathBuf;
use std::time::Duration;

/// Usage text (`microvisorctl --help`).
pub const USAGE: &str = "\
usage: microvisorctl [--json] COMMAND [ARGS]

Controls the node's slices from the manager slice (docs/control.md).

commands:
  list                              every slice: state, cores, memory, disk, boot source
  status NAME                       one slice in detail
  node                              the hypervisor: version, footprint, heap, staging pool
  on NAME                           start a slice that is off
  off NAME                          force a slice off at once
  restart NAME                      force a restart (an off slice is started)
  shutdown NAME [--timeout SECS] [--wait]
                                    press its power key; forced off after SECS (default 60);
                                    --wait: return once it is off
  boot NAME [--kernel FILE] [--initrd FILE | --no-initrd] [--cmdline TEXT] [--restart]
                                    boot source of its next starts: FILE staged (kernel
                                    omitted: the flashed one), the flashed or no initrd, a
                                    command line replacing the flashed one; --restart: then
                                    restart it
  boot NAME --default [--restart]   back to the flashed kernel, initrd and command line
  boot NAME --network [--restart]   its flashed firmware boots from the network first
                                    (DHCP and TFTP, then its disk), for a slice that
                                    boots firmware; --default: its own boot order again
  console NAME                      interactive console (Ctrl-] leaves)
  console NAME --tail N             its last N lines
  erase NAME [--wait] [--timeout SECS]
                                    wipe its NVMe share (it must be off); --wait: until done
                                    (at most SECS, default 3600)

options:
  --json                            machine-readable output (one JSON document)
  -h, --help                        this text

exit codes:
  0 done; 1 usage; 2 no control interface (not the manager slice); 3 the control interface
  failed (mapping, version, a malformed answer); 4 a wait timed out; 5 a local file could
  not be read; 10 + N the hypervisor refused with status N (11 UNKNOWN_OP, 12 BAD_REQUEST,
  13 NO_SUCH_SLICE, 14 BUSY, 15 WRONG_STATE, 16 TOO_LARGE, 17 NOT_PERMITTED, 18 NO_SPACE,
  19 BAD_IMAGE, 20 IO_ERROR, 30 any other status)
";

/// Default `shutdown --timeout`.
pub const DEFAULT_SHUTDOWN: Duration = Duration::from_secs(60);
/// Default `erase --timeout` (of `--wait`).
pub const DEFAULT_ERASE_WAIT: Duration = Duration::from_secs(3600);

/// The initrd `boot` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitrdArg {
    /// Neither `--initrd` nor `--no-initrd`.
    Flashed,
    File(PathBuf),
    None,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    List,
    Node,
    Status(String),
    On(String),
    Off(String),
    Restart(String),
    Shutdown {
        slice: String,
        timeout: Duration,
        wait: bool,
    },
    Boot {
        slice: String,
        kernel: Option<PathBuf>,
        initrd: InitrdArg,
        cmdline: Option<String>,
        default: bool,
        /// The flashed firmware, network boot first.
        network: bool,
        restart: bool,
    },
    Console {
        slice: String,
        tail: Option<usize>,
    },
    Erase {
        slice: String,
        wait: bool,
        timeout: Duration,
    },
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub json: bool,
    pub command: Command,
}

/// Parses the arguments after the program name; `Err` is the usage error's one line.
pub fn parse(args: &[String]) -> Result<Invocation, String> {
    let mut json = false;
    let mut words = Vec::new();
    for arg in args {
        match arg.as_str() {
            "--json" => json = true,
            "-h" | "--help" => {
                return Ok(Invocation {
                    json,
                    command: Command::Help,
                });
            }
            _ => words.push(arg.as_str()),
        }
    }
    let Some((&verb, rest)) = words.split_first() else {
        return Err("no command (see microvisorctl --help)".into());
    };
    let mut rest = Words {
        verb,
        words: rest.iter(),
    };
    let command = match verb {
        "list" => Command::List,
        "node" => Command::Node,
        "status" => Command::Status(rest.slice()?),
        "on" => Command::On(rest.slice()?),
        "off" => Command::Off(rest.slice()?),
        "restart" => Command::Restart(rest.slice()?),
        "shutdown" => {
            let slice = rest.slice()?;
            let mut timeout = DEFAULT_SHUTDOWN;
            let mut wait = false;
            while let Some(option) = rest.next() {
                match option {
                    "--timeout" => timeout = rest.seconds("--timeout")?,
                    "--wait" => wait = true,
                    other => return Err(rest.unexpected(other)),
                }
            }
            if timeout.is_zero() || timeout > Duration::from_secs(3600) {
                return Err("shutdown: --timeout must be 1 to 3600 seconds".into());
            }
            Command::Shutdown {
                slice,
                timeout,
                wait,
            }
        }
        "boot" => {
            let slice = rest.slice()?;
            let mut kernel = None;
            let mut initrd = InitrdArg::Flashed;
            let mut cmdline = None;
            let mut default = false;
            let mut network = false;
            let mut restart = false;
            while let Some(option) = rest.next() {
                match option {
                    "--kernel" => kernel = Some(PathBuf::from(rest.value("--kernel")?)),
                    "--initrd" => {
                        if initrd == InitrdArg::None {
                            return Err("boot: --initrd and --no-initrd exclude each other".into());
                        }
                        initrd = InitrdArg::File(rest.value("--initrd")?.into());
                    }
                    "--no-initrd" => {
                        if matches!(initrd, InitrdArg::File(_)) {
                            return Err("boot: --initrd and --no-initrd exclude each other".into());
                        }
                        initrd = InitrdArg::None;
                    }
                    "--cmdline" => cmdline = Some(rest.value("--cmdline")?.to_string()),
                    "--default" => default = true,
                    "--network" => network = true,
                    "--restart" => restart = true,
                    other => return Err(rest.unexpected(other)),
                }
            }
            let changes = kernel.is_some() || initrd != InitrdArg::Flashed || cmdline.is_some();
            for (alone, flag) in [(default, "--default"), (network, "--network")] {
                if alone && (changes || default && network) {
                    return Err(format!(
                        "boot: {flag} goes alone (no --kernel, --initrd, --no-initrd, --cmdline, \
                         --default, --network)"
                    ));
                }
            }
            if !default && !network && !changes {
                return Err(
                    "boot: say what to boot (--kernel, --initrd, --no-initrd, --cmdline), \
                     --default or --network"
                        .into(),
                );
            }
            Command::Boot {
                slice,
                kernel,
                initrd,
                cmdline,
                default,
                network,
                restart,
            }
        }
        "console" => {
            let slice = rest.slice()?;
            let mut tail = None;
            while let Some(option) = rest.next() {
                match option {
                    "--tail" => tail = Some(rest.number("--tail")? as usize),
                    other => return Err(rest.unexpected(other)),
                }
            }
            Command::Console { slice, tail }
        }
        "erase" => {
            let slice = rest.slice()?;
            let mut wait = false;
            let mut timeout = DEFAULT_ERASE_WAIT;
            while let Some(option) = rest.next() {
                match option {
                    "--wait" => wait = true,
                    "--timeout" => timeout = rest.seconds("--timeout")?,
                    other => return Err(rest.unexpected(other)),
                }
            }
            Command::Erase {
                slice,
                wait,
                timeout,
            }
        }
        other => {
            return Err(format!(
                "unknown command \"{other}\" (see microvisorctl --help)"
            ));
        }
    };
    if let Some(extra) = rest.next() {
        return Err(rest.unexpected(extra));
    }
    Ok(Invocation { json, command })
}

/// The words after the verb.
struct Words<'a> {
    verb: &'a str,
    words: std::slice::Iter<'a, &'a str>,
}

impl<'a> Words<'a> {
    fn next(&mut self) -> Option<&'a str> {
        self.words.next().copied()
    }

    /// The slice name, first after the verb.
    fn slice(&mut self) -> Result<String, String> {
        match self.next() {
            Some(name) if !name.starts_with('-') => Ok(name.to_string()),
            _ => Err(format!("{}: which slice? ({} NAME)", self.verb, self.verb)),
        }
    }

    fn value(&mut self, option: &str) -> Result<&'a str, String> {
        self.next()
            .ok_or_else(|| format!("{}: {option} needs a value", self.verb))
    }

    fn number(&mut self, option: &str) -> Result<u64, String> {
        let text = self.value(option)?;
        text.parse()
            .map_err(|_| format!("{}: {option}: not a number: \"{text}\"", self.verb))
    }

    fn seconds(&mut self, option: &str) -> Result<Duration, String> {
        self.number(option).map(Duration::from_secs)
    }

    fn unexpected(&self, word: &str) -> String {
        format!(
            "{}: unexpected \"{word}\" (see microvisorctl --help)",
            self.verb
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_line(line: &str) -> Result<Invocation, String> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    fn command(line: &str) -> Command {
        parse_line(line).unwrap().command
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(command("list"), Command::List);
        assert_eq!(command("status web"), Command::Status("web".into()));
        assert_eq!(command("on web"), Command::On("web".into()));
        assert_eq!(command("off web"), Command::Off("web".into()));
        assert_eq!(command("restart web"), Command::Restart("web".into()));
        assert_eq!(
            command("shutdown web --timeout 5 --wait"),
            Command::Shutdown {
                slice: "web".into(),
                timeout: Duration::from_secs(5),
                wait: true
            }
        );
        assert_eq!(
            command("shutdown web"),
            Command::Shutdown {
                slice: "web".into(),
                timeout: DEFAULT_SHUTDOWN,
                wait: false
            }
        );
        assert_eq!(
            command("boot web --kernel /images/probe --no-initrd --cmdline quiet --restart"),
            Command::Boot {
                slice: "web".into(),
                kernel: Some("/images/probe".into()),
                initrd: InitrdArg::None,
                cmdline: Some("quiet".into()),
                default: false,
                network: false,
                restart: true
            }
        );
        assert_eq!(
            command("boot web --default"),
            Command::Boot {
                slice: "web".into(),
                kernel: None,
                initrd: InitrdArg::Flashed,
                cmdline: None,
                default: true,
                network: false,
                restart: false
            }
        );
        assert_eq!(
            command("boot metal --network --restart"),
            Command::Boot {
                slice: "metal".into(),
                kernel: None,
                initrd: InitrdArg::Flashed,
                cmdline: None,
                default: false,
                network: true,
                restart: true
            }
        );
        assert_eq!(
            command("console web --tail 20"),
            Command::Console {
                slice: "web".into(),
                tail: Some(20)
            }
        );
        assert_eq!(
            command("console web"),
            Command::Console {
                slice: "web".into(),
                tail: None
            }
        );
        assert_eq!(
            command("erase db --wait"),
            Command::Erase {
                slice: "db".into(),
                wait: true,
                timeout: DEFAULT_ERASE_WAIT
            }
        );
        assert_eq!(command("--help"), Command::Help);
        assert_eq!(command("status web -h"), Command::Help);
    }

    #[test]
    fn json_goes_anywhere() {
        assert!(parse_line("--json list").unwrap().json);
        assert!(parse_line("status web --json").unwrap().json);
        assert!(!parse_line("list").unwrap().json);
    }

    #[test]
    fn a_cmdline_with_spaces_is_one_argument() {
        let args: Vec<String> = ["boot", "web", "--cmdline", "console=ttyAMA0 quiet"]
            .map(String::from)
            .to_vec();
        let Command::Boot { cmdline, .. } = parse(&args).unwrap().command else {
            panic!("not boot");
        };
        assert_eq!(cmdline.as_deref(), Some("console=ttyAMA0 quiet"));
    }

    #[test]
    fn bad_command_lines_are_one_line_errors() {
        for (line, says) in [
            ("", "no command"),
            ("frobnicate", "unknown command"),
            ("status", "which slice"),
            ("status --wait", "which slice"),
            ("status web extra", "unexpected \"extra\""),
            ("on web --wait", "unexpected"),
            ("shutdown web --timeout", "needs a value"),
            ("shutdown web --timeout soon", "not a number"),
            ("shutdown web --timeout 0", "1 to 3600"),
            ("shutdown web --timeout 3601", "1 to 3600"),
            ("boot web", "say what to boot"),
            ("boot web --restart", "say what to boot"),
            ("boot web --default --cmdline x", "goes alone"),
            ("boot web --network --kernel k", "goes alone"),
            ("boot web --network --default", "goes alone"),
            ("boot web --initrd a --no-initrd", "exclude"),
            ("boot web --no-initrd --initrd a", "exclude"),
            ("boot web --kernel", "needs a value"),
            ("console web --tail -3", "not a number"),
            ("console web --follow", "unexpected"),
            ("erase db --timeout x", "not a number"),
        ] {
            let err = parse_line(line).unwrap_err();
            assert!(err.contains(says), "{line:?}: {err}");
            assert!(!err.contains('\n'), "{line:?}: one line");
        }
    }
}
