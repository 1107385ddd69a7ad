//! Column tags after GB/T 37964-2019 个人信息去标识化指南.

use std::fmt;
use std::str::FromStr;

/// What a column says about a person. Every column carries exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tag {
    /// Names a person directly: name, 身份证号, phone.
    Identifier,
    /// Names a person in combination: birth date, gender, address, district.
    QuasiIdentifier,
    /// What must not be tied to a person: diagnosis, income, subsidy.
    Sensitive,
    /// Everything else.
    Attribute,
}

impl Tag {
    /// Every tag.
    pub const ALL: [Tag; 4] = [Tag::Identifier, Tag::QuasiIdentifier, Tag::Sensitive, Tag::Attribute];

    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Identifier => "identifier",
            Tag::QuasiIdentifier => "quasi_identifier",
            Tag::Sensitive => "sensitive",
            Tag::Attribute => "attribute",
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tag that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tag `{0}`: expected one of identifier, quasi_identifier, sensitive, attribute")]
pub struct UnknownTag(pub String);

impl FromStr for Tag {
    type Err = UnknownTag;
    fn from_str(s: &str) -> Result<Self, UnknownTag> {
        Tag::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| UnknownTag(s.chars().take(32).collect()))
    }
}
