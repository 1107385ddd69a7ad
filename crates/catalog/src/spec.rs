//! Dataset metadata as a steward declares it, and its validation.
//!
//! Validation runs in two steps. [`DatasetSpec::validate`] checks everything that the metadata
//! alone decides (names, level, tags, bounds, privacy unit), before any upload is read.
//! [`DatasetSpec::check_schema`] then checks the metadata against the file's schema, before any
//! row is written. Every refusal names the column or field it is about.

use std::collections::{BTreeMap, HashMap};

use arrow::datatypes::Schema;
use veil_common::{DatasetName, DatasetRef, DepartmentId, Generalization, Level, Tag};
use veil_ingest::{DeclaredType, SourceFormat};

use crate::{Error, Result};

/// Dataset metadata as received, before validation. Fields are text so that every mistake can
/// be reported with its own message.
#[derive(Debug, Clone, Default)]
pub struct MetadataInput {
    /// Dataset name (the SQL table).
    pub name: String,
    /// Owning department (the SQL schema).
    pub department: String,
    /// Classification level code.
    pub level: String,
    /// What the dataset holds, for the catalogue.
    pub description: String,
    /// The identifier column naming the person a row is about, if any.
    pub privacy_unit: Option<String>,
    /// Declared file format; sniffed from the file when absent.
    pub format: Option<String>,
    /// The sheet of a spreadsheet to read (the first when absent).
    pub sheet: Option<String>,
    /// A CSV file's encoding (detected when absent).
    pub encoding: Option<String>,
    /// A CSV file's field separator (detected when absent).
    pub delimiter: Option<String>,
    /// Tag and options per column.
    pub columns: BTreeMap<String, ColumnInput>,
    /// Dp mode's per-dataset settings; defaults where absent.
    pub dp: DpInput,
    /// Columns of the dataset's latest version this version drops or gives another type,
    /// named to say the change is meant.
    pub confirm_changes: Vec<String>,
    /// The steward declares that each person is on one row (a registry of people, not of
    /// events); registration checks it.
    pub one_row_per_person: bool,
}

/// Dp settings as received.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DpInput {
    /// Groups one person may count in, per answer.
    pub max_groups: Option<u64>,
    /// Rows one person may contribute to one group.
    pub max_rows: Option<u64>,
    /// An epsilon cap stricter than the level's.
    pub epsilon_cap: Option<f64>,
    /// The noise of answers that do not choose theirs: `laplace` (the default) or `gaussian`.
    pub noise: Option<String>,
}

/// Dp mode's per-dataset settings (design §3), validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSettings {
    /// Groups one person may count in, per answer (default 1).
    pub max_groups: u64,
    /// Rows one person may contribute to one group (default 1).
    pub max_rows: u64,
    /// The steward's own cap, if stricter than the level's.
    pub epsilon_cap: Option<f64>,
    /// The noise of answers that do not choose theirs.
    pub noise: veil_dp::Noise,
}

impl Default for DpSettings {
    fn default() -> Self {
        Self { max_groups: 1, max_rows: 1, epsilon_cap: None, noise: veil_dp::Noise::Laplace }
    }
}

impl DpSettings {
    /// The epsilon cap that applies: the steward's, else the level's; `None` for no cap.
    pub fn cap(&self, level: Level) -> Option<f64> {
        match (self.epsilon_cap, level.epsilon_cap()) {
            (Some(own), Some(by_level)) => Some(own.min(by_level)),
            (own, by_level) => own.or(by_level),
        }
    }
}

/// The largest magnitude a column's declared bounds may have. Sums of a column are clamped to
/// its bounds, times the rows a person may add, times the people: up to 10¹⁵ each, no float
/// sum nears its largest value (about 1.8 × 10³⁰⁸), where a group's total became infinite and
/// its answer NULL. With bounds of 1.7 × 10³⁰⁸, one known person and the target at the bound
/// made a group's sum NULL exactly when the target was there (a red team, 2026-12-05: 50 of 50
/// districts in one query).
const MAX_BOUND: f64 = 1e15;

