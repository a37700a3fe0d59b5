//! Network: the seccomp socket-family rule, then an empty network namespace and Landlock TCP
//! rules behind it.

use std::time::Duration;

use e2e::prelude::*;
use e2e::report::errnos::EAFNOSUPPORT;
use e2e::report::{errno, stopped_by};
use sandbox::{Level, Limits};
use serde_json::json;

use super::call;

/// A TCP listener and a UDP socket on ephemeral loopback ports, non-blocking, that nothing
/// should reach.
pub(super) fn host_listeners() -> (std::net::TcpListener, std::net::UdpSocket) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    (listener, udp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_host_tcp_listener_fails() {
    let m = manager();
    let (listener, udp) = host_listeners();
    let tcp_port = listener.local_addr().unwrap().port();
    let udp_port = udp.local_addr().unwrap().port();

    let info = hostile(&m, "net", Limits::default(), Level::Standard).await;
    stopped_by(&info.isolation, "net_ns", "reaching the host's network");
    stopped_by(&info.isolation, "landlock", "TCP connect");
    let seccomp = stopped_by(&info.isolation, "seccomp", "creating an AF_INET socket");
    assert!(seccomp.contains("socket: AF_UNIX only"), "{seccomp}");
    let r = call(
        &m,
        "net",
        "connect_net",
        json!({"tcp": tcp_port, "udp": udp_port}),
    )
    .await;
    // Without network the seccomp filter refuses the AF_INET socket itself, before Landlock's
    // TCP rule (EACCES) or the empty network namespace (ENETUNREACH) are reached.
    for proto in ["tcp", "udp"] {
        assert_eq!(
            errno(&r[proto]),
            EAFNOSUPPORT,
            "seccomp should refuse the {proto} socket: {r}"
        );
    }
    assert_eq!(r["interfaces"], json!(["lo"]), "{r}");
    // Nothing to wait for: a connection that was refused never arrives. The pause only gives
    // one that did get through (the failure) the time to show.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        listener
            .accept()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the host's listener got a connection"
    );
    let mut buf = [0u8; 64];
    assert!(
        udp.recv(&mut buf)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the host's UDP socket got a datagram"
    );
    m.destroy("net").await.unwrap();
}
