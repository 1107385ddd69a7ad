//! The four departments' datasets over one person space, and their metadata.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::error::ArrowError;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use time::{Date, Duration, Month};

use crate::people::{Person, generate_people, reference_date};

/// One generated dataset with the metadata a steward would register it with.
#[derive(Debug, Clone)]
pub struct DemoDataset {
    /// Owning department.
    pub department: &'static str,
    /// Dataset name.
    pub name: &'static str,
    /// Registration metadata (the JSON `POST /v1/datasets` takes).
    pub metadata: Value,
    /// The rows.
    pub batch: RecordBatch,
}

/// Generates every demo dataset over `people` residents from `seed`. The same arguments always
/// give the same data.
///
/// # Errors
/// Only an Arrow error assembling a batch, which would be a bug here.
pub fn generate(seed: u64, people: usize) -> Result<Vec<DemoDataset>, ArrowError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let persons = generate_people(&mut rng, people);
    Ok(vec![
        elderly(&mut rng, &persons)?,
        visits(&mut rng, &persons)?,
        social_insurance(&mut rng, &persons)?,
        tickets(&mut rng, &persons)?,
    ])
}

/// Writes a batch as CSV with a header.
///
/// # Errors
/// I/O or Arrow errors.
pub fn write_csv(batch: &RecordBatch, path: &Path) -> Result<(), ArrowError> {
    let file = std::fs::File::create(path)?;
    let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(file);
    writer.write(batch)
}

fn days_since_epoch(d: Date) -> i32 {
    (d - Date::from_calendar_date(1970, Month::January, 1).unwrap_or(Date::MIN)).whole_days() as i32
}

