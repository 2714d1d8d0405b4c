//! Integration tests of tlsrpt-query: real Parquet files in temporary directories, laid out
//! as the transformer lays them out, and real HTTP on port 0.

mod engine;
mod http;
mod s3;
mod support;
