//! Trap decoding (`logic::trap::decode`): any ESR_EL2, FAR_EL2 and HPFAR_EL2.
//!
//! Invariants (Arm ARM D24.2.43 ESR_EL2, D24.2.63 HPFAR_EL2):
//! - the exit's kind follows ESR_EL2.EC alone: 0x16 HVC, 0x17 SMC (immediate = ISS[15:0]),
//!   0x24 data abort from a lower EL (MMIO or unemulable), 0x20 instruction abort, 0x18
//!   MSR/MRS; every other class is `Other` with that class;
//! - the IPA of an abort is exactly what HPFAR_EL2.FIPA (IPA[51:12] in bits [43:4]) and
//!   FAR_EL2[11:0] encode, so it is below 2^52;
//! - an MMIO access is only decoded with ISV = 1 and S1PTW = 0; its width is 1 << SAS, its
//!   register number below 32, its direction WnR, its SSE/SF the syndrome's;
//! - `read_result` leaves a value whose low `width` bytes are the device's (sign- or
//!   zero-extended above), never more than 32 bits for a W register; `write_value` fits in
//!   `width` bytes and equals the register's low bytes;
//! - a system register access's fields fit their ISS fields; its Display never panics.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use microvisor_fuzz::{fits, width_mask};
use microvisor_logic::trap::{Exit, decode};

/// Classes the decoder treats specially, and neighbours.
const CLASSES: [u64; 12] = [
    0x16, 0x17, 0x24, 0x25, 0x20, 0x21, 0x18, 0x00, 0x01, 0x3f, 0x03, 0x0c,
];

#[derive(Arbitrary, Debug)]
struct Input {
    /// Force one of `CLASSES` into ESR_EL2.EC (else keep the raw one).
    class: Option<u8>,
    esr: u64,
    far: u64,
    hpfar: u64,
    /// What a device returns, and the register a write takes its value from.
    raw: u64,
    register_value: u64,
}

fn check(input: Input) {
    let mut esr = input.esr;
    if let Some(c) = input.class {
        esr = esr & !(0x3f << 26) | CLASSES[usize::from(c) % CLASSES.len()] << 26;
    }
    let (far, hpfar) = (input.far, input.hpfar);
    let class = (esr >> 26) & 0x3f;
    let iss = esr & 0x1ff_ffff;
    let ipa = ((hpfar >> 4) & ((1 << 40) - 1)) << 12 | (far & 0xfff);
    let exit = decode(esr, far, hpfar);
    match exit {
        Exit::Hypercall { immediate } => {
            assert_eq!(class, 0x16);
            assert_eq!(u64::from(immediate), iss & 0xffff);
        }
        Exit::SecureMonitorCall { immediate } => {
            assert_eq!(class, 0x17);
            assert_eq!(u64::from(immediate), iss & 0xffff);
        }
        Exit::Mmio(access) => {
            assert_eq!(class, 0x24);
            assert!(iss & 1 << 24 != 0, "MMIO without ISV");
            assert!(iss & 1 << 7 == 0, "MMIO on a stage-1 walk");
            assert_eq!(access.ipa, ipa, "IPA is not HPFAR.FIPA:FAR[11:0]");
            assert!(access.ipa < 1 << 52);
            assert_eq!(u64::from(access.width), 1 << ((iss >> 22) & 3));
            assert!(access.register < 32);
            assert_eq!(u64::from(access.register), (iss >> 16) & 0x1f);
            assert_eq!(access.write, iss & 1 << 6 != 0);
            assert_eq!(access.sign_extend, iss & 1 << 21 != 0);
            assert_eq!(access.sixty_four, iss & 1 << 15 != 0);
            let w = access.width;
            let read = access.read_result(input.raw);
            if !access.sixty_four {
                assert!(fits(read, 4), "a W register got {read:#x}");
            }
            let low = width_mask(w.min(if access.sixty_four { 8 } else { 4 }));
            assert_eq!(
                read & low,
                input.raw & width_mask(w) & low,
                "lost device bits"
            );
            if !access.sign_extend {
                assert!(fits(read, w), "zero-extended read {read:#x} wider than {w}");
            }
            let written = access.write_value(input.register_value);
            assert!(fits(written, w));
            assert_eq!(written, input.register_value & width_mask(w));
        }
        Exit::DataAbort {
            ipa: got,
            write,
            status,
            page_walk,
        } => {
            assert_eq!(class, 0x24);
            assert!(iss & 1 << 24 == 0 || page_walk);
            assert_eq!(page_walk, iss & 1 << 7 != 0);
            assert_eq!(got, ipa, "IPA is not HPFAR.FIPA:FAR[11:0]");
            assert_eq!(write, iss & 1 << 6 != 0);
            assert_eq!(u64::from(status), iss & 0x3f);
        }
        Exit::InstructionAbort { ipa: got, status } => {
            assert_eq!(class, 0x20);
            assert_eq!(got, ipa);
            assert_eq!(u64::from(status), iss & 0x3f);
        }
        Exit::SystemRegister(s) => {
            assert_eq!(class, 0x18);
            assert!(s.op0 < 4 && s.op1 < 8 && s.op2 < 8 && s.crn < 16 && s.crm < 16);
            assert!(s.register < 32);
            assert_eq!(s.read, iss & 1 != 0);
            let _ = s.to_string();
        }
        Exit::Coprocessor { class: c } => {
            assert_eq!(u64::from(c), class);
            assert!([0x03, 0x04, 0x05, 0x06, 0x0c].contains(&class));
        }
        Exit::Other { class: c } => {
            assert_eq!(u64::from(c), class);
            assert!(![0x16, 0x17, 0x24, 0x20, 0x18, 0x03, 0x04, 0x05, 0x06, 0x0c].contains(&class));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        check(input);
    }
});
