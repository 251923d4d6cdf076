//! Small helpers to write plan TOML in tests.

/// One `[[slice]]` of the probe: `cores` is TOML (`"2"` or `"[1, 3]"`), `memory` a size
/// string, `extra` more `key = value` lines (e.g. `cmdline = "attack=mmio"`).
pub fn probe_slice(name: &str, cores: &str, memory: &str, extra: &str) -> String {
    let mut text = format!(
        "[[slice]]\nname = \"{name}\"\ncores = {cores}\nmemory = \"{memory}\"\nkernel = \"probe\"\n"
    );
    for line in extra.lines().map(str::trim).filter(|l| !l.is_empty()) {
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
    text
}

/// The physical address of the heartbeat canary of a probe slice whose RAM starts at `base`
/// (physical): where attacks on another slice's memory are aimed, so that one that got
/// through turns the victim's heartbeat `CORRUPT` (`microvisor_probe::CANARY_IPA`).
pub fn probe_canary(base: u64) -> u64 {
    base + (microvisor_probe::CANARY_IPA - microvisor_plan::layout::GUEST_RAM_BASE)
}

/// One `[[slice]]` booting firmware (`kernel = "firmware"`: Debian's U-Boot), which boots
/// what is installed on its NVMe share (add one with [`with_nvme`]).
pub fn firmware_slice(name: &str, cores: &str, memory: &str) -> String {
    format!(
        "[[slice]]\nname = \"{name}\"\ncores = {cores}\nmemory = \"{memory}\"\nkernel = \"firmware\"\n\n"
    )
}

/// One `[[slice]]` of the built-in Linux guest (Debian's cloud kernel and the generated
/// initramfs); `cmdline` is appended to its defaults (e.g. `microvisor.heartbeat=1000`), and may
/// be empty.
pub fn linux_slice(name: &str, cores: &str, memory: &str, cmdline: &str) -> String {
    let mut text = format!(
        "[[slice]]\nname = \"{name}\"\ncores = {cores}\nmemory = \"{memory}\"\nkernel = \"linux\"\n"
    );
    if !cmdline.is_empty() {
        text.push_str(&format!("cmdline = \"{cmdline}\"\n"));
    }
    text.push('\n');
    text
}

/// `slice` (from [`probe_slice`] or [`linux_slice`]) with a `[slice.nvme]` share of `queues`
/// hardware queue pairs and `size` (a size string) of the node's NVMe namespace.
pub fn with_nvme(slice: &str, queues: u32, size: &str) -> String {
    format!(
        "{}\n[slice.nvme]\nqueues = {queues}\nsize = \"{size}\"\n\n",
        slice.trim_end()
    )
}

/// `slice`, whose `[slice.nvme]` table comes last, with `direct-queues = true` in it
/// (decision 5: the controller writes its I/O CQs itself).
pub fn with_direct_queues(slice: &str) -> String {
    format!("{}\ndirect-queues = true\n\n", slice.trim_end())
}

/// `slice` with one more `[[slice.device]]` table holding `line` (`pci = "00:03.0"` or
/// `class = "net"`).
pub fn with_device(slice: &str, line: &str) -> String {
    format!("{}\n[[slice.device]]\n{line}\n\n", slice.trim_end())
}

/// A plan made of slices.
pub fn plan(slices: &[String]) -> String {
    slices.concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use microvisor_plan::{BuiltIn, Cores, ImageSource, Plan};

    #[test]
    fn generated_plans_parse() {
        let text = plan(&[
            probe_slice("a", "2", "64MiB", "cmdline = \"heartbeat=500\""),
            probe_slice("b", "[3, 2]", "128MiB", "on-fault = \"restart\""),
        ]);
        let parsed = Plan::from_toml(&text).unwrap();
        assert_eq!(parsed.slices[0].cmdline, "heartbeat=500");
        assert_eq!(parsed.slices[1].cores, Cores::List(vec![3, 2]));
        assert_eq!(parsed.slices[1].memory, 128 << 20);
    }

    #[test]
    fn devices_attach_to_their_slice() {
        let slice = with_nvme(&probe_slice("a", "1", "64MiB", ""), 1, "16MiB");
        let text = plan(&[
            with_device(&with_device(&slice, "class = \"net\""), "pci = \"00:04.0\""),
            probe_slice("b", "1", "64MiB", ""),
        ]);
        let parsed = Plan::from_toml(&text).unwrap();
        assert_eq!(parsed.slices[0].devices.len(), 2);
        assert!(parsed.slices[0].nvme.is_some());
        assert!(parsed.slices[1].devices.is_empty());
    }

    #[test]
    fn nvme_shares_parse() {
        let text = plan(&[
            with_nvme(&linux_slice("l", "2", "256MiB", "x=1"), 4, "65540KiB"),
            probe_slice("p", "1", "64MiB", ""),
            with_nvme(&probe_slice("q", "1", "64MiB", ""), 1, "16MiB"),
        ]);
        let parsed = Plan::from_toml(&text).unwrap();
        let l = parsed.slices[0].nvme.as_ref().unwrap();
        assert_eq!((l.queues, l.size), (4, 65540 << 10));
        assert_eq!(parsed.slices[0].cmdline, "x=1");
        assert!(parsed.slices[1].nvme.is_none());
        assert_eq!(parsed.slices[2].nvme.as_ref().unwrap().size, 16 << 20);
    }

    #[test]
    fn linux_slices_parse() {
        let text = plan(&[
            linux_slice("l", "[2, 1]", "256MiB", "microvisor.heartbeat=500"),
            linux_slice("m", "1", "128MiB", ""),
        ]);
        let parsed = Plan::from_toml(&text).unwrap();
        assert_eq!(
            parsed.slices[0].kernel,
            ImageSource::BuiltIn(BuiltIn::Linux)
        );
        assert_eq!(parsed.slices[0].cmdline, "microvisor.heartbeat=500");
        assert_eq!(parsed.slices[0].cores, Cores::List(vec![2, 1]));
        assert_eq!(parsed.slices[1].cmdline, "");
    }
}
