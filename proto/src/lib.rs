//! The sandbox host's messages, and nothing else: what crosses the control socket (client and
//! daemon), the two runner planes (host and sandbox) and the event stream. Written down in
//! `docs/protocol.md`.
//!
//! * [`control`]: the control socket's newline-delimited JSON requests and answers.
//! * [`runner`]: the length-prefixed frames between the host and a sandbox's init and app
//!   planes, and the argv and descriptor numbers of the runner's hidden modes.
//! * [`batch`]: the `batch` request and the lines of its streamed answer.
//! * [`canary`]: a canary reload's settings (`reload`, batch `reload`).
//! * [`spec`]: what a sandbox is made from (id, app, limits, isolation level).
//! * [`info`]: what the host answers about a sandbox (info, usage, list, reload reports).
//! * [`events`]: the event record.
//! * [`tenant`]: what a tenant hands a sandbox besides the app (env, config, data files).
//! * [`logline`]: one line of a sandbox's log (`host logs`).
//! * [`operate`]: the request to run the AI operator on a sandbox.
//! * [`ask`]: a question to the coordinator about a sandbox or all of them.

pub mod ask;
pub mod batch;
pub mod canary;
pub mod control;
pub mod events;
pub mod info;
pub mod limits;
pub mod logline;
pub mod operate;
pub mod runner;
pub mod spec;
pub mod tenant;
