//! Validated identifiers.
//!
//! Department ids become SQL schema names and dataset names become table names, so both follow
//! one conservative rule: a lower-case ASCII letter, then lower-case letters, digits or `_`, at
//! most 63 characters. User ids also allow `-` and `.` so that they can follow an e-mail local part.

use std::fmt;
use std::str::FromStr;

/// A name that did not pass validation. The message says what the rule is; it repeats the
/// offending name, which is the caller's own input and never data read from a dataset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{value}`: {rule}")]
pub struct IdError {
    what: &'static str,
    value: String,
    rule: &'static str,
}

const SQL_NAME_RULE: &str =
    "must start with a lower-case letter and contain only a-z, 0-9 and _, at most 63 characters";
const USER_RULE: &str =
    "must start with a lower-case letter or digit and contain only a-z, 0-9, _, - and ., at most 63 characters";

fn check(
    what: &'static str,
    value: &str,
    rule: &'static str,
    extra: &[char],
    first_digit_ok: bool,
) -> Result<(), IdError> {
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || (first_digit_ok && c.is_ascii_digit()));
    let rest_ok = value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || extra.contains(&c));
    if first_ok && rest_ok && value.len() <= 63 {
        Ok(())
    } else {
        // Cap what we echo back so a megabyte of junk does not come back in the error.
        let shown: String = value.chars().take(64).collect();
        Err(IdError { what, value: shown, rule })
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $rule:expr, $extra:expr, $digit:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates `value` and wraps it.
            ///
            /// # Errors
            /// [`IdError`] when `value` breaks the naming rule.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check($what, &value, $rule, $extra, $digit)?;
                Ok(Self(value))
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A department id, e.g. `civil`. It is also the SQL schema that holds the department's datasets.
    DepartmentId, "department id", SQL_NAME_RULE, &[], false
);
id_type!(
    /// A dataset's name within its department, e.g. `elderly`. It is also the SQL table name.
    DatasetName, "dataset name", SQL_NAME_RULE, &[], false
);
id_type!(
    /// A user id, e.g. `health-analyst-1`.
    UserId, "user id", USER_RULE, &['-', '.'], true
);

/// A dataset named by department and name: `civil.elderly`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetRef {
    /// The owning department (the SQL schema).
    pub department: DepartmentId,
    /// The dataset's name in it (the SQL table).
    pub name: DatasetName,
}

impl fmt::Display for DatasetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.department, self.name)
    }
}

impl FromStr for DatasetRef {
    type Err = IdError;

    /// Parses `department.name`.
    fn from_str(s: &str) -> Result<Self, IdError> {
        let Some((department, name)) = s.split_once('.') else {
            let shown: String = s.chars().take(64).collect();
            return Err(IdError {
                what: "dataset reference",
                value: shown,
                rule: "must be written department.name, e.g. civil.elderly",
            });
        };
        Ok(Self { department: DepartmentId::new(department)?, name: DatasetName::new(name)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sql_safe_names_and_refuses_others() {
        assert!(DepartmentId::new("civil").is_ok());
        assert!(DepartmentId::new("hotline_12345").is_ok());
        for bad in ["", "Civil", "1civil", "civil-affairs", "civil.x", "民政", &"a".repeat(64)] {
            let err = DepartmentId::new(bad).expect_err(bad);
            assert!(err.to_string().contains("department id"), "{err}");
        }
        assert!(UserId::new("health-analyst.1").is_ok());
        assert!(UserId::new("Admin").is_err());
    }

    #[test]
    fn dataset_ref_round_trips() {
        let r: DatasetRef = "civil.elderly".parse().expect("valid");
        assert_eq!(r.department.as_str(), "civil");
        assert_eq!(r.name.as_str(), "elderly");
        assert_eq!(r.to_string(), "civil.elderly");
        assert!("civil".parse::<DatasetRef>().is_err());
        assert!("civil.Elderly".parse::<DatasetRef>().is_err());
    }
}
