//! The NVMe attacks (`attack=nvme-*`). Each prints
//! `ATTACK <name> attempting <detail>` and then, if the slice is still
//! running, exactly one `ATTACK <name> contained|NOT-CONTAINED <items>`
//! whose items are `label=outcome` pairs (outcome: an NVMe status such as
//! `invalid-opcode(0/0x01)`, `timeout(<ms>ms)`, ...). Under the microvisor
//! each command must be refused with an error status, or the slice stopped
//! (`[hv] slice <name> stopped: ...`, no outcome line). Plans and verdict
//! rules are in `microvisor_probe::nvme::attacks`.
//!
//! The attacks use a scratch area at 3/4 of the namespace (away from the
//! data test's ranges, the canaries and a small `nvme-fill`), holding the
//! slice's resting pattern so changes are visible.

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use microvisor_probe::cmdline::Attack;
use microvisor_probe::nvme::attacks::{
    AdminContext, DoorbellWrite, Findings, Flip, LbaCase, NSID_CASES, Outcome, PrpCase, QueueCase,
    QueueContext, REFUSED_ADMIN, Round, admin_buffer_words, cq_cases, doorbell_writes,
    lba_outside_cases, refused_admin_command, sgl_read, sq_cases,
};
use microvisor_probe::nvme::pattern::{self, Blocks};
use microvisor_probe::nvme::prp::EntryKind;
use microvisor_probe::nvme::{Command, Completion, FUSE_FIRST, FUSE_SECOND, PAGE_SIZE, io};
use microvisor_probe::text::Text;
use microvisor_probe::verdict::Verdict;

use super::attacks::Context;
use super::console::println;
use super::nvme::{
    self, ADMIN_TIMEOUT_MS, CONTROLLER, Controller, IO_TIMEOUT_MS, NSID, NvmeError, dma_fill,
    dma_words, dma_write32, dma_write64,
};
use super::nvme_io::{READ_MARKER, holds_pattern};
use super::timer;

/// Salt of the data attacking writes carry (another "slice").
const ATTACK_SALT: u64 = 0xA77A_C4ED_0000_0002;
/// Marker of the decoy buffer in `nvme-prp-toctou`.
const DECOY_MARKER: u64 = 0xDEC0_DEC0_DEC0_DEC0;
/// Marker of the old reads' buffers in `nvme-reset-inflight`.
const STALE_MARKER: u64 = 0x57A1_E57A_1E57_A1E0;

/// What an attack works with.
struct Env {
    seed: u64,
    /// An IPA just past the slice's RAM.
    outside: u64,
    /// `target=` if it lies outside RAM and the image.
    target: Option<u64>,
    /// First LBA of the scratch area.
    scratch: u64,
}

impl Env {
    /// The outside addresses to aim at.
    fn outsides(&self) -> impl Iterator<Item = u64> + '_ {
        core::iter::once(self.outside).chain(self.target)
    }
}

/// Runs one NVMe attack.
pub fn run(attack: Attack, ctx: &Context<'_>) {
    let name = attack.name();
    let mut guard = CONTROLLER.lock();
    let Some(c) = guard.as_mut() else {
        println!("ATTACK {name} attempting no-controller");
        return unverified(name, "no-nvme-controller");
    };
    let seed = pattern::slice_seed(ctx.platform.slice_name.as_bytes());
    let outside = ctx.platform.memory_end();
    let target = ctx
        .target
        .filter(|&t| !ctx.platform.in_memory(t) && !ctx.image.contains(t))
        .map(|t| t & !(PAGE_SIZE - 1));
    let need = (8 * PAGE_SIZE).div_ceil(u64::from(c.ns.lba_bytes));
    let scratch = (c.ns.blocks / 4 * 3).min(c.ns.blocks.saturating_sub(need));
    let env = Env {
        seed,
        outside,
        target,
        scratch,
    };
    match attack {
        Attack::NvmePrpOutside => prp_outside(c, &env, name),
        Attack::NvmePrpToctou => prp_toctou(c, &env, name),
        Attack::NvmePrpFlip => prp_flip(c, &env, name),
        Attack::NvmeLbaOutside => lba_outside(c, &env, name),
        Attack::NvmeNsid => nsid(c, &env, name),
        Attack::NvmeAdminRefused => admin_refused(c, &env, name),
        Attack::NvmeSglFused => sgl_fused(c, &env, name),
        Attack::NvmeDoorbell => doorbell(c, &env, name),
        Attack::NvmeQueueOutside => queue_outside(c, &env, name),
        Attack::NvmeResetInflight => reset_inflight(c, &env, name),
        Attack::NvmeCqWrite => cq_write(c, &env, name),
        Attack::RaceNvmeDoorbell => race_doorbell(c, &env, name),
        _ => {}
    }
}

/// A command's result as an attack outcome.
fn outcome(result: Result<Completion, NvmeError>) -> Outcome {
    match result {
        Ok(c) => Outcome::Status(c.status),
        Err(NvmeError::Timeout { ms, .. }) => Outcome::Timeout(ms),
        Err(NvmeError::QueueFull(_)) => Outcome::NotSent("queue-full"),
        Err(NvmeError::Mmio { .. }) => Outcome::NotSent("mmio-fault"),
        Err(NvmeError::Fatal { .. }) => Outcome::NotSent("controller-fatal"),
        Err(NvmeError::NoQueue(_)) => Outcome::NotSent("no-queue"),
        Err(NvmeError::Prp(_)) => Outcome::NotSent("prp"),
        Err(_) => Outcome::NotSent("error"),
    }
}

/// Prints the outcome line.
fn verdict(name: &str, findings: &Findings) {
    tally(name, findings.verdict());
    let more = if findings.truncated() { " ..." } else { "" };
    println!(
        "ATTACK {name} {} {}{more}",
        findings.verdict(),
        findings.text()
    );
}

/// Prints `NOT-CONTAINED unverified <why>` when an attack could not even
/// be set up (nothing was proven).
fn unverified(name: &str, why: impl core::fmt::Display) {
    tally(name, Verdict::Unverified);
    println!("ATTACK {name} {} {why}", Verdict::Unverified);
}

