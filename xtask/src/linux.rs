//! The built-in `kernel = "linux"` guest: Debian's arm64 cloud kernel and `busybox-static`,
//! fetched with apt into `<target>/guests/debian/`, and a generated busybox initramfs whose
//! `/init` (`linux/init.sh`) reports what Linux sees.
//!
//! Cache layout (under cargo's target directory):
//! ```text
//! guests/debian/debs/<package>_<version>_arm64.deb   packages as apt-get download names them
//! guests/debian/<package>_<version>_arm64/           dpkg-deb -x, pruned to what is used:
//!                       boot/vmlinuz-<release>       the kernel (and its config, System.map)
//!                       bin/busybox                  busybox
//! guests/linux/initramfs.cpio.gz                     the generated initramfs, with iobench
//!                                                    (guest-images/iobench, built here)
//! guests/debian/selected                             the pair last used (offline fallback)
//! guests/debian/tmp/w-<pid>/                         one run's downloads and extractions
//! ```
//! A package version is fetched and extracted once; later builds only ask apt which versions
//! are current (local, no network). When apt cannot resolve or download, the pair in
//! `selected` is used, with a note.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail, ensure};
use sha2::{Digest, Sha256};

use crate::initramfs::Archive;
use crate::progress::Step;
use crate::workspace::{Workspace, render};

/// Debian architecture of the guest packages.
pub const DEB_ARCH: &str = "arm64";
/// Meta package naming the current cloud kernel (bookworm: 6.1.x).
pub const KERNEL_META_PACKAGE: &str = "linux-image-cloud-arm64";
/// Busybox, statically linked.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Takes the meta package from this apt suite instead of the default candidate (bookworm and
/// bookworm-security: 6.1.x), e.g. `MICROVISOR_LINUX_SUITE=bookworm-backports` for 6.12.x.
pub const SUITE_ENV: &str = "MICROVISOR_LINUX_SUITE";
/// Kernel command line of the built-in Linux guest; the plan's `cmdline` is appended.
///
/// `loglevel=4` keeps errors and the first few `earlycon` lines but drops the ~250 info lines
/// of a full boot log: natively under TCG, `PROBE PASS` comes after ~3.9 s instead of 5-7 s,
/// and in a slice every console byte is a trapped write. Append `loglevel=8` for everything.
pub const DEFAULT_CMDLINE: &str = "console=ttyAMA0 earlycon=pl011,0x9000000 loglevel=4 panic=-1";
/// `/init`: a busybox sh script.
pub const INIT_SCRIPT: &str = include_str!("linux/init.sh");
/// `/etc/passwd` and `/etc/group`: root only (names in `ps`, `id`, `ls -l`).
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n";
pub const GROUP: &str = "root:x:0:\n";
/// `/etc/inittab` for busybox init, which `/init` execs last: a shell on the console,
/// restarted when it exits (cttyhack gives it the real tty, so job control and Ctrl-C work).
pub const INITTAB: &str = "::respawn:/bin/cttyhack /bin/sh\n::ctrlaltdel:/sbin/reboot\n";

/// The built-in Linux guest, ready for the bundle.
#[derive(Clone, Debug)]
pub struct LinuxGuest {
    /// The kernel `Image` (Debian's `vmlinuz` is an uncompressed arm64 Image).
    pub kernel: Vec<u8>,
    /// The generated initramfs (gzipped newc cpio).
    pub initramfs: Vec<u8>,
    /// Kernel release (`uname -r`), e.g. `6.1.0-56-cloud-arm64`.
    pub release: String,
    /// Where the kernel is in the cache.
    pub kernel_file: PathBuf,
    /// Where the initramfs was written.
    pub initramfs_file: PathBuf,
    /// Packages used, as (name, version).
    pub packages: Vec<(String, String)>,
    /// Set when apt could not be used and cached packages were taken instead.
    pub note: Option<String>,
}

