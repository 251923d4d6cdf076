//! Typing on the node console: a scenario's [`Input`]s are bytes written to QEMU's serial input
//! (its stdin) once given lines have appeared, in order.
//!
//! The tests run QEMU with `-serial stdio -monitor none` (no `-nographic`, no `mon:stdio`), so
//! nothing between the pipe and the node's UART interprets `Ctrl-A`: [`focus`] and
//! [`EXIT_COUNTERS`] reach the microvisor as they are. Input goes to the focused slice (slice 1
//! at boot) and only once its guest has set up its UART: for the Linux guest, wait for
//! [`shell_ready`].
//!
//! ```no_run
//! use microvisor_tests::{Input, focus, hv, shell_line, shell_ready};
//! let steps = vec![
//!     Input::after(shell_ready("web"), &shell_line("echo hi-$((6 * 7))")),
//!     Input::wait(shell_ready("db")),
//!     Input::after(shell_ready("db"), &focus(2)),
//!     Input::after_next(hv("^console input goes to slice db "), &shell_line("reboot -f")),
//! ];
//! ```

use std::fmt;

use crate::console::Line;
use crate::expect::{Pattern, hv, lit, slice};

/// The node console's escape byte: `Ctrl-A`.
pub const CTRL_A: u8 = 0x01;
/// `Ctrl-A c`: the microvisor prints one `[hv] exits <slice>: ...` line per slice.
pub const EXIT_COUNTERS: &[u8] = &[CTRL_A, b'c'];
/// `Ctrl-A p`: presses the focused slice's power key (its GPIO line 3).
pub const POWER_KEY: &[u8] = &[CTRL_A, b'p'];
/// Most bytes one [`Input`] may type. A slice's emulated PL011 queues 32 received bytes and the
/// node console has no flow control, so a longer burst could lose bytes before the guest reads
/// them.
pub const MAX_INPUT_BYTES: usize = 32;

/// `Ctrl-A <n>`: moves console input to slice `n` (1-based, plan order).
pub fn focus(n: u8) -> Vec<u8> {
    assert!(
        (1..=9).contains(&n),
        "the console can focus slices 1-9, not {n}"
    );
    vec![CTRL_A, b'0' + n]
}

/// A shell command line: `command` and Enter.
pub fn shell_line(command: &str) -> Vec<u8> {
    format!("{command}\n").into_bytes()
}

/// `[hv] console input goes to slice <name> (<n>); ...`: the microvisor moved the focus to
/// slice `n` (or set it at boot, for slice 1).
pub fn focused(slice_name: &str, n: u8) -> Pattern {
    hv(&format!(
        "^console input goes to slice {} \\({n}\\); ",
        lit(slice_name)
    ))
}

/// Typed lines for a shell command of any length: commands that fit one [`Input`] are typed
/// as they are; a longer one is built up in the shell variable `c` in single-quoted pieces
/// (`c='...'`, `c="$c"'...'`, a `'` written `'\''`) and run with `eval "$c"`. Returns the
/// lines to type, each with its newline.
pub fn shell_pieces(command: &str) -> Vec<String> {
    let whole = format!("{command}\n");
    if whole.len() <= MAX_INPUT_BYTES {
        return vec![whole];
    }
    // `c="$c"'` + piece + `'` + newline.
    let room = MAX_INPUT_BYTES - 9;
    let mut pieces: Vec<String> = vec![String::new()];
    for c in command.chars() {
        let token = if c == '\'' {
            "'\\''".to_string()
        } else {
            c.to_string()
        };
        if pieces.last().unwrap().len() + token.len() > room {
            pieces.push(String::new());
        }
        pieces.last_mut().unwrap().push_str(&token);
    }
    let mut lines: Vec<String> = pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            if i == 0 {
                format!("c='{piece}'\n")
            } else {
                format!("c=\"$c\"'{piece}'\n")
            }
        })
        .collect();
    lines.push("eval \"$c\"\n".into());
    lines
}

/// One step of a [`shell_steps`] script.
#[derive(Clone, Debug)]
pub enum Step {
    /// Type this command (in pieces if it is long, see [`shell_pieces`]).
    Run(String),
    /// Type the next command only after a line matching this (after what was typed last).
    WaitFor(Pattern),
}

/// [`Step::Run`].
pub fn run_step(command: &str) -> Step {
    Step::Run(command.into())
}

