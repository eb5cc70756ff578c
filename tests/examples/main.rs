//! The shipped examples: Dockerfile and Kubernetes manifests. One test binary; each file is a
//! module.

#[path = "../kit/mod.rs"]
mod kit;

mod examples_dockerfile;
mod examples_manifests;
