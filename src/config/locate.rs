//! Config errors and where they are: every error names the file, the line and
//! column where TOML gives one, and the key path (`routes[2].upstream`).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `routes[2].upstream`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn key(mut self, k: impl Into<String>) -> Self {
        self.0.push(Seg::Key(k.into()));
        self
    }
    pub fn index(mut self, i: usize) -> Self {
        self.0.push(Seg::Index(i));
        self
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.0 {
            match s {
                Seg::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// One configuration error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    /// 1-based line and column.
    pub line_col: Option<(usize, usize)>,
    /// Key path, empty for file-level errors (syntax, unreadable file).
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some((l, c)) = self.line_col {
                write!(f, ":{l}:{c}")?;
            }
            f.write_str(": ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every error found in one config (never empty when returned as an `Err`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    pub fn single(file: Option<&Path>, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            file: file.map(Path::to_path_buf),
            line_col: None,
            path: String::new(),
            message: message.into(),
        }])
    }
    pub fn messages(&self) -> Vec<String> {
        self.0.iter().map(|e| e.to_string()).collect()
    }
}

/// Finds the source position of key paths in one TOML document.
pub struct Locator<'a> {
    src: &'a str,
    doc: Option<toml_edit::ImDocument<&'a str>>,
    file: Option<PathBuf>,
}

impl<'a> Locator<'a> {
    pub fn new(src: &'a str, file: Option<&Path>) -> Self {
        Locator {
            src,
            doc: toml_edit::ImDocument::parse(src).ok(),
            file: file.map(Path::to_path_buf),
        }
    }

    /// Byte offset → 1-based (line, column).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.src.len());
        let before = &self.src[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
            before[nl + 1..].chars().count()
        }) + 1;
        (line, col)
    }

    /// The span of the deepest item along `path` that exists in the document.
    pub fn span(&self, path: &KeyPath) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut item: &toml_edit::Item = doc.as_item();
        let mut best: Option<Range<usize>> = None;
        for seg in &path.0 {
            let next = match seg {
                Seg::Key(k) => {
                    if let Some(t) = item.as_table_like() {
                        if let Some((key, it)) = t.get_key_value(k) {
                            if let Some(s) = key.span() {
                                best = Some(s);
                            }
                            Some(it)
                        } else {
                            None
                        }
                    } else {
                        None
                    }
                }
                Seg::Index(i) => item.get(*i),
            };
            match next {
                Some(it) => {
                    if let Some(s) = item_span(it) {
                        best = Some(s);
                    }
                    item = it;
                }
                None => break,
            }
        }
        best
    }

    pub fn error(&self, path: &KeyPath, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line_col: self.span(path).map(|s| self.line_col(s.start)),
            path: path.to_string(),
            message: message.into(),
        }
    }

    pub fn error_at(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line_col: span.map(|s| self.line_col(s.start)),
            path: String::new(),
            message: message.into(),
        }
    }
}

fn item_span(it: &toml_edit::Item) -> Option<Range<usize>> {
    match it {
        toml_edit::Item::Value(v) => v.span(),
        toml_edit::Item::Table(t) => t.span(),
        toml_edit::Item::ArrayOfTables(a) => a.span(),
        toml_edit::Item::None => None,
    }
}