/// Largest contribution bounds a steward may declare: beyond them the noise would drown any
/// answer, which is a mistake worth naming.
const MAX_GROUPS: u64 = 1000;
const MAX_ROWS: u64 = 10_000;

impl DpInput {
    fn validate(&self, level: Level) -> Result<DpSettings> {
        let bounded = |field: &str, value: Option<u64>, max: u64| -> Result<u64> {
            match value {
                None => Ok(1),
                Some(v) if (1..=max).contains(&v) => Ok(v),
                Some(v) => {
                    Err(Error::invalid("dp_invalid", format!("dp.{field} is {v}; it must be between 1 and {max}")))
                }
            }
        };
        let max_groups = bounded("max_groups", self.max_groups, MAX_GROUPS)?;
        let max_rows = bounded("max_rows", self.max_rows, MAX_ROWS)?;
        if let Some(cap) = self.epsilon_cap {
            if !(cap.is_finite() && cap > 0.0) {
                return Err(Error::invalid(
                    "dp_invalid",
                    format!("dp.epsilon_cap is {cap}; it must be a positive number"),
                ));
            }
            if let Some(by_level) = level.epsilon_cap()
                && cap > by_level
            {
                return Err(Error::invalid(
                    "dp_invalid",
                    format!(
                        "dp.epsilon_cap {cap} is above the {by_level} a {level} dataset allows; a steward may only lower it"
                    ),
                ));
            }
        }
        let noise = match self.noise.as_deref() {
            None => veil_dp::Noise::Laplace,
            Some(name) => name.parse().map_err(|_| {
                Error::invalid(
                    "dp_invalid",
                    format!("dp.noise is `{name}`; it must be `laplace` (pure ε) or `gaussian` (ρ-zCDP)"),
                )
            })?,
        };
        Ok(DpSettings { max_groups, max_rows, epsilon_cap: self.epsilon_cap, noise })
    }
}

/// One column's declaration, as received.
#[derive(Debug, Clone, Default)]
pub struct ColumnInput {
    /// `identifier`, `quasi_identifier`, `sensitive` or `attribute`.
    pub tag: String,
    /// Whether this identifier may serve as a join key across departments.
    pub linkable: bool,
    /// Declared value bounds `[lo, hi]` of a numeric column.
    pub bounds: Option<(f64, f64)>,
    /// Declared type (CSV); checked against the file for other formats.
    pub data_type: Option<String>,
    /// Generalization for de-identified results (quasi-identifiers only).
    pub generalize: Option<String>,
    /// Every value the column can take, if that list is public (a district list, a code
    /// table): dp answers grouped only by such columns release every listed group, noisy,
    /// without a threshold.
    pub public_values: Option<Vec<String>>,
    /// The form a CSV date or timestamp column is written in (`%d/%m/%Y`), when detection
    /// would misread it.
    pub format: Option<String>,
}

/// Validated dataset metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSpec {
    /// Which dataset.
    pub dataset: DatasetRef,
    /// Its level.
    pub level: Level,
    /// Its description.
    pub description: String,
    /// Its privacy unit column, if it is about people.
    pub privacy_unit: Option<String>,
    /// Declared file format, if any.
    pub format: Option<SourceFormat>,
    /// The sheet of a spreadsheet to read (the first when `None`).
    pub sheet: Option<String>,
    /// A CSV file's declared encoding.
    pub encoding: Option<&'static veil_ingest::Encoding>,
    /// A CSV file's declared field separator.
    pub delimiter: Option<u8>,
    /// Column declarations by name.
    pub columns: BTreeMap<String, ColumnSpec>,
    /// Dp mode's settings.
    pub dp: DpSettings,
    /// Columns of the latest version this one may drop or retype.
    pub confirm_changes: Vec<String>,
    /// Declared: each person is on one row, which registration checks. Queries take the
    /// registry's shorter path only for a dataset declared so, never because a file happens to
    /// hold each person once: a red team timed twins where one person had a second row (13×
    /// slower for one grouped dp query).
    pub one_row_per_person: bool,
}

