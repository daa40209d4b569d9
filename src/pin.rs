//! Schema pins: SHA-256 of tool definitions, against rug pulls.
