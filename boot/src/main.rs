//! The EL2 image (docs/architecture.md, "Boot"): arm64 Image header and self-relocation (`entry.S`), then, with
//! the MMU still off, the firmware device tree is read, the hypervisor's working memory is
//! placed, its identity map is built (every core's stack above an unmapped guard page) and the
//! MMU and caches go on. The heap, the console,
//! the GIC distributor and the RAM registry are set up, and the kernel takes over. Until the
//! kernel's console exists, every failure is reported by [`early`].
#![no_std]
#![no_main]

extern crate alloc;

mod early;
mod heap;

use core::panic::PanicInfo;

use microvisor_arch::its::ItsFrames;
use microvisor_arch::memory::{self, static_bytes};
use microvisor_arch::mmu::{self, RawTablePool};
use microvisor_arch::pci::PciHost;
use microvisor_arch::smmu::SmmuFrames;
use microvisor_arch::uart::PhysicalUart;
use microvisor_arch::{cache, cpu, gic, smp};
use microvisor_kernel::{BootInfo, output, primary_main};
use microvisor_logic::dtb;
use microvisor_logic::inventory::{Inventory, MAX_CPUS, MAX_RESERVED, Region, Salvage};
use microvisor_logic::memory_map::place_working_memory;
use microvisor_logic::pagetable::{Attributes, MapError, PAGE_SIZE, Regime, Translation};
use microvisor_logic::stacks::{StackLayout, without_holes};

core::arch::global_asm!(include_str!("entry.S"));

#[global_allocator]
static HEAP: heap::Heap = heap::Heap::empty();

/// Translation tables the hypervisor's own map may take, at the end of its working memory
/// (those it does not take are given back: the working memory ends after the last used one).
const STAGE1_TABLES: usize = 32;
/// Heap for everything but what grows with the cores.
const HEAP_BASE: u64 = 1 << 20;
/// Heap per core: bookkeeping, and the console ring of the slice it may run (each slice has at
/// least one core; the rings exist when the node has a manager). Stacks are beside the heap.
const HEAP_PER_CORE: u64 = 16 * 1024 + microvisor_logic::control::CONSOLE_RING as u64;
/// Alignment of the working memory.
const WORKING_ALIGN: u64 = 64 * 1024;

unsafe extern "C" {
    static __image_end: u8;
    static __text_end: u8;
}

/// Offset of the header's `image_size` field.
const IMAGE_SIZE_OFFSET: u64 = 16;
/// RAM after the loaded file that the header's `image_size` covers: the boot stack's guard page
/// and the 48 KiB boot stack (`microvisor_plan::image::BOOT_STACK_TAIL`, `entry.S`).
const BOOT_STACK_TAIL: u64 = 52 * 1024;
/// Offset of the header's reserved u64 @40 (`microvisor_plan::image::TEST_MARK_OFFSET`).
const TEST_MARK_OFFSET: usize = 40;

