//! GRUB 2 configuration files (the GRUB manual, "Shell-like scripting"): enough of the
//! language to find the menu entry GRUB would boot first and its `linux` and `initrd`
//! commands. Conditions are not evaluated: both branches of an `if` are read in order, so the
//! first `linux` command of an entry wins. `source` files are read in place and `configfile`
//! is followed when the file itself has no menu, one level deep in both cases.

use std::collections::BTreeMap;

use super::{Choice, MediaError, Parsed, ReadConfig};

/// Nesting of `{ }` blocks deeper than this is not read.
const MAX_DEPTH: usize = 16;
/// Submenus nested deeper than this are not read.
const MAX_SUBMENU_DEPTH: usize = 4;
/// Menu items past this many (in all submenus) are not read.
const MAX_ITEMS: usize = 256;
/// Variables past this many are not set (each entry keeps a copy of them).
const MAX_VARS: usize = 32;
/// A variable's value is cut at this many bytes.
const MAX_VALUE: usize = 2048;
/// An expanded word is cut at this many bytes.
const MAX_WORD: usize = 4096;
/// A command's words past this many are dropped.
const MAX_WORDS: usize = 256;

/// A piece of a word: literal text or a variable reference.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
}

type Word = Vec<Piece>;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(Word),
    /// A newline or `;`.
    End,
    /// A `{` on its own.
    Open,
    /// A `}` on its own.
    Close,
}

/// Splits `text` into words, separators and braces (quotes, escapes, comments and
/// variable references as GRUB's lexer has them).
fn lex(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut word: Word = Vec::new();
    // Whether the word has anything (an empty quoted string is a word).
    let mut started = false;
    // Whether any part of the word was quoted or escaped (then `{` is not a brace).
    let mut quoted = false;

    fn push_char(word: &mut Word, c: char) {
        if let Some(Piece::Text(text)) = word.last_mut() {
            text.push(c);
        } else {
            word.push(Piece::Text(c.to_string()));
        }
    }
    fn finish(tokens: &mut Vec<Token>, word: &mut Word, started: &mut bool, quoted: &mut bool) {
        if *started {
            let taken = std::mem::take(word);
            let brace = match (taken.as_slice(), *quoted) {
                ([Piece::Text(t)], false) if t == "{" => Some(Token::Open),
                ([Piece::Text(t)], false) if t == "}" => Some(Token::Close),
                _ => None,
            };
            tokens.push(brace.unwrap_or(Token::Word(taken)));
        }
        *started = false;
        *quoted = false;
    }
    fn variable(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
        match chars.peek().copied() {
            Some('{') => {
                chars.next();
                let mut name = String::new();
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                    name.push(c);
                }
                Some(name)
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                let mut name = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                Some(name)
            }
            Some(c @ ('?' | '#' | '*' | '@')) => {
                chars.next();
                Some(c.to_string())
            }
            _ => None,
        }
    }

    while let Some(c) = chars.next() {
        match c {
            '\n' | ';' => {
                finish(&mut tokens, &mut word, &mut started, &mut quoted);
                tokens.push(Token::End);
            }
            ' ' | '\t' | '\r' => finish(&mut tokens, &mut word, &mut started, &mut quoted),
            '#' if !started => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                tokens.push(Token::End);
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    push_char(&mut word, c);
                    started = true;
                    quoted = true;
                }
                None => {}
            },
            '\'' => {
                started = true;
                quoted = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    push_char(&mut word, c);
                }
            }
            '"' => {
                started = true;
                quoted = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.peek().copied() {
                            Some(e @ ('"' | '\\' | '$')) => {
                                chars.next();
                                push_char(&mut word, e);
                            }
                            Some('\n') => {
                                chars.next();
                            }
                            _ => push_char(&mut word, '\\'),
                        },
                        '$' => match variable(&mut chars) {
                            Some(name) => word.push(Piece::Var(name)),
                            None => push_char(&mut word, '$'),
                        },
                        c => push_char(&mut word, c),
                    }
                }
            }
            '$' => {
                started = true;
                match variable(&mut chars) {
                    Some(name) => word.push(Piece::Var(name)),
                    None => push_char(&mut word, '$'),
                }
            }
            c => {
                started = true;
                push_char(&mut word, c);
            }
        }
    }
    finish(&mut tokens, &mut word, &mut started, &mut quoted);
    tokens
}