/// Inputs typing `steps` into `slice_name`'s shell: the first line once `after` is seen, each
/// later line when the shell has echoed the one before, or when the line a
/// [`Step::WaitFor`] before it names appears.
pub fn shell_steps(slice_name: &str, after: Pattern, steps: &[Step]) -> Vec<Input> {
    enum Next {
        Seen(Pattern),
        After(Pattern),
        Echo(String),
    }
    let mut inputs = Vec::new();
    let mut next = Next::Seen(after);
    for step in steps {
        match step {
            Step::WaitFor(pattern) => {
                if let Next::After(earlier) = &next {
                    inputs.push(Input::after_next(earlier.clone(), &[]));
                }
                next = Next::After(pattern.clone());
            }
            Step::Run(command) => {
                for line in shell_pieces(command) {
                    let bytes = line.as_bytes();
                    inputs.push(match &next {
                        Next::Seen(pattern) => Input::after(pattern.clone(), bytes),
                        Next::After(pattern) => Input::after_next(pattern.clone(), bytes),
                        Next::Echo(before) => Input::after_next(echo_of(slice_name, before), bytes),
                    });
                    next = Next::Echo(line);
                }
            }
        }
    }
    inputs
}

/// Inputs typing `commands` into `slice_name`'s shell, one after the other's echo (see
/// [`shell_steps`]).
pub fn shell_script(slice_name: &str, after: Pattern, commands: &[&str]) -> Vec<Input> {
    let steps: Vec<Step> = commands.iter().map(|c| run_step(c)).collect();
    shell_steps(slice_name, after, &steps)
}

/// The console line the shell's echo of the typed `line` ends (after its prompt).
pub fn echo_of(slice_name: &str, line: &str) -> Pattern {
    slice(
        slice_name,
        &format!("{}$", lit(line.trim_end_matches('\n'))),
    )
}

/// The Linux guest's shell has started on `slice`'s console: busybox ash's banner line, printed
/// just before its first prompt (`/ # ` itself ends no line, so it is never a line of its own).
/// Each boot of the slice prints it once more.
pub fn shell_ready(slice_name: &str) -> Pattern {
    slice(
        slice_name,
        &format!("^{}$", lit("Enter 'help' for a list of built-in commands.")),
    )
}

/// Which line lets an [`Input`] go.
#[derive(Clone, Debug)]
pub enum Trigger {
    /// The `nth` line matching, counted from the start of the run: it may have appeared before
    /// the previous input was typed (a guest that became ready meanwhile).
    Seen { pattern: Pattern, nth: usize },
    /// The `nth` line matching after the previous input was typed (what that input caused).
    Next { pattern: Pattern, nth: usize },
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Seen { pattern, nth: 1 } => write!(f, "a line {pattern}"),
            Trigger::Seen { pattern, nth } => write!(f, "line #{nth} {pattern}"),
            Trigger::Next { pattern, nth: 1 } => {
                write!(f, "a line {pattern} after the previous input")
            }
            Trigger::Next { pattern, nth } => {
                write!(f, "line #{nth} {pattern} after the previous input")
            }
        }
    }
}

/// Bytes typed on the node console once every earlier input was typed and its trigger holds.
#[derive(Clone, Debug)]
pub struct Input {
    pub trigger: Trigger,
    /// What is typed (nothing for [`Input::wait`]).
    pub bytes: Vec<u8>,
    /// Written into a disk file when the input fires, before its bytes are typed.
    pub disk_write: Option<DiskWrite>,
}

/// An image the harness copies into the node's disk file while the node runs, as an operator
/// re-imaging a powered-off server's disk would (QEMU reads the file through the host's page
/// cache, so it sees the new bytes; the hypervisor caches no disk data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskWrite {
    /// The image (a whole share: partition table and partitions).
    pub image: std::path::PathBuf,
    /// The node's disk file and the byte offset of the share in it.
    pub disk: std::path::PathBuf,
    pub offset: u64,
}

impl DiskWrite {
    /// Copies the image in. Panics (failing the scenario) if it cannot.
    fn apply(&self) {
        use std::io::{Seek, SeekFrom};
        let copy = || -> std::io::Result<()> {
            let mut from = std::fs::File::open(&self.image)?;
            let mut to = std::fs::OpenOptions::new().write(true).open(&self.disk)?;
            to.seek(SeekFrom::Start(self.offset))?;
            std::io::copy(&mut from, &mut to)?;
            to.sync_data()
        };
        copy().unwrap_or_else(|e| {
            panic!(
                "writing {} into {} at {}: {e}",
                self.image.display(),
                self.disk.display(),
                self.offset
            )
        });
    }
}

