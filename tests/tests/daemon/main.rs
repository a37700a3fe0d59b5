//! The `daemon` test binary: `host serve` through the real binary, out of process, with its
//! thin clients: the control socket and JSON output (`cli`), the edit -> rebuild -> reload
//! loop (`reload`), shutdown and restart after a crash (`shutdown`), clients and servers of
//! other uids (`peers`), hostile clients (`limits`), the event stream (`events`), the
//! detector (`watch`), the HTTP servers (`metrics`, `dashboard`) and a flood of idle and
//! slow connections to them (`http_flood`), and an app's words on the operator's terminal
//! (`app_text`), what an app prints and is given (`app_io`), many sandboxes in one
//! request (`batch`), questions to the coordinator (`ask`) and the detector's coordinator
//! (`insights`).
//!
//! Why one binary of its own: every test here starts its own daemon (`e2e::serve::Serve`) on
//! a private socket and state directory and talks to it only through the binary, the socket
//! or HTTP, so none of them shares state with another; they need the host binary and the
//! test apps, never a manager in this process (that is `sandboxes`).

mod app_io;
mod app_text;
mod ask;
mod batch;
mod canary;
mod cli;
mod dashboard;
mod events;
mod http_flood;
mod insights;
mod limits;
mod llm_calls;
mod metrics;
mod peers;
mod reload;
mod shutdown;
mod watch;