/// The Linux guest for `ws`: fetched or taken from the cache, initramfs generated. Done once
/// per process and target directory; concurrent callers wait for the first.
pub fn guest(ws: &Workspace, quiet: bool) -> Result<Arc<LinuxGuest>> {
    static GUESTS: Mutex<Vec<(PathBuf, Arc<LinuxGuest>)>> = Mutex::new(Vec::new());
    let mut guests = GUESTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, guest)) = guests.iter().find(|(dir, _)| *dir == ws.target_dir) {
        return Ok(guest.clone());
    }
    let guest = Arc::new(build(ws, quiet)?);
    guests.push((ws.target_dir.clone(), guest.clone()));
    Ok(guest)
}

/// Fetches (or reuses) the packages under `guests/debian`, builds the guest tools and writes
/// `guests/linux/initramfs.cpio.gz`.
fn build(ws: &Workspace, quiet: bool) -> Result<LinuxGuest> {
    let guests = &ws.target_dir.join("guests");
    let fetched = fetch(&guests.join("debian"), quiet)?;
    if let Some(note) = &fetched.note {
        eprintln!("linux: {note}");
    }
    let raw = std::fs::read(&fetched.kernel)
        .with_context(|| format!("reading {}", fetched.kernel.display()))?;
    let kernel = crate::guest::unpack_kernel(raw)
        .with_context(|| format!("unpacking {}", fetched.kernel.display()))?;
    let busybox = std::fs::read(&fetched.busybox)
        .with_context(|| format!("reading {}", fetched.busybox.display()))?;
    let iobench = crate::build::build_one(
        ws,
        "microvisor-iobench",
        "iobench",
        crate::build::LINUX_TOOLS_TARGET,
        quiet,
    )?;
    let iobench =
        std::fs::read(&iobench).with_context(|| format!("reading {}", iobench.display()))?;
    let initramfs = initramfs(busybox, iobench).context("building the initramfs")?;
    let initramfs_file = guests.join("linux").join("initramfs.cpio.gz");
    write_if_changed(&initramfs_file, &initramfs)?;
    let release = fetched
        .kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_string();
    Ok(LinuxGuest {
        kernel,
        initramfs,
        release,
        kernel_file: fetched.kernel,
        initramfs_file,
        packages: fetched
            .debs
            .iter()
            .map(|d| (d.package().to_string(), d.version()))
            .collect(),
        note: fetched.note,
    })
}

/// The initramfs: busybox (applet links made at boot by `busybox --install -s`), `iobench`
/// (guest-images/iobench), `/init`, `/etc/inittab`, `/etc/passwd`, `/etc/group`,
/// `/dev/console` and the mount points, gzipped.
pub fn initramfs(busybox: Vec<u8>, iobench: Vec<u8>) -> Result<Vec<u8>> {
    let mut a = Archive::new();
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "root",
    ] {
        a.dir(dir, 0o755)?;
    }
    a.dir("tmp", 0o1777)?
        .file("bin/busybox", 0o755, busybox)?
        .symlink("bin/sh", "busybox")?
        .file("bin/iobench", 0o755, iobench)?
        .char_device("dev/console", 0o600, 5, 1)?
        .file("init", 0o755, INIT_SCRIPT.as_bytes().to_vec())?
        .file("etc/inittab", 0o644, INITTAB.as_bytes().to_vec())?
        .file("etc/passwd", 0o644, PASSWD.as_bytes().to_vec())?
        .file("etc/group", 0o644, GROUP.as_bytes().to_vec())?;
    Ok(a.to_gzip())
}

/// Writes `bytes` to `path` (through a temporary file and a rename) unless it holds them.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let dir = path.parent().context("a file in a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

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
    /// The kernel and busybox packages.
    pub debs: Vec<DebFile>,
    /// Why cached packages were used without asking apt, if they were.
    pub note: Option<String>,
}

/// Paths kept from a package's extraction: the kernel's `boot/`, busybox's binary.
fn kept_paths(deb: &DebFile) -> &'static [&'static str] {
    if deb.package() == BUSYBOX_PACKAGE {
        &["bin/busybox"]
    } else {
        &["boot"]
    }
}

