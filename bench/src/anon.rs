//! Anonymized aggregation on the demo world: how much of the exact answer survives (groups
//! released, relative error of each released value) and what it costs against raw DataFusion.
//!
//! The four demo departments' datasets (the same generator and seed as `veil serve --demo`)
//! are uploaded by their stewards; each query is asked by the department's own analyst, in
//! aggregate mode, so answers over people are anonymized (no policy line gives exact ones).
//! The exact answer is the same SQL through DataFusion over the Parquet file Veil stored.

use std::time::Instant;

use clap::Args;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde_json::json;
use veil_tests::TestServer;

use crate::overhead::veil_query;
use crate::stats::{Table, median, millis, ratio, spread};
use crate::utility::{Utility, compare};
use crate::{Common, Result};

/// Arguments of `veil-bench anon`.
#[derive(Debug, Args)]
pub(crate) struct AnonArgs {
    #[command(flatten)]
    common: Common,
    /// Residents in the demo world (`veil serve --demo` has 20,000).
    #[arg(long, default_value_t = 20_000)]
    people: usize,
    /// Counted runs per query (one more runs first as a warm-up).
    #[arg(long, default_value_t = 7)]
    runs: usize,
}

/// A question a department asks of its own data: who asks, the SQL, how many leading output
/// columns are group keys.
struct Question {
    analyst: &'static str,
    sql: &'static str,
    keys: usize,
}

const QUESTIONS: &[Question] = &[
    Question {
        analyst: "civil-analyst",
        sql: "SELECT district, count(*) AS people, avg(monthly_subsidy) AS subsidy
              FROM civil.elderly GROUP BY district ORDER BY district",
        keys: 1,
    },
    Question {
        analyst: "civil-analyst",
        sql: "SELECT district, care_level, count(*) AS people, sum(monthly_subsidy) AS subsidy
              FROM civil.elderly WHERE living_alone GROUP BY district, care_level ORDER BY district, care_level",
        keys: 2,
    },
    Question {
        analyst: "civil-analyst",
        sql: "SELECT date_trunc('year', birth_date) AS born, count(*) AS people
              FROM civil.elderly GROUP BY date_trunc('year', birth_date) ORDER BY born",
        keys: 1,
    },
    Question {
        analyst: "health-analyst",
        sql: "SELECT district, icd10, count(DISTINCT person_id) AS people, count(*) AS visits
              FROM health.visits GROUP BY district, icd10 ORDER BY district, icd10",
        keys: 2,
    },
    Question {
        analyst: "health-analyst",
        sql: "SELECT date_trunc('month', visit_date) AS month, count(*) AS visits, sum(cost) AS cost
              FROM health.visits GROUP BY date_trunc('month', visit_date) ORDER BY month",
        keys: 1,
    },
    Question {
        analyst: "hrss-analyst",
        sql: "SELECT district, employment_type, count(*) AS people, avg(monthly_contribution) AS contribution
              FROM hrss.social_insurance GROUP BY district, employment_type ORDER BY district, employment_type",
        keys: 2,
    },
    Question {
        analyst: "hotline-analyst",
        sql: "SELECT district, category, count(*) AS tickets, avg(hours_to_resolve) AS hours
              FROM hotline.tickets GROUP BY district, category ORDER BY district, category",
        keys: 2,
    },
    Question {
        analyst: "hotline-analyst",
        sql: "SELECT district, street, count(*) AS tickets, sum(satisfaction) AS satisfaction
              FROM hotline.tickets GROUP BY district, street ORDER BY district, street",
        keys: 2,
    },
];

pub(crate) async fn run(args: AnonArgs) -> Result<()> {
    let results = args.common.out.join("results");
    std::fs::create_dir_all(&results)?;
    let server = TestServer::start().await;
    let plain = SessionContext::new();
    let mut tokens = std::collections::HashMap::new();
    for (id, name) in veil_demo::DEPARTMENTS {
        server.department(id, name).await;
        plain.sql(&format!("CREATE SCHEMA {id}")).await?;
    }
    for (id, department, roles) in veil_demo::USERS {
        if department.is_some() {
            tokens.insert(id, server.user(id, department, roles).await);
        }
    }
    for dataset in veil_demo::generate(veil_demo::DEMO_SEED, args.people)? {
        let mut csv = Vec::new();
        arrow::csv::WriterBuilder::new().with_header(true).build(&mut csv).write(&dataset.batch)?;
        let steward = &tokens[format!("{}-steward", dataset.department).as_str()];
        let (status, body) = server.upload(steward, &dataset.metadata, csv).await;
        if !status.is_success() {
            return Err(format!("registering {}.{}: {status} {body}", dataset.department, dataset.name).into());
        }
        let stored = crate::tpch::stored_parquet(&server, dataset.department, dataset.name)?;
        let path = stored.to_str().ok_or("a stored path is not UTF-8")?;
        plain
            .register_parquet(format!("{}.{}", dataset.department, dataset.name), path, ParquetReadOptions::default())
            .await?;
    }

    let mut table = Table::new(&[
        "question",
        "groups released / exact",
        "median relative error",
        "DataFusion ms",
        "Veil ms",
        "Veil / DataFusion",
    ]);
    let mut raw = Vec::new();
    for q in QUESTIONS {
        let token = &tokens[q.analyst];
        let exact = plain.sql(q.sql).await?.collect().await?;
        let body = veil_query(&server, token, "aggregate", q.sql).await?;
        if !body["rules"].as_array().into_iter().flatten().any(|r| r["code"] == "anonymized") {
            return Err(format!("not anonymized: {}", q.sql).into());
        }
        let utility: Utility = compare(&exact, &body, q.keys)?;
        let (mut plain_s, mut veil_s, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..=args.runs {
            let started = Instant::now();
            plain.sql(q.sql).await?.collect().await?;
            let p = started.elapsed().as_secs_f64();
            let started = Instant::now();
            veil_query(&server, token, "aggregate", q.sql).await?;
            let v = started.elapsed().as_secs_f64();
            if run > 0 {
                plain_s.push(p);
                veil_s.push(v);
                ratios.push(v / p);
            }
        }
        let short: String = q.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        eprintln!("anon: {short}: groups {}, median error {}", utility.groups(), utility.median_error());
        table.row(vec![
            format!("`{short}`"),
            utility.groups(),
            utility.median_error(),
            spread(&plain_s, millis),
            spread(&veil_s, millis),
            spread(&ratios, ratio),
        ]);
        raw.push(json!({
            "sql": short, "groups_exact": utility.exact_groups, "groups_released": utility.released,
            "relative_errors": utility.errors, "datafusion_seconds": plain_s, "veil_seconds": veil_s,
            "ratio_median": median(&ratios),
        }));
    }
    let report = format!(
        "## Anonymized aggregation on the demo world ({} residents)\n\n\
         Each department's own analyst, aggregate mode; exact answers from DataFusion over the stored \
         Parquet. Errors: per released value, |Veil − exact| / max(|exact|, 1), median over the \
         question's values. Times: {} runs after a warm-up, median [p25–p75].\n\n{}",
        args.people,
        args.runs,
        table.markdown(),
    );
    println!("{report}");
    std::fs::write(results.join("anon.md"), &report)?;
    std::fs::write(results.join("anon.json"), serde_json::to_vec_pretty(&raw)?)?;
    Ok(())
}
