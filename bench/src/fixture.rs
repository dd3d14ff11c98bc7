//! The generated inventories the scenarios run against: `n` displays of one class in one
//! feed (ingest, memory), its classes, feed and ad set, and the display names every
//! scenario shares; the catalog loaded from them as the daemon loads an operator's files.
//!
//! Owns: the bench's own fixtures (not the first city of `civicast::city`: the scenarios
//! need any number of displays in one feed). Must not touch: an operator's devices/ or
//! schedules/ (everything is written under the bench's --dir).

use std::path::Path;

use anyhow::Context;
use civicast::core::model::Catalog;

const CLASSES: &str = r#"
[class.bench_led]
max_chars = 40
charset = "gb2312"
duration = "15s"
"#;

pub(crate) const FEEDS: &str = r#"
timezone = "Asia/Shanghai"

[[feed]]
id = "bench"
select = { class = "bench_led" }
interval = "1h"
"#;

pub(crate) const ADSET: &str = r#"
id = "civility"
valid_from = "2020-01-01"
valid_until = "2099-12-31"

[[slogan]]
id = "jiang-wenming"
text = "讲文明 树新风"
weight = 2

[[slogan]]
id = "paidui"
text = "自觉排队 文明乘车"
"#;

pub(crate) fn device_name(i: usize) -> String {
    format!("bench-{i:07}")
}

/// Writes `devices/` and `schedules/` for `n` displays of one class in one feed.
pub fn write_inventory(root: &Path, n: usize) -> anyhow::Result<()> {
    let w = |rel: &str, text: &str| -> anyhow::Result<()> {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    let _ = std::fs::remove_dir_all(root.join("devices"));
    // One file, as an operator would keep it (loading is linear in a file's rows).
    let mut csv = String::with_capacity(n * 28 + 32);
    csv.push_str("id,class,route\n");
    for i in 0..n {
        csv.push_str(&device_name(i));
        csv.push_str(",bench_led,K");
        csv.push_str(&(i % 300).to_string());
        csv.push('\n');
    }
    w("devices/fleet.csv", &csv)?;
    drop(csv);
    w("devices/classes.toml", CLASSES)?;
    w("schedules/feeds.toml", FEEDS)?;
    w("schedules/adsets/civility.toml", ADSET)?;
    Ok(())
}

pub(crate) fn load_catalog(root: &Path) -> anyhow::Result<Catalog> {
    let report = civicast::files::load_dirs(&root.join("devices"), &root.join("schedules"));
    let errors = report.errors();
    match report.catalog {
        Some(c) if errors == 0 => Ok(c),
        _ => anyhow::bail!(
            "the generated inventory has {errors} errors: {:?}",
            report.problems.first().map(|p| p.to_string())
        ),
    }
}

pub(crate) fn remove_db(path: &Path) {
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
}
