//! The shape of the code, checked over its sources so that it stays as the README describes it:
//! no import loops between modules (siblings or areas), each of the orders', payments' and jobs'
//! tables written only by the area that owns it, and the wall clock read only in `clock.rs`.
//! These read `src/` as text; they run no code of the app.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module of the crate: its path below `crate` (`["payments", "gateway", "sim"]`) and its
/// source with comments and unit tests left out.
struct Module {
    path: Vec<String>,
    file: String,
    code: String,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code a reader of the module's behaviour sees: no comments, no `#[cfg(test)]` tail.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") {
                ""
            } else {
                // A trailing comment; `://` inside a URL string is not one.
                match line.match_indices("//").find(|(i, _)| *i == 0 || &line[i - 1..*i] != ":") {
                    Some((i, _)) => &line[..i],
                    None => line,
                }
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn modules() -> Vec<Module> {
    let root = src();
    let mut all = Vec::new();
    files(&root, &mut all);
    all.sort();
    all.into_iter()
        .filter_map(|file| {
            let rel = file.strip_prefix(&root).expect("under src/").to_string_lossy().replace('\\', "/");
            // The binary is a client of the library (`agora::…`), not a module of it.
            if rel == "main.rs" {
                return None;
            }
            let mut path: Vec<String> = rel.trim_end_matches(".rs").split('/').map(str::to_string).collect();
            if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
                path.pop();
            }
            let text = std::fs::read_to_string(&file).expect("a source file is readable");
            Some(Module { path, file: rel, code: code_of(&text) })
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Splits `a, b::{c, d}, e` at the commas outside braces.
fn split_top(group: &str) -> Vec<&str> {
    let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&group[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

/// The paths a use-tree (or an inline path) starting at `text` names, each prefixed by `prefix`.
fn paths_from(prefix: &[String], text: &str, out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    let mut rest = text.trim_start();
    loop {
        let ident: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if ident.is_empty() {
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 1;
                let end = group
                    .char_indices()
                    .find(|(_, c)| {
                        match c {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .map_or(group.len(), |(i, _)| i);
                for part in split_top(&group[..end]) {
                    if part == "self" {
                        out.push(path.clone());
                    } else {
                        paths_from(&path, part, out);
                    }
                }
                return;
            }
            break;
        }
        path.push(ident.clone());
        rest = &rest[ident.len()..];
        match rest.strip_prefix("::") {
            Some(after) => rest = after.trim_start(),
            None => break,
        }
    }
    if path.len() > prefix.len() {
        out.push(path);
    }
}

/// Every module path a module names through `crate::`, `super::` or `self::`.
fn references(module: &Module) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let code = &module.code;
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        paths_from(&[], &code[at + "crate::".len()..], &mut out);
    }
    for (at, _) in code.match_indices("super::") {
        if at > 0 && code[..at].chars().next_back().is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        let mut base = module.path.clone();
        let mut rest = &code[at..];
        while let Some(after) = rest.strip_prefix("super::") {
            base.pop();
            rest = after;
        }
        paths_from(&base, rest, &mut out);
    }
    out
}

/// The module a path lands in: its longest prefix that is a module.
fn resolve(path: &[String], known: &BTreeSet<Vec<String>>) -> Vec<String> {
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| known.contains(p)).unwrap_or_default()
}

/// Edges between modules that are not ancestor and descendant, lifted to the children of their
/// nearest common ancestor: `payments::gateway::sim → payments::refunds` is the sibling edge
/// `gateway → refunds`, `jobs::routes → payments::repo` the area edge `jobs → payments`.
fn lifted_edges() -> BTreeMap<(Vec<String>, Vec<String>), String> {
    let modules = modules();
    let known: BTreeSet<Vec<String>> = modules.iter().map(|m| m.path.clone()).collect();
    let mut edges = BTreeMap::new();
    for module in &modules {
        for reference in references(module) {
            let target = resolve(&reference, &known);
            let common = module.path.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == module.path.len() || common == target.len() {
                continue;
            }
            let edge = (module.path[..=common].to_vec(), target[..=common].to_vec());
            edges.entry(edge).or_insert_with(|| format!("{} names crate::{}", module.file, reference.join("::")));
        }
    }
    edges
}

/// The strongly connected groups of more than one module (Tarjan's algorithm, small graphs).
fn cycles(edges: &BTreeMap<(Vec<String>, Vec<String>), String>) -> Vec<Vec<Vec<String>>> {
    let nodes: BTreeSet<&Vec<String>> = edges.keys().flat_map(|(a, b)| [a, b]).collect();
    let reaches = |from: &Vec<String>| -> BTreeSet<Vec<String>> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(node) = stack.pop() {
            for ((a, b), _) in edges.iter() {
                if a == &node && seen.insert(b.clone()) {
                    stack.push(b.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> = nodes.iter().map(|n| (*n, reaches(n))).collect();
    let mut groups: BTreeSet<Vec<Vec<String>>> = BTreeSet::new();
    for node in &nodes {
        let group: Vec<Vec<String>> = nodes
            .iter()
            .filter(|other| reach[node].contains(**other) && reach[**other].contains(*node))
            .map(|n| (*n).clone())
            .collect();
        if group.len() > 1 {
            groups.insert(group);
        }
    }
    groups.into_iter().collect()
}

#[test]
fn no_module_imports_its_way_back_to_itself() {
    let edges = lifted_edges();
    let loops = cycles(&edges);
    let described: Vec<String> = loops
        .iter()
        .map(|group| {
            let witnesses: Vec<&String> =
                edges.iter().filter(|((a, b), _)| group.contains(a) && group.contains(b)).map(|(_, why)| why).collect();
            format!("{:?}: {:?}", group.iter().map(|p| p.join("::")).collect::<Vec<_>>(), witnesses)
        })
        .collect();
    assert!(described.is_empty(), "import loops:\n{}", described.join("\n"));
}

#[test]
fn the_loop_finder_sees_a_loop_between_siblings_and_between_areas() {
    let path = |s: &str| s.split("::").map(str::to_string).collect::<Vec<_>>();
    let mut edges = BTreeMap::new();
    edges.insert((path("payments::gateway"), path("payments::http_gateway")), String::new());
    edges.insert((path("payments::http_gateway"), path("payments::gateway")), String::new());
    edges.insert((path("jobs"), path("payments")), String::new());
    assert_eq!(cycles(&edges), vec![vec![path("payments::gateway"), path("payments::http_gateway")]]);
    edges.insert((path("payments"), path("jobs")), String::new());
    assert_eq!(cycles(&edges).len(), 2);
}

#[test]
fn plumbing_and_the_jobs_queue_import_no_area_above_them() {
    let edges = lifted_edges();
    let plumbing = ["config", "db", "cache", "clock", "web", "metrics", "schema"];
    let forbidden: Vec<&String> = edges
        .iter()
        .filter(|((from, to), _)| from.len() == 1 && to.len() == 1)
        .filter(|((from, to), _)| {
            let (from, to) = (from[0].as_str(), to[0].as_str());
            (plumbing.contains(&from) && !plumbing.contains(&to))
                || (from == "jobs" && !plumbing.contains(&to) && to != "auth")
                || (from == "payments" && ["orders", "merchants", "threads", "chat"].contains(&to))
        })
        .map(|(_, why)| why)
        .collect();
    assert!(forbidden.is_empty(), "imports against the layering: {forbidden:?}");
}

/// Which area owns which table, for the tables whose rows carry money or work. They are written
/// only inside these three areas: each writes its own, and the pipeline (`orders`) writes an
/// order, its payment and its charge job together where one statement must make all three (the
/// API's group commit).
const OWNED: &[(&str, &[&str])] = &[
    ("orders", &["orders", "order_items", "products"]),
    ("payments", &["payments", "payment_events", "refunds", "customer_balances", "balance_transactions", "circuit_breakers"]),
    ("jobs", &["jobs", "periodic_runs"]),
];

/// `(table, line)` for each write a module makes: diesel's `insert_into(t::table)`,
/// `update(t::table…)`, `delete(t::table…)` (through any `use … as` alias of the schema's
/// table) and SQL's `INSERT INTO t`, `UPDATE t`, `DELETE FROM t`.
fn writes(module: &Module) -> Vec<(String, usize)> {
    let code = &module.code;
    let mut aliases: BTreeMap<String, String> = BTreeMap::new();
    for (at, _) in code.match_indices("crate::schema::") {
        let tail: String = code[at + "crate::schema::".len()..].chars().take_while(|c| *c != ';').collect();
        for text in tail.replace(['{', '}'], ",").split(',') {
            let mut parts = text.split(" as ");
            if let (Some(table), Some(alias)) = (parts.next(), parts.next()) {
                aliases.insert(alias.trim().to_string(), table.trim().to_string());
            }
        }
    }
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    for call in ["insert_into(", "update(", "delete("] {
        for (at, _) in code.match_indices(call) {
            let rest = code[at + call.len()..].trim_start();
            let ident: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            if rest[ident.len()..].starts_with("::table") {
                found.push((aliases.get(&ident).cloned().unwrap_or(ident), line_of(at)));
            }
        }
    }
    for verb in ["INSERT INTO ", "UPDATE ", "DELETE FROM "] {
        for (at, _) in code.match_indices(verb) {
            let table: String = code[at + verb.len()..].chars().take_while(|c| is_ident(*c)).collect();
            found.push((table, line_of(at)));
        }
    }
    found
}

#[test]
fn the_tables_of_orders_payments_and_jobs_are_written_only_inside_those_areas() {
    let mut strangers = Vec::new();
    for module in modules() {
        let area = module.path.first().map(String::as_str).unwrap_or("");
        for (table, line) in writes(&module) {
            if let Some((owner, _)) = OWNED.iter().find(|(_, tables)| tables.contains(&table.as_str())) {
                if !OWNED.iter().any(|(writer, _)| *writer == area) {
                    strangers.push(format!("{}:{line} writes {table}, which {owner} owns", module.file));
                }
            }
        }
    }
    assert!(strangers.is_empty(), "{}", strangers.join("\n"));
}

#[test]
fn the_table_check_sees_sql_and_diesel_writes_through_aliases() {
    let module = Module {
        path: vec!["x".into()],
        file: "x.rs".into(),
        code: code_of("use crate::schema::{payments as p, jobs};\nfn f() { diesel::update(p::table.find(1)); }\n// UPDATE orders\nconst Q: &str = \"INSERT INTO jobs (a) VALUES (1)\";"),
    };
    assert_eq!(writes(&module), vec![("payments".to_string(), 2), ("jobs".to_string(), 4)]);
}

#[test]
fn only_the_clock_reads_the_wall_clock() {
    let mut readers = Vec::new();
    for module in modules() {
        if module.file == "clock.rs" {
            continue;
        }
        for call in ["Utc::now(", "SystemTime::now(", "Local::now("] {
            for (at, _) in module.code.match_indices(call) {
                readers.push(format!("{}:{}", module.file, module.code[..at].matches('\n').count() + 1));
            }
        }
    }
    assert!(readers.is_empty(), "the wall clock is read outside clock.rs (inject a Clock): {readers:?}");
}

#[test]
fn the_merchants_area_has_its_name_and_a_service_layer() {
    assert!(!src().join("dashboard").exists(), "src/dashboard/ is now src/merchants/");
    assert!(src().join("merchants/service.rs").is_file(), "the operations both faces share live in merchants/service.rs");
}

#[test]
fn the_dashboards_pages_and_the_api_meet_only_in_the_service() {
    let edges = lifted_edges();
    let path = |s: &str| s.split("::").map(str::to_string).collect::<Vec<_>>();
    let crossing: Vec<&String> = edges
        .iter()
        .filter(|((from, to), _)| {
            (from == &path("merchants::pages") && to == &path("merchants::api"))
                || (from == &path("merchants::api") && to == &path("merchants::pages"))
        })
        .map(|(_, why)| why)
        .collect();
    assert!(crossing.is_empty(), "the pages and the API call merchants::service, not each other: {crossing:?}");
}
