//! Tidy: walks every `*.rs` file of the workspace and enforces the project's textual bans (file
//! header, line width, leftover debugging macros, wall clocks, unseeded randomness, direct file
//! system access, hash-ordered collections and unbiased `select!` in the cores).
//! It only reads files; it never edits them. Its own pattern strings are built with `concat!` so
//! that this file does not trip the rules it enforces.

use std::path::{Path, PathBuf};

/// Widest line allowed, in characters.
const LINE_COLUMNS_MAX: usize = 100;
/// Deepest directory nesting the walker follows (guards against symlink loops).
const WALK_DEPTH_MAX: usize = 32;
/// Directory names never walked: build output, VCS data, client installs.
const SKIPPED_DIRS: &[&str] = &["target", "node_modules", "__pycache__"];

/// Source trees whose code runs inside the simulator and must stay deterministic.
const CORE_DIRS: &[&str] = &[
    "broker/src/",
    "storage/src/",
    "net/src/",
    "raft/src/",
    "cluster/src/",
];
/// Trees where every `select!` must start with `biased;` (the cores plus the simulator).
const SELECT_DIRS: &[&str] = &[
    "broker/src/",
    "storage/src/",
    "net/src/",
    "raft/src/",
    "cluster/src/",
    "sim/src/",
    "scenarios/src/",
];
/// The only file allowed to read the wall clock.
const CLOCK_FILE: &str = "net/src/clock.rs";
/// The only file allowed to touch the real file system.
const REAL_DISK_FILE: &str = "storage/src/disk/real.rs";

/// Banned everywhere in the workspace.
const BANNED_EVERYWHERE: &[(&str, &str)] = &[
    (concat!("to", "do!("), "leftover placeholder"),
    (concat!("unimple", "mented!("), "leftover placeholder"),
    (concat!("db", "g!("), "leftover debug print"),
    (
        concat!("#[ig", "nore"),
        "ignored test: fix it or assert today's behaviour",
    ),
    (
        concat!("#[should", "_panic"),
        "should-panic test: assert an error value instead",
    ),
];

/// Banned in the cores, with the one file (if any) that is allowed to use the pattern.
const BANNED_IN_CORES: &[(&str, &str, Option<&str>)] = &[
    (
        concat!("Instant", "::now"),
        "wall clock: use the Clock trait",
        Some(CLOCK_FILE),
    ),
    (
        concat!("SystemTime", "::now"),
        "wall clock: use the Clock trait",
        Some(CLOCK_FILE),
    ),
    (
        concat!("thread", "_rng"),
        "unseeded randomness: derive from the seed",
        None,
    ),
    (
        concat!("rand::", "random"),
        "unseeded randomness: derive from the seed",
        None,
    ),
    (
        concat!("std::", "fs"),
        "file system outside the Disk trait",
        Some(REAL_DISK_FILE),
    ),
    (
        concat!("tokio::", "fs"),
        "file system outside the Disk trait",
        Some(REAL_DISK_FILE),
    ),
    (
        concat!("Hash", "Map"),
        "hash iteration order: use BTreeMap",
        None,
    ),
    (
        concat!("Hash", "Set"),
        "hash iteration order: use BTreeSet",
        None,
    ),
    (
        concat!("tokio::sync::", "watch"),
        "waiters woken in a per-process random order: use samsa_net::watch",
        None,
    ),
];

const TOKIO_SYNC: &str = concat!("tokio::", "sync::");

/// `use tokio::sync::{.., watch, ..}`: the braced form of the banned `tokio::sync::watch`.
fn imports_tokio_watch(code: &str) -> bool {
    let Some(at) = code.find(TOKIO_SYNC) else {
        return false;
    };
    let rest = &code[at + TOKIO_SYNC.len()..];
    let Some(list) = rest.strip_prefix('{') else {
        return false;
    };
    let list = list.split('}').next().unwrap_or("");
    list.split(',').any(|item| item.trim() == "watch")
}

const SELECT_MACRO: &str = concat!("sel", "ect!");
const BIASED: &str = concat!("bia", "sed;");
const FILE_HEADER: &str = concat!("/", "/!");

#[derive(Debug, PartialEq, Eq)]
struct Violation {
    path: String,
    line: usize,
    what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.what)
    }
}

