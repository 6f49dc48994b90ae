//! The application's module graph has one direction: each layer uses only the layers before it
//! ([`ALLOWED`]), and no module reaches itself again through any chain of uses (no circle, not
//! even inside a layer). Read from the sources, so a new `use` that breaks either fails here.
//!
//! Edges: `crate::…` and `super::…` paths (in `use` lines and in code, test modules included),
//! and `mod x;` declarations (a parent uses the children it declares). A path names the longest
//! module it starts with. Comment lines are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module (layer) and the layers it may use besides itself.
const ALLOWED: &[(&str, &[&str])] = &[
    ("architecture", &[]),
    ("domain", &[]),
    ("telemetry", &[]),
    ("configuration", &["domain"]),
    ("db", &["domain"]),
    ("stores", &["domain", "configuration"]),
    ("services", &["domain", "db", "stores"]),
    (
        "web",
        &["domain", "configuration", "db", "stores", "services"],
    ),
    (
        "analytics",
        &["domain", "configuration", "db", "stores", "services", "web"],
    ),
    (
        "startup",
        &[
            "domain",
            "configuration",
            "db",
            "stores",
            "services",
            "web",
            "analytics",
            "telemetry",
        ],
    ),
    (
        "cli",
        &[
            "domain",
            "configuration",
            "db",
            "stores",
            "services",
            "web",
            "startup",
        ],
    ),
];

/// Every module of the library (`a::b`) and its source, read from `src/`.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                let mut p = prefix.to_vec();
                p.push(name);
                walk(&path, &p, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut p = prefix.to_vec();
                match name.as_str() {
                    "lib" | "main" if prefix.is_empty() => continue,
                    "mod" => {}
                    _ => p.push(name),
                }
                let src = std::fs::read_to_string(&path).expect("read a source file");
                out.insert(p.join("::"), src);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut out,
    );
    out
}

/// The paths a `{…}` group (or a single path) lists, each as its segments, after `prefix`.
fn group_paths(s: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix('{') {
        let inner = inner.strip_suffix('}').unwrap_or(inner);
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    group_paths(&inner[start..i], prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        group_paths(&inner[start..], prefix, out);
        return;
    }
    let mut path = prefix.to_vec();
    let mut rest = s;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        path.push(rest[..end].to_owned());
        rest = &rest[end..];
        match rest.strip_prefix("::") {
            Some(r) if r.starts_with('{') => {
                let close = matching_brace(r);
                group_paths(&r[..close], &path, out);
                return;
            }
            Some(r) => rest = r,
            None => break,
        }
    }
    if path.len() > prefix.len() {
        out.push(path);
    }
}

/// The length of the `{…}` group that `s` starts with.
fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// The length of the path `s` starts with (segments, `::`, and a final `{…}` group).
fn path_extent(s: &str) -> usize {
    for (i, c) in s.char_indices() {
        if c == '{' {
            return i + matching_brace(&s[i..]);
        }
        if !(c.is_alphanumeric() || c == '_' || c == ':') {
            return i;
        }
    }
    s.len()
}

/// The modules `module` (source `src`) uses, among `known`.
fn uses(module: &str, src: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let code: String = src
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    let segments: Vec<String> = module.split("::").map(str::to_owned).collect();
    let mut paths = Vec::new();
    for (marker, base) in [
        ("crate::", Vec::new()),
        ("super::", segments[..segments.len() - 1].to_vec()),
    ] {
        for (i, _) in code.match_indices(marker) {
            // `$crate::` (macros) is `crate::`; `ratatoskr_core::` and the like are not.
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &code[i + marker.len()..];
            let mut one = Vec::new();
            group_paths(&rest[..path_extent(rest)], &base, &mut one);
            paths.extend(one);
        }
    }
    // `mod x;` declares (and is used by) its parent.
    for line in code.lines() {
        let t = line.trim();
        let decl = t
            .strip_prefix("pub mod ")
            .or_else(|| t.strip_prefix("mod "))
            .and_then(|r| r.strip_suffix(';'));
        if let Some(child) = decl {
            let mut p = segments.clone();
            if module.is_empty() {
                p.clear();
            }
            p.push(child.to_owned());
            paths.push(p);
        }
    }
    let mut out = BTreeSet::new();
    for p in paths {
        let target = (1..=p.len())
            .rev()
            .map(|n| p[..n].join("::"))
            .find(|m| known.contains(m));
        if let Some(t) = target
            && t != module
        {
            out.insert(t);
        }
    }
    out
}