#[unsafe(no_mangle)]
extern "C" fn boot_primary(dtb_address: u64, image_base: u64) -> ! {
    let entered = cpu::counter();
    early::image_at(image_base);
    // SAFETY: the loader placed the whole image at `image_base`; the header's first 48 bytes
    // are part of it and never written.
    let header = unsafe { static_bytes(image_base, 48) };
    let image_size = u64::from_le_bytes(
        header[IMAGE_SIZE_OFFSET as usize..][..8]
            .try_into()
            .unwrap_or([0; 8]),
    );
    let test_mark: [u8; 8] = header[TEST_MARK_OFFSET..][..8].try_into().unwrap_or([0; 8]);
    let hypervisor_end = core::ptr::addr_of!(__image_end) as u64;
    // The hypervisor's code: the only executable pages of its map (`boot/link.ld`).
    let text = Region::new(
        image_base,
        core::ptr::addr_of!(__text_end) as u64 - image_base,
    );
    // The file (hypervisor, bundle) and, after it, the boot stack's guard page and the boot
    // stack, whose top `entry.S` put at `image_base + image_size`.
    let image = Region::new(image_base, image_size);
    let tail = image.end().wrapping_sub(BOOT_STACK_TAIL);
    let file_size = hypervisor_end - image_base;
    // What the hypervisor itself occupies: its file and the boot stack with its guard page.
    let hypervisor_size = file_size + BOOT_STACK_TAIL;

    let (dtb, dtb_size) = firmware_tree(dtb_address);
    let inventory = match Inventory::from_dtb(dtb) {
        Ok(inventory) => inventory,
        Err(e) => {
            let salvage = Salvage::from_dtb(dtb);
            if let Some(uart) = salvage.uart {
                early::use_console(uart.base);
            }
            if let Some(conduit) = salvage.psci {
                early::power_off_with(conduit);
            }
            early::fail(format_args!("firmware device tree: {e}"))
        }
    };
    early::use_console(inventory.uart.registers.base);
    early::power_off_with(inventory.psci);
    if tail < hypervisor_end || !tail.is_multiple_of(PAGE_SIZE) {
        early::fail(format_args!(
            "image header: image_size {image_size:#x} does not cover the file and the boot stack \
             (at least {:#x}, a multiple of 4 KiB)",
            hypervisor_size
        ))
    }
    // Every wait on hardware or another core is bounded by the system counter: without its
    // frequency each would time out at once and the boot would fail naming the wrong thing.
    if cpu::counter_frequency() == 0 {
        early::fail(format_args!(
            "the firmware left CNTFRQ_EL0 at 0: the system counter's frequency is unknown"
        ))
    }
    let inventory_read = cpu::counter();
    let Some(boot_core) = inventory.core_index(cpu::mpidr()) else {
        early::fail(format_args!(
            "firmware device tree: the boot core (MPIDR {:#x}) is not in /cpus",
            cpu::mpidr()
        ))
    };

    let heap_size = HEAP_BASE + HEAP_PER_CORE * inventory.cpus.len() as u64;
    let tables_size = STAGE1_TABLES as u64 * PAGE_SIZE;
    let stacks_size = StackLayout::size_for(inventory.cpus.len());
    let mut avoid: heapless::Vec<Region, { MAX_RESERVED + 2 }> = heapless::Vec::new();
    let _ = avoid.push(image);
    let _ = avoid.push(Region::new(dtb_address, dtb_size as u64));
    let _ = avoid.extend_from_slice(&inventory.reserved);
    let Some(working) = place_working_memory(
        &inventory.ram,
        &avoid,
        image.end(),
        tables_size + stacks_size + heap_size,
        WORKING_ALIGN,
    ) else {
        early::fail(format_args!(
            "no room in RAM for the hypervisor's working memory ({} KiB beside the image, the \
             device tree and {} reserved ranges)",
            (tables_size + stacks_size + heap_size) >> 10,
            inventory.reserved.len()
        ))
    };

    // Working memory: every core's stacks, the heap, the stage-1 tables.
    let Some(stacks) = StackLayout::new(working.base, inventory.cpus.len()) else {
        early::fail(format_args!(
            "hypervisor stacks: no layout for {} cores at {:#x}",
            inventory.cpus.len(),
            working.base
        ))
    };
    let heap = Region::new(stacks.region().end(), heap_size);
    let tables = heap.end();
    // The boot stack (`entry.S`) has its own guard page, below it after the loaded file.
    let boot_guard = Region::new(tail, PAGE_SIZE);
    // The tables are written with the MMU off: a line the firmware left dirty over them
    // could be written back over a descriptor, so those lines go first (and again after).
    // SAFETY: nothing in the tables' range is ours yet.
    unsafe { cache::invalidate(tables, STAGE1_TABLES as u64 * PAGE_SIZE) };
    // SAFETY: `working` is RAM that nothing else uses (it avoids the image, the device tree
    // and reserved memory), and the MMU is off, so physical addresses are accessed directly.
    let pool = unsafe { RawTablePool::new(tables, STAGE1_TABLES) };
    let (root, tables_used) = match identity_map(pool, &inventory, &stacks, boot_guard, text) {
        Ok(mapped) => mapped,
        Err(e) => early::fail(format_args!("hypervisor page tables: {e:?}")),
    };
    // The tables the map did not take are not the hypervisor's: they stay ordinary RAM.
    let stage1_bytes = tables_used as u64 * PAGE_SIZE;
    let working = Region::new(working.base, tables - working.base + stage1_bytes);

    // Data written with the MMU off bypassed the caches: drop any stale lines for it.
    // SAFETY: the image's code and data and the working memory hold nothing dirty that we
    // need (the loader cleaned the image to the point of coherency).
    unsafe {
        cache::invalidate(image_base, file_size);
        cache::invalidate(tail, BOOT_STACK_TAIL);
        cache::invalidate(tables, stage1_bytes);
    }
    // SAFETY: `identity_map` covered all RAM (code, stack, data, tables) and the devices used.
    unsafe { mmu::enable(root) };
    let mmu_on = cpu::counter();

    // SAFETY: the heap range is part of the working memory, used by nothing else.
    unsafe { HEAP.init(heap.base, heap.size) };
    // SAFETY: the identity map covers every RAM bank as Normal memory; from here on RAM is
    // handed out through claims only.
    unsafe { memory::register_ram(&inventory.ram) };
    for region in [image, working] {
        match memory::claim(region) {
            // The claim stays registered for good; the handle is not needed.
            Ok(_claimed) => {}
            Err(e) => early::fail(format_args!(
                "cannot claim {:#x}-{:#x} for the hypervisor: {e:?}",
                region.base,
                region.end()
            )),
        }
    }
    // SAFETY: the UART and GIC regions come from the firmware DT and are mapped as Device
    // memory by `identity_map`; nothing else drives them.
    let uart = unsafe { PhysicalUart::new(inventory.uart.registers.base) };
    output::init(uart);
    early::kernel_console_ready();
    // SAFETY: as above.
    if let Err(e) = unsafe { gic::init(&inventory.gic) } {
        early::fail(format_args!("GIC distributor: {e}"))
    }
    // SAFETY: ECAM and the memory windows are mapped as Device memory by `identity_map` and
    // driven only through this object.
    let pci = inventory
        .pcie
        .as_ref()
        .map(|host| unsafe { PciHost::new(host) });
    // SAFETY: the ITS frames are mapped as Device memory by `identity_map`; this is the only
    // handle to them.
    let its = inventory
        .gic
        .its
        .map(|its| unsafe { ItsFrames::new(its.base) });
    // SAFETY: the SMMU frames are mapped as Device memory by `identity_map`; this is the only
    // handle to them.
    let smmu = inventory
        .smmu
        .filter(|s| s.registers.size >= 0x2_0000)
        .map(|s| unsafe { SmmuFrames::new(s.registers.base) });
    cpu::set_core_index(boot_core);
    // SAFETY: the stacks lie in the working memory, used for nothing else; `identity_map`
    // mapped them and left their guard pages out.
    unsafe { smp::use_stacks(stacks) };

    // SAFETY: the bundle is the rest of the loaded image, claimed above and never written.
    let bundle = unsafe { static_bytes(hypervisor_end, (tail - hypervisor_end) as usize) };
    primary_main(BootInfo {
        inventory,
        boot_core,
        image,
        hypervisor_size,
        bundle,
        working_memory: working,
        stage1_bytes,
        stacks,
        boot_guard,
        test_mark,
        heap_used: || HEAP.used(),
        pci,
        its,
        smmu,
        stages: alloc::vec![
            ("entry", entered),
            ("device-tree", inventory_read),
            ("mmu", mmu_on),
        ],
    })
}

