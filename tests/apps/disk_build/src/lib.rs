//! Never loaded: its build script writes more than the build may.
