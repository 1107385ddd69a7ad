//! Column tags after GB/T 37964-2019 个人信息去标识化指南.

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

code_enum!(Tag, UnknownTag, "tag");
