//! Configuration problems, collected rather than thrown one at a time.
//!
//! Every check appends a [`ConfigIssue`] with the dotted path of the offending key so a user
//! sees every mistake in one run (ripgrep's low/high args, `ignore::Error::Partial`).

use std::fmt;

/// One problem with one configuration key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted path of the key, e.g. `model.order`.
    pub path: String,
    /// What is wrong and, where possible, how to fix it.
    pub msg: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.msg)
    }
}

/// Every problem found in one configuration (never empty when returned as an error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file the configuration came from, when there was one.
    pub source: Option<String>,
    /// The problems, in the order they were found.
    pub issues: Vec<ConfigIssue>,
}

impl ConfigErrors {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.issues.push(ConfigIssue {
            path: path.into(),
            msg: msg.into(),
        });
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.issues.is_empty()
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.issues.len()
    }

    /// `Ok(v)` if nothing was recorded, else `Err(self)`.
    pub fn into_result<T>(self, v: T) -> Result<T, ConfigErrors> {
        if self.is_empty() {
            Ok(v)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.issues.len();
        match &self.source {
            Some(s) => write!(
                f,
                "{s}: {n} configuration problem{}",
                if n == 1 { "" } else { "s" }
            )?,
            None => write!(
                f,
                "{n} configuration problem{}",
                if n == 1 { "" } else { "s" }
            )?,
        }
        for issue in &self.issues {
            write!(f, "\n  {issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Adds a check result to `errs` when `ok` is false.
pub(crate) fn check(errs: &mut ConfigErrors, ok: bool, path: &str, msg: impl FnOnce() -> String) {
    if !ok {
        errs.push(path, msg());
    }
}
