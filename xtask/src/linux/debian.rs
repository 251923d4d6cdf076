//! The guest's Debian packages: `apt-cache depends` resolves the kernel meta package,
//! `apt-get download` fetches (size and SHA-256 checked), `dpkg-deb -x` extracts into the
//! cache under `<target>/guests/debian/` (layout in the parent module's documentation).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail, ensure};
use sha2::{Digest, Sha256};

use super::write_if_changed;
use crate::progress::Step;
use crate::workspace::render;

/// Debian architecture of the guest packages.
pub const DEB_ARCH: &str = "arm64";
/// Meta package naming the current cloud kernel (bookworm: 6.1.x).
pub const KERNEL_META_PACKAGE: &str = "linux-image-cloud-arm64";
/// Busybox, statically linked.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Takes the meta package from this apt suite instead of the default candidate (bookworm and
/// bookworm-security: 6.1.x), e.g. `MICROVISOR_LINUX_SUITE=bookworm-backports` for 6.12.x.
pub const SUITE_ENV: &str = "MICROVISOR_LINUX_SUITE";
/// The kernel modules a virtio-net NIC needs (Debian's cloud kernels build VIRTIO_PCI and
/// VIRTIO_NET as modules), in an order `insmod` accepts: each after the modules it depends on
/// (their `depends=`; the package has no `modules.dep`). `virtio_pci_legacy_dev` is needed
/// even for modern devices. A module the kernel has built in (`modules.builtin`) is skipped.
pub const NET_MODULES: [&str; 8] = [
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// A Debian package file, as one line of `apt-get download --print-uris` names it:
/// `'<url>' <name>_<version>_<arch>.deb <size> SHA256:<hex>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebFile {
    pub url: String,
    /// `<name>_<version>_<arch>.deb`, the version's `:` written `%3a`.
    pub file_name: String,
    pub size: u64,
    /// SHA-256 in lowercase hex.
    pub sha256: String,
}

impl DebFile {
    /// The package name (before the first `_`).
    pub fn package(&self) -> &str {
        self.file_name.split('_').next().unwrap_or_default()
    }

    /// The architecture (`arm64`, `amd64`, `all`).
    pub fn arch(&self) -> &str {
        let arch = self.file_name.split('_').nth(2).unwrap_or_default();
        arch.strip_suffix(".deb").unwrap_or(arch)
    }

    /// The version, `%3a` decoded to `:`.
    pub fn version(&self) -> String {
        let version = self.file_name.split('_').nth(1).unwrap_or_default();
        version.replace("%3a", ":").replace("%3A", ":")
    }

    /// The file name without `.deb`: the name of its extraction directory.
    pub fn stem(&self) -> &str {
        self.file_name
            .strip_suffix(".deb")
            .unwrap_or(&self.file_name)
    }
}

/// The concrete package that `apt-cache depends <meta>` output names with `prefix`, e.g.
/// `linux-image-6.1.0-56-cloud-arm64` from `  Depends: linux-image-6.1.0-56-cloud-arm64:arm64`.
pub fn parse_depends(output: &str, prefix: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let line = line.trim().trim_start_matches('|');
        let dep = line.strip_prefix("Depends:")?.trim();
        let dep = dep.split_whitespace().next()?;
        let name = dep.split(':').next()?;
        name.starts_with(prefix).then(|| name.to_string())
    })
}

/// The package files of `apt-get download --print-uris` output; lines that are not package
/// files are skipped, malformed package lines are errors.
pub fn parse_print_uris(output: &str) -> Result<Vec<DebFile>> {
    let mut files = Vec::new();
    for line in output.lines().map(str::trim) {
        if !line.starts_with('\'') {
            continue;
        }
        let bad = || anyhow!("unexpected `apt-get download --print-uris` line: {line}");
        let (url, rest) = line[1..].split_once('\'').ok_or_else(bad)?;
        let mut words = rest.split_whitespace();
        let (Some(file_name), Some(size), Some(hash), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(bad());
        };
        let sha256 = hash
            .strip_prefix("SHA256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(bad)?
            .to_ascii_lowercase();
        let file = DebFile {
            url: url.to_string(),
            file_name: file_name.to_string(),
            size: size.parse().map_err(|_| bad())?,
            sha256,
        };
        let safe = !file.file_name.contains('/')
            && file.file_name.ends_with(".deb")
            && file.file_name.split('_').count() == 3;
        ensure!(safe, "unexpected package file name in: {line}");
        files.push(file);
    }
    Ok(files)
}

/// What [`fetch`] found: the kernel and busybox files in the cache.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// `<stem>/boot/vmlinuz-<release>`.
    pub kernel: PathBuf,
    /// `<stem>/bin/busybox`.
    pub busybox: PathBuf,
    /// The files of [`NET_MODULES`] the kernel does not have built in, in load order
    /// (`<stem>/lib/modules/<release>/kernel/.../<name>.ko`, or `.ko.xz`).
    pub modules: Vec<PathBuf>,
    /// The kernel and busybox packages.
    pub debs: Vec<DebFile>,
    /// Why cached packages were used without asking apt, if they were.
    pub note: Option<String>,
}

