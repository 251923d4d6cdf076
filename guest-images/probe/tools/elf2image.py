#!/usr/bin/env python3
"""Turns the probe ELF into the flat arm64 Image: the file bytes of the
PT_LOAD segments laid out from the lowest virtual address (gaps zero-filled),
like `cargo xtask` does with the `object` crate. Checks the Image header.

usage: elf2image.py probe.elf probe.bin
"""
import struct
import sys


def main(src, dst):
    elf = open(src, "rb").read()
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        sys.exit("not a little-endian ELF64 file")
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    loads = []
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", elf, phoff + i * phentsize)
        if p_type == 1 and p_filesz > 0:
            loads.append((p_vaddr, elf[p_offset:p_offset + p_filesz], p_memsz))
    if not loads:
        sys.exit("no PT_LOAD segment with file contents")
    loads.sort()
    base = loads[0][0]
    image = bytearray()
    for vaddr, data, _memsz in loads:
        offset = vaddr - base
        if offset < len(image):
            sys.exit("overlapping PT_LOAD segments")
        image += bytes(offset - len(image)) + data
    footprint = max(vaddr + memsz for vaddr, _data, memsz in loads) - base
    text_offset, image_size, flags = struct.unpack_from("<QQQ", image, 8)
    magic, = struct.unpack_from("<I", image, 56)
    if magic != 0x644D5241:
        sys.exit("no arm64 Image magic at offset 56")
    if image_size < len(image) or image_size < footprint:
        sys.exit(f"image_size {image_size:#x} smaller than the footprint {footprint:#x}")
    open(dst, "wb").write(image)
    print(f"{dst}: {len(image)} bytes at {base:#x}, image_size {image_size:#x}, "
          f"text_offset {text_offset:#x}, flags {flags:#x}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
