//! Pure logic of the microvisor (safe, host-tested).
#![cfg_attr(not(test), no_std)]
extern crate alloc;