/// The whole graph: module → the modules it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(m, src)| (m.clone(), uses(m, src, &known)))
        .collect()
}

fn layer(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn every_module_uses_only_the_layers_before_its_own() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (from, tos) in graph() {
        let Some(may) = allowed.get(layer(&from)) else {
            wrong.push(format!("{from}: its layer is not in ALLOWED"));
            continue;
        };
        for to in tos {
            if layer(&to) != layer(&from) && !may.contains(&layer(&to)) {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "uses against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_module_reaches_itself_through_its_uses() {
    let graph = graph();
    // Depth-first search for a back edge; report the circle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut circle = stack[i..].to_vec();
            circle.push(m.to_owned());
            return Some(circle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(circle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!("an import circle: {}", circle.join(" -> "));
        }
    }
}

/// Names that only some layers may mention: HTTP (the web framework and its status codes) stays
/// in the web layer and above, the database driver out of the domain, and Redis in [`stores`]
/// (one place to wire a Redis topology).
///
/// [`stores`]: crate::stores
const CONFINED: &[(&str, &[&str])] = &[
    ("axum::", &["web", "startup", "analytics", "cli"]),
    ("StatusCode", &["web", "startup", "analytics", "cli"]),
    ("ratatoskr_redis", &["stores"]),
    // `telemetry` names it in the default log filter.
    (
        "sqlx",
        &[
            "db",
            "stores",
            "services",
            "web",
            "startup",
            "analytics",
            "cli",
            "telemetry",
        ],
    ),
];

#[test]
fn http_redis_and_sql_stay_in_their_layers() {
    let mut wrong = Vec::new();
    for (module, src) in modules() {
        if module == "architecture" {
            continue;
        }
        for (name, layers) in CONFINED {
            let mentions = src
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| {
                    l.match_indices(name).any(|(i, _)| {
                        // `ratatoskr_axum::` is the session library, not the web framework.
                        let before = l[..i].chars().next_back();
                        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    })
                });
            if mentions && !layers.contains(&layer(&module)) {
                wrong.push(format!("{module} mentions {name}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_reader_sees_grouped_nested_and_relative_paths() {
    let known: BTreeSet<String> = ["a", "a::b", "c", "c::d", "e", "f"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let src = "use crate::{a::b::Thing, c::{d::X, Y}};\n\
               use crate::a::{b::Z, W};\n\
               // use crate::f::Commented;\n\
               fn f() { crate::e::g(); super::b::h(); }\n\
               mod d;\n";
    let found = uses("c", src, &known);
    // `a::W` is an item of `a`; `f` is only in a comment.
    let expected: BTreeSet<String> = ["a", "a::b", "c::d", "e"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, expected);
    // `super::` from `a::b` is `a`.
    let found = uses("a::b", "use super::Z;", &known);
    assert_eq!(found, ["a".to_string()].into_iter().collect());
}

/// `cargo test -p ratatoskr-app --lib architecture::print_the_module_graph -- --ignored
/// --nocapture` prints the graph (which module uses which).
#[test]
#[ignore = "prints the module graph; run by hand"]
fn print_the_module_graph() {
    for (from, tos) in graph() {
        let tos: Vec<_> = tos.into_iter().collect();
        println!("{from} -> {}", tos.join(", "));
    }
}