/// Counts a verdict of the attack called `name` for the `ATTACKS` line.
fn tally(name: &str, verdict: Verdict) {
    if let Some(attack) = Attack::from_name(name.as_bytes()) {
        super::attacks::tally(attack, verdict);
    }
}

/// Blocks spanning `pages` pages (at least one block).
fn blocks_for_pages(c: &Controller, pages: u64) -> u64 {
    (pages * PAGE_SIZE)
        .div_ceil(u64::from(c.ns.lba_bytes))
        .max(1)
}

/// Puts the slice's resting pattern on `count` scratch blocks.
fn prepare_scratch(c: &mut Controller, env: &Env, count: u64) -> Result<(), NvmeError> {
    super::nvme_io::write_pattern(
        c,
        1,
        Blocks {
            lba: env.scratch,
            count,
        },
        env.seed,
    )
    .map_err(|(e, _)| e)
}

/// Whether `count` scratch blocks still hold the resting pattern (read
/// into the second data buffer); None if the read failed.
fn scratch_intact(c: &mut Controller, env: &Env, count: u64) -> Option<bool> {
    match super::nvme_io::check_pattern(
        c,
        1,
        Blocks {
            lba: env.scratch,
            count,
        },
        env.seed,
    ) {
        super::nvme_io::Check::Intact => Some(true),
        super::nvme_io::Check::Corrupt(_) => Some(false),
        super::nvme_io::Check::Error(..) => None,
    }
}

/// `nvme-prp-outside`: reads with PRP1, PRP2, the list pointer, a list
/// entry or a chain pointer outside RAM, and writes with PRP1 or a list
/// entry outside RAM (the written blocks must not change).
fn prp_outside(c: &mut Controller, env: &Env, name: &str) {
    let mut targets = Text::<64>::new();
    for (i, t) in env.outsides().enumerate() {
        let _ = write!(targets, "{}{t:#x}", if i > 0 { "," } else { "" });
    }
    println!(
        "ATTACK {name} attempting read:prp1,prp2,list-pointer,list-entry,chain-pointer \
         write:prp1,list-entry outside={} lba={}",
        targets.as_str().unwrap_or(""),
        env.scratch
    );
    let blocks = blocks_for_pages(c, 4);
    let mut findings = Findings::new();
    for outside in env.outsides() {
        findings.note(format_args!("at={outside:#x}"));
        for case in PrpCase::ALL {
            let result = prp_attempt(c, env, case, false, outside);
            findings.expect_refused(format_args!("read-{}", case.name()), result);
        }
        for case in [PrpCase::Prp1, PrpCase::ListEntry] {
            let label = format_args!("write-{}", case.name());
            if let Err(e) = prepare_scratch(c, env, blocks) {
                findings.unverified(label, format_args!("scratch-write-{e}"));
                continue;
            }
            let result = prp_attempt(c, env, case, true, outside);
            if matches!(result, Outcome::Skipped(_)) {
                findings.expect_refused(label, result);
                continue;
            }
            match scratch_intact(c, env, blocks) {
                Some(true) => findings.expect_refused(label, result),
                Some(false) => findings.add(label, format_args!("{result},blocks-changed"), true),
                None => findings.unverified(label, format_args!("{result},readback-failed")),
            }
        }
    }
    verdict(name, &findings);
}

/// One `nvme-prp-outside` command of shape `case`.
fn prp_attempt(c: &mut Controller, env: &Env, case: PrpCase, write: bool, outside: u64) -> Outcome {
    let lba_bytes = u64::from(c.ns.lba_bytes);
    let blocks = blocks_for_pages(c, case.pages());
    let bytes = blocks * lba_bytes;
    if bytes > c.max_transfer {
        return Outcome::Skipped("mdts");
    }
    let data = c.dma.data;
    if write {
        let base = env.scratch * lba_bytes;
        dma_fill(data, bytes / 8, |i| {
            pattern::word(env.seed ^ ATTACK_SALT, base + 8 * i)
        });
    } else {
        dma_fill(data, bytes / 8, |_| READ_MARKER);
    }
    let list = match case {
        PrpCase::ChainPointer => c.dma.lists + PAGE_SIZE - 16,
        _ => c.dma.lists,
    };
    let prp = match c.prepare_prps(data, bytes, list) {
        Ok(p) => p,
        Err(_) => return Outcome::NotSent("prp"),
    };
    let (mut prp1, mut prp2) = (prp.prp1, prp.prp2);
    match case {
        PrpCase::Prp1 => prp1 = outside,
        PrpCase::Prp2 | PrpCase::ListPointer => prp2 = outside,
        PrpCase::ListEntry | PrpCase::ChainPointer => {
            let wanted = |k: EntryKind| match case {
                PrpCase::ListEntry => k == EntryKind::Data(2),
                _ => matches!(k, EntryKind::Chain(_)),
            };
            match prp.entries().find(|e| wanted(e.kind)) {
                Some(entry) => dma_write64(entry.addr, outside),
                None => return Outcome::Skipped("no-such-entry"),
            }
            c.clean(list - list % PAGE_SIZE, PAGE_SIZE);
        }
    }
    if write {
        c.clean(data, bytes);
    }
    let opcode = if write { io::WRITE } else { io::READ };
    let cmd = Command::rw(opcode, NSID, env.scratch, blocks as u32).prp(prp1, prp2);
    outcome(c.exec(1, cmd, IO_TIMEOUT_MS))
}

/// How a `nvme-prp-toctou`/`nvme-prp-flip` round rewrites the PRPs of its
/// read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rewrite {
    /// Right after the doorbell, on this vCPU, to `outside` (+ page).
    AfterDoorbell(u64),
    /// Before the doorbell, to the decoy: a legitimate read into the decoy
    /// that proves the check sees where data lands.
    Control,
    /// Concurrently, from another vCPU flipping every list entry between
    /// its value and an outside address while the doorbell is rung.
    Flipped,
}

