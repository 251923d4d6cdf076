//! The control interface's decoders (`logic::control`, docs/control.md): everything the
//! manager slice writes is untrusted. Any request header (raw, or with a valid magic and
//! operation so the fuzzer gets past them), boot flags, image kinds, command lines, staging
//! pool allocations and uploads, console ring pushes and reads, JSON string escaping.
//!
//! Invariants:
//! - a header parses only with magic MVRQ and a known operation; the request carries exactly
//!   the header's a0..a2 and length, the length is at most MAX_PAYLOAD, a target name is
//!   present exactly for operations that have one and is 1..=32 printable ASCII bytes, NULs
//!   only after it; a refusal is BadRequest or UnknownOp with a one-line message;
//! - boot flags parse only without unknown bits and without "staged initrd" + "no initrd";
//! - a command line parses only when at most 2047 bytes of UTF-8 without NUL, unchanged;
//! - pool allocations are granule-aligned, inside the pool, never overlap, and `used` is their
//!   sum; `largest_free` succeeds when allocated; an upload accepts only in-order writes
//!   inside its size and returns pool offsets inside its allocation;
//! - the console ring returns exactly the bytes pushed at the cursors asked for (the last
//!   64 KiB), never more than asked;
//! - JSON escaping leaves no control character and no unescaped quote inside the quotes.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use microvisor_logic::control::{
    BootFlags, CONSOLE_RING, ConsoleRing, ImageKind, MAX_CMDLINE, MAX_PAYLOAD, NAME_BYTES, Op,
    POOL_GRANULE, PoolAllocator, REQUEST_HEADER_SIZE, REQUEST_MAGIC, Request, Status, Upload,
    json_string, parse_cmdline,
};

#[derive(Arbitrary, Debug)]
enum Step {
    Header {
        /// Force magic and a known operation (code 1..=14).
        valid: Option<u8>,
        bytes: [u8; REQUEST_HEADER_SIZE],
    },
    Boot(u64),
    Kind(u64),
    Cmdline(Vec<u8>),
    Allocate(u32),
    Free(u8),
    Write(u32),
    Push(Vec<u8>),
    /// A long run of one byte (to wrap the ring quickly).
    Fill(u8, u16),
    Read(u64, u16),
    Json(String),
}

