#![no_std]
#![no_main]

core::arch::global_asm!(r#"
.section .text.head, "ax"
.global _start
_start:
    b 1f
    .word 0
    .quad 0x200000
    .quad __image_size
    .quad 0x2
    .quad 0
    .quad 0
    .quad 0
    .word 0x644d5241
    .word 0
1:
    adr x9, _start
    adr x10, __rela_start
    adr x11, __rela_end
2:  cmp x10, x11
    b.hs 3f
    ldp x12, x13, [x10], #24
    ldur x14, [x10, #-8]
    cmp x13, #1027
    b.ne 2b
    add x14, x14, x9
    str x14, [x9, x12]
    b 2b
3:
    adr x1, boot_stack_top
    mov sp, x1
    bl rust_entry
4:  wfe
    b 4b
.section .data
.balign 16
boot_stack: .space 16384
boot_stack_top:
"#);

static MSG: &str = "hello from EL2\n";
static PTRS: [&str; 2] = ["relocated ok\n", "second\n"];

#[unsafe(no_mangle)]
extern "C" fn rust_entry(dtb: usize) -> ! {
    let uart = 0x0900_0000 as *mut u32;
    let el: u64;
    unsafe { core::arch::asm!("mrs {}, CurrentEL", out(reg) el) };
    for s in [MSG, PTRS[0], PTRS[1]] {
        for b in s.bytes() { unsafe { uart.write_volatile(b as u32) } }
    }
    let _ = dtb;
    unsafe { uart.write_volatile((b'0' + (el >> 2) as u8) as u32) };
    loop {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! { loop {} }
