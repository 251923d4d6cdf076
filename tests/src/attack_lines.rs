//! Every attack a scenario asks a probe for must really be attempted and concluded.
//!
//! The probe runs the attacks named by `attack=` on its command line, in order (see
//! `guest-images/probe/src/cmdline.rs`). For each it prints `ATTACK <name> attempting <detail>`
//! and then exactly one verdict, `ATTACK <name> contained ...` or `ATTACK <name> NOT-CONTAINED
//! ...`, unless the hypervisor stops (or restarts) the slice in between, which ends the attack.
//! `ATTACK <name> NOT-CONTAINED unverified <why>` means the probe could not even try: that is
//! never a pass. [`AttackRun`] follows one slice's runs (from `PROBE START`, or a slice's
//! restart, to its end) and reports the first attack that was skipped, left without a verdict,
//! concluded twice or unverified. `NOT-CONTAINED` itself is left to
//! [`Expect::always_forbidden`](crate::Expect::always_forbidden).

use microvisor_probe::cmdline::Attack;

use crate::console::{Line, Source};

/// The attacks of the count scenario: the memory, MMIO, undefined-register and PSCI attacks
/// that a slice now survives, every sweep (`sweeps`: system registers, external aborts, EL0,
/// GIC registers, SMCCC calls, the timing attacks) and the configuration space of PCI functions
/// the slice does not own (`pci`), and an NVMe doorbell race. Each is a distinct encoding, access, register or call with
/// its own verdict (guest-images/probe/src/sweep.rs).
pub const COUNTED_ATTACKS: &str = "read-past-ram,write-past-ram,mmio,undef-sysreg,cpu-on-outside,hvc-unknown,sweeps,pci,race-nvme-doorbell";

/// The attacks `attack=` words ask for, in order (several words accumulate, as in the probe);
/// a group name (`sysregs`, `aborts`, `calls`, `races`, `sweeps`) stands for its members, as
/// the probe expands it (`microvisor_probe::cmdline::Attack::group`). Other names are kept as
/// written, so a misspelt one is reported as never attempted.
pub fn requested_attacks(cmdline: &str) -> Vec<String> {
    cmdline
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("attack="))
        .flat_map(|list| list.split(','))
        .filter(|name| !name.is_empty())
        .flat_map(|name| match Attack::group(name.as_bytes()) {
            Some(group) => group.map(|a| a.name().to_string()).collect(),
            None => vec![name.to_string()],
        })
        .collect()
}

/// Progress of one slice through its requested attacks.
#[derive(Clone, Debug, Default)]
pub struct AttackRun {
    /// A run of the slice is under way (its `PROBE START` or first attack line was seen).
    running: bool,
    /// Index of the next attack to be attempted in this run.
    next: usize,
    /// The next attack's `attempting` line was seen, its verdict not yet.
    open: bool,
    /// Some run attempted and concluded every attack.
    complete: bool,
}

/// What an `ATTACK` line says.
enum AttackLine<'a> {
    Attempting(&'a str),
    Verdict { name: &'a str, unverified: bool },
}

fn parse_attack_line(text: &str) -> Option<Result<AttackLine<'_>, ()>> {
    let rest = text.strip_prefix("ATTACK ")?;
    let mut words = rest.split_whitespace();
    let (Some(name), Some(kind)) = (words.next(), words.next()) else {
        return Some(Err(()));
    };
    Some(match kind {
        // A progress line between `attempting` and the verdict (net-desc-outside waits for
        // the fault policy to end the run); the run's end may cut it short.
        "completed-outside" => return None,
        "attempting" => Ok(AttackLine::Attempting(name)),
        "contained" => Ok(AttackLine::Verdict {
            name,
            unverified: false,
        }),
        "NOT-CONTAINED" => Ok(AttackLine::Verdict {
            name,
            unverified: words.next() == Some("unverified"),
        }),
        _ => Err(()),
    })
}

