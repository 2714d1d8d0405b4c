//! Which statements are answered: queries only.
//!
//! Two nets. First, before planning, an allow-list on the parsed statement: queries, `EXPLAIN`
//! of a query, `DESCRIBE` and `SHOW`; everything else (DDL, DML, `COPY`, `SET`, `RESET`,
//! `PREPARE`, transactions, and any statement kind sqlparser learns later) is refused with a
//! message that names it. Refusing before planning matters: planning `CREATE EXTERNAL TABLE`
//! or `INSERT INTO` an unknown table would otherwise fail with a message about something else.
//! Second, after planning, DataFusion's own [`SQLOptions`] check on the logical plan (no DDL,
//! no DML, no statements), which catches writes hidden inside a query (`SELECT … INTO t`
//! creates a table).
//!
//! Reading files outside the tables is not possible from a query: URL tables
//! (`SELECT * FROM 'file.parquet'`) are off, and DataFusion 55's default table functions
//! (`generate_series`, `range`) read no files.

use datafusion::execution::context::SQLOptions;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::QueryError;

/// DataFusion's plan check: no DDL, no DML (nor `COPY`), no statements (`SET`, transactions).
pub(crate) fn plan_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Refuses anything but a query, naming the statement by its leading keywords.
pub(crate) fn refuse_non_queries(statement: &DfStatement, sql: &str) -> Result<(), QueryError> {
    if is_query(statement) {
        Ok(())
    } else {
        Err(QueryError::ReadOnly {
            statement: leading_keywords(sql),
        })
    }
}

fn is_query(statement: &DfStatement) -> bool {
    match statement {
        DfStatement::Statement(statement) => is_sql_query(statement),
        // `EXPLAIN ANALYZE` runs its statement, so what it explains must be a query too.
        DfStatement::Explain(explain) => is_query(&explain.statement),
        DfStatement::CreateExternalTable(_) | DfStatement::CopyTo(_) | DfStatement::Reset(_) => {
            false
        }
    }
}

fn is_sql_query(statement: &Statement) -> bool {
    match statement {
        Statement::Query(_)
        | Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowCreate { .. } => true,
        Statement::Explain { statement, .. } => is_sql_query(statement),
        _ => false,
    }
}

/// Up to three leading keywords of the statement (`CREATE EXTERNAL TABLE`, `INSERT INTO`,
/// `COPY`, `SET`), skipping comments: a name for it that never quotes the user's identifiers
/// or values.
fn leading_keywords(sql: &str) -> String {
    let dialect = GenericDialect {};
    let words: Vec<String> = match Tokenizer::new(&dialect, sql).tokenize() {
        Ok(tokens) => tokens
            .iter()
            .filter(|token| !matches!(token, Token::Whitespace(_)))
            .map_while(|token| match token {
                Token::Word(word)
                    if word.keyword != Keyword::NoKeyword && word.quote_style.is_none() =>
                {
                    Some(word.value.to_uppercase())
                }
                _ => None,
            })
            .take(3)
            .collect(),
        Err(_) => Vec::new(),
    };
    if words.is_empty() {
        "this statement".to_owned()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_named_by_their_keywords_only() {
        assert_eq!(
            leading_keywords("create external table t stored as parquet location '/etc'"),
            "CREATE EXTERNAL TABLE"
        );
        assert_eq!(
            leading_keywords("-- why\n  insert into x values (1)"),
            "INSERT INTO"
        );
        assert_eq!(leading_keywords("COPY (SELECT 1) TO '/tmp/x'"), "COPY");
        assert_eq!(
            leading_keywords("set datafusion.execution.batch_size = 1"),
            "SET"
        );
        assert_eq!(leading_keywords("'secret'"), "this statement");
    }
}