/// Paths kept from a package's extraction `work`: busybox's binary; the kernel's `boot/`, its
/// `modules.builtin` and the files of [`NET_MODULES`].
fn kept_paths(deb: &DebFile, work: &Path) -> Result<Vec<PathBuf>> {
    if deb.package() == BUSYBOX_PACKAGE {
        return Ok(vec!["bin/busybox".into()]);
    }
    let mut kept = vec![PathBuf::from("boot")];
    let modules = work.join("lib/modules");
    for release in std::fs::read_dir(&modules)
        .with_context(|| format!("{} has no lib/modules", deb.file_name))?
    {
        let release = release?.path();
        let builtin = release.join("modules.builtin");
        if builtin.is_file() {
            kept.push(builtin.strip_prefix(work)?.to_path_buf());
        }
        let mut files = Vec::new();
        module_files(&release, &mut files)?;
        for file in files {
            if module_name(&file).is_some_and(|n| NET_MODULES.contains(&n.as_str())) {
                kept.push(file.strip_prefix(work)?.to_path_buf());
            }
        }
    }
    Ok(kept)
}

/// Every `*.ko` and `*.ko.xz` below `dir`.
fn module_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            module_files(&path, out)?;
        } else if module_name(&path).is_some() {
            out.push(path);
        }
    }
    Ok(())
}

/// The module a file holds: `virtio_net` for `.../virtio_net.ko` or `virtio_net.ko.xz`.
fn module_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".ko")
        .or_else(|| name.strip_suffix(".ko.xz"))?;
    Some(stem.to_string())
}

/// The files of [`NET_MODULES`] in the extracted kernel package `extracted`, in load order.
/// A module the kernel has built in (listed in `modules.builtin`) needs no file; one that is
/// neither a file nor built in is an error naming it.
pub fn net_modules(extracted: &Path) -> Result<Vec<PathBuf>> {
    let modules = extracted.join("lib/modules");
    let mut releases = std::fs::read_dir(&modules)
        .with_context(|| format!("reading {}", modules.display()))?
        .map(|e| Ok(e?.path()))
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        releases.len() == 1,
        "{}: expected one kernel release, found {}",
        modules.display(),
        releases.len()
    );
    let release = releases.remove(0);
    let builtin = std::fs::read_to_string(release.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin
        .lines()
        .filter_map(|l| module_name(Path::new(l.trim())))
        .collect();
    let mut files = Vec::new();
    module_files(&release, &mut files)?;
    let mut found = Vec::new();
    for wanted in NET_MODULES {
        let file = files
            .iter()
            .find(|f| module_name(f).as_deref() == Some(wanted));
        match file {
            Some(file) => found.push(file.clone()),
            None if builtin.iter().any(|b| b == wanted) => {}
            None => bail!(
                "{}: the kernel has neither {wanted}.ko nor a built-in {wanted}",
                release.display()
            ),
        }
    }
    Ok(found)
}

