// The first instructions of the image: the arm64 Linux Image header
// (Documentation/arch/arm64/booting.rst), self-relocation, and the jump to Rust.
// Entered at EL2 with the MMU off, x0 = physical address of the firmware device tree.

    .section .text.head, "ax"
    .global _start
_start:
    b       primary_entry           // code0
    .word   0                       // code1
    .quad   0x200000                // text_offset
    .quad   __image_size            // image_size (xtask rewrites it to cover the bundle)
    .quad   0x2                     // flags: little-endian, 4 KiB pages (xtask may set bit 3)
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .word   0x644d5241              // magic "ARM\x64"
    .word   0                       // res5

primary_entry:
    mov     x19, x0                 // device tree
    adr     x20, _start             // where the loader put us
    // Apply R_AARCH64_RELATIVE relocations: *(base + offset) = base + addend.
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
2:  adr     x9, boot_stack_top
    mov     sp, x9
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x19
    mov     x1, x20
    bl      boot_primary
3:  wfi
    b       3b

    .section .data.boot_stack, "aw"
    .balign 16
    .global boot_stack_bottom
boot_stack_bottom:
    .space  32768
    .global boot_stack_top
boot_stack_top:
