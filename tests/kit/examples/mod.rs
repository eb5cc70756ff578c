//! Reading the deployment examples for the tests: the Kubernetes manifests, the DaemonSet's pod
//! template, the routes.yaml inside the ConfigMap, and the Dockerfile.

pub mod dockerfile;
pub mod manifests;
pub mod pods;
pub mod routes;
