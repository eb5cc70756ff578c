//! Reading the deployment examples for the tests: the Kubernetes manifests, the DaemonSet's pod
//! template, the routes.yaml inside the ConfigMap, and the Dockerfile.
#![allow(dead_code)] // each test crate uses a different subset

pub mod dockerfile;
pub mod manifests;
pub mod pods;
pub mod routes;
