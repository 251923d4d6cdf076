//! First-use set-up of the Redfish conformance tools, cached in `target/redfish-tools/`:
//! a Python venv with the pinned validators, `sushy` and `sushy-tools` (from PyPI, through
//! pip), the DMTF CSDL schemas (from the Rust registry package `nv-redfish-schema`, through
//! cargo) and Ironic's interoperability profile (from the `ironic` sdist, through pip).
//!
//! A `READY` file written last names the pins it was made with: without it (a set-up that
//! stopped half-way) or with other pins, everything is made again. With it, [`ensure`] only
//! checks that the pieces are there and rewrites the two scripts, in milliseconds.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::process;
use crate::workspace::Workspace;

/// Packages installed into the venv, each pinned (their dependencies: `constraints.txt`).
pub const PYTHON_PACKAGES: [(&str, &str); 4] = [
    ("redfish-service-validator", "3.1.8"),
    ("redfish-interop-validator", "3.0.4"),
    ("sushy", "5.14.0"),
    ("sushy-tools", "2.2.0"),
];
/// Versions of everything those packages pull in (pip's `-c`).
pub const CONSTRAINTS: &str = include_str!("constraints.txt");

/// The sdist Ironic's interoperability profile comes from.
pub const IRONIC: (&str, &str) = ("ironic", "39.0.0");
/// SHA-256 of `ironic-39.0.0.tar.gz`.
pub const IRONIC_SDIST_SHA256: &str =
    "205364829cf7ab1d03f80e4c684cf2aa6693170eae8457b9344100e43b737a5e";
/// The profile's path inside the sdist (below its top directory).
pub const PROFILE_IN_SDIST: &str = "redfish-interop-profiles/OpenStackIronicProfile.v1_2_0.json";
/// SHA-256 of the profile file.
pub const PROFILE_SHA256: &str = "161f5f296dde04ce7eea5bc0a16eeb26d03a68936dda377aefac71c2ed22ddc8";

/// The crate that ships the DMTF CSDL.
pub const CSDL_CRATE: (&str, &str) = ("nv-redfish-schema", "0.22.1");
/// SHA-256 of `nv-redfish-schema-0.22.1.crate`: cargo checks the download against the
/// registry's checksum and records it in the lock file, which must show this one.
pub const CSDL_CRATE_SHA256: &str =
    "12b683cd72e1962b4ae64a03641ac846f981db4a97bb082fa9340b23a2b983b1";
/// The CSDL directory inside the crate.
pub const CSDL_IN_CRATE: &str = "redfish-csdl/csdl";
/// How many files it holds.
pub const CSDL_FILES: usize = 279;
/// [`tree_digest`] of that directory, checked on the copy under `target/`.
pub const CSDL_TREE_SHA256: &str =
    "6cf5a639558936675344e34d335b784c30938ddf5ff90bf8dc749c23f3e49995";

/// The sushy scenario (see the file's docstring).
pub const SUSHY_SCENARIO: &str = include_str!("sushy_scenario.py");
/// Turns a validator's Excel report into tab-separated rows for [`super::validate`].
pub const REPORT_ROWS: &str = include_str!("report_rows.py");

/// Oldest Python the pinned tools support.
const MIN_PYTHON: (u32, u32) = (3, 9);
const PIP_LIMIT: Duration = Duration::from_secs(900);
const QUICK_LIMIT: Duration = Duration::from_secs(60);

/// The installed tools.
#[derive(Clone, Debug)]
pub struct Tools {
    /// `target/redfish-tools`.
    pub dir: PathBuf,
    /// The venv's `bin/` (python, rf_service_validator, rf_interop_validator, sushy-emulator).
    pub bin: PathBuf,
    /// The DMTF CSDL files (`$metadata` schemas) for the service validator.
    pub csdl: PathBuf,
    /// `OpenStackIronicProfile.v1_2_0.json`.
    pub ironic_profile: PathBuf,
    /// `sushy_scenario.py`.
    pub sushy_scenario: PathBuf,
    /// `report_rows.py`.
    pub report_rows: PathBuf,
}