/// `nvme-prp-toctou`: a multi-page read whose PRP list (and the SQE's
/// PRP1) are rewritten right after the doorbell, to addresses outside RAM
/// (rounds 0, 1) or to a decoy buffer in RAM (rounds 2, 3): the device must
/// only ever see the entries as they were at the doorbell, so the data must
/// land in the original buffer. A control round rewrites to the decoy
/// before the doorbell: the data must land in the decoy (the check sees
/// where data goes).
fn prp_toctou(c: &mut Controller, env: &Env, name: &str) {
    let Some((pages, blocks)) = toctou_setup(c, env, name) else {
        return;
    };
    println!(
        "ATTACK {name} attempting read pages={pages} lba={} list-rewritten-after-doorbell \
         outside={:#x} decoy={:#x} rounds=4 control=1",
        env.scratch, env.outside, c.dma.data2
    );
    if let Err(e) = prepare_scratch(c, env, blocks) {
        return unverified(name, format_args!("scratch-write {e}"));
    }
    let mut findings = Findings::new();
    for round in 0..4 {
        let (label, redirect) = if round < 2 {
            ("outside", env.outside)
        } else {
            ("decoy", c.dma.data2)
        };
        let r = toctou_round(c, env, pages, blocks, Rewrite::AfterDoorbell(redirect));
        findings.record(format_args!("round{round}-{label}"), r, r.after_doorbell());
    }
    control_round(c, env, pages, blocks, &mut findings);
    verdict(name, &findings);
}

/// `nvme-prp-flip`: another vCPU flips every PRP list entry between its
/// value and an address outside RAM while the doorbell is rung (a
/// hypervisor must copy each entry once and use what it checked). Each of
/// the rounds must be refused or put all data in the original buffer. A
/// control round as in `nvme-prp-toctou` first.
fn prp_flip(c: &mut Controller, env: &Env, name: &str) {
    const FLIP_ROUNDS: u32 = 8;
    let Some((pages, blocks)) = toctou_setup(c, env, name) else {
        return;
    };
    let flipper = FLIPPER.load(Ordering::Acquire);
    println!(
        "ATTACK {name} attempting read pages={pages} lba={} list-flipped-by-vcpu={} \
         outside={:#x} rounds={FLIP_ROUNDS} control=1",
        env.scratch,
        if flipper == NO_FLIPPER {
            -1
        } else {
            flipper as i64
        },
        env.outside
    );
    if flipper == NO_FLIPPER {
        return unverified(name, "no-second-vcpu");
    }
    if let Err(e) = prepare_scratch(c, env, blocks) {
        return unverified(name, format_args!("scratch-write {e}"));
    }
    let mut findings = Findings::new();
    control_round(c, env, pages, blocks, &mut findings);
    let (mut refused, mut clean) = (0, 0);
    let (mut bad, mut failed) = (None, None);
    FLIP_OUTSIDE.store(env.outside, Ordering::Relaxed);
    for _ in 0..FLIP_ROUNDS {
        let r = toctou_round(c, env, pages, blocks, Rewrite::Flipped);
        match r.flip() {
            Flip::Refused => refused += 1,
            Flip::Clean => clean += 1,
            Flip::Breach => {
                bad.get_or_insert(r);
            }
            Flip::Unverified => {
                failed.get_or_insert(r);
            }
        }
    }
    FLIP_STATE.store(FLIP_DONE, Ordering::Release);
    aarch64_cpu::asm::sev();
    let flips = FLIPS.load(Ordering::Acquire);
    findings.note(format_args!(
        "flips={flips} refused={refused} clean={clean}"
    ));
    if let Some(r) = bad {
        findings.add("breach", r, true);
    }
    if let Some(r) = failed {
        findings.unverified("not-run", r);
    }
    if flips == 0 {
        findings.unverified("flipper", "not-running");
    }
    verdict(name, &findings);
}

/// Pages and blocks of the TOCTOU reads (up to 8 pages, at least 3 so a
/// list is used); None (and `unverified` printed) if MDTS is too small.
fn toctou_setup(c: &Controller, _env: &Env, name: &str) -> Option<(u64, u64)> {
    let pages = (c.max_transfer / PAGE_SIZE).min(8);
    let blocks = blocks_for_pages(c, pages);
    if pages < 3 || blocks * u64::from(c.ns.lba_bytes) > c.max_transfer {
        println!("ATTACK {name} attempting read pages={pages}");
        unverified(name, format_args!("max-transfer={}", c.max_transfer));
        return None;
    }
    Some((pages, blocks))
}

/// The control round: list and PRP1 pointing at the decoy before the
/// doorbell; all data must land in the decoy.
fn control_round(c: &mut Controller, env: &Env, pages: u64, blocks: u64, findings: &mut Findings) {
    let r = toctou_round(c, env, pages, blocks, Rewrite::Control);
    findings.record("control-decoy", r, r.control());
}

/// One read of `pages` pages from the scratch area into the first data
/// buffer with its PRPs rewritten as `rewrite` says.
fn toctou_round(c: &mut Controller, env: &Env, pages: u64, blocks: u64, rewrite: Rewrite) -> Round {
    let lba_bytes = u64::from(c.ns.lba_bytes);
    let bytes = blocks * lba_bytes;
    let (data, decoy) = (c.dma.data, c.dma.data2);
    let failed = |why| Round {
        result: Outcome::NotSent(why),
        pages_ok: 0,
        pages,
        decoy_hit: 0,
    };
    dma_fill(data, bytes / 8, |_| READ_MARKER);
    dma_fill(decoy, bytes / 8, |_| DECOY_MARKER);
    c.clean(data, bytes);
    c.clean(decoy, bytes);
    let Ok(prp) = c.prepare_prps(data, bytes, c.dma.lists) else {
        return failed("prp");
    };
    let redirect_entries = |to: u64| {
        for entry in prp.entries() {
            if let EntryKind::Data(page) = entry.kind {
                dma_write64(entry.addr, to + page as u64 * PAGE_SIZE);
            }
        }
    };
    let mut cmd = Command::rw(io::READ, NSID, env.scratch, blocks as u32).prp(prp.prp1, prp.prp2);
    if rewrite == Rewrite::Control {
        redirect_entries(decoy);
        cmd = cmd.prp(decoy, prp.prp2);
        c.clean(c.dma.lists, PAGE_SIZE);
    }
    let Ok((cid, slot)) = c.place(1, cmd) else {
        return failed("queue-full");
    };
    if rewrite == Rewrite::Flipped && !start_flipping(&prp) {
        return failed("flipper-not-running");
    }
    if c.ring(1).is_err() {
        stop_flipping();
        return failed("doorbell");
    }
    if let Rewrite::AfterDoorbell(to) = rewrite {
        // Immediately after the doorbell: every list entry and the SQE's
        // PRP1 now point elsewhere.
        redirect_entries(to);
        dma_write32(slot + 24, to as u32);
        dma_write32(slot + 28, (to >> 32) as u32);
        c.clean(c.dma.lists, PAGE_SIZE);
        c.clean(slot, 64);
    }
    let result = outcome(c.wait(1, cid, io::READ, IO_TIMEOUT_MS));
    if rewrite == Rewrite::Flipped {
        stop_flipping();
    }
    c.invalidate(data, bytes);
    c.invalidate(decoy, bytes);
    let base = env.scratch * lba_bytes;
    let pages_ok = (0..pages)
        .filter(|p| {
            holds_pattern(
                data + p * PAGE_SIZE,
                PAGE_SIZE / 8,
                env.seed,
                base + p * PAGE_SIZE,
            )
        })
        .count() as u64;
    let decoy_hit = (0..pages)
        .filter(|p| {
            holds_pattern(
                decoy + p * PAGE_SIZE,
                PAGE_SIZE / 8,
                env.seed,
                base + p * PAGE_SIZE,
            )
        })
        .count() as u64;
    Round {
        result,
        pages_ok,
        pages,
        decoy_hit,
    }
}