/// The code part of a line: everything before a `//` comment. A `//` inside a string literal
/// also cuts the line, which can only hide code from the checks, never invent a violation.
fn code_part(line: &str) -> &str {
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

fn in_any(path: &str, dirs: &[&str]) -> bool {
    dirs.iter().any(|dir| path.starts_with(dir))
}

/// Checks one file. `path` is relative to the workspace root with `/` separators.
fn check_file(path: &str, text: &str) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut push = |line: usize, what: String| {
        found.push(Violation {
            path: path.to_string(),
            line,
            what,
        });
    };
    if !text.starts_with(FILE_HEADER) {
        push(
            1,
            format!("first line must be a `{FILE_HEADER}` header saying what the file is"),
        );
    }
    let core = in_any(path, CORE_DIRS);
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let columns = line.chars().count();
        if columns > LINE_COLUMNS_MAX {
            push(
                number,
                format!("line is {columns} columns (max {LINE_COLUMNS_MAX})"),
            );
        }
        let code = code_part(line);
        for (pattern, why) in BANNED_EVERYWHERE {
            if code.contains(pattern) {
                push(number, format!("`{pattern}`: {why}"));
            }
        }
        if core {
            // tokio's `Instant` is monotonic, and simulated time under madsim: not a wall clock.
            let scrubbed = code.replace(concat!("tokio::time::Instant", "::now"), "");
            for (pattern, why, allowed_in) in BANNED_IN_CORES {
                if scrubbed.contains(pattern) && *allowed_in != Some(path) {
                    push(number, format!("`{pattern}`: {why}"));
                }
            }
            if imports_tokio_watch(code) {
                push(
                    number,
                    format!("`{TOKIO_SYNC}{{.., watch}}`: use samsa_net::watch (deterministic)"),
                );
            }
        }
    }
    if in_any(path, SELECT_DIRS) {
        check_select_biased(text, &mut push);
    }
    found
}

/// Every `select!` must open with `biased;` so branch order is deterministic.
fn check_select_biased(text: &str, push: &mut impl FnMut(usize, String)) {
    let code: Vec<&str> = text.lines().map(code_part).collect();
    let joined = code.join("\n");
    let mut from = 0;
    while let Some(at) = joined[from..].find(SELECT_MACRO) {
        let start = from + at;
        from = start + SELECT_MACRO.len();
        let rest = joined[from..].trim_start();
        let body = rest
            .strip_prefix('{')
            .or_else(|| rest.strip_prefix('('))
            .or_else(|| rest.strip_prefix('['));
        let biased = body.is_some_and(|body| body.trim_start().starts_with(BIASED));
        // A `macro_rules!` mention or a path without a body is not a call; only calls count.
        if body.is_some() && !biased {
            let line = joined[..start].matches('\n').count() + 1;
            push(line, format!("`{SELECT_MACRO}` must start with `{BIASED}`"));
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives inside the workspace root")
        .to_path_buf()
}

fn collect_rs_files(dir: &Path, depth: usize, into: &mut Vec<PathBuf>) {
    assert!(
        depth <= WALK_DEPTH_MAX,
        "directory nesting deeper than {WALK_DEPTH_MAX} at {dir:?}"
    );
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot list {dir:?}: {error}"))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let file_type = std::fs::symlink_metadata(&path)
            .expect("metadata")
            .file_type();
        if file_type.is_dir() {
            if !name.starts_with('.') && !SKIPPED_DIRS.contains(&name) {
                collect_rs_files(&path, depth + 1, into);
            }
        } else if file_type.is_file() && name.ends_with(".rs") {
            into.push(path);
        }
    }
}

#[test]
fn workspace_is_tidy() {
    let root = workspace_root();
    let mut files = Vec::new();
    collect_rs_files(&root, 0, &mut files);
    assert!(
        files.len() > 10,
        "tidy found only {} .rs files under {root:?}",
        files.len()
    );
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&root).expect("inside root");
        let relative = relative.to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|error| panic!("cannot read {relative}: {error}"));
        violations.extend(check_file(&relative, &text));
    }
    let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(
        violations.is_empty(),
        "tidy: {} violation(s) in {} files:\n{}",
        violations.len(),
        files.len(),
        report.join("\n")
    );
}

// ---- The rules fire on bad snippets (and stay quiet on good ones). ----

const HEADER: &str = concat!("/", "/! A test file.\n");

fn whats(path: &str, body: &str) -> Vec<String> {
    let text = format!("{HEADER}{body}");
    check_file(path, &text)
        .into_iter()
        .map(|v| v.what)
        .collect()
}

fn fires(path: &str, body: &str, needle: &str) {
    let found = whats(path, body);
    assert!(
        found.iter().any(|what| what.contains(needle)),
        "expected a `{needle}` violation for {path}: {body:?}, got {found:?}"
    );
}

fn quiet(path: &str, body: &str) {
    let found = whats(path, body);
    assert_eq!(
        found,
        Vec::<String>::new(),
        "expected no violation for {path}: {body:?}"
    );
}

#[test]
fn clean_file_passes() {
    quiet(
        "broker/src/x.rs",
        "fn main() {\n    let x = std::collections::BTreeMap::<u8, u8>::new();\n}\n",
    );
}

#[test]
fn missing_header_fires() {
    let found = check_file("sim/src/x.rs", "fn main() {}\n");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 1);
    assert!(found[0].what.contains("header"));
    let plain_comment = check_file("sim/src/x.rs", concat!("/", "/ plain comment\nfn f() {}\n"));
    assert_eq!(plain_comment.len(), 1);
}

