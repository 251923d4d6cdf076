//! The operator's side of the node console: input typed on the physical UART goes to one
//! focused slice; `Ctrl-A` commands move the focus and print exit counters. Output is
//! `crate::output`.

use core::sync::atomic::{AtomicUsize, Ordering};

use microvisor_arch::gic;
use microvisor_logic::console::{Input, InputDecoder};
use spin::Mutex;

use crate::output;
use crate::slice::Slice;

pub struct OperatorConsole {
    /// The physical UART's interrupt (INTID), if input can be taken.
    intid: Option<u32>,
    /// Index of the slice that receives input.
    focus: AtomicUsize,
    decoder: Mutex<InputDecoder>,
}

impl OperatorConsole {
    pub fn new(intid: Option<u32>) -> Self {
        Self {
            intid,
            focus: AtomicUsize::new(0),
            decoder: Mutex::new(InputDecoder::new()),
        }
    }

    /// The physical UART's interrupt, if input is taken.
    pub fn intid(&self) -> Option<u32> {
        self.intid
    }

    /// Starts delivering input, to slice 0.
    pub fn start(&self, slices: &[Slice]) {
        if self.intid.is_none() {
            return;
        }
        output::with_uart(|uart| uart.enable_receive_interrupt());
        self.focus(slices, 0);
    }

    /// Gives input to slice `index`: the UART's interrupt goes to that slice's first core.
    fn focus(&self, slices: &[Slice], index: usize) {
        let Some(slice) = slices.get(index) else {
            return;
        };
        self.focus.store(index, Ordering::Relaxed);
        if let Some(intid) = self.intid {
            gic::route_spi(intid, slice.vcpus[0].mpidr);
        }
        output::hv(format_args!(
            "console input goes to slice {} ({}); Ctrl-A then 1-{} switches, Ctrl-A c prints exit counters",
            slice.name,
            index + 1,
            slices.len().min(9)
        ));
    }

    /// Reads everything the UART received and acts on it (called from its interrupt). The
    /// interrupt is cleared first: a byte arriving after the FIFO was found empty raises it
    /// again.
    pub fn receive(&self, slices: &[Slice]) {
        output::with_uart(|uart| uart.clear_receive_interrupt());
        while let Some(Some(byte)) = output::with_uart(|uart| uart.read_byte()) {
            let input = self.decoder.lock().feed(byte);
            match input {
                Some(Input::Byte(byte)) => {
                    if let Some(slice) = slices.get(self.focus.load(Ordering::Relaxed)) {
                        slice.console_input(byte);
                    }
                }
                Some(Input::Focus(index)) => self.focus(slices, index),
                Some(Input::Counters) => slices.iter().for_each(Slice::report_exits),
                Some(Input::PowerKey) => {
                    if let Some(slice) = slices.get(self.focus.load(Ordering::Relaxed)) {
                        output::hv(format_args!("slice {}: power key pressed", slice.name));
                        slice.press_power_key();
                    }
                }
                Some(Input::Help) => output::hv(format_args!(
                    "console: Ctrl-A 1-9 focus slice, Ctrl-A c exit counters, Ctrl-A p power key, \
                     Ctrl-A Ctrl-A sends Ctrl-A \
                     (under QEMU -nographic type Ctrl-A twice before each of these)"
                )),
                None => {}
            }
        }
    }
}
