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

/// A plan made of slices.
pub fn plan(slices: &[String]) -> String {
    slices.concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use microvisor_plan::{Cores, Plan};

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
}
