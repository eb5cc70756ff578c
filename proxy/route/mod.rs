//! The contract between the engine and the data plane, no I/O of its own: the route table, each
//! route's caller policy, and the `RouteSlot` whose `ArcSwap` snapshot the data plane reads.

pub mod demand;
pub(crate) mod host;
pub mod policy;
pub mod probe;
pub mod slot;
pub mod status;
pub mod table;
