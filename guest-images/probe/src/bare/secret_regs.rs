//! `secret=`'s register pass: registers the hypervisor leaves to the guest (no trap) that a
//! tenant can fill with what it likes and the next tenant on the same core can read back.
//! `plant` writes a recognisable value into each; `check` names every one that is not zero.
//! A vCPU's reset (`virt::reset_el1`) must clear them all; a fresh core resets them to zero,
//! so anything else at `check` came from an earlier run.
//!
//! Registers are reached by encoding: the assembler knows the pointer-authentication keys'
//! names only with the `pauth` target feature.

use aarch64_cpu::registers::{ID_AA64DFR0_EL1, ID_AA64ISAR1_EL1, Readable};

/// One register of the pass.
struct Register {
    name: &'static str,
    read: fn() -> u64,
    write: fn(u64),
    /// What `plant` writes (non-zero; in fields the register keeps).
    planted: u64,
    /// Which feature the core needs for the register to exist.
    needs: Needs,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    Nothing,
    PointerAuth,
    Pmu,
}

macro_rules! register {
    ($name:literal, $encoding:literal, $planted:expr, $needs:ident) => {
        Register {
            name: $name,
            read: || {
                let value;
                // SAFETY: reading an EL1/EL0 system register the core has (`needs`) has no
                // side effect.
                unsafe {
                    core::arch::asm!(concat!("mrs {}, ", $encoding), out(reg) value, options(nomem, nostack))
                };
                value
            },
            write: |value| {
                // SAFETY: the register exists (`needs`) and nothing in the probe depends on
                // it: keys nobody signs with, a breakpoint or watchpoint with debug
                // exceptions off (MDSCR_EL1.MDE = 0), PMU state with counting off.
                unsafe {
                    core::arch::asm!(concat!("msr ", $encoding, ", {}"), in(reg) value, options(nomem, nostack))
                };
            },
            planted: $planted,
            needs: Needs::$needs,
        }
    };
}

const REGISTERS: [Register; 13] = [
    register!(
        "APIAKeyLo_EL1",
        "S3_0_C2_C1_0",
        0x5ec2_e7a5_0000_0001,
        PointerAuth
    ),
    register!(
        "APIBKeyHi_EL1",
        "S3_0_C2_C1_3",
        0x5ec2_e7a5_0000_0002,
        PointerAuth
    ),
    register!(
        "APDAKeyLo_EL1",
        "S3_0_C2_C2_0",
        0x5ec2_e7a5_0000_0003,
        PointerAuth
    ),
    register!(
        "APDBKeyHi_EL1",
        "S3_0_C2_C2_3",
        0x5ec2_e7a5_0000_0004,
        PointerAuth
    ),
    register!(
        "APGAKeyLo_EL1",
        "S3_0_C2_C3_0",
        0x5ec2_e7a5_0000_0005,
        PointerAuth
    ),
    // Breakpoint and watchpoint 0: an address, and a control value with the byte-address
    // select bits set and the enable bit clear.
    register!(
        "DBGBVR0_EL1",
        "S2_0_C0_C0_4",
        0x0000_5ec2_e7a5_0000,
        Nothing
    ),
    register!("DBGBCR0_EL1", "S2_0_C0_C0_5", 0xf << 5, Nothing),
    register!(
        "DBGWVR0_EL1",
        "S2_0_C0_C0_6",
        0x0000_5ec2_e7a5_0008,
        Nothing
    ),
    register!(
        "DBGWCR0_EL1",
        "S2_0_C0_C0_7",
        0xff << 5 | 0b11 << 3,
        Nothing
    ),
    // PMU: event counter 0 (its type, CPU_CYCLES, and a count), its overflow interrupt,
    // the cycle counter's filter (not at EL1) and EL0 access.
    register!("PMEVTYPER0_EL0", "S3_3_C14_C12_0", 0x11, Pmu),
    register!("PMEVCNTR0_EL0", "S3_3_C14_C8_0", 0x5ec2_e7a5, Pmu),
    register!("PMINTENSET_EL1", "S3_0_C9_C14_1", 1, Pmu),
    register!("PMCCFILTR_EL0", "S3_3_C14_C15_7", 1 << 31, Pmu),
];

fn present(needs: Needs) -> bool {
    match needs {
        Needs::Nothing => true,
        Needs::PointerAuth => {
            ID_AA64ISAR1_EL1.read(ID_AA64ISAR1_EL1::APA) != 0
                || ID_AA64ISAR1_EL1.read(ID_AA64ISAR1_EL1::API) != 0
                || ID_AA64ISAR1_EL1.read(ID_AA64ISAR1_EL1::GPA) != 0
                || ID_AA64ISAR1_EL1.read(ID_AA64ISAR1_EL1::GPI) != 0
        }
        Needs::Pmu => !matches!(ID_AA64DFR0_EL1.read(ID_AA64DFR0_EL1::PMUVer), 0 | 0xf),
    }
}

fn registers() -> impl Iterator<Item = &'static Register> {
    REGISTERS.iter().filter(|r| present(r.needs))
}

/// Writes every register's planted value; returns how many read it back (the ones this core
/// keeps, which the next tenant's `check` can find).
pub fn plant() -> usize {
    registers()
        .filter(|r| {
            (r.write)(r.planted);
            (r.read)() != 0
        })
        .count()
}

/// How many registers hold something other than zero, and the first one's name.
pub fn leftovers() -> (usize, Option<&'static str>) {
    let mut found = registers().filter(|r| (r.read)() != 0);
    let first = found.next().map(|r| r.name);
    (first.map_or(0, |_| 1) + found.count(), first)
}
