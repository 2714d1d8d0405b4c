//! Integration tests of tlsrpt-query: real Parquet files in temporary directories, laid out
//! as the transformer lays them out, and real HTTP and Flight SQL on port 0.

mod access;
mod engine;
mod flight;
mod http;
mod s3;
mod support;
mod views;
