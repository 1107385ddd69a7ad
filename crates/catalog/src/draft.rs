//! Drafting a dataset's metadata from a sample of its file, for a steward to review: a type, a
//! suggested tag and the reason for it per column, a privacy unit, observed bounds, and a level
//! with the rule that suggests it. Nothing is registered; nothing read from the file is in a
//! reason (reasons name what was recognised, never a value).
//!
//! The detector recognises values by their form and, where a form has one, its check digit:
//! 身份证号 (GB 11643, ISO 7064 MOD 11-2), unified social credit codes (GB 32100, mod 31), bank
//! card numbers (Luhn), mobile and landline numbers, e-mail addresses, ICD-10 codes, Chinese
//! personal names (2–4 Han characters starting with a common surname), addresses (place words);
//! then column names, in Chinese and English. The checks are a few lines each and written here:
//! no crate in the registries does these Chinese formats.

use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use veil_common::{Level, Tag};
use veil_ingest::{ReadOptions, SourceFormat};

use crate::Result;

/// How many rows a draft reads.
pub const SAMPLE_ROWS: usize = 2_000;

/// The share of a column's sampled values that must have a form for the column to be taken as
/// of that form.
const SHARE: f64 = 0.9;

/// What a column's values were recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recognised {
    /// 身份证号 with a valid check character.
    IdNumber,
    /// Mobile or landline numbers.
    Phone,
    /// E-mail addresses.
    Email,
    /// Bank card numbers with a valid Luhn digit.
    BankCard,
    /// Unified social credit codes with a valid check character.
    CreditCode,
    /// ICD-10 diagnosis codes.
    Icd10,
    /// Chinese personal names.
    PersonName,
    /// Addresses.
    Address,
}

impl Recognised {
    fn describe(self) -> &'static str {
        match self {
            Recognised::IdNumber => "身份证号 (check character valid)",
            Recognised::Phone => "phone numbers",
            Recognised::Email => "e-mail addresses",
            Recognised::BankCard => "bank card numbers (Luhn digit valid)",
            Recognised::CreditCode => "unified social credit codes (check character valid)",
            Recognised::Icd10 => "ICD-10 diagnosis codes",
            Recognised::PersonName => "Chinese personal names",
            Recognised::Address => "addresses",
        }
    }
}

/// One column's draft.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDraft {
    /// Its name in the file.
    pub name: String,
    /// Its type as read (`string`, `int64`, `float64`, `boolean`, `date`, `timestamp`).
    pub data_type: &'static str,
    /// The suggested tag.
    pub tag: Tag,
    /// Whether it is suggested as a linkable identifier.
    pub linkable: bool,
    /// The smallest and largest value sampled, for a number (observed, not declared).
    pub bounds: Option<(f64, f64)>,
    /// A suggested generalization, for a quasi-identifier.
    pub generalize: Option<&'static str>,
    /// What its values were recognised as, if anything.
    pub recognised: Option<Recognised>,
    /// Why the tag is suggested.
    pub reason: String,
}

/// A dataset's draft.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// Every column, in the file's order.
    pub columns: Vec<ColumnDraft>,
    /// The suggested privacy unit: the first column of 身份证号, else the first identifier
    /// named like a person's id.
    pub privacy_unit: Option<String>,
    /// The suggested level.
    pub level: Level,
    /// The rule that suggests it.
    pub level_reason: String,
    /// Rows read.
    pub rows_sampled: usize,
}

impl Draft {
    /// The draft as the metadata document a registration takes (`name`, `department`, `level`,
    /// `privacy_unit`, and per column its tag, type, `linkable`, observed `bounds` of a number that
    /// is not an identifier, `generalize`).
    pub fn metadata(&self, name: &str, department: &str) -> serde_json::Value {
        use serde_json::json;
        let mut columns = serde_json::Map::new();
        for c in &self.columns {
            let mut column = json!({"tag": c.tag.to_string(), "type": c.data_type});
            if c.linkable {
                column["linkable"] = json!(true);
            }
            if let Some((lo, hi)) = c.bounds.filter(|_| c.tag != Tag::Identifier && c.tag != Tag::QuasiIdentifier) {
                column["bounds"] = json!([lo, hi]);
            }
            if let Some(g) = c.generalize {
                column["generalize"] = json!(g);
            }
            columns.insert(c.name.clone(), column);
        }
        let mut metadata = json!({
            "name": name, "department": department, "level": self.level.to_string(),
            "description": "", "columns": columns,
        });
        if let Some(unit) = &self.privacy_unit {
            metadata["privacy_unit"] = json!(unit);
        }
        metadata
    }
}

