//! The table cache: each dataset's table provider for its current file, small datasets kept
//! decoded in memory within a budget, large ones read from Parquet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider, TableProvider,
};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::context::SessionState;
use veil_common::DatasetRef;

use crate::Result;
use crate::error::internal;

/// Datasets of about this many rows or fewer are decoded once and kept in memory: for them,
/// opening and decoding the Parquet file is most of a query's time ([`in_memory`]).
pub(crate) const IN_MEMORY_ROWS: u64 = 64 * 1024;

/// Whether the file at `path`, of `rows` rows, is small enough to keep decoded. The line lies
/// between half and one and a half times [`IN_MEMORY_ROWS`], drawn per file by a hash of its
/// path (each version's file and capped copy is named by a random id): a fixed line let a red
/// team tell twin datasets on either side of it apart by the time of a dp query, when one
/// person's rows made the difference. With a line nobody knows, the few rows one person adds
/// to a capped copy cross it for few datasets in a thousand.
pub(crate) fn in_memory(path: &Path, rows: u64) -> bool {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let drawn = BuildHasherDefault::<DefaultHasher>::default().hash_one(path) % IN_MEMORY_ROWS;
    rows <= IN_MEMORY_ROWS / 2 + drawn
}

/// Most memory the datasets kept decoded may take together; beyond it, small datasets are read
/// from Parquet like large ones.
pub(crate) const IN_MEMORY_BYTES: usize = 256 << 20;

/// Which of a dataset's files a table reads: its version, or the copy of it keeping the cap
/// of each person's rows.
pub(crate) type TableKey = (DatasetRef, bool);

/// Table providers by dataset (department, name) and file kind ([`TableKey`]), each for one
/// file.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    by_dataset: HashMap<TableKey, CachedTable>,
    /// Bytes of the tables kept in memory.
    in_memory: usize,
}

#[derive(Debug)]
pub(crate) struct CachedTable {
    file: PathBuf,
    table: Arc<dyn TableProvider>,
    /// Bytes it holds in memory (0 for a Parquet-backed one).
    bytes: usize,
}

impl Tables {
    /// The provider of `dataset` if it is for `file`.
    pub(crate) fn get(&self, dataset: &TableKey, file: &Path) -> Option<Arc<dyn TableProvider>> {
        self.by_dataset.get(dataset).filter(|c| c.file == file).map(|c| Arc::clone(&c.table))
    }

    /// Keeps a provider for `dataset`'s `file`, replacing the one for an older file, and
    /// returns it: the `decoded` one (with the bytes it holds) if it fits in memory, else the
    /// Parquet-backed one.
    pub(crate) fn put(
        &mut self,
        dataset: TableKey,
        file: PathBuf,
        parquet: Arc<dyn TableProvider>,
        decoded: Option<(Arc<dyn TableProvider>, usize)>,
    ) -> Arc<dyn TableProvider> {
        if let Some(old) = self.by_dataset.remove(&dataset) {
            self.in_memory -= old.bytes;
        }
        let (table, bytes) = match decoded {
            Some((table, bytes)) if self.in_memory + bytes <= IN_MEMORY_BYTES => (table, bytes),
            _ => (parquet, 0),
        };
        self.in_memory += bytes;
        self.by_dataset.insert(dataset, CachedTable { file, table: Arc::clone(&table), bytes });
        table
    }
}

/// A table reading one Parquet file; for a file about people (`personal`), never skipping a
/// row group, page or file by its statistics or bloom filters. The format's own options decide
/// that, not the session's: a red team found a dp filter no row passed answered without reading
/// the file unless some stored value lay in its range (twice as fast), and bisected a planted
/// person's exact income, the column's largest, in 63 queries.
pub(crate) async fn parquet_table(path: &Path, state: &SessionState, personal: bool) -> Result<Arc<dyn TableProvider>> {
    let url = ListingTableUrl::parse(path.to_string_lossy()).map_err(internal)?;
    let mut format = ParquetFormat::default();
    if personal {
        let mut options = format.options().clone();
        options.global.pruning = false;
        options.global.enable_page_index = false;
        options.global.bloom_filter_on_read = false;
        format = format.with_options(options);
    }
    let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
    let config =
        ListingTableConfig::new(url).with_listing_options(options).infer_schema(state).await.map_err(internal)?;
    Ok(Arc::new(ListingTable::try_new(config).map_err(internal)?))
}

