//! The layers of `src/` are kept by the gate, not by memory: each folder is a layer, and a
//! layer imports only the layers below it (`src/lib.rs` lists them). The pure core never
//! touches `redis_module`. No server is needed: this reads the sources.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, lowest first.
const LAYERS: [&str; 6] = [
    "core",
    "support",
    "settings",
    "exporter",
    "projector",
    "server",
];

/// Files of `src/` that belong to no layer: the table of contents and the property tests.
const OUTSIDE: [&str; 2] = ["lib.rs", "proptests.rs"];

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src/ is readable") {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its comments (a `//` to the end of the line), so that prose
/// may name any layer.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The layers a file's code names as `crate::<layer>`.
fn layers_used(code: &str) -> Vec<String> {
    let mut used = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        used.push(name);
    }
    used
}

/// Each file's layer: the folder under `src/` it sits in.
fn files_by_layer() -> BTreeMap<PathBuf, String> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files
        .into_iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(src()).expect("under src/").to_path_buf();
            let mut parts = rel.components();
            let first = parts.next()?.as_os_str().to_string_lossy().to_string();
            if parts.next().is_none() {
                assert!(
                    OUTSIDE.contains(&first.as_str()),
                    "src/{first} belongs to no layer: put it in one of {LAYERS:?}"
                );
                return None;
            }
            assert!(
                rank(&first).is_some(),
                "src/{first}/ is not a layer of {LAYERS:?} (add it to src/lib.rs and here)"
            );
            Some((rel, first))
        })
        .collect()
}

#[test]
fn imports_run_downward_only() {
    let files = files_by_layer();
    assert!(files.len() > 20, "the layer folders hold the sources");
    let mut wrong = Vec::new();
    for (rel, layer) in &files {
        let text = std::fs::read_to_string(src().join(rel)).expect("a source file");
        let own = rank(layer).unwrap_or(usize::MAX);
        for used in layers_used(&code_of(&text)) {
            match rank(&used) {
                Some(r) if r <= own => {}
                Some(_) => wrong.push(format!("src/{} ({layer}) imports {used}", rel.display())),
                None => wrong.push(format!(
                    "src/{} names crate::{used}, which is no layer",
                    rel.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports must run downward:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_core_is_pure() {
    for (rel, layer) in files_by_layer() {
        if layer != "core" {
            continue;
        }
        let text = std::fs::read_to_string(src().join(&rel)).expect("a source file");
        assert!(
            !code_of(&text).contains("redis_module"),
            "src/{} is in the pure core but uses redis_module",
            rel.display()
        );
    }
}

#[test]
fn each_layer_says_what_it_may_import() {
    for layer in LAYERS {
        let m = src().join(layer).join("mod.rs");
        let text =
            std::fs::read_to_string(&m).unwrap_or_else(|_| panic!("{} is missing", m.display()));
        assert!(
            text.starts_with("//!") && text.contains("May import"),
            "{} must open with what the layer does and what it may import",
            m.display()
        );
    }
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("src/lib.rs");
    for layer in LAYERS {
        assert!(
            lib.contains(&format!("pub mod {layer};")),
            "src/lib.rs declares {layer}"
        );
    }
}

/// The check itself can fail: an upward import is caught.
#[test]
fn an_upward_import_is_caught() {
    let code = code_of("use crate::server::events; // crate::core is fine in a comment");
    assert_eq!(layers_used(&code), vec!["server".to_string()]);
    assert!(rank("server") > rank("core"));
}