/// Drafts the metadata of the file at `path` (any format registration reads) from its first
/// [`SAMPLE_ROWS`] rows.
///
/// # Errors
/// The file cannot be read, as a registration would say.
pub fn draft(path: &Path) -> Result<Draft> {
    let format = SourceFormat::sniff(path)?;
    let source = veil_ingest::open(path, format, &ReadOptions::with_declared(Default::default()))?;
    let schema = source.schema.clone();
    let mut values: Vec<Vec<String>> = vec![Vec::new(); schema.fields().len()];
    let mut numbers: Vec<Option<(f64, f64)>> = vec![None; schema.fields().len()];
    let mut rows = 0;
    for batch in source.batches {
        let batch = batch?;
        let take = batch.num_rows().min(SAMPLE_ROWS - rows);
        for (i, column) in batch.columns().iter().enumerate() {
            let column = column.slice(0, take);
            if column.data_type().is_numeric() {
                let floats = arrow::compute::cast(&column, &DataType::Float64).map_err(sample_error)?;
                for v in floats.as_primitive::<arrow::datatypes::Float64Type>().iter().flatten() {
                    let (lo, hi) = numbers[i].get_or_insert((v, v));
                    *lo = lo.min(v);
                    *hi = hi.max(v);
                }
            }
            let text = arrow::compute::cast(&column, &DataType::Utf8).map_err(sample_error)?;
            values[i].extend(text.as_string::<i32>().iter().flatten().map(str::to_owned));
        }
        rows += take;
        if rows >= SAMPLE_ROWS {
            break;
        }
    }
    let mut columns = Vec::with_capacity(values.len());
    for ((field, sample), bounds) in schema.fields().iter().zip(&values).zip(numbers) {
        columns.push(column_draft(field.name(), field.data_type(), sample, bounds));
    }
    let privacy_unit = columns
        .iter()
        .find(|c| c.recognised == Some(Recognised::IdNumber))
        .or_else(|| columns.iter().find(|c| c.tag == Tag::Identifier && c.linkable))
        .map(|c| c.name.clone());
    if let Some(unit) = &privacy_unit
        && let Some(c) = columns.iter_mut().find(|c| c.name == *unit)
    {
        c.linkable = true;
    }
    let (level, level_reason) = level_of(&columns);
    Ok(Draft { columns, privacy_unit, level, level_reason, rows_sampled: rows })
}

/// A sampled column that does not cast to text or a number (a bug: every stored type does).
fn sample_error(e: arrow::error::ArrowError) -> crate::Error {
    crate::Error::Ingest(veil_ingest::Error::Decode { format: "sample", message: e.to_string() })
}

fn column_draft(name: &str, data_type: &DataType, sample: &[String], bounds: Option<(f64, f64)>) -> ColumnDraft {
    let type_name = match data_type {
        DataType::Int64 => "int64",
        DataType::Float64 => "float64",
        DataType::Boolean => "boolean",
        DataType::Date32 => "date",
        DataType::Timestamp(..) => "timestamp",
        _ => "string",
    };
    let recognised = recognise(sample);
    let hint = hint(name);
    let numeric = data_type.is_numeric();
    let mut draft = ColumnDraft {
        name: name.to_owned(),
        data_type: type_name,
        tag: Tag::Attribute,
        linkable: false,
        bounds: if numeric { bounds } else { None },
        generalize: None,
        recognised,
        reason: String::new(),
    };
    let (tag, reason) = match (recognised, hint) {
        (Some(r @ Recognised::Icd10), _) => {
            (Tag::Sensitive, format!("values are {} (health: sensitive)", r.describe()))
        }
        (Some(r @ Recognised::Address), _) => (Tag::QuasiIdentifier, format!("values are {}", r.describe())),
        (Some(r), _) => {
            draft.linkable = matches!(r, Recognised::IdNumber | Recognised::CreditCode);
            (Tag::Identifier, format!("values are {}", r.describe()))
        }
        (None, Some(Hint::Identifier)) => (Tag::Identifier, "its name says it identifies a person".to_owned()),
        (None, Some(Hint::Id)) if !numeric => {
            draft.linkable = true;
            (Tag::Identifier, "its name says it is a person's id".to_owned())
        }
        (None, Some(Hint::Sensitive)) => (Tag::Sensitive, "its name says health, money or welfare".to_owned()),
        (None, Some(Hint::Birth)) => {
            draft.generalize = Some("month");
            (Tag::QuasiIdentifier, "its name says a birth date".to_owned())
        }
        (None, Some(Hint::Age)) => {
            draft.generalize = Some("band:5");
            (Tag::QuasiIdentifier, "its name says an age".to_owned())
        }
        (None, Some(Hint::Place | Hint::Gender)) => {
            (Tag::QuasiIdentifier, "its name says a place or a gender, which single people out together".to_owned())
        }
        _ => (Tag::Attribute, "nothing recognised in its values or name".to_owned()),
    };
    draft.tag = tag;
    draft.reason = match (numeric, draft.bounds) {
        (true, Some((lo, hi))) if tag != Tag::Identifier => {
            format!("{reason}; bounds are the sampled range [{lo}, {hi}], observed: declare the true ones")
        }
        _ => reason,
    };
    draft
}