/// Resolves the current kernel and busybox packages with apt, downloads and extracts what the
/// cache `dir` lacks. If apt cannot help (no arm64 architecture or package lists and not root,
/// no network, no apt at all) the pair last used is taken from the cache, with a note.
pub fn fetch(dir: &Path, quiet: bool) -> Result<Fetched> {
    let workdir = fresh_workdir(dir)?;
    let apt = Apt::new(workdir.clone());
    let fresh = resolve(&apt, quiet).and_then(|(kernel_deb, busybox_deb)| {
        obtain(&apt, dir, &kernel_deb, quiet)?;
        obtain(&apt, dir, &busybox_deb, quiet)?;
        let record = format!("{}\n{}\n", kernel_deb.file_name, busybox_deb.file_name);
        let fetched = Fetched {
            kernel: find_vmlinuz(&dir.join(kernel_deb.stem()))?,
            busybox: dir.join(busybox_deb.stem()).join("bin/busybox"),
            modules: net_modules(&dir.join(kernel_deb.stem()))?,
            debs: vec![kernel_deb, busybox_deb],
            note: None,
        };
        write_if_changed(&dir.join("selected"), record.as_bytes())?;
        Ok(fetched)
    });
    let _ = std::fs::remove_dir_all(&workdir);
    match fresh {
        Ok(fetched) => Ok(fetched),
        Err(why) => match cached(dir) {
            Some(mut fetched) => {
                let names: Vec<String> = fetched
                    .debs
                    .iter()
                    .map(|d| format!("{} {}", d.package(), d.version()))
                    .collect();
                fetched.note = Some(format!(
                    "using the cached {} ({why:#})",
                    names.join(" and ")
                ));
                Ok(fetched)
            }
            None => Err(why),
        },
    }
}

/// The pair recorded in `selected`, if both are still extracted in the cache.
fn cached(dir: &Path) -> Option<Fetched> {
    let record = std::fs::read_to_string(dir.join("selected")).ok()?;
    let mut debs = record.lines().map(|name| DebFile {
        url: String::new(),
        file_name: name.trim().to_string(),
        size: 0,
        sha256: String::new(),
    });
    let (kernel_deb, busybox_deb) = (debs.next()?, debs.next()?);
    let kernel = find_vmlinuz(&dir.join(kernel_deb.stem())).ok()?;
    let modules = net_modules(&dir.join(kernel_deb.stem())).ok()?;
    let busybox = dir.join(busybox_deb.stem()).join("bin/busybox");
    busybox.is_file().then(|| Fetched {
        kernel,
        busybox,
        modules,
        debs: vec![kernel_deb, busybox_deb],
        note: None,
    })
}

/// The single `boot/vmlinuz-*` of an extracted kernel package.
fn find_vmlinuz(extracted: &Path) -> Result<PathBuf> {
    let boot = extracted.join("boot");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&boot).with_context(|| format!("reading {}", boot.display()))? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("vmlinuz-"))
        {
            found.push(path);
        }
    }
    match <[PathBuf; 1]>::try_from(found) {
        Ok([path]) => Ok(path),
        Err(found) => bail!(
            "{}: expected one vmlinuz-*, found {}",
            boot.display(),
            found.len()
        ),
    }
}

/// How apt is used here: as root it may add the architecture and update; downloads run
/// without apt's `_apt` sandbox user (which could not write into the cache). Commands run in
/// an empty directory: `apt-get download --print-uris` leaves out packages whose file is
/// already in the current directory.
struct Apt {
    root: bool,
    workdir: PathBuf,
}

