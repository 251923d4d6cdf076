//! The microvisor kernel.
#![no_std]