/// The level the columns suggest, with its rule (GB/T 43697 levels; GB/T 45574-2025's sensitive
/// personal information: health and financial accounts).
fn level_of(columns: &[ColumnDraft]) -> (Level, String) {
    let any = |f: &dyn Fn(&ColumnDraft) -> bool| columns.iter().any(f);
    let personal = any(&|c| matches!(c.tag, Tag::Identifier | Tag::QuasiIdentifier));
    if !personal {
        return (Level::L1, "no column identifies a person: data about nobody (一般数据1级)".into());
    }
    if any(&|c| matches!(c.recognised, Some(Recognised::Icd10 | Recognised::BankCard))) {
        return (
            Level::L4,
            "health or financial-account data about people: sensitive personal information (GB/T 45574-2025), 一般数据4级"
                .into(),
        );
    }
    if any(&|c| c.tag == Tag::Sensitive) || any(&|c| c.recognised == Some(Recognised::IdNumber)) {
        return (Level::L3, "identity numbers or sensitive values about people (一般数据3级)".into());
    }
    (Level::L2, "personal information without sensitive values (一般数据2级)".into())
}

/// A test of one value's form.
type Check = fn(&str) -> bool;

/// What most of `sample` is, if anything.
fn recognise(sample: &[String]) -> Option<Recognised> {
    let values: Vec<&str> = sample.iter().map(|v| v.trim()).filter(|v| !v.is_empty()).collect();
    if values.len() < 5 {
        return None;
    }
    let checks: [(Recognised, Check); 8] = [
        (Recognised::IdNumber, is_id_number),
        (Recognised::CreditCode, is_credit_code),
        (Recognised::BankCard, is_bank_card),
        (Recognised::Phone, is_phone),
        (Recognised::Email, is_email),
        (Recognised::Icd10, is_icd10),
        (Recognised::PersonName, is_person_name),
        (Recognised::Address, is_address),
    ];
    checks.into_iter().find_map(|(what, check)| {
        let hits = values.iter().filter(|v| check(v)).count();
        (hits as f64 >= SHARE * values.len() as f64).then_some(what)
    })
}

/// A 身份证号: 17 digits and a check character (ISO 7064 MOD 11-2).
fn is_id_number(v: &str) -> bool {
    let b = v.as_bytes();
    if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = b[..17].iter().zip(WEIGHTS).map(|(d, w)| u32::from(d - b'0') * w).sum();
    b"10X98765432"[(sum % 11) as usize] == b[17].to_ascii_uppercase()
}

/// A unified social credit code: 18 characters of its alphabet, the last a mod-31 check.
fn is_credit_code(v: &str) -> bool {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
    const WEIGHTS: [usize; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];
    let b = v.as_bytes();
    if b.len() != 18 || b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let Some(codes) = b.iter().map(|c| ALPHABET.iter().position(|a| a == c)).collect::<Option<Vec<usize>>>() else {
        return false;
    };
    let sum: usize = codes[..17].iter().zip(WEIGHTS).map(|(c, w)| c * w).sum();
    (31 - sum % 31) % 31 == codes[17]
}