/// No flipper armed.
const NO_FLIPPER: usize = usize::MAX;
/// The vCPU that flips PRP list entries for `nvme-prp-flip`.
static FLIPPER: AtomicUsize = AtomicUsize::new(NO_FLIPPER);
/// Flipper states: waiting for work, flipping, finished for good.
const FLIP_IDLE: u64 = 0;
const FLIP_GO: u64 = 1;
const FLIP_DONE: u64 = 2;
static FLIP_STATE: AtomicU64 = AtomicU64::new(FLIP_IDLE);
/// Whether the flipper is inside its flipping loop.
static FLIP_BUSY: AtomicBool = AtomicBool::new(false);
/// The job: list entries (address, good value) and the bad value base.
static FLIP_ENTRIES: [(AtomicU64, AtomicU64); 8] =
    [const { (AtomicU64::new(0), AtomicU64::new(0)) }; 8];
static FLIP_COUNT: AtomicUsize = AtomicUsize::new(0);
static FLIP_OUTSIDE: AtomicU64 = AtomicU64::new(0);
/// Flips done so far (both writes of one entry count once).
static FLIPS: AtomicU64 = AtomicU64::new(0);
/// How long to wait for the flipper to start or stop.
const FLIPPER_TIMEOUT_MS: u64 = 1000;

/// Lets the flipper vCPU park for good (after the attacks, whether or not
/// `nvme-prp-flip` ran).
pub fn release_flipper() {
    FLIP_STATE.store(FLIP_DONE, Ordering::Release);
    aarch64_cpu::asm::sev();
}

/// Makes secondary vCPU `index` the flipper once its memory test is done.
/// Call before the secondaries start.
pub fn arm_flipper(index: usize) {
    FLIPPER.store(index, Ordering::Release);
}

