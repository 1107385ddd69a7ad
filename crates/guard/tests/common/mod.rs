//! The guard's test world: `civil.people`, `health.visits` and `civil.visits` (about people,
//! linked by `id`; the two `visits` alike but for their department), `civil.stops` and
//! `health.codes` (about nobody), as empty tables with their classification.

#![allow(clippy::unwrap_used, dead_code)] // tests: a failed fixture should fail loudly

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use veil_common::{Mode, Tag};
use veil_guard::{ColumnInfo, Contribution, DatasetInfo, GuardContext};

fn column(tag: Tag, linkable: bool, bounds: Option<(f64, f64)>) -> ColumnInfo {
    ColumnInfo { tag, linkable, generalize: None, bounds, public_values: None }
}

/// The session and the guard's context, in aggregate mode with k = 10.
pub(crate) async fn session() -> (SessionContext, GuardContext) {
    let ctx = SessionContext::new();
    let visit_fields = || {
        vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("icd10", DataType::Utf8, false),
            Field::new("cost", DataType::Float64, false),
        ]
    };
    let tables: [(&str, &str, Vec<Field>); 6] = [
        (
            "civil",
            "people",
            vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("name", DataType::Utf8, false),
                Field::new("district", DataType::Utf8, false),
                Field::new("birth_date", DataType::Date32, false),
                Field::new("alone", DataType::Boolean, false),
                Field::new("subsidy", DataType::Int64, false),
                Field::new("note", DataType::Int64, false),
                Field::new("balance", DataType::Int64, false),
            ],
        ),
        ("health", "visits", visit_fields()),
        ("civil", "visits", visit_fields()),
        (
            "civil",
            "stops",
            vec![Field::new("district", DataType::Utf8, false), Field::new("n", DataType::Int64, false)],
        ),
        (
            "civil",
            "districts",
            vec![Field::new("district", DataType::Utf8, false), Field::new("region", DataType::Utf8, false)],
        ),
        (
            "health",
            "codes",
            vec![Field::new("district", DataType::Utf8, false), Field::new("region", DataType::Utf8, false)],
        ),
    ];
    for (schema, name, fields) in tables {
        ctx.sql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await.unwrap();
        let table = MemTable::try_new(Arc::new(Schema::new(fields)), vec![vec![]]).unwrap();
        ctx.register_table(format!("{schema}.{name}"), Arc::new(table)).unwrap();
    }
    let people = DatasetInfo {
        privacy_unit: Some("id".into()),
        columns: HashMap::from([
            ("id".into(), column(Tag::Identifier, true, None)),
            ("name".into(), column(Tag::Identifier, false, None)),
            ("district".into(), column(Tag::QuasiIdentifier, false, None)),
            ("birth_date".into(), column(Tag::QuasiIdentifier, false, None)),
            ("alone".into(), column(Tag::Attribute, false, None)),
            ("subsidy".into(), column(Tag::Sensitive, false, Some((0.0, 3000.0)))),
            ("note".into(), column(Tag::Attribute, false, None)),
            // A sum that may be below zero.
            ("balance".into(), column(Tag::Sensitive, false, Some((-1000.0, 1000.0)))),
        ]),
        contribution: Contribution::default(),
        one_row_per_unit: true,
        capped: Default::default(),
        unique: Vec::new(),
        rows: 0,
    };
    let visits = DatasetInfo {
        privacy_unit: Some("id".into()),
        columns: HashMap::from([
            ("id".into(), column(Tag::Identifier, true, None)),
            ("icd10".into(), column(Tag::Sensitive, false, None)),
            ("cost".into(), column(Tag::Sensitive, false, Some((0.0, 5000.0)))),
        ]),
        contribution: Contribution::default(),
        one_row_per_unit: false,
        capped: Default::default(),
        unique: Vec::new(),
        rows: 0,
    };
    // Tables about nobody: every column an attribute.
    let about_nobody = |columns: [&str; 2]| DatasetInfo {
        privacy_unit: None,
        columns: columns.iter().map(|c| ((*c).to_owned(), column(Tag::Attribute, false, None))).collect(),
        contribution: Contribution::default(),
        one_row_per_unit: false,
        capped: Default::default(),
        unique: Vec::new(),
        rows: 0,
    };
    let stops = about_nobody(["district", "n"]);
    // A code table whose key was measured unique at registration.
    let districts = DatasetInfo { unique: vec!["district".into()], ..about_nobody(["district", "region"]) };
    let codes = about_nobody(["district", "region"]);
    let datasets = HashMap::from([
        (("civil".into(), "people".into()), people),
        (("civil".into(), "visits".into()), visits.clone()),
        (("health".into(), "visits".into()), visits),
        (("civil".into(), "stops".into()), stops),
        (("civil".into(), "districts".into()), districts),
        (("health".into(), "codes".into()), codes),
    ]);
    (
        ctx,
        GuardContext {
            mode: Mode::Aggregate,
            k: 10,
            datasets,
            exact_aggregates: false,
            capped_copies: Default::default(),
        },
    )
}
