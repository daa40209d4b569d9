//! Entry points for the fuzz targets in `fuzz/` and for replaying their findings in tests.