/// A validated column declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    /// Its tag.
    pub tag: Tag,
    /// Whether it is a linkable identifier.
    pub linkable: bool,
    /// Its declared bounds.
    pub bounds: Option<(f64, f64)>,
    /// Its declared type.
    pub data_type: Option<DeclaredType>,
    /// How it is generalised in de-identified results.
    pub generalize: Option<Generalization>,
    /// Its public domain, if declared.
    pub public_values: Option<Vec<String>>,
    /// The form its dates or timestamps are written in, if declared.
    pub format: Option<String>,
}

/// The type a column declared in the form `form` has: a date, or a timestamp when the form has
/// a time of day (or the type says so).
///
/// # Errors
/// `format_invalid` for a form chrono cannot read, or a column declared another type.
fn date_format(name: &str, form: &str, declared: Option<DeclaredType>) -> Result<DeclaredType> {
    let invalid = |why: &str| {
        let shown: String = form.chars().take(32).collect();
        Error::invalid("format_invalid", format!("column `{name}`: the date form `{shown}` {why}"))
    };
    let Some(timed) = veil_ingest::date_form(form) else {
        return Err(invalid("is not a strftime form such as %d/%m/%Y or %Y%m%d %H:%M"));
    };
    match declared {
        None if timed => Ok(DeclaredType::Timestamp),
        None | Some(DeclaredType::Date) => Ok(DeclaredType::Date),
        Some(DeclaredType::Timestamp) => Ok(DeclaredType::Timestamp),
        Some(_) => Err(invalid("is for date or timestamp columns")),
    }
}

/// The most values a public domain may list.
pub const MAX_PUBLIC_VALUES: usize = 10_000;

fn validate_public_values(name: &str, tag: Tag, values: &[String]) -> Result<()> {
    let invalid = |message: String| Error::invalid("public_values_invalid", format!("column `{name}`: {message}"));
    if tag == Tag::Identifier {
        return Err(invalid("an identifier has no public list of values".into()));
    }
    if values.is_empty() || values.len() > MAX_PUBLIC_VALUES {
        return Err(invalid(format!("public_values must list between 1 and {MAX_PUBLIC_VALUES} values")));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, v) in values.iter().enumerate() {
        if v.contains('\n') {
            return Err(invalid(format!("public value {} contains a line break", i + 1)));
        }
        if !seen.insert(v) {
            return Err(invalid(format!("public value {} is listed twice", i + 1)));
        }
    }
    Ok(())
}

const MAX_DESCRIPTION: usize = 4000;