/// Largest firmware device tree accepted (QEMU's `-dtb` hands over 2 MiB + 20000 bytes).
const MAX_DTB_SIZE: usize = 8 << 20;

/// The firmware device tree x0 points at, and its size; reports and stops if x0 is not the
/// address of one.
fn firmware_tree(address: u64) -> (&'static [u8], usize) {
    if address == 0 || !address.is_multiple_of(8) {
        early::fail(format_args!(
            "firmware device tree: x0 = {address:#x} is not its address (needs an 8-byte \
             aligned address in RAM)"
        ))
    }
    // SAFETY: x0 is non-null and aligned, and the boot protocol says a device tree starts
    // there, so its first 8 bytes are readable; if the loader lied and they are not, the read
    // faults into the early vectors, which report it.
    let header: [u8; 8] = unsafe { static_bytes(address, 8) }
        .try_into()
        .unwrap_or([0; 8]);
    let Some(size) = dtb::total_size(&header) else {
        early::fail(format_args!(
            "firmware device tree: none at x0 = {address:#x} (no FDT magic)"
        ))
    };
    if size > MAX_DTB_SIZE || address.checked_add(size as u64).is_none() {
        early::fail(format_args!(
            "firmware device tree: totalsize {size} bytes at {address:#x} (more than {} MiB)",
            MAX_DTB_SIZE >> 20
        ))
    }
    // SAFETY: the header says the tree is `size` bytes long and the loader placed it whole;
    // it stays intact until the kernel is done with the inventory (the working memory avoids
    // it) and is never written.
    (unsafe { static_bytes(address, size) }, size)
}