/// A bank card number: 16 to 19 digits with a valid Luhn digit.
fn is_bank_card(v: &str) -> bool {
    let digits: Vec<u32> =
        v.chars().filter(|c| *c != ' ').map(|c| c.to_digit(10)).collect::<Option<_>>().unwrap_or_default();
    if !(16..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 =
        digits.iter().rev().enumerate().map(|(i, d)| if i % 2 == 1 { (d * 2) / 10 + (d * 2) % 10 } else { *d }).sum();
    sum.is_multiple_of(10)
}

/// A mobile number (`1[3-9]` and nine digits, `+86` allowed) or a landline (`0`, an area code,
/// seven or eight digits).
fn is_phone(v: &str) -> bool {
    let digits: String = v.trim_start_matches("+86").chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let b = digits.as_bytes();
    (b.len() == 11 && b[0] == b'1' && (b'3'..=b'9').contains(&b[1])) || ((10..=12).contains(&b.len()) && b[0] == b'0')
}

fn is_email(v: &str) -> bool {
    match v.split_once('@') {
        Some((user, domain)) => {
            !user.is_empty() && domain.contains('.') && !domain.starts_with('.') && !v.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// An ICD-10 code: a letter, two digits, optionally a point and one or two more characters.
fn is_icd10(v: &str) -> bool {
    let b = v.as_bytes();
    let base = b.len() >= 3 && b[0].is_ascii_uppercase() && b[1].is_ascii_digit() && b[2].is_ascii_digit();
    base && match &b[3..] {
        [] => true,
        [b'.', rest @ ..] => (1..=2).contains(&rest.len()) && rest.iter().all(u8::is_ascii_alphanumeric),
        _ => false,
    }
}

/// The commonest Chinese surnames (about 80% of people).
const SURNAMES: &str = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤";

fn is_person_name(v: &str) -> bool {
    let chars: Vec<char> = v.chars().collect();
    (2..=4).contains(&chars.len())
        && chars.iter().all(|c| ('\u{4e00}'..='\u{9fff}').contains(c))
        && SURNAMES.contains(chars[0])
}

fn is_address(v: &str) -> bool {
    v.chars().count() >= 6
        && ["省", "市", "区", "县", "镇", "乡", "街道", "路", "号", "村", "弄"]
            .iter()
            .filter(|w| v.contains(*w))
            .count()
            >= 2
}

/// What a column's name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    /// A person's id (linkable).
    Id,
    /// A name, phone, address or other direct identifier.
    Identifier,
    Birth,
    Age,
    Gender,
    Place,
    Sensitive,
}

fn hint(name: &str) -> Option<Hint> {
    let n = name.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| n.contains(w));
    if has(&["身份证", "证件号", "id_card", "idcard", "person_id", "citizen_id", "resident_id"]) {
        Some(Hint::Id)
    } else if has(&[
        "姓名",
        "名字",
        "电话",
        "手机",
        "phone",
        "mobile",
        "email",
        "邮箱",
        "地址",
        "address",
        "银行卡",
        "card_no",
    ]) || n == "name"
        || n.ends_with("_name") && !has(&["district", "street", "clinic", "platform"])
    {
        Some(Hint::Identifier)
    } else if has(&["出生", "生日", "birth"]) {
        Some(Hint::Birth)
    } else if has(&["年龄", "age"]) && !has(&["page", "stage", "wage", "usage"]) {
        Some(Hint::Age)
    } else if has(&["性别", "gender", "sex"]) {
        Some(Hint::Gender)
    } else if has(&["区", "县", "街道", "乡镇", "社区", "district", "street", "county", "zip", "邮编"]) {
        Some(Hint::Place)
    } else if has(&[
        "诊断",
        "疾病",
        "病",
        "icd",
        "diagnos",
        "收入",
        "工资",
        "薪",
        "salary",
        "income",
        "补贴",
        "subsidy",
        "救助",
        "低保",
        "金额",
        "amount",
        "费用",
        "cost",
        "contribution",
        "缴费",
        "护理",
        "残疾",
        "disab",
    ]) {
        Some(Hint::Sensitive)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{is_bank_card, is_credit_code, is_icd10, is_id_number, is_person_name, is_phone};

    #[test]
    fn check_digits_and_forms_are_recognised() {
        assert!(is_id_number("11010519491231002X") || is_id_number("110105194912310021"));
        assert!(is_id_number("11010119800307451X") != is_id_number("110101198003074510"));
        assert!(is_credit_code("91350100M000100Y43"));
        assert!(!is_credit_code("91350100M000100Y44"));
        assert!(is_bank_card("6222021234567890128") != is_bank_card("6222021234567890127"));
        assert!(is_phone("13812345678") && is_phone("010-62345678") && !is_phone("12812345678"));
        assert!(is_icd10("I10") && is_icd10("E11.9") && !is_icd10("I1"));
        assert!(is_person_name("张三") && !is_person_name("甲区") && !is_person_name("Zhang"));
    }
}