impl DatasetSpec {
    /// Checks what the metadata alone decides.
    ///
    /// # Errors
    /// [`Error::BadName`] for a bad dataset or department name; [`Error::Invalid`] naming the
    /// field or column for everything else.
    pub fn validate(input: MetadataInput) -> Result<Self> {
        let dataset =
            DatasetRef { department: DepartmentId::new(input.department)?, name: DatasetName::new(input.name)? };
        let level: Level = input
            .level
            .parse()
            .map_err(|e: veil_common::level::UnknownLevel| Error::invalid("unknown_level", e.to_string()))?;
        if input.description.chars().count() > MAX_DESCRIPTION {
            return Err(Error::invalid(
                "description_too_long",
                format!("description has more than {MAX_DESCRIPTION} characters"),
            ));
        }
        let format = input.format.as_deref().map(SourceFormat::from_name).transpose()?;
        let encoding = match input.encoding.as_deref() {
            None => None,
            Some(label) => Some(veil_ingest::encoding_named(label).ok_or_else(|| {
                let shown: String = label.chars().take(32).collect();
                Error::invalid(
                    "unknown_encoding",
                    format!("encoding `{shown}` is not one Veil reads: utf-8, gb18030, gbk, utf-16le or utf-16be"),
                )
            })?),
        };
        let delimiter = match input.delimiter.as_deref() {
            None => None,
            Some(text) => Some(veil_ingest::delimiter_named(text).ok_or_else(|| {
                Error::invalid("unknown_delimiter", "delimiter must be `,`, `;`, `|` or a tab (`\\t` or `tab`)")
            })?),
        };
        if input.columns.is_empty() {
            return Err(Error::invalid("columns_required", "metadata declares no columns: every column needs a tag"));
        }
        let mut columns = BTreeMap::new();
        for (name, column) in input.columns {
            let tag: Tag = column.tag.parse().map_err(|e: veil_common::tag::UnknownTag| {
                Error::invalid("unknown_tag", format!("column `{name}`: {e}"))
            })?;
            if column.linkable && tag != Tag::Identifier {
                return Err(Error::invalid(
                    "linkable_not_identifier",
                    format!("column `{name}` is tagged {tag}; only identifier columns can be linkable"),
                ));
            }
            if let Some((lo, hi)) = column.bounds {
                if !lo.is_finite() || !hi.is_finite() {
                    return Err(Error::invalid(
                        "bounds_invalid",
                        format!("column `{name}`: bounds must be finite numbers"),
                    ));
                }
                if lo.abs().max(hi.abs()) > MAX_BOUND {
                    return Err(Error::invalid(
                        "bounds_invalid",
                        format!(
                            "column `{name}`: bounds must lie within ±{MAX_BOUND:e}, so that no sum of the column can overflow"
                        ),
                    ));
                }
                if lo > hi {
                    return Err(Error::invalid(
                        "bounds_invalid",
                        format!("column `{name}`: lower bound {lo} is greater than upper bound {hi}"),
                    ));
                }
                if tag == Tag::Identifier {
                    return Err(Error::invalid(
                        "bounds_on_identifier",
                        format!("column `{name}` is an identifier; identifiers have no bounds"),
                    ));
                }
            }
            let mut data_type = column.data_type.as_deref().map(|t| DeclaredType::parse(&name, t)).transpose()?;
            if let Some(form) = &column.format {
                data_type = Some(date_format(&name, form, data_type)?);
            }
            let generalize = column
                .generalize
                .as_deref()
                .map(|g| {
                    g.parse::<Generalization>()
                        .map_err(|e| Error::invalid("unknown_generalization", format!("column `{name}`: {e}")))
                })
                .transpose()?;
            if generalize.is_some() && tag != Tag::QuasiIdentifier {
                return Err(Error::invalid(
                    "generalize_not_quasi_identifier",
                    format!("column `{name}` is tagged {tag}; only quasi-identifiers are generalized"),
                ));
            }
            if let Some(values) = &column.public_values {
                validate_public_values(&name, tag, values)?;
            }
            let spec = ColumnSpec {
                tag,
                linkable: column.linkable,
                bounds: column.bounds,
                data_type,
                generalize,
                public_values: column.public_values,
                format: column.format,
            };
            columns.insert(name, spec);
        }
        match &input.privacy_unit {
            Some(unit) => match columns.get(unit) {
                None => {
                    return Err(Error::invalid(
                        "privacy_unit_unknown",
                        format!("privacy_unit `{unit}` is not one of the declared columns"),
                    ));
                }
                Some(c) if c.tag != Tag::Identifier => {
                    return Err(Error::invalid(
                        "privacy_unit_not_identifier",
                        format!("privacy_unit `{unit}` is tagged {}; it must be an identifier", c.tag),
                    ));
                }
                Some(_) => {}
            },
            None if !level.allows_no_privacy_unit() => {
                return Err(Error::invalid(
                    "privacy_unit_required",
                    format!(
                        "a {level} dataset is about people and must declare its privacy_unit; only L1 and L2 datasets may have none"
                    ),
                ));
            }
            None => {}
        }
        if input.one_row_per_person && input.privacy_unit.is_none() {
            return Err(Error::invalid(
                "one_row_per_person_without_unit",
                "one_row_per_person declares that each person is on one row: it needs a privacy_unit",
            ));
        }
        let dp = input.dp.validate(level)?;
        Ok(Self {
            dataset,
            level,
            description: input.description,
            privacy_unit: input.privacy_unit,
            format,
            sheet: input.sheet,
            encoding,
            delimiter,
            columns,
            dp,
            confirm_changes: input.confirm_changes,
            one_row_per_person: input.one_row_per_person,
        })
    }

