//! Token buckets and budgets.
