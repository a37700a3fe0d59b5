//! Low descriptor numbers that one spawner thread owns, so that a runner's clone does not copy
//! the host's whole descriptor table.
//!
//! A clone without `CLONE_FILES` copies every descriptor of the host (two or three per live
//! sandbox), and the child then closes them all again before its exec: both grow with the
//! sandboxes already running, and in a burst of 1 000 creates they were 13% of the CPU. With
//! `CLONE_FILES` the child shares the table instead, and before it touches any descriptor
//! number it unshares with `close_range(bound, ~0, CLOSE_RANGE_UNSHARE)`, which copies only the
//! descriptors below `bound` (Linux 5.9, as `close_range` itself). The descriptors the child
//! keeps are therefore moved into these slots first, reserved when the spawner thread starts,
//! while numbers are still low.
//!
//! Each spawner thread has its own slots and is the only one to write them; the rest of the
//! host never sees their numbers. Between two spawns they hold `/dev/null`, so the host keeps
//! no reference to the last child's sockets (its end of a socket must see EOF when the runner
//! dies).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use isolation::fds::high_fd;

/// How many descriptors a child keeps through its unshare: control, data, `/dev/null`, log,
/// error pipe.
pub(crate) const KEPT: usize = 5;

/// One spawner thread's reserved descriptor numbers.
pub(crate) struct Slots {
    slots: [OwnedFd; KEPT],
    /// `/dev/null`, put back into every slot after a spawn.
    idle: File,
    /// One past the highest slot: the child's unshare copies the descriptors below it.
    bound: u32,
}

impl Slots {
    /// Reserves [`KEPT`] descriptors (numbers of at least 10, close-on-exec).
    pub(crate) fn reserve() -> io::Result<Slots> {
        let idle = File::options().read(true).write(true).open("/dev/null")?;
        let slots = [
            high_fd(&idle)?,
            high_fd(&idle)?,
            high_fd(&idle)?,
            high_fd(&idle)?,
            high_fd(&idle)?,
        ];
        let bound = slots.iter().map(|s| s.as_raw_fd()).max().unwrap_or(0) as u32 + 1;
        Ok(Slots { slots, idle, bound })
    }

    /// The descriptors below this number are all a child copies when it unshares.
    pub(crate) fn bound(&self) -> u32 {
        self.bound
    }

    /// Puts `fds` into the slots, in order; returns the slot numbers. On failure the slots are
    /// idle again.
    pub(crate) fn fill(&self, fds: [&dyn AsFd; KEPT]) -> io::Result<[i32; KEPT]> {
        let mut numbers = [0; KEPT];
        for (i, (fd, slot)) in fds.iter().zip(&self.slots).enumerate() {
            if let Err(e) = replace(slot, *fd) {
                self.clear();
                return Err(e);
            }
            numbers[i] = slot.as_raw_fd();
        }
        Ok(numbers)
    }

    /// Puts `/dev/null` back into every slot, dropping the host's extra references to the
    /// last child's descriptors.
    pub(crate) fn clear(&self) {
        for slot in &self.slots {
            // Cannot fail on two valid descriptors but for EINTR/EBUSY, which dup3 only
            // returns while another thread opens onto the same number: no one else uses it.
            let _ = replace(slot, &self.idle);
        }
    }
}

/// Makes `slot`'s number refer to `fd`'s open file (close-on-exec), atomically.
fn replace(slot: &OwnedFd, fd: &dyn AsFd) -> io::Result<()> {
    // SAFETY: dup3 onto a descriptor this thread owns (the slot stays open throughout: dup3
    // replaces it atomically), from a valid descriptor.
    let r = unsafe { libc::dup3(fd.as_fd().as_raw_fd(), slot.as_raw_fd(), libc::O_CLOEXEC) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
