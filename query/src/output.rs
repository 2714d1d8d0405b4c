//! A result as bytes: JSON, CSV, Arrow IPC stream or a table for the terminal, and which one
//! an HTTP client asked for.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::engine::QueryResult;
use crate::error::QueryError;

/// How a result is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Arrow's pretty-printed table, for a terminal.
    Table,
    /// Comma-separated values with a header line. Timestamps in RFC 3339, dates as
    /// YYYY-MM-DD, lists as `[a, b]`.
    Csv,
    /// A JSON array of row objects, nulls written out. Timestamps in RFC 3339, dates as
    /// YYYY-MM-DD, lists as arrays, dictionary columns as their strings.
    Json,
    /// An Arrow IPC stream: the exact types, for pyarrow, polars or DuckDB.
    ArrowStream,
}

impl OutputFormat {
    /// The media type of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Table => "text/plain; charset=utf-8",
            OutputFormat::Csv => "text/csv; charset=utf-8; header=present",
            OutputFormat::Json => "application/json",
            OutputFormat::ArrowStream => "application/vnd.apache.arrow.stream",
        }
    }

    /// The name used in messages and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Table => "table",
            OutputFormat::Csv => "csv",
            OutputFormat::Json => "json",
            OutputFormat::ArrowStream => "arrow",
        }
    }

    /// Reads the name back (`table`, `csv`, `json`, `arrow`), for a command-line flag.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            OutputFormat::Table,
            OutputFormat::Csv,
            OutputFormat::Json,
            OutputFormat::ArrowStream,
        ]
        .into_iter()
        .find(|format| format.name().eq_ignore_ascii_case(name))
    }

    /// The format an HTTP `Accept` header asks for: the acceptable one with the highest
    /// quality, the first listed on a tie; JSON when the header is absent or says `*/*`.
    /// `None` when nothing acceptable is offered (answer 406).
    pub fn from_accept(accept: Option<&str>) -> Option<Self> {
        let accept = match accept.map(str::trim) {
            None | Some("") => return Some(OutputFormat::Json),
            Some(accept) => accept,
        };
        let mut best: Option<(f32, OutputFormat)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media_type = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            let format = match media_type.as_str() {
                "application/json" | "application/*" | "*/*" => OutputFormat::Json,
                "text/csv" | "text/*" => OutputFormat::Csv,
                "application/vnd.apache.arrow.stream" => OutputFormat::ArrowStream,
                "text/plain" => OutputFormat::Table,
                _ => continue,
            };
            if quality > 0.0 && best.is_none_or(|(q, _)| quality > q) {
                best = Some((quality, format));
            }
        }
        best.map(|(_, format)| format)
    }
}

/// Writes a result in `format`. Nothing of a failed query reaches `out`: a result is only
/// written once it is complete.
pub fn write_result(
    result: &QueryResult,
    format: OutputFormat,
    out: &mut impl Write,
) -> Result<(), QueryError> {
    let failed = |source| QueryError::Output {
        format: format.name(),
        source,
    };
    let schema = result.schema();
    let batches = result.batches();
    match format {
        OutputFormat::Table => {
            let table =
                arrow::util::pretty::pretty_format_batches_with_schema(schema.clone(), batches)
                    .map_err(failed)?;
            writeln!(out, "{table}")?;
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(&mut *out);
            for batch in batches {
                writer.write(batch).map_err(failed)?;
            }
            writer.finish().map_err(failed)?;
            writeln!(out)?;
        }
        OutputFormat::Csv => {
            let csv_schema = flat_schema(schema);
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            // An empty batch first, so the header is written even when no row is.
            writer
                .write(&RecordBatch::new_empty(Arc::clone(&csv_schema)))
                .map_err(failed)?;
            for batch in batches {
                writer
                    .write(&flatten_nested(batch, &csv_schema).map_err(failed)?)
                    .map_err(failed)?;
            }
        }
        OutputFormat::ArrowStream => {
            let mut writer =
                arrow::ipc::writer::StreamWriter::try_new(&mut *out, schema).map_err(failed)?;
            for batch in batches {
                writer.write(batch).map_err(failed)?;
            }
            writer.finish().map_err(failed)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The schema with nested columns (lists, structs) as text: CSV has no nesting.
fn flat_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| {
            if field.data_type().is_nested() {
                Field::new(field.name(), DataType::Utf8, field.is_nullable())
            } else {
                field.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A batch with its nested columns written as text (Arrow's display form, `[a, b]`).
fn flatten_nested(batch: &RecordBatch, flat: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let options = FormatOptions::default();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for column in batch.columns() {
        if !column.data_type().is_nested() {
            columns.push(Arc::clone(column));
            continue;
        }
        let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
        let mut text = StringBuilder::with_capacity(column.len(), column.len() * 16);
        for row in 0..column.len() {
            if column.is_null(row) {
                text.append_null();
            } else {
                text.append_value(formatter.value(row).try_to_string()?);
            }
        }
        columns.push(Arc::new(text.finish()));
    }
    RecordBatch::try_new(Arc::clone(flat), columns)
}

#[cfg(test)]
mod tests {
    use super::OutputFormat::{self, *};

    #[test]
    fn accept_picks_the_best_offered_format() {
        let pick = |accept| OutputFormat::from_accept(accept);
        assert_eq!(pick(None), Some(Json));
        assert_eq!(pick(Some("*/*")), Some(Json));
        assert_eq!(pick(Some("text/csv")), Some(Csv));
        assert_eq!(
            pick(Some("Application/Vnd.Apache.Arrow.Stream")),
            Some(ArrowStream)
        );
        assert_eq!(pick(Some("text/plain")), Some(Table));
        assert_eq!(pick(Some("text/csv;q=0.5, application/json")), Some(Json));
        assert_eq!(
            pick(Some("text/html, text/csv;q=0.9, */*;q=0.1")),
            Some(Csv)
        );
        assert_eq!(pick(Some("image/png")), None);
        assert_eq!(pick(Some("text/csv;q=0")), None);
        assert_eq!(OutputFormat::from_name("CSV"), Some(Csv));
        assert_eq!(OutputFormat::from_name("arrow"), Some(ArrowStream));
        assert_eq!(OutputFormat::from_name("xml"), None);
    }
}
