//! Reading and checking policy files.
//!
//! casbin's own loader accepts almost anything and reports little, so every line is checked
//! here first, and a mistake is reported with its file and line number. The format is casbin's:
//! comma-separated fields, `#` comments (not RFC 4180 CSV, so no CSV parser is used).

use std::path::{Path, PathBuf};

use veil_common::{DepartmentId, Level, Mode, Role, UserId};

use crate::{Error, Result};

/// Where the model and policy files are.
#[derive(Debug, Clone)]
pub struct PolicyFiles {
    /// The casbin model (`model.conf`).
    pub model: PathBuf,
    /// The policy lines (`policy.csv`).
    pub policy: PathBuf,
}

impl PolicyFiles {
    /// The files `model.conf` and `policy.csv` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self { model: dir.join("model.conf"), policy: dir.join("policy.csv") }
    }

    /// Reads both files: the model text and the checked policy lines.
    ///
    /// # Errors
    /// [`Error::Read`], or [`Error::Line`] for the first malformed line.
    pub fn read(&self) -> Result<(String, Vec<PolicyLine>)> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })
        };
        let model = read(&self.model)?;
        let name = self.policy.file_name().and_then(|n| n.to_str()).unwrap_or("policy.csv");
        let lines = parse(name, &read(&self.policy)?)?;
        Ok((model, lines))
    }
}

/// One checked `p` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLine {
    /// `*`, a role name, or `user:<id>`.
    pub subject: String,
    /// `*` or a department id.
    pub department: String,
    /// `*`, `@own`, `dept.*` or `dept.name`.
    pub dataset: String,
    /// `*` or a level code.
    pub max_level: String,
    /// `*`, a mode, or [`EXACT_AGGREGATES`].
    pub mode: String,
    /// `allow` or `deny`.
    pub effect: String,
}

/// The policy mode that lets a department's own analysts have exact aggregates of its datasets
/// about people (they hold the data anyway). Only a line naming it grants it: an allow line with
/// mode `*` covers the three result modes, not this; a deny line with `*` closes it too.
pub const EXACT_AGGREGATES: &str = "exact_aggregates";

impl PolicyLine {
    /// The line as casbin reads it: one line, or one per result mode for an allow line of every
    /// mode, so that no `*` grants exact aggregates.
    pub(crate) fn to_casbin(&self) -> String {
        let line = |mode: &str| {
            format!(
                "p, {}, {}, {}, {}, {}, {}\n",
                self.subject, self.department, self.dataset, self.max_level, mode, self.effect
            )
        };
        if self.mode == "*" && self.effect == "allow" {
            Mode::ALL.iter().map(|m| line(m.as_str())).collect()
        } else {
            line(&self.mode)
        }
    }
}

/// Parses policy text; `file` names it in errors.
///
/// # Errors
/// [`Error::Line`] for the first malformed line.
pub fn parse(file: &str, text: &str) -> Result<Vec<PolicyLine>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |message: String| Error::Line { file: file.to_owned(), line: i + 1, message };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        match fields[0] {
            "p" => {}
            "g" => {
                return Err(bad(
                    "role assignments come from the user registry (veil user create); remove this g line".into()
                ));
            }
            other => return Err(bad(format!("unknown line type `{other}`: policy lines start with `p`"))),
        }
        if fields.len() != 7 {
            return Err(bad(format!(
                "expected 7 fields (p, subject, requester department, dataset, up to level, mode, effect), found {}",
                fields.len()
            )));
        }
        let (subject, department, dataset, max_level, mode, effect) =
            (fields[1], fields[2], fields[3], fields[4], fields[5], fields[6]);
        check_subject(subject).map_err(&bad)?;
        if department != "*" {
            DepartmentId::new(department).map_err(|e| bad(e.to_string()))?;
        }
        check_dataset(dataset).map_err(&bad)?;
        if max_level != "*" {
            max_level.parse::<Level>().map_err(|e| bad(e.to_string()))?;
        }
        if mode != "*" && mode != EXACT_AGGREGATES {
            mode.parse::<Mode>().map_err(|e| bad(format!("{e}, or {EXACT_AGGREGATES}")))?;
        }
        if effect != "allow" && effect != "deny" {
            return Err(bad(format!("effect must be allow or deny, not `{effect}`")));
        }
        out.push(PolicyLine {
            subject: subject.into(),
            department: department.into(),
            dataset: dataset.into(),
            max_level: max_level.into(),
            mode: mode.into(),
            effect: effect.into(),
        });
    }
    Ok(out)
}

fn check_subject(subject: &str) -> Result<(), String> {
    if subject == "*" {
        return Ok(());
    }
    if let Some(user) = subject.strip_prefix("user:") {
        return UserId::new(user).map(|_| ()).map_err(|e| e.to_string());
    }
    subject.parse::<Role>().map(|_| ()).map_err(|e| format!("subject must be `*`, a role or user:<id>: {e}"))
}

fn check_dataset(dataset: &str) -> Result<(), String> {
    if dataset == "*" || dataset == "@own" {
        return Ok(());
    }
    let Some((department, name)) = dataset.split_once('.') else {
        return Err(format!("dataset `{dataset}` must be `*`, `@own`, `department.*` or `department.name`"));
    };
    DepartmentId::new(department).map_err(|e| e.to_string())?;
    if name != "*" {
        veil_common::DatasetName::new(name).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policies_parse() {
        assert_eq!(parse("default", crate::DEFAULT_POLICY).expect("default").len(), 1);
        assert!(parse("demo", crate::DEMO_POLICY).expect("demo").len() > 5);
    }

    #[test]
    fn each_mistake_names_its_line() {
        let cases = [
            ("p, analyst, *, @own, *, *\n", 1, "expected 7 fields"),
            ("# ok\n\np, analyst, *, @own, L9, *, allow\n", 3, "unknown level"),
            ("p, wizard, *, @own, *, *, allow\n", 1, "subject"),
            ("p, analyst, Health, @own, *, *, allow\n", 1, "department id"),
            ("p, analyst, *, civil, *, *, allow\n", 1, "department.name"),
            ("p, analyst, *, @own, *, raw, allow\n", 1, "unknown mode"),
            ("p, analyst, *, @own, *, *, permit\n", 1, "allow or deny"),
            ("g, user:a, analyst, civil\n", 1, "user registry"),
            ("x, a\n", 1, "line type"),
        ];
        for (text, line, words) in cases {
            match parse("policy.csv", text) {
                Err(Error::Line { line: l, message, .. }) => {
                    assert_eq!(l, line, "{text}");
                    assert!(message.contains(words), "{text}: {message}");
                }
                other => panic!("{text}: expected a line error, got {other:?}"),
            }
        }
    }
}
