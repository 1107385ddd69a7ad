//! The safe SQL surface (design §3): exactly one read-only query, of bounded size. Decided on the
//! parsed statement, before any table is resolved; the guard then decides on the plan.

use datafusion::common::TableReference;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::resolve::resolve_table_references;
use datafusion::sql::sqlparser::ast::Statement;

use crate::{Error, Result};

/// Parser nesting limit: deep enough for real queries, shallow enough that 2,000 nested
/// parentheses are a quick error rather than a deep recursion (DataFusion's default).
const RECURSION_LIMIT: usize = 50;

/// Most queries nested inside one another (subqueries, derived tables, CTE bodies): planning
/// and guarding recurse over them, and fifteen levels overflowed a worker's stack and stopped
/// the server. Real analyses nest a few levels.
const MAX_QUERY_DEPTH: usize = 8;

/// Counts how deep queries nest, stopping at the first one past [`MAX_QUERY_DEPTH`].
struct Depth {
    now: usize,
}

impl datafusion::sql::sqlparser::ast::Visitor for Depth {
    type Break = ();

    fn pre_visit_query(&mut self, _: &datafusion::sql::sqlparser::ast::Query) -> std::ops::ControlFlow<()> {
        self.now += 1;
        if self.now > MAX_QUERY_DEPTH { std::ops::ControlFlow::Break(()) } else { std::ops::ControlFlow::Continue(()) }
    }

    fn post_visit_query(&mut self, _: &datafusion::sql::sqlparser::ast::Query) -> std::ops::ControlFlow<()> {
        self.now -= 1;
        std::ops::ControlFlow::Continue(())
    }
}

/// A parsed query and the datasets it names.
#[derive(Debug, Clone)]
pub struct ParsedQuery {
    /// The text as sent.
    pub(crate) sql: String,
    pub(crate) statement: DfStatement,
    tables: Vec<(String, String)>,
}

impl ParsedQuery {
    /// The datasets the query names, as `(department, name)`, each once.
    pub fn tables(&self) -> &[(String, String)] {
        &self.tables
    }
}

/// Parses `sql`: one read-only query of at most `max_bytes`.
///
/// # Errors
/// [`Error::Sql`] with a code per refusal: `sql_too_long`, `sql_syntax`, `sql_not_one_query`,
/// `sql_not_read_only`; [`Error::UnknownDataset`] for a table named without its department.
pub fn parse(sql: &str, max_bytes: usize) -> Result<ParsedQuery> {
    if sql.len() > max_bytes {
        return Err(Error::sql("sql_too_long", format!("the query is longer than {max_bytes} bytes")));
    }
    let mut statements = DFParserBuilder::new(sql)
        .with_recursion_limit(RECURSION_LIMIT)
        .build()
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| Error::sql("sql_syntax", syntax_message(&e.to_string())))?;
    if statements.len() != 1 {
        return Err(Error::sql(
            "sql_not_one_query",
            format!("send exactly one query; this text holds {} statements", statements.len()),
        ));
    }
    let Some(statement) = statements.pop_front() else {
        return Err(Error::sql("sql_not_one_query", "the query is empty"));
    };
    match &statement {
        DfStatement::Statement(s) if matches!(**s, Statement::Query(_)) => {}
        other => {
            return Err(Error::sql(
                "sql_not_read_only",
                format!(
                    "only a single read-only query (SELECT, WITH, UNION …) is allowed; {} is not",
                    statement_name(other)
                ),
            ));
        }
    }
    if let DfStatement::Statement(s) = &statement
        && datafusion::sql::sqlparser::ast::Visit::visit(s.as_ref(), &mut Depth { now: 0 }).is_break()
    {
        return Err(Error::sql(
            "sql_too_deep",
            format!(
                "queries may nest at most {MAX_QUERY_DEPTH} levels deep (subqueries, derived tables and WITH together)"
            ),
        ));
    }
    let (relations, _ctes) =
        resolve_table_references(&statement, true).map_err(|e| Error::sql("sql_syntax", e.to_string()))?;
    let mut tables = Vec::new();
    for r in relations {
        let key = match &r {
            TableReference::Partial { schema, table } => (schema.to_string(), table.to_string()),
            TableReference::Full { catalog, schema, table } if catalog.as_ref() == "datafusion" => {
                (schema.to_string(), table.to_string())
            }
            other => return Err(Error::UnknownDataset(other.to_string())),
        };
        if !tables.contains(&key) {
            tables.push(key);
        }
    }
    Ok(ParsedQuery { sql: sql.to_owned(), statement, tables })
}

fn syntax_message(raw: &str) -> String {
    let text = raw.trim_start_matches("SQL error: ").trim_start_matches("ParserError(").trim_end_matches(')');
    if text.contains("RecursionLimitExceeded") || text.contains("recursion limit") {
        return "the query is nested too deeply".to_owned();
    }
    format!("the query does not parse: {text}")
}

fn statement_name(s: &DfStatement) -> &'static str {
    match s {
        DfStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE",
        DfStatement::CopyTo(_) => "COPY",
        DfStatement::Explain(_) => "EXPLAIN",
        DfStatement::Reset(_) => "RESET",
        DfStatement::Statement(s) => match **s {
            Statement::Explain { .. } | Statement::ExplainTable { .. } => "EXPLAIN",
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) | Statement::Truncate(_) => {
                "a data change (INSERT, UPDATE, DELETE, TRUNCATE)"
            }
            Statement::Copy { .. } => "COPY",
            Statement::Set(_) => "SET",
            Statement::CreateTable(_) | Statement::CreateView { .. } | Statement::Drop { .. } => {
                "a definition (CREATE, DROP)"
            }
            _ => "this statement",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SELECT a FROM (SELECT a FROM (… t …))`, `depth` queries in all.
    fn nested(depth: usize) -> String {
        let mut sql = "SELECT a FROM civil.t".to_owned();
        for _ in 1..depth {
            sql = format!("SELECT concat(a, a) AS a FROM ({sql}) s");
        }
        sql
    }

    #[test]
    fn queries_nest_at_most_eight_deep() {
        assert!(parse(&nested(MAX_QUERY_DEPTH), 1 << 16).is_ok());
        for depth in [MAX_QUERY_DEPTH + 1, 15] {
            let err = parse(&nested(depth), 1 << 16).expect_err("too deep");
            assert_eq!(err.code(), "sql_too_deep", "{depth}");
        }
        // Subqueries in conditions count too.
        let mut sql = "SELECT 1 FROM civil.t".to_owned();
        for _ in 0..MAX_QUERY_DEPTH {
            sql = format!("SELECT 1 FROM civil.t WHERE EXISTS ({sql})");
        }
        assert_eq!(parse(&sql, 1 << 16).expect_err("too deep").code(), "sql_too_deep");
    }
}