impl Tools {
    /// Where the tools live under a target directory.
    pub fn at(target_dir: &Path) -> Self {
        let dir = target_dir.join("redfish-tools");
        Self {
            bin: dir.join("venv/bin"),
            csdl: dir.join("csdl"),
            ironic_profile: dir.join("profiles/OpenStackIronicProfile.v1_2_0.json"),
            sushy_scenario: dir.join("scripts/sushy_scenario.py"),
            report_rows: dir.join("scripts/report_rows.py"),
            dir,
        }
    }

    /// The venv's Python.
    pub fn python(&self) -> PathBuf {
        self.bin.join("python")
    }

    /// One line naming the pinned versions, for reports.
    pub fn versions() -> String {
        let mut parts: Vec<String> = PYTHON_PACKAGES
            .iter()
            .map(|(name, version)| format!("{name} {version}"))
            .collect();
        parts.push(format!("CSDL of {} {}", CSDL_CRATE.0, CSDL_CRATE.1));
        parts.push(format!("profile of {} {}", IRONIC.0, IRONIC.1));
        parts.join(", ")
    }

    fn ready_file(&self) -> PathBuf {
        self.dir.join("READY")
    }

    /// Every piece a finished set-up leaves.
    fn complete(&self) -> bool {
        let bins = [
            "python",
            "rf_service_validator",
            "rf_interop_validator",
            "sushy-emulator",
        ];
        bins.iter().all(|b| self.bin.join(b).exists())
            && self.ironic_profile.is_file()
            && self.csdl.join("ServiceRoot_v1.xml").is_file()
    }
}

/// What `READY` holds: every pin, so that changing one redoes the set-up.
pub fn stamp() -> String {
    let mut text = String::from("redfish-tools 1\n");
    for (name, version) in PYTHON_PACKAGES {
        text.push_str(&format!("{name}=={version}\n"));
    }
    text.push_str(&format!(
        "constraints {}\n",
        hex(&Sha256::digest(CONSTRAINTS))
    ));
    text.push_str(&format!(
        "{}=={} {IRONIC_SDIST_SHA256}\n",
        IRONIC.0, IRONIC.1
    ));
    text.push_str(&format!(
        "{}=={} {CSDL_CRATE_SHA256}\n",
        CSDL_CRATE.0, CSDL_CRATE.1
    ));
    text
}

/// Sets the tools up on first use (or after a pin changed), under a lock so that parallel
/// tests wait for one set-up; fast when they are there.
pub fn ensure(ws: &Workspace) -> Result<Tools> {
    let tools = Tools::at(&ws.target_dir);
    fs::create_dir_all(&tools.dir).with_context(|| format!("creating {}", tools.dir.display()))?;
    let lock_path = tools.dir.join(".lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let ready = fs::read_to_string(tools.ready_file()).unwrap_or_default();
    if ready != stamp() || !tools.complete() {
        eprintln!(
            "setup: installing the Redfish tools into {} ({})",
            ws.display(&tools.dir),
            Tools::versions()
        );
        let _ = fs::remove_file(tools.ready_file());
        install(ws, &tools)?;
        fs::write(tools.ready_file(), stamp())?;
    }
    write_if_changed(&tools.sushy_scenario, SUSHY_SCENARIO)?;
    write_if_changed(&tools.report_rows, REPORT_ROWS)?;
    Ok(tools)
}

/// Everything, from scratch (downloads are re-checked, not trusted).
fn install(ws: &Workspace, tools: &Tools) -> Result<()> {
    let logs = tools.dir.join("setup-logs");
    fs::create_dir_all(&logs)?;
    let python = ensure_python_venv()?;
    let venv = tools.dir.join("venv");
    if venv.exists() {
        fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    process::run_ok(
        Command::new(&python).arg("-m").arg("venv").arg(&venv),
        QUICK_LIMIT * 5,
        Some(&logs.join("venv.log")),
    )?;
    let constraints = tools.dir.join("constraints.txt");
    fs::write(&constraints, CONSTRAINTS)?;
    let mut pip = Command::new(tools.python());
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "-c",
    ])
    .arg(&constraints)
    .args(PYTHON_PACKAGES.map(|(n, v)| format!("{n}=={v}")));
    process::run_ok(&mut pip, PIP_LIMIT, Some(&logs.join("pip-install.log")))?;
    install_profile(tools, &logs)?;
    install_csdl(ws, tools, &logs)?;
    if !tools.complete() {
        bail!(
            "the Redfish tools are incomplete after set-up in {}",
            tools.dir.display()
        );
    }
    Ok(())
}

