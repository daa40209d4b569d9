//! Hash-chained NDJSON audit log.
