//! The database URL, typed: which backend it names, decided once from its scheme, and a
//! printed form that never shows a password.
//!
//! Owns: the accepted schemes and their redaction. Must not touch connections (`Db::open`
//! does) or settings files (the settings hand the text in).

use std::fmt;

/// The database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database URL whose scheme is one the store speaks: `sqlite:PATH` / `sqlite://PATH`,
/// or `postgres://...` / `postgresql://...`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    backend: Backend,
    url: String,
}

/// Why a text is not a database URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("database URL scheme {0:?} is not supported: want sqlite://PATH or postgres://...")]
    Scheme(String),
    #[error("database URL {0:?} has no scheme: want sqlite://PATH or postgres://...")]
    NoScheme(String),
}

impl DatabaseUrl {
    pub fn parse(text: &str) -> Result<DatabaseUrl, UrlError> {
        let Some((scheme, _)) = text.split_once(':') else {
            return Err(UrlError::NoScheme(text.to_owned()));
        };
        // `sqlite:` takes a path right after the colon too (`sqlite::memory:`, `sqlite:x.db`),
        // as sqlx does; PostgreSQL URLs always have an authority.
        let backend = match scheme {
            "sqlite" => Backend::Sqlite,
            "postgres" | "postgresql" if text[scheme.len()..].starts_with("://") => {
                Backend::Postgres
            }
            "" => return Err(UrlError::NoScheme(redact(text))),
            other => return Err(UrlError::Scheme(other.to_owned())),
        };
        Ok(DatabaseUrl {
            backend,
            url: text.to_owned(),
        })
    }

    /// A SQLite database in the file at `path`.
    pub fn sqlite_file(path: &std::path::Path) -> DatabaseUrl {
        DatabaseUrl {
            backend: Backend::Sqlite,
            url: format!("sqlite://{}", path.display()),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL as given, password included: for connecting only, never for printing.
    pub fn expose(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.backend {
            Backend::Sqlite => f.write_str(&self.url),
            Backend::Postgres => f.write_str(&redact(&self.url)),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// The URL with the password of its user info and any `password=` query value replaced
/// (any scheme: the settings show broker URLs through it too).
pub fn redact(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let authority = match authority.rsplit_once('@') {
                Some((user_info, host)) => match user_info.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => authority.to_owned(),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => head.to_owned(),
    };
    if let Some(q) = query {
        let pairs: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_in_both_forms() {
        for u in [
            "sqlite://civicast.db",
            "sqlite:civicast.db",
            "sqlite::memory:",
        ] {
            let d = DatabaseUrl::parse(u).unwrap();
            assert_eq!(d.backend(), Backend::Sqlite, "{u}");
            assert_eq!(d.expose(), u);
            assert_eq!(d.to_string(), u);
        }
    }

    #[test]
    fn postgres_urls_in_both_spellings() {
        for u in ["postgres://db/civicast", "postgresql://u@db:5432/civicast"] {
            let d = DatabaseUrl::parse(u).unwrap();
            assert_eq!(d.backend(), Backend::Postgres, "{u}");
            assert_eq!(d.expose(), u);
            assert_eq!(d.to_string(), u, "nothing to hide");
        }
    }

    #[test]
    fn other_schemes_are_refused_by_name() {
        let e = DatabaseUrl::parse("mysql://x/y").unwrap_err();
        assert_eq!(e, UrlError::Scheme("mysql".into()));
        assert!(e.to_string().contains("\"mysql\""), "{e}");
        assert_eq!(
            DatabaseUrl::parse("postgres:x"),
            Err(UrlError::Scheme("postgres".into()))
        );
        assert!(matches!(
            DatabaseUrl::parse("civicast.db"),
            Err(UrlError::NoScheme(_))
        ));
        assert!(matches!(
            DatabaseUrl::parse(":x"),
            Err(UrlError::NoScheme(_))
        ));
    }

    #[test]
    fn passwords_never_print() {
        let d = DatabaseUrl::parse("postgres://civicast:s3cret@db:5432/civicast?sslmode=require")
            .unwrap();
        assert_eq!(
            d.to_string(),
            "postgres://civicast:***@db:5432/civicast?sslmode=require"
        );
        assert!(!format!("{d:?}").contains("s3cret"));
        assert!(d.expose().contains("s3cret"));
        let q = DatabaseUrl::parse("postgresql://db/c?user=u&password=s3cret").unwrap();
        assert_eq!(q.to_string(), "postgresql://db/c?user=u&password=***");
        // An `@` inside the password: the host is after the last one.
        let at = DatabaseUrl::parse("postgres://u:p@ss@db/c").unwrap();
        assert_eq!(at.to_string(), "postgres://u:***@db/c");
    }
}
