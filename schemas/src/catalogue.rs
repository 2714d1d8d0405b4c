//! The result-type catalogue (being written).
