//! Token cache, single-flight, refresh scheduling, snapshot publishing.
