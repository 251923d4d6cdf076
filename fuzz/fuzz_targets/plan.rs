//! The operator's inputs to the hypervisor (`microvisor-plan`, docs/plan.md): a TOML plan, and
//! the image bundle the hypervisor reads at boot (raw bytes, or a valid bundle with bytes
//! changed).
//!
//! Invariants:
//! - a plan that parses validates again, and its placement on a node (8 cores, 4 GiB with the
//!   hypervisor's holes) puts each slice on exactly its vCPU count of distinct cores below 8,
//!   no core in two slices, each slice's RAM 2 MiB aligned, exactly its `memory`, inside one
//!   free range and overlapping no other slice or the staging pool; its disk shares lie inside
//!   the disk, do not overlap, and number their hardware queues inside the controller's,
//!   disjoint, from 1;
//! - a plan that parses survives the bundle: written with images and parsed back it is the
//!   same plan, with the same images and hashes;
//! - a bundle that parses has a valid plan, every image the plan names exists and lies inside
//!   the bundle, `total_len` is at most the bytes given; hashing never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microvisor_plan::{
    Bundle, BundleWriter, CompiledPlan, Hardware, Plan, RamRange, header_total_len, place,
    place_disk,
};

const MIB: u64 = 1 << 20;

fn node() -> Hardware {
    Hardware {
        cores: 8,
        free_ram: vec![
            RamRange {
                base: 0x4000_0000,
                size: 2 * MIB,
            },
            RamRange {
                base: 0x4400_0000,
                size: 64 * MIB,
            },
            RamRange {
                base: 0x4810_0000,
                size: 0x1_4000_0000 - 0x4810_0000,
            },
        ],
        ram_total: 4 << 30,
    }
}

fn overlaps(a: RamRange, b: RamRange) -> bool {
    a.base < b.end() && b.base < a.end()
}

fn check_plan(plan: &Plan) {
    plan.validate().expect("a parsed plan validates again");
    let hw = node();
    if let Ok(placement) = place(plan, &hw) {
        assert_eq!(placement.slices.len(), plan.slices.len());
        let mut cores = [false; 8];
        let mut ranges: Vec<RamRange> = Vec::new();
        for (slice, placed) in plan.slices.iter().zip(&placement.slices) {
            assert_eq!(
                placed.cores.len(),
                slice.cores.count(),
                "{}: vCPU count",
                slice.name
            );
            for &c in &placed.cores {
                assert!(c < hw.cores, "{}: core {c}", slice.name);
                assert!(!cores[c as usize], "core {c} in two slices");
                cores[c as usize] = true;
            }
            assert_eq!(placed.ram.size, slice.memory);
            assert_eq!(placed.ram.base % (2 * MIB), 0);
            ranges.push(placed.ram);
        }
        ranges.extend(placement.staging);
        for (i, r) in ranges.iter().enumerate() {
            assert!(
                hw.free_ram
                    .iter()
                    .any(|f| r.base >= f.base && r.end() <= f.end()),
                "RAM {r:?} outside free RAM"
            );
            for other in &ranges[i + 1..] {
                assert!(!overlaps(*r, *other), "{r:?} overlaps {other:?}");
            }
        }
    }
    let (capacity, queues) = (16 << 21, 64u16);
    if let Ok(shares) = place_disk(plan, capacity, 9, queues) {
        let shares: Vec<_> = shares.into_iter().flatten().collect();
        let mut next_queue = 1;
        let mut next_block = 0;
        for s in shares {
            assert!(s.first_block >= next_block, "disk shares overlap");
            assert!(s.first_block + s.blocks <= capacity, "share past the disk");
            assert!(s.first_queue >= next_queue && s.queues >= 1);
            assert!(u32::from(s.first_queue) + u32::from(s.queues) - 1 <= u32::from(queues));
            next_queue = s.first_queue + s.queues;
            next_block = s.first_block + s.blocks;
        }
    }
    // Through the bundle and back.
    let mut writer = BundleWriter::new();
    let mut images = Vec::new();
    let compiled: CompiledPlan = plan
        .try_map_images(|slice, field, _| {
            let bytes = format!("{}:{field:?}", slice.name).into_bytes();
            images.push(bytes.clone());
            Ok::<_, ()>(writer.add_image(&slice.name, bytes))
        })
        .expect("mapping never fails");
    let bytes = writer.finish(&compiled);
    let bundle = Bundle::parse(&bytes).expect("a bundle of a valid plan parses");
    assert_eq!(bundle.plan(), &compiled);
    assert_eq!(bundle.total_len(), bytes.len());
    bundle.verify_images().expect("hashes match");
    assert_eq!(bundle.images().len(), images.len());
}

fn check_bundle(bytes: &[u8]) {
    let total = header_total_len(bytes);
    let Ok(bundle) = Bundle::parse(bytes) else {
        return;
    };
    assert_eq!(total.ok(), Some(bundle.total_len() as u64));
    assert!(bundle.total_len() <= bytes.len());
    bundle
        .plan()
        .validate()
        .expect("a parsed bundle's plan is valid");
    let count = bundle.images().len() as u32;
    for slice in &bundle.plan().slices {
        assert!(
            slice.kernel < count,
            "kernel image {} of {count}",
            slice.kernel
        );
        if let Some(i) = slice.initrd {
            assert!(i < count, "initrd image {i} of {count}");
        }
    }
    for i in 0..count {
        let image = bundle
            .image(i)
            .expect("every listed image is inside the bundle");
        assert!(image.bytes.len() <= bundle.total_len());
        let _ = bundle.verify_image(i);
    }
}

/// A small valid bundle to mutate: two slices, three images.
fn seed_bundle() -> Vec<u8> {
    let plan = Plan::from_toml(
        "[[slice]]\nname = \"a\"\ncores = 1\nmemory = \"64MiB\"\nkernel = \"probe\"\n\
         [[slice]]\nname = \"b\"\ncores = [3]\nmemory = \"32MiB\"\nkernel = \"linux\"\n\
         initrd = \"debian\"\ncmdline = \"x=1\"\n[slice.nvme]\nqueues = 1\nsize = \"1MiB\"\n",
    )
    .expect("seed plan");
    let mut writer = BundleWriter::new();
    let mut n = 0u8;
    let compiled: CompiledPlan = plan
        .try_map_images(|_, _, _| {
            n += 1;
            Ok::<_, ()>(writer.add_image("img", vec![n; 100]))
        })
        .unwrap();
    writer.finish(&compiled)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(text) = std::str::from_utf8(rest)
                && let Ok(plan) = Plan::from_toml(text)
            {
                check_plan(&plan);
            }
        }
        1 => check_bundle(rest),
        _ => {
            // (offset, byte) pairs written over a valid bundle.
            thread_local! {
                static SEED: Vec<u8> = seed_bundle();
            }
            let mut bytes = SEED.with(Clone::clone);
            for pair in rest.chunks_exact(3) {
                let at = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % bytes.len();
                bytes[at] = pair[2];
            }
            check_bundle(&bytes);
        }
    }
});