impl AttackRun {
    /// Whether some run of the slice attempted and concluded every attack.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Feeds one console line. `Err` says what went wrong, naming the slice and the attack.
    pub fn observe(&mut self, slice: &str, attacks: &[String], line: &Line) -> Result<(), String> {
        if line.source == Source::Hv {
            let ended = line
                .text
                .strip_prefix("slice ")
                .and_then(|t| t.strip_prefix(slice))
                .is_some_and(|t| t.starts_with(" stopped") || t.starts_with(" restarted"));
            return if ended {
                self.end(slice, attacks, "the slice was stopped or restarted")
            } else {
                Ok(())
            };
        }
        if line.slice() != Some(slice) {
            return Ok(());
        }
        let text = line.text.as_str();
        if text.starts_with("PROBE START ") {
            self.end(slice, attacks, "the probe started again")?;
            self.running = true;
            return Ok(());
        }
        if text.starts_with("HEARTBEAT ") && self.running && self.next < attacks.len() {
            return Err(self.missing(slice, attacks, "heartbeats began"));
        }
        let Some(parsed) = parse_attack_line(text) else {
            return Ok(());
        };
        let Ok(parsed) = parsed else {
            return Err(format!("[{slice}] malformed attack line: {text}"));
        };
        self.running = true;
        match parsed {
            AttackLine::Attempting(name) => {
                if self.open {
                    return Err(format!(
                        "[{slice}] attack {} got no verdict before `ATTACK {name} attempting`",
                        attacks[self.next]
                    ));
                }
                match attacks.get(self.next) {
                    Some(expected) if expected == name => {
                        self.open = true;
                        Ok(())
                    }
                    Some(expected) => Err(format!(
                        "[{slice}] attack {expected} was never attempted: `ATTACK {name} \
                         attempting` came instead (asked for: {})",
                        attacks.join(",")
                    )),
                    None => Err(format!(
                        "[{slice}] `ATTACK {name} attempting` was not asked for (asked for: {})",
                        attacks.join(",")
                    )),
                }
            }
            AttackLine::Verdict { name, unverified } => {
                let current = attacks.get(self.next).filter(|_| self.open);
                if current.map(String::as_str) != Some(name) {
                    let again = self.next > 0 && !self.open && attacks[self.next - 1] == name;
                    return Err(if again {
                        format!("[{slice}] attack {name} got a second verdict: {text}")
                    } else {
                        format!(
                            "[{slice}] attack {name} got a verdict without its attempting line: \
                             {text}"
                        )
                    });
                }
                if unverified {
                    return Err(format!(
                        "[{slice}] attack {name} could not be attempted, which is not a pass: {text}"
                    ));
                }
                self.open = false;
                self.next += 1;
                if self.next == attacks.len() {
                    self.complete = true;
                }
                Ok(())
            }
        }
    }

    /// What is still missing, for a run that never completed.
    pub fn pending(&self, slice: &str, attacks: &[String]) -> String {
        match attacks.get(self.next) {
            Some(name) if self.open => format!(
                "[{slice}] a verdict for attack {name} (attacks asked for: {})",
                attacks.join(",")
            ),
            Some(name) => format!(
                "[{slice}] `ATTACK {name} attempting` and its verdict (attacks asked for: {})",
                attacks.join(",")
            ),
            None => format!("[{slice}] every attack of {}", attacks.join(",")),
        }
    }

    /// The current run ended (`why`): an open attack was ended by it, and every attack must
    /// have been reached.
    fn end(&mut self, slice: &str, attacks: &[String], why: &str) -> Result<(), String> {
        if !self.running {
            return Ok(());
        }
        let reached = self.next + usize::from(self.open);
        let result = if reached >= attacks.len() {
            self.complete = true;
            Ok(())
        } else {
            Err(self.missing(slice, attacks, why))
        };
        *self = AttackRun {
            complete: self.complete,
            ..AttackRun::default()
        };
        result
    }

