//! The Arrow tables (being written).
