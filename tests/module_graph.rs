//! The module graph of `src/` has no cycle, `store` imports neither `events` nor `api`, and no module imports `app`.
//!
//! Every `src/**/*.rs` is read (test modules and `tests.rs` or `*_tests.rs` files left out: a
//! test may reach across layers) and each
//! reference to another module (`crate::x…`, `use crate::{x, …}`, and in `src/store/`
//! `super::x…`) becomes an edge. A top-level module (`src/x.rs` or `src/x/`) is one node; each
//! file of `src/store/` is a node of its own (`store::x`, and `store` for `mod.rs`), so a cycle
//! between two store modules, or through the re-exports of `store/mod.rs`, is found too.
//! `lib.rs` and `main.rs` wire everything together and are not nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The source without comments, string and character literals (emptied) and `#[cfg(test)]`
/// modules, so only code is searched for paths.
fn code_of(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !prev_is_ident(&chars, i) {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && (chars.get(i + 2) == Some(&'\'') || (next == Some('\\'))) {
            // A character literal ('x', '\n', '\''); a lifetime has no closing quote.
            i += if next == Some('\\') { 2 } else { 1 };
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    without_test_modules(&out)
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// Drops every `#[cfg(test)] mod name { … }` (braces balance once literals are emptied).
fn without_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = ["mod ", "pub mod ", "pub(crate) mod "].iter().any(|p| trimmed.starts_with(p));
        match (is_mod, after.find('{')) {
            (true, Some(open)) => {
                let mut depth = 0;
                let mut end = after.len();
                for (k, ch) in after[open..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// The identifiers that start each element of a `{ … }` group at its top level.
fn group_heads(group: &str) -> Vec<Vec<String>> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for ch in group.chars() {
        match ch {
            '{' => {
                depth += 1;
                current.push(ch);
            }
            '}' => {
                depth -= 1;
                current.push(ch);
            }
            ',' if depth == 0 => heads.push(std::mem::take(&mut current)),
            _ => current.push(ch),
        }
    }
    heads.push(current);
    heads.iter().map(|element| path_segments(element.trim())).filter(|segments| !segments.is_empty()).collect()
}

/// The leading `a::b::…` segments of a path (stops at a group, a glob or anything else).
fn path_segments(text: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut rest = text;
    loop {
        let ident: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if ident.is_empty() {
            break;
        }
        rest = &rest[ident.len()..];
        segments.push(ident);
        match rest.trim_start().strip_prefix("::") {
            Some(more) => rest = more.trim_start(),
            None => break,
        }
    }
    segments
}

/// Every path following `prefix::` in `code`: its segments, one entry per element of a group.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let needle = format!("{prefix}::");
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(&needle) {
        let start = from + at;
        from = start + needle.len();
        if code[..start].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = code[from..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, ch)| {
                    depth += match ch {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(k, _)| k);
            found.extend(group_heads(&group[..end]));
        } else {
            found.push(path_segments(rest));
        }
    }
    found
}

/// The module graph of the files given as (path relative to `src/`, source).
fn module_graph(files: &[(String, String)]) -> Graph {
    let top_level: BTreeSet<String> = files
        .iter()
        .map(|(path, _)| path.split('/').next().unwrap_or_default().trim_end_matches(".rs").to_owned())
        .filter(|name| name != "lib" && name != "main")
        .collect();
    let store_modules: BTreeSet<String> = files
        .iter()
        .filter_map(|(path, _)| path.strip_prefix("store/"))
        .map(|file| file.trim_end_matches(".rs").to_owned())
        .filter(|name| name != "mod" && !name.contains('/'))
        .collect();
    let store_node = |segment: Option<&String>| match segment {
        Some(sub) if store_modules.contains(sub) => format!("store::{sub}"),
        _ => "store".to_owned(),
    };
    let mut graph = Graph::new();
    for (path, source) in files {
        let top = path.split('/').next().unwrap_or_default().trim_end_matches(".rs");
        if top == "lib" || top == "main" || path.ends_with("/tests.rs") || path.ends_with("_tests.rs") {
            continue;
        }
        // A file of `store/` is its own node; `store/writer/x.rs` belongs to `store::writer`.
        let node = match path.strip_prefix("store/") {
            Some("mod.rs") => "store".to_owned(),
            Some(file) => format!("store::{}", file.split('/').next().unwrap_or(file).trim_end_matches(".rs")),
            None => top.to_owned(),
        };
        let code = code_of(source);
        let mut targets = BTreeSet::new();
        for prefix in ["crate", "tether"] {
            for segments in paths_after(&code, prefix) {
                match segments.first() {
                    Some(first) if first == "store" => {
                        targets.insert(store_node(segments.get(1)));
                    }
                    Some(first) if top_level.contains(first) => {
                        targets.insert(first.clone());
                    }
                    _ => {}
                }
            }
        }
        if node == "store" {
            // `store/mod.rs` names its modules by relative path (`pub use tx::Tx`).
            for sub in &store_modules {
                if !paths_after(&code, sub).is_empty() {
                    targets.insert(format!("store::{sub}"));
                }
            }
        } else if node.starts_with("store::") {
            for segments in paths_after(&code, "super") {
                targets.insert(store_node(segments.first()));
            }
        }
        targets.remove(&node);
        graph.entry(node).or_default().extend(targets);
    }
    graph
}

/// One cycle of `graph`, as the nodes along it, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        graph: &Graph,
        node: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[from..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph.keys().find_map(|node| visit(graph, node, &mut marks, &mut Vec::new()))
}

/// The graph of top-level modules: every `store::x` node is `store`.
fn top_level(graph: &Graph) -> Graph {
    let top = |node: &str| node.split("::").next().unwrap_or(node).to_owned();
    let mut collapsed = Graph::new();
    for (node, targets) in graph {
        let from = top(node);
        let to: BTreeSet<String> = targets.iter().map(|t| top(t)).filter(|t| *t != from).collect();
        collapsed.entry(from).or_default().extend(to);
    }
    collapsed
}

/// The graph among `store` and its modules only.
fn within_store(graph: &Graph) -> Graph {
    let in_store = |node: &str| node == "store" || node.starts_with("store::");
    graph
        .iter()
        .filter(|(node, _)| in_store(node))
        .map(|(node, targets)| (node.clone(), targets.iter().filter(|t| in_store(t)).cloned().collect()))
        .collect()
}

/// What is wrong with the graph: cycles, store modules that import `events` or `api`, and any
/// module that imports `app` (it builds the service from every part and hands each part what it
/// uses; a part reaching back for the whole would be the bag of services again).
fn problems(graph: &Graph) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(cycle) = find_cycle(&top_level(graph)) {
        found.push(format!("a cycle between top-level modules: {}", cycle.join(" -> ")));
    }
    if let Some(cycle) = find_cycle(&within_store(graph)) {
        found.push(format!("a cycle between store modules: {}", cycle.join(" -> ")));
    }
    for (node, targets) in graph.iter().filter(|(node, _)| node.starts_with("store")) {
        for layer in ["events", "api"] {
            if targets.contains(layer) {
                found.push(format!("{node} imports {layer}"));
            }
        }
    }
    for (node, targets) in graph.iter().filter(|(node, _)| node.as_str() != "app") {
        if targets.contains("app") {
            found.push(format!("{node} imports app"));
        }
    }
    found
}

#[test]
fn the_check_reports_a_part_importing_the_application() {
    let found = problems(&module_graph(&tree(&[
        ("app.rs", "use crate::api::Context;\n"),
        ("api/mod.rs", "fn f(s: &crate::app::Services) {}\n"),
    ])));
    assert!(found.iter().any(|p| p == "api imports app"), "{found:?}");
}

fn read_tree(dir: &Path, root: &Path, files: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            read_tree(&path, root, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).expect("under src").to_string_lossy().replace('\\', "/");
            files.push((relative, std::fs::read_to_string(&path).expect("read a source file")));
        }
    }
}

#[test]
fn modules_import_each_other_without_a_cycle_store_imports_neither_events_nor_api_and_none_imports_app() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_tree(&src, &src, &mut files);
    let graph = module_graph(&files);
    assert!(graph.contains_key("store::tx") && graph.contains_key("ops"), "the scan found the modules: {graph:?}");
    assert!(graph["ops"].contains("store"), "the scan finds imports: {:?}", graph["ops"]);
    let found = problems(&graph);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

fn tree(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files.iter().map(|(path, source)| (path.to_string(), source.to_string())).collect()
}

#[test]
fn the_check_reports_a_cycle_between_store_modules_and_through_store_reexports() {
    let between_modules = tree(&[
        ("store/mod.rs", "pub mod a;\npub mod b;\n"),
        ("store/a.rs", "use super::b::Thing;\n"),
        ("store/b.rs", "use super::{db::x, a::Other};\n"),
        ("store/db.rs", ""),
    ]);
    let found = problems(&module_graph(&between_modules));
    assert!(found.iter().any(|p| p.contains("store::a -> store::b -> store::a")), "{found:?}");

    let through_reexport = tree(&[
        ("store/mod.rs", "pub mod a;\npub use a::Tx;\npub fn db_error() {}\n"),
        ("store/a.rs", "use super::db_error;\n"),
    ]);
    let found = problems(&module_graph(&through_reexport));
    assert!(found.iter().any(|p| p.contains("cycle between store modules")), "{found:?}");
}

#[test]
fn the_check_reports_a_top_level_cycle_and_store_importing_events_but_not_test_code_or_comments() {
    let files = tree(&[
        ("store/mod.rs", "pub mod webhooks;\n"),
        ("store/webhooks.rs", "fn f(a: &crate::events::webhooks::Attempt) {}\n"),
        ("events/webhooks.rs", "use crate::{domain::Result, store::webhooks};\n"),
        ("domain/mod.rs", ""),
    ]);
    let found = problems(&module_graph(&files));
    assert!(found.iter().any(|p| p.contains("store -> events -> store") || p.contains("events -> store -> events")));
    assert!(found.iter().any(|p| p == "store::webhooks imports events"), "{found:?}");

    let harmless = tree(&[
        ("store/mod.rs", "pub mod webhooks;\n"),
        (
            "store/webhooks.rs",
            "// see crate::events::webhooks\nconst S: &str = \"crate::api\";\n\
             #[cfg(test)]\nmod tests { use crate::events::x; fn f() { let s = \"}\"; } }\n",
        ),
        ("events/webhooks.rs", "use crate::store::webhooks;\n"),
        // A test file of a store module may reach across layers, as a `tests.rs` may.
        ("store/writer/pg_tests.rs", "use crate::store::db::db_error;\nuse crate::events::x;\n"),
        ("store/writer.rs", ""),
    ]);
    let found = problems(&module_graph(&harmless));
    assert!(found.is_empty(), "{found:?}");
}