/// A command, or a command with a `{ }` body (`menuentry`, `submenu`, `function`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stmt {
    Command(Vec<Word>),
    Block(Vec<Word>, Vec<Stmt>),
}

/// The statements of `tokens` from `*at` to the `}` closing this level (or the end).
fn parse(tokens: &[Token], at: &mut usize, depth: usize) -> Vec<Stmt> {
    let mut statements = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    while let Some(token) = tokens.get(*at) {
        *at += 1;
        match token {
            Token::Word(word) => words.push(word.clone()),
            Token::End => {
                if !words.is_empty() {
                    statements.push(Stmt::Command(std::mem::take(&mut words)));
                }
            }
            Token::Open => {
                let head = std::mem::take(&mut words);
                if depth >= MAX_DEPTH {
                    skip_block(tokens, at);
                    continue;
                }
                let body = parse(tokens, at, depth + 1);
                statements.push(Stmt::Block(head, body));
            }
            Token::Close => {
                if !words.is_empty() {
                    statements.push(Stmt::Command(std::mem::take(&mut words)));
                }
                if depth > 0 {
                    return statements;
                }
            }
        }
    }
    if !words.is_empty() {
        statements.push(Stmt::Command(words));
    }
    statements
}

/// Moves `*at` past the `}` closing a block whose `{` was just read.
fn skip_block(tokens: &[Token], at: &mut usize) {
    let mut open = 1usize;
    while let Some(token) = tokens.get(*at) {
        *at += 1;
        match token {
            Token::Open => open += 1,
            Token::Close => {
                open -= 1;
                if open == 0 {
                    return;
                }
            }
            _ => {}
        }
    }
}

type Vars = BTreeMap<String, String>;

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

fn expand(word: &Word, vars: &Vars) -> String {
    let mut out = String::new();
    for piece in word {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var(name) => out.push_str(vars.get(name).map_or("", String::as_str)),
        }
        if out.len() > MAX_WORD {
            truncate(&mut out, MAX_WORD);
            break;
        }
    }
    out
}

/// A menu item.
#[derive(Clone, Debug)]
enum Item {
    Entry {
        title: String,
        id: Option<String>,
        body: Vec<Stmt>,
        /// The variables when the entry was defined (what GRUB has when it runs it, minus
        /// what later commands change).
        vars: Vars,
    },
    Submenu {
        title: String,
        id: Option<String>,
        items: Vec<Item>,
    },
}

impl Item {
    fn title(&self) -> &str {
        match self {
            Item::Entry { title, .. } | Item::Submenu { title, .. } => title,
        }
    }
    fn id(&self) -> Option<&str> {
        match self {
            Item::Entry { id, .. } | Item::Submenu { id, .. } => id.as_deref(),
        }
    }
}

/// The title and `--id` of a `menuentry`/`submenu` head.
fn title_and_id(head: &[Word], vars: &Vars) -> (String, Option<String>) {
    let words: Vec<String> = head.iter().skip(1).map(|w| expand(w, vars)).collect();
    let mut title = None;
    let mut id = None;
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        if let Some(option) = word.strip_prefix("--") {
            match option.split_once('=') {
                Some(("id", value)) => id = Some(value.to_string()),
                Some(_) => {}
                None if matches!(option, "class" | "users" | "hotkey" | "id") => {
                    if option == "id" {
                        id = words.get(i + 1).cloned();
                    }
                    i += 1;
                }
                None => {}
            }
        } else if title.is_none() {
            title = Some(word.clone());
        }
        i += 1;
    }
    (title.unwrap_or_default(), id)
}

/// What a configuration file defines.
#[derive(Debug, Default)]
struct Script {
    items: Vec<Item>,
    vars: Vars,
    /// `configfile` targets, in order.
    configfiles: Vec<String>,
}