    /// The forms date and timestamp columns are declared in, by column.
    pub fn declared_formats(&self) -> HashMap<String, String> {
        self.columns.iter().filter_map(|(n, c)| Some((n.clone(), c.format.clone()?))).collect()
    }

    /// The CSV column types the reader must use: the declared ones, and text for identifiers
    /// declared without a type. Identifiers are codes (身份证号, phone numbers): read as numbers
    /// they would lose leading zeros or join against text ids of another department.
    pub fn declared_types(&self) -> HashMap<String, DeclaredType> {
        self.columns
            .iter()
            .filter_map(|(n, c)| {
                let t = c.data_type.or((c.tag == Tag::Identifier).then_some(DeclaredType::String))?;
                Some((n.clone(), t))
            })
            .collect()
    }

    /// Checks the metadata against the file's schema: every file column tagged, every tag a file
    /// column, bounds only on numbers, declared types as in the file.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming every offending column of the first kind found.
    pub fn check_schema(&self, schema: &Schema) -> Result<()> {
        let untagged: Vec<&str> =
            schema.fields().iter().map(|f| f.name().as_str()).filter(|n| !self.columns.contains_key(*n)).collect();
        if !untagged.is_empty() {
            return Err(Error::invalid(
                "untagged_column",
                format!(
                    "the file has columns without a tag: {}; every column needs exactly one tag",
                    quote_list(&untagged)
                ),
            ));
        }
        let missing: Vec<&str> =
            self.columns.keys().map(String::as_str).filter(|n| schema.field_with_name(n).is_err()).collect();
        if !missing.is_empty() {
            return Err(Error::invalid(
                "unknown_column",
                format!("metadata tags columns that are not in the file: {}", quote_list(&missing)),
            ));
        }
        for field in schema.fields() {
            let Some(column) = self.columns.get(field.name()) else { continue };
            if column.bounds.is_some() && !field.data_type().is_numeric() {
                return Err(Error::invalid(
                    "bounds_not_numeric",
                    format!(
                        "column `{}` has type {}; bounds apply only to numeric columns",
                        field.name(),
                        field.data_type()
                    ),
                ));
            }
            if let Some(declared) = column.data_type
                && DeclaredType::of(field.data_type()) != Some(declared)
            {
                return Err(Error::invalid(
                    "type_mismatch",
                    format!(
                        "column `{}` is declared {} but the file has {}",
                        field.name(),
                        declared.as_str(),
                        field.data_type()
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn quote_list(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> MetadataInput {
        let mut columns = BTreeMap::new();
        columns
            .insert("person_id".into(), ColumnInput { tag: "identifier".into(), linkable: true, ..Default::default() });
        columns.insert(
            "age".into(),
            ColumnInput { tag: "quasi_identifier".into(), bounds: Some((0.0, 120.0)), ..Default::default() },
        );
        MetadataInput {
            name: "elderly".into(),
            department: "civil".into(),
            level: "L3".into(),
            privacy_unit: Some("person_id".into()),
            columns,
            ..Default::default()
        }
    }

    fn code_of(input: MetadataInput) -> &'static str {
        match DatasetSpec::validate(input) {
            Err(Error::Invalid { code, .. }) => code,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_declared_encoding_or_separator_veil_does_not_read_is_refused() {
        let encoding = MetadataInput { encoding: Some("klingon".into()), ..input() };
        assert_eq!(code_of(encoding), "unknown_encoding");
        let delimiter = MetadataInput { delimiter: Some("::".into()), ..input() };
        assert_eq!(code_of(delimiter), "unknown_delimiter");
        let both = MetadataInput { encoding: Some("GBK".into()), delimiter: Some("tab".into()), ..input() };
        let spec = DatasetSpec::validate(both).unwrap();
        assert_eq!((spec.encoding.map(|e| e.name()), spec.delimiter), (Some("GBK"), Some(b'\t')));
    }

    #[test]
    fn a_declared_date_form_makes_a_date_or_timestamp_column() {
        let with_form = |form: &str, data_type: Option<&str>| {
            let mut i = input();
            i.columns.insert(
                "seen".into(),
                ColumnInput {
                    tag: "attribute".into(),
                    format: Some(form.into()),
                    data_type: data_type.map(Into::into),
                    ..Default::default()
                },
            );
            i
        };
        let spec = DatasetSpec::validate(with_form("%d/%m/%Y", None)).unwrap();
        assert_eq!(spec.declared_types()["seen"], DeclaredType::Date);
        assert_eq!(spec.declared_formats()["seen"], "%d/%m/%Y");
        let spec = DatasetSpec::validate(with_form("%Y%m%d %H:%M", None)).unwrap();
        assert_eq!(spec.declared_types()["seen"], DeclaredType::Timestamp);
        assert_eq!(code_of(with_form("%Q", None)), "format_invalid");
        assert_eq!(code_of(with_form("%Y", Some("int64"))), "format_invalid");
    }

    #[test]
    fn a_correct_declaration_validates() {
        let spec = DatasetSpec::validate(input()).expect("valid");
        assert_eq!(spec.dataset.to_string(), "civil.elderly");
        assert_eq!(spec.level, Level::L3);
    }

    #[test]
    fn each_metadata_mistake_has_its_own_code() {
        let mut i = input();
        i.level = "L9".into();
        assert_eq!(code_of(i), "unknown_level");
        let mut i = input();
        i.columns.get_mut("age").expect("age").tag = "secret".into();
        assert_eq!(code_of(i), "unknown_tag");
        let mut i = input();
        i.columns.get_mut("age").expect("age").linkable = true;
        assert_eq!(code_of(i), "linkable_not_identifier");
        let mut i = input();
        i.columns.get_mut("age").expect("age").bounds = Some((5.0, 1.0));
        assert_eq!(code_of(i), "bounds_invalid");
        let mut i = input();
        i.columns.get_mut("age").expect("age").bounds = Some((0.0, 1.7e308));
        assert_eq!(code_of(i), "bounds_invalid");
        let mut i = input();
        i.privacy_unit = Some("age".into());
        assert_eq!(code_of(i), "privacy_unit_not_identifier");
        let mut i = input();
        i.privacy_unit = Some("nobody".into());
        assert_eq!(code_of(i), "privacy_unit_unknown");
        let mut i = input();
        i.privacy_unit = None;
        assert_eq!(code_of(i), "privacy_unit_required");
        let mut i = input();
        i.privacy_unit = None;
        i.level = "L2".into();
        assert!(DatasetSpec::validate(i).is_ok(), "L2 may be about no person");
        let mut i = input();
        i.columns.get_mut("person_id").expect("id").public_values = Some(vec!["a".into()]);
        assert_eq!(code_of(i), "public_values_invalid");
        let mut i = input();
        i.columns.get_mut("age").expect("age").public_values = Some(vec!["60".into(), "60".into()]);
        assert_eq!(code_of(i), "public_values_invalid");
        let mut i = input();
        i.dp.max_rows = Some(0);
        assert_eq!(code_of(i), "dp_invalid");
        let mut i = input();
        i.dp.epsilon_cap = Some(11.0);
        assert_eq!(code_of(i), "dp_invalid", "above the L3 cap of 10");
    }

    #[test]
    fn dp_settings_default_and_only_lower_the_level_cap() {
        let spec = DatasetSpec::validate(input()).expect("valid");
        assert_eq!(spec.dp, DpSettings::default());
        assert_eq!(spec.dp.cap(Level::L3), Some(10.0));
        let mut i = input();
        i.dp =
            DpInput { max_groups: Some(3), max_rows: Some(4), epsilon_cap: Some(2.0), noise: Some("gaussian".into()) };
        let spec = DatasetSpec::validate(i).expect("valid");
        assert_eq!((spec.dp.max_groups, spec.dp.max_rows), (3, 4));
        assert_eq!(spec.dp.cap(Level::L3), Some(2.0));
        assert_eq!(spec.dp.noise, veil_dp::Noise::Gaussian);
        assert_eq!(DpSettings::default().cap(Level::L2), None);
        let mut i = input();
        i.dp.noise = Some("normal".into());
        assert_eq!(code_of(i), "dp_invalid", "an unknown noise");
    }
}
