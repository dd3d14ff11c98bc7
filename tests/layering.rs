//! The core decides and the shells move bytes: no file under `src/core/` may reach for an
//! I/O crate, the file system, the network, the process environment, the wall clock, or a
//! shell module. Test code inside the core (`#[cfg(test)]` modules, `tests.rs`) may.

use std::path::{Path, PathBuf};

/// What core code must not name, and why each is out.
const FORBIDDEN: &[(&str, &str)] = &[
    ("tokio", "async runtime"),
    ("sqlx", "database"),
    ("rumqttc", "MQTT client"),
    ("rmqtt", "MQTT broker"),
    ("axum", "HTTP"),
    ("tower", "HTTP"),
    ("hyper", "HTTP"),
    ("libc", "system calls"),
    ("std::fs", "file system"),
    ("std::net", "network"),
    ("std::process", "processes"),
    ("std::env", "environment"),
    ("Utc::now", "wall clock: time is passed in"),
    ("SystemTime::now", "wall clock: time is passed in"),
    ("Ulid::new", "random ids: the caller passes them"),
    ("crate::store", "a shell"),
    ("crate::daemon", "a shell"),
    ("crate::mqtt", "a shell"),
    ("crate::api", "a shell"),
    ("crate::cli", "a shell"),
    ("crate::files", "a shell"),
    ("crate::reports", "a shell"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The lines of `text` that are core code, comments removed: up to an inline
/// `#[cfg(test)] mod tests { ... }` (a `mod tests;` declaration is a file of its own).
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let inline_tests = l.trim_start().starts_with("#[cfg(test)]")
            && lines
                .get(i + 1)
                .is_some_and(|n| n.trim_end().ends_with('{'));
        if inline_tests {
            break;
        }
        out.push((i + 1, l.split("//").next().unwrap_or("")));
    }
    out
}

fn violations(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    files.sort();
    let mut found = Vec::new();
    for f in files.iter().filter(|f| !f.ends_with("tests.rs")) {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (n, line) in code_lines(&text) {
            for (name, why) in FORBIDDEN {
                if names(line, name) {
                    found.push(format!(
                        "{}:{n}: {name} ({why}): {}",
                        f.display(),
                        line.trim()
                    ));
                }
            }
        }
    }
    found
}

/// Whether `line` names the path `name` as a path (not as part of a longer identifier).
fn names(line: &str, name: &str) -> bool {
    line.match_indices(name).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + name.len()..].chars().next();
        let ident = |c: char| c.is_alphanumeric() || c == '_';
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

#[test]
fn the_core_does_no_io_and_reaches_no_shell() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let found = violations(&root);
    assert!(
        found.is_empty(),
        "core files must stay pure:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_catches_what_it_looks_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bad.rs"),
        "use std::fs;\nfn f() { let _ = tokio::spawn(async {}); }\n// tokio in a comment is fine\n\
         fn g() { let tokio_like = 1; }\n#[cfg(test)]\nmod other;\nfn h() { std::net::TcpStream::connect(\"x\"); }\n\
         #[cfg(test)]\nmod tests {\n use std::fs;\n}\n",
    )
    .expect("write");
    let found = violations(dir.path());
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].contains("bad.rs:1: std::fs"), "{}", found[0]);
    assert!(found[1].contains("bad.rs:2: tokio"), "{}", found[1]);
    assert!(found[2].contains("bad.rs:7: std::net"), "{}", found[2]);
}
