//! Writes the demo's four datasets as CSV, each beside the metadata JSON a steward registers it
//! with, so they can be registered by hand against any server:
//!
//! ```text
//! cargo run -p example-demo-data -- OUT_DIR [PEOPLE]
//! veil dataset register --metadata OUT_DIR/civil.elderly.json --file OUT_DIR/civil.elderly.csv
//! ```
//!
//! The seed is fixed, so the files are the same on every run (and the same as `veil serve --demo`
//! loads, for the same number of people).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().ok_or("usage: example-demo-data OUT_DIR [PEOPLE]")?);
    let people: usize = args.next().map(|p| p.parse()).transpose()?.unwrap_or(20_000);
    std::fs::create_dir_all(&out)?;
    for dataset in veil_demo::generate(veil_demo::DEMO_SEED, people)? {
        let stem = format!("{}.{}", dataset.department, dataset.name);
        veil_demo::write_csv(&dataset.batch, &out.join(format!("{stem}.csv")))?;
        std::fs::write(out.join(format!("{stem}.json")), serde_json::to_string_pretty(&dataset.metadata)?)?;
        println!("{stem}: {} rows", dataset.batch.num_rows());
    }
    Ok(())
}