fn batch(fields: Vec<(&str, DataType, ArrayRef)>) -> Result<RecordBatch, ArrowError> {
    let schema = Schema::new(fields.iter().map(|(n, t, _)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>());
    RecordBatch::try_new(Arc::new(schema), fields.into_iter().map(|(_, _, a)| a).collect())
}

fn strings<'a>(v: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

fn elderly(rng: &mut ChaCha8Rng, persons: &[Person]) -> Result<DemoDataset, ArrowError> {
    let today = reference_date();
    let rows: Vec<&Person> = persons.iter().filter(|p| p.age_on(today) >= 60).collect();
    let mut living_alone = Vec::new();
    let mut care_level = Vec::new();
    let mut subsidy = Vec::new();
    for p in &rows {
        let age = p.age_on(today);
        let alone = rng.random_bool(if age >= 80 { 0.35 } else { 0.18 });
        let level = match age {
            60..=69 => ["自理", "自理", "自理", "轻度失能"].choose(rng),
            70..=79 => ["自理", "自理", "轻度失能", "中度失能"].choose(rng),
            _ => ["自理", "轻度失能", "中度失能", "重度失能"].choose(rng),
        }
        .copied()
        .unwrap_or("自理");
        let base = match level {
            "轻度失能" => 400.0,
            "中度失能" => 800.0,
            "重度失能" => 1200.0,
            _ => 0.0,
        };
        let s = base + if alone { 300.0 } else { 0.0 } + if age >= 80 { 200.0 } else { 0.0 };
        living_alone.push(alone);
        care_level.push(level);
        subsidy.push(s);
    }
    let batch = batch(vec![
        ("person_id", DataType::Utf8, strings(rows.iter().map(|p| p.id_number.as_str()))),
        ("name", DataType::Utf8, strings(rows.iter().map(|p| p.name.as_str()))),
        ("phone", DataType::Utf8, strings(rows.iter().map(|p| p.phone.as_str()))),
        ("gender", DataType::Utf8, strings(rows.iter().map(|p| p.gender))),
        (
            "birth_date",
            DataType::Date32,
            Arc::new(Date32Array::from_iter_values(rows.iter().map(|p| days_since_epoch(p.birth_date)))),
        ),
        ("district", DataType::Utf8, strings(rows.iter().map(|p| p.district_name()))),
        ("street", DataType::Utf8, strings(rows.iter().map(|p| p.street))),
        ("living_alone", DataType::Boolean, Arc::new(BooleanArray::from(living_alone))),
        ("care_level", DataType::Utf8, strings(care_level)),
        ("monthly_subsidy", DataType::Float64, Arc::new(Float64Array::from(subsidy))),
    ])?;
    let metadata = json!({
        "name": "elderly", "department": "civil", "level": "L3", "one_row_per_person": true,
        "description": "老年人信息登记: registry of residents aged 60 and over, with living arrangement, care level (失能等级) and monthly subsidy (养老服务补贴).",
        "privacy_unit": "person_id",
        "columns": {
            "person_id": {"tag": "identifier", "linkable": true, "type": "string"},
            "name": {"tag": "identifier"},
            "phone": {"tag": "identifier", "type": "string"},
            "gender": {"tag": "quasi_identifier"},
            "birth_date": {"tag": "quasi_identifier", "type": "date", "generalize": "year"},
            "district": {"tag": "quasi_identifier"},
            "street": {"tag": "quasi_identifier"},
            "living_alone": {"tag": "attribute"},
            "care_level": {"tag": "sensitive"},
            "monthly_subsidy": {"tag": "sensitive", "bounds": [0, 3000]}
        }
    });
    Ok(DemoDataset { department: "civil", name: "elderly", metadata, batch })
}

const CLINICS: [&str; 6] = ["社区卫生服务中心", "区医院", "市第一医院", "中医医院", "妇幼保健院", "口腔医院"];
const ACUTE: [(&str, &str, f64); 6] = [
    ("J06.9", "急性上呼吸道感染", 180.0),
    ("K29.7", "胃炎", 260.0),
    ("M54.5", "腰痛", 320.0),
    ("S93.4", "踝关节扭伤", 410.0),
    ("H10.9", "结膜炎", 120.0),
    ("R51", "头痛", 150.0),
];

fn visits(rng: &mut ChaCha8Rng, persons: &[Person]) -> Result<DemoDataset, ArrowError> {
    let today = reference_date();
    let start = today - Duration::days(730);
    let (mut ids, mut pid, mut date, mut clinic, mut district, mut icd, mut diag, mut cost) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for p in persons {
        let age = p.age_on(today);
        let elderly = age >= 60;
        let hypertension = rng.random_bool(if elderly { 0.45 } else { 0.12 });
        let diabetes = rng.random_bool(if elderly { 0.22 } else { 0.05 });
        // Some chronic patients stopped coming: their last visit is more than six months ago.
        let lapsed = rng.random_bool(0.3);
        let last_day = if lapsed { 730 - 200 } else { 730 };
        let n = rng.random_range(0..if elderly { 7 } else { 4 }) + usize::from(hypertension || diabetes) * 2;
        for _ in 0..n {
            let day = rng.random_range(0..last_day);
            let (code, name, base) = if hypertension && rng.random_bool(0.5) {
                ("I10", "原发性高血压", 260.0)
            } else if diabetes && rng.random_bool(0.5) {
                ("E11.9", "2型糖尿病", 380.0)
            } else {
                *ACUTE.choose(rng).unwrap_or(&ACUTE[0])
            };
            ids.push(format!("V{:08}", ids.len() + 1));
            pid.push(p.id_number.as_str());
            date.push(days_since_epoch(start + Duration::days(day)));
            clinic.push(CLINICS.choose(rng).copied().unwrap_or(CLINICS[0]));
            district.push(p.district_name());
            icd.push(code);
            diag.push(name);
            cost.push((base * rng.random_range(0.6..2.5) * 100.0_f64).round() / 100.0);
        }
    }
    let batch = batch(vec![
        ("visit_id", DataType::Utf8, strings(ids.iter().map(String::as_str))),
        ("person_id", DataType::Utf8, strings(pid)),
        ("visit_date", DataType::Date32, Arc::new(Date32Array::from(date))),
        ("clinic", DataType::Utf8, strings(clinic)),
        ("district", DataType::Utf8, strings(district)),
        ("icd10", DataType::Utf8, strings(icd)),
        ("diagnosis", DataType::Utf8, strings(diag)),
        ("cost", DataType::Float64, Arc::new(Float64Array::from(cost))),
    ])?;
    let metadata = json!({
        "name": "visits", "department": "health", "level": "L4",
        "description": "门诊就诊记录: outpatient visits over two years with ICD-10 diagnosis and cost. Health data is sensitive personal information (PIPL Art. 28).",
        "privacy_unit": "person_id",
        "columns": {
            "visit_id": {"tag": "attribute"},
            "person_id": {"tag": "identifier", "linkable": true, "type": "string"},
            "visit_date": {"tag": "quasi_identifier", "type": "date", "generalize": "month"},
            "clinic": {"tag": "attribute"},
            "district": {"tag": "quasi_identifier"},
            "icd10": {"tag": "sensitive"},
            "diagnosis": {"tag": "sensitive"},
            "cost": {"tag": "sensitive", "bounds": [0, 20000]}
        },
        "dp": {"max_groups": 4, "max_rows": 5}
    });
    Ok(DemoDataset { department: "health", name: "visits", metadata, batch })
}

const PLATFORM_JOBS: [(&str, &[&str]); 3] = [
    ("外卖骑手", &["美团", "饿了么"]),
    ("网约车司机", &["滴滴", "曹操出行"]),
    ("快递员", &["顺丰", "京东物流", "中通"]),
];

fn social_insurance(rng: &mut ChaCha8Rng, persons: &[Person]) -> Result<DemoDataset, ArrowError> {
    let today = reference_date();
    let rows: Vec<&Person> = persons.iter().filter(|p| (18..60).contains(&p.age_on(today))).collect();
    let (mut job, mut platform, mut pension, mut medical, mut injury, mut contribution) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in &rows {
        let on_platform = rng.random_bool(0.22);
        let (j, pl) = if on_platform {
            let (j, platforms) = PLATFORM_JOBS.choose(rng).copied().unwrap_or(PLATFORM_JOBS[0]);
            (j, platforms.choose(rng).copied().unwrap_or(""))
        } else if rng.random_bool(0.15) {
            ("灵活就业", "")
        } else {
            ("企业职工", "")
        };
        let covered = if on_platform {
            0.45
        } else if j == "灵活就业" {
            0.6
        } else {
            0.97
        };
        let p = rng.random_bool(covered);
        let m = rng.random_bool(if on_platform { 0.55 } else { covered });
        let i = rng.random_bool(if on_platform { 0.35 } else { covered * 0.9 });
        job.push(j);
        platform.push(if pl.is_empty() { None } else { Some(pl) });
        pension.push(p);
        medical.push(m);
        injury.push(i);
        contribution.push(if p { (rng.random_range(600.0..2600.0_f64) * 100.0).round() / 100.0 } else { 0.0 });
    }
    let batch = batch(vec![
        ("person_id", DataType::Utf8, strings(rows.iter().map(|p| p.id_number.as_str()))),
        ("name", DataType::Utf8, strings(rows.iter().map(|p| p.name.as_str()))),
        ("gender", DataType::Utf8, strings(rows.iter().map(|p| p.gender))),
        (
            "birth_date",
            DataType::Date32,
            Arc::new(Date32Array::from_iter_values(rows.iter().map(|p| days_since_epoch(p.birth_date)))),
        ),
        ("district", DataType::Utf8, strings(rows.iter().map(|p| p.district_name()))),
        ("employment_type", DataType::Utf8, strings(job)),
        ("platform", DataType::Utf8, Arc::new(StringArray::from(platform))),
        ("pension_insured", DataType::Boolean, Arc::new(BooleanArray::from(pension))),
        ("medical_insured", DataType::Boolean, Arc::new(BooleanArray::from(medical))),
        ("injury_insured", DataType::Boolean, Arc::new(BooleanArray::from(injury))),
        ("monthly_contribution", DataType::Float64, Arc::new(Float64Array::from(contribution))),
    ])?;
    let metadata = json!({
        "name": "social_insurance", "department": "hrss", "level": "L3", "one_row_per_person": true,
        "description": "社会保险参保登记: working-age residents' pension, medical and work-injury insurance, including new-employment platform workers (新就业形态劳动者).",
        "privacy_unit": "person_id",
        "columns": {
            "person_id": {"tag": "identifier", "linkable": true, "type": "string"},
            "name": {"tag": "identifier"},
            "gender": {"tag": "quasi_identifier"},
            "birth_date": {"tag": "quasi_identifier", "type": "date", "generalize": "year"},
            "district": {"tag": "quasi_identifier"},
            "employment_type": {"tag": "attribute"},
            "platform": {"tag": "attribute"},
            "pension_insured": {"tag": "attribute"},
            "medical_insured": {"tag": "attribute"},
            "injury_insured": {"tag": "attribute"},
            "monthly_contribution": {"tag": "sensitive", "bounds": [0, 5000]}
        }
    });
    Ok(DemoDataset { department: "hrss", name: "social_insurance", metadata, batch })
}

/// Hotline categories with their base monthly weight and monthly growth; 医保咨询 rises month
/// over month so that the trend scenario has something to flag.
const CATEGORIES: [(&str, f64, f64); 8] = [
    ("噪音扰民", 1.0, 0.0),
    ("物业管理", 1.2, 0.0),
    ("供暖", 0.4, 0.0),
    ("医保咨询", 0.3, 0.12),
    ("养老服务", 0.5, 0.02),
    ("交通出行", 0.9, 0.0),
    ("环境卫生", 0.8, 0.0),
    ("劳动争议", 0.5, 0.01),
];

fn tickets(rng: &mut ChaCha8Rng, persons: &[Person]) -> Result<DemoDataset, ArrowError> {
    let (
        mut id,
        mut caller,
        mut phone,
        mut district,
        mut street,
        mut category,
        mut created,
        mut hours,
        mut within,
        mut satisfaction,
    ) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let epoch = time::PrimitiveDateTime::new(
        Date::from_calendar_date(1970, Month::January, 1).unwrap_or(Date::MIN),
        time::Time::MIDNIGHT,
    );
    for month in 1..=10u8 {
        let month_start =
            Date::from_calendar_date(2026, Month::try_from(month).unwrap_or(Month::January), 1).unwrap_or(Date::MIN);
        let n = persons.len() / 10;
        for _ in 0..n {
            let weights: Vec<f64> =
                CATEGORIES.iter().map(|(_, w, g)| w * (1.0 + g).powi(i32::from(month) - 1)).collect();
            let total: f64 = weights.iter().sum();
            let mut pick = rng.random_range(0.0..total);
            let mut cat = CATEGORIES[0].0;
            for ((name, _, _), w) in CATEGORIES.iter().zip(&weights) {
                if pick < *w {
                    cat = name;
                    break;
                }
                pick -= w;
            }
            let p = persons.choose(rng).unwrap_or(&persons[0]);
            let at = time::PrimitiveDateTime::new(
                month_start + Duration::days(rng.random_range(0..28)),
                time::Time::from_hms(rng.random_range(7..22), rng.random_range(0..60), 0)
                    .unwrap_or(time::Time::MIDNIGHT),
            );
            let h = (rng.random_range(0.5..1.0_f64) * if rng.random_bool(0.7) { 24.0 } else { 120.0 } * 10.0).round()
                / 10.0;
            id.push(format!("T2026{:07}", id.len() + 1));
            caller.push(p.id_number.as_str());
            phone.push(p.phone.as_str());
            district.push(p.district_name());
            street.push(p.street);
            category.push(cat);
            created.push((at - epoch).whole_microseconds() as i64);
            hours.push(h);
            within.push(h <= 24.0);
            satisfaction.push(if h <= 24.0 { rng.random_range(3..=5) } else { rng.random_range(1..=4) });
        }
    }
    let batch = batch(vec![
        ("ticket_id", DataType::Utf8, strings(id.iter().map(String::as_str))),
        ("caller_id", DataType::Utf8, strings(caller)),
        ("caller_phone", DataType::Utf8, strings(phone)),
        ("district", DataType::Utf8, strings(district)),
        ("street", DataType::Utf8, strings(street)),
        ("category", DataType::Utf8, strings(category)),
        ("created_at", ts_type(), Arc::new(TimestampMicrosecondArray::from(created))),
        ("hours_to_resolve", DataType::Float64, Arc::new(Float64Array::from(hours))),
        ("resolved_within_24h", DataType::Boolean, Arc::new(BooleanArray::from(within))),
        ("satisfaction", DataType::Int64, Arc::new(Int64Array::from(satisfaction))),
    ])?;
    let metadata = json!({
        "name": "tickets", "department": "hotline", "level": "L2",
        "description": "12345 接诉即办工单: citizen hotline tickets January to October 2026, by district, street and category, with hours to resolve and satisfaction (1-5).",
        "privacy_unit": "caller_id",
        "columns": {
            "ticket_id": {"tag": "attribute"},
            "caller_id": {"tag": "identifier", "linkable": true, "type": "string"},
            "caller_phone": {"tag": "identifier", "type": "string"},
            "district": {"tag": "quasi_identifier"},
            "street": {"tag": "quasi_identifier"},
            "category": {"tag": "attribute"},
            "created_at": {"tag": "attribute", "type": "timestamp"},
            "hours_to_resolve": {"tag": "attribute", "bounds": [0, 720]},
            "resolved_within_24h": {"tag": "attribute"},
            "satisfaction": {"tag": "attribute", "bounds": [1, 5]}
        },
        "dp": {"max_groups": 3, "max_rows": 2}
    });
    Ok(DemoDataset { department: "hotline", name: "tickets", metadata, batch })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_covers_every_department() {
        let a = generate(42, 2000).expect("generate");
        let b = generate(42, 2000).expect("generate");
        assert_eq!(a.len(), 4);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.batch, y.batch, "{}.{} differs between runs", x.department, x.name);
            assert!(x.batch.num_rows() > 100, "{}.{} is too small", x.department, x.name);
            let columns = x.metadata["columns"].as_object().expect("columns");
            assert_eq!(columns.len(), x.batch.num_columns(), "every column of {}.{} is tagged", x.department, x.name);
        }
        let c = generate(43, 2000).expect("generate");
        assert_ne!(a[0].batch, c[0].batch, "another seed gives other data");
    }
}