/// The hypervisor's EL2 map, at physical addresses: its code (`text`) read-only and
/// executable, every other byte of every RAM bank read-write and never executable (all
/// slices' RAM included: a control-flow bug at EL2 cannot run what a guest wrote), but the
/// guard pages below the stacks (`boot_guard` and those of `stacks`), left out; the devices it
/// drives as Device memory.
/// Returns the root table and the number of tables the map took from `pool`.
fn identity_map(
    pool: RawTablePool,
    inventory: &Inventory,
    stacks: &StackLayout,
    boot_guard: Region,
    text: Region,
) -> Result<(u64, usize), MapError> {
    let mut map = Translation::new(Regime::El2Stage1, pool)?;
    let mut holes: heapless::Vec<Region, { 2 * MAX_CPUS + 2 }> = heapless::Vec::new();
    for hole in [boot_guard, text].into_iter().chain(stacks.guards()) {
        holes.push(hole).map_err(|_| MapError::BadRange)?;
    }
    microvisor_plan::sort::sort_by_key(&mut holes, |g| g.base);
    for bank in &inventory.ram {
        for piece in without_holes(*bank, holes.iter().copied()) {
            map.map(piece.base, piece.base, piece.size, Attributes::DATA)?;
        }
    }
    map.map(text.base, text.base, text.size, Attributes::CODE)?;
    let gic = &inventory.gic;
    let pcie = inventory.pcie.as_ref();
    let window =
        |w: Option<microvisor_logic::inventory::PciWindow>| w.map(|w| Region::new(w.cpu, w.size));
    let devices = [
        Some(inventory.uart.registers),
        Some(gic.distributor),
        Some(gic.redistributors),
        gic.its,
        pcie.map(|p| p.ecam),
        pcie.and_then(|p| window(p.mem32)),
        pcie.and_then(|p| window(p.mem64)),
        inventory.smmu.map(|s| s.registers),
    ];
    for device in devices.into_iter().flatten() {
        let base = device.base & !(PAGE_SIZE - 1);
        let size = (device.end() - base).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        map.map(base, base, size, Attributes::DEVICE)?;
    }
    Ok((map.root(), map.store().used()))
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    if early::kernel_console_is_ready() {
        microvisor_kernel::panic_report(info)
    }
    match info.location() {
        Some(at) => early::fail(format_args!(
            "panic during boot at {}:{}: {}",
            at.file(),
            at.line(),
            info.message()
        )),
        None => early::fail(format_args!("panic during boot: {}", info.message())),
    }
}
