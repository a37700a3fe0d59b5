//! Who is on the other end of a control connection (`SO_PEERCRED`), and may they control
//! this daemon: only its own user and root may.

use std::io;
use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

/// A peer the daemon will not serve.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer runs as another user.
    #[error(
        "peer uid {peer} may not control this daemon: only uid {owner} (its user) and root may"
    )]
    Refused {
        /// The peer's uid.
        peer: u32,
        /// The daemon's uid.
        owner: u32,
    },
    /// The kernel would not say who the peer is.
    #[error("cannot read the peer's credentials (SO_PEERCRED): {0}")]
    Credentials(#[source] io::Error),
}

/// The uid and pid of the process that connected `socket` (as of its `connect`).
pub fn peer_credentials(socket: &impl AsFd) -> io::Result<(u32, i32)> {
    let creds = getsockopt(socket, PeerCredentials).map_err(io::Error::from)?;
    Ok((creds.uid(), creds.pid()))
}

/// Whether a peer running as `peer` may control a daemon running as `owner`.
pub fn allowed(peer: u32, owner: u32) -> bool {
    peer == owner || peer == 0
}

/// Checks the peer of `socket` against the daemon's uid `owner`; returns the peer's uid
/// and pid when allowed.
pub fn check(socket: &impl AsFd, owner: u32) -> Result<(u32, i32), PeerError> {
    let (peer, pid) = peer_credentials(socket).map_err(PeerError::Credentials)?;
    if allowed(peer, owner) {
        Ok((peer, pid))
    } else {
        Err(PeerError::Refused { peer, owner })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn only_the_same_user_or_root_is_allowed() {
        assert!(allowed(1000, 1000));
        assert!(allowed(0, 1000));
        assert!(allowed(0, 0));
        assert!(!allowed(65534, 1000));
        assert!(!allowed(1000, 0));
        assert!(!allowed(65534, 0));
    }

    #[test]
    fn the_peer_of_a_socketpair_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let (uid, pid) = peer_credentials(&a).unwrap();
        assert_eq!(uid, me);
        assert_eq!(pid, std::process::id() as i32);
        assert!(check(&a, me).is_ok());
        // Seen from a daemon of another (non-root) user, this process is refused, unless
        // it is root.
        let other = me.wrapping_add(4242);
        match check(&a, other) {
            Ok(_) => assert_eq!(me, 0),
            Err(PeerError::Refused { peer, owner }) => {
                assert_eq!((peer, owner), (me, other));
            }
            Err(e) => panic!("{e}"),
        }
    }
}
