//! isolinux, syslinux and extlinux configuration files (the Syslinux wiki, "Config"): the
//! label the boot loader starts by default and its `KERNEL`/`LINUX`, `INITRD` and `APPEND`.
//! Keywords are case-insensitive; `INCLUDE` (and `MENU INCLUDE`) files are read in place up to
//! a few levels, `CONFIG` is followed once when the file itself has no label. Relative paths
//! are relative to the top configuration file's directory (the boot loader's working
//! directory).

use super::{Choice, MediaError, Parsed, ReadConfig};

/// `INCLUDE`s nested deeper than this are not read.
const MAX_INCLUDE_DEPTH: usize = 4;
/// Files read for one configuration, the top one included.
const MAX_FILES: usize = 32;
/// Labels past this many are not read.
const MAX_LABELS: usize = 1024;

#[derive(Clone, Debug, Default)]
struct Label {
    name: String,
    /// `KERNEL`/`LINUX`, or a `COM32`-style module (`kernel` then names it, `linux` false).
    kernel: Option<String>,
    linux: bool,
    initrd: Option<String>,
    append: Option<String>,
    menu_default: bool,
}

#[derive(Debug, Default)]
struct Config {
    default: Option<String>,
    ontimeout: Option<String>,
    ui: bool,
    /// `APPEND` before any `LABEL`: the default for labels without one.
    global_append: Option<String>,
    labels: Vec<Label>,
    /// `CONFIG` targets, in order.
    configs: Vec<String>,
    files_left: usize,
}

/// `path` as the boot loader reads it from the working directory `dir`.
fn resolve(dir: &str, path: &str) -> String {
    let path = path.strip_prefix("::").unwrap_or(path);
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{dir}/{path}")
    }
}

/// Whether a kernel name is a Syslinux module or another non-Linux image (by its extension,
/// as the boot loader decides).
fn is_module(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".c32", ".com", ".cbt", ".0", ".bin", ".bs", ".bss", ".img"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

struct Reader<'r> {
    read: ReadConfig<'r>,
    dir: String,
}

impl Reader<'_> {
    fn run(&mut self, text: &str, config: &mut Config, depth: usize) -> Result<(), MediaError> {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_keyword(line);
            let keyword = keyword.to_ascii_lowercase();
            let (keyword, rest) = if keyword == "menu" {
                let (sub, rest) = split_keyword(rest);
                (format!("menu {}", sub.to_ascii_lowercase()), rest)
            } else {
                (keyword, rest)
            };
            if keyword == "label" {
                if config.labels.len() < MAX_LABELS {
                    config.labels.push(Label {
                        name: rest.to_string(),
                        ..Label::default()
                    });
                }
                continue;
            }
            let label = config.labels.last_mut();
            match (keyword.as_str(), label) {
                ("include" | "menu include", _) => {
                    let target = split_keyword(rest).0;
                    if depth < MAX_INCLUDE_DEPTH && config.files_left > 0 && !target.is_empty() {
                        config.files_left -= 1;
                        if let Some(text) = (self.read)(&resolve(&self.dir, target))? {
                            self.run(&text, config, depth + 1)?;
                        }
                    }
                }
                ("config", _) => {
                    let target = split_keyword(rest).0;
                    if !target.is_empty() {
                        config.configs.push(resolve(&self.dir, target));
                    }
                }
                ("default", _) => config.default = Some(rest.to_string()),
                ("ontimeout", _) => config.ontimeout = Some(rest.to_string()),
                ("ui", _) => config.ui = true,
                ("append", None) => config.global_append = Some(rest.to_string()),
                ("append", Some(label)) => label.append = Some(rest.to_string()),
                ("kernel" | "linux", Some(label)) => {
                    let name = split_keyword(rest).0;
                    label.linux = !is_module(name);
                    label.kernel = Some(name.to_string());
                }
                (
                    "com32" | "comboot" | "boot" | "bss" | "pxe" | "fdimage" | "localboot",
                    Some(label),
                ) => {
                    label.linux = false;
                    label.kernel = Some(format!("{keyword} {rest}"));
                }
                ("initrd", Some(label)) => label.initrd = Some(rest.to_string()),
                ("menu default", Some(label)) => label.menu_default = true,
                _ => {}
            }
        }
        Ok(())
    }
}

/// The first word of `line` and the rest, trimmed.
fn split_keyword(line: &str) -> (&str, &str) {
    let line = line.trim();
    match line.find(char::is_whitespace) {
        Some(at) => (&line[..at], line[at..].trim()),
        None => (line, ""),
    }
}

