//! Never loaded: its build script is a fork loop.