/// Hands the list entries of `prp` to the flipper and waits until it flips.
fn start_flipping(prp: &microvisor_probe::nvme::prp::Prp) -> bool {
    let mut n = 0;
    for entry in prp.entries().take(FLIP_ENTRIES.len()) {
        FLIP_ENTRIES[n].0.store(entry.addr, Ordering::Relaxed);
        FLIP_ENTRIES[n].1.store(entry.value, Ordering::Relaxed);
        n += 1;
    }
    FLIP_COUNT.store(n, Ordering::Relaxed);
    let before = FLIPS.load(Ordering::Acquire);
    FLIP_STATE.store(FLIP_GO, Ordering::Release);
    aarch64_cpu::asm::sev();
    let deadline = timer::now() + timer::ticks_from_ms(FLIPPER_TIMEOUT_MS);
    while FLIPS.load(Ordering::Acquire) == before {
        if timer::now() >= deadline {
            FLIP_STATE.store(FLIP_IDLE, Ordering::Release);
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// Stops the flipper and waits until it left its loop (entries restored).
fn stop_flipping() {
    FLIP_STATE.store(FLIP_IDLE, Ordering::Release);
    let deadline = timer::now() + timer::ticks_from_ms(FLIPPER_TIMEOUT_MS);
    while FLIP_BUSY.load(Ordering::Acquire) && timer::now() < deadline {
        core::hint::spin_loop();
    }
}

/// From a secondary CPU's main after its memory test: if it is the armed
/// flipper, serve flipping jobs until the attack is over; else return.
pub fn serve_if_flipper(index: usize) {
    if FLIPPER.load(Ordering::Acquire) != index {
        return;
    }
    loop {
        match FLIP_STATE.load(Ordering::Acquire) {
            FLIP_DONE => return,
            FLIP_GO => {
                FLIP_BUSY.store(true, Ordering::Release);
                let n = FLIP_COUNT.load(Ordering::Relaxed);
                let outside = FLIP_OUTSIDE.load(Ordering::Relaxed);
                while FLIP_STATE.load(Ordering::Acquire) == FLIP_GO {
                    for (i, (addr, good)) in FLIP_ENTRIES[..n].iter().enumerate() {
                        let (addr, good) =
                            (addr.load(Ordering::Relaxed), good.load(Ordering::Relaxed));
                        dma_write64(addr, outside + i as u64 * PAGE_SIZE);
                        dma_write64(addr, good);
                    }
                    FLIPS.fetch_add(1, Ordering::AcqRel);
                }
                FLIP_BUSY.store(false, Ordering::Release);
            }
            _ => timer::sleep_us(1000),
        }
    }
}

/// `nvme-lba-outside`: reads and writes at and across the namespace end
/// and at huge LBAs; all must fail (LBA Out of Range), the last block must
/// not change.
fn lba_outside(c: &mut Controller, env: &Env, name: &str) {
    let ns = c.ns.blocks;
    let cases = lba_outside_cases(ns);
    let mut list = Text::<256>::new();
    for (i, case) in cases.iter().enumerate() {
        let _ = write!(
            list,
            "{}{}:{:#x}+{}",
            if i > 0 { "," } else { "" },
            case.label,
            case.slba,
            case.blocks
        );
    }
    println!(
        "ATTACK {name} attempting ns-blocks={ns} {} zeroes@end,zeroes@cross,zeroes@wrap,dsm@end,dsm@wrap",
        list.as_str().unwrap_or("")
    );
    let last = Blocks {
        lba: ns - 1,
        count: 1,
    };
    if let Err((e, _)) = super::nvme_io::write_pattern(c, 1, last, env.seed) {
        return unverified(name, format_args!("last-block-write {e}"));
    }
    let lba_bytes = u64::from(c.ns.lba_bytes);
    let mut findings = Findings::new();
    for LbaCase {
        label,
        write,
        slba,
        blocks,
    } in cases
    {
        let data = c.dma.data;
        let words = u64::from(blocks) * lba_bytes / 8;
        if write {
            let base = slba.wrapping_mul(lba_bytes);
            dma_fill(data, words, |i| {
                pattern::word(env.seed, base.wrapping_add(8 * i))
            });
        } else {
            dma_fill(data, words, |_| READ_MARKER);
        }
        findings.expect_refused(label, outcome(c.transfer(1, write, slba, blocks, data)));
    }
    // The commands that change blocks without a data transfer: Write Zeroes, and Dataset
    // Management deallocating ranges (one 16-byte range in the data page: context
    // attributes, length in blocks, first block). Past the end they would reach the next
    // slice's share (found in review of the tests: only unit-tested before).
    for (label, slba, blocks) in [
        ("zeroes@end", ns, 1),
        ("zeroes@cross", ns.saturating_sub(1), 2),
        ("zeroes@wrap", u64::MAX, 2),
    ] {
        let zeroes = Command::rw(io::WRITE_ZEROES, NSID, slba, blocks);
        findings.expect_refused(label, outcome(c.exec(1, zeroes, IO_TIMEOUT_MS)));
    }
    for (label, slba, blocks) in [("dsm@end", ns, 1u64), ("dsm@wrap", u64::MAX, 2)] {
        let ranges = c.dma.data;
        dma_fill(ranges, PAGE_SIZE / 8, |_| 0);
        dma_write64(ranges, blocks << 32);
        dma_write64(ranges + 8, slba);
        let deallocate = Command::new(io::DATASET_MANAGEMENT)
            .nsid(NSID)
            .cdw(0, 0)
            .cdw(1, 1 << 2)
            .prp(ranges, 0);
        findings.expect_refused(label, outcome(c.exec(1, deallocate, IO_TIMEOUT_MS)));
    }
    match super::nvme_io::check_pattern(c, 1, last, env.seed) {
        super::nvme_io::Check::Intact => findings.note("last-block=intact"),
        super::nvme_io::Check::Corrupt(_) => findings.add("last-block", "changed", true),
        super::nvme_io::Check::Error(e, _) => {
            findings.unverified("last-block", format_args!("read-{e}"))
        }
    }
    verdict(name, &findings);
}

/// `nvme-nsid`: I/O to namespaces the slice does not own (2, 0, all).
fn nsid(c: &mut Controller, env: &Env, name: &str) {
    println!(
        "ATTACK {name} attempting read:nsid=2,0,0xffffffff write:nsid=2,0xffffffff lba={}",
        env.scratch
    );
    let lba_bytes = u64::from(c.ns.lba_bytes);
    if let Err(e) = prepare_scratch(c, env, 1) {
        return unverified(name, format_args!("scratch-write {e}"));
    }
    let mut findings = Findings::new();
    for (label, write, nsid) in NSID_CASES {
        let data = c.dma.data;
        if write {
            let base = env.scratch * lba_bytes;
            dma_fill(data, lba_bytes / 8, |i| {
                pattern::word(env.seed ^ ATTACK_SALT, base + 8 * i)
            });
        }
        let opcode = if write { io::WRITE } else { io::READ };
        let cmd = Command::rw(opcode, nsid, env.scratch, 1);
        let list = c.dma.lists;
        findings.expect_refused(label, outcome(c.transfer_at(1, cmd, data, lba_bytes, list)));
    }
    match scratch_intact(c, env, 1) {
        Some(true) => findings.note("own-block=intact"),
        Some(false) => findings.add("own-block", "changed", true),
        None => findings.unverified("own-block", "readback-failed"),
    }
    verdict(name, &findings);
}

/// `nvme-admin-refused`: every admin opcode the microvisor refuses, well
/// formed. Each must complete with an error status. If any was accepted or
/// timed out, the controller is reset and set up again afterwards (an
/// accepted Doorbell Buffer Config would otherwise change how doorbells
/// work). Doorbell Buffer Config is sent with its pages outside RAM.
fn admin_refused(c: &mut Controller, env: &Env, name: &str) {
    let mut ops = Text::<128>::new();
    for (i, op) in REFUSED_ADMIN.iter().enumerate() {
        let _ = write!(ops, "{}{op:#04x}", if i > 0 { "," } else { "" });
    }
    println!(
        "ATTACK {name} attempting opcodes={}",
        ops.as_str().unwrap_or("")
    );
    let ctx = AdminContext {
        buffer: c.dma.spare,
        buffer2: c.dma.spare + PAGE_SIZE,
        outside: env.outside,
        lba_format: c.ns.format,
        cntlid: c.info.cntlid,
    };
    let mut findings = Findings::new();
    let mut reset = false;
    for op in REFUSED_ADMIN {
        dma_fill(ctx.buffer, 2 * PAGE_SIZE / 8, |_| 0);
        let words = admin_buffer_words(op, &ctx);
        dma_write64(ctx.buffer, words[0]);
        dma_write64(ctx.buffer + 8, words[1]);
        c.clean(ctx.buffer, 2 * PAGE_SIZE);
        let result = outcome(c.exec(0, refused_admin_command(op, &ctx), ADMIN_TIMEOUT_MS));
        reset |= !result.refused();
        findings.expect_refused(format_args!("{op:#04x}"), result);
    }
    if reset {
        let restarted = c.enable_admin().and_then(|()| c.create_io_queues());
        match restarted {
            Ok(()) => findings.note("controller-reset=ok"),
            Err(e) => findings.note(format_args!("controller-reset={e}")),
        }
    }
    verdict(name, &findings);
}

/// `nvme-sgl-fused`: reads with an SGL data pointer (to a buffer in RAM
/// and outside it), a fused Compare+Write pair, a lone first-fused Read and
/// a Read with a metadata pointer outside RAM.
fn sgl_fused(c: &mut Controller, env: &Env, name: &str) {
    println!(
        "ATTACK {name} attempting sgl-read sgl-read-outside fused-compare-write fused-first-alone \
         mptr-outside lba={} outside={:#x}",
        env.scratch, env.outside
    );
    let lba_bytes = u64::from(c.ns.lba_bytes);
    if let Err(e) = prepare_scratch(c, env, 1) {
        return unverified(name, format_args!("scratch-write {e}"));
    }
    let (data, data2) = (c.dma.data, c.dma.data2);
    let words = lba_bytes / 8;
    let base = env.scratch * lba_bytes;
    let mut findings = Findings::new();

    for (label, addr) in [("sgl-read", data2), ("sgl-read-outside", env.outside)] {
        dma_fill(data2, words, |_| READ_MARKER);
        let cmd = sgl_read(NSID, env.scratch, 1, addr, lba_bytes as u32);
        let result = outcome(c.exec(1, cmd, IO_TIMEOUT_MS));
        c.invalidate(data2, lba_bytes);
        let arrived = dma_words(data2, words).any(|w| w != READ_MARKER);
        if arrived && addr == data2 {
            findings.add(label, format_args!("{result},data-arrived"), true);
        } else {
            findings.expect_refused(label, result);
        }
    }

    // Compare (data = what is on disk) fused with a Write of other data.
    dma_fill(data, words, |i| pattern::word(env.seed, base + 8 * i));
    dma_fill(data2, words, |i| {
        pattern::word(env.seed ^ ATTACK_SALT, base + 8 * i)
    });
    c.clean(data, lba_bytes);
    c.clean(data2, lba_bytes);
    let compare = Command::rw(io::COMPARE, NSID, env.scratch, 1)
        .fuse(FUSE_FIRST)
        .prp(data, 0);
    let write = Command::rw(io::WRITE, NSID, env.scratch, 1)
        .fuse(FUSE_SECOND)
        .prp(data2, 0);
    let pair = c
        .place(1, compare)
        .and_then(|(a, _)| c.place(1, write).map(|(b, _)| (a, b)))
        .and_then(|ids| c.ring(1).map(|()| ids));
    match pair {
        Ok((first, second)) => {
            let r1 = outcome(c.wait(1, first, io::COMPARE, IO_TIMEOUT_MS));
            let r2 = outcome(c.wait(1, second, io::WRITE, IO_TIMEOUT_MS));
            findings.expect_refused("fused-compare", r1);
            findings.expect_refused("fused-write", r2);
        }
        Err(e) => findings.unverified("fused", format_args!("not-sent({e})")),
    }

    let lone = Command::rw(io::READ, NSID, env.scratch, 1)
        .fuse(FUSE_FIRST)
        .prp(data2, 0);
    findings.expect_refused("fused-first-alone", outcome(c.exec(1, lone, IO_TIMEOUT_MS)));

    let mptr = Command::rw(io::READ, NSID, env.scratch, 1)
        .prp(data2, 0)
        .mptr(env.outside);
    let result = outcome(c.exec(1, mptr, IO_TIMEOUT_MS));
    if result.succeeded() && c.ns.metadata_bytes == 0 {
        // Without metadata in the LBA format nothing is transferred there.
        findings.add(
            "mptr-outside",
            format_args!("{result},no-metadata-format"),
            false,
        );
    } else {
        findings.expect_refused("mptr-outside", result);
    }

    match scratch_intact(c, env, 1) {
        Some(true) => findings.note("block=intact"),
        Some(false) => findings.add("block", "changed", true),
        None => findings.unverified("block", "readback-failed"),
    }
    verdict(name, &findings);
}

/// `nvme-doorbell`: bogus doorbell values on its own queues, doorbells of
/// queues it did not create or beyond its allocation; then the correct
/// values again and I/O on every queue plus an Identify: contained if the
/// controller still works and no stray completion appeared.
fn doorbell(c: &mut Controller, env: &Env, name: &str) {
    let writes: [DoorbellWrite; 12] = doorbell_writes(
        u32::from(c.io_entries),
        u32::from(c.admin_entries),
        c.io_count,
        c.granted,
        c.cap.doorbell_stride(),
    );
    let mut list = Text::<512>::new();
    for (i, w) in writes.iter().enumerate() {
        let _ = write!(list, "{}{w}", if i > 0 { "," } else { "" });
    }
    println!("ATTACK {name} attempting {}", list.as_str().unwrap_or(""));
    if let Err(e) = prepare_scratch(c, env, 1) {
        return unverified(name, format_args!("scratch-write {e}"));
    }
    let stray_before = c.stray;
    let mut findings = Findings::new();
    let mut faults = 0;
    for w in writes {
        if c.doorbell(w.qid, w.completion, w.value).is_err() {
            faults += 1;
        }
    }
    findings.note(format_args!("writes={} faults={faults}", writes.len()));
    // Give a controller that acted on them time to do damage.
    timer::sleep_us(20_000);
    for qid in 0..=c.io_count {
        if let Ok((tail, head)) = c.doorbell_values(qid) {
            let _ = c.doorbell(qid, false, u32::from(tail));
            let _ = c.doorbell(qid, true, u32::from(head));
        }
    }
    let mut io_ok = 0;
    for qid in 1..=c.io_count {
        let one = Blocks {
            lba: env.scratch,
            count: 1,
        };
        match super::nvme_io::check_pattern(c, qid, one, env.seed) {
            super::nvme_io::Check::Intact => io_ok += 1,
            super::nvme_io::Check::Corrupt(_) => {
                findings.add(format_args!("io-q{qid}"), "wrong-data", true)
            }
            super::nvme_io::Check::Error(e, _) => findings.add(format_args!("io-q{qid}"), e, true),
        }
    }
    findings.note(format_args!("io-after={io_ok}/{}", c.io_count));
    let page = c.dma.identify;
    let identify = Command::identify(microvisor_probe::nvme::CNS_CONTROLLER, 0, page);
    match c.exec(0, identify, ADMIN_TIMEOUT_MS) {
        Ok(done) if done.status.is_success() => findings.note("admin-after=ok"),
        other => findings.add("admin-after", outcome(other), true),
    }
    let stray = c.drain(1).unwrap_or(c.stray) - stray_before;
    findings.add("stray-completions", stray, stray != 0);
    verdict(name, &findings);
}

/// Command ID of the completion `nvme-cq-write` forges.
const FORGED_CID: u32 = 0xbeef;
/// What `nvme-cq-write` stores past the CQ's last entry.
const AFTER_CQ: u32 = 0x5afe_c0de;

/// `nvme-cq-write`: after a read on I/O queue 1 (under direct queues, its first command makes
/// the pair direct), the slice stores a forged completion (command ID 0xbeef, the phase tag
/// the controller writes next, success) into the entry the controller writes next, and a
/// word past the CQ's last entry, in the same page. Under direct queues
/// (`nvme.direct-queues`) the CQ's page is read-only to the slice: the forged entry must be
/// dropped (else it could pass for a completion and free the slot of a command still in
/// flight) and the word past it land (the hypervisor completes that store). On the mediated
/// path the slice owns its CQ and both land (the entry is put back at once). Either way a
/// read on the queue afterwards returns the right data.
fn cq_write(c: &mut Controller, env: &Env, name: &str) {
    println!("ATTACK {name} attempting forged-entry,after-cq");
    if let Err(e) = prepare_scratch(c, env, 1) {
        return unverified(name, format_args!("scratch-write {e}"));
    }
    let one = Blocks {
        lba: env.scratch,
        count: 1,
    };
    let mut findings = Findings::new();
    let check = |c: &mut Controller, findings: &mut Findings, label: &str| {
        match super::nvme_io::check_pattern(c, 1, one, env.seed) {
            super::nvme_io::Check::Intact => findings.add(label, "ok", false),
            super::nvme_io::Check::Corrupt(_) => findings.add(label, "wrong-data", true),
            super::nvme_io::Check::Error(e, _) => findings.add(label, e, true),
        }
    };
    check(c, &mut findings, "read-before");
    let Ok((next, phase, after)) = c.cq_next(1) else {
        return unverified(name, "no-queue-1");
    };
    let entry = next + 12;
    let old = nvme::dma_read32(entry);
    let forged = FORGED_CID | u32::from(phase) << 16;
    nvme::dma_write32(entry, forged);
    let landed = nvme::dma_read32(entry) == forged;
    if landed {
        // The slice's own CQ (mediated): its driver must not take the entry.
        nvme::dma_write32(entry, old);
    }
    // Held either way: which one depends on the queue being direct (the scenario says).
    let written = if landed { "landed" } else { "dropped" };
    findings.add("cq-write", written, false);
    if after & (PAGE_SIZE - 1) != 0 {
        let before = nvme::dma_read32(after);
        nvme::dma_write32(after, AFTER_CQ);
        let after_landed = nvme::dma_read32(after) == AFTER_CQ;
        nvme::dma_write32(after, before);
        findings.add(
            "after-cq",
            if after_landed { "landed" } else { "dropped" },
            !after_landed,
        );
    }
    check(c, &mut findings, "read-after");
    verdict(name, &findings);
}

/// `race-nvme-doorbell`: the racing vCPU writes the SQ tail doorbell of the first queue ID past
/// the grant and the CQ head doorbell of the one after (bogus value 0x7f) in a loop while this
/// vCPU reads the scratch block on I/O queue 1 and checks it, 64 times: every read must
/// return the right data with no error (round value 0; 1 = wrong data, 2 = an error).
fn race_doorbell(c: &mut Controller, env: &Env, name: &str) {
    let stride = c.cap.doorbell_stride();
    let offsets = [
        microvisor_probe::nvme::doorbell_offset(c.granted + 1, false, stride),
        microvisor_probe::nvme::doorbell_offset(c.granted + 2, true, stride),
    ];
    println!(
        "ATTACK {name} attempting doorbells={:#x},{:#x}=0x7f while reading lba={} on queue 1",
        offsets[0], offsets[1], env.scratch
    );
    if offsets.iter().any(|&o| o + 4 > c.bar_size) {
        return unverified(name, "doorbells-outside-bar0");
    }
    if let Err(e) = prepare_scratch(c, env, 1) {
        return unverified(name, format_args!("scratch-write {e}"));
    }
    let doorbells = offsets.map(|o| c.bar + o);
    let one = Blocks {
        lba: env.scratch,
        count: 1,
    };
    let outcome = super::sweep::race_doorbells(doorbells, |_| {
        Ok(match super::nvme_io::check_pattern(c, 1, one, env.seed) {
            super::nvme_io::Check::Intact => 0,
            super::nvme_io::Check::Corrupt(_) => 1,
            super::nvme_io::Check::Error(..) => 2,
        })
    });
    super::attacks::conclude(Attack::RaceNvmeDoorbell, &outcome);
}

/// `nvme-queue-outside`: with its last I/O queue pair deleted, Create I/O
/// CQ/SQ with the queue outside RAM or straddling its end, non-contiguous
/// (PC = 0), with queue IDs beyond the allocation or 0, with sizes beyond
/// MQES, an SQ bound to a CQ that does not exist. Each must fail; an
/// accidental success is deleted again. The pair is then recreated and
/// used.
fn queue_outside(c: &mut Controller, env: &Env, name: &str) {
    let free = c.io_count;
    let (good_sq, good_cq) = c.io_pages(free);
    let q = QueueContext {
        free_qid: free,
        granted: c.granted,
        max_entries: c.cap.max_entries(),
        entries: u32::from(c.io_entries),
        good_cq,
        good_sq,
        outside: env.outside,
        straddle: env.outside - PAGE_SIZE,
    };
    let (cqs, sqs) = (cq_cases(&q), sq_cases(&q));
    let mut list = Text::<512>::new();
    for (i, case) in cqs.iter().chain(sqs.iter()).enumerate() {
        let _ = write!(list, "{}{}", if i > 0 { "," } else { "" }, case.label);
    }
    println!(
        "ATTACK {name} attempting free-qid={free} granted={} outside={:#x} {}",
        c.granted,
        env.outside,
        list.as_str().unwrap_or("")
    );
    if free == 0 {
        return unverified(name, "no-io-queue");
    }
    if let Err(e) = c.delete_io_pair(free) {
        return unverified(name, format_args!("delete-pair {e}"));
    }
    let mut findings = Findings::new();
    for case in &cqs {
        let result = queue_attempt(c, case);
        findings.expect_refused(case.label, result);
    }
    let good = Command::create_cq(free, q.entries, good_cq, true);
    match c.exec(0, good, ADMIN_TIMEOUT_MS) {
        Ok(done) if done.status.is_success() => {
            for case in &sqs {
                let result = queue_attempt(c, case);
                findings.expect_refused(case.label, result);
            }
            let _ = c.exec(0, Command::delete_cq(free), ADMIN_TIMEOUT_MS);
        }
        // Without a good CQ the SQ cases cannot be tried.
        other => findings.unverified("good-cq", outcome(other)),
    }
    let restored = c.create_io_pair(free).and_then(|()| {
        let one = Blocks {
            lba: env.scratch,
            count: 1,
        };
        match super::nvme_io::check_pattern(c, free, one, env.seed) {
            super::nvme_io::Check::Error(e, _) => Err(e),
            _ => Ok(()),
        }
    });
    match restored {
        Ok(()) => findings.note(format_args!("restored-q{free}=ok")),
        Err(e) => findings.add(format_args!("restored-q{free}"), e, true),
    }
    verdict(name, &findings);
}

/// Sends one Create case (unless it is skipped); deletes the queue again if
/// it was created.
fn queue_attempt(c: &mut Controller, case: &QueueCase) -> Outcome {
    let command = match case.command {
        Ok(command) => command,
        Err(why) => return Outcome::Skipped(why),
    };
    let result = outcome(c.exec(0, command, ADMIN_TIMEOUT_MS));
    if result.succeeded() {
        let delete = if case.sq {
            Command::delete_sq(case.qid)
        } else {
            Command::delete_cq(case.qid)
        };
        let _ = c.exec(0, delete, ADMIN_TIMEOUT_MS);
    }
    result
}

/// `nvme-reset-inflight`: several reads in flight, CC.EN cleared at once,
/// CSTS.RDY = 0 awaited, the old reads' buffers marked, the controller
/// enabled and its queues created again, a read redone. Contained if the
/// controller comes back, the new read works, no completion of the old
/// commands appears and no old read writes its buffer after the reset.
fn reset_inflight(c: &mut Controller, env: &Env, name: &str) {
    const READS: u64 = 4;
    let lba_bytes = u64::from(c.ns.lba_bytes);
    let size = (64 << 10).min(c.max_transfer) / lba_bytes * lba_bytes;
    let blocks = size / lba_bytes;
    println!(
        "ATTACK {name} attempting reads={READS}x{size} lba={} then cc.en=0",
        env.scratch
    );
    if blocks == 0 || READS * size > nvme::MAX_TRANSFER {
        return unverified(name, format_args!("max-transfer={}", c.max_transfer));
    }
    if let Err(e) = prepare_scratch(c, env, 1) {
        return unverified(name, format_args!("scratch-write {e}"));
    }
    let stray_before = c.stray;
    let mut findings = Findings::new();
    let mut placed = 0;
    for i in 0..READS {
        let data = c.dma.data + i * size;
        let list = c.dma.lists + i * PAGE_SIZE;
        let Ok(prp) = c.prepare_prps(data, size, list) else {
            break;
        };
        let cmd = Command::rw(io::READ, NSID, env.scratch, blocks as u32).prp(prp.prp1, prp.prp2);
        if c.place(1, cmd).is_err() {
            break;
        }
        placed += 1;
    }
    if placed == 0 || c.ring(1).is_err() {
        return unverified(name, "submit");
    }
    let start = timer::now();
    if let Err(e) = c.clear_enable().and_then(|()| c.wait_ready(false)) {
        findings.add("disable", e, true);
        return verdict(name, &findings);
    }
    let disable_us = timer::us_from_ticks(timer::now() - start);
    findings.note(format_args!(
        "in-flight={placed} rdy0-after-us={disable_us}"
    ));
    // Forget the old queues (the controller dropped them), mark the old
    // reads' buffers.
    let _ = c.disable();
    dma_fill(c.dma.data, READS * size / 8, |_| STALE_MARKER);
    c.clean(c.dma.data, READS * size);
    match c.enable_admin().and_then(|()| c.create_io_queues()) {
        Ok(()) => findings.note(format_args!("re-enabled queues={}", c.io_count)),
        Err(e) => {
            findings.add("re-enable", e, true);
            return verdict(name, &findings);
        }
    }
    let one = Blocks {
        lba: env.scratch,
        count: 1,
    };
    match super::nvme_io::check_pattern(c, 1, one, env.seed) {
        super::nvme_io::Check::Intact => findings.note("read-after=ok"),
        super::nvme_io::Check::Corrupt(lba) => {
            findings.add("read-after", format_args!("wrong-data-lba={lba}"), true)
        }
        super::nvme_io::Check::Error(e, _) => findings.add("read-after", e, true),
    }
    timer::sleep_us(50_000);
    for qid in 0..=c.io_count {
        let _ = c.drain(qid);
    }
    let stray = c.stray - stray_before;
    findings.add("old-completions", stray, stray != 0);
    c.invalidate(c.dma.data, READS * size);
    let late = (0..READS * size / PAGE_SIZE)
        .filter(|p| dma_words(c.dma.data + p * PAGE_SIZE, PAGE_SIZE / 8).any(|w| w != STALE_MARKER))
        .count();
    findings.add("late-dma-pages", late, late != 0);
    verdict(name, &findings);
}