/// The words of an `APPEND` line, white space inside double quotes kept.
fn append_words(append: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in append.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                word.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn find_label<'c>(labels: &'c [Label], name: &str) -> Option<&'c Label> {
    labels
        .iter()
        .find(|l| l.name == name)
        .or_else(|| labels.iter().find(|l| l.name.eq_ignore_ascii_case(name)))
}

/// What the isolinux/syslinux/extlinux configuration `text` (the file `path`) boots by default.
pub(super) fn choose(path: &str, text: &str, read: ReadConfig<'_>) -> Result<Parsed, MediaError> {
    let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir).to_string();
    let mut reader = Reader { read, dir };
    let mut config = Config {
        files_left: MAX_FILES - 1,
        ..Config::default()
    };
    reader.run(text, &mut config, 0)?;
    let mut origin = path.to_string();
    if config.labels.is_empty() {
        let targets = std::mem::take(&mut config.configs);
        for target in targets.iter().filter(|t| t.as_str() != path) {
            if let Some(text) = (reader.read)(target)? {
                reader.run(&text, &mut config, 1)?;
                origin = format!("{path} -> CONFIG {target}");
                break;
            }
        }
    }

    let default_word = config
        .default
        .as_deref()
        .map(|d| split_keyword(d).0)
        .filter(|d| !d.is_empty());
    let default_label = default_word.and_then(|d| find_label(&config.labels, d));
    let menu_default = config.labels.iter().find(|l| l.menu_default);
    let menu_first = config.ui || default_word.is_some_and(is_module);
    let candidates = if menu_first {
        [(menu_default, "MENU DEFAULT"), (default_label, "DEFAULT")]
    } else {
        [(default_label, "DEFAULT"), (menu_default, "MENU DEFAULT")]
    };
    let chosen = candidates
        .into_iter()
        .find_map(|(label, how)| label.map(|l| (l.clone(), how)))
        .or_else(|| {
            let name = config.ontimeout.as_deref().map(|d| split_keyword(d).0)?;
            find_label(&config.labels, name).map(|l| (l.clone(), "ONTIMEOUT"))
        })
        .or_else(|| {
            // A DEFAULT naming no label is a command line: the kernel, then its options.
            let line = config.default.as_deref()?;
            let (kernel, options) = split_keyword(line);
            (!kernel.is_empty() && !is_module(kernel)).then(|| {
                (
                    Label {
                        name: line.to_string(),
                        kernel: Some(kernel.to_string()),
                        linux: true,
                        append: Some(options.to_string()),
                        ..Label::default()
                    },
                    "DEFAULT command line",
                )
            })
        })
        .or_else(|| {
            config
                .labels
                .iter()
                .find(|l| l.linux && l.kernel.is_some())
                .map(|l| (l.clone(), "the first"))
        });
    let Some((label, how)) = chosen else {
        return Ok(Parsed::NoEntry(if config.labels.is_empty() {
            format!("{origin} has no LABEL")
        } else {
            format!("{origin}: no LABEL has a KERNEL or LINUX line")
        }));
    };
    let entry = format!("{origin}, label '{}' ({how})", label.name);
    let Some(kernel) = label.kernel.as_deref().filter(|_| label.linux) else {
        return Ok(Parsed::NoEntry(match &label.kernel {
            Some(module) => format!("{entry} boots {module}, not a Linux kernel"),
            None => format!("{entry} has no KERNEL or LINUX line"),
        }));
    };

    let append = match label.append.as_deref() {
        Some("-") => "",
        Some(append) => append,
        None => config.global_append.as_deref().unwrap_or(""),
    };
    let mut initrd = label.initrd.clone();
    let mut args = Vec::new();
    for word in append_words(append) {
        match word.strip_prefix("initrd=") {
            Some(files) => initrd = Some(files.to_string()),
            None => args.push(word),
        }
    }
    let initrds = initrd
        .iter()
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| resolve(&reader.dir, f))
        .collect();
    Ok(Parsed::Choice(Choice {
        config: origin,
        entry,
        kernel: resolve(&reader.dir, kernel),
        initrds,
        cmdline: args.join(" "),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose_in(text: &str, files: &[(&str, &str)]) -> Parsed {
        let mut read = |path: &str| -> Result<Option<String>, MediaError> {
            Ok(files
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, t)| t.to_string()))
        };
        choose("/isolinux/isolinux.cfg", text, &mut read).unwrap()
    }

    fn choice(text: &str) -> Choice {
        match choose_in(text, &[]) {
            Parsed::Choice(choice) => choice,
            Parsed::NoEntry(why) => panic!("no entry: {why}"),
        }
    }

    #[test]
    fn default_label_with_initrd_in_append() {
        let c = choice(
            "# comment\nDEFAULT live\nTIMEOUT 50\nLABEL other\n  KERNEL /other\n\
             LABEL live\n  MENU LABEL ^Live\n  KERNEL /live/vmlinuz\n  \
             APPEND initrd=/live/initrd.img boot=live \"x=a b\" quiet\n",
        );
        assert_eq!(c.kernel, "/live/vmlinuz");
        assert_eq!(c.initrds, ["/live/initrd.img"]);
        assert_eq!(c.cmdline, "boot=live \"x=a b\" quiet");
        assert!(c.entry.contains("label 'live' (DEFAULT)"), "{}", c.entry);
    }

    #[test]
    fn keywords_are_case_insensitive_and_paths_relative_to_the_directory() {
        let c = choice(
            "default Linux\nlabel Linux\nlinux vmlinuz\ninitrd initrd.gz,extra.gz\nappend ro\n",
        );
        assert_eq!(c.kernel, "/isolinux/vmlinuz");
        assert_eq!(c.initrds, ["/isolinux/initrd.gz", "/isolinux/extra.gz"]);
        assert_eq!(c.cmdline, "ro");
    }

    #[test]
    fn debian_style_menu_default_through_includes() {
        let parsed = choose_in(
            "path \ninclude menu.cfg\ndefault vesamenu.c32\nprompt 0\ntimeout 0\n",
            &[
                (
                    "/isolinux/menu.cfg",
                    "menu hshift 4\ninclude gtk.cfg\nmenu include txt.cfg\n",
                ),
                (
                    "/isolinux/gtk.cfg",
                    "label installgui\n\tmenu label ^Graphical install\n\tmenu default\n\t\
                     kernel /install.a64/vmlinuz\n\tappend vga=788 initrd=/install.a64/gtk/initrd.gz --- quiet\n",
                ),
                (
                    "/isolinux/txt.cfg",
                    "label install\n\tkernel /install.a64/vmlinuz\n\tappend initrd=/install.a64/initrd.gz ---\n",
                ),
            ],
        );
        let Parsed::Choice(c) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(c.initrds, ["/install.a64/gtk/initrd.gz"]);
        assert_eq!(c.cmdline, "vga=788 --- quiet");
        assert!(c.entry.contains("(MENU DEFAULT)"));
    }

    #[test]
    fn default_as_a_command_line_global_append_and_append_dash() {
        let c = choice("DEFAULT /vmlinuz root=/dev/sda ro\n");
        assert_eq!(
            (c.kernel.as_str(), c.cmdline.as_str()),
            ("/vmlinuz", "root=/dev/sda ro")
        );
        let c = choice("APPEND console=ttyAMA0\nLABEL a\nKERNEL /a\n");
        assert_eq!(c.cmdline, "console=ttyAMA0");
        assert!(c.entry.contains("(the first)"));
        let c = choice("APPEND console=ttyAMA0\nLABEL a\nKERNEL /a\nAPPEND -\n");
        assert_eq!(c.cmdline, "");
    }

    #[test]
    fn modules_and_empty_configs_are_no_entry() {
        for (text, why) in [
            (
                "DEFAULT hdt\nLABEL hdt\nCOM32 hdt.c32\n",
                "not a Linux kernel",
            ),
            (
                "DEFAULT m\nLABEL m\nKERNEL memtest.bin\n",
                "not a Linux kernel",
            ),
            ("TIMEOUT 5\n", "has no LABEL"),
            ("LABEL a\nMENU LABEL A\n", "no LABEL has a KERNEL"),
        ] {
            let parsed = choose_in(text, &[]);
            assert!(
                matches!(&parsed, Parsed::NoEntry(w) if w.contains(why)),
                "{text:?}: {parsed:?}"
            );
        }
    }

    #[test]
    fn config_is_followed_once_and_includes_are_bounded() {
        let parsed = choose_in(
            "CONFIG /boot/real.cfg\n",
            &[("/boot/real.cfg", "LABEL r\nKERNEL /r\n")],
        );
        assert!(
            matches!(parsed, Parsed::Choice(c) if c.kernel == "/r" && c.config.contains("CONFIG"))
        );
        // A file including itself stops at the depth limit.
        let parsed = choose_in(
            "INCLUDE loop.cfg\n",
            &[(
                "/isolinux/loop.cfg",
                "INCLUDE loop.cfg\nLABEL l\nKERNEL /l\n",
            )],
        );
        assert!(matches!(parsed, Parsed::Choice(c) if c.kernel == "/l"));
    }
}
