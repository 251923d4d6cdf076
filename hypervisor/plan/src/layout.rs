//! Where a guest's kernel, initrd and device tree go in its IPA space (Linux arm64 boot protocol).