/// Resolves the current kernel and busybox packages with apt, downloads and extracts what the
/// cache `dir` lacks. If apt cannot help (no arm64 architecture or package lists and not root,
/// no network, no apt at all) the pair last used is taken from the cache, with a note.
pub fn fetch(dir: &Path, quiet: bool) -> Result<Fetched> {
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    remove_stale_temporaries(&tmp);
    let workdir = tmp.join(format!("w-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&workdir);
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    let apt = Apt::new(workdir.clone());
    let fresh = resolve(&apt, quiet).and_then(|(kernel_deb, busybox_deb)| {
        obtain(&apt, dir, &kernel_deb, quiet)?;
        obtain(&apt, dir, &busybox_deb, quiet)?;
        let record = format!("{}\n{}\n", kernel_deb.file_name, busybox_deb.file_name);
        let fetched = Fetched {
            kernel: find_vmlinuz(&dir.join(kernel_deb.stem()))?,
            busybox: dir.join(busybox_deb.stem()).join("bin/busybox"),
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
    let busybox = dir.join(busybox_deb.stem()).join("bin/busybox");
    busybox.is_file().then(|| Fetched {
        kernel,
        busybox,
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
fn obtain(apt: &Apt, dir: &Path, deb: &DebFile, quiet: bool) -> Result<()> {
    let extracted = dir.join(deb.stem());
    if extracted.is_dir() {
        return Ok(());
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
    for kept in kept_paths(deb) {
        let (from, to) = (work.join(kept), keep.join(kept));
        ensure!(from.exists(), "{} has no {kept}", deb.file_name);
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
    let spec = format!("{}:{DEB_ARCH}={}", deb.package(), deb.version());
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

/// The QEMU command that boots the guest without the microvisor (QEMU `virt`, GICv3), console
/// on stdio; `append` follows [`DEFAULT_CMDLINE`].
pub fn native_qemu_command(
    guest: &LinuxGuest,
    cpus: u32,
    memory_mib: u64,
    append: &str,
) -> Command {
    let mut cmd = Command::new(crate::setup::QEMU);
    cmd.args(["-M", "virt,gic-version=3", "-cpu", "max"])
        .args(["-smp", &cpus.to_string(), "-m", &format!("{memory_mib}M")])
        .arg("-nographic")
        .arg("-kernel")
        .arg(&guest.kernel_file)
        .arg("-initrd")
        .arg(&guest.initramfs_file)
        .arg("-append")
        .arg(crate::image::full_cmdline(DEFAULT_CMDLINE, append));
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initramfs::{Kind, read_newc};
    use flate2::read::GzDecoder;
    use std::io::Read;

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

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-linux-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
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
        let found = cached(&dir).unwrap();
        assert_eq!(found.kernel, boot.join("vmlinuz-6.1.0-56-cloud-arm64"));
        assert_eq!(found.busybox, bin.join("busybox"));
        assert_eq!(found.debs[0].version(), "6.1.192-2");
        std::fs::write(boot.join("vmlinuz-other"), b"k").unwrap();
        assert!(cached(&dir).is_none(), "two kernels: ambiguous");
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

    #[test]
    fn the_initramfs_holds_busybox_iobench_init_and_mount_points() {
        let make = || initramfs(b"\x7fELF busybox".to_vec(), b"\x7fELF iobench".to_vec());
        let gz = make().unwrap();
        assert_eq!(gz, make().unwrap(), "deterministic");
        let mut cpio = Vec::new();
        GzDecoder::new(gz.as_slice())
            .read_to_end(&mut cpio)
            .unwrap();
        let entries = read_newc(&cpio).unwrap();
        let find = |n: &str| {
            entries
                .iter()
                .find(|e| e.name == n)
                .unwrap_or_else(|| panic!("{n} missing"))
        };
        assert_eq!(
            find("init").kind(),
            Some(Kind::File(INIT_SCRIPT.as_bytes().to_vec()))
        );
        assert_eq!(find("init").permissions(), 0o755);
        assert!(INIT_SCRIPT.starts_with("#!/bin/busybox sh\n"));
        assert_eq!(
            find("bin/busybox").kind(),
            Some(Kind::File(b"\x7fELF busybox".to_vec()))
        );
        assert_eq!(find("bin/sh").kind(), Some(Kind::Symlink("busybox".into())));
        assert_eq!(
            find("bin/iobench").kind(),
            Some(Kind::File(b"\x7fELF iobench".to_vec()))
        );
        assert_eq!(find("bin/iobench").permissions(), 0o755);
        assert_eq!(
            find("dev/console").kind(),
            Some(Kind::CharDevice { major: 5, minor: 1 })
        );
        assert_eq!(find("tmp").permissions(), 0o1777);
        for dir in ["proc", "sys", "dev", "etc", "sbin", "usr/bin", "usr/sbin"] {
            assert_eq!(find(dir).kind(), Some(Kind::Dir), "{dir}");
        }
        assert_eq!(
            find("etc/inittab").kind(),
            Some(Kind::File(INITTAB.as_bytes().to_vec()))
        );
        assert_eq!(
            find("etc/passwd").kind(),
            Some(Kind::File(PASSWD.as_bytes().to_vec()))
        );
    }

    /// A fake `/proc` + `/sys` as the init script reads them.
    struct FakeRoot {
        dir: PathBuf,
    }

    impl FakeRoot {
        fn new(name: &str) -> Self {
            Self {
                dir: temp_dir(&format!("root-{name}")),
            }
        }

        fn write(&self, path: &str, bytes: &[u8]) -> &Self {
            let path = self.dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
            self
        }

        fn cpu(&self, node: &str, reg: &[u8]) -> &Self {
            self.write(&format!("proc/device-tree/cpus/{node}/reg"), reg)
        }

        /// Runs the report part of `/init` with the host's `sh`; returns its output lines.
        fn report(&self) -> Vec<String> {
            self.run(&[])
        }

        /// Runs the disk steps of `/init` on `disk.raw` in the fake root (`sys/block/nvme0n1/size`
        /// gives its size); returns the output lines.
        fn disk(&self, steps: &str) -> Vec<String> {
            let disk = self.dir.join("disk.raw");
            let tmp = self.dir.join("tmp");
            std::fs::create_dir_all(&tmp).unwrap();
            self.run(&[
                ("MICROVISOR_INIT_DISK", steps.as_ref()),
                ("MICROVISOR_DISK", disk.as_os_str()),
                ("MICROVISOR_DISK_TMP", tmp.as_os_str()),
            ])
        }

        fn run(&self, env: &[(&str, &std::ffi::OsStr)]) -> Vec<String> {
            let script = self.dir.join("init.sh");
            std::fs::write(&script, INIT_SCRIPT).unwrap();
            let out = Command::new("sh")
                .arg(&script)
                .env("MICROVISOR_INIT_ROOT", &self.dir)
                .envs(env.iter().copied())
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            assert!(
                out.stderr.is_empty(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(String::from)
                .collect()
        }
    }

    fn be(values: &[u64], cells: usize) -> Vec<u8> {
        values
            .iter()
            .flat_map(|v| v.to_be_bytes()[8 - cells * 4..].to_vec())
            .collect()
    }

    fn report_json(lines: &[String]) -> serde_json::Value {
        let json = lines[0]
            .strip_prefix("SLICE-REPORT ")
            .unwrap_or_else(|| panic!("{lines:?}"));
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    #[test]
    fn init_reports_a_slice_and_passes() {
        let root = FakeRoot::new("pass");
        root.write("proc/device-tree/#address-cells", &be(&[2], 1))
            .write("proc/device-tree/#size-cells", &be(&[2], 1))
            .write("proc/device-tree/chosen/microvisor,slice-name", b"web-0\0")
            .write("proc/device-tree/cpus/#address-cells", &be(&[1], 1))
            .cpu("cpu@0", &be(&[0], 1))
            .cpu("cpu@1", &be(&[1], 1))
            .write(
                "proc/device-tree/memory@40000000/reg",
                &be(&[0x4000_0000, 512 << 20], 2),
            )
            .write("proc/device-tree/memory@40000000/device_type", b"memory\0")
            .write("sys/devices/system/cpu/online", b"0-1\n")
            .write(
                "proc/meminfo",
                b"MemTotal:         485312 kB\nMemFree:          400000 kB\n",
            )
            .write("proc/sys/kernel/osrelease", b"6.1.0-56-cloud-arm64\n")
            .write(
                "proc/cmdline",
                b"console=ttyAMA0 say=\"hi\\there\"\ttab\x01 microvisor.heartbeat=500\nnext\n",
            );
        let lines = root.report();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let report = report_json(&lines);
        assert_eq!(
            report,
            serde_json::json!({
                "slice": "web-0",
                "cpus": 2,
                "mpidrs": [0, 1],
                "memory_bytes": 512u64 << 20,
                "memory_base": "0x40000000",
                "dt_cpus": 2,
                "mem_total_kib": 485_312,
                "kernel": "6.1.0-56-cloud-arm64",
                "cmdline": "console=ttyAMA0 say=\"hi\\there\"\ttab microvisor.heartbeat=500\nnext",
            })
        );
        let keys: Vec<&str> = lines[0].split('"').skip(1).step_by(2).take(3).collect();
        assert_eq!(keys, ["slice", "web-0", "cpus"], "slice comes first");
        assert_eq!(lines[1], "PROBE PASS");
    }

    #[test]
    fn init_sums_memory_nodes_sorts_cpus_and_defaults_to_native() {
        let big = 6u64 << 30;
        let root = FakeRoot::new("native");
        root.write("proc/device-tree/#address-cells", &be(&[2], 1))
            .write("proc/device-tree/#size-cells", &be(&[2], 1))
            .cpu("cpu@a", &be(&[0x10a], 2))
            .cpu("cpu@2", &be(&[2], 2))
            .cpu("cpu@100000000", &be(&[0x1_0000_0000], 2))
            .write(
                "proc/device-tree/memory@140000000/reg",
                &be(&[0x1_4000_0000, big, 0x2_0000_0000, 1 << 30], 2),
            )
            .write(
                "proc/device-tree/memory@40000000/reg",
                &be(&[0x4000_0000, 1 << 30], 2),
            )
            .write("sys/devices/system/cpu/online", b"0,2-3\n")
            .write("proc/meminfo", b"MemTotal:        8000000 kB\n")
            .write("proc/cmdline", b"");
        let lines = root.report();
        let report = report_json(&lines);
        assert_eq!(report["slice"], "native");
        assert_eq!(
            report["mpidrs"],
            serde_json::json!([2, 0x10a, 0x1_0000_0000u64])
        );
        assert_eq!(report["cpus"], 3);
        assert_eq!(report["dt_cpus"], 3);
        assert_eq!(report["memory_bytes"], big + (2 << 30));
        assert_eq!(report["memory_base"], "0x40000000", "lowest base");
        assert_eq!(report["cmdline"], "");
        assert_eq!(report["kernel"], "");
        assert_eq!(lines[1], "PROBE PASS");
    }

    #[test]
    fn init_fails_on_offline_cpus_and_too_much_memtotal() {
        let root = FakeRoot::new("fail");
        root.cpu("cpu@0", &be(&[0], 1))
            .cpu("cpu@1", &be(&[1], 1))
            // No #address-cells/#size-cells: the defaults 2 and 1 apply (12-byte entries).
            .write(
                "proc/device-tree/memory@40000000/reg",
                &[be(&[0x4000_0000], 2), be(&[64 << 20], 1)].concat(),
            )
            .write("sys/devices/system/cpu/online", b"0\n")
            .write("proc/meminfo", b"MemTotal:          70000 kB\n");
        let lines = root.report();
        let report = report_json(&lines);
        assert_eq!(report["memory_bytes"], 64 << 20);
        assert_eq!(
            (report["cpus"].as_u64(), report["dt_cpus"].as_u64()),
            (Some(1), Some(2))
        );
        assert_eq!(
            lines[1],
            "PROBE FAIL cpus-online(1)-not-dt-cpus(2) memtotal-above-dt-memory(70000KiB>65536KiB)"
        );
    }

    #[test]
    fn init_fails_without_cpus_memory_or_meminfo() {
        let lines = FakeRoot::new("empty").report();
        let report = report_json(&lines);
        assert_eq!(report["memory_base"], serde_json::Value::Null);
        assert_eq!(report["mpidrs"], serde_json::json!([]));
        assert_eq!(lines[1], "PROBE FAIL dt-no-cpus dt-no-memory no-memtotal");
    }

    /// One 4 KiB block as the disk steps write it.
    fn disk_block(label: &str) -> Vec<u8> {
        format!("{label:<4095}\n").into_bytes()
    }

    /// A fake root whose slice "a" has a 4 MiB disk (1024 blocks of 4 KiB), all zeros.
    fn disk_root(name: &str) -> FakeRoot {
        let root = FakeRoot::new(name);
        root.write("proc/device-tree/chosen/microvisor,slice-name", b"a\0")
            .write("sys/block/nvme0n1/size", b"8192\n")
            .write("disk.raw", &vec![0; 4 << 20]);
        root
    }

    #[test]
    fn disk_steps_write_verify_and_check_the_end() {
        let root = disk_root("disk");
        root.write("proc/uptime", b"7.25 3.50\n");
        let lines = root.disk("verify,write,end,at:7,load:1,verify-load:1");
        assert_eq!(
            lines,
            [
                "DISK info bytes=4194304 blocks=1024",
                "DISK verify first empty",
                "DISK verify middle empty",
                "DISK verify last empty",
                "DISK write first ok",
                "DISK write middle ok",
                "DISK write last ok",
                "DISK end ok read-past=0 read-across=512",
                "DISK at 7",
                "DISK load start 1MiB at=256",
                "DISK write load ok",
                "DISK verify load ok",
                "DISK done verify,write,end,at:7,load:1,verify-load:1",
            ]
        );
        let disk = std::fs::read(root.dir.join("disk.raw")).unwrap();
        assert_eq!(disk.len(), 4 << 20, "nothing written past the end");
        let block = |i: usize| &disk[i * 4096..(i + 1) * 4096];
        assert_eq!(block(0), disk_block("MVDISK a first 0"));
        assert_eq!(block(512), disk_block("MVDISK a middle 512"));
        assert_eq!(block(1023), disk_block("MVDISK a last 1023"));
        assert_eq!(block(256), disk_block("MVDISK a load 256"));
        assert_eq!(block(511), disk_block("MVDISK a load 511"));
        assert!(block(1).iter().all(|&b| b == 0) && block(512 + 1).iter().all(|&b| b == 0));

        // Written before: verify passes, a second run sums the same bytes.
        let again = root.disk("verify,sum,sum");
        assert_eq!(
            &again[1..4],
            [
                "DISK verify first ok",
                "DISK verify middle ok",
                "DISK verify last ok"
            ]
        );
        let sums: Vec<&str> = again[4..6].iter().map(String::as_str).collect();
        assert!(
            sums[0].starts_with("DISK sum 4194304 ") && sums[0].len() == 17 + 32,
            "{sums:?}"
        );
        assert_eq!(sums[0], sums[1]);
    }

    #[test]
    fn disk_steps_name_what_they_found_instead() {
        let root = disk_root("disk-bad");
        root.disk("write");
        // Another slice's block in the middle, garbage at the end of the load region.
        let mut disk = std::fs::read(root.dir.join("disk.raw")).unwrap();
        disk[512 * 4096..513 * 4096].copy_from_slice(&disk_block("MVDISK b middle 512"));
        disk[1023 * 4096 + 100] = b'!';
        std::fs::write(root.dir.join("disk.raw"), &disk).unwrap();
        let lines = root.disk("verify,verify-load:1,load:3,bogus");
        assert_eq!(
            lines[1..],
            [
                "DISK verify first ok",
                "DISK verify middle FAIL found=\"MVDISK b middle 512\" at=512",
                "DISK verify last FAIL found=\"MVDISK a last 1023\" at=1023",
                "DISK verify load empty",
                "DISK load FAIL too-large",
                "DISK FAIL unknown-step bogus",
                "DISK done verify,verify-load:1,load:3,bogus",
            ]
        );

        let none = FakeRoot::new("disk-none");
        assert_eq!(none.disk("write"), ["DISK FAIL no-disk"]);
    }
}
