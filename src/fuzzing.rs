//! Entry points for the fuzz targets in `tools/fuzz` (not a stable API).