    /// The first attack of this run that was not concluded when `why` happened.
    fn missing(&self, slice: &str, attacks: &[String], why: &str) -> String {
        if self.open {
            let after: Vec<&str> = attacks[self.next + 1..]
                .iter()
                .map(String::as_str)
                .collect();
            format!(
                "[{slice}] attack {} got no verdict before {why}, and {} never attempted",
                attacks[self.next],
                after.join(",")
            )
        } else {
            format!(
                "[{slice}] attack {} was never attempted before {why} (asked for: {})",
                attacks[self.next],
                attacks.join(",")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Feeds `log`; returns the first violation.
    fn run(attacks: &[&str], log: &str) -> (AttackRun, Result<(), String>) {
        let attacks = names(attacks);
        let mut state = AttackRun::default();
        for raw in log.lines() {
            if let Err(e) = state.observe("p", &attacks, &Line::parse(raw)) {
                return (state, Err(e));
            }
        }
        (state, Ok(()))
    }

    fn violation(attacks: &[&str], log: &str) -> String {
        run(attacks, log).1.expect_err("a violation")
    }

    #[test]
    fn attack_words_accumulate_in_order() {
        assert_eq!(
            requested_attacks(
                "heartbeat=500 attack=mmio,hvc-unknown target=0x1 attack=,smc-system-off"
            ),
            names(&["mmio", "hvc-unknown", "smc-system-off"])
        );
        assert!(requested_attacks("heartbeat=500 nvme-check=1").is_empty());
        assert!(requested_attacks("").is_empty());
        assert_eq!(
            requested_attacks("attack=mmio attack=mmio"),
            names(&["mmio", "mmio"])
        );
    }

    #[test]
    fn groups_expand_as_in_the_probe_and_unknown_names_stay() {
        let calls = requested_attacks("attack=mmio,calls,rowhammer");
        assert_eq!(calls[0], "mmio");
        assert_eq!(calls[1], "call-psci-migrate");
        assert_eq!(calls[calls.len() - 1], "rowhammer");
        assert_eq!(calls.len(), 2 + microvisor_probe::sweep::CALLS.len());
        assert!(requested_attacks("attack=sweeps").len() >= 100);
    }

    #[test]
    fn every_attack_attempted_and_concluded_completes() {
        let (state, result) = run(
            &["cpu-on-outside", "hvc-unknown"],
            "[p] PROBE START probe 0.1.0 el=1\n\
             [q] ATTACK mmio attempting read32 0x9010000\n\
             [p] ATTACK cpu-on-outside attempting cpu_on+affinity_info 0x1,0x100\n\
             [p] ATTACK cpu-on-outside contained cpu_on(0x1)=-2\n\
             [p] ATTACK hvc-unknown attempting hvc 0xc6000000\n\
             [p] ATTACK hvc-unknown contained hvc 0xc6000000 returned -1\n\
             [p] HEARTBEAT 1 ok\n",
        );
        assert_eq!(result, Ok(()));
        assert!(state.complete());
    }

    #[test]
    fn a_stop_right_after_attempting_concludes_the_attack() {
        let (state, result) = run(
            &["read-past-ram"],
            "[p] PROBE START probe\n\
             [p] ATTACK read-past-ram attempting read64 0x44000000\n\
             [hv] slice p stopped: data abort outside its RAM\n",
        );
        assert_eq!(result, Ok(()));
        assert!(state.complete());
        // on-fault = "restart": every run is checked again.
        let (state, result) = run(
            &["undef-sysreg"],
            "[p] PROBE START probe\n\
             [p] ATTACK undef-sysreg attempting mrs S3_0_C15_C0_0\n\
             [hv] slice p restarted: undefined instruction\n\
             [p] PROBE START probe\n\
             [p] ATTACK undef-sysreg attempting mrs S3_0_C15_C0_0\n\
             [hv] slice p restarted: undefined instruction\n",
        );
        assert_eq!(result, Ok(()));
        assert!(state.complete());
    }

    #[test]
    fn a_progress_line_cut_short_by_the_stop_is_no_verdict() {
        // net-desc-outside says it waits for the fault policy; the stop came mid-line (seen in
        // a full run: the harness took it for a malformed verdict).
        let (state, result) = run(
            &["net-desc-outside"],
            "[p] PROBE START probe\n\
             [p] ATTACK net-desc-outside attempting tx-chain at=0x44000000\n\
             [p] ATTACK net-desc-outside completed-outside waiting 100\n\
             [hv] slice p stopped: SMMU fault\n",
        );
        assert_eq!(result, Ok(()));
        assert!(state.complete());
    }

    #[test]
    fn an_unverified_verdict_fails_naming_slice_and_attack() {
        let why = violation(
            &["nvme-prp-flip"],
            "[p] ATTACK nvme-prp-flip attempting read pages=8\n\
             [p] ATTACK nvme-prp-flip NOT-CONTAINED unverified no-second-vcpu\n",
        );
        assert!(
            why.starts_with("[p] attack nvme-prp-flip could not be attempted"),
            "{why}"
        );
        assert!(why.contains("no-second-vcpu"), "{why}");
    }

    #[test]
    fn a_missing_attack_fails() {
        // The probe skipped spi-foreign (e.g. a misspelt name it warned about).
        let why = violation(
            &["sgi-outside", "spi-foreign", "gicr-own"],
            "[p] ATTACK sgi-outside attempting sgi1r\n\
             [p] ATTACK sgi-outside contained sgis-dropped writes=7 rss=0\n\
             [p] ATTACK gicr-own attempting read64\n",
        );
        assert!(
            why.starts_with("[p] attack spi-foreign was never attempted"),
            "{why}"
        );
        // The last one missing: caught by the first heartbeat.
        let why = violation(
            &["sgi-outside", "spi-foreign"],
            "[p] ATTACK sgi-outside attempting sgi1r\n\
             [p] ATTACK sgi-outside contained sgis-dropped writes=7 rss=0\n\
             [p] HEARTBEAT 1 ok\n",
        );
        assert!(
            why.starts_with("[p] attack spi-foreign was never attempted before heartbeats began"),
            "{why}"
        );
        // None at all, and the run goes on without heartbeats: still pending.
        let (state, result) = run(&["mmio"], "[p] PROBE START probe\n");
        assert_eq!(result, Ok(()));
        assert!(!state.complete());
        assert_eq!(
            state.pending("p", &names(&["mmio"])),
            "[p] `ATTACK mmio attempting` and its verdict (attacks asked for: mmio)"
        );
    }

    #[test]
    fn a_missing_verdict_fails() {
        let why = violation(
            &["hvc-unknown", "mmio"],
            "[p] ATTACK hvc-unknown attempting hvc 0xc6000000\n\
             [p] ATTACK mmio attempting read32 0x9010000\n",
        );
        assert!(
            why.starts_with(
                "[p] attack hvc-unknown got no verdict before `ATTACK mmio attempting`"
            ),
            "{why}"
        );
        let why = violation(
            &["hvc-unknown"],
            "[p] ATTACK hvc-unknown attempting hvc 0xc6000000\n[p] HEARTBEAT 1 ok\n",
        );
        assert!(
            why.starts_with("[p] attack hvc-unknown got no verdict before heartbeats began"),
            "{why}"
        );
        let (state, _) = run(
            &["hvc-unknown"],
            "[p] ATTACK hvc-unknown attempting hvc 0xc6000000\n",
        );
        assert_eq!(
            state.pending("p", &names(&["hvc-unknown"])),
            "[p] a verdict for attack hvc-unknown (attacks asked for: hvc-unknown)"
        );
    }

    #[test]
    fn a_stop_before_the_later_attacks_fails() {
        let why = violation(
            &["read-past-ram", "write-past-ram"],
            "[p] ATTACK read-past-ram attempting read64 0x44000000\n\
             [hv] slice p stopped: data abort outside its RAM\n",
        );
        assert!(
            why.starts_with(
                "[p] attack read-past-ram got no verdict before the slice was stopped or \
                 restarted, and write-past-ram never attempted"
            ),
            "{why}"
        );
        let why = violation(
            &["mmio"],
            "[p] PROBE START probe\n[hv] slice p stopped: undefined instruction\n",
        );
        assert!(
            why.starts_with("[p] attack mmio was never attempted"),
            "{why}"
        );
        // Another slice's stop is not this one's.
        let (_, result) = run(
            &["mmio"],
            "[p] PROBE START probe\n[hv] slice p2 stopped: undefined instruction\n",
        );
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn two_verdicts_a_verdict_without_attempt_and_extra_attacks_fail() {
        let twice = violation(
            &["hvc-unknown"],
            "[p] ATTACK hvc-unknown attempting hvc\n\
             [p] ATTACK hvc-unknown contained hvc 0xc6000000 returned -1\n\
             [p] ATTACK hvc-unknown NOT-CONTAINED hvc 0xc6000000 returned 0\n",
        );
        assert!(
            twice.starts_with("[p] attack hvc-unknown got a second verdict"),
            "{twice}"
        );
        let bare = violation(&["mmio"], "[p] ATTACK mmio contained x\n");
        assert!(
            bare.starts_with("[p] attack mmio got a verdict without its attempting line"),
            "{bare}"
        );
        let extra = violation(
            &["mmio"],
            "[p] ATTACK mmio attempting read32\n\
             [p] ATTACK mmio NOT-CONTAINED read32 0x9010000 returned 0x0\n\
             [p] ATTACK hvc-unknown attempting hvc\n",
        );
        assert!(
            extra.starts_with("[p] `ATTACK hvc-unknown attempting` was not asked for"),
            "{extra}"
        );
        let garbled = violation(&["mmio"], "[p] ATTACK mmio maybe\n");
        assert!(
            garbled.starts_with("[p] malformed attack line"),
            "{garbled}"
        );
    }

    #[test]
    fn a_later_run_is_checked_too() {
        // reset-after: the first run completes, the second one skips an attack.
        let why = violation(
            &["nvme-nsid"],
            "[p] PROBE START probe\n\
             [p] ATTACK nvme-nsid attempting read:nsid=2\n\
             [p] ATTACK nvme-nsid contained read-nsid2=invalid-namespace(0/0x0b)\n\
             [p] HEARTBEAT 1 ok\n\
             [hv] slice p restarted: PSCI SYSTEM_RESET\n\
             [p] PROBE START probe\n\
             [p] ATTACK nvme-nsid attempting read:nsid=2\n\
             [p] ATTACK nvme-nsid NOT-CONTAINED unverified scratch-write timeout\n",
        );
        assert!(
            why.starts_with("[p] attack nvme-nsid could not be attempted"),
            "{why}"
        );
    }
}
