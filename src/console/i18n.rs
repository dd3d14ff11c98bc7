//! The console's words: one catalog per language (`i18n/zh-CN.toml`, `i18n/en.toml`, flat
//! `key = "text"` tables embedded in the binary), the language a request asked for (the
//! `civicast_lang` cookie; Simplified Chinese without one), and the lookup pages use.
//!
//! Owns: the catalogs and the choice of language. Must not hold words anywhere else: a page
//! names a key, never a text; the tests check that both catalogs hold the same keys and
//! that every key a template or handler names exists.

use std::collections::HashMap;
use std::sync::LazyLock;

/// The cookie that keeps the reader's language.
pub const LANG_COOKIE: &str = "civicast_lang";

/// A language the console speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    ZhCn,
    En,
}

impl Lang {
    /// The `lang` attribute and cookie value.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh-CN",
            Lang::En => "en",
        }
    }
    pub fn parse(s: &str) -> Option<Lang> {
        [Lang::ZhCn, Lang::En].into_iter().find(|l| l.tag() == s)
    }
    /// The other language, for the toggle.
    pub fn other(self) -> Lang {
        match self {
            Lang::ZhCn => Lang::En,
            Lang::En => Lang::ZhCn,
        }
    }
}

const ZH_CN: &str = include_str!("i18n/zh-CN.toml");
const EN: &str = include_str!("i18n/en.toml");

fn parse(name: &str, text: &str) -> HashMap<String, String> {
    match toml::from_str::<HashMap<String, String>>(text) {
        Ok(m) => m,
        // Embedded at build time and checked by the tests: an unreadable catalog is a bug
        // of this build, shown as keys on the pages rather than a daemon that cannot start.
        Err(e) => {
            tracing::error!(catalog = name, error = %e, "console catalog unreadable");
            HashMap::new()
        }
    }
}

static CATALOGS: LazyLock<[HashMap<String, String>; 2]> =
    LazyLock::new(|| [parse("zh-CN", ZH_CN), parse("en", EN)]);

fn catalog(lang: Lang) -> &'static HashMap<String, String> {
    match lang {
        Lang::ZhCn => &CATALOGS[0],
        Lang::En => &CATALOGS[1],
    }
}

/// Marks a catalog key named in code rather than in a template (`key("error.csrf")`), so
/// that the tests find it.
pub const fn key(k: &'static str) -> &'static str {
    k
}

/// The text of `key` in `lang`; the key itself when a catalog lacks it (the tests make
/// sure none does).
pub fn text(lang: Lang, key: &str) -> &str {
    match catalog(lang).get(key) {
        Some(t) => t.as_str(),
        None => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn keys(lang: Lang) -> BTreeSet<&'static str> {
        catalog(lang).keys().map(String::as_str).collect()
    }

    #[test]
    fn both_catalogs_read_and_hold_exactly_the_same_keys() {
        toml::from_str::<HashMap<String, String>>(ZH_CN).expect("zh-CN.toml reads");
        toml::from_str::<HashMap<String, String>>(EN).expect("en.toml reads");
        let (zh, en) = (keys(Lang::ZhCn), keys(Lang::En));
        assert!(zh.len() > 50, "{} keys", zh.len());
        let only_zh: Vec<_> = zh.difference(&en).collect();
        let only_en: Vec<_> = en.difference(&zh).collect();
        assert!(only_zh.is_empty(), "only in zh-CN.toml: {only_zh:?}");
        assert!(only_en.is_empty(), "only in en.toml: {only_en:?}");
        for k in &zh {
            assert!(!text(Lang::ZhCn, k).trim().is_empty(), "zh-CN {k} is empty");
            assert!(!text(Lang::En, k).trim().is_empty(), "en {k} is empty");
        }
    }

    /// Every key named by `.t(..)` or `key(..)` in a template or in the console's code (pages and
    /// handlers name keys only that way).
    fn used_keys() -> BTreeSet<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["templates/console", "src/console", "src/console/pages"] {
            for e in std::fs::read_dir(root.join(dir)).expect(dir) {
                let p = e.expect("entry").path();
                if p.extension().is_some_and(|x| x == "html" || x == "rs") {
                    files.push(p);
                }
            }
        }
        let mut used = BTreeSet::new();
        for f in files {
            let s = std::fs::read_to_string(&f).expect("read");
            for marker in [".t(\"", "key(\""] {
                for part in s.split(marker).skip(1) {
                    if let Some(end) = part.find('"') {
                        used.insert(part[..end].to_owned());
                    }
                }
            }
        }
        used
    }

    #[test]
    fn every_key_a_page_names_is_in_the_catalogs() {
        let used = used_keys();
        assert!(used.len() > 50, "found only {} keys in use", used.len());
        let known = keys(Lang::ZhCn);
        let missing: Vec<_> = used
            .iter()
            .filter(|k| !known.contains(k.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "keys used but not in the catalogs: {missing:?}"
        );
    }

    /// The words pages show by value (`Ctx::word`): every status and state.
    #[test]
    fn every_status_word_is_in_the_catalogs() {
        let mut words: Vec<&str> = vec!["approved", "pending", "retired", "superseded"];
        words.extend(["yes", "no", "unknown"]);
        // The states of an urgent message (`/urgent`).
        words.extend(["pending", "published", "expired", "cancelled"]);
        words.extend(crate::core::wire::Status::ALL.iter().map(|s| s.as_str()));
        for w in words {
            let k = format!("word.{w}");
            assert!(catalog(Lang::ZhCn).contains_key(&k), "{k} missing");
        }
    }

    #[test]
    fn chinese_is_the_default_and_the_toggle_flips() {
        assert_eq!(Lang::default().tag(), "zh-CN");
        assert_eq!(Lang::parse("en"), Some(Lang::En));
        assert_eq!(Lang::parse("fr"), None);
        assert_eq!(Lang::ZhCn.other(), Lang::En);
        assert_eq!(text(Lang::En, "no.such.key"), "no.such.key");
    }
}