/// `python3` with a working `venv` module: installs Debian's `python3-venv` when running as
/// root with apt, otherwise stops with one line saying what to run.
fn ensure_python_venv() -> Result<PathBuf> {
    let python = PathBuf::from("python3");
    let probe = |python: &Path| {
        process::run(
            Command::new(python).args([
                "-c",
                "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])",
            ]),
            QUICK_LIMIT,
            None,
            "",
        )
    };
    let mut check = probe(&python);
    let works = |c: &Result<process::Finished>| c.as_ref().is_ok_and(|f| f.success());
    if !works(&check) {
        let apt = Path::new("/usr/bin/apt-get").exists();
        if !apt {
            bail!(
                "python3 with its venv module is missing: install Python {}.{}+ with venv",
                MIN_PYTHON.0,
                MIN_PYTHON.1
            );
        }
        if !crate::setup::running_as_root() {
            bail!("python3's venv module is missing: run `sudo apt-get install -y python3-venv`");
        }
        eprintln!("setup: python3's venv module is missing; installing python3-venv");
        let install = || {
            process::run_ok(
                Command::new("apt-get")
                    .args(["install", "-y", "python3-venv"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
                PIP_LIMIT,
                None,
            )
        };
        if install().is_err() {
            process::run_ok(Command::new("apt-get").arg("update"), PIP_LIMIT, None)?;
            install()?;
        }
        check = probe(&python);
        if !works(&check) {
            bail!(
                "python3's venv module still fails after installing python3-venv (is `python3` on PATH Debian's?)"
            );
        }
    }
    let version = check?.stdout.trim().to_string();
    if parse_python_version(&version).is_none_or(|v| v < MIN_PYTHON) {
        bail!(
            "python3 is {version}: the Redfish tools need Python {}.{} or later",
            MIN_PYTHON.0,
            MIN_PYTHON.1
        );
    }
    Ok(python)
}

/// `(3, 11)` from `3.11`.
pub fn parse_python_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Downloads the pinned `ironic` sdist with pip, checks it and extracts the profile.
fn install_profile(tools: &Tools, logs: &Path) -> Result<()> {
    let downloads = tools.dir.join("downloads");
    fs::create_dir_all(&downloads)?;
    let (name, version) = IRONIC;
    let sdist = downloads.join(format!("{name}-{version}.tar.gz"));
    if !sdist.is_file() || sha256_file(&sdist)? != IRONIC_SDIST_SHA256 {
        let _ = fs::remove_file(&sdist);
        let mut pip = Command::new(tools.python());
        pip.args([
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-input",
            "--no-deps",
            "--no-binary",
            ":all:",
            &format!("{name}=={version}"),
            "-d",
        ])
        .arg(&downloads);
        process::run_ok(
            &mut pip,
            PIP_LIMIT,
            Some(&logs.join("pip-download-ironic.log")),
        )?;
    }
    let digest = sha256_file(&sdist).with_context(|| format!("pip left no {}", sdist.display()))?;
    if digest != IRONIC_SDIST_SHA256 {
        bail!(
            "{}: SHA-256 {digest}, pinned {IRONIC_SDIST_SHA256}",
            sdist.display()
        );
    }
    let dest = tools.ironic_profile.parent().context("profile directory")?;
    let _ = fs::remove_dir_all(dest);
    fs::create_dir_all(dest)?;
    process::run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(&sdist)
            .arg("-C")
            .arg(dest)
            .arg("--strip-components=2")
            .arg(format!("{name}-{version}/{PROFILE_IN_SDIST}")),
        QUICK_LIMIT,
        None,
    )?;
    let digest = sha256_file(&tools.ironic_profile)?;
    if digest != PROFILE_SHA256 {
        bail!(
            "{}: SHA-256 {digest}, pinned {PROFILE_SHA256}",
            tools.ironic_profile.display()
        );
    }
    Ok(())
}

/// Fetches the CSDL crate with cargo (a throw-away manifest depending on it), checks its
/// checksum and copies its CSDL directory.
fn install_csdl(ws: &Workspace, tools: &Tools, logs: &Path) -> Result<()> {
    let (name, version) = CSDL_CRATE;
    let project = tools.dir.join("csdl-fetch");
    let _ = fs::remove_dir_all(&project);
    fs::create_dir_all(project.join("src"))?;
    fs::write(project.join("src/lib.rs"), "")?;
    fs::write(
        project.join("Cargo.toml"),
        format!(
            "# Written by xtask: only fetches the crate that ships the DMTF CSDL.\n\
             [package]\nname = \"redfish-csdl-fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             publish = false\n\n[dependencies]\n{name} = \"={version}\"\n\n[workspace]\n"
        ),
    )?;
    let manifest = project.join("Cargo.toml");
    process::run_ok(
        crate::workspace::cargo()
            .arg("fetch")
            .arg("--manifest-path")
            .arg(&manifest)
            .current_dir(&ws.root),
        PIP_LIMIT,
        Some(&logs.join("cargo-fetch-csdl.log")),
    )?;
    let lock =
        fs::read_to_string(project.join("Cargo.lock")).context("reading the fetch's Cargo.lock")?;
    let checksum = lock_checksum(&lock, name, version)
        .with_context(|| format!("no checksum for {name} {version} in {}", project.display()))?;
    if checksum != CSDL_CRATE_SHA256 {
        bail!(
            "{name} {version}: the registry's checksum is {checksum}, pinned {CSDL_CRATE_SHA256}"
        );
    }
    let meta = process::run_ok(
        crate::workspace::cargo()
            .args([
                "metadata",
                "--format-version",
                "1",
                "--offline",
                "--locked",
                "--manifest-path",
            ])
            .arg(&manifest)
            .current_dir(&ws.root),
        QUICK_LIMIT * 2,
        None,
    )?;
    let source = package_dir(&meta.stdout, name, version)?.join(CSDL_IN_CRATE);
    let tmp = tools.dir.join("csdl.tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let mut count = 0;
    for entry in fs::read_dir(&source).with_context(|| format!("reading {}", source.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), tmp.join(entry.file_name()))?;
            count += 1;
        }
    }
    let digest = tree_digest(&tmp)?;
    if count != CSDL_FILES || digest != CSDL_TREE_SHA256 {
        bail!(
            "{}: {count} files with digest {digest}; pinned {CSDL_FILES} files, {CSDL_TREE_SHA256}",
            source.display()
        );
    }
    let _ = fs::remove_dir_all(&tools.csdl);
    fs::rename(&tmp, &tools.csdl)?;
    Ok(())
}

