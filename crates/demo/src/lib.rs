//! Deterministic synthetic data for the scenarios Veil exists for: one city's person space seen
//! by four departments.
//!
//! - 民政 `civil.elderly`: the registry of elderly residents (living alone, care level, subsidy).
//! - 卫健 `health.visits`: clinic visits with ICD-10 codes and cost.
//! - 人社 `hrss.social_insurance`: social insurance, including new-employment platform workers.
//! - 12345 `hotline.tickets`: hotline tickets by district and category, time to resolve,
//!   satisfaction.
//!
//! Everyone has an 18-digit 身份证号 with a valid GB 11643 check digit, a Chinese name, a phone
//! number and an address in a real Beijing district, so joins across departments on 身份证号
//! behave as in production. The same seed always gives the same data, so tests can compare
//! answers with the ground truth computed here.
//!
//! # Layout
//! - [`people`]: the person space.
//! - [`datasets`]: the four departments' datasets and their metadata.

#![warn(missing_docs)]

pub mod datasets;
pub mod people;

pub use datasets::{DemoDataset, generate, write_csv};

/// The seed `veil serve --demo` uses: every demo shows the same data, so walkthroughs and tests
/// can quote answers.
pub const DEMO_SEED: u64 = 20_261_123;

/// The demo's departments: id and display name.
pub const DEPARTMENTS: [(&str, &str); 4] = [
    ("civil", "民政局 Civil Affairs Bureau"),
    ("health", "卫生健康委员会 Health Commission"),
    ("hrss", "人力资源和社会保障局 Human Resources and Social Security Bureau"),
    ("hotline", "12345 市民服务热线 Citizen Service Hotline"),
];

/// The demo's users: id, department, roles.
pub const USERS: [(&str, Option<&str>, &[&str]); 10] = [
    ("civil-steward", Some("civil"), &["steward"]),
    ("health-steward", Some("health"), &["steward"]),
    ("hrss-steward", Some("hrss"), &["steward"]),
    ("hotline-steward", Some("hotline"), &["steward"]),
    ("civil-analyst", Some("civil"), &["analyst"]),
    ("health-analyst", Some("health"), &["analyst"]),
    ("hrss-analyst", Some("hrss"), &["analyst"]),
    ("hotline-analyst", Some("hotline"), &["analyst"]),
    ("auditor", None, &["auditor"]),
    ("ops-admin", None, &["admin"]),
];