fn le(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn header(valid: Option<u8>, mut bytes: [u8; REQUEST_HEADER_SIZE]) {
    if let Some(op) = valid {
        bytes[..4].copy_from_slice(&REQUEST_MAGIC.to_le_bytes());
        bytes[4..8].copy_from_slice(&u32::from(op % 14 + 1).to_le_bytes());
        if op & 0x80 != 0 {
            let length = le(&bytes, 0x20) % (2 * MAX_PAYLOAD);
            bytes[0x20..0x28].copy_from_slice(&length.to_le_bytes());
        }
    }
    let magic = u32::from_le_bytes(bytes[..4].try_into().unwrap());
    let code = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    match Request::parse(&bytes) {
        Ok(r) => {
            assert_eq!(magic, REQUEST_MAGIC);
            assert_eq!(Some(r.op), Op::from_code(code));
            assert_eq!(
                (r.a0, r.a1, r.a2),
                (le(&bytes, 8), le(&bytes, 0x10), le(&bytes, 0x18))
            );
            assert_eq!(r.length, le(&bytes, 0x20));
            assert!(r.length <= MAX_PAYLOAD);
            assert_eq!(r.slice.is_some(), r.op.has_target());
            if let Some(name) = r.slice {
                assert!(!name.is_empty() && name.len() <= NAME_BYTES);
                assert!(name.bytes().all(|b| b.is_ascii_graphic()));
                let field = &bytes[0x28..0x28 + NAME_BYTES];
                assert_eq!(&field[..name.len()], name.as_bytes());
                assert!(field[name.len()..].iter().all(|&b| b == 0));
            }
        }
        Err(refusal) => {
            assert!(matches!(
                refusal.status,
                Status::BadRequest | Status::UnknownOp
            ));
            assert!(!refusal.message.contains('\n'), "{}", refusal.message);
            if refusal.status == Status::UnknownOp {
                assert_eq!(magic, REQUEST_MAGIC);
                assert_eq!(Op::from_code(code), None);
            }
        }
    }
}

struct Pool {
    pool: PoolAllocator,
    live: Vec<(u64, u64)>,
    upload: Option<Upload>,
}

fn check_pool(p: &Pool) {
    let mut sorted = p.live.clone();
    sorted.sort();
    for pair in sorted.windows(2) {
        assert!(
            pair[0].0 + pair[0].1 <= pair[1].0,
            "allocations overlap: {pair:?}"
        );
    }
    for &(offset, len) in &sorted {
        assert_eq!(offset % POOL_GRANULE, 0);
        assert!(offset + len <= p.pool.size(), "allocation past the pool");
    }
    assert_eq!(p.pool.used(), sorted.iter().map(|&(_, l)| l).sum::<u64>());
}

fn step(p: &mut Pool, ring: &mut ConsoleRing, pushed: &mut Vec<u8>, wrap: bool, s: Step) {
    match s {
        Step::Header { valid, bytes } => header(valid, bytes),
        Step::Boot(a0) => {
            let a0 = if a0 >> 63 != 0 { a0 } else { a0 & 0x3f };
            if let Ok(flags) = BootFlags::parse(a0) {
                assert_eq!(a0 & !0x1f, 0, "unknown boot flag accepted");
                assert!(a0 & 6 != 6, "staged and no initrd at once");
                assert!(a0 & 16 == 0 || a0 == 16, "the network boot with another flag");
                assert_eq!(flags.custom, a0 != 0);
                assert_eq!(flags.cmdline, a0 & 8 != 0);
                assert_eq!(flags.network, a0 == 16);
            }
        }
        Step::Kind(a0) => {
            let kind = ImageKind::from_arg(a0 % 4);
            assert_eq!(kind.is_ok(), a0 % 4 < 2);
            if let Ok(k) = kind {
                assert_eq!(k.index() as u64, a0 % 4);
            }
        }
        Step::Cmdline(bytes) => match parse_cmdline(&bytes) {
            Ok(text) => {
                assert!(bytes.len() <= MAX_CMDLINE);
                assert_eq!(text.as_bytes(), &bytes[..]);
                assert!(!text.contains('\0'));
            }
            Err(r) => assert!(!r.message.contains('\n')),
        },
        Step::Allocate(len) => {
            let len = u64::from(len) % (p.pool.size() + 2 * POOL_GRANULE);
            let largest = p.pool.largest_free();
            match p.pool.allocate(len) {
                Some(offset) => {
                    let rounded = len.max(1).next_multiple_of(POOL_GRANULE);
                    assert!(rounded <= largest, "allocated more than largest_free");
                    p.live.push((offset, rounded));
                    if p.upload.is_none() {
                        p.upload = Some(Upload {
                            offset,
                            size: len,
                            written: 0,
                        });
                    }
                }
                None => assert!(len.max(1).next_multiple_of(POOL_GRANULE) > largest),
            }
        }
        Step::Free(i) => {
            if !p.live.is_empty() {
                let (offset, _) = p.live.remove(usize::from(i) % p.live.len());
                p.pool.free(offset);
                if p.upload.is_some_and(|u| u.offset == offset) {
                    p.upload = None;
                }
            }
        }
        Step::Write(len) => {
            if let Some(up) = &mut p.upload {
                let before = *up;
                let at = if len & 1 != 0 {
                    before.written
                } else {
                    u64::from(len) % (before.size + 2)
                };
                let len = u64::from(len >> 1) % (before.size + 2);
                match up.write(at, len) {
                    Ok(pool_at) => {
                        assert_eq!(at, before.written, "out-of-order write accepted");
                        assert!(at + len <= before.size);
                        assert_eq!(pool_at, before.offset + at);
                        assert_eq!(up.written, at + len);
                    }
                    Err(_) => assert_eq!(*up, before, "a refused write changed the upload"),
                }
                assert_eq!(up.complete(), up.written == up.size);
            }
        }
        Step::Push(bytes) => {
            bytes.iter().for_each(|&b| ring.push(b));
            pushed.extend_from_slice(&bytes);
        }
        Step::Fill(b, n) => {
            // Eight of these wrap the 64 KiB ring; past one wrap nothing new happens. The pushes
            // are what cost executions, so only inputs that ask for it (`wrap`) get that far.
            let most = if wrap { CONSOLE_RING + 8200 } else { 4096 };
            if pushed.len() > most {
                return;
            }
            let n = usize::from(n % 8200);
            (0..n).for_each(|_| ring.push(b));
            pushed.extend(std::iter::repeat_n(b, n));
        }
        Step::Read(cursor, max) => {
            let max = max % 4097;
            let end = pushed.len() as u64;
            let cursor = if cursor >> 63 != 0 {
                cursor
            } else {
                cursor % (end + 2)
            };
            let (first, bytes) = ring.read(cursor, usize::from(max));
            let start = end.saturating_sub(CONSOLE_RING as u64);
            assert_eq!(first, cursor.clamp(start, end));
            assert_eq!((ring.start(), ring.end()), (start, end));
            assert!(bytes.len() <= usize::from(max));
            let want =
                &pushed[first as usize..(first as usize + usize::from(max)).min(end as usize)];
            assert_eq!(bytes, want, "console ring bytes at {first}");
        }
        Step::Json(text) => {
            let mut out = String::new();
            json_string(&mut out, &text);
            assert!(out.len() >= 2 && out.starts_with('"') && out.ends_with('"'));
            let inner = &out[1..out.len() - 1];
            assert!(
                !inner.chars().any(|c| (c as u32) < 0x20),
                "control character in {out:?}"
            );
            let mut escaped = false;
            for c in inner.chars() {
                assert!(escaped || c != '"', "unescaped quote in {out:?}");
                escaped = !escaped && c == '\\';
            }
            assert!(!escaped, "dangling backslash in {out:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((pool_pages, wrap)) = <(u8, bool)>::arbitrary(&mut u) else {
        return;
    };
    let mut p = Pool {
        pool: PoolAllocator::new(u64::from(pool_pages) * POOL_GRANULE + u64::from(pool_pages & 7)),
        live: Vec::new(),
        upload: None,
    };
    let mut ring = ConsoleRing::new();
    let mut pushed = Vec::new();
    let mut steps = 0;
    while let Ok(s) = Step::arbitrary(&mut u) {
        step(&mut p, &mut ring, &mut pushed, wrap, s);
        check_pool(&p);
        steps += 1;
        if u.is_empty() || steps > 256 {
            break;
        }
    }
});
