//! The kernel crate's modules form a tree: no top-level module of `hypervisor/kernel` may
//! reach, directly or through others, a module that reaches it back (docs/architecture.md,
//! "Kernel"). Checked from the source text: every `crate::<module>` path (in `use` lines,
//! grouped `use crate::{a, b}` and inline paths) is an edge from the file's top-level module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use regex::Regex;

/// Top-level module -> the top-level modules it names.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The import graph of the crate whose `src/` is `src`.
pub fn import_graph(src: &Path) -> std::io::Result<Graph> {
    let mut graph = Graph::new();
    for entry in std::fs::read_dir(src)? {
        let path = entry?.path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if name == "lib" || name == "main" {
            continue;
        }
        let mut text = String::new();
        read_all(&path, &mut text)?;
        graph.insert(name, names_used(&text));
    }
    for (module, uses) in graph.iter_mut() {
        uses.remove(module);
    }
    Ok(graph)
}

/// Appends every `.rs` file at or under `path` to `text`.
fn read_all(path: &Path, text: &mut String) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for entry in entries {
            read_all(&entry, text)?;
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        text.push_str(&std::fs::read_to_string(path)?);
        text.push('\n');
    }
    Ok(())
}

/// The top-level modules `text` names through `crate::`.
pub fn names_used(text: &str) -> BTreeSet<String> {
    let single = Regex::new(r"\bcrate::([a-z_][a-z0-9_]*)").expect("valid regex");
    let group = Regex::new(r"\bcrate::\{([^}]*)\}").expect("valid regex");
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names: BTreeSet<String> = single
        .captures_iter(&code)
        .map(|c| c[1].to_owned())
        .collect();
    for c in group.captures_iter(&code) {
        for item in c[1].split(',') {
            // `a`, `a::B`, `a as b`: the module is the first identifier.
            let first = item
                .trim()
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("");
            if !first.is_empty() {
                names.insert(first.to_owned());
            }
        }
    }
    names
}

/// A cycle of `graph`, if it has one (the modules in order, the first repeated at the end).
pub fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if graph.contains_key(next)
                && let Some(cycle) = visit(next, graph, path, done)
            {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_has_no_import_circle() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hypervisor/kernel/src");
        let graph = import_graph(&src).expect("kernel sources readable");
        assert!(graph.len() >= 10, "too few modules found: {graph:?}");
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "hypervisor/kernel imports in a circle: {}",
                cycle.join(" -> ")
            );
        }
        // The console sink is a leaf every module may use.
        assert_eq!(graph["output"], BTreeSet::new());
    }

    #[test]
    fn reads_every_form_of_crate_path() {
        let text = "use crate::slice::Slice;\nuse crate::{irq, output as out, vcpu::Vcpu};\n\
                    fn f() { crate::node::get(); }\n// crate::commented_out\n";
        let names: Vec<String> = names_used(text).into_iter().collect();
        assert_eq!(names, ["irq", "node", "output", "slice", "vcpu"]);
    }

    #[test]
    fn finds_a_cycle() {
        let mut graph = Graph::new();
        graph.insert("a".into(), ["b".into()].into());
        graph.insert("b".into(), ["c".into()].into());
        graph.insert("c".into(), ["a".into()].into());
        assert_eq!(
            find_cycle(&graph),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        graph.insert("c".into(), BTreeSet::new());
        assert_eq!(find_cycle(&graph), None);
    }
}