/// The `checksum` of package `name` `version` in a Cargo.lock.
pub fn lock_checksum(lock: &str, name: &str, version: &str) -> Option<String> {
    let doc: toml::Value = lock.parse().ok()?;
    doc.get("package")?.as_array()?.iter().find_map(|p| {
        (p.get("name")?.as_str()? == name && p.get("version")?.as_str()? == version)
            .then(|| p.get("checksum")?.as_str().map(str::to_string))
            .flatten()
    })
}

/// The source directory of package `name` `version` from `cargo metadata` output.
pub fn package_dir(metadata: &str, name: &str, version: &str) -> Result<PathBuf> {
    let doc: serde_json::Value =
        serde_json::from_str(metadata).context("parsing cargo metadata")?;
    let manifest = doc["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name && p["version"] == version)
        .and_then(|p| p["manifest_path"].as_str())
        .with_context(|| format!("cargo metadata lists no {name} {version}"))?;
    Ok(Path::new(manifest)
        .parent()
        .context("manifest path without a directory")?
        .to_path_buf())
}

/// SHA-256 over the files of `dir` in name order: `name \0 sha256(content) \n` for each.
pub fn tree_digest(dir: &Path) -> Result<String> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    let mut tree = Sha256::new();
    for name in names {
        let content = fs::read(dir.join(&name))?;
        tree.update(name.to_string_lossy().as_bytes());
        tree.update(b"\0");
        tree.update(hex(&Sha256::digest(&content)).as_bytes());
        tree.update(b"\n");
    }
    Ok(hex(&tree.finalize()))
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_if_changed(path: &Path, content: &str) -> Result<()> {
    if fs::read_to_string(path).is_ok_and(|c| c == content) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, content).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_checksum_of_one_package_from_a_lock_file() {
        let lock = r#"
version = 4

[[package]]
name = "glob"
version = "0.3.4"
checksum = "e4eb"

[[package]]
name = "nv-redfish-schema"
version = "0.22.1"
checksum = "12b6"
dependencies = ["glob"]

[[package]]
name = "redfish-csdl-fetch"
version = "0.0.0"
"#;
        assert_eq!(
            lock_checksum(lock, "nv-redfish-schema", "0.22.1").as_deref(),
            Some("12b6")
        );
        assert_eq!(lock_checksum(lock, "nv-redfish-schema", "0.22.0"), None);
        assert_eq!(lock_checksum(lock, "redfish-csdl-fetch", "0.0.0"), None);
        assert_eq!(lock_checksum("not toml [", "glob", "0.3.4"), None);
    }

    #[test]
    fn finds_a_package_directory_in_cargo_metadata() {
        let meta = r#"{"packages":[
            {"name":"glob","version":"0.3.4","manifest_path":"/r/src/i/glob-0.3.4/Cargo.toml"},
            {"name":"nv-redfish-schema","version":"0.22.1",
             "manifest_path":"/r/src/i/nv-redfish-schema-0.22.1/Cargo.toml"}]}"#;
        assert_eq!(
            package_dir(meta, "nv-redfish-schema", "0.22.1").unwrap(),
            Path::new("/r/src/i/nv-redfish-schema-0.22.1")
        );
        assert!(package_dir(meta, "serde", "1.0.0").is_err());
        assert!(package_dir("{", "glob", "0.3.4").is_err());
    }

    #[test]
    fn the_tree_digest_covers_names_and_contents() {
        let dir = std::env::temp_dir().join(format!("xtask-tree-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("b.xml"), "b").unwrap();
        fs::write(dir.join("a.xml"), "a").unwrap();
        let first = tree_digest(&dir).unwrap();
        // Same bytes as computed by hand: name, NUL, hex SHA-256 of the content, newline.
        let mut by_hand = Sha256::new();
        for (name, content) in [("a.xml", "a"), ("b.xml", "b")] {
            by_hand.update(format!("{name}\0{}\n", hex(&Sha256::digest(content))));
        }
        assert_eq!(first, hex(&by_hand.finalize()));
        fs::write(dir.join("b.xml"), "B").unwrap();
        assert_ne!(tree_digest(&dir).unwrap(), first);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_stamp_names_every_pin() {
        let s = stamp();
        for (name, version) in PYTHON_PACKAGES {
            assert!(s.contains(&format!("{name}=={version}")), "{s}");
        }
        assert!(
            s.contains(IRONIC_SDIST_SHA256) && s.contains(CSDL_CRATE_SHA256),
            "{s}"
        );
    }

    #[test]
    fn parses_python_versions() {
        assert_eq!(parse_python_version("3.11\n"), Some((3, 11)));
        assert_eq!(parse_python_version("3"), None);
        assert_eq!(parse_python_version("x.y"), None);
        assert!(parse_python_version("3.8").unwrap() < MIN_PYTHON);
    }
}
