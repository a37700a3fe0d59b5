//! The operator loop, end to end: driven by the scripted mock (`scripted`), by the careful
//! mock (`careful`), and by each real provider against a local server speaking its vendor's
//! wire format (`providers`).

mod careful;
mod common;
mod pending;
mod providers;
mod scripted;
mod turns;
mod vendors;
