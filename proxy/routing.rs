//! RouteTable: host + path-prefix matching.
