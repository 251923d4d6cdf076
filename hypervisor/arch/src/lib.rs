//! aarch64 architecture layer.
#![no_std]