impl Input {
    fn new(trigger: Trigger, bytes: &[u8]) -> Input {
        assert!(
            bytes.len() <= MAX_INPUT_BYTES,
            "an input of {} bytes may overflow the slice's 32-byte receive FIFO: split it",
            bytes.len()
        );
        Input {
            trigger,
            bytes: bytes.to_vec(),
            disk_write: None,
        }
    }

    /// The same input, writing `write` into the disk file when it fires, before it types.
    pub fn writing(mut self, write: DiskWrite) -> Input {
        self.disk_write = Some(write);
        self
    }

    /// Types `bytes` once a line matching `pattern` has appeared (now or earlier in the run).
    pub fn after(pattern: Pattern, bytes: &[u8]) -> Input {
        Input::after_nth(pattern, 1, bytes)
    }

    /// Types `bytes` once `nth` lines matching `pattern` have appeared since the run started.
    pub fn after_nth(pattern: Pattern, nth: usize, bytes: &[u8]) -> Input {
        assert!(nth >= 1, "lines are counted from 1");
        Input::new(Trigger::Seen { pattern, nth }, bytes)
    }

    /// Types `bytes` at the first line matching `pattern` after the previous input.
    pub fn after_next(pattern: Pattern, bytes: &[u8]) -> Input {
        Input::after_next_nth(pattern, 1, bytes)
    }

    /// Types `bytes` at the `nth` line matching `pattern` after the previous input.
    pub fn after_next_nth(pattern: Pattern, nth: usize, bytes: &[u8]) -> Input {
        assert!(nth >= 1, "lines are counted from 1");
        Input::new(Trigger::Next { pattern, nth }, bytes)
    }

    /// Types nothing: later inputs also wait for a line matching `pattern` (two conditions for
    /// one input: wait for one, trigger on the other).
    pub fn wait(pattern: Pattern) -> Input {
        Input::after(pattern, &[])
    }
}

/// `bytes` as text for logs: printable ASCII as is, the rest escaped (`\x01`, `\n`).
pub fn show_bytes(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// One input typed: which, after which console line (1-based), what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Typed {
    pub index: usize,
    pub line: usize,
    pub bytes: Vec<u8>,
}

/// Decides, line by line, when each [`Input`] is typed.
#[derive(Clone, Debug)]
pub struct Typist {
    inputs: Vec<Input>,
    /// Lines matched so far per input (for `Next` triggers: since the previous input).
    counts: Vec<usize>,
    /// Inputs typed so far (the next one to type is `inputs[typed.len()]`).
    typed: Vec<Typed>,
    lines: usize,
}

impl Typist {
    pub fn new(inputs: Vec<Input>) -> Typist {
        let counts = vec![0; inputs.len()];
        Typist {
            inputs,
            counts,
            typed: Vec::new(),
            lines: 0,
        }
    }

    /// Feeds one console line; returns the bytes to type now (empty if none).
    pub fn observe(&mut self, line: &Line, raw: &str) -> Vec<u8> {
        self.lines += 1;
        let next = self.typed.len();
        for (i, input) in self.inputs.iter().enumerate().skip(next) {
            let counts = match &input.trigger {
                Trigger::Seen { pattern, .. } => pattern.matches(line, raw),
                Trigger::Next { pattern, .. } => i == next && pattern.matches(line, raw),
            };
            if counts {
                self.counts[i] += 1;
            }
        }
        let mut out = Vec::new();
        while let Some(input) = self.inputs.get(self.typed.len()) {
            let i = self.typed.len();
            let nth = match &input.trigger {
                Trigger::Seen { nth, .. } | Trigger::Next { nth, .. } => *nth,
            };
            if self.counts[i] < nth {
                break;
            }
            if let Some(write) = &input.disk_write {
                write.apply();
            }
            out.extend_from_slice(&input.bytes);
            self.typed.push(Typed {
                index: i,
                line: self.lines,
                bytes: input.bytes.clone(),
            });
        }
        out
    }

    /// What was typed so far.
    pub fn typed(&self) -> &[Typed] {
        &self.typed
    }

