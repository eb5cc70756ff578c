//! Every default and bound a config can leave unset, in one place, each with why.

use std::time::Duration;

/// Default time open connections get to finish in-flight requests after shutdown is asked for;
/// below Kubernetes' default 30 s termination grace period.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Default permissions of the Unix socket file: owner and group may connect (connecting needs
/// write permission), others may not; widen with `mode` or narrow the group with the directory.
pub const DEFAULT_UNIX_SOCKET_MODE: u32 = 0o660;