impl Apt {
    /// For a run working in the empty directory `workdir`.
    fn new(workdir: PathBuf) -> Self {
        Apt {
            root: crate::setup::running_as_root(),
            workdir,
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .current_dir(&self.workdir);
        if self.root && program == "apt-get" {
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        cmd
    }

    /// Whether dpkg installs arm64 packages (natively or as a foreign architecture).
    fn has_arm64(&self) -> Result<bool> {
        let native = run(self.command("dpkg").arg("--print-architecture"))?;
        if native.is_ok_and(|a| a.trim() == DEB_ARCH) {
            return Ok(true);
        }
        let foreign = run(self.command("dpkg").arg("--print-foreign-architectures"))?;
        Ok(foreign.is_ok_and(|list| list.split_whitespace().any(|a| a == DEB_ARCH)))
    }

    /// The kernel package to use and the package files of it and busybox, or `Err(why)`
    /// when apt does not know them (package lists missing or stale).
    fn packages(&self) -> Result<std::result::Result<(DebFile, DebFile), String>> {
        let mut meta = format!("{KERNEL_META_PACKAGE}:{DEB_ARCH}");
        if let Ok(suite) = std::env::var(SUITE_ENV)
            && !suite.trim().is_empty()
        {
            meta = format!("{meta}/{}", suite.trim());
        }
        let depends = match run(self.command("apt-cache").args(["depends", &meta]))? {
            Ok(out) => out,
            Err(why) => return Ok(Err(why)),
        };
        let Some(kernel) = parse_depends(&depends, "linux-image-") else {
            return Ok(Err(format!(
                "`apt-cache depends {meta}` names no linux-image"
            )));
        };
        let kernel_arch = format!("{kernel}:{DEB_ARCH}");
        let busybox = format!("{BUSYBOX_PACKAGE}:{DEB_ARCH}");
        let mut cmd = self.command("apt-get");
        cmd.args(["download", "--print-uris", &kernel_arch, &busybox]);
        let out = match run(&mut cmd)? {
            Ok(out) => out,
            Err(why) => return Ok(Err(why)),
        };
        let files = parse_print_uris(&out)?;
        let find = |name: &str| files.iter().find(|f| f.package() == name).cloned();
        match (find(&kernel), find(BUSYBOX_PACKAGE)) {
            (Some(k), Some(b)) => Ok(Ok((k, b))),
            _ => bail!(
                "{} did not name {kernel} and {BUSYBOX_PACKAGE}: {out}",
                render(&cmd)
            ),
        }
    }
}

/// The kernel and busybox package files to use, asking apt. As root, adds the arm64
/// architecture and updates the package lists when needed; otherwise says in one line what to
/// run.
fn resolve(apt: &Apt, quiet: bool) -> Result<(DebFile, DebFile)> {
    for tool in ["apt-get", "apt-cache", "dpkg", "dpkg-deb"] {
        ensure!(
            Path::new("/usr/bin").join(tool).exists(),
            "needs Debian's apt to fetch the arm64 kernel, but {tool} is missing (elsewhere, \
             give the slice kernel and initrd paths)"
        );
    }
    let mut updated = false;
    if !apt.has_arm64()? {
        if !apt.root {
            bail!(
                "needs Debian's {DEB_ARCH} packages: run `sudo dpkg --add-architecture {DEB_ARCH} && sudo apt-get update`"
            );
        }
        let step = Step::start(
            format!("dpkg --add-architecture {DEB_ARCH} && apt-get update"),
            quiet,
        );
        checked(apt.command("dpkg").args(["--add-architecture", DEB_ARCH]))?;
        checked(apt.command("apt-get").arg("update"))?;
        step.finish("done");
        updated = true;
    }
    loop {
        match apt.packages()? {
            Ok(debs) => return Ok(debs),
            Err(why) if updated => bail!("{why}"),
            Err(why) if !apt.root => {
                bail!("needs Debian's {DEB_ARCH} package lists ({why}): run `sudo apt-get update`")
            }
            Err(_) => {
                let step = Step::start("apt-get update", quiet);
                checked(apt.command("apt-get").arg("update"))?;
                step.finish("done");
                updated = true;
            }
        }
    }
}

/// Runs `cmd` with its output captured: `Ok(Ok(stdout))` if it exits 0, else
/// `Ok(Err(why))` with its last stderr line; `Err` if it cannot start.
fn run(cmd: &mut Command) -> Result<std::result::Result<String, String>> {
    let output = cmd
        .output()
        .with_context(|| format!("starting {}", render(cmd)))?;
    if output.status.success() {
        return Ok(Ok(String::from_utf8_lossy(&output.stdout).into_owned()));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    Ok(Err(format!(
        "{} failed ({}): {}",
        render(cmd),
        output.status,
        last.trim()
    )))
}

/// [`run`], failing unless `cmd` exits 0.
fn checked(cmd: &mut Command) -> Result<String> {
    run(cmd)?.map_err(|why| anyhow!(why))
}

/// Makes sure `dir/<stem>` holds the extracted package: extracts `debs/<file>`, downloading
/// it first if needed. Work happens in `tmp/w-<pid>/` and is moved in with renames, so a concurrent
/// or interrupted run never leaves a half-written file under its final name.
///
/// A kernel extracted by an older xtask (before the modules were kept: no `lib/modules`) is
/// extracted again from its package file.
fn obtain(apt: &Apt, dir: &Path, deb: &DebFile, quiet: bool) -> Result<()> {
    let extracted = dir.join(deb.stem());
    let complete = deb.package() == BUSYBOX_PACKAGE || extracted.join("lib/modules").is_dir();
    if extracted.is_dir() && complete {
        return Ok(());
    }
    if extracted.is_dir() {
        let old = apt.workdir.join("outdated");
        std::fs::rename(&extracted, &old)
            .with_context(|| format!("moving {} to {}", extracted.display(), old.display()))?;
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    let debs = dir.join("debs");
    let path = debs.join(&deb.file_name);
    if !std::fs::metadata(&path).is_ok_and(|m| m.len() == deb.size) {
        download(apt, dir, deb, quiet)?;
    }
    let work = apt.workdir.join("extracted");
    let keep = apt.workdir.join("kept");
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&keep);
    checked(Command::new("dpkg-deb").arg("-x").arg(&path).arg(&work))?;
    for kept in kept_paths(deb, &work)? {
        let (from, to) = (work.join(&kept), keep.join(&kept));
        ensure!(from.exists(), "{} has no {}", deb.file_name, kept.display());
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&from, &to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    }
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    if std::fs::rename(&keep, &extracted).is_err() {
        // Another run extracted it meanwhile.
        ensure!(
            extracted.is_dir(),
            "cannot move {} to {}",
            keep.display(),
            extracted.display()
        );
        let _ = std::fs::remove_dir_all(&keep);
    }
    Ok(())
}

/// `apt-get download <package>=<version>` into the run's `tmp/w-<pid>/`, checked against the size and SHA-256
/// apt announced, then moved to `debs/`.
fn download(apt: &Apt, dir: &Path, deb: &DebFile, quiet: bool) -> Result<()> {
    let step = Step::start(
        format!(
            "downloading {} {} ({})",
            deb.package(),
            deb.version(),
            microvisor_plan::HumanSize(deb.size)
        ),
        quiet,
    );
    let spec = format!("{}:{}={}", deb.package(), deb.arch(), deb.version());
    checked(apt.command("apt-get").args(["download", &spec]))?;
    let got = apt.workdir.join(&deb.file_name);
    let bytes = std::fs::read(&got).with_context(|| format!("reading {}", got.display()))?;
    let sha256 = hex(&Sha256::digest(&bytes));
    ensure!(
        bytes.len() as u64 == deb.size && sha256 == deb.sha256,
        "{}: {} bytes, SHA-256 {sha256}; apt announced {} bytes, {}",
        deb.file_name,
        bytes.len(),
        deb.size,
        deb.sha256
    );
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    std::fs::rename(&got, debs.join(&deb.file_name))
        .with_context(|| format!("moving {} to {}", got.display(), debs.display()))?;
    step.finish(&deb.file_name);
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads (size and SHA-256 checked against what apt announces) and extracts the whole of
/// each package `specs` names (`name` or `name:arch`) into `dir/<stem>/`, unless already there;
/// returns the extracted directories in order. For the host tools xtask runs from the cache
/// without installing them (e.g. `grub-mkimage`, `mtools`) and the files it takes from arm64
/// packages (e.g. GRUB's modules). If apt cannot help, directories extracted before are used.
pub fn fetch_extracted(dir: &Path, specs: &[&str], quiet: bool) -> Result<Vec<PathBuf>> {
    let workdir = fresh_workdir(dir)?;
    let apt = Apt::new(workdir.clone());
    let fresh = (|| -> Result<Vec<PathBuf>> {
        let mut cmd = apt.command("apt-get");
        cmd.args(["download", "--print-uris"]).args(specs);
        let mut files = parse_print_uris(&checked(&mut cmd)?)?;
        // apt names them in its own order: back to the order asked for.
        let position = |deb: &DebFile| {
            specs
                .iter()
                .position(|s| s.split(':').next() == Some(deb.package()))
                .unwrap_or(usize::MAX)
        };
        files.sort_by_key(position);
        ensure!(
            files.len() == specs.len(),
            "{} named {} packages for {}",
            render(&cmd),
            files.len(),
            specs.join(" ")
        );
        let mut extracted = Vec::new();
        for deb in &files {
            let target = dir.join(deb.stem());
            if !target.is_dir() {
                let path = dir.join("debs").join(&deb.file_name);
                if !std::fs::metadata(&path).is_ok_and(|m| m.len() == deb.size) {
                    download(&apt, dir, deb, quiet)?;
                }
                let work = workdir.join("extracted");
                let _ = std::fs::remove_dir_all(&work);
                checked(Command::new("dpkg-deb").arg("-x").arg(&path).arg(&work))?;
                if std::fs::rename(&work, &target).is_err() {
                    ensure!(
                        target.is_dir(),
                        "cannot move {} to {}",
                        work.display(),
                        target.display()
                    );
                }
            }
            extracted.push(target);
        }
        Ok(extracted)
    })();
    let _ = std::fs::remove_dir_all(&workdir);
    fresh.or_else(|why| {
        let cached: Option<Vec<PathBuf>> = specs
            .iter()
            .map(|spec| {
                let name = spec.split(':').next().unwrap_or(spec);
                std::fs::read_dir(dir)
                    .ok()?
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| {
                        p.is_dir()
                            && p.file_name()
                                .and_then(|n| n.to_str())
                                .is_some_and(|n| n.starts_with(&format!("{name}_")))
                    })
            })
            .collect();
        cached.ok_or(why)
    })
}

/// An empty `tmp/w-<pid>/` under the cache `dir` for this run (what dead runs left there is
/// removed first).
fn fresh_workdir(dir: &Path) -> Result<PathBuf> {
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    remove_stale_temporaries(&tmp);
    let workdir = tmp.join(format!("w-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&workdir);
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    Ok(workdir)
}

/// Removes `tmp/` entries (`w-<pid>`) left by runs that no longer exist.
fn remove_stale_temporaries(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.split('-').nth(1)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::temp_dir;
    use super::*;

    const DEPENDS: &str =
        "linux-image-cloud-arm64:arm64\n  Depends: linux-image-6.1.0-56-cloud-arm64:arm64\n";

    const URIS: &str = "'http://deb.debian.org/debian/pool/main/b/busybox/busybox-static_1.35.0-4%2bdeb12u1%2bb1_arm64.deb' busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb 822236 SHA256:732c9135564fc71337e0e05fb4da4d11e6c28c1834bce3e405e575afef2a52f5
'http://deb.debian.org/debian-security/pool/updates/main/l/linux-signed-arm64/linux-image-6.1.0-56-cloud-arm64_6.1.192-2_arm64.deb' linux-image-6.1.0-56-cloud-arm64_6.1.192-2_arm64.deb 21347940 SHA256:481AB54A27246579AADEB372315C56DE02F2FE0CBA4E09B387946269FFF2F415
";

    #[test]
    fn the_meta_package_resolves_to_its_kernel() {
        assert_eq!(
            parse_depends(DEPENDS, "linux-image-").as_deref(),
            Some("linux-image-6.1.0-56-cloud-arm64")
        );
        let alternatives =
            "x\n |Depends: linux-image-6.12.43+bpo-cloud-arm64:arm64\n  Depends: <virtual>\n";
        assert_eq!(
            parse_depends(alternatives, "linux-image-").as_deref(),
            Some("linux-image-6.12.43+bpo-cloud-arm64")
        );
        let other = "linux-image-cloud-arm64:arm64\n  Depends: initramfs-tools\n  Recommends: linux-image-9\n";
        assert_eq!(parse_depends(other, "linux-image-"), None);
        assert_eq!(parse_depends("", "linux-image-"), None);
    }

    #[test]
    fn print_uris_lines_become_package_files() {
        let files = parse_print_uris(&format!("Reading package lists...\n{URIS}")).unwrap();
        assert_eq!(files.len(), 2);
        let busybox = &files[0];
        assert_eq!(busybox.package(), "busybox-static");
        assert_eq!(busybox.version(), "1:1.35.0-4+deb12u1+b1");
        assert_eq!(
            busybox.stem(),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64"
        );
        assert_eq!(busybox.size, 822_236);
        assert!(
            busybox
                .url
                .starts_with("http://deb.debian.org/debian/pool/main/b/busybox/")
        );
        let kernel = &files[1];
        assert_eq!(kernel.package(), "linux-image-6.1.0-56-cloud-arm64");
        assert_eq!(kernel.version(), "6.1.192-2");
        assert_eq!(kernel.size, 21_347_940);
        assert_eq!(
            kernel.sha256, "481ab54a27246579aadeb372315c56de02f2fe0cba4e09b387946269fff2f415",
            "lowercased"
        );
    }

    #[test]
    fn malformed_print_uris_lines_are_errors() {
        for line in [
            "'http://x/a.deb' a_1_arm64.deb 12",
            "'http://x/a.deb' a_1_arm64.deb twelve SHA256:732c9135564fc71337e0e05fb4da4d11e6c28c1834bce3e405e575afef2a52f5",
            "'http://x/a.deb' a_1_arm64.deb 12 MD5Sum:0123",
            "'http://x/a.deb' ../a_1_arm64.deb 12 SHA256:732c9135564fc71337e0e05fb4da4d11e6c28c1834bce3e405e575afef2a52f5",
            "'http://x/a.deb a_1_arm64.deb 12",
        ] {
            assert!(parse_print_uris(line).is_err(), "{line}");
        }
        assert!(parse_print_uris("E: nothing\n").unwrap().is_empty());
    }

    #[test]
    fn the_cached_pair_is_found_from_the_record() {
        let dir = temp_dir("cache");
        assert!(cached(&dir).is_none());
        let files = parse_print_uris(URIS).unwrap();
        let (busybox, kernel) = (&files[0], &files[1]);
        std::fs::write(
            dir.join("selected"),
            format!("{}\n{}\n", kernel.file_name, busybox.file_name),
        )
        .unwrap();
        assert!(cached(&dir).is_none(), "nothing extracted yet");
        let boot = dir.join(kernel.stem()).join("boot");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(boot.join("vmlinuz-6.1.0-56-cloud-arm64"), b"k").unwrap();
        std::fs::write(boot.join("config-6.1.0-56-cloud-arm64"), b"c").unwrap();
        let bin = dir.join(busybox.stem()).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("busybox"), b"b").unwrap();
        assert!(cached(&dir).is_none(), "extracted without the modules");
        let modules = fake_modules(&dir.join(kernel.stem()), &NET_MODULES);
        let found = cached(&dir).unwrap();
        assert_eq!(found.modules, modules);
        assert_eq!(found.kernel, boot.join("vmlinuz-6.1.0-56-cloud-arm64"));
        assert_eq!(found.busybox, bin.join("busybox"));
        assert_eq!(found.debs[0].version(), "6.1.192-2");
        std::fs::write(boot.join("vmlinuz-other"), b"k").unwrap();
        assert!(cached(&dir).is_none(), "two kernels: ambiguous");
    }

    /// Writes `names` as module files of a fake extracted kernel at `root` (in a directory
    /// layout like Debian's), returns their paths in [`NET_MODULES`] order.
    fn fake_modules(root: &Path, names: &[&str]) -> Vec<PathBuf> {
        let release = root.join("lib/modules/6.1.0-56-cloud-arm64");
        let mut paths = Vec::new();
        for name in NET_MODULES.iter().filter(|n| names.contains(n)) {
            let sub = if name.contains("virtio_net") || name.contains("net_failover") {
                "kernel/drivers/net"
            } else if *name == "failover" {
                "kernel/net/core"
            } else {
                "kernel/drivers/virtio"
            };
            let dir = release.join(sub);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{name}.ko"));
            std::fs::write(&path, name.as_bytes()).unwrap();
            paths.push(path);
        }
        std::fs::create_dir_all(release.join("kernel/drivers/block")).unwrap();
        std::fs::write(release.join("kernel/drivers/block/virtio_blk.ko"), b"x").unwrap();
        paths
    }

    #[test]
    fn net_modules_come_in_load_order_and_built_in_ones_need_no_file() {
        let dir = temp_dir("modules");
        let all = fake_modules(&dir, &NET_MODULES);
        assert_eq!(net_modules(&dir).unwrap(), all);
        let names: Vec<String> = all.iter().map(|p| module_name(p).unwrap()).collect();
        assert_eq!(names, NET_MODULES);

        let partial = temp_dir("modules-builtin");
        let files = fake_modules(&partial, &["virtio_net", "net_failover", "failover"]);
        let release = partial.join("lib/modules/6.1.0-56-cloud-arm64");
        let err = net_modules(&partial).unwrap_err().to_string();
        assert!(
            err.contains("neither virtio_ring.ko nor a built-in virtio_ring"),
            "{err}"
        );
        std::fs::write(
            release.join("modules.builtin"),
            "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/virtio/virtio_pci_modern_dev.ko\n\
             kernel/drivers/virtio/virtio_pci_legacy_dev.ko\n",
        )
        .unwrap();
        assert_eq!(net_modules(&partial).unwrap(), files);
        assert_eq!(
            module_name(Path::new("a/virtio_net.ko.xz")).as_deref(),
            Some("virtio_net")
        );
        assert_eq!(module_name(Path::new("a/modules.order")), None);
    }

    #[test]
    fn stale_temporaries_go_and_live_ones_stay() {
        let dir = temp_dir("stale");
        let live = dir.join(format!("w-{}", std::process::id()));
        let dead = dir.join("w-4294967295");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::create_dir_all(&dead).unwrap();
        remove_stale_temporaries(&dir);
        assert!(live.is_dir() && !dead.exists());
    }
}