    /// The input waiting for its trigger, described (for failure messages).
    pub fn waiting(&self) -> Option<String> {
        let i = self.typed.len();
        let input = self.inputs.get(i)?;
        let what = if input.bytes.is_empty() {
            "nothing".to_string()
        } else {
            format!("\"{}\"", show_bytes(&input.bytes))
        };
        Some(format!(
            "input {} of {} (typing {what}) waiting for {}",
            i + 1,
            self.inputs.len(),
            input.trigger
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut Typist, log: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for raw in log.lines() {
            out.extend(t.observe(&Line::parse(raw), raw));
        }
        out
    }

    #[test]
    fn long_commands_are_typed_in_pieces() {
        assert_eq!(shell_pieces("echo hi"), ["echo hi\n"]);
        let long = "microvisorctl boot lin --cmdline \"console=ttyAMA0 quiet\"";
        let lines = shell_pieces(long);
        assert!(
            lines.iter().all(|l| l.len() <= MAX_INPUT_BYTES),
            "{lines:?}"
        );
        assert_eq!(lines.last().unwrap(), "eval \"$c\"\n");
        let rebuilt: String = lines[..lines.len() - 1]
            .iter()
            .map(|l| {
                let inner = l
                    .trim_end()
                    .trim_start_matches("c=\"$c\"")
                    .trim_start_matches("c=");
                inner.trim_matches('\'').to_string()
            })
            .collect();
        assert_eq!(rebuilt, long);
    }

    #[test]
    fn inputs_go_in_order_each_after_its_line() {
        let mut t = Typist::new(vec![
            Input::after(shell_ready("a"), b"one\n"),
            Input::after(shell_ready("b"), &focus(2)),
        ]);
        assert_eq!(
            feed(
                &mut t,
                "[b] Enter 'help' for a list of built-in commands.\n"
            ),
            b""
        );
        assert!(
            t.waiting().unwrap().contains("input 1 of 2"),
            "{:?}",
            t.waiting()
        );
        // b was ready before a: once a is, both go, in order.
        let out = feed(
            &mut t,
            "[a] Enter 'help' for a list of built-in commands.\n",
        );
        assert_eq!(out, b"one\n\x012");
        assert_eq!(t.waiting(), None);
        assert_eq!(
            t.typed()
                .iter()
                .map(|x| (x.index, x.line))
                .collect::<Vec<_>>(),
            [(0, 2), (1, 2)]
        );
    }

    #[test]
    fn next_triggers_count_only_lines_after_the_previous_input() {
        let mut t = Typist::new(vec![
            Input::after(slice("a", "^go$"), EXIT_COUNTERS),
            Input::after_next_nth(slice("a", "^HEARTBEAT"), 2, b"x"),
        ]);
        assert_eq!(
            feed(&mut t, "[a] HEARTBEAT 1 ok\n[a] HEARTBEAT 2 ok\n[a] go\n"),
            EXIT_COUNTERS
        );
        assert_eq!(
            feed(&mut t, "[a] HEARTBEAT 3 ok\n[b] HEARTBEAT 9 ok\n"),
            b""
        );
        let waiting = t.waiting().unwrap();
        assert!(
            waiting.contains("\"x\"") && waiting.contains("line #2 [a] /^HEARTBEAT/ after"),
            "{waiting}"
        );
        assert_eq!(feed(&mut t, "[a] HEARTBEAT 4 ok\n"), b"x");
    }

    #[test]
    fn seen_triggers_count_from_the_start_and_waits_type_nothing() {
        let mut t = Typist::new(vec![
            Input::wait(hv("^slice b started$")),
            Input::after_nth(slice("a", "^PROBE PASS$"), 2, b"\x01c"),
        ]);
        assert_eq!(feed(&mut t, "[a] PROBE PASS\n[hv] slice b started\n"), b"");
        assert!(t.waiting().unwrap().contains("typing \"\\x01c\""));
        assert_eq!(feed(&mut t, "[a] PROBE PASS\n"), b"\x01c");
        assert_eq!(t.typed().len(), 2);
    }

    #[test]
    fn console_keys() {
        assert_eq!(focus(3), [CTRL_A, b'3']);
        assert_eq!(shell_line("reboot -f"), b"reboot -f\n");
        assert_eq!(show_bytes(b"\x012echo\n"), "\\x012echo\\n");
        let ready = Line::parse("[lin] Enter 'help' for a list of built-in commands.");
        assert!(shell_ready("lin").matches(&ready, ""));
        assert!(!shell_ready("other").matches(&ready, ""));
        let moved = "[hv] console input goes to slice db (2); Ctrl-A then 1-3 switches";
        assert!(focused("db", 2).matches(&Line::parse(moved), moved));
        assert!(!focused("db", 1).matches(&Line::parse(moved), moved));
    }

    #[test]
    #[should_panic(expected = "32-byte receive FIFO")]
    fn long_inputs_are_refused() {
        Input::after(hv("x"), &[b'a'; MAX_INPUT_BYTES + 1]);
    }
}