#[test]
fn long_line_fires() {
    let long = format!("const X: &str = \"{}\";\n", "a".repeat(90));
    fires("tests/src/x.rs", &long, "columns");
    let exact = format!("{}\n", "a".repeat(LINE_COLUMNS_MAX));
    quiet("tests/src/x.rs", &exact);
    // Columns are characters, not bytes.
    let wide = format!("{}\n", "é".repeat(LINE_COLUMNS_MAX));
    quiet("tests/src/x.rs", &wide);
}

#[test]
fn placeholders_and_debug_fire_everywhere() {
    fires(
        "sim/src/x.rs",
        concat!("fn f() { to", "do!() }\n"),
        "placeholder",
    );
    fires(
        "tests/tests/x.rs",
        concat!("fn f() { unimple", "mented!() }\n"),
        "placeholder",
    );
    fires(
        "scenarios/src/x.rs",
        concat!("fn f() { db", "g!(1); }\n"),
        "debug",
    );
    fires(
        "net/src/x.rs",
        concat!("#[ig", "nore]\n#[test]\nfn t() {}\n"),
        "ignored",
    );
    fires(
        "net/src/x.rs",
        concat!("#[ig", "nore = \"slow\"]\nfn t() {}\n"),
        "ignored",
    );
    fires(
        "tests/tests/x.rs",
        concat!("#[should", "_panic]\nfn t() {}\n"),
        "should-panic",
    );
}

#[test]
fn wall_clock_fires_in_cores_but_not_in_clock_rs() {
    let body = concat!("fn f() { let _ = std::time::Instant", "::now(); }\n");
    fires("broker/src/x.rs", body, "wall clock");
    fires("storage/src/log.rs", body, "wall clock");
    quiet(CLOCK_FILE, body);
    let system = concat!("fn f() { let _ = SystemTime", "::now(); }\n");
    fires("net/src/frame.rs", system, "wall clock");
    quiet(CLOCK_FILE, system);
    // Outside the cores (the simulator, the tests) the rule does not apply.
    quiet("tests/src/x.rs", body);
    // tokio's monotonic (and, under madsim, simulated) clock is allowed; a bare import is not.
    let tokio = concat!("fn f() { let _ = tokio::time::Instant", "::now(); }\n");
    quiet("broker/src/x.rs", tokio);
    let bare = concat!(
        "use tokio::time::Instant;\nfn f() { let _ = Instant",
        "::now(); }\n"
    );
    fires("broker/src/x.rs", bare, "wall clock");
}

#[test]
fn unseeded_randomness_fires_in_cores() {
    fires(
        "broker/src/x.rs",
        concat!("fn f() { rand::thread", "_rng(); }\n"),
        "unseeded",
    );
    fires(
        "net/src/x.rs",
        concat!("fn f() -> u8 { rand::", "random() }\n"),
        "unseeded",
    );
}

#[test]
fn tokio_watch_fires_in_cores_in_both_import_forms() {
    fires(
        "broker/src/x.rs",
        concat!("use tokio::sync::", "watch;\n"),
        "samsa_net::watch",
    );
    fires(
        "broker/src/x.rs",
        concat!("use tokio::sync::{mpsc, ", "watch, Notify};\n"),
        "samsa_net::watch",
    );
    quiet(
        "broker/src/x.rs",
        "//! x\nuse samsa_net::watch;\nuse tokio::sync::{mpsc, Notify};\n",
    );
}

#[test]
fn file_system_fires_outside_real_disk() {
    let body = concat!("use std::", "fs::File;\n");
    fires("storage/src/log.rs", body, "file system");
    fires(
        "broker/src/node.rs",
        concat!("use tokio::", "fs;\n"),
        "file system",
    );
    quiet(REAL_DISK_FILE, body);
}

#[test]
fn hash_collections_fire_in_cores() {
    fires(
        "broker/src/x.rs",
        concat!("use std::collections::Hash", "Map;\n"),
        "BTreeMap",
    );
    fires(
        "storage/src/x.rs",
        concat!("use std::collections::Hash", "Set;\n"),
        "BTreeSet",
    );
}

#[test]
fn rules_ignore_comments() {
    quiet(
        "broker/src/x.rs",
        concat!("fn f() {} /", "/ never calls std::", "fs or Hash", "Map\n"),
    );
}

#[test]
fn select_without_biased_fires() {
    let bad = concat!(
        "async fn f() {\n    tokio::sel",
        "ect! {\n        _ = a() => {}\n        _ = b() => {}\n    }\n}\n"
    );
    let found = check_file("broker/src/node.rs", &format!("{HEADER}{bad}"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].line, 3);
    fires("sim/src/x.rs", bad, "biased");
    let good = concat!(
        "async fn f() {\n    tokio::sel",
        "ect! {\n        bia",
        "sed;\n        _ = a() => {}\n    }\n}\n"
    );
    quiet("broker/src/node.rs", good);
    // `biased;` on the same line as the brace also counts.
    quiet(
        "net/src/x.rs",
        concat!(
            "fn f() { tokio::sel",
            "ect! { bia",
            "sed; _ = a() => {} } }\n"
        ),
    );
}
