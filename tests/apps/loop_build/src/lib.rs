//! Never built: its build script does not end.