/// A `(device)` prefix dropped, and rooted.
fn resolve_path(path: &str) -> String {
    let path = match path.strip_prefix('(') {
        Some(rest) => rest.split_once(')').map_or("", |(_, after)| after),
        None => path,
    };
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

/// The words of a command with `then`/`else`/`do` keywords in front removed, or `None` for the
/// condition and loop lines, which are not evaluated.
fn command_words(words: &[Word], vars: &Vars) -> Option<Vec<String>> {
    let mut words: Vec<String> = words
        .iter()
        .take(MAX_WORDS)
        .map(|w| expand(w, vars))
        .collect();
    while matches!(
        words.first().map(String::as_str),
        Some("then" | "else" | "do")
    ) {
        words.remove(0);
    }
    match words.first().map(String::as_str) {
        None | Some("if" | "elif" | "fi" | "while" | "until" | "for" | "done") => None,
        Some(_) => Some(words),
    }
}

/// An assignment (`set a=b` or `a=b`), applied to `vars`; whether it was one.
fn assign(words: &[String], vars: &mut Vars) -> bool {
    let text = match words {
        [set, text, ..] if set == "set" => text,
        [text] => text,
        _ => return false,
    };
    match text.split_once('=') {
        Some((name, value))
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            if vars.len() < MAX_VARS || vars.contains_key(name) {
                let mut value = value.to_string();
                truncate(&mut value, MAX_VALUE);
                vars.insert(name.to_string(), value);
            }
            true
        }
        _ => false,
    }
}

struct Reader<'r> {
    read: ReadConfig<'r>,
    /// Menu items that may still be read.
    items_left: usize,
}

