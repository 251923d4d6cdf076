// The first instructions of the image: the arm64 Linux Image header
// (Documentation/arch/arm64/booting.rst), self-relocation, and the jump to Rust.
// Entered at EL2 with the MMU off, x0 = physical address of the firmware device tree.

    .section .text.head, "ax"
    .global _start
_start:
    b       primary_entry           // code0
    .word   0                       // code1
    .quad   0x200000                // text_offset
    .quad   __image_size            // image_size: file + boot stack (xtask adds the bundle)
    .quad   0x2                     // flags: little-endian, 4 KiB pages (xtask may set bit 3)
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .word   0x644d5241              // magic "ARM\x64"
    .word   0                       // res5

primary_entry:
    mov     x19, x0                 // device tree
    adr     x20, _start             // where the loader put us
    // Apply R_AARCH64_RELATIVE relocations: *(base + offset) = base + addend (those RELR below
    // cannot pack; none, as the image is linked today).
    adr     x9, __rela_start
    adr     x10, __rela_end
1:  cmp     x9, x10
    b.hs    2f
    ldp     x11, x12, [x9], #24     // r_offset, r_info
    ldur    x13, [x9, #-8]          // r_addend
    cmp     w12, #1027              // R_AARCH64_RELATIVE
    b.ne    1b
    add     x13, x13, x20
    str     x13, [x20, x11]
    b       1b
    // Then the packed ones (RELR, `-z pack-relative-relocs`): *where += base. An even entry is
    // the offset of one pointer, after which `where` is the next word; an odd entry is a bitmap
    // whose bit i (1..63) stands for where + 8 * (i - 1), after which `where` advances 63 words.
2:  adr     x9, __relr_start
    adr     x10, __relr_end
    mov     x12, x20                // where
3:  cmp     x9, x10
    b.hs    7f
    ldr     x11, [x9], #8
    tbnz    x11, #0, 4f
    add     x12, x20, x11
    ldr     x13, [x12]
    add     x13, x13, x20
    str     x13, [x12], #8
    b       3b
4:  mov     x14, x12
5:  lsr     x11, x11, #1
    cbz     x11, 6f
    tbz     x11, #0, 8f
    ldr     x13, [x14]
    add     x13, x13, x20
    str     x13, [x14]
8:  add     x14, x14, #8
    b       5b
6:  add     x12, x12, #(63 * 8)
    b       3b
7:  adr     x9, early_vectors       // exceptions before the kernel's vectors: reported
    msr     vbar_el2, x9
    isb
    bl      boot_stack_top
    // The stack is written with the MMU, and so the data cache, off. The loader cleaned only
    // the file: a line the firmware left dirty over the stack's 52 KiB could be written back
    // over what the boot put there, so those lines go first (found in review).
    mrs     x11, ctr_el0
    ubfx    x11, x11, #16, #4       // DminLine: log2 of the smallest line, in words
    mov     x12, #4
    lsl     x12, x12, x11           // line size in bytes
    sub     x13, x9, #13, lsl #12   // the guard page and the 48 KiB stack below the top
9:  dc      ivac, x13
    add     x13, x13, x12
    cmp     x13, x9
    b.lo    9b
    dsb     sy
    mov     sp, x9
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x19
    mov     x1, x20
    bl      boot_primary
3:  wfi
    b       3b

// The boot core's exception vectors until the kernel installs its own: every entry (Arm ARM
// D1.3.1, 16 entries of 0x80 bytes) calls early_exception(index) on a fresh boot stack, which
// reports the fault on the early console and never returns.
    .section .text.early_vectors, "ax"
    .balign 0x800
early_vectors:
    .irp    kind, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .balign 0x80
    mov     x0, #\kind
    b       early_vector
    .endr
early_vector:
    bl      boot_stack_top
    mov     sp, x9
    mov     x29, xzr
    mov     x30, xzr
    bl      early_exception
4:  wfi
    b       4b

// x9 = the top of the boot stack: load address + the header's image_size. The loaded file (this
// image, then the bundle) is followed by a 4 KiB guard page the EL2 map leaves unmapped and the
// 48 KiB stack (microvisor_plan::image::BOOT_STACK_TAIL), which the header's image_size covers
// but the file does not hold: an overflow faults into the early vectors (or, once the kernel's
// are installed, its fatal report) instead of writing over the bundle below. Clobbers x10.
boot_stack_top:
    adr     x9, _start
    ldr     x10, [x9, #16]
    add     x9, x9, x10
    ret
