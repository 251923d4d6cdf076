//! U-Boot's built-in environment, read from the firmware binary, with a plan's variables
//! merged in (`[slice.firmware] env`, docs/firmware.md). U-Boot takes an environment it finds
//! in flash instead of its built-in one, not on top of it, so the slice's flash must hold the
//! whole: the distro boot scripts, load addresses and boot targets, with the plan's changes.

use anyhow::{Context, Result, ensure};

/// The built-in environment of `firmware`: the `name=value` strings from its `bootcmd` entry
/// (U-Boot puts `bootcmd` first) to the empty string that ends them. Refused unless there is
/// exactly one such block and it holds the distro boot's `distro_bootcmd` and `boot_targets`.
pub fn default_environment(firmware: &[u8]) -> Result<Vec<(String, String)>> {
    const START: &[u8] = b"\0bootcmd=";
    let found: Vec<usize> = firmware
        .windows(START.len())
        .enumerate()
        .filter(|(_, w)| *w == START)
        .map(|(i, _)| i + 1)
        .collect();
    ensure!(
        found.len() == 1,
        "the firmware binary has {} built-in environments (a NUL then bootcmd=), not one",
        found.len()
    );
    let start = found[0];
    let end = firmware[start..]
        .windows(2)
        .position(|w| w == b"\0\0")
        .map(|at| start + at)
        .context("the firmware's built-in environment has no end (two NULs)")?;
    let env = firmware[start..end]
        .split(|&b| b == 0)
        .map(|entry| {
            let text = std::str::from_utf8(entry).ok()?;
            let (name, value) = text.split_once('=')?;
            Some((name.to_string(), value.to_string()))
        })
        .collect::<Option<Vec<_>>>()
        .context("the firmware's built-in environment holds an entry that is not name=value")?;
    for needed in ["distro_bootcmd", "boot_targets"] {
        ensure!(
            env.iter().any(|(name, _)| name == needed),
            "the firmware's built-in environment has no {needed}"
        );
    }
    Ok(env)
}

/// `defaults` with each of `vars` replacing the default of its name, or added after them.
pub fn merged(defaults: &[(String, String)], vars: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = defaults
        .iter()
        .map(|(name, value)| {
            let value = vars
                .iter()
                .find(|(n, _)| n == name)
                .map_or(value, |(_, v)| v);
            (name.clone(), value.clone())
        })
        .collect();
    for (name, value) in vars {
        if !defaults.iter().any(|(n, _)| n == name) {
            env.push((name.clone(), value.clone()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_block_from_bootcmd_to_two_nuls_is_read() {
        let binary = b"\x7fcode\0%s%d\0bootcmd=run distro_bootcmd\0bootdelay=2\0\
            boot_targets=nvme0 dhcp\0distro_bootcmd=for t in ${boot_targets}; do run x; done\0\0more";
        assert_eq!(
            default_environment(binary).unwrap(),
            pairs(&[
                ("bootcmd", "run distro_bootcmd"),
                ("bootdelay", "2"),
                ("boot_targets", "nvme0 dhcp"),
                ("distro_bootcmd", "for t in ${boot_targets}; do run x; done"),
            ])
        );
    }

    #[test]
    fn a_binary_without_one_clear_environment_is_refused() {
        assert!(default_environment(b"no environment here").is_err());
        assert!(default_environment(b"\0bootcmd=x\0\0\0bootcmd=y\0\0").is_err());
        assert!(default_environment(b"\0bootcmd=x\0bootdelay=2\0\0").is_err());
        assert!(default_environment(b"\0bootcmd=x\0junk\0\0").is_err());
    }

    #[test]
    fn plan_variables_replace_defaults_or_come_after_them() {
        let defaults = pairs(&[("bootcmd", "run distro_bootcmd"), ("bootdelay", "2")]);
        assert_eq!(
            merged(&defaults, &pairs(&[("mvtag", "x"), ("bootdelay", "0")])),
            pairs(&[
                ("bootcmd", "run distro_bootcmd"),
                ("bootdelay", "0"),
                ("mvtag", "x")
            ])
        );
    }

    #[test]
    fn debians_u_boot_has_its_distro_boot_environment() {
        let ws = crate::workspace::Workspace::locate().unwrap();
        let Ok(dir) = std::fs::read_dir(ws.target_dir.join("guests/debian")) else {
            return;
        };
        let Some(binary) = dir
            .flatten()
            .map(|e| e.path().join(crate::guest::UBOOT_IN_PACKAGE))
            .find(|p| p.exists())
        else {
            return; // not fetched yet: the firmware scenarios cover it
        };
        let env = default_environment(&std::fs::read(binary).unwrap()).unwrap();
        assert!(
            env.iter()
                .any(|(n, v)| n == "bootcmd" && v == "run distro_bootcmd")
        );
        assert!(env.len() > 20, "{env:?}");
    }
}