impl Reader<'_> {
    /// Runs the top-level `statements` into `script` (`include_depth` 0 for the file itself,
    /// 1 inside a `source`d one, which does not follow further).
    fn run(
        &mut self,
        statements: &[Stmt],
        script: &mut Script,
        include_depth: usize,
    ) -> Result<(), MediaError> {
        for statement in statements {
            match statement {
                Stmt::Command(words) => {
                    let Some(words) = command_words(words, &script.vars) else {
                        continue;
                    };
                    if assign(&words, &mut script.vars) {
                        continue;
                    }
                    match (words[0].as_str(), words.get(1)) {
                        ("source", Some(path)) if include_depth == 0 => {
                            if let Some(text) = (self.read)(&resolve_path(path))? {
                                let tokens = lex(&text);
                                let statements = parse(&tokens, &mut 0, 0);
                                self.run(&statements, script, include_depth + 1)?;
                            }
                        }
                        ("configfile", Some(path)) => {
                            script.configfiles.push(resolve_path(path));
                        }
                        _ => {}
                    }
                }
                Stmt::Block(head, body) => {
                    if let Some(item) = menu_item(head, body, &script.vars, 0, &mut self.items_left)
                    {
                        script.items.push(item);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The menu item a block defines, if it is a `menuentry` or a `submenu`.
fn menu_item(
    head: &[Word],
    body: &[Stmt],
    vars: &Vars,
    depth: usize,
    items_left: &mut usize,
) -> Option<Item> {
    let kind = expand(head.first()?, vars);
    if !matches!(kind.as_str(), "menuentry" | "submenu") || *items_left == 0 {
        return None;
    }
    *items_left -= 1;
    let (title, id) = title_and_id(head, vars);
    match kind.as_str() {
        "menuentry" => Some(Item::Entry {
            title,
            id,
            body: body.to_vec(),
            vars: vars.clone(),
        }),
        "submenu" if depth < MAX_SUBMENU_DEPTH => {
            let mut vars = vars.clone();
            let mut items = Vec::new();
            for statement in body {
                match statement {
                    Stmt::Command(words) => {
                        if let Some(words) = command_words(words, &vars) {
                            assign(&words, &mut vars);
                        }
                    }
                    Stmt::Block(head, body) => {
                        items.extend(menu_item(head, body, &vars, depth + 1, items_left));
                    }
                }
            }
            Some(Item::Submenu { title, id, items })
        }
        _ => None,
    }
}

/// The `linux` and `initrd` commands of an entry.
#[derive(Debug, Default)]
struct EntryBoot {
    kernel: Option<(String, Vec<String>)>,
    initrds: Option<Vec<String>>,
}

fn entry_boot(body: &[Stmt], vars: &Vars) -> EntryBoot {
    let mut vars = vars.clone();
    let mut boot = EntryBoot::default();
    for statement in body {
        let Stmt::Command(words) = statement else {
            continue;
        };
        let Some(words) = command_words(words, &vars) else {
            continue;
        };
        if assign(&words, &mut vars) {
            continue;
        }
        match words[0].as_str() {
            "linux" | "linuxefi" | "linux16" if boot.kernel.is_none() => {
                if let Some(path) = words.get(1) {
                    boot.kernel = Some((resolve_path(path), words[2..].to_vec()));
                }
            }
            "initrd" | "initrdefi" | "initrd16" if boot.initrds.is_none() => {
                boot.initrds = Some(words[1..].iter().map(|p| resolve_path(p)).collect());
            }
            _ => {}
        }
    }
    boot
}

/// The kernel command line GRUB builds from the `linux` command's arguments (an argument with
/// white space in it quoted as a whole).
fn cmdline(args: &[String]) -> String {
    args.iter()
        .map(|arg| {
            if arg.chars().any(char::is_whitespace) {
                format!("\"{}\"", arg.replace('"', "\\\""))
            } else {
                arg.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The item `default` names among `items` (a number, a title or an `--id`; `>` descends into
/// a submenu), as the chain of items from the top.
fn by_default<'i>(items: &'i [Item], default: &str) -> Option<Vec<&'i Item>> {
    let mut chain = Vec::new();
    let mut level = items;
    for part in default.split('>') {
        let part = part.trim();
        let item = match part.parse::<usize>() {
            Ok(index) => level.get(index)?,
            Err(_) => level
                .iter()
                .find(|item| item.id() == Some(part) || item.title() == part)?,
        };
        chain.push(item);
        if let Item::Submenu { items, .. } = item {
            level = items;
        }
    }
    // A submenu named as the last part means its first entry.
    while let Some(Item::Submenu { items, .. }) = chain.last() {
        chain.push(items.first()?);
    }
    Some(chain)
}

/// The first entry (depth first) with a `linux` command.
fn first_bootable(items: &[Item]) -> Option<Vec<&Item>> {
    for item in items {
        match item {
            Item::Entry { body, vars, .. } => {
                if entry_boot(body, vars).kernel.is_some() {
                    return Some(vec![item]);
                }
            }
            Item::Submenu { items, .. } => {
                if let Some(mut chain) = first_bootable(items) {
                    chain.insert(0, item);
                    return Some(chain);
                }
            }
        }
    }
    None
}

fn describe(chain: &[&Item]) -> String {
    chain
        .iter()
        .map(|item| match item {
            Item::Entry { title, .. } => format!("menuentry '{title}'"),
            Item::Submenu { title, .. } => format!("submenu '{title}'"),
        })
        .collect::<Vec<_>>()
        .join(" > ")
}

/// What the GRUB configuration `text` (the file `path`) boots by default.
pub(super) fn choose(path: &str, text: &str, read: ReadConfig<'_>) -> Result<Parsed, MediaError> {
    let mut script = Script::default();
    let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
    for (name, value) in [
        ("root", "cd0".to_string()),
        ("prefix", format!("(cd0){dir}")),
        ("cmdpath", "(cd0)/EFI/BOOT".to_string()),
        ("grub_cpu", "arm64".to_string()),
        ("grub_platform", "efi".to_string()),
    ] {
        script.vars.insert(name.into(), value);
    }
    let mut reader = Reader {
        read,
        items_left: MAX_ITEMS,
    };
    let statements = parse(&lex(text), &mut 0, 0);
    reader.run(&statements, &mut script, 0)?;

    let mut origin = path.to_string();
    if script.items.is_empty() {
        // `configfile` replaces the menu: follow the first one on the image, one level.
        let targets = std::mem::take(&mut script.configfiles);
        for target in targets.iter().filter(|t| t.as_str() != path) {
            if let Some(text) = (reader.read)(target)? {
                let statements = parse(&lex(&text), &mut 0, 0);
                reader.run(&statements, &mut script, 1)?;
                origin = format!("{path} -> configfile {target}");
                break;
            }
        }
    }
    if script.items.is_empty() {
        return Ok(Parsed::NoEntry(format!("{origin} has no menuentry")));
    }

    let default = script
        .vars
        .get("default")
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty());
    let (chain, how) = match default
        .as_deref()
        .map(|d| (d, by_default(&script.items, d)))
    {
        Some((_, Some(chain))) => (chain, "the default"),
        Some((default, None)) => match first_bootable(&script.items) {
            Some(chain) => (chain, "the first; default '{default}' names none"),
            None => {
                return Ok(Parsed::NoEntry(format!(
                    "{origin}: default '{default}' names no entry and no entry has a linux command"
                )));
            }
        },
        None => match first_bootable(&script.items) {
            Some(chain) => (chain, "the first"),
            None => {
                return Ok(Parsed::NoEntry(format!(
                    "{origin}: no menuentry has a linux command"
                )));
            }
        },
    };
    let how = how.replace("{default}", default.as_deref().unwrap_or(""));
    let entry = format!("{origin}, {} ({how})", describe(&chain));
    let Some(Item::Entry { body, vars, .. }) = chain.last() else {
        return Ok(Parsed::NoEntry(format!("{entry} is an empty submenu")));
    };
    let boot = entry_boot(body, vars);
    let Some((kernel, args)) = boot.kernel else {
        return Ok(Parsed::NoEntry(format!("{entry} has no linux command")));
    };
    Ok(Parsed::Choice(Choice {
        config: origin,
        entry,
        kernel,
        initrds: boot.initrds.unwrap_or_default(),
        cmdline: cmdline(&args),
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
        choose("/boot/grub/grub.cfg", text, &mut read).unwrap()
    }

    fn choice(text: &str) -> Choice {
        match choose_in(text, &[]) {
            Parsed::Choice(choice) => choice,
            Parsed::NoEntry(why) => panic!("no entry: {why}"),
        }
    }

    #[test]
    fn lexing_quotes_escapes_comments_and_braces() {
        let tokens = lex("menuentry 'a b' \"c\\\"d\" e\\ f { # comment {\n}");
        let words: Vec<String> = tokens
            .iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(expand(w, &Vars::new())),
                _ => None,
            })
            .collect();
        assert_eq!(words, ["menuentry", "a b", "c\"d", "e f"]);
        assert!(tokens.contains(&Token::Open) && tokens.contains(&Token::Close));
        // A quoted brace is a word.
        assert!(!lex("'{'").contains(&Token::Open));
    }

    #[test]
    fn debian_style_first_entry() {
        let c = choice(
            "if loadfont $prefix/font.pf2 ; then\n  set gfxmode=800x600\nfi\n\
             menuentry --hotkey=i 'Install' {\n    set background_color=black\n    \
             linux    /install.a64/vmlinuz  --- quiet\n    initrd   /install.a64/initrd.gz\n}\n\
             submenu --hotkey=a 'Advanced options ...' {\n  menuentry 'Expert install' {\n    \
             linux /install.a64/vmlinuz priority=low ---\n  }\n}\n",
        );
        assert_eq!(c.kernel, "/install.a64/vmlinuz");
        assert_eq!(c.initrds, ["/install.a64/initrd.gz"]);
        assert_eq!(c.cmdline, "--- quiet");
        assert!(
            c.entry.contains("menuentry 'Install' (the first)"),
            "{}",
            c.entry
        );
    }

    #[test]
    fn default_by_number_title_id_and_submenu_path() {
        let menu = "menuentry 'A' { linux /a }\n\
                    menuentry 'B' --id bee { linux /b }\n\
                    submenu 'S' { menuentry 'S0' { linux /s0 }\n menuentry 'S1' { linux /s1 } }\n";
        for (default, kernel) in [
            ("1", "/b"),
            ("B", "/b"),
            ("bee", "/b"),
            ("\"2>1\"", "/s1"),
            ("S", "/s0"),
            ("0", "/a"),
        ] {
            let c = choice(&format!("set default={default}\n{menu}"));
            assert_eq!(c.kernel, kernel, "default {default}");
            assert!(c.entry.contains("(the default)"), "{}", c.entry);
        }
        // An unknown default falls back to the first entry, and says so.
        let c = choice(&format!("set default=saved\n{menu}"));
        assert_eq!(c.kernel, "/a");
        assert!(
            c.entry.contains("default 'saved' names none"),
            "{}",
            c.entry
        );
    }

    #[test]
    fn variables_devices_and_quoted_arguments() {
        let c = choice(
            "set base=/casper\nmenuentry \"Try\" {\n set gfxpayload=keep\n \
             linux ($root)${base}/vmlinuz boot=casper 'label=My Disk' quiet ---\n \
             initrd $base/initrd $base/extra.img\n}\n",
        );
        assert_eq!(c.kernel, "/casper/vmlinuz");
        assert_eq!(c.initrds, ["/casper/initrd", "/casper/extra.img"]);
        assert_eq!(c.cmdline, "boot=casper \"label=My Disk\" quiet ---");
    }

    #[test]
    fn entries_without_linux_are_passed_over_without_a_default() {
        let c = choice(
            "menuentry 'UEFI Firmware Settings' { fwsetup }\nmenuentry 'Linux' { linuxefi /vmlinuz ro }\n",
        );
        assert_eq!(c.kernel, "/vmlinuz");
        // But a default naming one is reported.
        let parsed = choose_in(
            "set default=0\nmenuentry 'UEFI Firmware Settings' { fwsetup }\nmenuentry 'L' { linux /v }\n",
            &[],
        );
        assert!(
            matches!(&parsed, Parsed::NoEntry(why) if why.contains("has no linux command")),
            "{parsed:?}"
        );
    }

    #[test]
    fn source_is_read_in_place_and_configfile_followed_once() {
        let parsed = choose_in(
            "source /boot/grub/menu.cfg\n",
            &[("/boot/grub/menu.cfg", "menuentry 'M' { linux /m }")],
        );
        assert!(matches!(parsed, Parsed::Choice(c) if c.kernel == "/m"));
        let parsed = choose_in(
            "search --set=root --file /.disk/info\nconfigfile ($root)/boot/grub/real.cfg\n",
            &[
                (
                    "/boot/grub/real.cfg",
                    "configfile /boot/grub/third.cfg\nmenuentry 'R' { linux /r }",
                ),
                ("/boot/grub/third.cfg", "menuentry 'T' { linux /t }"),
            ],
        );
        match parsed {
            Parsed::Choice(c) => {
                assert_eq!(c.kernel, "/r");
                assert!(c.config.contains("configfile /boot/grub/real.cfg"));
            }
            Parsed::NoEntry(why) => panic!("{why}"),
        }
        // A configfile that is not on the image, and nothing else: no entry.
        let parsed = choose_in("configfile /nowhere.cfg\n", &[]);
        assert!(matches!(parsed, Parsed::NoEntry(why) if why.contains("no menuentry")));
    }

    #[test]
    fn deep_nesting_and_unbalanced_braces_are_harmless() {
        let deep = format!(
            "{}menuentry 'x' {{ linux /x }}{}",
            "{ ".repeat(1000),
            " }".repeat(3)
        );
        let _ = choose_in(&deep, &[]);
        let _ = choose_in("} } menuentry 'y' { linux /y", &[]);
        let _ = choose_in(&"submenu s { ".repeat(100), &[]);
        let parsed = choose_in("menuentry 'y' { linux /y", &[]);
        assert!(matches!(parsed, Parsed::Choice(c) if c.kernel == "/y"));
    }
}
