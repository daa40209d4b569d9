//! The ward's detectors, compiled once at start-up.