/// Registers `table` as `schema.name` in a request's catalogue.
pub(crate) fn register(
    catalog: &MemoryCatalogProvider,
    schema: &str,
    name: &str,
    table: Arc<dyn TableProvider>,
) -> Result<()> {
    let provider = match catalog.schema(schema) {
        Some(s) => s,
        None => {
            let s: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
            catalog.register_schema(schema, Arc::clone(&s)).map_err(internal)?;
            s
        }
    };
    provider.register_table(name.to_owned(), table).map_err(internal)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use datafusion::datasource::MemTable;

    use super::*;
    use crate::testing::noisy_scan;

    /// The rows the scan of `table` reads for `income > 5000`, where every stored income is
    /// below 1,000: a file about people is read whole (a red team timed the difference and
    /// bisected a planted person's income, the column's largest).
    async fn rows_read(personal: bool) -> usize {
        use datafusion::arrow::array::{Int64Array, RecordBatch};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::common::tree_node::TreeNode;
        use datafusion::parquet::arrow::ArrowWriter;
        use datafusion::parquet::file::properties::WriterProperties;
        use datafusion::physical_plan::collect;
        use datafusion::prelude::{SessionConfig, SessionContext, col, lit};

        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("people.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new("income", DataType::Int64, false)]));
        let props = WriterProperties::builder().set_max_row_group_row_count(Some(100)).build();
        let file = std::fs::File::create(&path).expect("file");
        let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props)).expect("writer");
        let values = Arc::new(Int64Array::from_iter_values(0..1000));
        writer.write(&RecordBatch::try_new(schema, vec![values]).expect("batch")).expect("write");
        writer.close().expect("close");
        // As the engine's session over data about people: no file statistics.
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_collect_statistics(false));
        let table = parquet_table(&path, &ctx.state(), personal).await.expect("table");
        let df = ctx.read_table(table).expect("read").filter(col("income").gt(lit(5000))).expect("filter");
        let plan = df.create_physical_plan().await.expect("plan");
        assert!(collect(Arc::clone(&plan), ctx.task_ctx()).await.expect("run").iter().all(|b| b.num_rows() == 0));
        let mut read = 0;
        let _ = plan.apply(|node| {
            if node.name() == "DataSourceExec" {
                read += node.metrics().and_then(|m| m.output_rows()).unwrap_or(0);
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        read
    }

    #[tokio::test]
    async fn a_file_about_people_is_read_whatever_its_statistics_say() {
        assert_eq!(rows_read(true).await, 1000);
        assert_eq!(rows_read(false).await, 0, "a table about nobody may skip its row groups");
    }

    #[test]
    fn the_line_for_keeping_a_table_in_memory_is_drawn_per_file() {
        // The last row count each file is kept in memory at.
        let line = |path: &str| {
            let (mut lo, mut hi) = (0, 2 * IN_MEMORY_ROWS);
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if in_memory(Path::new(path), mid) { lo = mid } else { hi = mid - 1 }
            }
            lo
        };
        let lines: Vec<u64> = (0..200).map(|i| line(&format!("datasets/civil/people/{i:032x}.parquet"))).collect();
        assert!(lines.iter().all(|l| (IN_MEMORY_ROWS / 2..IN_MEMORY_ROWS * 3 / 2).contains(l)), "{lines:?}");
        // Spread over the range: twins a few rows apart straddle it for few files.
        let near = |at: u64| lines.iter().filter(|l| l.abs_diff(at) < 100).count();
        assert!(near(IN_MEMORY_ROWS) <= 4, "{} of 200 lines within 100 rows of the old line", near(IN_MEMORY_ROWS));
        assert!(lines.iter().collect::<std::collections::HashSet<_>>().len() > 190);
    }

    #[test]
    fn decoded_tables_stay_within_their_memory_and_follow_the_file() {
        let (batch, _) = noisy_scan();
        let provider = || -> Arc<dyn TableProvider> {
            Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).expect("table"))
        };
        let mut tables = Tables::default();
        let key: TableKey = ("civil.a".parse().expect("reference"), false);
        let decoded = provider();
        let kept = tables.put(key.clone(), "a-1".into(), provider(), Some((Arc::clone(&decoded), IN_MEMORY_BYTES)));
        assert!(Arc::ptr_eq(&kept, &decoded), "it fits exactly");
        assert!(tables.get(&key, Path::new("a-1")).is_some() && tables.get(&key, Path::new("a-2")).is_none());
        // The capped copy of a is a table of its own.
        let other: TableKey = (key.0.clone(), true);
        let parquet = provider();
        let kept = tables.put(other.clone(), "b-1".into(), Arc::clone(&parquet), Some((provider(), 1)));
        assert!(Arc::ptr_eq(&kept, &parquet), "no room left: read from Parquet");
        // A new version of a replaces the old one and frees its memory.
        tables.put(key.clone(), "a-2".into(), provider(), Some((provider(), 10)));
        assert_eq!(tables.in_memory, 10);
        let decoded = provider();
        let kept = tables.put(other, "b-2".into(), provider(), Some((Arc::clone(&decoded), 100)));
        assert!(Arc::ptr_eq(&kept, &decoded));
        assert_eq!(tables.in_memory, 110);
    }
}
